/* Unit tests for wan/msg.c, the codec of port 8302: the byte layout, round trips of every type
 * (bodies with NULs, empty bodies), each reason the decoder refuses a message, the encoder's
 * limits, its header writer against jansson (random headers, a fixed one byte for byte, what it
 * refuses), and PUSHPULL members: good bodies, every malformed field, and round trips.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "wan/msg.h"

/* ---- helpers ---- */

static json_t *parse(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
	if (!v)
		fail_msg("bad test JSON %s: %s", text, jerr.text);
	return v;
}

/* A raw message: prefix with the given magic, type and header length, then hdr and body bytes. */
static void raw_msg(struct dg_buf *b, uint8_t magic, uint8_t type, uint32_t hlen, const char *hdr,
		    size_t hdr_bytes, const void *body, size_t body_len)
{
	uint8_t p[6] = {
	    magic,	  type, (uint8_t)(hlen >> 24), (uint8_t)(hlen >> 16), (uint8_t)(hlen >> 8),
	    (uint8_t)hlen};
	dg_buf_init(b);
	assert_int_equal(dg_buf_append(b, p, sizeof(p)), 0);
	if (hdr_bytes)
		assert_int_equal(dg_buf_append(b, hdr, hdr_bytes), 0);
	if (body_len)
		assert_int_equal(dg_buf_append(b, body, body_len), 0);
}

/* A well-framed message whose header is the text hdr. */
static void framed(struct dg_buf *b, uint8_t type, const char *hdr)
{
	raw_msg(b, DG_WAN_MAGIC, type, (uint32_t)strlen(hdr), hdr, strlen(hdr), NULL, 0);
}

/* Decodes b, expecting the error rv and a reason containing want. */
static void expect_reject(const struct dg_buf *b, int rv, const char *want)
{
	struct dg_wan_msg m;
	char err[256] = "";
	assert_int_equal(dg_wan_msg_decode(b->data, b->len, &m, err, sizeof(err)), rv);
	assert_null(m.hdr);
	if (!strstr(err, want))
		fail_msg("reason \"%s\" does not mention \"%s\"", err, want);
	dg_wan_msg_fini(&m); /* safe after a failure */
}

/* "{"a":{"a":...{}...}}" nesting depth levels (depth 1 is "{}"). */
static char *nested(int depth)
{
	struct dg_buf b;
	dg_buf_init(&b);
	for (int i = 1; i < depth; i++)
		assert_int_equal(dg_buf_append(&b, "{\"a\":", 5), 0);
	assert_int_equal(dg_buf_append(&b, "{}", 2), 0);
	for (int i = 1; i < depth; i++)
		assert_int_equal(dg_buf_append(&b, "}", 1), 0);
	return dg_buf_steal(&b, NULL);
}

/* ---- messages ---- */

static void wire_layout(void **state)
{
	struct dg_buf b;
	dg_buf_init(&b);
	json_t *hdr = parse("{\"From\":\"s1.east\",\"Inc\":7}");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_PING, hdr, "xy", 2), 0);
	const char *text = "{\"From\":\"s1.east\",\"Inc\":7}";
	size_t hl = strlen(text);
	assert_int_equal(b.len, 6 + hl + 2);
	const uint8_t *p = (const uint8_t *)b.data;
	assert_int_equal(p[0], 0xD6);
	assert_int_equal(p[1], DG_WAN_PING);
	assert_int_equal(p[2], 0);
	assert_int_equal(p[3], 0);
	assert_int_equal(p[4], 0);
	assert_int_equal(p[5], hl);
	assert_memory_equal(p + 6, text, hl);
	assert_memory_equal(p + 6 + hl, "xy", 2);

	/* appends: what was in the buffer stays */
	size_t first = b.len;
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ACK, NULL, NULL, 0), 0);
	assert_int_equal(b.len, first + 6 + 2);
	assert_memory_equal(b.data + first, "\xD6\x05\x00\x00\x00\x02{}", 8);
	json_decref(hdr);
	dg_buf_fini(&b);
}

static void round_trip(enum dg_wan_type type, const char *hdr_text, const void *body,
		       size_t body_len)
{
	json_t *hdr = hdr_text ? parse(hdr_text) : NULL;
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_wan_msg_encode(&b, type, hdr, body, body_len), 0);

	struct dg_wan_msg m;
	char err[256] = "";
	if (dg_wan_msg_decode(b.data, b.len, &m, err, sizeof(err)) != 0)
		fail_msg("%s: %s", dg_wan_type_name(type), err);
	assert_int_equal(m.type, type);
	assert_true(json_is_object(m.hdr));
	if (hdr)
		assert_true(json_equal(m.hdr, hdr));
	else
		assert_int_equal(json_object_size(m.hdr), 0);
	assert_int_equal(m.body_len, body_len);
	if (body_len)
		assert_memory_equal(m.body, body, body_len);
	/* body points into the decoded buffer, right after the header */
	assert_ptr_equal(m.body, (const uint8_t *)b.data + b.len - body_len);
	dg_wan_msg_fini(&m);
	assert_null(m.hdr);
	json_decref(hdr);
	dg_buf_fini(&b);
}

static void round_trip_every_type(void **state)
{
	static const uint8_t nuls[] = {0, 'a', 0, 0, 0xff, 0, '{', 0};
	const char *members = "[{\"Name\":\"s1.east\",\"Node\":\"s1\",\"Datacenter\":\"east\","
			      "\"Addr\":\"127.0.0.2\",\"Port\":8302,\"Status\":1,\"Inc\":3,"
			      "\"Build\":\"0.3.0\"}]";
	round_trip(DG_WAN_PING, "{\"From\":\"s1.east\",\"Inc\":1}", NULL, 0);
	round_trip(DG_WAN_PONG, "{\"From\":\"s2.west\",\"Inc\":1}", NULL, 0);
	round_trip(DG_WAN_PUSHPULL, "{\"From\":\"s1.east\"}", members, strlen(members));
	round_trip(DG_WAN_LEAVE, "{\"Name\":\"s1.east\",\"Inc\":9}", NULL, 0);
	round_trip(DG_WAN_ACK, "{}", NULL, 0);
	round_trip(DG_WAN_ACK, "{\"Ok\":true}", NULL, 0);
	round_trip(DG_WAN_INDIRECT,
		   "{\"Target\":\"s3.east\",\"Addr\":\"[::1]:8302\",\"TimeoutMs\":500}", NULL, 0);
	round_trip(DG_WAN_HTTP,
		   "{\"Method\":\"PUT\",\"Path\":\"/v1/kv/a?dc=west\","
		   "\"Headers\":{\"X-Consul-Token\":\"t\"}}",
		   nuls, sizeof(nuls));
	round_trip(DG_WAN_HTTP_REPLY, "{\"Status\":200,\"Headers\":{\"X-Consul-Index\":\"12\"}}",
		   nuls, sizeof(nuls));
	round_trip(DG_WAN_ERROR, "{\"Error\":\"No path to datacenter \\\"x\\\" \\u00e9\"}", NULL,
		   0);
	/* NULL header, empty body (NULL pointer allowed when the length is 0) */
	for (int t = DG_WAN_PING; t <= DG_WAN_BATCH_REPLY; t++)
		round_trip((enum dg_wan_type)t, NULL, NULL, 0);
	/* a body that is only NULs; a header at depth 8 exactly; reals and big integers */
	uint8_t zeros[300] = {0};
	round_trip(DG_WAN_HTTP_REPLY, "{\"Status\":204}", zeros, sizeof(zeros));
	char *deep = nested(8);
	round_trip(DG_WAN_HTTP, deep, "x", 1);
	free(deep);
	round_trip(DG_WAN_ACK,
		   "{\"a\":0.1,\"b\":-1e300,\"c\":9223372036854775807,\"d\":null,"
		   "\"e\":[1,[2,[3]]]}",
		   NULL, 0);
}

