/* Unit tests for LAN gossip: the codec (lan/gossip_msg.c: round trips of every type, every
 * truncation, every limit, encryption and keys), and the membership state machine
 * (lan/gossip.c) on a simulated network: N instances, a virtual clock and a packet queue with
 * per-link drop and delay rules, so each scenario is deterministic and runs in milliseconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lan/gossip.h"

/* ======================================================================================== */
/* codec                                                                                    */
/* ======================================================================================== */

static const struct dg_gossip_tag server_tags[] = {
    {"role", "consul"}, {"dc", "dc1"},     {"id", "40e4a748-2192-161a-0510-9bf59fe950b5"},
    {"vsn", "2"},       {"build", "1.17.0:abc"}, {"port", "8300"}, {"segment", ""},
};
#define NSERVER_TAGS (sizeof(server_tags) / sizeof(server_tags[0]))

static struct dg_gossip_node node(const char *name, uint8_t status, uint32_t inc)
{
	return (struct dg_gossip_node){.name = name,
				       .addr = "10.0.0.5",
				       .port = 8301,
				       .status = status,
				       .incarnation = inc,
				       .ntags = NSERVER_TAGS,
				       .tags = server_tags};
}

/* One message of every udp type, in type order. */
static size_t udp_msgs(struct dg_gossip_msg *m)
{
	size_t n = 0;
	m[n++] = (struct dg_gossip_msg){.type = DG_GOSSIP_PING, .seq = 7, .from = "a", .target = "b"};
	m[n++] = (struct dg_gossip_msg){.type = DG_GOSSIP_ACK, .seq = 0xFFFFFFFF, .from = "b"};
	m[n++] = (struct dg_gossip_msg){.type = DG_GOSSIP_NACK, .seq = 9, .from = "c"};
	m[n++] = (struct dg_gossip_msg){.type = DG_GOSSIP_INDIRECT,
					.seq = 10,
					.target = "b",
					.addr = "10.0.0.2",
					.port = 8301,
					.from = "a"};
	m[n] = (struct dg_gossip_msg){.type = DG_GOSSIP_ALIVE};
	m[n++].node = node("n1", DG_GOSSIP_ALIVE_ST, 3);
	m[n] = (struct dg_gossip_msg){.type = DG_GOSSIP_SUSPECT, .from = "a"};
	m[n].node.name = "n2";
	m[n++].node.incarnation = 4;
	m[n] = (struct dg_gossip_msg){.type = DG_GOSSIP_DEAD, .from = "a"};
	m[n].node.name = "n3";
	m[n++].node.incarnation = 5;
	m[n] = (struct dg_gossip_msg){.type = DG_GOSSIP_LEAVE};
	m[n].node.name = "n4";
	m[n++].node.incarnation = 6;
	return n;
}

static void assert_str(const char *a, const char *b)
{
	if (!a || !b) {
		assert_true(a == b);
		return;
	}
	assert_string_equal(a, b);
}

static void assert_node_equal(const struct dg_gossip_node *a, const struct dg_gossip_node *b)
{
	assert_str(a->name, b->name);
	assert_str(a->addr, b->addr);
	assert_int_equal(a->port, b->port);
	assert_int_equal(a->status, b->status);
	assert_int_equal(a->incarnation, b->incarnation);
	assert_int_equal(a->ntags, b->ntags);
	for (size_t i = 0; i < a->ntags; i++) {
		assert_string_equal(a->tags[i].key, b->tags[i].key);
		assert_string_equal(a->tags[i].value, b->tags[i].value);
	}
}

static void assert_msg_equal(const struct dg_gossip_msg *a, const struct dg_gossip_msg *b)
{
	assert_int_equal(a->type, b->type);
	switch (a->type) {
	case DG_GOSSIP_PING:
		assert_str(a->target, b->target);
		/* fall through */
	case DG_GOSSIP_ACK:
	case DG_GOSSIP_NACK:
		assert_int_equal(a->seq, b->seq);
		assert_str(a->from, b->from);
		break;
	case DG_GOSSIP_INDIRECT:
		assert_int_equal(a->seq, b->seq);
		assert_str(a->target, b->target);
		assert_str(a->addr, b->addr);
		assert_int_equal(a->port, b->port);
		assert_str(a->from, b->from);
		break;
	case DG_GOSSIP_ALIVE:
		assert_node_equal(&a->node, &b->node);
		break;
	case DG_GOSSIP_SUSPECT:
	case DG_GOSSIP_DEAD:
		assert_str(a->from, b->from);
		/* fall through */
	case DG_GOSSIP_LEAVE:
		assert_str(a->node.name, b->node.name);
		assert_int_equal(a->node.incarnation, b->node.incarnation);
		break;
	case DG_GOSSIP_PUSHPULL:
		assert_int_equal(a->flags, b->flags);
		assert_int_equal(a->nmembers, b->nmembers);
		for (size_t i = 0; i < a->nmembers; i++)
			assert_node_equal(&a->members[i], &b->members[i]);
		break;
	default:
		fail();
	}
}

static void encode_one(struct dg_buf *b, const struct dg_gossip_msg *m, size_t max)
{
	dg_buf_init(b);
	assert_int_equal(dg_gossip_packet_encode(b, m, 1, max), 0);
}

/* A push-pull of n members with every status. */
static void pushpull(struct dg_buf *b, size_t n, char (*names)[16], struct dg_gossip_node *v,
		     uint8_t flags)
{
	for (size_t i = 0; i < n; i++) {
		snprintf(names[i], 16, "node-%zu", i);
		v[i] = node(names[i], (uint8_t)(1 + i % 4), (uint32_t)i);
		v[i].ntags = i % (NSERVER_TAGS + 1);
	}
	struct dg_gossip_msg m = {
	    .type = DG_GOSSIP_PUSHPULL, .flags = flags, .nmembers = n, .members = v};
	encode_one(b, &m, DG_GOSSIP_STREAM_MAX);
}

static void round_trip_every_type(void **state)
{
	struct dg_gossip_msg m[16];
	size_t n = udp_msgs(m);
	char err[160];
	for (size_t i = 0; i < n; i++) {
		struct dg_buf b;
		struct dg_gossip_packet p;
		encode_one(&b, &m[i], DG_GOSSIP_UDP_MAX);
		assert_int_equal(dg_gossip_packet_decode(b.data, b.len, false, &p, err, sizeof(err)),
				 0);
		assert_int_equal(p.n, 1);
		assert_msg_equal(&m[i], &p.msg[0]);
		dg_gossip_packet_fini(&p);
		dg_buf_fini(&b);
	}

	/* compound: all of them in one datagram */
	struct dg_buf b;
	struct dg_gossip_packet p;
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_packet_encode(&b, m, n, DG_GOSSIP_UDP_MAX), 0);
	assert_true(b.len <= DG_GOSSIP_UDP_MAX);
	assert_int_equal(dg_gossip_packet_decode(b.data, b.len, false, &p, err, sizeof(err)), 0);
	assert_int_equal(p.n, n);
	for (size_t i = 0; i < n; i++)
		assert_msg_equal(&m[i], &p.msg[i]);
	dg_gossip_packet_fini(&p);
	dg_buf_fini(&b);

	/* push-pull over a stream, each flag, empty and full-ish */
	static char names[300][16];
	static struct dg_gossip_node v[300];
	size_t sizes[] = {0, 1, 300};
	for (size_t s = 0; s < 3; s++) {
		pushpull(&b, sizes[s], names, v, s == 0 ? 0 : (uint8_t)s);
		assert_int_equal(dg_gossip_packet_decode(b.data, b.len, true, &p, err, sizeof(err)),
				 0);
		struct dg_gossip_msg want = {.type = DG_GOSSIP_PUSHPULL,
					     .flags = s == 0 ? 0 : (uint8_t)s,
					     .nmembers = sizes[s],
					     .members = v};
		assert_msg_equal(&want, &p.msg[0]);
		dg_gossip_packet_fini(&p);
		dg_buf_fini(&b);
	}

	/* the smallest members there are: the count check before allocating must not refuse
	 * them; and the smallest tags */
	static const char *one_char[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
	struct dg_gossip_tag tiny_tags[3] = {{"k", ""}, {"l", ""}, {"m", ""}};
	for (size_t i = 0; i < 10; i++)
		v[i] = (struct dg_gossip_node){
		    .name = one_char[i], .addr = "x", .port = 1, .status = DG_GOSSIP_LEFT};
	v[9].ntags = 3;
	v[9].tags = tiny_tags;
	struct dg_gossip_msg tiny = {.type = DG_GOSSIP_PUSHPULL, .nmembers = 10, .members = v};
	encode_one(&b, &tiny, DG_GOSSIP_STREAM_MAX);
	assert_int_equal(b.len, 2 + 5 + 3 + 10 * 12 + 3 * 5);
	assert_int_equal(dg_gossip_packet_decode(b.data, b.len, true, &p, err, sizeof(err)), 0);
	assert_msg_equal(&tiny, &p.msg[0]);
	dg_gossip_packet_fini(&p);
	dg_buf_fini(&b);
}

