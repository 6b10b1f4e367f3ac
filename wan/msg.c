/* wan/msg.c: the codec of the messages servers exchange on port 8302 (wire form in wan/msg.h).
 * Pure: bytes in, bytes or values out. Every length is checked against the limits in
 * common/common.h before anything is allocated for it, and the decoder says why it refused. */
#include "wan/msg.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_PREFIX_LEN 6 /* magic, type, 4-byte header length */
#define MSG_MAX_DEPTH  8 /* nesting of a header or a PUSHPULL body; the top level counts as 1 */

/* The decoder refuses strings holding NUL (no JSON_ALLOW_NUL): the fields are used as C strings
 * and a "\u0000" would cut them short in some places and not in others. The encoder refuses
 * them too (text_ok), so that whatever it produces the decoder accepts. */
#define MSG_JSON_LOAD_FLAGS (JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)

static const char *const type_names[] = {
    [DG_WAN_PING] = "PING",	    [DG_WAN_PONG] = "PONG",
    [DG_WAN_PUSHPULL] = "PUSHPULL", [DG_WAN_LEAVE] = "LEAVE",
    [DG_WAN_ACK] = "ACK",	    [DG_WAN_INDIRECT] = "INDIRECT",
    [DG_WAN_HTTP] = "HTTP",	    [DG_WAN_HTTP_REPLY] = "HTTP_REPLY",
    [DG_WAN_ERROR] = "ERROR",	    [DG_WAN_BATCH] = "BATCH",
    [DG_WAN_BATCH_REPLY] = "BATCH_REPLY",
};

static bool type_known(int type)
{
	return type >= DG_WAN_PING && type <= DG_WAN_BATCH_REPLY;
}

const char *dg_wan_type_name(int type)
{
	return type_known(type) ? type_names[type] : "unknown";
}

/* err may be NULL or errlen 0 when the caller does not want the reason. */
__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t errlen, const char *fmt,
							  ...)
{
	if (!err || errlen == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n < 0)
		err[0] = 0;
}

/* Restores out to len bytes after a failed append, so a failing encoder leaves out as it was. */
static void buf_truncate(struct dg_buf *out, size_t len)
{
	if (out->data) {
		out->len = len;
		out->data[len] = 0;
	}
}

/* Parses JSON text that must be one value of the given shape (object or array). what names it
 * in the reason ("header", "members"). Returns a new reference or NULL with err set. */
static json_t *load_json(const uint8_t *s, size_t len, bool want_object, const char *what,
			 char *err, size_t errlen)
{
	if (len == 0) {
		set_err(err, errlen, "%s is empty", what);
		return NULL;
	}
	if (!dg_json_depth_ok(s, len, MSG_MAX_DEPTH)) {
		set_err(err, errlen, "%s JSON too deep (more than %d levels)", what, MSG_MAX_DEPTH);
		return NULL;
	}
	json_error_t jerr;
	json_t *v = json_loadb((const char *)s, len, MSG_JSON_LOAD_FLAGS, &jerr);
	if (!v) {
		set_err(err, errlen, "%s is not valid JSON: %s (at byte %d)", what, jerr.text,
			jerr.position);
		return NULL;
	}
	if (want_object ? !json_is_object(v) : !json_is_array(v)) {
		set_err(err, errlen, "%s is not a JSON %s", what, want_object ? "object" : "array");
		json_decref(v);
		return NULL;
	}
	return v;
}

/* ---- JSON values: the encoder's writer ---- */

/* Headers (and PUSHPULL bodies) are written straight into the output buffer, in one pass that
 * also checks what the decoder would refuse. jansson's json_dump_callback, used before, took
 * 16-19% of the thread answering forwarded reads: a call per token, a loop check per object.
 * The text is the one json_dumps(JSON_COMPACT) writes: members in insertion order, "," and ":"
 * without spaces, integers as "%" JSON_INTEGER_FORMAT, reals by jansson itself, the same string
 * escapes but one: control bytes other than \n \r \t, which jansson writes as \b, \f or
 * \u00XX and dg_buf_append_json_string as \u00xx (other bytes, the same string to any parser). */
