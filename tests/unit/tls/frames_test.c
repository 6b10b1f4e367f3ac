/* Unit tests for tls/frames.c, the SP message boundary scanner: fixed splits of known streams
 * (whole, byte by byte, split header and length prefix, zero-length and large messages), the raw
 * fallback, and random splits of random streams checked against a small reference model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <stdint.h>
#include <string.h>

#include "tls/frames.h"

static const uint8_t sp_header[DG_SP_HEADER_LEN] = {0x00, 'S', 'P', 0x00, 0x00, 0x31, 0x00, 0x00};

/* ---- building streams ---- */

struct stream {
	uint8_t *b;
	size_t len, cap;
};

static void stream_put(struct stream *s, const void *p, size_t n)
{
	if (s->len + n > s->cap) {
		size_t cap = s->cap ? s->cap : 64;
		while (cap < s->len + n)
			cap *= 2;
		s->b = realloc(s->b, cap);
		assert_non_null(s->b);
		s->cap = cap;
	}
	if (p && n > 0) /* p NULL: make room only */
		memcpy(s->b + s->len, p, n);
	s->len += n;
}

static void stream_prefix(struct stream *s, uint64_t len)
{
	uint8_t p[8];
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(len >> (56 - 8 * i));
	stream_put(s, p, sizeof(p));
}

/* Appends a message of len bytes whose body is a pattern (so a body may look like anything). */
static void stream_msg(struct stream *s, size_t len)
{
	stream_prefix(s, len);
	size_t at = s->len;
	stream_put(s, NULL, len);
	for (size_t i = 0; i < len; i++)
		s->b[at + i] = (uint8_t)(i * 7 + len);
}

/* ---- the reference model ---- */

/* Offsets (from the start of a framed stream s[0..len)) at which the header and each message end,
 * in order, as far as they are within len; returns how many. An end past len is not listed. */
static size_t ref_ends(const uint8_t *s, size_t len, size_t *out, size_t max)
{
	size_t k = 0, at = DG_SP_HEADER_LEN;
	if (at > len)
		return 0;
	out[k++] = at;
	while (len - at >= 8) {
		uint64_t m = 0;
		for (int i = 0; i < 8; i++)
			m = (m << 8) | s[at + i];
		if (m > len - at - 8)
			break;
		at += 8 + (size_t)m;
		assert_true(k < max);
		out[k++] = at;
	}
	return k;
}

/* Feeds s[0..len) in the call sizes chunks[0..nchunks) (the last one repeats until the stream is
 * used up; a 0 is a call with no bytes) the way tls/engine.c does: a call that returns less than
 * it was offered is followed by a call with the rest. Each result must be what the model says:
 * in a framed stream the call ends at the next end if that lies within the bytes offered, else
 * takes them all with *ends false; in a raw stream each call takes all with *ends true. */
static void check_split(const uint8_t *s, size_t len, const size_t *chunks, size_t nchunks)
{
	size_t max = len / 8 + 2;
	size_t *ends_at = malloc(max * sizeof(*ends_at));
	assert_non_null(ends_at);
	size_t nends = ref_ends(s, len, ends_at, max);

	struct dg_sp_frames f;
	memset(&f, 0, sizeof(f));
	size_t pos = 0, next = 0, ci = 0, calls = 0;
	int raw = -1; /* decided by the first call with bytes */
	while (pos < len) {
		size_t c = chunks[ci < nchunks ? ci : nchunks - 1];
		ci++;
		if (c > len - pos)
			c = len - pos;
		bool ends = true;
		if (c == 0) {
			assert_int_equal(dg_sp_frames_scan(&f, s + pos, 0, &ends), 0);
			assert_false(ends);
			/* only the last chunk size may be 0 if it repeats: avoid spinning */
			assert_true(ci < nchunks);
			continue;
		}
		if (raw < 0)
			raw = !(c >= 4 && memcmp(s, sp_header, 4) == 0);
		while (c > 0) {
			size_t r = dg_sp_frames_scan(&f, s + pos, c, &ends);
			calls++;
			if (raw) {
				assert_int_equal(f.mode, DG_SP_RAW);
				assert_int_equal(r, c);
				assert_true(ends);
			} else {
				assert_int_equal(f.mode, DG_SP_FRAMED);
				if (next < nends && ends_at[next] - pos <= c) {
					assert_int_equal(r, ends_at[next] - pos);
					assert_true(ends);
					next++;
				} else {
					assert_int_equal(r, c);
					assert_false(ends);
				}
			}
			pos += r;
			c -= r;
		}
	}
	assert_int_equal(pos, len);
	if (raw == 0)
		assert_int_equal(next, nends); /* every end was reported */
	free(ends_at);
}