/* Every prefix of a valid packet, and the packet with a byte more, are refused with a reason. */
static void check_truncations(const struct dg_buf *b, bool stream)
{
	char err[160];
	struct dg_gossip_packet p;
	for (size_t len = 0; len < b->len; len++) {
		err[0] = 0;
		int rv = dg_gossip_packet_decode(b->data, len, stream, &p, err, sizeof(err));
		if (rv == 0)
			fail_msg("a %zu-byte prefix of a %zu-byte packet decoded", len, b->len);
		assert_true(err[0] != 0);
		assert_int_equal(p.n, 0);
		dg_gossip_packet_fini(&p);
	}
	uint8_t *longer = malloc(b->len + 1);
	memcpy(longer, b->data, b->len);
	longer[b->len] = 0;
	assert_int_not_equal(
	    dg_gossip_packet_decode(longer, b->len + 1, stream, &p, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "stray"));
	free(longer);
}

static void every_truncation_refused(void **state)
{
	struct dg_gossip_msg m[16];
	size_t n = udp_msgs(m);
	struct dg_buf b;
	for (size_t i = 0; i < n; i++) {
		encode_one(&b, &m[i], DG_GOSSIP_UDP_MAX);
		check_truncations(&b, false);
		dg_buf_fini(&b);
	}
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_packet_encode(&b, m, n, DG_GOSSIP_UDP_MAX), 0);
	check_truncations(&b, false);
	dg_buf_fini(&b);
	static char names[20][16];
	static struct dg_gossip_node v[20];
	pushpull(&b, 20, names, v, DG_GOSSIP_PP_JOIN);
	check_truncations(&b, true);
	dg_buf_fini(&b);
}

static void expect_refused(const void *buf, size_t len, bool stream, const char *why)
{
	char err[160] = "";
	struct dg_gossip_packet p;
	int rv = dg_gossip_packet_decode(buf, len, stream, &p, err, sizeof(err));
	if (rv == 0)
		fail_msg("decoded a packet that should fail with \"%s\"", why);
	if (!strstr(err, why))
		fail_msg("reason \"%s\" does not mention \"%s\"", err, why);
	dg_gossip_packet_fini(&p);
}

static void put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void limits_refused(void **state)
{
	struct dg_buf b;
	struct dg_gossip_msg m = {.type = DG_GOSSIP_ALIVE};
	char err[160];

	/* header-level */
	uint8_t zero[2] = {DG_GOSSIP_MAGIC, 0};
	expect_refused(zero, 2, false, "message count 0");
	uint8_t many[2] = {DG_GOSSIP_MAGIC, DG_GOSSIP_MAX_COMPOUND + 1};
	expect_refused(many, 2, false, "message count 65");
	uint8_t magic[2] = {0x00, 1};
	expect_refused(magic, 2, false, "bad magic");
	uint8_t sealed[40] = {DG_GOSSIP_SEALED};
	expect_refused(sealed, sizeof(sealed), false, "encrypted");
	static uint8_t big[DG_GOSSIP_UDP_MAX + 1];
	expect_refused(big, sizeof(big), false, "over 1400");
	uint8_t unknown[7] = {DG_GOSSIP_MAGIC, 1, 42, 0, 0, 0, 0};
	expect_refused(unknown, sizeof(unknown), false, "unknown message type 42");

	/* a member name of 129 bytes, hand-made (the encoder refuses it) */
	uint8_t longname[2 + 5 + 1 + 129 + 4];
	longname[0] = DG_GOSSIP_MAGIC;
	longname[1] = 1;
	longname[2] = DG_GOSSIP_LEAVE;
	longname[3] = longname[4] = 0;
	put_be16(longname + 5, 1 + 129 + 4);
	longname[7] = 129;
	memset(longname + 8, 'x', 129);
	memset(longname + 8 + 129, 0, 4);
	expect_refused(longname, sizeof(longname), false, "longer than 128");

	/* a NUL inside a name */
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_ACK, .seq = 1, .from = "abc"};
	encode_one(&b, &m, DG_GOSSIP_UDP_MAX);
	b.data[b.len - 2] = 0;
	expect_refused(b.data, b.len, false, "NUL");
	dg_buf_fini(&b);

	/* 33 tags: encoder refuses, decoder refuses the hand-patched count */
	struct dg_gossip_tag tags[33];
	char keys[33][16];
	for (int i = 0; i < 33; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i);
		tags[i] = (struct dg_gossip_tag){keys[i], "v"};
	}
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_ALIVE};
	m.node = node("n1", DG_GOSSIP_ALIVE_ST, 1);
	m.node.tags = tags;
	m.node.ntags = 33;
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_EINVAL);
	assert_int_equal(b.len, 0);
	dg_buf_fini(&b);
	m.node.ntags = 32;
	encode_one(&b, &m, DG_GOSSIP_UDP_MAX);
	/* the tag count sits right before the first tag key's length */
	size_t at = 2 + 5 + 1 + 2 + 1 + 8 + 2 + 4;
	assert_int_equal((uint8_t)b.data[at], 32);
	b.data[at] = 33;
	expect_refused(b.data, b.len, false, "33 tags");
	dg_buf_fini(&b);

	/* tags over their byte budget, duplicate keys */
	static char bigval[DG_GOSSIP_TAG_MAX + 1];
	memset(bigval, 'v', DG_GOSSIP_TAG_MAX);
	struct dg_gossip_tag fat[5] = {
	    {"a", bigval}, {"b", bigval}, {"c", bigval}, {"d", bigval}, {"e", "x"}};
	m.node.tags = fat;
	m.node.ntags = 5;
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_ETOOBIG);
	struct dg_gossip_tag dup[2] = {{"a", "1"}, {"a", "2"}};
	m.node.tags = dup;
	m.node.ntags = 2;
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_EINVAL);
	dg_buf_fini(&b);

	/* push-pull: over 4096 members, a count the bytes cannot hold, and in a datagram */
	static char names[2][16];
	static struct dg_gossip_node v[2];
	pushpull(&b, 2, names, v, 0);
	uint8_t *cnt = (uint8_t *)b.data + 2 + 5 + 1;
	put_be16(cnt, DG_GOSSIP_MAX_MEMBERS + 1);
	expect_refused(b.data, b.len, true, "more than 4096");
	put_be16(cnt, 4000);
	expect_refused(b.data, b.len, true, "truncated push-pull");
	put_be16(cnt, 2);
	expect_refused(b.data, b.len, false, "PUSHPULL message in a udp packet");
	dg_buf_fini(&b);
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_PUSHPULL, .nmembers = 4097, .members = v};
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_ETOOBIG);
	dg_buf_fini(&b);

	/* a udp message in a stream, an unknown flag */
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_NACK, .seq = 1, .from = "a"};
	encode_one(&b, &m, DG_GOSSIP_UDP_MAX);
	expect_refused(b.data, b.len, true, "NACK message in a stream packet");
	dg_buf_fini(&b);
	pushpull(&b, 1, names, v, 0);
	b.data[7] = 0x04;
	expect_refused(b.data, b.len, true, "unknown push-pull flags");
	dg_buf_fini(&b);

	/* encoder refusals: empty and over-long names, port 0 */
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_PING, .seq = 1, .from = "", .target = "b"};
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_EINVAL);
	char n129[130];
	memset(n129, 'n', 129);
	n129[129] = 0;
	m.from = n129;
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_EINVAL);
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_INDIRECT,
				   .seq = 1,
				   .target = "b",
				   .addr = "10.0.0.1",
				   .port = 0,
				   .from = "a"};
	assert_int_equal(dg_gossip_msg_encode(&b, &m), DG_EINVAL);
	assert_int_equal(b.len, 0);
	/* a packet that would exceed its size limit */
	m = (struct dg_gossip_msg){.type = DG_GOSSIP_ACK, .seq = 1, .from = "a"};
	assert_int_equal(dg_gossip_packet_encode(&b, &m, 1, 5), DG_ETOOBIG);
	dg_buf_fini(&b);
	(void)err;
}

