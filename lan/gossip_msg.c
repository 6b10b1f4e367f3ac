/* lan/gossip_msg.c: the codec of LAN gossip packets (layout in gossip_msg.h). The decoder checks
 * every length against the bytes left before it reads or allocates, so a hostile packet costs at
 * most a bounded amount of memory and never a read past its end. */
#include "lan/gossip_msg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- decoding ---- */

/* Blocks of memory a decoded packet owns, freed together. */
struct blk {
	struct blk *next;
	max_align_t data[];
};

struct rd {
	const uint8_t *p;
	size_t left;
	struct blk **mem;
	char *err;
	size_t errlen;
};

static int fail(struct rd *r, int rv, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct rd *r, int rv, const char *fmt, ...)
{
	if (r->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->err, r->errlen, fmt, ap);
		va_end(ap);
	}
	return rv;
}

static void *blk_alloc(struct blk **mem, size_t size)
{
	struct blk *b = malloc(sizeof(*b) + (size ? size : 1));
	if (!b)
		return NULL;
	b->next = *mem;
	*mem = b;
	return b->data;
}

static int get_u8(struct rd *r, uint8_t *v, const char *what)
{
	if (r->left < 1)
		return fail(r, DG_EINVAL, "truncated %s", what);
	*v = r->p[0];
	r->p++;
	r->left--;
	return 0;
}

static int get_u16(struct rd *r, uint16_t *v, const char *what)
{
	if (r->left < 2)
		return fail(r, DG_EINVAL, "truncated %s", what);
	*v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	r->left -= 2;
	return 0;
}

static int get_u32(struct rd *r, uint32_t *v, const char *what)
{
	if (r->left < 4)
		return fail(r, DG_EINVAL, "truncated %s", what);
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->left -= 4;
	return 0;
}

/* A string of n bytes, min..max, copied NUL-terminated into the packet's memory. */
static int get_bytes(struct rd *r, size_t n, size_t min, size_t max, const char **out,
		     const char *what)
{
	if (n < min)
		return fail(r, DG_EINVAL, "%s is empty", what);
	if (n > max)
		return fail(r, DG_EINVAL, "%s longer than %zu bytes", what, max);
	if (r->left < n)
		return fail(r, DG_EINVAL, "truncated %s", what);
	if (memchr(r->p, 0, n))
		return fail(r, DG_EINVAL, "%s contains a NUL byte", what);
	char *s = blk_alloc(r->mem, n + 1);
	if (!s)
		return fail(r, DG_ENOMEM, "out of memory");
	memcpy(s, r->p, n);
	s[n] = 0;
	*out = s;
	r->p += n;
	r->left -= n;
	return 0;
}

static int get_str8(struct rd *r, size_t min, size_t max, const char **out, const char *what)
{
	uint8_t n = 0;
	int rv;
	if ((rv = get_u8(r, &n, what)) != 0)
		return rv;
	return get_bytes(r, n, min, max, out, what);
}

static int get_str16(struct rd *r, size_t min, size_t max, const char **out, const char *what)
{
	uint16_t n = 0;
	int rv;
	if ((rv = get_u16(r, &n, what)) != 0)
		return rv;
	return get_bytes(r, n, min, max, out, what);
}

static int get_name(struct rd *r, const char **out, const char *what)
{
	return get_str8(r, 1, DG_GOSSIP_NAME_MAX, out, what);
}

/* The smallest encodings, for count checks before allocating (an overestimate would refuse
 * valid packets): a push-pull node with 1-byte name and address and no tags (2 + 2 + port 2 +
 * status 1 + incarnation 4 + tag count 1), and a tag with a 1-byte key and empty value. */
#define NODE_MIN_BYTES 12
#define TAG_MIN_BYTES  5