struct json_writer {
	struct dg_buf *out;
	size_t end; /* out->len may not pass it: DG_WAN_MAX_HEADER after the header's start */
	/* The first DG_ETOOBIG or DG_ENOMEM. Writing stops there but checking goes on to the end,
	 * so that a value both refused and too big is DG_EINVAL, as when the check came first. */
	int err;
};

static void put_slow(struct json_writer *w, const void *s, size_t n)
{
	if (w->err)
		return;
	if (n > w->end - w->out->len)
		w->err = DG_ETOOBIG;
	else if (dg_buf_append(w->out, s, n) != 0)
		w->err = DG_ENOMEM;
}

/* Appends n bytes, or records why not. Inline, so that the tokens' copies are plain stores. */
static inline void put(struct json_writer *w, const void *s, size_t n)
{
	struct dg_buf *o = w->out;
	/* the usual case: no error yet, within the limit, in the room reserved */
	if (!w->err && n <= w->end - o->len && n < o->cap - o->len) {
		memcpy(o->data + o->len, s, n);
		o->len += n;
		o->data[o->len] = 0;
		return;
	}
	put_slow(w, s, n);
}

/* True if none of the eight bytes at s is NUL or has its high bit set. */
static bool ascii8(const char *s)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t x;
	memcpy(&x, s, 8);
	return ((x | ((x - ones) & ~x)) & highs) == 0;
}

/* True if s[0..len) holds no NUL and is UTF-8 as jansson's parser takes it (no overlong forms,
 * no surrogates, nothing past U+10FFFF). jansson checks UTF-8 when a string or key is made, but
 * not through its *_nocheck calls, and its dump used to fail on such text. ASCII, nearly every
 * header, goes eight bytes at a time, the last few as the string's last eight. */
static bool text_ok(const char *s, size_t len)
{
	size_t i = 0;
	while (len - i >= 8 && ascii8(s + i))
		i += 8;
	if (len - i < 8 && len >= 8 && ascii8(s + len - 8))
		return true; /* covers s[i..len) */
	while (i < len) {
		size_t n = s[i] ? dg_utf8_seq((const unsigned char *)s + i, len - i) : 0;
		if (n == 0)
			return false;
		i += n;
	}
	return true;
}

/* A string or a key. False if the decoder would refuse it. */
static bool put_string(struct json_writer *w, const char *s, size_t len)
{
	if (!text_ok(s, len))
		return false;
	if (w->err)
		return true;
	/* its text is at least len + 2 bytes: a huge string is refused before it is copied */
	if (len + 2 > w->end - w->out->len) {
		w->err = DG_ETOOBIG;
		return true;
	}
	if (dg_buf_append_json_string(w->out, s, len) != 0)
		w->err = DG_ENOMEM;
	else if (w->out->len > w->end) /* escapes made it longer */
		w->err = DG_ETOOBIG;
	return true;
}

/* The digits "%" JSON_INTEGER_FORMAT prints, without the cost of snprintf. */
static void put_integer(struct json_writer *w, json_int_t x)
{
	_Static_assert(sizeof(json_int_t) <= 8, "20 digits and a sign at most");
	char buf[24], *p = buf + sizeof(buf);
	uint64_t u = x < 0 ? 0 - (uint64_t)x : (uint64_t)x;
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (x < 0)
		*--p = '-';
	put(w, p, (size_t)(buf + sizeof(buf) - p));
}

/* Reals are rare in headers: jansson writes them, so the text is its own to the digit. */
static void put_real(struct json_writer *w, const json_t *v)
{
	if (w->err)
		return;
	char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!text) {
		w->err = DG_ENOMEM;
		return;
	}
	put(w, text, strlen(text));
	free(text);
}