static void keys_and_sealing(void **state)
{
	uint8_t key[DG_GOSSIP_KEY_LEN], other[DG_GOSSIP_KEY_LEN];
	char text[64], err[160];

	/* a Consul key: base64 of 32 bytes */
	assert_int_equal(dg_gossip_key_parse("pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=", key,
					     err, sizeof(err)),
			 0);
	assert_int_equal(dg_gossip_key_parse("cg8StVXbQJ0gPvMd9o7yrg==", key, err, sizeof(err)),
			 DG_EINVAL); /* 16 bytes: AES-128, not ours */
	assert_non_null(strstr(err, "must be 32 bytes"));
	assert_non_null(strstr(err, "got 16"));
	assert_int_equal(dg_gossip_key_parse("not*base64!", key, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "base64"));
	assert_int_equal(dg_gossip_key_parse("", key, err, sizeof(err)), DG_EINVAL);
	assert_int_equal(dg_gossip_key_generate(text, 10), DG_ETOOBIG);
	assert_int_equal(dg_gossip_key_generate(text, sizeof(text)), 0);
	assert_int_equal(strlen(text), 44);
	assert_int_equal(dg_gossip_key_parse(text, key, err, sizeof(err)), 0);
	char text2[64];
	assert_int_equal(dg_gossip_key_generate(text2, sizeof(text2)), 0);
	assert_string_not_equal(text, text2);
	assert_int_equal(dg_gossip_key_parse(text2, other, err, sizeof(err)), 0);

	/* seal, open; a second seal of the same bytes differs (fresh nonce) */
	struct dg_gossip_msg m[16];
	size_t n = udp_msgs(m);
	struct dg_buf plain, sealed, sealed2;
	dg_buf_init(&plain);
	dg_buf_init(&sealed);
	dg_buf_init(&sealed2);
	assert_int_equal(dg_gossip_packet_encode(&plain, m, n, DG_GOSSIP_UDP_MAX), 0);
	assert_int_equal(dg_gossip_seal(key, plain.data, plain.len, &sealed), 0);
	assert_int_equal(dg_gossip_seal(key, plain.data, plain.len, &sealed2), 0);
	assert_int_equal(sealed.len, plain.len + DG_GOSSIP_SEAL_OVERHEAD);
	assert_int_equal((uint8_t)sealed.data[0], DG_GOSSIP_SEALED);
	assert_memory_not_equal(sealed.data, sealed2.data, sealed.len);
	uint8_t *out = malloc(sealed.len);
	size_t outlen;
	assert_int_equal(dg_gossip_open(key, sealed.data, sealed.len, out, &outlen), 0);
	assert_int_equal(outlen, plain.len);
	assert_memory_equal(out, plain.data, plain.len);

	/* the wrong key, every flipped bit of one byte in each position, truncation */
	assert_int_equal(dg_gossip_open(other, sealed.data, sealed.len, out, &outlen), DG_EPERM);
	assert_int_equal(outlen, 0);
	for (size_t i = 0; i < sealed.len; i++) {
		sealed.data[i] ^= 0x20;
		assert_int_equal(dg_gossip_open(key, sealed.data, sealed.len, out, &outlen),
				 DG_EPERM);
		sealed.data[i] ^= 0x20;
	}
	for (size_t len = 0; len < sealed.len; len++)
		assert_int_equal(dg_gossip_open(key, sealed.data, len, out, &outlen), DG_EPERM);
	/* an empty plaintext still authenticates */
	dg_buf_fini(&sealed2);
	dg_buf_init(&sealed2);
	assert_int_equal(dg_gossip_seal(key, "", 0, &sealed2), 0);
	assert_int_equal(dg_gossip_open(key, sealed2.data, sealed2.len, out, &outlen), 0);
	assert_int_equal(outlen, 0);
	free(out);
	dg_buf_fini(&plain);
	dg_buf_fini(&sealed);
	dg_buf_fini(&sealed2);
}

/* ======================================================================================== */
/* the state machine on a simulated network                                                  */
/* ======================================================================================== */

#define MAXN    64 /* the 50-member scenarios */
#define STEP_MS 5

struct spkt {
	int from, to;
	uint64_t at;
	uint8_t *data;
	size_t len;
	bool stream;
};

struct sim;
struct node_ctx {
	struct sim *s;
	int i;
};

struct sim {
	int n;
	dg_gossip *g[MAXN];
	struct node_ctx ctx[MAXN];
	char addr[MAXN][16];
	bool up[MAXN];               /* down: sends nothing, receives nothing */
	bool drop[MAXN][MAXN];       /* from -> to */
	bool drop_acks_from[MAXN];   /* packets whose first message is an ACK */
	uint32_t delay[MAXN][MAXN];  /* ms, from -> to */
	uint64_t now;
	struct spkt *q;
	size_t nq, cap;
	/* what the change hooks and the network saw */
	int failed[MAXN][MAXN];       /* observer, subject: FAILED events */
	int left[MAXN][MAXN];         /* LEFT events */
	int reaped[MAXN][MAXN];       /* NONE events */
	bool ever_suspect[MAXN][MAXN]; /* polled each step */
	size_t max_udp;
	uint64_t delivered, dropped;
};

static int node_index(const char *name)
{
	return name[0] == 'n' ? atoi(name + 1) : -1;
}

static int addr_index(const struct sim *s, const char *addr)
{
	for (int i = 0; i < s->n; i++)
		if (strcmp(s->addr[i], addr) == 0)
			return i;
	return -1;
}

static void sim_send(void *arg, const struct dg_gossip_out *o)
{
	struct node_ctx *c = arg;
	struct sim *s = c->s;
	int to = addr_index(s, o->addr);
	assert_true(to >= 0);
	assert_int_equal(o->port, 8301);
	if (!o->stream) {
		assert_true(o->len <= DG_GOSSIP_UDP_MAX);
		if (o->len > s->max_udp)
			s->max_udp = o->len;
	}
	if (s->nq == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->q = realloc(s->q, s->cap * sizeof(*s->q));
		assert_non_null(s->q);
	}
	struct spkt *p = &s->q[s->nq++];
	p->from = c->i;
	p->to = to;
	p->at = s->now + s->delay[c->i][to];
	p->data = malloc(o->len);
	memcpy(p->data, o->data, o->len);
	p->len = o->len;
	p->stream = o->stream;
}