static void type_names(void **state)
{
	assert_string_equal(dg_wan_type_name(DG_WAN_PING), "PING");
	assert_string_equal(dg_wan_type_name(DG_WAN_PONG), "PONG");
	assert_string_equal(dg_wan_type_name(DG_WAN_PUSHPULL), "PUSHPULL");
	assert_string_equal(dg_wan_type_name(DG_WAN_LEAVE), "LEAVE");
	assert_string_equal(dg_wan_type_name(DG_WAN_ACK), "ACK");
	assert_string_equal(dg_wan_type_name(DG_WAN_INDIRECT), "INDIRECT");
	assert_string_equal(dg_wan_type_name(DG_WAN_HTTP), "HTTP");
	assert_string_equal(dg_wan_type_name(DG_WAN_HTTP_REPLY), "HTTP_REPLY");
	assert_string_equal(dg_wan_type_name(DG_WAN_ERROR), "ERROR");
	assert_string_equal(dg_wan_type_name(DG_WAN_BATCH), "BATCH");
	assert_string_equal(dg_wan_type_name(DG_WAN_BATCH_REPLY), "BATCH_REPLY");
	assert_string_equal(dg_wan_type_name(0), "unknown");
	assert_string_equal(dg_wan_type_name(12), "unknown");
	assert_string_equal(dg_wan_type_name(-1), "unknown");
}

static void reject_bad_magic(void **state)
{
	struct dg_buf b;
	raw_msg(&b, 0xD7, DG_WAN_PING, 2, "{}", 2, NULL, 0);
	expect_reject(&b, DG_EINVAL, "bad magic 0xd7");
	dg_buf_fini(&b);
	raw_msg(&b, 0x00, DG_WAN_PING, 2, "{}", 2, NULL, 0);
	expect_reject(&b, DG_EINVAL, "bad magic");
	dg_buf_fini(&b);
}

static void reject_unknown_type(void **state)
{
	static const uint8_t types[] = {0, 12, 13, 0x80, 0xff};
	for (size_t i = 0; i < sizeof(types); i++) {
		struct dg_buf b;
		char want[32];
		raw_msg(&b, DG_WAN_MAGIC, types[i], 2, "{}", 2, NULL, 0);
		snprintf(want, sizeof(want), "unknown type %u", types[i]);
		expect_reject(&b, DG_EINVAL, want);
		dg_buf_fini(&b);
	}
}

static void reject_truncated_prefix(void **state)
{
	struct dg_buf b;
	framed(&b, DG_WAN_PING, "{}");
	for (size_t len = 0; len < 6; len++) {
		struct dg_buf t = {.data = b.data, .len = len};
		expect_reject(&t, DG_EINVAL, "truncated");
	}
	/* NULL buffer of length 0 too */
	struct dg_wan_msg m;
	char err[128] = "";
	assert_int_equal(dg_wan_msg_decode(NULL, 0, &m, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "truncated"));
	dg_buf_fini(&b);
}

static void reject_header_beyond_buffer(void **state)
{
	struct dg_buf b;
	/* claims 3 bytes, has 2 */
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_PING, 3, "{}", 2, NULL, 0);
	expect_reject(&b, DG_EINVAL, "header of 3 bytes but only 2 follow");
	dg_buf_fini(&b);
	/* claims exactly the limit, has nothing */
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_PING, DG_WAN_MAX_HEADER, NULL, 0, NULL, 0);
	expect_reject(&b, DG_EINVAL, "truncated");
	dg_buf_fini(&b);
	/* a whole message cut anywhere inside its header */
	framed(&b, DG_WAN_PING, "{\"From\":\"s1.east\"}");
	for (size_t len = 6; len < b.len; len++) {
		struct dg_buf t = {.data = b.data, .len = len};
		expect_reject(&t, DG_EINVAL, "truncated");
	}
	dg_buf_fini(&b);
}

static void reject_header_over_limit(void **state)
{
	static const uint32_t lens[] = {DG_WAN_MAX_HEADER + 1, 0x7fffffff, 0xffffffff};
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		struct dg_buf b;
		raw_msg(&b, DG_WAN_MAGIC, DG_WAN_HTTP, lens[i], "{}", 2, NULL, 0);
		expect_reject(&b, DG_ETOOBIG, "over the limit");
		dg_buf_fini(&b);
	}
	/* even when the bytes are all there */
	size_t n = DG_WAN_MAX_HEADER + 1;
	char *big = malloc(n);
	assert_non_null(big);
	memset(big, ' ', n);
	big[0] = '{';
	big[n - 1] = '}';
	struct dg_buf b;
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_HTTP, (uint32_t)n, big, n, NULL, 0);
	expect_reject(&b, DG_ETOOBIG, "over the limit");
	dg_buf_fini(&b);
	/* and exactly at the limit it is fine */
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_HTTP, (uint32_t)(n - 1), big + 1, n - 1, NULL, 0);
	b.data[6] = '{';
	struct dg_wan_msg m;
	char err[256] = "";
	assert_int_equal(dg_wan_msg_decode(b.data, b.len, &m, err, sizeof(err)), 0);
	assert_int_equal(m.body_len, 0);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&b);
	free(big);
}

static void reject_message_over_limit(void **state)
{
	size_t n = DG_WAN_MAX_MSG + 1;
	char *big = calloc(1, n);
	assert_non_null(big);
	memcpy(big, "\xD6\x07\x00\x00\x00\x02{}", 8);
	struct dg_buf t = {.data = big, .len = n};
	expect_reject(&t, DG_ETOOBIG, "over the limit");
	t.len = n - 1; /* at the limit: accepted, the body is the rest */
	struct dg_wan_msg m;
	assert_int_equal(dg_wan_msg_decode(t.data, t.len, &m, NULL, 0), 0);
	assert_int_equal(m.body_len, DG_WAN_MAX_MSG - 8);
	dg_wan_msg_fini(&m);
	free(big);
}