/* Writes v, which may nest depth more levels (v itself is one). False if the decoder would not
 * take the text back: nested deeper, or a string or key with NUL or not UTF-8. Recursion is
 * bounded by depth, so a value with a cycle is refused rather than followed. */
static bool put_value(struct json_writer *w, json_t *v, int depth)
{
	size_t i;
	json_t *e;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		if (depth <= 0)
			return false;
		const char *key;
		size_t key_len;
		bool first = true;
		put(w, "{", 1);
		json_object_keylen_foreach(v, key, key_len, e)
		{
			if (!first)
				put(w, ",", 1);
			first = false;
			if (!put_string(w, key, key_len))
				return false;
			put(w, ":", 1);
			if (!put_value(w, e, depth - 1))
				return false;
		}
		put(w, "}", 1);
		return true;
	}
	case JSON_ARRAY:
		if (depth <= 0)
			return false;
		put(w, "[", 1);
		json_array_foreach(v, i, e)
		{
			if (i > 0)
				put(w, ",", 1);
			if (!put_value(w, e, depth - 1))
				return false;
		}
		put(w, "]", 1);
		return true;
	case JSON_STRING:
		return put_string(w, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		put_integer(w, json_integer_value(v));
		return true;
	case JSON_REAL:
		put_real(w, v);
		return true;
	case JSON_TRUE:
		put(w, "true", 4);
		return true;
	case JSON_FALSE:
		put(w, "false", 5);
		return true;
	case JSON_NULL:
		put(w, "null", 4);
		return true;
	}
	return false;
}

/* ---- messages ---- */

/* Room reserved for a header before it is written: a forwarded request's or reply's header with
 * a few HTTP headers, so that writing it, then the body, reallocates nothing. */
#define MSG_HDR_GUESS 256

int dg_wan_msg_encode(struct dg_buf *out, enum dg_wan_type type, json_t *hdr, const void *body,
		      size_t body_len)
{
	if (!type_known((int)type))
		return DG_EINVAL;
	if (hdr && !json_is_object(hdr))
		return DG_EINVAL;
	if (body_len > 0 && !body)
		return DG_EINVAL;

	size_t start = out->len;
	struct json_writer w = {.out = out, .end = SIZE_MAX};
	if (body_len > DG_WAN_MAX_MSG - MSG_PREFIX_LEN) {
		w.err = DG_ETOOBIG; /* early: the header is only checked, not written */
	} else {
		/* a hint only: if it fails, the appends below fail and say so */
		(void)dg_buf_reserve(out, MSG_PREFIX_LEN + MSG_HDR_GUESS + body_len);
		uint8_t prefix[MSG_PREFIX_LEN] = {DG_WAN_MAGIC, (uint8_t)type, 0, 0, 0, 0};
		put(&w, prefix, sizeof(prefix));
	}
	size_t hstart = out->len;
	w.end = hstart + DG_WAN_MAX_HEADER;
	bool valid = true;
	if (hdr)
		valid = put_value(&w, hdr, MSG_MAX_DEPTH);
	else
		put(&w, "{}", 2);
	int rv = valid ? w.err : DG_EINVAL;
	if (rv != 0)
		goto fail;

	/* at most DG_WAN_MAX_HEADER, which the writer checked */
	size_t hlen = out->len - hstart;
	if (body_len > DG_WAN_MAX_MSG - MSG_PREFIX_LEN - hlen) {
		rv = DG_ETOOBIG;
		goto fail;
	}
	if (body_len > 0 && (rv = dg_buf_append(out, body, body_len)) != 0)
		goto fail;
	uint8_t *p = (uint8_t *)out->data + start + 2;
	p[0] = (uint8_t)(hlen >> 24);
	p[1] = (uint8_t)(hlen >> 16);
	p[2] = (uint8_t)(hlen >> 8);
	p[3] = (uint8_t)hlen;
	return 0;

fail:
	buf_truncate(out, start);
	return rv;
}