/* One call per chunk size, each offered exactly that many bytes; returns what each returned in
 * got[] and the ends flags in ends[] (as 0/1), for explicit expectations. */
static void scan_each(struct dg_sp_frames *f, const uint8_t *s, const size_t *chunks, size_t n,
		      size_t *got, int *ends)
{
	size_t pos = 0;
	for (size_t i = 0; i < n; i++) {
		bool e = true;
		got[i] = dg_sp_frames_scan(f, s + pos, chunks[i], &e);
		ends[i] = e;
		pos += got[i];
	}
}

/* ---- fixed cases ---- */

static void zero_bytes_returns_zero(void **state)
{
	struct dg_sp_frames f;
	bool ends = true;
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, sp_header, 0, &ends), 0);
	assert_false(ends);
	assert_int_equal(f.mode, DG_SP_UNKNOWN); /* an empty call decides nothing */

	/* then framed: 0 still returns 0, also in mid-header, mid-prefix and mid-body */
	struct stream s = {0};
	stream_put(&s, sp_header, sizeof(sp_header));
	stream_msg(&s, 10);
	size_t steps[] = {4, 0, 4, 0, 3, 0, 5, 0, 2, 0, 8};
	size_t pos = 0;
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		ends = true;
		size_t r = dg_sp_frames_scan(&f, s.b + pos, steps[i], &ends);
		assert_int_equal(r, steps[i]);
		if (steps[i] == 0)
			assert_false(ends);
		pos += r;
	}
	assert_int_equal(pos, s.len);
	assert_true(ends); /* the last call ended the message */
	free(s.b);

	/* and raw */
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, (const uint8_t *)"GET ", 4, &ends), 4);
	assert_true(ends);
	assert_int_equal(dg_sp_frames_scan(&f, (const uint8_t *)"x", 0, &ends), 0);
	assert_false(ends);
}

static void not_sp_is_raw(void **state)
{
	struct dg_sp_frames f;
	bool ends;
	const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, (const uint8_t *)http, strlen(http), &ends),
			 strlen(http));
	assert_true(ends);
	assert_int_equal(f.mode, DG_SP_RAW);
	/* later writes are units of their own, even ones that look like SP */
	uint8_t later[40];
	memcpy(later, sp_header, sizeof(sp_header));
	memset(later + 8, 0, sizeof(later) - 8);
	for (size_t n = 1; n <= sizeof(later); n++) {
		ends = false;
		assert_int_equal(dg_sp_frames_scan(&f, later, n, &ends), n);
		assert_true(ends);
	}

	/* three of the four magic bytes right, in each position */
	for (int i = 0; i < 4; i++) {
		uint8_t h[DG_SP_HEADER_LEN];
		memcpy(h, sp_header, sizeof(h));
		h[i] ^= 0x20;
		memset(&f, 0, sizeof(f));
		assert_int_equal(dg_sp_frames_scan(&f, h, sizeof(h), &ends), sizeof(h));
		assert_true(ends);
		assert_int_equal(f.mode, DG_SP_RAW);
	}
}

static void short_first_call_is_raw(void **state)
{
	for (size_t n = 1; n < 4; n++) {
		struct dg_sp_frames f;
		bool ends = false;
		memset(&f, 0, sizeof(f));
		assert_int_equal(dg_sp_frames_scan(&f, sp_header, n, &ends), n);
		assert_true(ends);
		assert_int_equal(f.mode, DG_SP_RAW);
		ends = false;
		assert_int_equal(dg_sp_frames_scan(&f, sp_header + n, sizeof(sp_header) - n, &ends),
				 sizeof(sp_header) - n);
		assert_true(ends);
	}
}