static void reject_header_not_object(void **state)
{
	static const struct {
		const char *hdr;
		const char *why;
	} cases[] = {
	    {"", "header is empty"},
	    {"[]", "not a JSON object"},
	    {"[{}]", "not a JSON object"},
	    {"\"PING\"", "not a JSON object"},
	    {"1", "not a JSON object"},
	    {"null", "not a JSON object"},
	    {"true", "not a JSON object"},
	    {"{", "not valid JSON"},
	    {"{\"a\":}", "not valid JSON"},
	    {"{} {}", "not valid JSON"}, /* trailing data inside the header */
	    {"{}x", "not valid JSON"},
	    {"{\"a\":1,\"a\":2}", "not valid JSON"}, /* duplicate keys */
	    {"{\"a\":\"x\\u0000y\"}", "not valid JSON"},
	    {"{\"a\\u0000\":1}", "not valid JSON"},
	    {"{\"a\":\"\xff\"}", "not valid JSON"}, /* not UTF-8 */
	    {"{\"a\":99999999999999999999}", "not valid JSON"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dg_buf b;
		framed(&b, DG_WAN_PING, cases[i].hdr);
		expect_reject(&b, DG_EINVAL, cases[i].why);
		dg_buf_fini(&b);
	}
	/* a NUL byte inside the header's bytes */
	struct dg_buf b;
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_PING, 3, "{\0}", 3, NULL, 0);
	expect_reject(&b, DG_EINVAL, "not valid JSON");
	dg_buf_fini(&b);
	/* the header's end is given by its length, not by the JSON: "{}" then body "}" is fine, but
	 * a length one short of the object is not */
	raw_msg(&b, DG_WAN_MAGIC, DG_WAN_PING, 1, "{}", 2, NULL, 0);
	expect_reject(&b, DG_EINVAL, "not valid JSON");
	dg_buf_fini(&b);
}

static void reject_too_deep(void **state)
{
	char *deep = nested(9);
	struct dg_buf b;
	framed(&b, DG_WAN_HTTP, deep);
	expect_reject(&b, DG_EINVAL, "too deep");
	dg_buf_fini(&b);
	free(deep);

	/* arrays count as levels too; brackets inside strings do not */
	framed(&b, DG_WAN_HTTP, "{\"a\":[[[[[[[[]]]]]]]]}");
	expect_reject(&b, DG_EINVAL, "too deep");
	dg_buf_fini(&b);
	framed(&b, DG_WAN_HTTP, "{\"a\":[[[[[[[]]]]]]],\"s\":\"[[[[[[[[[[{{{{{\\\"[[[[[\"}");
	struct dg_wan_msg m;
	char err[256] = "";
	if (dg_wan_msg_decode(b.data, b.len, &m, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&b);

	/* a header of 60000 '[' is refused without parsing */
	size_t n = 60000;
	char *many = malloc(n + 1);
	assert_non_null(many);
	memset(many, '[', n);
	many[n] = 0;
	framed(&b, DG_WAN_HTTP, many);
	expect_reject(&b, DG_EINVAL, "too deep");
	dg_buf_fini(&b);
	free(many);
}

static void encode_limits(void **state)
{
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "keep", 4), 0);

	/* message over DG_WAN_MAX_MSG: out unchanged */
	size_t n = DG_WAN_MAX_MSG;
	char *body = calloc(1, n);
	assert_non_null(body);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, NULL, body, n), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, NULL, body, n - 8 + 1), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "keep");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, NULL, body, n - 8), 0); /* "{}" */
	assert_int_equal(b.len, 4 + DG_WAN_MAX_MSG);
	b.len = 4;

	/* a header that pushes the message over */
	json_t *hdr = parse("{\"Error\":\"0123456789\"}"); /* 22 bytes */
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, body, n - 6 - 22 + 1),
			 DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, body, n - 6 - 22), 0);
	assert_int_equal(b.len, 4 + DG_WAN_MAX_MSG);
	b.len = 4;
	json_decref(hdr);

	/* header over DG_WAN_MAX_HEADER; exactly at it is fine */
	char *s = malloc(DG_WAN_MAX_HEADER);
	assert_non_null(s);
	memset(s, 'x', DG_WAN_MAX_HEADER);
	size_t slen = DG_WAN_MAX_HEADER - 8; /* {"E":"..."} is 8 bytes around the string */
	hdr = json_pack("{s:s%}", "E", s, slen + 1);
	assert_non_null(hdr);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	hdr = json_pack("{s:s%}", "E", s, slen);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), 0);
	assert_int_equal(b.len, 4 + 6 + DG_WAN_MAX_HEADER);
	struct dg_wan_msg m;
	assert_int_equal(dg_wan_msg_decode(b.data + 4, b.len - 4, &m, NULL, 0), 0);
	assert_true(json_equal(m.hdr, hdr));
	dg_wan_msg_fini(&m);
	b.len = 4;
	json_decref(hdr);
	free(s);
	free(body);
	dg_buf_fini(&b);
}

static void encode_refuses_what_decode_would(void **state)
{
	struct dg_buf b;
	dg_buf_init(&b);
	json_t *obj = parse("{}");
	assert_int_equal(dg_wan_msg_encode(&b, (enum dg_wan_type)0, NULL, NULL, 0), DG_EINVAL);
	assert_int_equal(dg_wan_msg_encode(&b, (enum dg_wan_type)12, obj, NULL, 0), DG_EINVAL);
	json_t *arr = parse("[]");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_PING, arr, NULL, 0), DG_EINVAL);
	json_decref(arr);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_PING, obj, NULL, 1), DG_EINVAL);
	json_decref(obj);

	char *deep = nested(9);
	json_t *hdr = parse(deep);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);
	free(deep);
	hdr = json_pack("{s:[[[[[[[]]]]]]]}", "a"); /* 8 levels: fine */
	assert_non_null(hdr);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), 0);
	json_decref(hdr);
	size_t ok_len = b.len;

	hdr = json_pack("{s:s#}", "a", "x\0y", 3); /* NUL in a string */
	assert_non_null(hdr);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);
	hdr = json_object();
	assert_int_equal(json_object_setn_new(hdr, "k\0y", 3, json_true()), 0); /* NUL in a key */
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);
	assert_int_equal(b.len, ok_len);
	dg_buf_fini(&b);
}

/* ---- the header writer against jansson ---- */

/* jansson's compact dump with its string escapes spelled the way dcgate's writer spells them:
 * \b and \f as \u0008 and \u000c, \u00XX in lower case. The two texts differ in nothing else. */
static char *jansson_text(const json_t *v)
{
	char *t = json_dumps(v, JSON_COMPACT);
	assert_non_null(t);
	struct dg_buf b;
	dg_buf_init(&b);
	for (size_t i = 0; t[i]; i++) {
		if (t[i] != '\\') {
			assert_int_equal(dg_buf_append(&b, &t[i], 1), 0);
			continue;
		}
		char c = t[++i];
		if (c == 'b' || c == 'f') {
			assert_int_equal(dg_buf_append(&b, c == 'b' ? "\\u0008" : "\\u000c", 6), 0);
		} else if (c == 'u') {
			char u[6] = {'\\', 'u'};
			for (int k = 0; k < 4; k++) {
				char h = t[i + 1 + k];
				u[2 + k] = h >= 'A' && h <= 'F' ? (char)(h - 'A' + 'a') : h;
			}
			assert_int_equal(dg_buf_append(&b, u, 6), 0);
			i += 4;
		} else {
			char e[2] = {'\\', c};
			assert_int_equal(dg_buf_append(&b, e, 2), 0);
		}
	}
	free(t);
	return dg_buf_steal(&b, NULL);
}

