/* Unit tests for the batches of wan/msg.c (BATCH and BATCH_REPLY): building one within the
 * item-count and size limits, round trips, every reason the decoder refuses a batch, and the
 * reply encoder that turns answers too large for the batch into "ask again alone" markers. */
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

/* A forwarded GET of path, encoded. */
static void http_msg(struct dg_buf *b, const char *path)
{
	json_t *h = json_pack("{s:s, s:s, s:{}}", "Method", "GET", "Path", path, "Headers");
	dg_buf_init(b);
	assert_int_equal(dg_wan_msg_encode(b, DG_WAN_HTTP, h, NULL, 0), 0);
	json_decref(h);
}

/* An HTTP_REPLY with status 200 and a body of len bytes of c, encoded. */
static void reply_msg(struct dg_buf *b, char c, size_t len)
{
	json_t *h = json_pack("{s:i, s:{s:s}}", "Status", 200, "Headers", "X-Consul-Index", "7");
	char *body = malloc(len ? len : 1);
	assert_non_null(body);
	memset(body, c, len);
	dg_buf_init(b);
	assert_int_equal(dg_wan_msg_encode(b, DG_WAN_HTTP_REPLY, h, body, len), 0);
	free(body);
	json_decref(h);
}

/* Decodes a whole batch message, then its items; returns the items' decoder result. */
static int decode_batch(const struct dg_buf *b, struct dg_wan_msg *m, struct dg_wan_msg **items,
			size_t *n, char *err, size_t errlen)
{
	char why[256];
	assert_int_equal(dg_wan_msg_decode(b->data, b->len, m, why, sizeof(why)), 0);
	return dg_wan_batch_decode(m, items, n, err, errlen);
}

/* A batch message of the given type and header whose body is the raw bytes given. */
static void raw_batch(struct dg_buf *out, enum dg_wan_type type, const char *hdr,
		      const void *body, size_t len)
{
	json_error_t jerr;
	json_t *h = json_loads(hdr, 0, &jerr);
	assert_non_null(h);
	dg_buf_init(out);
	assert_int_equal(dg_wan_msg_encode(out, type, h, body, len), 0);
	json_decref(h);
}

static void put_len(struct dg_buf *b, size_t len)
{
	uint8_t p[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
			(uint8_t)len};
	assert_int_equal(dg_buf_append(b, p, 4), 0);
}

/* Expects the batch body (framed items) under header hdr to be refused with rv and a reason
 * containing want. */
static void expect_reject(enum dg_wan_type type, const char *hdr, const struct dg_buf *body,
			  int rv, const char *want)
{
	struct dg_buf b;
	struct dg_wan_msg m, *items = (struct dg_wan_msg *)1;
	size_t n = 99;
	char err[256] = "";
	raw_batch(&b, type, hdr, body->data, body->len);
	assert_int_equal(decode_batch(&b, &m, &items, &n, err, sizeof(err)), rv);
	assert_null(items);
	assert_int_equal(n, 0);
	if (!strstr(err, want))
		fail_msg("reason \"%s\" does not mention \"%s\"", err, want);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&b);
}

/* ---- building and round trips ---- */

static void round_trip(void **state)
{
	(void)state;
	struct dg_wan_batch b;
	dg_wan_batch_init(&b, DG_WAN_BATCH, DG_WAN_MAX_MSG);
	const char *paths[] = {"/v1/kv/a?dc=east", "/v1/kv/b?dc=east", "/v1/catalog/nodes?dc=east"};
	for (size_t i = 0; i < 3; i++) {
		struct dg_buf m;
		http_msg(&m, paths[i]);
		assert_int_equal(dg_wan_batch_add(&b, m.data, m.len), 0);
		dg_buf_fini(&m);
	}
	assert_int_equal(b.count, 3);
	struct dg_buf out;
	dg_buf_init(&out);
	assert_int_equal(dg_wan_batch_encode(&b, &out), 0);
	assert_true(out.len <= DG_WAN_MAX_MSG);

	struct dg_wan_msg m, *items = NULL;
	size_t n = 0;
	char err[256] = "";
	assert_int_equal(decode_batch(&out, &m, &items, &n, err, sizeof(err)), 0);
	assert_int_equal(m.type, DG_WAN_BATCH);
	assert_int_equal(json_integer_value(json_object_get(m.hdr, "Count")), 3);
	assert_int_equal(n, 3);
	for (size_t i = 0; i < 3; i++) {
		assert_int_equal(items[i].type, DG_WAN_HTTP);
		assert_string_equal(json_string_value(json_object_get(items[i].hdr, "Path")),
				    paths[i]);
		assert_int_equal(items[i].body_len, 0);
	}
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);
	dg_wan_batch_fini(&b);
	assert_string_equal(dg_wan_type_name(DG_WAN_BATCH), "BATCH");
	assert_string_equal(dg_wan_type_name(DG_WAN_BATCH_REPLY), "BATCH_REPLY");
}