static void header_alone_and_split(void **state)
{
	struct dg_sp_frames f;
	bool ends;
	/* whole header: one unit */
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, sp_header, 8, &ends), 8);
	assert_true(ends);
	assert_int_equal(f.mode, DG_SP_FRAMED);

	/* header split after byte k (k >= 4 so the first call shows the magic) */
	for (size_t k = 4; k < 8; k++) {
		memset(&f, 0, sizeof(f));
		assert_int_equal(dg_sp_frames_scan(&f, sp_header, k, &ends), k);
		assert_false(ends);
		assert_int_equal(dg_sp_frames_scan(&f, sp_header + k, 8 - k, &ends), 8 - k);
		assert_true(ends);
	}

	/* header then byte by byte from byte 4 */
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, sp_header, 4, &ends), 4);
	assert_false(ends);
	for (size_t i = 4; i < 8; i++) {
		assert_int_equal(dg_sp_frames_scan(&f, sp_header + i, 1, &ends), 1);
		assert_int_equal(ends, i == 7);
	}

	/* header with a message behind it in the same call: the header is a unit of its own */
	struct stream s = {0};
	stream_put(&s, sp_header, sizeof(sp_header));
	stream_msg(&s, 3);
	memset(&f, 0, sizeof(f));
	assert_int_equal(dg_sp_frames_scan(&f, s.b, s.len, &ends), 8);
	assert_true(ends);
	assert_int_equal(dg_sp_frames_scan(&f, s.b + 8, s.len - 8, &ends), 11);
	assert_true(ends);
	free(s.b);
}

/* The stream of most fixed cases: header, then messages of the sizes below. */
static const size_t msg_sizes[] = {0, 1, 16319, 16320, 16321, 0, 0, 5, 16384, 2};
#define N_MSGS (sizeof(msg_sizes) / sizeof(msg_sizes[0]))

static struct stream build_stream(void)
{
	struct stream s = {0};
	stream_put(&s, sp_header, sizeof(sp_header));
	for (size_t i = 0; i < N_MSGS; i++)
		stream_msg(&s, msg_sizes[i]);
	return s;
}

static void whole_stream_at_once(void **state)
{
	struct stream s = build_stream();
	struct dg_sp_frames f;
	bool ends;
	memset(&f, 0, sizeof(f));
	size_t pos = 0;
	/* each call is offered everything left and must stop exactly at the next end */
	assert_int_equal(dg_sp_frames_scan(&f, s.b, s.len, &ends), 8);
	assert_true(ends);
	pos = 8;
	for (size_t i = 0; i < N_MSGS; i++) {
		ends = false;
		assert_int_equal(dg_sp_frames_scan(&f, s.b + pos, s.len - pos, &ends),
				 8 + msg_sizes[i]);
		assert_true(ends);
		pos += 8 + msg_sizes[i];
	}
	assert_int_equal(pos, s.len);

	size_t whole[] = {SIZE_MAX};
	check_split(s.b, s.len, whole, 1);
	free(s.b);
}

static void byte_by_byte(void **state)
{
	struct stream s = build_stream();
	struct dg_sp_frames f;
	bool ends;
	memset(&f, 0, sizeof(f));

	/* the first call must show the magic, so it has 4 bytes */
	assert_int_equal(dg_sp_frames_scan(&f, s.b, 4, &ends), 4);
	assert_false(ends);
	size_t end = 8, m = 0, nends = 0;
	for (size_t pos = 4; pos < s.len; pos++) {
		assert_int_equal(dg_sp_frames_scan(&f, s.b + pos, 1, &ends), 1);
		if (pos + 1 == end) {
			assert_true(ends);
			nends++;
			if (m < N_MSGS)
				end += 8 + msg_sizes[m++];
		} else {
			assert_false(ends);
		}
	}
	assert_int_equal(nends, 1 + N_MSGS);

	size_t split[] = {4, 1};
	check_split(s.b, s.len, split, 2);
	free(s.b);
}

/* A message's 8-byte length prefix split after byte k, for every k, for a message with a body,
 * one without, and a second message right behind the first in the same call. */