/* splitmix64: a fixed seed gives the same values on every run and machine */
static uint64_t rnd_state;
static uint64_t rnd(void)
{
	uint64_t z = (rnd_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static size_t rnd_below(size_t n)
{
	return (size_t)(rnd() % n);
}

/* A random UTF-8 string: plain ASCII, the bytes JSON escapes (every control byte 0x01-0x1f,
 * '"', '\\'), '/', DEL, and characters of 2, 3 and 4 bytes at the edges of their ranges. */
static json_t *rnd_string(void)
{
	static const char *const ascii[] = {
	    "a", "Z", "0", " ", "/", "\x7f", "\"", "\\", "X-Consul-Index", "?dc=east&x=1"};
	/* U+0080, U+00E9, U+07FF, U+0800, U+20AC, U+D7FF, U+E000, U+FFFF, U+10000, U+1F600,
	 * U+10FFFF */
	static const char *const utf8[] = {
	    "\xc2\x80",		"\xc3\xa9",	    "\xdf\xbf",	       "\xe0\xa0\x80",
	    "\xe2\x82\xac",	"\xed\x9f\xbf",	    "\xee\x80\x80",    "\xef\xbf\xbf",
	    "\xf0\x90\x80\x80", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
	char s[200];
	size_t len = 0, n = rnd_below(4) == 0 ? 0 : rnd_below(12);
	for (size_t i = 0; i < n; i++) {
		if (rnd_below(4) == 0) {
			s[len++] = (char)(1 + rnd_below(0x1f)); /* 0x01..0x1f */
			continue;
		}
		const char *p = rnd_below(2) ? ascii[rnd_below(sizeof(ascii) / sizeof(ascii[0]))]
					     : utf8[rnd_below(sizeof(utf8) / sizeof(utf8[0]))];
		size_t pl = strlen(p);
		memcpy(s + len, p, pl);
		len += pl;
	}
	json_t *v = json_stringn(s, len);
	assert_non_null(v);
	return v;
}

static json_t *rnd_scalar(void)
{
	static const json_int_t ints[] = {
	    0, 1, -1, 200, 1234, INT64_MAX, INT64_MIN, INT64_MIN + 1, -9, 1000000000000LL};
	static const double reals[] = {0.1, -1e300, 3.0, 1.5e-7, 123456.789, -0.0, 5e-324};
	switch (rnd_below(9)) {
	case 0:
	case 1:
		return json_integer(ints[rnd_below(sizeof(ints) / sizeof(ints[0]))]);
	case 2:
		return json_integer((json_int_t)rnd());
	case 3:
		return json_true();
	case 4:
		return json_false();
	case 5:
		return json_null();
	case 6: /* reals: a few in every hundred values */
		if (rnd_below(4) == 0)
			return json_real(reals[rnd_below(sizeof(reals) / sizeof(reals[0]))]);
		return json_integer(-(json_int_t)rnd_below(100000));
	default:
		return rnd_string();
	}
}

/* A random value nesting at most depth levels; *budget bounds the number of values, so a value
 * stays far below DG_WAN_MAX_HEADER. With spine set, the first child is a container down to the
 * last level, so that depth 8 is reached often. */
static json_t *rnd_value(int depth, int *budget, bool spine, bool object)
{
	--*budget;
	json_t *v = object ? json_object() : json_array();
	assert_non_null(v);
	size_t n = *budget > 0 ? rnd_below(5) : 0;
	if (spine && depth > 1 && n == 0)
		n = 1;
	for (size_t i = 0; i < n; i++) {
		json_t *e;
		bool down = spine && i == 0 && depth > 1;
		if (down || (depth > 1 && *budget > 0 && rnd_below(3) == 0))
			e = rnd_value(depth - 1, budget, down, rnd_below(2) == 0);
		else {
			--*budget;
			e = rnd_scalar();
		}
		assert_non_null(e);
		if (object) {
			json_t *k = rnd_string();
			assert_int_equal(
			    json_object_setn_new(v, json_string_value(k), json_string_length(k), e),
			    0);
			json_decref(k);
		} else {
			assert_int_equal(json_array_append_new(v, e), 0);
		}
	}
	return v;
}

/* How deep v nests (v at level d) into *max, and how many reals it holds into *reals: what the
 * generator covers. */
static void shape(json_t *v, int d, int *max, size_t *reals)
{
	const char *k;
	size_t i;
	json_t *e;
	if (json_is_real(v))
		++*reals;
	if (!json_is_object(v) && !json_is_array(v))
		return;
	*max = d > *max ? d : *max;
	if (json_is_array(v)) {
		json_array_foreach(v, i, e)
		{
			shape(e, d + 1, max, reals);
		}
	} else {
		json_object_foreach(v, k, e)
		{
			shape(e, d + 1, max, reals);
		}
	}
}

/* Thousands of random headers: each decodes back equal, and its text is jansson's. */
static void header_writer_property(void **state)
{
	rnd_state = 20240611;
	struct dg_buf b;
	dg_buf_init(&b);
	size_t deepest = 0, reals = 0;
	for (int round = 0; round < 4000; round++) {
		int budget = 2 + (int)rnd_below(60);
		json_t *hdr = rnd_value(8, &budget, round % 4 == 0, true);
		b.len = 0;
		if (dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, "body", 4) != 0)
			fail_msg("round %d: encode failed", round);
		struct dg_wan_msg m;
		char err[256] = "";
		if (dg_wan_msg_decode(b.data, b.len, &m, err, sizeof(err)) != 0)
			fail_msg("round %d: %s", round, err);
		assert_true(json_equal(m.hdr, hdr));
		assert_int_equal(m.body_len, 4);
		char *want = jansson_text(hdr);
		size_t hlen = b.len - 6 - 4;
		if (hlen != strlen(want) || memcmp(b.data + 6, want, hlen) != 0)
			fail_msg("round %d:\n got %.*s\nwant %s", round, (int)hlen, b.data + 6,
				 want);
		int max = 0;
		shape(hdr, 1, &max, &reals);
		deepest += max == 8;
		free(want);
		dg_wan_msg_fini(&m);
		json_decref(hdr);
	}
	assert_true(deepest >= 500);
	assert_true(reals >= 50);
	dg_buf_fini(&b);
}

/* A fixed header comes out as jansson's own json_dumps(JSON_COMPACT) text, byte for byte: the
 * wire form peers see has not changed (but for control bytes other than \n \r \t, escaped
 * differently to the same string: see jansson_text). */
static void header_text_is_janssons(void **state)
{
	json_t *hdr = json_pack(
	    "{s:i, s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:s, s:I, s:I, s:b, s:b, s:n, s:f, s:f, s:[], "
	    "s:{}, s:[i, [s, {s:[n]}], f], s:s}",
	    "Status", 200, "Headers", "Content-Type", "application/json", "X-Consul-Index", "1234",
	    "X-Consul-KnownLeader", "true", "X-Consul-LastContact", "0",
	    "X-Consul-Effective-Consistency", "leader", "Path", "/v1/kv/a\"b\\c?dc=east&x=/y",
	    "Text", "tab\there\nline\rret caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \x7f", "Min",
	    (json_int_t)INT64_MIN, "Max", (json_int_t)INT64_MAX, "T", 1, "F", 0, "N", "R", 0.1,
	    "R2", -2.5e-300, "EA", "EO", "Mix", -7, "", "k", "", 3.0, "Empty", "");
	assert_non_null(hdr);
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP_REPLY, hdr, NULL, 0), 0);
	char *want = json_dumps(hdr, JSON_COMPACT);
	assert_non_null(want);
	size_t hlen = strlen(want);
	assert_int_equal(b.len, 6 + hlen);
	assert_int_equal(((uint8_t)b.data[4] << 8) | (uint8_t)b.data[5], hlen);
	assert_memory_equal(b.data + 6, want, hlen);
	free(want);
	json_decref(hdr);
	dg_buf_fini(&b);
}