static void sim_change(void *arg, const struct dg_gossip_member *m, int old)
{
	struct node_ctx *c = arg;
	int j = node_index(m->name);
	assert_true(j >= 0 && j < MAXN);
	if (m->status == DG_GOSSIP_FAILED)
		c->s->failed[c->i][j]++;
	if (m->status == DG_GOSSIP_LEFT)
		c->s->left[c->i][j]++;
	if (m->status == DG_GOSSIP_NONE)
		c->s->reaped[c->i][j]++;
}

static const uint8_t test_key[DG_GOSSIP_KEY_LEN] = "0123456789abcdef0123456789abcdef";

/* The random choices of the instances; DG_GOSSIP_TEST_SEED=k runs the same scenarios with
 * other choices (each value is as deterministic as the default). */
static uint64_t seed_base(void)
{
	const char *e = getenv("DG_GOSSIP_TEST_SEED");
	return e ? strtoull(e, NULL, 10) * 1000 : 0;
}

/* n nodes "n0".."n<n-1>" on 10.0.0.1.. with Consul-like tags; tweak may adjust the config. */
static struct sim *sim_new(int n, void (*tweak)(struct dg_gossip_config *, int))
{
	struct sim *s = calloc(1, sizeof(*s));
	s->n = n;
	s->now = 1000000;
	for (int i = 0; i < n; i++) {
		char name[16], id[40];
		snprintf(name, sizeof(name), "n%d", i);
		snprintf(s->addr[i], sizeof(s->addr[i]), "10.0.0.%d", i + 1);
		snprintf(id, sizeof(id), "00000000-0000-0000-0000-%012d", i);
		struct dg_gossip_tag tags[] = {{"role", i < 3 ? "consul" : "node"},
					       {"dc", "dc1"},
					       {"id", id},
					       {"vsn", "2"},
					       {"build", "0.3.0:abcdef"},
					       {"port", "8300"}};
		struct dg_gossip_config cfg = {.name = name,
					       .addr = s->addr[i],
					       .port = 8301,
					       .tags = tags,
					       .ntags = 6,
					       .seed = seed_base() + (uint64_t)i + 1,
					       .send = sim_send,
					       .change = sim_change,
					       .arg = &s->ctx[i]};
		if (tweak)
			tweak(&cfg, i);
		s->ctx[i] = (struct node_ctx){s, i};
		char err[160];
		assert_int_equal(dg_gossip_new(&cfg, s->now, &s->g[i], err, sizeof(err)), 0);
		s->up[i] = true;
		for (int j = 0; j < n; j++)
			s->delay[i][j] = 1;
	}
	return s;
}

static void sim_free(struct sim *s)
{
	for (int i = 0; i < s->n; i++)
		dg_gossip_free(s->g[i]);
	for (size_t i = 0; i < s->nq; i++)
		free(s->q[i].data);
	free(s->q);
	free(s);
}

static bool first_is_ack(const struct spkt *p)
{
	/* plaintext only: [magic][count][type]... */
	return p->len > 2 && p->data[0] == DG_GOSSIP_MAGIC && p->data[2] == DG_GOSSIP_ACK;
}

static void deliver_due(struct sim *s)
{
	/* packets are delivered in the order they were sent among those due */
	size_t w = 0;
	size_t n = s->nq;
	for (size_t i = 0; i < n; i++) {
		struct spkt p = s->q[i];
		if (p.at > s->now) {
			s->q[w++] = p;
			continue;
		}
		if (!s->up[p.from] || !s->up[p.to] || s->drop[p.from][p.to] ||
		    (s->drop_acks_from[p.from] && first_is_ack(&p))) {
			s->dropped++;
		} else {
			s->delivered++;
			/* a reply over the stream the request came on: the sim's addresses say
			 * who, the port is the same */
			dg_gossip_recv(s->g[p.to], s->addr[p.from], 8301, p.data, p.len, p.stream,
				       s->now);
		}
		free(p.data);
	}
	/* packets queued while delivering were appended after n */
	for (size_t i = n; i < s->nq; i++)
		s->q[w++] = s->q[i];
	s->nq = w;
}

static void sim_step(struct sim *s)
{
	s->now += STEP_MS;
	deliver_due(s);
	for (int i = 0; i < s->n; i++)
		if (s->up[i])
			dg_gossip_tick(s->g[i], s->now);
	for (int i = 0; i < s->n; i++)
		for (int j = 0; j < s->n; j++) {
			const struct dg_gossip_member *m;
			char name[16];
			snprintf(name, sizeof(name), "n%d", j);
			if (i != j && (m = dg_gossip_find(s->g[i], name)) && m->suspect)
				s->ever_suspect[i][j] = true;
		}
}

static int status_of(struct sim *s, int i, int j)
{
	char name[16];
	snprintf(name, sizeof(name), "n%d", j);
	const struct dg_gossip_member *m = dg_gossip_find(s->g[i], name);
	return m ? m->status : DG_GOSSIP_NONE;
}

static bool suspect_of(struct sim *s, int i, int j)
{
	char name[16];
	snprintf(name, sizeof(name), "n%d", j);
	const struct dg_gossip_member *m = dg_gossip_find(s->g[i], name);
	return m && m->suspect;
}

/* Every up node sees every up node alive and unsuspected. */
static bool converged(struct sim *s)
{
	for (int i = 0; i < s->n; i++) {
		if (!s->up[i])
			continue;
		for (int j = 0; j < s->n; j++)
			if (s->up[j] &&
			    (status_of(s, i, j) != DG_GOSSIP_ALIVE_ST || suspect_of(s, i, j)))
				return false;
	}
	return true;
}

/* Runs until pred holds or ms pass; returns the simulated ms it took, or UINT64_MAX. */
static uint64_t run_until(struct sim *s, bool (*pred)(struct sim *, void *), void *arg,
			  uint64_t ms)
{
	uint64_t start = s->now;
	while (s->now - start <= ms) {
		if (pred(s, arg))
			return s->now - start;
		sim_step(s);
	}
	return UINT64_MAX;
}

static void run_for(struct sim *s, uint64_t ms)
{
	uint64_t end = s->now + ms;
	while (s->now < end)
		sim_step(s);
}

static bool pred_converged(struct sim *s, void *arg)
{
	return converged(s);
}

static void join_all(struct sim *s)
{
	for (int i = 1; i < s->n; i++)
		assert_int_equal(dg_gossip_join(s->g[i], s->addr[0], 8301, s->now), 0);
}

static struct sim *converged_cluster(int n, void (*tweak)(struct dg_gossip_config *, int))
{
	struct sim *s = sim_new(n, tweak);
	join_all(s);
	/* gossip is probabilistic: with few members an update is sent only 4 times and may miss
	 * one; the push-pull (every 30 s) repairs that, so it is the bound here */
	uint64_t t = run_until(s, pred_converged, NULL, 45000);
	if (t == UINT64_MAX)
		fail_msg("%d nodes did not converge within 45 s of joining", n);
	return s;
}