static int get_node(struct rd *r, struct dg_gossip_node *n, bool with_status)
{
	int rv;
	uint8_t ntags = 0;
	memset(n, 0, sizeof(*n));
	n->status = DG_GOSSIP_ALIVE_ST;
	if ((rv = get_name(r, &n->name, "member name")) != 0 ||
	    (rv = get_str8(r, 1, DG_GOSSIP_ADDR_MAX, &n->addr, "member address")) != 0 ||
	    (rv = get_u16(r, &n->port, "member port")) != 0)
		return rv;
	if (n->port == 0)
		return fail(r, DG_EINVAL, "member %s has port 0", n->name);
	if (with_status) {
		if ((rv = get_u8(r, &n->status, "member status")) != 0)
			return rv;
		if (n->status < DG_GOSSIP_ALIVE_ST || n->status > DG_GOSSIP_FAILED)
			return fail(r, DG_EINVAL, "member %s has unknown status %u", n->name,
				    n->status);
	}
	if ((rv = get_u32(r, &n->incarnation, "incarnation")) != 0 ||
	    (rv = get_u8(r, &ntags, "tag count")) != 0)
		return rv;
	if (ntags > DG_GOSSIP_MAX_TAGS)
		return fail(r, DG_ETOOBIG, "member %s has %u tags, more than %d", n->name, ntags,
			    DG_GOSSIP_MAX_TAGS);
	if ((size_t)ntags * TAG_MIN_BYTES > r->left)
		return fail(r, DG_EINVAL, "truncated tags");
	if (ntags == 0)
		return 0;
	struct dg_gossip_tag *tags = blk_alloc(r->mem, ntags * sizeof(*tags));
	if (!tags)
		return fail(r, DG_ENOMEM, "out of memory");
	size_t before = r->left;
	for (size_t i = 0; i < ntags; i++) {
		if ((rv = get_str16(r, 1, DG_GOSSIP_TAG_MAX, &tags[i].key, "tag key")) != 0 ||
		    (rv = get_str16(r, 0, DG_GOSSIP_TAG_MAX, &tags[i].value, "tag value")) != 0)
			return rv;
		for (size_t j = 0; j < i; j++)
			if (strcmp(tags[j].key, tags[i].key) == 0)
				return fail(r, DG_EINVAL, "duplicate tag %s", tags[i].key);
	}
	if (before - r->left > DG_GOSSIP_TAGS_BYTES)
		return fail(r, DG_ETOOBIG, "member %s has tags over %d bytes", n->name,
			    DG_GOSSIP_TAGS_BYTES);
	n->tags = tags;
	n->ntags = ntags;
	return 0;
}

static int get_body(struct rd *r, struct dg_gossip_msg *m)
{
	int rv = 0;
	uint16_t count = 0;
	switch (m->type) {
	case DG_GOSSIP_PING:
		if ((rv = get_u32(r, &m->seq, "seq")) != 0 ||
		    (rv = get_name(r, &m->from, "sender name")) != 0 ||
		    (rv = get_name(r, &m->target, "target name")) != 0)
			return rv;
		break;
	case DG_GOSSIP_ACK:
	case DG_GOSSIP_NACK:
		if ((rv = get_u32(r, &m->seq, "seq")) != 0 ||
		    (rv = get_name(r, &m->from, "sender name")) != 0)
			return rv;
		break;
	case DG_GOSSIP_INDIRECT:
		if ((rv = get_u32(r, &m->seq, "seq")) != 0 ||
		    (rv = get_name(r, &m->target, "target name")) != 0 ||
		    (rv = get_str8(r, 1, DG_GOSSIP_ADDR_MAX, &m->addr, "target address")) != 0 ||
		    (rv = get_u16(r, &m->port, "target port")) != 0 ||
		    (rv = get_name(r, &m->from, "sender name")) != 0)
			return rv;
		if (m->port == 0)
			return fail(r, DG_EINVAL, "target port 0");
		break;
	case DG_GOSSIP_ALIVE:
		if ((rv = get_node(r, &m->node, false)) != 0)
			return rv;
		break;
	case DG_GOSSIP_SUSPECT:
	case DG_GOSSIP_DEAD:
		if ((rv = get_name(r, &m->node.name, "member name")) != 0 ||
		    (rv = get_u32(r, &m->node.incarnation, "incarnation")) != 0 ||
		    (rv = get_name(r, &m->from, "sender name")) != 0)
			return rv;
		break;
	case DG_GOSSIP_LEAVE:
		if ((rv = get_name(r, &m->node.name, "member name")) != 0 ||
		    (rv = get_u32(r, &m->node.incarnation, "incarnation")) != 0)
			return rv;
		break;
	case DG_GOSSIP_PUSHPULL: {
		if ((rv = get_u8(r, &m->flags, "push-pull flags")) != 0 ||
		    (rv = get_u16(r, &count, "member count")) != 0)
			return rv;
		if (m->flags & ~(DG_GOSSIP_PP_JOIN | DG_GOSSIP_PP_REPLY))
			return fail(r, DG_EINVAL, "unknown push-pull flags 0x%02x", m->flags);
		if (count > DG_GOSSIP_MAX_MEMBERS)
			return fail(r, DG_ETOOBIG, "push-pull of %u members, more than %d", count,
				    DG_GOSSIP_MAX_MEMBERS);
		if ((size_t)count * NODE_MIN_BYTES > r->left)
			return fail(r, DG_EINVAL, "truncated push-pull: %u members in %zu bytes",
				    count, r->left);
		struct dg_gossip_node *v = blk_alloc(r->mem, (size_t)count * sizeof(*v));
		if (!v)
			return fail(r, DG_ENOMEM, "out of memory");
		for (size_t i = 0; i < count; i++)
			if ((rv = get_node(r, &v[i], true)) != 0)
				return rv;
		m->members = v;
		m->nmembers = count;
		break;
	}
	default:
		return fail(r, DG_EINVAL, "unknown message type %u", m->type);
	}
	return 0;
}