/* What the writer refuses, and that a refusal leaves out as it was. */
static void header_writer_refuses(void **state)
{
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "keep", 4), 0);

	/* depth: 8 levels of objects and arrays mixed, a scalar inside the 8th, is fine; 9 not */
	json_t *hdr = parse("{\"a\":[{\"b\":[{\"c\":[{\"d\":[1,\"s\",null]}]}]}]}");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), 0);
	json_decref(hdr);
	b.len = 4;
	hdr = parse("{\"a\":[{\"b\":[{\"c\":[{\"d\":[[]]}]}]}]}");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	hdr = parse("{\"a\":[[[[[[[{}]]]]]]]}");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);

	/* a cycle (jansson refuses only a container inside itself) is refused, not followed */
	hdr = json_object();
	json_t *arr = json_array();
	assert_int_equal(json_object_set(hdr, "a", arr), 0);
	assert_int_equal(json_array_append(arr, hdr), 0);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	assert_int_equal(json_array_clear(arr), 0);
	json_decref(arr);
	json_decref(hdr);

	/* NUL in a string, deep down, and in a key deep down; out unchanged */
	hdr = json_pack("{s:[{s:s%}]}", "a", "b", "x\0y", (size_t)3);
	assert_non_null(hdr);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);
	/* at each place in longer strings: the first, middle and last eight bytes */
	for (size_t at = 0; at < 20; at++) {
		char t[20];
		memset(t, 'a', sizeof(t));
		t[at] = 0;
		hdr = json_pack("{s:s%}", "a", t, sizeof(t));
		assert_non_null(hdr);
		if (dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0) != DG_EINVAL)
			fail_msg("NUL at %zu encoded", at);
		json_decref(hdr);
	}
	json_t *inner = json_object();
	assert_int_equal(json_object_setn_new(inner, "\0", 1, json_null()), 0);
	hdr = json_pack("{s:s, s:[o]}", "ok", "x", "a", inner);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	json_decref(hdr);
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "keep");

	/* text that is not UTF-8, which jansson's *_nocheck calls let through: the decoder would
	 * refuse it, so the encoder does */
	static const char *const bad_utf8[] = {
	    "\xff",
	    "\x80",
	    "a\xc3",
	    "\xc0\xaf",
	    "\xc1\xbf",
	    "\xe0\x9f\xbf",
	    "\xed\xa0\x80",
	    "\xf0\x8f\xbf\xbf",
	    "\xf4\x90\x80\x80",
	    "\xf5\x80\x80\x80",
	    "\xc3\x28",
	    "0123456\xe2\x82",
	    "\xed\xbf\xbf",
	    "abcdefgh\xc3\xa9\xe2",
	    "\37712345678",
	    "0123456789abcde\2000123456789", /* octal: \377, \200 */
	};
	for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
		hdr = json_object();
		assert_int_equal(json_object_set_new(hdr, "a", json_string_nocheck(bad_utf8[i])),
				 0);
		if (dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0) != DG_EINVAL)
			fail_msg("string %zu encoded", i);
		json_decref(hdr);
		hdr = json_object();
		assert_int_equal(json_object_set_new_nocheck(hdr, bad_utf8[i], json_true()), 0);
		if (dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0) != DG_EINVAL)
			fail_msg("key %zu encoded", i);
		json_decref(hdr);
	}
	assert_int_equal(b.len, 4);

	/* over DG_WAN_MAX_HEADER: one long string refused before it is copied, many short ones,
	 * and a string that fits raw but not escaped; out unchanged each time */
	size_t big = DG_WAN_MAX_HEADER;
	char *s = malloc(big + 1);
	assert_non_null(s);
	memset(s, 'x', big);
	s[big] = 0;
	hdr = json_pack("{s:s}", "E", s);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	hdr = json_object();
	arr = json_array();
	for (int i = 0; i < DG_WAN_MAX_HEADER / 4; i++)
		assert_int_equal(json_array_append_new(arr, json_string("ab")), 0);
	assert_int_equal(json_object_set_new(hdr, "A", arr), 0);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	/* too big and, after the limit, refused: DG_EINVAL, as when the check came first */
	assert_int_equal(json_array_append_new(arr, json_stringn_nocheck("\xff", 1)), 0);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, NULL, 0), DG_EINVAL);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	memset(s, '\x01', 20000); /* 20000 bytes raw, 120000 escaped */
	s[20000] = 0;
	hdr = json_pack("{s:s}", "E", s);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	/* escaped to exactly the limit: {"E":"..."} is 8 bytes around the string's text */
	size_t quotes = (DG_WAN_MAX_HEADER - 8) / 2;
	memset(s, '"', quotes);
	s[quotes] = 0;
	hdr = json_pack("{s:s}", "E", s);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), 0);
	assert_int_equal(b.len, 4 + 6 + DG_WAN_MAX_HEADER);
	b.len = 4;
	json_decref(hdr);
	s[quotes] = '"';
	s[quotes + 1] = 0;
	hdr = json_pack("{s:s}", "E", s);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_ERROR, hdr, NULL, 0), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	json_decref(hdr);
	free(s);

	/* a body over the limit is DG_ETOOBIG, unless the header is refused as well */
	char *body = calloc(1, DG_WAN_MAX_MSG);
	assert_non_null(body);
	hdr = json_pack("{s:s}", "a", "b");
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, body, DG_WAN_MAX_MSG), DG_ETOOBIG);
	json_decref(hdr);
	hdr = json_pack("{s:s%}", "a", "\0", (size_t)1);
	assert_int_equal(dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, body, DG_WAN_MAX_MSG), DG_EINVAL);
	json_decref(hdr);
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "keep");
	free(body);
	dg_buf_fini(&b);
}

