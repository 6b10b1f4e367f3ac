/* Unit tests for http/query.c and http/decode.c: Consul's parameter rules and texts; and the
 * decoding of in-process calls' paths and query strings (local.c), which must match MHD's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
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

struct split {
	char out[512];
};

static void split_cb(void *cls, const char *key, const char *value)
{
	struct split *s = cls;
	size_t n = strlen(s->out);
	snprintf(s->out + n, sizeof(s->out) - n, "[%s]=%s%s%s;", key, value ? "[" : "",
		 value ? value : "(none)", value ? "]" : "");
}

static void split_query(const char *qs, const char *want)
{
	char *copy = strdup(qs);
	struct split s = {.out = ""};
	dg__http_query_split(copy, split_cb, &s);
	assert_string_equal(s.out, want);
	free(copy);
}

/* What MHD 0.9.75 gives its handlers for the same request line. */
static void local_decoding_as_mhd(void **state)
{
	split_query("", "");
	split_query("dc=east&index=12&wait=5s", "[dc]=[east];[index]=[12];[wait]=[5s];");
	split_query("recurse&keys", "[recurse]=(none);[keys]=(none);");
	split_query("a=&b", "[a]=[];[b]=(none);");
	split_query("k=a%20b+c%2Bd&x=1=2", "[k]=[a b c+d];[x]=[1=2];");
	split_query("a=1&&b=2&", "[a]=[1];[]=(none);[b]=[2];");
	split_query("sep%3D=%2F&bad=%zz%4", "[sep=]=[/];[bad]=[%zz%4];");

	char path[] = "/v1/kv/a%20b/c+d%2fe%41";
	assert_int_equal(dg__http_unescape(path), strlen("/v1/kv/a b/c+d/eA"));
	assert_string_equal(path, "/v1/kv/a b/c+d/eA");
	char nul[] = "/v1/kv/x%00y";
	assert_int_equal(dg__http_unescape(nul), strlen("/v1/kv/x"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(index_and_wait),
		cmocka_unit_test(presence_flags_and_conflicts),
		cmocka_unit_test(block_time_caps_and_jitter),
		cmocka_unit_test(body_decoding),
		cmocka_unit_test(local_decoding_as_mhd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