static void join_converges(void **state)
{
	struct sim *s = sim_new(10, NULL);
	for (int i = 0; i < 10; i++)
		assert_int_equal(dg_gossip_count(s->g[i]), 1);
	join_all(s);
	/* the bound: a push-pull round trip, then each ALIVE needs about log(n) rounds of
	 * piggybacking at one probe a second; 10 s leaves ample room */
	uint64_t t = run_until(s, pred_converged, NULL, 10000);
	print_message("10 nodes converged %llu ms after joining one seed\n", (unsigned long long)t);
	assert_true(t <= 10000);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(dg_gossip_count(s->g[i]), 10);
		assert_int_equal(dg_gossip_alive(s->g[i]), 10);
		const struct dg_gossip_member *m = dg_gossip_find(s->g[i], "n1");
		assert_string_equal(m->addr, "10.0.0.2");
		assert_int_equal(m->port, 8301);
		assert_int_equal(m->ntags, 6);
		assert_string_equal(m->tags[0].key, "role");
		assert_string_equal(m->tags[0].value, "consul");
	}
	/* nothing was lost on a perfect network, so nobody was ever suspected */
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			assert_false(s->ever_suspect[i][j]);
	sim_free(s);
}

struct all_see {
	int subject, status;
};

static bool pred_all_see(struct sim *s, void *arg)
{
	struct all_see *a = arg;
	for (int i = 0; i < s->n; i++)
		if (s->up[i] && i != a->subject && status_of(s, i, a->subject) != a->status)
			return false;
	return true;
}

static void failure_detected(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	const int x = 3;
	uint64_t susp = dg_gossip_suspicion_ms(s->g[0]);
	uint64_t susp_min = dg_gossip_suspicion_min_ms(s->g[0]);
	/* unconfirmed: 4 * log10(11) * 1 s; confirmed by 3 others: a third of that */
	assert_true(susp >= 4100 && susp <= 4200);
	assert_int_equal(susp_min, susp / 3);
	s->up[x] = false;
	/* the bound: someone probes x within a round of n probe intervals plus one for the probe
	 * to fail, then the longest suspicion timeout (no confirmations), then a few intervals for
	 * DEAD to spread */
	uint64_t bound = 11 * 1000 + susp + 5 * 1000;
	struct all_see a = {x, DG_GOSSIP_FAILED};
	uint64_t t = run_until(s, pred_all_see, &a, bound);
	print_message("n3 stopped: failed everywhere after %llu ms (bound %llu)\n",
		      (unsigned long long)t, (unsigned long long)bound);
	assert_true(t <= bound);
	/* not before the shortest suspicion timeout could have run out */
	assert_true(t >= susp_min);
	/* the others agree and nobody else was harmed */
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			if (j != x && i != x)
				assert_int_equal(s->failed[i][j], 0);
	for (int i = 0; i < 10; i++)
		if (i != x)
			assert_int_equal(s->failed[i][x], 1);
	run_for(s, 30000);
	for (int i = 0; i < 10; i++)
		if (i != x) {
			assert_int_equal(status_of(s, i, x), DG_GOSSIP_FAILED);
			assert_int_equal(dg_gossip_alive(s->g[i]), 9);
		}
	sim_free(s);
}

/* memberlist's formula: the timeout after c of k confirmations. */
static uint64_t expected_timeout(uint64_t min, uint64_t max, unsigned c, unsigned k)
{
	double t = (double)max - (double)(max - min) * log(c + 1.0) / log(k + 1.0);
	return t < (double)min ? min : (uint64_t)t;
}

static bool pred_someone_suspects(struct sim *s, void *arg)
{
	int x = *(const int *)arg;
	for (int i = 0; i < s->n; i++)
		if (s->ever_suspect[i][x])
			return true;
	return false;
}

/* The agent's gossip timings (cmd/main.c): a probe every 500 ms, 250 ms probe timeout, mult 4. */
static void agent_timings(struct dg_gossip_config *c, int i)
{
	c->probe_interval_ms = 500;
	c->probe_timeout_ms = 250;
	c->suspicion_mult = 4;
}

/* Stops node x of a converged cluster and runs until every other node has it failed, at most
 * limit ms: returns the time that took (UINT64_MAX if not), and checks that nobody else was
 * failed and that each node failed x once. */
static uint64_t stop_and_time(struct sim *s, int x, uint64_t limit)
{
	s->up[x] = false;
	struct all_see a = {x, DG_GOSSIP_FAILED};
	uint64_t t = run_until(s, pred_all_see, &a, limit);
	for (int i = 0; i < s->n; i++)
		for (int j = 0; j < s->n; j++)
			if (i != x && j != x)
				assert_int_equal(s->failed[i][j], 0);
	if (t != UINT64_MAX)
		for (int i = 0; i < s->n; i++)
			if (i != x)
				assert_int_equal(s->failed[i][x], 1);
	return t;
}

/* Issue 5's target, "a killed agent marked failed within 5 s", with 50 agents at the agent's
 * timings: the suspicion timer shortens as the other members' failed probes confirm it. */
static void failure_detected_50(void **state)
{
	struct sim *s = converged_cluster(50, agent_timings);
	const int x = 26;
	const uint64_t P = 500;
	uint64_t max = dg_gossip_suspicion_ms(s->g[0]), min = dg_gossip_suspicion_min_ms(s->g[0]);
	/* 4 * log10(51) * 500 ms unconfirmed, a third of that with k = 3 confirmations */
	assert_int_equal(max, 3415);
	assert_int_equal(min, max / 3);
	/* the bound: 4P until some member's probe of x has failed (49 members each walk a
	 * shuffled list of the other 49, so x is probed about once per P, 3P in the tail, and
	 * the probe is given up at the end of its interval); then the timeout with two of the
	 * three confirmations (each P about one member probes x, and its failed probe is one);
	 * then 2P for DEAD to reach all 49 (3 random members every 200 ms). Without
	 * confirmations the same reasoning gives 4P + max + 2P = 6.4 s. */
	uint64_t with2 = expected_timeout(min, max, 2, 3);
	uint64_t bound = 4 * P + with2 + 2 * P;
	assert_true(bound < 5000);
	uint64_t t = stop_and_time(s, x, bound);
	print_message("50 members: n26 stopped, failed everywhere after %llu ms (bound %llu; "
		      "suspicion %llu to %llu ms)\n",
		      (unsigned long long)t, (unsigned long long)bound, (unsigned long long)min,
		      (unsigned long long)max);
	assert_true(t <= bound);
	/* a probe interval at least, then the shortest suspicion */
	assert_true(t >= P + min);
	uint64_t confirmations = 0;
	for (int i = 0; i < 50; i++)
		confirmations += dg_gossip_stats(s->g[i])->confirmations;
	assert_true(confirmations > 0);
	sim_free(s);
}

/* A failed agent restarted with the same name starts again at incarnation 1, below what the
 * others remember: the seed's push-pull tells it it is failed, and it refutes. */
static void restart_rejoins(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	const int x = 4;
	s->up[x] = false;
	struct all_see a = {x, DG_GOSSIP_FAILED};
	assert_true(run_until(s, pred_all_see, &a, 30000) != UINT64_MAX);
	uint32_t old_inc = dg_gossip_find(s->g[0], "n4")->incarnation;

	struct dg_gossip_tag tags[] = {{"role", "node"}, {"dc", "dc1"}};
	struct dg_gossip_config cfg = {.name = "n4",
				       .addr = s->addr[x],
				       .port = 8301,
				       .tags = tags,
				       .ntags = 2,
				       .seed = 99,
				       .send = sim_send,
				       .change = sim_change,
				       .arg = &s->ctx[x]};
	char err[160];
	dg_gossip_free(s->g[x]);
	assert_int_equal(dg_gossip_new(&cfg, s->now, &s->g[x], err, sizeof(err)), 0);
	assert_int_equal(dg_gossip_self(s->g[x])->incarnation, 1);
	s->up[x] = true;
	assert_int_equal(dg_gossip_join(s->g[x], s->addr[0], 8301, s->now), 0);
	uint64_t t = run_until(s, pred_converged, NULL, 10000);
	print_message("restarted n4 alive everywhere %llu ms after joining\n",
		      (unsigned long long)t);
	assert_true(t != UINT64_MAX);
	assert_true(dg_gossip_self(s->g[x])->incarnation > old_inc);
	for (int i = 0; i < 10; i++) {
		const struct dg_gossip_member *m = dg_gossip_find(s->g[i], "n4");
		assert_int_equal(m->status, DG_GOSSIP_ALIVE_ST);
		assert_int_equal(m->ntags, 2); /* the new tags came with the new incarnation */
	}
	sim_free(s);
}