/* ---- members ---- */

static const char *good_member =
    "{\"Name\":\"s1.east\",\"Node\":\"s1\",\"Datacenter\":\"east\",\"Addr\":\"127.0.0.2\","
    "\"Port\":8302,\"Status\":1,\"Inc\":3,\"Build\":\"0.3.0\"}";

/* Decodes text as a members body, expecting rv and, on failure, a reason containing want. */
static void expect_members(const char *text, int rv, const char *want)
{
	struct dg_wan_wire_member *v = (void *)1;
	size_t n = 99;
	char err[256] = "";
	int got =
	    dg_wan_members_decode((const uint8_t *)text, strlen(text), &v, &n, err, sizeof(err));
	if (got != rv)
		fail_msg("%s: got %d (%s), want %d", text, got, err, rv);
	if (rv == 0) {
		assert_non_null(v);
		free(v);
		return;
	}
	assert_null(v);
	assert_int_equal(n, 0);
	if (!strstr(err, want))
		fail_msg("%s: reason \"%s\" does not mention \"%s\"", text, err, want);
}

static void members_decode_good(void **state)
{
	const char *text =
	    "[{\"Name\":\"s1.east\",\"Node\":\"s1\",\"Datacenter\":\"east\",\"Addr\":\"127.0.0.2\","
	    "\"Port\":8302,\"Status\":1,\"Inc\":3,\"Build\":\"0.3.0\"},"
	    " {\"Build\":\"\",\"Inc\":9223372036854775807,\"Status\":5,\"Port\":65535,"
	    "\"Addr\":\"fe80::1\",\"Datacenter\":\"dc-2_x\",\"Node\":\"web.rack1.a\","
	    "\"Name\":\"web.rack1.a.dc-2_x\",\"Future\":{\"x\":[1,2]}},"
	    " {\"Name\":\"n.d\",\"Node\":\"n\",\"Datacenter\":\"d\",\"Addr\":\"h\",\"Port\":1,"
	    "\"Status\":3,\"Inc\":0,\"Build\":\"0.3.0-dev+abc\"}]";
	struct dg_wan_wire_member *v = NULL;
	size_t n = 0;
	char err[256] = "";
	if (dg_wan_members_decode((const uint8_t *)text, strlen(text), &v, &n, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(n, 3);
	assert_string_equal(v[0].name, "s1.east");
	assert_string_equal(v[0].node, "s1");
	assert_string_equal(v[0].dc, "east");
	assert_string_equal(v[0].addr, "127.0.0.2");
	assert_int_equal(v[0].port, 8302);
	assert_int_equal(v[0].status, 1);
	assert_int_equal(v[0].inc, 3);
	assert_string_equal(v[0].build, "0.3.0");
	assert_string_equal(v[1].name, "web.rack1.a.dc-2_x");
	assert_string_equal(v[1].node, "web.rack1.a");
	assert_string_equal(v[1].dc, "dc-2_x");
	assert_string_equal(v[1].addr, "fe80::1");
	assert_int_equal(v[1].port, 65535);
	assert_int_equal(v[1].status, 5);
	assert_true(v[1].inc == (uint64_t)INT64_MAX);
	assert_string_equal(v[1].build, "");
	assert_string_equal(v[2].name, "n.d");
	assert_int_equal(v[2].status, 3);
	free(v);

	/* empty array: no members, and still an array to free */
	v = NULL;
	n = 5;
	assert_int_equal(
	    dg_wan_members_decode((const uint8_t *)" [ ] ", 5, &v, &n, err, sizeof(err)), 0);
	assert_int_equal(n, 0);
	assert_non_null(v);
	free(v);

	/* labels at their longest */
	char node[DG_WAN_LABEL_MAX], dc[DG_WAN_LABEL_MAX], addr[64], build[32], buf[1024];
	memset(node, 'n', sizeof(node) - 1);
	node[sizeof(node) - 1] = 0;
	memset(dc, 'd', sizeof(dc) - 1);
	dc[sizeof(dc) - 1] = 0;
	memset(addr, 'a', sizeof(addr) - 1);
	addr[sizeof(addr) - 1] = 0;
	memset(build, 'b', sizeof(build) - 1);
	build[sizeof(build) - 1] = 0;
	int k = snprintf(buf, sizeof(buf),
			 "[{\"Name\":\"%s.%s\",\"Node\":\"%s\",\"Datacenter\":\"%s\",\"Addr\":"
			 "\"%s\",\"Port\":1,\"Status\":1,\"Inc\":1,\"Build\":\"%s\"}]",
			 node, dc, node, dc, addr, build);
	assert_true(k > 0 && (size_t)k < sizeof(buf));
	expect_members(buf, 0, NULL);
}

/* The good member with one field's value replaced (value NULL: field removed). */
static char *member_with(const char *field, const char *value)
{
	json_t *o = parse(good_member);
	if (value)
		assert_int_equal(json_object_set_new(o, field, parse(value)), 0);
	else
		assert_int_equal(json_object_del(o, field), 0);
	json_t *arr = json_array();
	json_array_append_new(arr, parse(good_member));
	json_array_append_new(arr, o);
	char *s = json_dumps(arr, JSON_COMPACT);
	assert_non_null(s);
	json_decref(arr);
	return s;
}

static void members_decode_rejects(void **state)
{
	static const char *fields[] = {"Name", "Node",	 "Datacenter", "Addr",
				       "Port", "Status", "Inc",	       "Build"};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char want[64];
		char *s = member_with(fields[i], NULL);
		snprintf(want, sizeof(want), "member 1: missing %s", fields[i]);
		expect_members(s, DG_EINVAL, want);
		free(s);
		/* the wrong type: numbers for strings, strings for numbers, null for all */
		bool is_int = !strcmp(fields[i], "Port") || !strcmp(fields[i], "Status") ||
			      !strcmp(fields[i], "Inc");
		s = member_with(fields[i], is_int ? "\"1\"" : "1");
		expect_members(s, DG_EINVAL, is_int ? "not an integer" : "not a string");
		free(s);
		s = member_with(fields[i], "null");
		expect_members(s, DG_EINVAL, fields[i]);
		free(s);
	}

	static const struct {
		const char *field, *value, *why;
	} cases[] = {
	    {"Name", "\"\"", "Name is empty"},
	    {"Node", "\"\"", "Node is empty"},
	    {"Datacenter", "\"\"", "Datacenter is empty"},
	    {"Addr", "\"\"", "Addr is empty"},
	    {"Name", "\"s2.east\"", "not \"<Node>.<Datacenter>\""},
	    {"Name", "\"s1.west\"", "not \"<Node>.<Datacenter>\""},
	    {"Name", "\"s1east\"", "not \"<Node>.<Datacenter>\""},
	    {"Name", "\"s1.east.\"", "not \"<Node>.<Datacenter>\""},
	    {"Name", "\"s1\"", "not \"<Node>.<Datacenter>\""},
	    {"Datacenter", "\"ea.st\"", "contains a dot"},
	    {"Node", "\"s 1\"", "Node holds a space"},
	    {"Node", "\"s\\t1\"", "Node holds a space"},
	    {"Addr", "\"10.0.0.1\\n\"", "Addr holds a space"},
	    {"Build", "\"0.3 beta\"", "Build holds a space"},
	    {"Node", "\"s\\u00e91\"", "printable ASCII"},
	    {"Node", "\"s\\u007f\"", "printable ASCII"},
	    {"Port", "0", "Port 0 outside 1..65535"},
	    {"Port", "65536", "Port 65536 outside"},
	    {"Port", "-1", "Port -1 outside"},
	    {"Port", "8302.0", "Port is not an integer"},
	    {"Status", "0", "Status 0 outside 1..5"},
	    {"Status", "6", "Status 6 outside"},
	    {"Inc", "-1", "Inc -1 outside"},
	    {"Inc", "1.5", "Inc is not an integer"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *s = member_with(cases[i].field, cases[i].value);
		expect_members(s, DG_EINVAL, cases[i].why);
		free(s);
	}

	/* over-long strings: one byte past each array */
	static const struct {
		const char *field;
		size_t max;
	} longs[] = {{"Node", DG_WAN_LABEL_MAX - 1},
		     {"Datacenter", DG_WAN_LABEL_MAX - 1},
		     {"Addr", 63},
		     {"Build", 31}};
	for (size_t i = 0; i < sizeof(longs) / sizeof(longs[0]); i++) {
		char val[300];
		memset(val, 'z', sizeof(val));
		val[0] = '"';
		val[longs[i].max + 2] = '"';
		val[longs[i].max + 3] = 0;
		char *s = member_with(longs[i].field, val);
		char want[64];
		snprintf(want, sizeof(want), "%s of %zu bytes is longer than %zu", longs[i].field,
			 longs[i].max + 1, longs[i].max);
		expect_members(s, DG_EINVAL, want);
		free(s);
	}
	/* Name: 255 bytes fits, 256 does not (Node 127 + "." + Datacenter 127 = 255) */
	char val[300];
	memset(val, 'z', sizeof(val));
	val[0] = '"';
	val[DG_WAN_NAME_MAX + 1] = '"';
	val[DG_WAN_NAME_MAX + 2] = 0;
	char *s = member_with("Name", val);
	expect_members(s, DG_EINVAL, "Name of 256 bytes is longer than 255");
	free(s);

	/* the body itself */
	expect_members("", DG_EINVAL, "members is empty");
	expect_members("{}", DG_EINVAL, "not a JSON array");
	expect_members("null", DG_EINVAL, "not a JSON array");
	expect_members("[", DG_EINVAL, "not valid JSON");
	expect_members("[1]", DG_EINVAL, "member 0: not a JSON object");
	expect_members("[{}]", DG_EINVAL, "member 0: missing Name");
	expect_members("[[]]", DG_EINVAL, "member 0: not a JSON object");
	expect_members("[[[[[[[[[]]]]]]]]]", DG_EINVAL, "too deep");
	expect_members("[{\"Name\":\"s\\u0000.east\",\"Node\":\"s\\u0000\",\"Datacenter\":"
		       "\"east\",\"Addr\":\"h\",\"Port\":1,\"Status\":1,\"Inc\":1,"
		       "\"Build\":\"\"}]",
		       DG_EINVAL, "not valid JSON"); /* "\u0000" would cut the C string short */
	char dup[512];
	snprintf(dup, sizeof(dup), "[%.*s,\"Port\":1}]", (int)strlen(good_member) - 1, good_member);
	expect_members(dup, DG_EINVAL, "not valid JSON"); /* duplicate key */
}

static void members_count_limit(void **state)
{
	/* DG_WAN_MAX_MEMBERS + 1 entries, all "{}": refused on the count, before any entry */
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "[{}", 3), 0);
	for (int i = 0; i < DG_WAN_MAX_MEMBERS; i++)
		assert_int_equal(dg_buf_append(&b, ",{}", 3), 0);
	assert_int_equal(dg_buf_append(&b, "]", 1), 0);
	expect_members(b.data, DG_ETOOBIG, "4097 members, more than 4096");
	dg_buf_fini(&b);

	/* exactly DG_WAN_MAX_MEMBERS good ones are taken */
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "[", 1), 0);
	for (int i = 0; i < DG_WAN_MAX_MEMBERS; i++)
		assert_int_equal(
		    dg_buf_appendf(&b,
				   "%s{\"Name\":\"s%d.east\",\"Node\":\"s%d\","
				   "\"Datacenter\":\"east\",\"Addr\":\"10.0.0.1\","
				   "\"Port\":8302,\"Status\":1,\"Inc\":%d,\"Build\":\"\"}",
				   i ? "," : "", i, i, i),
		    0);
	assert_int_equal(dg_buf_append(&b, "]", 1), 0);
	struct dg_wan_wire_member *v = NULL;
	size_t n = 0;
	char err[256] = "";
	if (dg_wan_members_decode((const uint8_t *)b.data, b.len, &v, &n, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(n, DG_WAN_MAX_MEMBERS);
	assert_string_equal(v[4095].name, "s4095.east");
	assert_int_equal(v[4095].inc, 4095);

	/* and encode back the same bytes */
	struct dg_buf e;
	dg_buf_init(&e);
	assert_int_equal(dg_wan_members_encode(&e, v, n), 0);
	assert_int_equal(e.len, b.len);
	assert_memory_equal(e.data, b.data, b.len);
	dg_buf_fini(&e);
	free(v);
	dg_buf_fini(&b);
}

static void member_set(struct dg_wan_wire_member *m, const char *node, const char *dc,
		       const char *addr, int port, int status, uint64_t inc, const char *build)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->name, sizeof(m->name), "%s.%s", node, dc);
	snprintf(m->node, sizeof(m->node), "%s", node);
	snprintf(m->dc, sizeof(m->dc), "%s", dc);
	snprintf(m->addr, sizeof(m->addr), "%s", addr);
	m->port = port;
	m->status = status;
	m->inc = inc;
	snprintf(m->build, sizeof(m->build), "%s", build);
}