int dg_wan_msg_decode(const void *buf, size_t len, struct dg_wan_msg *out, char *err, size_t errlen)
{
	const uint8_t *b = buf;
	memset(out, 0, sizeof(*out));
	if (len > DG_WAN_MAX_MSG) {
		set_err(err, errlen, "message of %zu bytes is over the limit of %d", len,
			DG_WAN_MAX_MSG);
		return DG_ETOOBIG;
	}
	if (len < MSG_PREFIX_LEN) {
		set_err(err, errlen, "truncated: %zu bytes, the fixed header alone is %d", len,
			MSG_PREFIX_LEN);
		return DG_EINVAL;
	}
	if (b[0] != DG_WAN_MAGIC) {
		set_err(err, errlen, "bad magic 0x%02x (expected 0x%02x)", b[0], DG_WAN_MAGIC);
		return DG_EINVAL;
	}
	if (!type_known(b[1])) {
		set_err(err, errlen, "unknown type %u", b[1]);
		return DG_EINVAL;
	}
	uint32_t hlen = (uint32_t)b[2] << 24 | (uint32_t)b[3] << 16 | (uint32_t)b[4] << 8 | b[5];
	/* the limit first: a hostile length is reported as such, whatever follows it */
	if (hlen > DG_WAN_MAX_HEADER) {
		set_err(err, errlen, "header of %u bytes is over the limit of %d", hlen,
			DG_WAN_MAX_HEADER);
		return DG_ETOOBIG;
	}
	if (hlen > len - MSG_PREFIX_LEN) {
		set_err(err, errlen, "truncated: header of %u bytes but only %zu follow", hlen,
			len - MSG_PREFIX_LEN);
		return DG_EINVAL;
	}
	json_t *hdr = load_json(b + MSG_PREFIX_LEN, hlen, true, "header", err, errlen);
	if (!hdr)
		return DG_EINVAL;
	out->type = (enum dg_wan_type)b[1];
	out->hdr = hdr;
	out->body = b + MSG_PREFIX_LEN + hlen;
	out->body_len = len - MSG_PREFIX_LEN - hlen;
	return 0;
}

void dg_wan_msg_fini(struct dg_wan_msg *m)
{
	if (!m)
		return;
	json_decref(m->hdr);
	m->hdr = NULL;
}

/* ---- batches ---- */

#define BATCH_ITEM_PREFIX 4 /* each item's big-endian length */
/* room kept for the message's own prefix and header, {"Count":64} */
#define BATCH_HDR_ROOM (MSG_PREFIX_LEN + 18)
#define RESEND_TEXT "answer too large for a batch: ask again alone"

static bool batch_type(int type)
{
	return type == DG_WAN_BATCH || type == DG_WAN_BATCH_REPLY;
}

/* A BATCH carries forwarded requests, a BATCH_REPLY their answers: nothing else, and no batch
 * inside a batch, so an item is always served (or answered) the way a message alone would be. */
static bool item_allowed(enum dg_wan_type batch, int type)
{
	if (batch == DG_WAN_BATCH)
		return type == DG_WAN_HTTP;
	return type == DG_WAN_HTTP_REPLY || type == DG_WAN_ERROR;
}

void dg_wan_batch_init(struct dg_wan_batch *b, enum dg_wan_type type, size_t max)
{
	b->type = type;
	dg_buf_init(&b->body);
	b->count = 0;
	b->max = max > DG_WAN_MAX_MSG ? DG_WAN_MAX_MSG : max;
}

void dg_wan_batch_fini(struct dg_wan_batch *b)
{
	dg_buf_fini(&b->body);
	b->count = 0;
}

size_t dg_wan_batch_room(const struct dg_wan_batch *b)
{
	size_t used = BATCH_HDR_ROOM + b->body.len + BATCH_ITEM_PREFIX;
	if (b->count >= DG_WAN_MAX_BATCH || used >= b->max)
		return 0;
	return b->max - used;
}