static bool pred_tags_seen(struct sim *s, void *arg)
{
	for (int i = 0; i < s->n; i++) {
		const struct dg_gossip_member *m = dg_gossip_find(s->g[i], "n1");
		if (!m || m->ntags != 2 || strcmp(m->tags[1].value, "1") != 0)
			return false;
	}
	return true;
}

static void tags_change(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	uint32_t inc = dg_gossip_self(s->g[1])->incarnation;
	struct dg_gossip_tag tags[] = {{"role", "consul"}, {"bootstrap", "1"}};
	static char bigval[DG_GOSSIP_TAG_MAX + 1];
	memset(bigval, 'v', DG_GOSSIP_TAG_MAX);
	struct dg_gossip_tag fat[5] = {
	    {"a", bigval}, {"b", bigval}, {"c", bigval}, {"d", bigval}, {"e", "x"}};
	assert_int_equal(dg_gossip_set_tags(s->g[1], fat, 5), DG_EINVAL);
	assert_int_equal(dg_gossip_self(s->g[1])->ntags, 6); /* unchanged */
	assert_int_equal(dg_gossip_set_tags(s->g[1], tags, 2), 0);
	assert_int_equal(dg_gossip_self(s->g[1])->incarnation, inc + 1);
	uint64_t t = run_until(s, pred_tags_seen, NULL, 5000);
	assert_true(t != UINT64_MAX);
	assert_true(converged(s));
	sim_free(s);
}

static void false_suspicion_refuted(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	const int x = 6;
	uint32_t inc = dg_gossip_self(s->g[x])->incarnation;
	/* x's acks, direct and to relays, are lost until someone suspects x and for a second
	 * more; all else gets through */
	s->drop_acks_from[x] = true;
	uint64_t t = run_until(s, pred_someone_suspects, (void *)&x, 20000);
	assert_true(t != UINT64_MAX);
	run_for(s, 1000);
	s->drop_acks_from[x] = false;
	run_for(s, 20000);
	assert_true(dg_gossip_self(s->g[x])->incarnation > inc);
	assert_true(dg_gossip_stats(s->g[x])->refutes > 0);
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			assert_int_equal(s->failed[i][j], 0);
	assert_true(converged(s));
	for (int i = 0; i < 10; i++)
		if (i != x) {
			const struct dg_gossip_member *m = dg_gossip_find(s->g[i], "n6");
			assert_int_equal(m->incarnation, dg_gossip_self(s->g[x])->incarnation);
		}
	sim_free(s);
}

static void indirect_probes_keep_alive(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	s->drop[0][4] = s->drop[4][0] = true; /* only the direct link between n0 and n4 */
	uint64_t before = dg_gossip_stats(s->g[0])->indirect_probes;
	run_for(s, 60000);
	assert_true(dg_gossip_stats(s->g[0])->indirect_probes > before);
	assert_false(s->ever_suspect[0][4]);
	assert_false(s->ever_suspect[4][0]);
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			assert_int_equal(s->failed[i][j], 0);
	assert_true(converged(s));
	sim_free(s);
}

static bool pred_leave_done(struct sim *s, void *arg)
{
	return dg_gossip_leave_done(s->g[*(int *)arg]);
}

static void graceful_leave(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	int x = 5;
	assert_int_equal(dg_gossip_leave(s->g[x], s->now), 0);
	assert_int_equal(dg_gossip_self(s->g[x])->status, DG_GOSSIP_LEAVING);
	uint64_t t = run_until(s, pred_leave_done, &x, 10000);
	assert_true(t <= 10000);
	assert_int_equal(dg_gossip_self(s->g[x])->status, DG_GOSSIP_LEFT);
	s->up[x] = false; /* the process exits */
	struct all_see a = {x, DG_GOSSIP_LEFT};
	if (run_until(s, pred_all_see, &a, 5000) == UINT64_MAX) {
		for (int i = 0; i < 10; i++)
			print_message("n%d sees n5 status %d failed %d left %d inc %u rx %lu bad %lu\n", i, status_of(s, i, x), s->failed[i][x], s->left[i][x], dg_gossip_find(s->g[i], "n5")->incarnation, dg_gossip_stats(s->g[i])->rx_packets, dg_gossip_stats(s->g[i])->rx_bad);
		fail();
	}
	run_for(s, 30000);
	for (int i = 0; i < 10; i++) {
		if (i == x)
			continue;
		assert_int_equal(status_of(s, i, x), DG_GOSSIP_LEFT);
		assert_int_equal(s->left[i][x], 1);
		assert_int_equal(s->failed[i][x], 0);
	}
	sim_free(s);
}

static void reap_one_minute(struct dg_gossip_config *c, int i)
{
	c->reap_ms = 60000;
}

static void reaping(void **state)
{
	struct sim *s = converged_cluster(6, reap_one_minute);
	const int x = 2;
	s->up[x] = false;
	struct all_see a = {x, DG_GOSSIP_FAILED};
	assert_true(run_until(s, pred_all_see, &a, 30000) != UINT64_MAX);
	run_for(s, 50000);
	for (int i = 0; i < 6; i++)
		if (i != x) {
			assert_int_equal(dg_gossip_count(s->g[i]), 6); /* not yet */
			assert_int_equal(s->reaped[i][x], 0);
		}
	a.status = DG_GOSSIP_NONE;
	assert_true(run_until(s, pred_all_see, &a, 20000) != UINT64_MAX);
	run_for(s, 60000); /* and it does not come back from old news */
	for (int i = 0; i < 6; i++)
		if (i != x) {
			assert_int_equal(dg_gossip_count(s->g[i]), 5);
			assert_null(dg_gossip_find(s->g[i], "n2"));
			assert_int_equal(s->reaped[i][x], 1);
		}
	assert_true(converged(s));
	sim_free(s);
}

static bool pred_split(struct sim *s, void *arg)
{
	for (int i = 0; i < s->n; i++)
		for (int j = 0; j < s->n; j++)
			if ((i < 5) != (j < 5) && status_of(s, i, j) != DG_GOSSIP_FAILED)
				return false;
	return true;
}

static void partition_heals(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			s->drop[i][j] = (i < 5) != (j < 5);
	/* each half declares the other failed */
	assert_true(run_until(s, pred_split, NULL, 60000) != UINT64_MAX);
	assert_true(converged(s) == false);
	memset(s->drop, 0, sizeof(s->drop));
	/* the push-pull to a failed member (every 30 s) bridges the halves */
	uint64_t t = run_until(s, pred_converged, NULL, 120000);
	print_message("partition healed %llu ms after the network did\n", (unsigned long long)t);
	assert_true(t != UINT64_MAX);
	run_for(s, 30000);
	assert_true(converged(s));
	sim_free(s);
}