/* Answers keep their bodies byte for byte, NULs included, and ERROR items travel too. */
static void reply_round_trip(void **state)
{
	(void)state;
	struct dg_buf a[2];
	json_t *h = json_pack("{s:i, s:{}}", "Status", 404, "Headers");
	dg_buf_init(&a[0]);
	assert_int_equal(dg_wan_msg_encode(&a[0], DG_WAN_HTTP_REPLY, h, "x\0y", 3), 0);
	json_decref(h);
	h = json_pack("{s:s}", "Error", "nope");
	dg_buf_init(&a[1]);
	assert_int_equal(dg_wan_msg_encode(&a[1], DG_WAN_ERROR, h, NULL, 0), 0);
	json_decref(h);
	struct dg_buf out;
	dg_buf_init(&out);
	size_t resends = 9;
	assert_int_equal(dg_wan_batch_reply_encode(&out, a, 2, DG_WAN_MAX_MSG, &resends), 0);
	assert_int_equal(resends, 0);
	struct dg_wan_msg m, *items = NULL;
	size_t n = 0;
	assert_int_equal(decode_batch(&out, &m, &items, &n, NULL, 0), 0);
	assert_int_equal(m.type, DG_WAN_BATCH_REPLY);
	assert_int_equal(n, 2);
	assert_int_equal(items[0].type, DG_WAN_HTTP_REPLY);
	assert_int_equal(items[0].body_len, 3);
	assert_memory_equal(items[0].body, "x\0y", 3);
	assert_int_equal(items[1].type, DG_WAN_ERROR);
	assert_false(dg_wan_is_resend(&items[0]));
	assert_false(dg_wan_is_resend(&items[1]));
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);
	dg_buf_fini(&a[0]);
	dg_buf_fini(&a[1]);
}

/* Only forwarded requests go in a BATCH, only their answers in a BATCH_REPLY. */
static void add_refuses_other_types(void **state)
{
	(void)state;
	struct dg_wan_batch b, r;
	struct dg_buf ping, http, reply;
	dg_buf_init(&ping);
	assert_int_equal(dg_wan_msg_encode(&ping, DG_WAN_PING, NULL, NULL, 0), 0);
	http_msg(&http, "/v1/kv/a");
	reply_msg(&reply, 'a', 10);
	dg_wan_batch_init(&b, DG_WAN_BATCH, DG_WAN_MAX_MSG);
	dg_wan_batch_init(&r, DG_WAN_BATCH_REPLY, DG_WAN_MAX_MSG);
	assert_int_equal(dg_wan_batch_add(&b, ping.data, ping.len), DG_EINVAL);
	assert_int_equal(dg_wan_batch_add(&b, reply.data, reply.len), DG_EINVAL);
	assert_int_equal(dg_wan_batch_add(&r, http.data, http.len), DG_EINVAL);
	assert_int_equal(dg_wan_batch_add(&b, "\xD6\x07", 2), DG_EINVAL); /* shorter than a prefix */
	http.data[0] = 0x00;
	assert_int_equal(dg_wan_batch_add(&b, http.data, http.len), DG_EINVAL); /* bad magic */
	assert_int_equal(b.count, 0);
	assert_int_equal(b.body.len, 0);
	struct dg_buf out;
	dg_buf_init(&out);
	assert_int_equal(dg_wan_batch_encode(&b, &out), DG_EINVAL); /* empty */
	assert_int_equal(out.len, 0);
	struct dg_wan_batch x;
	dg_wan_batch_init(&x, DG_WAN_HTTP, DG_WAN_MAX_MSG); /* not a batch type */
	assert_int_equal(dg_wan_batch_add(&x, reply.data, reply.len), DG_EINVAL);
	dg_wan_batch_fini(&x);
	dg_wan_batch_fini(&b);
	dg_wan_batch_fini(&r);
	dg_buf_fini(&ping);
	dg_buf_fini(&http);
	dg_buf_fini(&reply);
}