int dg_wan_batch_add(struct dg_wan_batch *b, const void *item, size_t len)
{
	const uint8_t *p = item;
	if (!batch_type((int)b->type) || !item || len < MSG_PREFIX_LEN || p[0] != DG_WAN_MAGIC ||
	    !item_allowed(b->type, p[1]))
		return DG_EINVAL;
	if (len > dg_wan_batch_room(b))
		return DG_ETOOBIG;
	uint8_t pre[BATCH_ITEM_PREFIX] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16),
					  (uint8_t)(len >> 8), (uint8_t)len};
	size_t start = b->body.len;
	int rv;
	if ((rv = dg_buf_append(&b->body, pre, sizeof(pre))) != 0 ||
	    (rv = dg_buf_append(&b->body, item, len)) != 0) {
		buf_truncate(&b->body, start);
		return rv;
	}
	b->count++;
	return 0;
}

int dg_wan_batch_encode(const struct dg_wan_batch *b, struct dg_buf *out)
{
	if (b->count == 0 || !batch_type((int)b->type))
		return DG_EINVAL;
	json_t *hdr = json_pack("{s:I}", "Count", (json_int_t)b->count);
	if (!hdr)
		return DG_ENOMEM;
	int rv = dg_wan_msg_encode(out, b->type, hdr, b->body.data, b->body.len);
	json_decref(hdr);
	return rv;
}

void dg_wan_batch_items_free(struct dg_wan_msg *items, size_t n)
{
	if (!items)
		return;
	for (size_t i = 0; i < n; i++)
		dg_wan_msg_fini(&items[i]);
	free(items);
}

int dg_wan_batch_decode(const struct dg_wan_msg *m, struct dg_wan_msg **items, size_t *n,
			char *err, size_t errlen)
{
	*items = NULL;
	*n = 0;
	if (!batch_type((int)m->type)) {
		set_err(err, errlen, "%s is not a batch", dg_wan_type_name((int)m->type));
		return DG_EINVAL;
	}
	json_t *c = json_object_get(m->hdr, "Count");
	if (!json_is_integer(c) || json_integer_value(c) < 1) {
		set_err(err, errlen, "batch without a Count of at least 1");
		return DG_EINVAL;
	}
	if (json_integer_value(c) > DG_WAN_MAX_BATCH) {
		set_err(err, errlen, "batch of %lld items, more than %d",
			(long long)json_integer_value(c), DG_WAN_MAX_BATCH);
		return DG_ETOOBIG;
	}
	size_t count = (size_t)json_integer_value(c);
	/* the array is for the items the header announces, at most DG_WAN_MAX_BATCH */
	struct dg_wan_msg *v = calloc(count, sizeof(*v));
	if (!v) {
		set_err(err, errlen, "out of memory for %zu items", count);
		return DG_ENOMEM;
	}
	const uint8_t *b = m->body;
	size_t off = 0, k = 0;
	char why[200];
	int rv = DG_EINVAL;
	while (off < m->body_len) {
		if (k == count) {
			set_err(err, errlen, "more items than the Count of %zu", count);
			goto fail;
		}
		if (m->body_len - off < BATCH_ITEM_PREFIX) {
			set_err(err, errlen, "item %zu: truncated length", k);
			goto fail;
		}
		size_t len = (size_t)b[off] << 24 | (size_t)b[off + 1] << 16 |
			     (size_t)b[off + 2] << 8 | b[off + 3];
		off += BATCH_ITEM_PREFIX;
		if (len > m->body_len - off) {
			set_err(err, errlen, "item %zu: %zu bytes but only %zu follow", k, len,
				m->body_len - off);
			goto fail;
		}
		if ((rv = dg_wan_msg_decode(b + off, len, &v[k], why, sizeof(why))) != 0) {
			set_err(err, errlen, "item %zu: %s", k, why);
			goto fail;
		}
		if (!item_allowed(m->type, (int)v[k].type)) {
			set_err(err, errlen, "item %zu: a %s cannot travel in a %s", k,
				dg_wan_type_name((int)v[k].type), dg_wan_type_name((int)m->type));
			k++;
			rv = DG_EINVAL;
			goto fail;
		}
		k++;
		off += len;
	}
	if (k != count) {
		set_err(err, errlen, "%zu items for a Count of %zu", k, count);
		rv = DG_EINVAL;
		goto fail;
	}
	*items = v;
	*n = count;
	return 0;
fail:
	dg_wan_batch_items_free(v, k);
	return rv == DG_ETOOBIG ? DG_ETOOBIG : DG_EINVAL;
}

