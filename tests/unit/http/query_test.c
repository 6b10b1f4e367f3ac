/* Unit tests for http/query.c and http/decode.c: Consul's parameter rules and texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http/internal.h"

static void index_and_wait(void **state)
{
	struct dg_query q;
	char err[256];
	memset(&q, 0, sizeof(q));
	assert_int_equal(dg_query_set(&q, "index", "42", err, sizeof(err)), 0);
	assert_true(q.index == 42);
	assert_int_equal(dg_query_set(&q, "index", "x", err, sizeof(err)), DG_EINVAL);
	assert_string_equal(err, "Invalid index");
	assert_int_equal(dg_query_set(&q, "wait", "30000ms", err, sizeof(err)), 0);
	assert_true(q.wait_ns == 30000000000LL);
	assert_int_equal(dg_query_set(&q, "wait", "5", err, sizeof(err)), DG_EINVAL);
	assert_string_equal(err, "Invalid wait time");
	dg_query_fini(&q);
}

static void presence_flags_and_conflicts(void **state)
{
	struct dg_query q;
	char err[256];
	memset(&q, 0, sizeof(q));
	assert_int_equal(dg_query_set(&q, "stale", "false", err, sizeof(err)), 0);
	assert_true(q.stale); /* presence-based: any value means on */
	assert_int_equal(dg_query_set(&q, "consistent", "", err, sizeof(err)), 0);
	assert_int_equal(dg_query_finish(&q, err, sizeof(err)), DG_EINVAL);
	assert_string_equal(err, "Cannot specify ?stale with ?consistent, conflicting semantics.");
	assert_int_equal(dg_query_set(&q, "passing", "0", err, sizeof(err)), 0);
	assert_false(q.passing);
	assert_int_equal(dg_query_set(&q, "passing", "maybe", err, sizeof(err)), DG_EINVAL);
	assert_string_equal(err, "Invalid value for ?passing");
	assert_int_equal(dg_query_set(&q, "wan", "", err, sizeof(err)), 0);
	assert_false(q.wan); /* value-based */
	dg_query_fini(&q);
}

static void block_time_caps_and_jitter(void **state)
{
	/* absent: 5 min; capped at 10 min; jitter below wait/16 */
	assert_true(dg_query_block_ms(0, 0) == 300000);
	assert_true(dg_query_block_ms(3600LL * 1000000000LL, 0) == 600000);
	uint64_t t = dg_query_block_ms(30LL * 1000000000LL, 0xffffffffu);
	assert_true(t >= 30000 && t < 30000 + 30000 / 16);
}

static void body_decoding(void **state)
{
	char err[256];
	assert_null(dg_decode_body("", 0, err, sizeof(err)));
	assert_string_equal(err, "Request decode failed: EOF");
	char deep[200];
	memset(deep, '[', sizeof(deep));
	assert_null(dg_decode_body(deep, sizeof(deep), err, sizeof(err)));
	json_t *v = dg_decode_body("{\"name\":\"web\",\"Interval\":\"10s\"}", 31, err, sizeof(err));
	assert_non_null(v);
	assert_string_equal(dg_jstr(dg_jget(v, "Name", NULL)), "web"); /* case-insensitive */
	int64_t ns;
	assert_int_equal(dg_jduration(dg_jget(v, "interval", NULL), &ns), 0);
	assert_true(ns == 10000000000LL);
	json_decref(v);
	/* a number of nanoseconds beyond int64 is no duration (found by fuzzing) */
	json_t *huge = json_real(1e300);
	assert_int_equal(dg_jduration(huge, &ns), DG_EINVAL);
	json_decref(huge);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(index_and_wait),
		cmocka_unit_test(presence_flags_and_conflicts),
		cmocka_unit_test(block_time_caps_and_jitter),
		cmocka_unit_test(body_decoding),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