static void add_limits(void **state)
{
	(void)state;
	struct dg_buf http;
	http_msg(&http, "/v1/kv/a");
	struct dg_wan_batch b;
	dg_wan_batch_init(&b, DG_WAN_BATCH, DG_WAN_MAX_MSG);
	for (int i = 0; i < DG_WAN_MAX_BATCH; i++)
		assert_int_equal(dg_wan_batch_add(&b, http.data, http.len), 0);
	assert_int_equal(dg_wan_batch_room(&b), 0);
	assert_int_equal(dg_wan_batch_add(&b, http.data, http.len), DG_ETOOBIG);
	assert_int_equal(b.count, DG_WAN_MAX_BATCH);
	struct dg_buf out;
	dg_buf_init(&out);
	assert_int_equal(dg_wan_batch_encode(&b, &out), 0);
	struct dg_wan_msg m, *items = NULL;
	size_t n = 0;
	assert_int_equal(decode_batch(&out, &m, &items, &n, NULL, 0), 0);
	assert_int_equal(n, DG_WAN_MAX_BATCH);
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);
	dg_wan_batch_fini(&b);

	/* bytes: a lowered limit; the message built never passes it, and a refused item leaves
	 * the batch as it was */
	size_t max = 3 * (http.len + 4) + 30;
	dg_wan_batch_init(&b, DG_WAN_BATCH, max);
	size_t added = 0;
	while (dg_wan_batch_add(&b, http.data, http.len) == 0)
		added++;
	assert_true(added >= 2 && added <= 3);
	size_t len_before = b.body.len;
	assert_int_equal(dg_wan_batch_add(&b, http.data, http.len), DG_ETOOBIG);
	assert_int_equal(b.body.len, len_before);
	assert_int_equal(b.count, added);
	assert_true(dg_wan_batch_room(&b) < http.len);
	dg_buf_init(&out);
	assert_int_equal(dg_wan_batch_encode(&b, &out), 0);
	assert_true(out.len <= max);
	dg_buf_fini(&out);
	dg_wan_batch_fini(&b);
	/* a limit over DG_WAN_MAX_MSG is cut to it */
	dg_wan_batch_init(&b, DG_WAN_BATCH, (size_t)DG_WAN_MAX_MSG * 4);
	assert_int_equal(b.max, DG_WAN_MAX_MSG);
	dg_wan_batch_fini(&b);
	dg_buf_fini(&http);
}

/* ---- what the decoder refuses ---- */

