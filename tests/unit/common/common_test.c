/* Unit tests for common/: Go durations both ways, base64, the sorted maps, number parsing, the JSON
 * string writer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/common.h"

static void duration_parse_go_forms(void **state)
{
	int64_t ns;
	assert_int_equal(dg_duration_parse("10s", &ns), 0);
	assert_true(ns == 10000000000LL);
	assert_int_equal(dg_duration_parse("1m30s", &ns), 0);
	assert_true(ns == 90000000000LL);
	assert_int_equal(dg_duration_parse("300000ms", &ns), 0);
	assert_true(ns == 300000000000LL);
	assert_int_equal(dg_duration_parse("1.5h", &ns), 0);
	assert_true(ns == 5400000000000LL);
	assert_int_equal(dg_duration_parse("250us", &ns), 0);
	assert_true(ns == 250000);
	assert_int_equal(dg_duration_parse("0", &ns), 0);
	assert_true(ns == 0);
	/* a bare number other than 0 is an error, as in Go */
	assert_int_equal(dg_duration_parse("5", &ns), DG_EINVAL);
	assert_int_equal(dg_duration_parse("", &ns), DG_EINVAL);
	assert_int_equal(dg_duration_parse("10x", &ns), DG_EINVAL);
	assert_int_equal(dg_duration_parse("s", &ns), DG_EINVAL);
}

static void duration_format_like_go(void **state)
{
	char buf[64];
	struct {
		int64_t ns;
		const char *want;
	} cases[] = {
		{0, "0s"},
		{60000000000LL, "1m0s"},
		{10000000000LL, "10s"},
		{1500000000LL, "1.5s"},
		{5400000000000LL, "1h30m0s"},
		{250000000LL, "250ms"},
		{1500, "1.5\xc2\xb5s"},
		{-2000000000LL, "-2s"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(dg_duration_format(cases[i].ns, buf, sizeof(buf)), 0);
		assert_string_equal(buf, cases[i].want);
	}
}

static void base64_round_trip(void **state)
{
	char *b = dg_base64_encode("hello", 5);
	assert_string_equal(b, "aGVsbG8=");
	uint8_t *out;
	size_t len;
	assert_int_equal(dg_base64_decode(b, strlen(b), &out, &len), 0);
	assert_int_equal(len, 5);
	assert_memory_equal(out, "hello", 5);
	free(out);
	free(b);
	assert_int_equal(dg_base64_decode("a$==", 4, &out, &len), DG_EINVAL);
}

static void map_sorted_and_case_rules(void **state)
{
	struct dg_map m;
	void *old;
	dg_map_init(&m, true);
	assert_int_equal(dg_map_put(&m, "Web", (void *)1, &old), 0);
	assert_int_equal(dg_map_put(&m, "api", (void *)2, &old), 0);
	assert_int_equal(dg_map_put(&m, "WEB", (void *)3, &old), 0);
	assert_ptr_equal(old, (void *)1); /* case-insensitive replace */
	assert_int_equal(m.n, 2);
	assert_string_equal(m.v[0].key, "api");
	assert_ptr_equal(dg_map_find(&m, "web"), (void *)3);
	assert_ptr_equal(dg_map_del(&m, "API"), (void *)2);
	assert_null(dg_map_find(&m, "api"));
	dg_map_fini(&m);
}

/* The chunked map against the sorted array as the reference: random puts and deletes over a key
 * space much larger than a chunk, so chunks split, thin out, merge and vanish; after each step
 * the same keys in the same order, found alike, and prefix seeks that land on the same key. */
static void omap_matches_sorted_array(void **state)
{
	struct dg_omap om;
	struct dg_map ref;
	dg_omap_init(&om);
	dg_map_init(&ref, false);
	unsigned seed = 12345;
	char key[32];
	for (int step = 0; step < 60000; step++) {
		seed = seed * 1103515245u + 12345u;
		unsigned r = (seed >> 8) % 5000;
		snprintf(key, sizeof(key), "k/%u/%u", r % 7, r);
		/* puts win early (the map grows past many chunks), deletes later (it shrinks) */
		bool put = ((seed >> 20) % 100) < (step < 30000 ? 70u : 25u);
		if (put) {
			void *o1, *o2;
			assert_int_equal(dg_omap_put(&om, key, (void *)(uintptr_t)(step + 1), &o1), 0);
			assert_int_equal(dg_map_put(&ref, key, (void *)(uintptr_t)(step + 1), &o2), 0);
			assert_ptr_equal(o1, o2);
		} else {
			assert_ptr_equal(dg_omap_del(&om, key), dg_map_del(&ref, key));
		}
		assert_int_equal(dg_omap_size(&om), ref.n);
		if (step % 997 == 0 || step == 59999) {
			struct dg_omap_it it;
			size_t i = 0;
			for (dg_omap_first(&om, &it); dg_omap_valid(&it); dg_omap_next(&it), i++) {
				assert_true(i < ref.n);
				assert_string_equal(dg_omap_key(&it), ref.v[i].key);
				assert_ptr_equal(dg_omap_value(&it), ref.v[i].value);
			}
			assert_int_equal(i, ref.n);
			const char *prefixes[] = {"", "k/3/", "k/3/1", "k/9", "a", "z"};
			for (size_t p = 0; p < sizeof(prefixes) / sizeof(prefixes[0]); p++) {
				size_t j = dg_map_lower_bound(&ref, prefixes[p]);
				dg_omap_seek(&om, prefixes[p], &it);
				assert_int_equal(dg_omap_valid(&it), j < ref.n);
				if (j < ref.n)
					assert_string_equal(dg_omap_key(&it), ref.v[j].key);
				assert_int_equal(dg_omap_in_prefix(&it, prefixes[p]),
						 j < ref.n && dg_map_has_prefix(&ref, ref.v[j].key, prefixes[p]));
			}
			assert_ptr_equal(dg_omap_find(&om, key), dg_map_find(&ref, key));
		}
	}
	/* everything deleted: no chunk is left behind, and the map works again */
	while (ref.n) {
		char *k = strdup(ref.v[0].key);
		assert_ptr_equal(dg_omap_del(&om, k), dg_map_del(&ref, k));
		free(k);
	}
	assert_int_equal(dg_omap_size(&om), 0);
	assert_int_equal(om.nchunks, 0);
	struct dg_omap_it end;
	dg_omap_first(&om, &end);
	assert_false(dg_omap_valid(&end));
	assert_int_equal(dg_omap_put(&om, "again", (void *)1, NULL), 0);
	assert_ptr_equal(dg_omap_find(&om, "again"), (void *)1);
	dg_omap_fini(&om);
	dg_map_fini(&ref);
}

static void parse_numbers_and_bools(void **state)
{
	uint64_t u;
	bool b;
	assert_int_equal(dg_parse_u64("18446744073709551615", &u), 0);
	assert_true(u == UINT64_MAX);
	assert_int_equal(dg_parse_u64("18446744073709551616", &u), DG_EINVAL);
	assert_int_equal(dg_parse_u64("-1", &u), DG_EINVAL);
	assert_int_equal(dg_parse_u64("", &u), DG_EINVAL);
	assert_int_equal(dg_parse_bool("True", &b), 0);
	assert_true(b);
	assert_int_equal(dg_parse_bool("0", &b), 0);
	assert_false(b);
	assert_int_equal(dg_parse_bool("yes", &b), DG_EINVAL);
}

/* Appends s[0..len) to a buffer holding "x" and checks the text after it. */
static void json_string_is(const char *s, size_t len, const char *want)
{
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append(&b, "x", 1), 0);
	assert_int_equal(dg_buf_append_json_string(&b, s, len), 0);
	assert_int_equal(b.len, 1 + strlen(want));
	assert_string_equal(b.data + 1, want); /* and NUL-terminated */
	assert_int_equal(b.data[0], 'x');
	dg_buf_fini(&b);
}