static void piggyback_bounded(void **state)
{
	struct sim *s = converged_cluster(10, NULL);
	unsigned limit = dg_gossip_retransmit_limit(s->g[0]);
	assert_int_equal(limit, 8); /* 4 * ceil(log10(11)) */
	run_for(s, 30000);
	for (int i = 0; i < 10; i++) {
		const struct dg_gossip_stats *st = dg_gossip_stats(s->g[i]);
		/* one queued update per member at most, and all sent out by now */
		assert_true(st->broadcasts_max <= 10);
		assert_int_equal(st->broadcasts_queued, 0);
	}
	/* churn: every member refutes at once; queues stay within one entry per member */
	for (int i = 0; i < 10; i++) {
		char name[16];
		snprintf(name, sizeof(name), "n%d", i);
		struct dg_gossip_msg sus = {.type = DG_GOSSIP_SUSPECT, .from = "n0"};
		sus.node.name = name;
		sus.node.incarnation = dg_gossip_self(s->g[i])->incarnation;
		struct dg_buf b;
		dg_buf_init(&b);
		assert_int_equal(dg_gossip_packet_encode(&b, &sus, 1, DG_GOSSIP_UDP_MAX), 0);
		for (int j = 0; j < 10; j++)
			assert_int_equal(dg_gossip_recv(s->g[j], s->addr[0], 8301, b.data, b.len,
							false, s->now),
					 0);
		dg_buf_fini(&b);
	}
	run_for(s, 30000);
	for (int i = 0; i < 10; i++) {
		const struct dg_gossip_stats *st = dg_gossip_stats(s->g[i]);
		assert_true(st->broadcasts_max <= 10);
		assert_int_equal(st->broadcasts_queued, 0);
	}
	assert_true(converged(s));
	for (int i = 0; i < 10; i++)
		for (int j = 0; j < 10; j++)
			assert_int_equal(s->failed[i][j], 0);
	assert_true(s->max_udp <= DG_GOSSIP_UDP_MAX);
	sim_free(s);
}

static void with_key(struct dg_gossip_config *c, int i)
{
	c->key = test_key;
}

static void encrypted_cluster(void **state)
{
	struct sim *s = converged_cluster(5, with_key);
	const struct dg_gossip_stats *st = dg_gossip_stats(s->g[0]);
	assert_true(st->rx_packets > 0);
	assert_int_equal(st->rx_auth_failed, 0);

	/* plaintext and garbage are refused and counted, and change nothing */
	struct dg_gossip_msg dead = {.type = DG_GOSSIP_DEAD, .from = "evil"};
	dead.node.name = "n1";
	dead.node.incarnation = 1000;
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_packet_encode(&b, &dead, 1, DG_GOSSIP_UDP_MAX), 0);
	assert_int_equal(dg_gossip_recv(s->g[0], "10.9.9.9", 8301, b.data, b.len, false, s->now),
			 DG_EPERM);
	/* sealed with another key */
	uint8_t other[DG_GOSSIP_KEY_LEN];
	memset(other, 7, sizeof(other));
	struct dg_buf sealed;
	dg_buf_init(&sealed);
	assert_int_equal(dg_gossip_seal(other, b.data, b.len, &sealed), 0);
	assert_int_equal(
	    dg_gossip_recv(s->g[0], "10.9.9.9", 8301, sealed.data, sealed.len, false, s->now),
	    DG_EPERM);
	assert_int_equal(dg_gossip_recv(s->g[0], "10.9.9.9", 8301, "x", 1, false, s->now),
			 DG_EPERM);
	assert_int_equal(st->rx_auth_failed, 3);
	assert_int_equal(status_of(s, 0, 1), DG_GOSSIP_ALIVE_ST);
	/* sealed with ours but not a valid packet: bad, not unauthenticated */
	dg_buf_fini(&sealed);
	dg_buf_init(&sealed);
	assert_int_equal(dg_gossip_seal(test_key, "junk", 4, &sealed), 0);
	assert_int_equal(
	    dg_gossip_recv(s->g[0], "10.9.9.9", 8301, sealed.data, sealed.len, false, s->now),
	    DG_EINVAL);
	assert_int_equal(st->rx_bad, 1);
	dg_buf_fini(&sealed);
	dg_buf_fini(&b);
	sim_free(s);
}

static void key_only_on_first(struct dg_gossip_config *c, int i)
{
	if (i == 0)
		c->key = test_key;
}

static void wrong_key_cannot_join(void **state)
{
	struct sim *s = sim_new(3, key_only_on_first);
	join_all(s);
	run_for(s, 10000);
	assert_int_equal(dg_gossip_count(s->g[0]), 1);
	assert_true(dg_gossip_stats(s->g[0])->rx_auth_failed >= 2);
	/* the plaintext nodes found each other only if they knew of each other: they did not */
	assert_int_equal(dg_gossip_count(s->g[1]), 1);
	sim_free(s);
}

static void garbage_changes_nothing(void **state)
{
	struct sim *s = converged_cluster(4, NULL);
	uint8_t junk[64];
	for (int k = 0; k < 1000; k++) {
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)(k * 31 + i * 7);
		junk[0] = k % 2 ? DG_GOSSIP_MAGIC : junk[0];
		dg_gossip_recv(s->g[0], s->addr[1], 8301, junk, (size_t)(k % 64), k % 3 == 0,
			       s->now);
	}
	assert_true(dg_gossip_stats(s->g[0])->rx_bad > 900);
	run_for(s, 10000);
	assert_true(converged(s));
	sim_free(s);
}

/* ---- the suspicion timer, on one instance fed by hand ---- */

static void discard_send(void *arg, const struct dg_gossip_out *o)
{
	(void)arg;
	(void)o;
}

static void inject(dg_gossip *g, const struct dg_gossip_msg *m, uint64_t now)
{
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_gossip_packet_encode(&b, m, 1, DG_GOSSIP_UDP_MAX), 0);
	assert_int_equal(dg_gossip_recv(g, "10.0.0.99", 8301, b.data, b.len, false, now), 0);
	dg_buf_fini(&b);
}

static void inject_alive(dg_gossip *g, const char *name, uint32_t inc, uint64_t now)
{
	struct dg_gossip_msg m = {.type = DG_GOSSIP_ALIVE};
	m.node = node(name, DG_GOSSIP_ALIVE_ST, inc);
	inject(g, &m, now);
}

static void inject_suspect(dg_gossip *g, const char *name, uint32_t inc, const char *from,
			   uint64_t now)
{
	struct dg_gossip_msg m = {.type = DG_GOSSIP_SUSPECT, .from = from};
	m.node.name = name;
	m.node.incarnation = inc;
	inject(g, &m, now);
}

/* Ticks every 5 ms from *now until name is failed or until; returns when it was failed, or
 * UINT64_MAX. */
static uint64_t tick_until_failed(dg_gossip *g, const char *name, uint64_t *now, uint64_t until)
{
	for (; *now <= until; *now += 5) {
		dg_gossip_tick(g, *now);
		if (dg_gossip_find(g, name)->status == DG_GOSSIP_FAILED)
			return *now;
	}
	return UINT64_MAX;
}

/* An instance that knows n1..n<members> alive and never probes within the test (a probe
 * interval of an hour: only injected SUSPECTs make a suspicion), with the unconfirmed timeout
 * capped at 8 s and a quarter of that after k = 3 confirmations: round numbers. */
static dg_gossip *lone_instance(int members, uint64_t now)
{
	struct dg_gossip_config cfg = {.name = "n0",
				       .addr = "10.0.0.1",
				       .probe_interval_ms = 3600 * 1000,
				       .suspicion_max_ms = 8000,
				       .suspicion_min_div = 4,
				       .seed = seed_base() + 1,
				       .send = discard_send};
	dg_gossip *g;
	char err[160];
	assert_int_equal(dg_gossip_new(&cfg, now, &g, err, sizeof(err)), 0);
	for (int i = 1; i <= members; i++) {
		char name[16];
		snprintf(name, sizeof(name), "n%d", i);
		inject_alive(g, name, 1, now);
	}
	assert_int_equal(dg_gossip_alive(g), (size_t)members + 1);
	assert_int_equal(dg_gossip_suspicion_ms(g), 8000);
	assert_int_equal(dg_gossip_suspicion_min_ms(g), 2000);
	return g;
}