static void decode_rejects(void **state)
{
	(void)state;
	struct dg_buf http, ping, reply, body;
	http_msg(&http, "/v1/kv/a");
	reply_msg(&reply, 'r', 5);
	dg_buf_init(&ping);
	assert_int_equal(dg_wan_msg_encode(&ping, DG_WAN_PING, NULL, NULL, 0), 0);

	/* one good item, as a base */
	dg_buf_init(&body);
	put_len(&body, http.len);
	assert_int_equal(dg_buf_append(&body, http.data, http.len), 0);
	expect_reject(DG_WAN_BATCH, "{}", &body, DG_EINVAL, "Count");
	expect_reject(DG_WAN_BATCH, "{\"Count\":\"1\"}", &body, DG_EINVAL, "Count");
	expect_reject(DG_WAN_BATCH, "{\"Count\":0}", &body, DG_EINVAL, "Count");
	expect_reject(DG_WAN_BATCH, "{\"Count\":-3}", &body, DG_EINVAL, "Count");
	expect_reject(DG_WAN_BATCH, "{\"Count\":65}", &body, DG_ETOOBIG, "more than 64");
	expect_reject(DG_WAN_BATCH, "{\"Count\":2}", &body, DG_EINVAL, "1 items for a Count of 2");
	/* an answer in a BATCH, a request in a BATCH_REPLY */
	expect_reject(DG_WAN_BATCH_REPLY, "{\"Count\":1}", &body, DG_EINVAL,
		      "HTTP cannot travel in a BATCH_REPLY");
	dg_buf_fini(&body);

	/* more items than Count */
	dg_buf_init(&body);
	for (int i = 0; i < 2; i++) {
		put_len(&body, http.len);
		assert_int_equal(dg_buf_append(&body, http.data, http.len), 0);
	}
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "more items than the Count");
	dg_buf_fini(&body);

	/* empty body */
	dg_buf_init(&body);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "0 items for a Count of 1");
	/* a length cut short */
	assert_int_equal(dg_buf_append(&body, "\x00\x00", 2), 0);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "truncated length");
	dg_buf_fini(&body);

	/* an item longer than what follows */
	dg_buf_init(&body);
	put_len(&body, http.len + 1);
	assert_int_equal(dg_buf_append(&body, http.data, http.len), 0);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "only");
	dg_buf_fini(&body);
	dg_buf_init(&body);
	put_len(&body, 0xFFFFFFFFu);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "only 0 follow");
	dg_buf_fini(&body);

	/* an item that is no message */
	dg_buf_init(&body);
	put_len(&body, 7);
	assert_int_equal(dg_buf_append(&body, "garbage", 7), 0);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL, "item 0: bad magic");
	dg_buf_fini(&body);

	/* the second item is a PING: reported with its index */
	dg_buf_init(&body);
	put_len(&body, http.len);
	assert_int_equal(dg_buf_append(&body, http.data, http.len), 0);
	put_len(&body, ping.len);
	assert_int_equal(dg_buf_append(&body, ping.data, ping.len), 0);
	expect_reject(DG_WAN_BATCH, "{\"Count\":2}", &body, DG_EINVAL,
		      "item 1: a PING cannot travel in a BATCH");
	dg_buf_fini(&body);

	/* a batch inside a batch */
	struct dg_wan_batch inner;
	dg_wan_batch_init(&inner, DG_WAN_BATCH, DG_WAN_MAX_MSG);
	assert_int_equal(dg_wan_batch_add(&inner, http.data, http.len), 0);
	struct dg_buf nested;
	dg_buf_init(&nested);
	assert_int_equal(dg_wan_batch_encode(&inner, &nested), 0);
	dg_buf_init(&body);
	put_len(&body, nested.len);
	assert_int_equal(dg_buf_append(&body, nested.data, nested.len), 0);
	expect_reject(DG_WAN_BATCH, "{\"Count\":1}", &body, DG_EINVAL,
		      "a BATCH cannot travel in a BATCH");
	dg_buf_fini(&body);
	dg_buf_fini(&nested);
	dg_wan_batch_fini(&inner);

	/* not a batch at all */
	struct dg_wan_msg m, *items = (struct dg_wan_msg *)1;
	size_t n = 5;
	char err[256] = "";
	assert_int_equal(dg_wan_msg_decode(reply.data, reply.len, &m, NULL, 0), 0);
	assert_int_equal(dg_wan_batch_decode(&m, &items, &n, err, sizeof(err)), DG_EINVAL);
	assert_null(items);
	assert_int_equal(n, 0);
	assert_non_null(strstr(err, "not a batch"));
	dg_wan_msg_fini(&m);
	dg_buf_fini(&http);
	dg_buf_fini(&ping);
	dg_buf_fini(&reply);
}

/* ---- the reply encoder: answers too large become resend markers ---- */