bool dg_wan_is_resend(const struct dg_wan_msg *m)
{
	return m->type == DG_WAN_ERROR && json_is_true(json_object_get(m->hdr, "Resend"));
}

int dg_wan_batch_reply_encode(struct dg_buf *out, const struct dg_buf *answers, size_t n,
			      size_t max, size_t *resends)
{
	*resends = 0;
	if (n == 0 || n > DG_WAN_MAX_BATCH)
		return DG_EINVAL;
	struct dg_buf marker;
	dg_buf_init(&marker);
	json_t *mh = json_pack("{s:s, s:b}", "Error", RESEND_TEXT, "Resend", 1);
	int rv = mh ? dg_wan_msg_encode(&marker, DG_WAN_ERROR, mh, NULL, 0) : DG_ENOMEM;
	json_decref(mh);
	struct dg_wan_batch b;
	dg_wan_batch_init(&b, DG_WAN_BATCH_REPLY, max);
	size_t resent = 0;
	for (size_t i = 0; rv == 0 && i < n; i++) {
		/* what the answers after this one need at least: a marker each */
		size_t later = (n - i - 1) * (marker.len + BATCH_ITEM_PREFIX);
		size_t room = dg_wan_batch_room(&b);
		if (answers[i].len <= room && room - answers[i].len >= later) {
			rv = dg_wan_batch_add(&b, answers[i].data, answers[i].len);
		} else {
			rv = dg_wan_batch_add(&b, marker.data, marker.len);
			resent++;
		}
	}
	if (rv == 0)
		rv = dg_wan_batch_encode(&b, out);
	dg_wan_batch_fini(&b);
	dg_buf_fini(&marker);
	if (rv == 0)
		*resends = resent;
	return rv;
}

/* ---- members ---- */

/* Node, Datacenter, Name and Addr: printable ASCII without spaces, so that a member logs on one
 * line and reads back the same. Node may hold dots (Consul allows them); Datacenter may not, which
 * makes "<Node>.<Datacenter>" split one way only. */
static bool label_ok(const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
		if (*c <= ' ' || *c > '~')
			return false;
	}
	return true;
}

/* The rules on a member's values, shared by the decoder and the encoder. Lengths are already
 * known to fit their arrays. Returns true, or false with the reason in err. */