static void suspicion_confirmations(void **state)
{
	uint64_t now = 1000000, t0, t;
	const uint64_t min = 2000, max = 8000;
	dg_gossip *g = lone_instance(9, now);

	/* one suspector, heard four times, and the suspect's own name: no confirmation, the
	 * suspicion lasts max */
	t0 = now;
	inject_suspect(g, "n5", 1, "n1", now);
	assert_true(dg_gossip_find(g, "n5")->suspect);
	for (int i = 0; i < 3; i++) {
		now += 100;
		inject_suspect(g, "n5", 1, "n1", now);
	}
	inject_suspect(g, "n5", 1, "n5", now);
	assert_int_equal(dg_gossip_stats(g)->confirmations, 0);
	t = tick_until_failed(g, "n5", &now, t0 + max + 100);
	assert_int_equal(t, t0 + max);

	/* one other member confirms: max - (max - min) * log 2 / log 4 = 5 s */
	t0 = now;
	inject_suspect(g, "n6", 1, "n1", now);
	now += 100;
	inject_suspect(g, "n6", 1, "n2", now);
	inject_suspect(g, "n6", 1, "n2", now); /* again: still one */
	assert_int_equal(dg_gossip_stats(g)->confirmations, 1);
	t = tick_until_failed(g, "n6", &now, t0 + max + 100);
	assert_int_equal(t, t0 + expected_timeout(min, max, 1, 3));
	assert_int_equal(t - t0, 5000);

	/* two (this node's own failed probe counts, as its SUSPECT from n0), then three (k):
	 * min; a fourth changes nothing */
	t0 = now;
	inject_suspect(g, "n7", 1, "n1", now);
	now += 100;
	inject_suspect(g, "n7", 1, "n2", now);
	inject_suspect(g, "n7", 1, "n0", now);
	assert_int_equal(tick_until_failed(g, "n7", &now, t0 + 1000), UINT64_MAX);
	assert_true(dg_gossip_find(g, "n7")->suspect);
	inject_suspect(g, "n7", 1, "n3", now);
	inject_suspect(g, "n7", 1, "n4", now);
	assert_int_equal(dg_gossip_stats(g)->confirmations, 1 + 3);
	t = tick_until_failed(g, "n7", &now, t0 + max);
	assert_int_equal(t, t0 + min);

	/* a confirmation that arrives when the shorter timeout has already run out fails the
	 * member at the next tick */
	t0 = now;
	inject_suspect(g, "n8", 1, "n1", now);
	now += expected_timeout(min, max, 2, 3) + 50; /* no tick meanwhile */
	inject_suspect(g, "n8", 1, "n2", now);
	inject_suspect(g, "n8", 1, "n3", now);
	t = tick_until_failed(g, "n8", &now, now);
	assert_int_equal(t, t0 + expected_timeout(min, max, 2, 3) + 50);

	/* a refutation cancels the suspicion and its confirmations: a SUSPECT at the new
	 * incarnation starts again from max, and old ones are ignored */
	t0 = now;
	inject_suspect(g, "n9", 1, "n1", now);
	inject_suspect(g, "n9", 1, "n2", now);
	inject_suspect(g, "n9", 1, "n3", now);
	now += 100;
	inject_alive(g, "n9", 2, now);
	assert_false(dg_gossip_find(g, "n9")->suspect);
	inject_suspect(g, "n9", 1, "n4", now); /* old news */
	assert_false(dg_gossip_find(g, "n9")->suspect);
	assert_int_equal(tick_until_failed(g, "n9", &now, t0 + max + 100), UINT64_MAX);
	t0 = now;
	inject_suspect(g, "n9", 2, "n1", now);
	assert_true(dg_gossip_find(g, "n9")->suspect);
	assert_int_equal(dg_gossip_find(g, "n9")->incarnation, 2);
	t = tick_until_failed(g, "n9", &now, t0 + max + 100);
	assert_int_equal(t, t0 + max);
	dg_gossip_free(g);

	/* with fewer alive members than k who could confirm (n1, n2 besides this node and the
	 * suspect n3), none are expected: distinct suspectors do not shorten it */
	now = 1000000;
	g = lone_instance(3, now);
	t0 = now;
	inject_suspect(g, "n3", 1, "n1", now);
	inject_suspect(g, "n3", 1, "n2", now);
	inject_suspect(g, "n3", 1, "n0", now);
	t = tick_until_failed(g, "n3", &now, t0 + max + 100);
	assert_int_equal(t, t0 + max);
	dg_gossip_free(g);
}

static void config_and_force_leave(void **state)
{
	char err[160];
	dg_gossip *g;
	struct dg_gossip_config c = {.name = "", .addr = "10.0.0.1", .send = sim_send};
	assert_int_equal(dg_gossip_new(&c, 0, &g, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "node name"));
	c.name = "a";
	c.send = NULL;
	assert_int_equal(dg_gossip_new(&c, 0, &g, err, sizeof(err)), DG_EINVAL);
	static char bigval[DG_GOSSIP_TAG_MAX + 1];
	memset(bigval, 'v', DG_GOSSIP_TAG_MAX);
	struct dg_gossip_tag fat[5] = {
	    {"a", bigval}, {"b", bigval}, {"c", bigval}, {"d", bigval}, {"e", "x"}};
	c.send = sim_send;
	c.tags = fat;
	c.ntags = 5;
	assert_int_equal(dg_gossip_new(&c, 0, &g, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "limits"));

	struct sim *s = converged_cluster(5, NULL);
	assert_int_equal(dg_gossip_force_leave(s->g[0], "n9", s->now), DG_ENOTFOUND);
	assert_int_equal(dg_gossip_force_leave(s->g[0], "n2", s->now), DG_EINVAL);
	s->up[2] = false;
	struct all_see a = {2, DG_GOSSIP_FAILED};
	assert_true(run_until(s, pred_all_see, &a, 30000) != UINT64_MAX);
	assert_int_equal(dg_gossip_force_leave(s->g[0], "n2", s->now), 0);
	a.status = DG_GOSSIP_LEFT;
	assert_true(run_until(s, pred_all_see, &a, 10000) != UINT64_MAX);
	assert_true(dg_gossip_next_ms(s->g[0]) > s->now);
	sim_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip_every_type),
	    cmocka_unit_test(every_truncation_refused),
	    cmocka_unit_test(limits_refused),
	    cmocka_unit_test(keys_and_sealing),
	    cmocka_unit_test(join_converges),
	    cmocka_unit_test(failure_detected),
	    cmocka_unit_test(failure_detected_50),
	    cmocka_unit_test(restart_rejoins),
	    cmocka_unit_test(tags_change),
	    cmocka_unit_test(false_suspicion_refuted),
	    cmocka_unit_test(indirect_probes_keep_alive),
	    cmocka_unit_test(graceful_leave),
	    cmocka_unit_test(reaping),
	    cmocka_unit_test(partition_heals),
	    cmocka_unit_test(piggyback_bounded),
	    cmocka_unit_test(encrypted_cluster),
	    cmocka_unit_test(wrong_key_cannot_join),
	    cmocka_unit_test(garbage_changes_nothing),
	    cmocka_unit_test(config_and_force_leave),
	    cmocka_unit_test(suspicion_confirmations),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