static void reply_resend_markers(void **state)
{
	(void)state;
	struct dg_buf a[4];
	reply_msg(&a[0], 'a', 1000);
	reply_msg(&a[1], 'b', 5000); /* too large for the lowered limit with the others */
	reply_msg(&a[2], 'c', 1000);
	reply_msg(&a[3], 'd', 100);
	size_t max = 3000;
	struct dg_buf out;
	dg_buf_init(&out);
	size_t resends = 0;
	assert_int_equal(dg_wan_batch_reply_encode(&out, a, 4, max, &resends), 0);
	assert_int_equal(resends, 1);
	assert_true(out.len <= max);
	struct dg_wan_msg m, *items = NULL;
	size_t n = 0;
	assert_int_equal(decode_batch(&out, &m, &items, &n, NULL, 0), 0);
	assert_int_equal(n, 4);
	const char want[4] = {'a', 0, 'c', 'd'};
	const size_t sizes[4] = {1000, 0, 1000, 100};
	for (size_t i = 0; i < 4; i++) {
		if (!want[i]) {
			assert_true(dg_wan_is_resend(&items[i]));
			continue;
		}
		assert_false(dg_wan_is_resend(&items[i]));
		assert_int_equal(items[i].type, DG_WAN_HTTP_REPLY);
		assert_int_equal(items[i].body[0], want[i]);
		assert_int_equal(items[i].body_len, sizes[i]);
	}
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);

	/* room is kept for the markers of the answers after one: with a limit that takes the first
	 * two answers of 1000 bytes but not also the markers after them, the second is a marker */
	struct dg_buf b[6];
	for (int i = 0; i < 6; i++)
		reply_msg(&b[i], (char)('k' + i), 1000);
	dg_buf_init(&out);
	assert_int_equal(dg_wan_batch_reply_encode(&out, b, 6, 2 * (b[0].len + 4) + 80, &resends),
			 0);
	assert_true(out.len <= 2 * (b[0].len + 4) + 80);
	assert_int_equal(decode_batch(&out, &m, &items, &n, NULL, 0), 0);
	assert_int_equal(n, 6);
	assert_false(dg_wan_is_resend(&items[0]));
	for (size_t i = 1; i < 6; i++)
		assert_true(dg_wan_is_resend(&items[i]));
	assert_int_equal(resends, 5);
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);

	/* a limit where not even the markers fit: refused, out untouched */
	dg_buf_init(&out);
	assert_int_equal(dg_buf_append(&out, "keep", 4), 0);
	assert_int_equal(dg_wan_batch_reply_encode(&out, b, 6, 100, &resends), DG_ETOOBIG);
	assert_int_equal(out.len, 4);
	assert_int_equal(resends, 0);
	assert_int_equal(dg_wan_batch_reply_encode(&out, b, 0, DG_WAN_MAX_MSG, &resends),
			 DG_EINVAL);
	/* a request is no answer */
	struct dg_buf http;
	http_msg(&http, "/v1/kv/a");
	assert_int_equal(dg_wan_batch_reply_encode(&out, &http, 1, DG_WAN_MAX_MSG, &resends),
			 DG_EINVAL);
	assert_int_equal(out.len, 4);
	dg_buf_fini(&http);
	dg_buf_fini(&out);
	for (int i = 0; i < 6; i++)
		dg_buf_fini(&b[i]);
	for (int i = 0; i < 4; i++)
		dg_buf_fini(&a[i]);
}

/* With the real limit: answers of a KV value's size, enough of them to pass 2 MiB together, are
 * answered in order until the message is full; the rest are asked again alone. */
static void reply_real_limit(void **state)
{
	(void)state;
	enum { N = 6 };
	struct dg_buf a[N];
	for (int i = 0; i < N; i++)
		reply_msg(&a[i], (char)('0' + i), 512 * 1024);
	struct dg_buf out;
	dg_buf_init(&out);
	size_t resends = 0;
	assert_int_equal(dg_wan_batch_reply_encode(&out, a, N, DG_WAN_MAX_MSG, &resends), 0);
	assert_true(out.len <= DG_WAN_MAX_MSG);
	assert_int_equal(resends, 3); /* 3 x 512 KiB fit in 2 MiB, a fourth does not */
	struct dg_wan_msg m, *items = NULL;
	size_t n = 0;
	assert_int_equal(decode_batch(&out, &m, &items, &n, NULL, 0), 0);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(dg_wan_is_resend(&items[i]), i >= 3);
		if (i < 3)
			assert_int_equal(items[i].body_len, 512 * 1024);
	}
	dg_wan_batch_items_free(items, n);
	dg_wan_msg_fini(&m);
	dg_buf_fini(&out);
	for (int i = 0; i < N; i++)
		dg_buf_fini(&a[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip),	    cmocka_unit_test(reply_round_trip),
	    cmocka_unit_test(add_refuses_other_types), cmocka_unit_test(add_limits),
	    cmocka_unit_test(decode_rejects),	    cmocka_unit_test(reply_resend_markers),
	    cmocka_unit_test(reply_real_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