static void members_equal(const struct dg_wan_wire_member *a, const struct dg_wan_wire_member *b)
{
	assert_string_equal(a->name, b->name);
	assert_string_equal(a->node, b->node);
	assert_string_equal(a->dc, b->dc);
	assert_string_equal(a->addr, b->addr);
	assert_int_equal(a->port, b->port);
	assert_int_equal(a->status, b->status);
	assert_true(a->inc == b->inc);
	assert_string_equal(a->build, b->build);
}

static void members_round_trip(void **state)
{
	struct dg_wan_wire_member in[6];
	member_set(&in[0], "s1", "east", "127.0.0.2", 8302, 1, 3, "0.3.0");
	member_set(&in[1], "web.rack\"1\\", "west", "::1", 1, 2, 0, "");
	member_set(&in[2], "n", "d", "host.example.com", 65535, 3, INT64_MAX, "x");
	member_set(&in[3], "a", "b", "10.0.0.4", 2, 4, 1, "!#$%&'()*+,-./:;<=>?@[]^_`{|}~");
	member_set(&in[4], "a", "c", "10.0.0.5", 3, 5, 2, "0.3.0");

	struct dg_buf b;
	dg_buf_init(&b);
	for (size_t n = 0; n <= 5; n++) {
		b.len = 0;
		assert_int_equal(dg_wan_members_encode(&b, in, n), 0);
		struct dg_wan_wire_member *out = NULL;
		size_t got = 99;
		char err[256] = "";
		if (dg_wan_members_decode((const uint8_t *)b.data, b.len, &out, &got, err,
					  sizeof(err)))
			fail_msg("%s: %s", b.data, err);
		assert_int_equal(got, n);
		for (size_t i = 0; i < n; i++)
			members_equal(&out[i], &in[i]);
		free(out);
	}
	assert_string_equal(
	    b.data, "[{\"Name\":\"s1.east\",\"Node\":\"s1\",\"Datacenter\":\"east\",\"Addr\":"
		    "\"127.0.0.2\",\"Port\":8302,\"Status\":1,\"Inc\":3,\"Build\":"
		    "\"0.3.0\"},"
		    "{\"Name\":\"web.rack\\\"1\\\\.west\",\"Node\":\"web.rack\\\"1\\\\\","
		    "\"Datacenter\":\"west\",\"Addr\":\"::1\",\"Port\":1,\"Status\":2,"
		    "\"Inc\":0,\"Build\":\"\"},"
		    "{\"Name\":\"n.d\",\"Node\":\"n\",\"Datacenter\":\"d\",\"Addr\":"
		    "\"host.example.com\",\"Port\":65535,\"Status\":3,\"Inc\":"
		    "9223372036854775807,\"Build\":\"x\"},"
		    "{\"Name\":\"a.b\",\"Node\":\"a\",\"Datacenter\":\"b\",\"Addr\":"
		    "\"10.0.0.4\",\"Port\":2,\"Status\":4,\"Inc\":1,\"Build\":"
		    "\"!#$%&'()*+,-./:;<=>?@[]^_`{|}~\"},"
		    "{\"Name\":\"a.c\",\"Node\":\"a\",\"Datacenter\":\"c\",\"Addr\":"
		    "\"10.0.0.5\",\"Port\":3,\"Status\":5,\"Inc\":2,\"Build\":\"0.3.0\"}]");

	/* inside a PUSHPULL message */
	struct dg_buf msg;
	dg_buf_init(&msg);
	json_t *hdr = json_pack("{s:s}", "From", "s1.east");
	assert_int_equal(dg_wan_msg_encode(&msg, DG_WAN_PUSHPULL, hdr, b.data, b.len), 0);
	json_decref(hdr);
	struct dg_wan_msg m;
	assert_int_equal(dg_wan_msg_decode(msg.data, msg.len, &m, NULL, 0), 0);
	assert_int_equal(m.type, DG_WAN_PUSHPULL);
	struct dg_wan_wire_member *out = NULL;
	size_t got = 0;
	assert_int_equal(dg_wan_members_decode(m.body, m.body_len, &out, &got, NULL, 0), 0);
	assert_int_equal(got, 5);
	members_equal(&out[4], &in[4]);
	free(out);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&msg);
	dg_buf_fini(&b);
}