static void json_string_escapes(void **state)
{
	json_string_is("", 0, "\"\"");
	json_string_is(NULL, 0, "\"\"");
	json_string_is("plain", 5, "\"plain\"");
	json_string_is("a\"b\\c/d", 7, "\"a\\\"b\\\\c/d\"");
	json_string_is("\n\r\t", 3, "\"\\n\\r\\t\"");
	json_string_is("\b\f\x01\x1f", 4, "\"\\u0008\\u000c\\u0001\\u001f\"");
	json_string_is("x\0y", 3, "\"x\\u0000y\""); /* the length, not a NUL, ends s */
	json_string_is("ab", 1, "\"a\"");
	/* UTF-8 and DEL pass through as they are */
	json_string_is("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\x7f", 15,
		       "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\x7f\"");
	/* every control byte, between plain runs */
	char in[3 * 32], want[8 * 32 + 3];
	size_t n = 0, w = 0;
	want[w++] = '"';
	for (int c = 0; c < 0x20; c++) {
		in[n++] = 'a';
		in[n++] = (char)c;
		in[n++] = 'z';
		const char *esc = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
		char u[7];
		if (!esc) {
			snprintf(u, sizeof(u), "\\u%04x", c);
			esc = u;
		}
		w += (size_t)snprintf(want + w, sizeof(want) - w, "a%sz", esc);
	}
	want[w++] = '"';
	want[w] = 0;
	json_string_is(in, n, want);
}

static void json_string_long_run(void **state)
{
	/* 100 KB with nothing to escape, then one quote: grows the buffer past its first size */
	size_t n = 100 * 1024;
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, 'k', n);
	s[n] = '"';
	struct dg_buf b;
	dg_buf_init(&b);
	assert_int_equal(dg_buf_append_json_string(&b, s, n + 1), 0);
	assert_int_equal(b.len, n + 4);
	assert_int_equal(b.data[0], '"');
	assert_memory_equal(b.data + 1, s, n);
	assert_memory_equal(b.data + 1 + n, "\\\"\"", 4); /* with the NUL */
	/* a string of nothing but escapes, appended after it */
	memset(s, '\x02', 4096);
	assert_int_equal(dg_buf_append_json_string(&b, s, 4096), 0);
	assert_int_equal(b.len, n + 4 + 2 + 6 * 4096);
	assert_memory_equal(b.data + n + 4, "\"\\u0002\\u0002", 13);
	assert_int_equal(b.data[b.len - 1], '"');
	assert_int_equal(b.data[b.len], 0);
	dg_buf_fini(&b);
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(duration_parse_go_forms), cmocka_unit_test(duration_format_like_go),
		cmocka_unit_test(base64_round_trip),	   cmocka_unit_test(map_sorted_and_case_rules),
		cmocka_unit_test(omap_matches_sorted_array),
		cmocka_unit_test(parse_numbers_and_bools),
		cmocka_unit_test(json_string_escapes),
		cmocka_unit_test(json_string_long_run),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