static bool member_ok(const struct dg_wan_wire_member *m, char *err, size_t errlen)
{
	/* Build may be empty: a server that does not say its version is still a member */
	const struct {
		const char *field;
		const char *s;
		bool may_be_empty;
	} labels[] = {
	    {"Name", m->name, false}, {"Node", m->node, false},	 {"Datacenter", m->dc, false},
	    {"Addr", m->addr, false}, {"Build", m->build, true},
	};
	for (size_t i = 0; i < sizeof(labels) / sizeof(labels[0]); i++) {
		const char *s = labels[i].s;
		if (!s[0] && !labels[i].may_be_empty) {
			set_err(err, errlen, "%s is empty", labels[i].field);
			return false;
		}
		if (!label_ok(s)) {
			set_err(err, errlen,
				"%s holds a space or a character outside printable ASCII",
				labels[i].field);
			return false;
		}
	}
	if (strchr(m->dc, '.')) {
		set_err(err, errlen, "Datacenter \"%s\" contains a dot", m->dc);
		return false;
	}
	size_t nl = strlen(m->node), dl = strlen(m->dc);
	if (strlen(m->name) != nl + 1 + dl || memcmp(m->name, m->node, nl) != 0 ||
	    m->name[nl] != '.' || memcmp(m->name + nl + 1, m->dc, dl) != 0) {
		set_err(err, errlen, "Name \"%s\" is not \"<Node>.<Datacenter>\" (\"%s.%s\")",
			m->name, m->node, m->dc);
		return false;
	}
	if (m->port < 1 || m->port > 65535) {
		set_err(err, errlen, "Port %d outside 1..65535", m->port);
		return false;
	}
	if (m->status < 1 || m->status > 5) {
		set_err(err, errlen, "unknown Status %d", m->status);
		return false;
	}
	if (m->inc > (uint64_t)INT64_MAX) { /* a JSON integer in jansson is an int64 */
		set_err(err, errlen, "Inc %llu over the largest JSON integer",
			(unsigned long long)m->inc);
		return false;
	}
	return true;
}

/* Copies the string field `field` of obj into dst (size bytes with the NUL). */
static bool get_str(json_t *obj, const char *field, char *dst, size_t size, char *err,
		    size_t errlen)
{
	json_t *v = json_object_get(obj, field);
	if (!v) {
		set_err(err, errlen, "missing %s", field);
		return false;
	}
	if (!json_is_string(v)) {
		set_err(err, errlen, "%s is not a string", field);
		return false;
	}
	size_t n = json_string_length(v);
	if (n >= size) {
		set_err(err, errlen, "%s of %zu bytes is longer than %zu", field, n, size - 1);
		return false;
	}
	memcpy(dst, json_string_value(v), n + 1); /* no NUL inside: the parser refuses "\u0000" */
	return true;
}

/* Reads the integer field `field` of obj, which must lie in lo..hi. */
static bool get_int(json_t *obj, const char *field, json_int_t lo, json_int_t hi, json_int_t *out,
		    char *err, size_t errlen)
{
	json_t *v = json_object_get(obj, field);
	if (!v) {
		set_err(err, errlen, "missing %s", field);
		return false;
	}
	if (!json_is_integer(v)) {
		set_err(err, errlen, "%s is not an integer", field);
		return false;
	}
	json_int_t x = json_integer_value(v);
	if (x < lo || x > hi) {
		set_err(err, errlen, "%s %lld outside %lld..%lld", field, (long long)x,
			(long long)lo, (long long)hi);
		return false;
	}
	*out = x;
	return true;
}

/* Reads one member. Fields this version does not know are ignored, so a newer peer may add some. */
static bool member_from_json(json_t *obj, struct dg_wan_wire_member *m, char *err, size_t errlen)
{
	json_int_t port, status, inc;
	memset(m, 0, sizeof(*m));
	if (!json_is_object(obj)) {
		set_err(err, errlen, "not a JSON object");
		return false;
	}
	if (!get_str(obj, "Name", m->name, sizeof(m->name), err, errlen) ||
	    !get_str(obj, "Node", m->node, sizeof(m->node), err, errlen) ||
	    !get_str(obj, "Datacenter", m->dc, sizeof(m->dc), err, errlen) ||
	    !get_str(obj, "Addr", m->addr, sizeof(m->addr), err, errlen) ||
	    !get_int(obj, "Port", 1, 65535, &port, err, errlen) ||
	    !get_int(obj, "Status", 1, 5, &status, err, errlen) ||
	    !get_int(obj, "Inc", 0, INT64_MAX, &inc, err, errlen) ||
	    !get_str(obj, "Build", m->build, sizeof(m->build), err, errlen))
		return false;
	m->port = (int)port;
	m->status = (int)status;
	m->inc = (uint64_t)inc;
	return member_ok(m, err, errlen);
}