static void members_encode_rejects(void **state)
{
	struct dg_wan_wire_member good, m;
	member_set(&good, "s1", "east", "127.0.0.2", 8302, 1, 3, "0.3.0");
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "keep", 4), 0);

	struct dg_wan_wire_member bad[12];
	size_t nb = 0;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		bad[i] = good;
	bad[nb++].port = 0;
	bad[nb++].port = 65536;
	bad[nb++].status = 0;
	bad[nb++].status = 6;
	bad[nb++].inc = (uint64_t)INT64_MAX + 1;
	snprintf(bad[nb++].name, sizeof(m.name), "s1.west");
	m = good; /* empty Node, Name ".east" */
	m.node[0] = 0;
	snprintf(m.name, sizeof(m.name), ".east");
	bad[nb++] = m;
	m = good; /* a dot in the Datacenter, Name consistent */
	snprintf(m.dc, sizeof(m.dc), "e.ast");
	snprintf(m.name, sizeof(m.name), "s1.e.ast");
	bad[nb++] = m;
	bad[nb++].addr[0] = 0;
	snprintf(bad[nb++].build, sizeof(m.build), "a b");
	memset(bad[nb++].addr, 'a', sizeof(m.addr)); /* not NUL-terminated */
	snprintf(bad[nb++].node, sizeof(m.node), "s\xc3\xa9");
	assert_int_equal(nb, sizeof(bad) / sizeof(bad[0]));
	for (size_t i = 0; i < nb; i++) {
		struct dg_wan_wire_member two[2] = {good, bad[i]};
		if (dg_wan_members_encode(&b, two, 2) != DG_EINVAL)
			fail_msg("bad member %zu encoded", i);
		assert_int_equal(b.len, 4);
	}

	struct dg_wan_wire_member *many = calloc(DG_WAN_MAX_MEMBERS + 1, sizeof(*many));
	assert_non_null(many);
	for (size_t i = 0; i <= DG_WAN_MAX_MEMBERS; i++)
		many[i] = good;
	assert_int_equal(dg_wan_members_encode(&b, many, DG_WAN_MAX_MEMBERS + 1), DG_ETOOBIG);
	assert_int_equal(b.len, 4);
	assert_string_equal(b.data, "keep");
	free(many);
	dg_buf_fini(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(wire_layout),
	    cmocka_unit_test(round_trip_every_type),
	    cmocka_unit_test(type_names),
	    cmocka_unit_test(reject_bad_magic),
	    cmocka_unit_test(reject_unknown_type),
	    cmocka_unit_test(reject_truncated_prefix),
	    cmocka_unit_test(reject_header_beyond_buffer),
	    cmocka_unit_test(reject_header_over_limit),
	    cmocka_unit_test(reject_message_over_limit),
	    cmocka_unit_test(reject_header_not_object),
	    cmocka_unit_test(reject_too_deep),
	    cmocka_unit_test(encode_limits),
	    cmocka_unit_test(encode_refuses_what_decode_would),
	    cmocka_unit_test(header_writer_property),
	    cmocka_unit_test(header_text_is_janssons),
	    cmocka_unit_test(header_writer_refuses),
	    cmocka_unit_test(members_decode_good),
	    cmocka_unit_test(members_decode_rejects),
	    cmocka_unit_test(members_count_limit),
	    cmocka_unit_test(members_round_trip),
	    cmocka_unit_test(members_encode_rejects),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