static void length_prefix_split_everywhere(void **state)
{
	const size_t bodies[] = {0, 3, 300};
	for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
		struct stream s = {0};
		stream_put(&s, sp_header, sizeof(sp_header));
		stream_msg(&s, bodies[b]);
		stream_msg(&s, 1);
		size_t first = 8 + bodies[b];
		for (size_t k = 0; k <= 8; k++) {
			struct dg_sp_frames f;
			bool ends;
			memset(&f, 0, sizeof(f));
			assert_int_equal(dg_sp_frames_scan(&f, s.b, 8, &ends), 8);
			assert_true(ends);
			size_t pos = 8;
			if (k > 0) {
				assert_int_equal(dg_sp_frames_scan(&f, s.b + pos, k, &ends), k);
				/* a zero-length message ends with its prefix */
				assert_int_equal(ends, k == 8 && bodies[b] == 0);
				pos += k;
			}
			if (pos - 8 < first) {
				/* the rest of the stream in one call: stops at the first message's
				 * end */
				assert_int_equal(
				    dg_sp_frames_scan(&f, s.b + pos, s.len - pos, &ends),
				    8 + first - pos);
				assert_true(ends);
				pos = 8 + first;
			}
			assert_int_equal(dg_sp_frames_scan(&f, s.b + pos, s.len - pos, &ends), 9);
			assert_true(ends);
		}

		/* and the same through the model, with the prefix split at each k */
		for (size_t k = 1; k < 8; k++) {
			size_t split[] = {8, k, SIZE_MAX};
			check_split(s.b, s.len, split, 3);
		}
		free(s.b);
	}

	/* the second message's prefix split at each k, in a call that also ends the first */
	struct stream s = {0};
	stream_put(&s, sp_header, sizeof(sp_header));
	stream_msg(&s, 5);
	stream_msg(&s, 6);
	for (size_t k = 0; k <= 8; k++) {
		struct dg_sp_frames f;
		bool ends;
		memset(&f, 0, sizeof(f));
		assert_int_equal(dg_sp_frames_scan(&f, s.b, 8, &ends), 8);
		size_t n = 13 + k; /* first message and k bytes of the second's prefix */
		assert_int_equal(dg_sp_frames_scan(&f, s.b + 8, n, &ends), 13);
		assert_true(ends);
		if (k > 0) {
			assert_int_equal(dg_sp_frames_scan(&f, s.b + 21, k, &ends), k);
			assert_false(ends);
		}
		assert_int_equal(dg_sp_frames_scan(&f, s.b + 21 + k, 14 - k, &ends), 14 - k);
		assert_true(ends);
	}
	free(s.b);
}

static void zero_length_messages(void **state)
{
	struct stream s = {0};
	stream_put(&s, sp_header, sizeof(sp_header));
	for (int i = 0; i < 5; i++)
		stream_msg(&s, 0);
	struct dg_sp_frames f;
	memset(&f, 0, sizeof(f));
	size_t got[6];
	int ends[6];
	size_t pos = 0;
	/* offered all that is left each time: 8 (header), then 8 per empty message */
	for (size_t i = 0; i < 6; i++) {
		bool e;
		got[i] = dg_sp_frames_scan(&f, s.b + pos, s.len - pos, &e);
		ends[i] = e;
		pos += got[i];
		assert_int_equal(got[i], 8);
		assert_true(ends[i]);
	}
	assert_int_equal(pos, s.len);

	/* two empty messages in one 12-byte call, then the rest */
	size_t c2[] = {8, 12, 20};
	memset(&f, 0, sizeof(f));
	scan_each(&f, s.b, c2, 3, got, ends);
	assert_int_equal(got[0], 8);
	assert_int_equal(got[1], 8);
	assert_true(ends[1]);
	assert_int_equal(got[2], 8);
	assert_true(ends[2]);

	size_t seven[] = {7};
	check_split(s.b, s.len, seven, 1);
	free(s.b);
}

static void large_messages_around_16320(void **state)
{
	struct stream s = build_stream();
	/* offered in pieces of the engine's record room and its neighbours */
	size_t sizes[] = {16319, 16320, 16321, 16384, 8192, 4096, 1000, 9};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t split[] = {sizes[i]};
		check_split(s.b, s.len, split, 1);
		size_t split8[] = {8, sizes[i]};
		check_split(s.b, s.len, split8, 2);
	}
	free(s.b);
}