static void free_mem(struct blk *b)
{
	while (b) {
		struct blk *next = b->next;
		free(b);
		b = next;
	}
}

int dg_gossip_packet_decode(const void *buf, size_t len, bool stream,
			    struct dg_gossip_packet *out, char *err, size_t errlen)
{
	struct blk *mem = NULL;
	struct rd r = {.p = buf, .left = len, .mem = &mem, .err = err, .errlen = errlen};
	int rv;
	uint8_t magic = 0, n = 0;

	out->n = 0;
	out->mem = NULL;
	if (errlen)
		err[0] = 0;
	if (len > (stream ? (size_t)DG_GOSSIP_STREAM_MAX : (size_t)DG_GOSSIP_UDP_MAX))
		return fail(&r, DG_ETOOBIG, "%s packet of %zu bytes, over %d",
			    stream ? "stream" : "udp", len,
			    stream ? DG_GOSSIP_STREAM_MAX : DG_GOSSIP_UDP_MAX);
	if ((rv = get_u8(&r, &magic, "packet header")) != 0)
		return rv;
	if (magic == DG_GOSSIP_SEALED)
		return fail(&r, DG_EINVAL, "encrypted packet, but no key to open it with");
	if (magic != DG_GOSSIP_MAGIC)
		return fail(&r, DG_EINVAL, "bad magic 0x%02x", magic);
	if ((rv = get_u8(&r, &n, "message count")) != 0)
		return rv;
	if (n == 0 || n > DG_GOSSIP_MAX_COMPOUND)
		return fail(&r, DG_EINVAL, "message count %u not in 1..%d", n,
			    DG_GOSSIP_MAX_COMPOUND);
	if (stream && n != 1)
		return fail(&r, DG_EINVAL, "stream packet with %u messages", n);
	for (size_t i = 0; i < n; i++) {
		struct dg_gossip_msg *m = &out->msg[i];
		uint32_t mlen = 0;
		memset(m, 0, sizeof(*m));
		if ((rv = get_u8(&r, &m->type, "message type")) != 0 ||
		    (rv = get_u32(&r, &mlen, "message length")) != 0)
			goto fail;
		if (mlen > r.left) {
			rv = fail(&r, DG_EINVAL, "truncated %s: %u bytes, %zu left",
				  dg_gossip_type_name(m->type), mlen, r.left);
			goto fail;
		}
		if ((m->type == DG_GOSSIP_PUSHPULL) != stream) {
			rv = fail(&r, DG_EINVAL, "%s message in a %s packet",
				  dg_gossip_type_name(m->type), stream ? "stream" : "udp");
			goto fail;
		}
		/* the body must use exactly its length: a reader bounded to it */
		struct rd body = r;
		body.left = mlen;
		if ((rv = get_body(&body, m)) != 0)
			goto fail;
		if (body.left != 0) {
			rv = fail(&r, DG_EINVAL, "%zu stray bytes after %s", body.left,
				  dg_gossip_type_name(m->type));
			goto fail;
		}
		r.p += mlen;
		r.left -= mlen;
	}
	if (r.left != 0) {
		rv = fail(&r, DG_EINVAL, "%zu stray bytes after the last message", r.left);
		goto fail;
	}
	out->n = n;
	out->mem = mem;
	return 0;
fail:
	free_mem(mem);
	out->n = 0;
	return rv;
}