int dg_wan_members_decode(const uint8_t *body, size_t len, struct dg_wan_wire_member **out,
			  size_t *n, char *err, size_t errlen)
{
	*out = NULL;
	*n = 0;
	if (len > DG_WAN_MAX_MSG) {
		set_err(err, errlen, "members body of %zu bytes is over the limit of %d", len,
			DG_WAN_MAX_MSG);
		return DG_ETOOBIG;
	}
	json_t *arr = load_json(body, len, false, "members", err, errlen);
	if (!arr)
		return DG_EINVAL;
	int rv = DG_EINVAL;
	size_t count = json_array_size(arr);
	if (count > DG_WAN_MAX_MEMBERS) {
		set_err(err, errlen, "%zu members, more than %d", count, DG_WAN_MAX_MEMBERS);
		rv = DG_ETOOBIG;
		goto out_arr;
	}
	/* Every entry is checked before the array is allocated, so the allocation is for members
	 * that are really there: a body of 4096 "{}" costs no 2.5 MB. */
	struct dg_wan_wire_member tmp;
	char why[256];
	for (size_t i = 0; i < count; i++) {
		if (!member_from_json(json_array_get(arr, i), &tmp, why, sizeof(why))) {
			set_err(err, errlen, "member %zu: %s", i, why);
			goto out_arr;
		}
	}
	/* at least one element, so that *out is never NULL on success */
	struct dg_wan_wire_member *v = calloc(count ? count : 1, sizeof(*v));
	if (!v) {
		set_err(err, errlen, "out of memory for %zu members", count);
		rv = DG_ENOMEM;
		goto out_arr;
	}
	for (size_t i = 0; i < count; i++)
		(void)member_from_json(json_array_get(arr, i), &v[i], NULL, 0); /* passed above */
	*out = v;
	*n = count;
	rv = 0;
out_arr:
	json_decref(arr);
	return rv;
}

/* Checks that each char array of m is NUL-terminated within its size, so that member_ok may treat
 * them as strings. */
static bool member_terminated(const struct dg_wan_wire_member *m)
{
	return memchr(m->name, 0, sizeof(m->name)) && memchr(m->node, 0, sizeof(m->node)) &&
	       memchr(m->dc, 0, sizeof(m->dc)) && memchr(m->addr, 0, sizeof(m->addr)) &&
	       memchr(m->build, 0, sizeof(m->build));
}

static json_t *member_to_json(const struct dg_wan_wire_member *m)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:i, s:i, s:I, s:s}", "Name", m->name, "Node",
			 m->node, "Datacenter", m->dc, "Addr", m->addr, "Port", m->port, "Status",
			 m->status, "Inc", (json_int_t)m->inc, "Build", m->build);
}

int dg_wan_members_encode(struct dg_buf *out, const struct dg_wan_wire_member *m, size_t n)
{
	if (n > DG_WAN_MAX_MEMBERS)
		return DG_ETOOBIG;
	/* refuse here what the peer's decoder would refuse, so the mistake shows on this side */
	for (size_t i = 0; i < n; i++) {
		if (!member_terminated(&m[i]) || !member_ok(&m[i], NULL, 0))
			return DG_EINVAL;
	}
	json_t *arr = json_array();
	if (!arr)
		return DG_ENOMEM;
	int rv = DG_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		json_t *o = member_to_json(&m[i]);
		if (!o || json_array_append_new(arr, o) != 0)
			goto out_arr;
	}
	size_t start = out->len;
	/* no limit here: n is, and so is each field */
	struct json_writer w = {.out = out, .end = SIZE_MAX};
	(void)dg_buf_reserve(out, n * 160 + 2); /* a hint: about what one member takes */
	rv = put_value(&w, arr, MSG_MAX_DEPTH) ? w.err : DG_EINVAL;
	if (rv != 0)
		buf_truncate(out, start);
out_arr:
	json_decref(arr);
	return rv;
}