/* A message of 2^40 bytes, announced and then fed in part: nothing ever ends it. */
static void huge_length_partly_fed(void **state)
{
	const uint64_t huge[] = {(uint64_t)1 << 40, UINT64_MAX};
	for (size_t h = 0; h < 2; h++) {
		struct stream s = {0};
		stream_put(&s, sp_header, sizeof(sp_header));
		stream_msg(&s, 2);
		stream_prefix(&s, huge[h]);
		struct dg_sp_frames f;
		bool ends;
		memset(&f, 0, sizeof(f));
		assert_int_equal(dg_sp_frames_scan(&f, s.b, s.len, &ends), 8);
		assert_int_equal(dg_sp_frames_scan(&f, s.b + 8, s.len - 8, &ends), 10);
		assert_true(ends);
		assert_int_equal(dg_sp_frames_scan(&f, s.b + 18, 5, &ends), 5);
		assert_false(ends);
		assert_int_equal(dg_sp_frames_scan(&f, s.b + 23, 3, &ends), 3);
		assert_false(ends);

		size_t big = 1 << 20;
		uint8_t *body = calloc(1, big);
		assert_non_null(body);
		memcpy(body, sp_header, sizeof(sp_header)); /* a body may hold anything */
		for (int i = 0; i < 64; i++) {
			ends = true;
			assert_int_equal(dg_sp_frames_scan(&f, body, big, &ends), big);
			assert_false(ends);
			ends = true;
			assert_int_equal(dg_sp_frames_scan(&f, body, 1, &ends), 1);
			assert_false(ends);
			assert_int_equal(dg_sp_frames_scan(&f, body, 0, &ends), 0);
			assert_false(ends);
		}
		free(body);

		/* the model says the same for a partial body */
		for (int i = 0; i < 1000; i++) {
			uint8_t c = (uint8_t)i;
			stream_put(&s, &c, 1);
		}
		size_t split[] = {8, 1, 3, 64};
		check_split(s.b, s.len, split, 4);
		free(s.b);
	}
}

/* ---- random splits against the model ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static size_t rnd_msg_len(void)
{
	switch (rnd() % 6) {
	case 0:
		return 0;
	case 1:
		return 1 + rnd() % 8;
	case 2:
		return rnd() % 300;
	case 3:
		return 16319 + rnd() % 3;
	case 4:
		return rnd() % 40000;
	default:
		return rnd() % 20;
	}
}

static size_t rnd_chunk(void)
{
	switch (rnd() % 5) {
	case 0:
		return 1 + rnd() % 8;
	case 1:
		return 1 + rnd() % 64;
	case 2:
		return 16319 + rnd() % 3;
	case 3:
		return 1 + rnd() % 50000;
	default:
		return rnd() % 12; /* may be 0: a call with no bytes */
	}
}

static void random_splits_match_model(void **state)
{
	rng = 0x9e3779b97f4a7c15ULL; /* fixed: every run checks the same 300 cases */
	for (int iter = 0; iter < 300; iter++) {
		struct stream s = {0};
		stream_put(&s, sp_header, sizeof(sp_header));
		size_t nmsgs = rnd() % 12;
		for (size_t i = 0; i < nmsgs; i++)
			stream_msg(&s, rnd_msg_len());
		switch (rnd() % 4) {
		case 0: /* cut the stream anywhere: a message fed in part */
			s.len = rnd() % (s.len + 1);
			break;
		case 1: /* a huge message announced, some of it fed */
			stream_prefix(&s, ((uint64_t)1 << 40) + rnd() % 1000);
			stream_msg(&s, rnd() % 100);
			break;
		default:
			break;
		}
		if (s.len == 0) {
			free(s.b);
			continue;
		}

		size_t chunks[64];
		size_t nchunks = 1 + rnd() % 63;
		for (size_t i = 0; i < nchunks; i++)
			chunks[i] = rnd_chunk();
		if (rnd() % 2 && chunks[0] < 4)
			chunks[0] = 4 + rnd() % 8; /* mostly framed; sometimes a short first call */
		if (chunks[nchunks - 1] == 0)
			chunks[nchunks - 1] = 1; /* the repeating size must make progress */
		check_split(s.b, s.len, chunks, nchunks);

		/* the same bytes as some other protocol: raw whatever the split */
		if (s.len < 2)
			stream_put(&s, "?", 1);
		s.b[1] = 'X';
		check_split(s.b, s.len, chunks, nchunks);
		free(s.b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(zero_bytes_returns_zero),
	    cmocka_unit_test(not_sp_is_raw),
	    cmocka_unit_test(short_first_call_is_raw),
	    cmocka_unit_test(header_alone_and_split),
	    cmocka_unit_test(whole_stream_at_once),
	    cmocka_unit_test(byte_by_byte),
	    cmocka_unit_test(length_prefix_split_everywhere),
	    cmocka_unit_test(zero_length_messages),
	    cmocka_unit_test(large_messages_around_16320),
	    cmocka_unit_test(huge_length_partly_fed),
	    cmocka_unit_test(random_splits_match_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