void dg_gossip_packet_fini(struct dg_gossip_packet *p)
{
	free_mem(p->mem);
	p->mem = NULL;
	p->n = 0;
}

const char *dg_gossip_type_name(int type)
{
	switch (type) {
	case DG_GOSSIP_PING:
		return "PING";
	case DG_GOSSIP_ACK:
		return "ACK";
	case DG_GOSSIP_NACK:
		return "NACK";
	case DG_GOSSIP_INDIRECT:
		return "INDIRECT";
	case DG_GOSSIP_ALIVE:
		return "ALIVE";
	case DG_GOSSIP_SUSPECT:
		return "SUSPECT";
	case DG_GOSSIP_DEAD:
		return "DEAD";
	case DG_GOSSIP_LEAVE:
		return "LEAVE";
	case DG_GOSSIP_PUSHPULL:
		return "PUSHPULL";
	}
	return "unknown";
}

/* ---- encoding ---- */

/* Writes into a dg_buf; the first error sticks and later puts do nothing. */
struct wr {
	struct dg_buf *b;
	int rv;
};

static void put(struct wr *w, const void *p, size_t n)
{
	if (w->rv == 0)
		w->rv = dg_buf_append(w->b, p, n);
}

static void put_u8(struct wr *w, uint8_t v)
{
	put(w, &v, 1);
}

static void put_u16(struct wr *w, uint16_t v)
{
	uint8_t p[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	put(w, p, 2);
}

static void put_u32(struct wr *w, uint32_t v)
{
	uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	put(w, p, 4);
}

/* A string the decoder will accept: min..max bytes (it holds no NUL, being a C string). */
static void put_str(struct wr *w, const char *s, size_t min, size_t max, bool wide)
{
	if (w->rv)
		return;
	size_t n = s ? strlen(s) : 0;
	if (!s || n < min || n > max) {
		w->rv = DG_EINVAL;
		return;
	}
	if (wide)
		put_u16(w, (uint16_t)n);
	else
		put_u8(w, (uint8_t)n);
	put(w, s, n);
}

static void put_name(struct wr *w, const char *s)
{
	put_str(w, s, 1, DG_GOSSIP_NAME_MAX, false);
}

static void put_node(struct wr *w, const struct dg_gossip_node *n, bool with_status)
{
	if (w->rv)
		return;
	if (n->port == 0 || n->ntags > DG_GOSSIP_MAX_TAGS || (n->ntags && !n->tags) ||
	    (with_status && (n->status < DG_GOSSIP_ALIVE_ST || n->status > DG_GOSSIP_FAILED))) {
		w->rv = DG_EINVAL;
		return;
	}
	put_name(w, n->name);
	put_str(w, n->addr, 1, DG_GOSSIP_ADDR_MAX, false);
	put_u16(w, n->port);
	if (with_status)
		put_u8(w, n->status);
	put_u32(w, n->incarnation);
	put_u8(w, (uint8_t)n->ntags);
	size_t before = w->b->len;
	for (size_t i = 0; i < n->ntags && w->rv == 0; i++) {
		for (size_t j = 0; j < i; j++)
			if (n->tags[i].key && n->tags[j].key &&
			    strcmp(n->tags[i].key, n->tags[j].key) == 0)
				w->rv = DG_EINVAL;
		put_str(w, n->tags[i].key, 1, DG_GOSSIP_TAG_MAX, true);
		put_str(w, n->tags[i].value, 0, DG_GOSSIP_TAG_MAX, true);
	}
	if (w->rv == 0 && w->b->len - before > DG_GOSSIP_TAGS_BYTES)
		w->rv = DG_ETOOBIG;
}

int dg_gossip_msg_encode(struct dg_buf *out, const struct dg_gossip_msg *m)
{
	size_t start = out->len;
	struct wr w = {.b = out, .rv = 0};
	put_u8(&w, m->type);
	put_u32(&w, 0); /* the length, filled in below */
	switch (m->type) {
	case DG_GOSSIP_PING:
		put_u32(&w, m->seq);
		put_name(&w, m->from);
		put_name(&w, m->target);
		break;
	case DG_GOSSIP_ACK:
	case DG_GOSSIP_NACK:
		put_u32(&w, m->seq);
		put_name(&w, m->from);
		break;
	case DG_GOSSIP_INDIRECT:
		if (m->port == 0)
			w.rv = w.rv ? w.rv : DG_EINVAL;
		put_u32(&w, m->seq);
		put_name(&w, m->target);
		put_str(&w, m->addr, 1, DG_GOSSIP_ADDR_MAX, false);
		put_u16(&w, m->port);
		put_name(&w, m->from);
		break;
	case DG_GOSSIP_ALIVE:
		put_node(&w, &m->node, false);
		break;
	case DG_GOSSIP_SUSPECT:
	case DG_GOSSIP_DEAD:
		put_name(&w, m->node.name);
		put_u32(&w, m->node.incarnation);
		put_name(&w, m->from);
		break;
	case DG_GOSSIP_LEAVE:
		put_name(&w, m->node.name);
		put_u32(&w, m->node.incarnation);
		break;
	case DG_GOSSIP_PUSHPULL:
		if (m->flags & ~(DG_GOSSIP_PP_JOIN | DG_GOSSIP_PP_REPLY) ||
		    (m->nmembers && !m->members))
			w.rv = w.rv ? w.rv : DG_EINVAL;
		else if (m->nmembers > DG_GOSSIP_MAX_MEMBERS)
			w.rv = w.rv ? w.rv : DG_ETOOBIG;
		put_u8(&w, m->flags);
		put_u16(&w, (uint16_t)m->nmembers);
		for (size_t i = 0; i < m->nmembers && w.rv == 0; i++)
			put_node(&w, &m->members[i], true);
		if (w.rv == 0 && out->len - start > DG_GOSSIP_STREAM_MAX - 2)
			w.rv = DG_ETOOBIG;
		break;
	default:
		w.rv = w.rv ? w.rv : DG_EINVAL;
	}
	if (w.rv != 0) {
		out->len = start;
		if (out->data)
			out->data[start] = 0;
		return w.rv;
	}
	size_t blen = out->len - start - 5;
	uint8_t *p = (uint8_t *)out->data + start + 1;
	p[0] = (uint8_t)(blen >> 24);
	p[1] = (uint8_t)(blen >> 16);
	p[2] = (uint8_t)(blen >> 8);
	p[3] = (uint8_t)blen;
	return 0;
}

int dg_gossip_packet_begin(struct dg_buf *pkt)
{
	uint8_t h[2] = {DG_GOSSIP_MAGIC, 0};
	pkt->len = 0;
	return dg_buf_append(pkt, h, sizeof(h));
}

int dg_gossip_packet_append(struct dg_buf *pkt, const void *msg, size_t len, size_t max)
{
	if (pkt->len < 2 || (uint8_t)pkt->data[1] >= DG_GOSSIP_MAX_COMPOUND ||
	    pkt->len + len > max)
		return DG_ETOOBIG;
	int rv;
	if ((rv = dg_buf_append(pkt, msg, len)) != 0)
		return rv;
	pkt->data[1] = (char)((uint8_t)pkt->data[1] + 1);
	return 0;
}

int dg_gossip_packet_encode(struct dg_buf *out, const struct dg_gossip_msg *msgs, size_t n,
			    size_t max)
{
	struct dg_buf one;
	int rv;
	if (n == 0)
		return DG_EINVAL;
	if ((rv = dg_gossip_packet_begin(out)) != 0)
		return rv;
	dg_buf_init(&one);
	for (size_t i = 0; i < n && rv == 0; i++) {
		one.len = 0;
		if ((rv = dg_gossip_msg_encode(&one, &msgs[i])) == 0)
			rv = dg_gossip_packet_append(out, one.data, one.len, max);
	}
	dg_buf_fini(&one);
	return rv;
}
