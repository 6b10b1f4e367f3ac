/* Fuzz target: the SP message boundary scanner of tls/frames.h. The input picks the call sizes
 * and the stream; the stream is fed the way tls/engine.c feeds it, and every result is checked
 * against an independent reading of the whole stream: a call never takes more than offered,
 * always makes progress, ends exactly at the header's and each message's end, and takes it all.
 *
 * Input: byte 0 flags, byte 1 the number of call sizes (1..16), that many call-size bytes, then
 * the payload. Flag 1: the payload is the stream itself. Otherwise the stream is built from it
 * (an SP header, then messages, each from a length byte, or two if the first has its top bit set,
 * and that many payload bytes, the last maybe cut short), so that random inputs reach many
 * message ends. Flag 2 appends a message announcing 2^40 bytes, fed in part. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tls/frames.h"

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "fuzz_sp_frames: %s failed at line %d\n", #cond,           \
				__LINE__);                                                         \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

static const uint8_t magic[4] = {0x00, 'S', 'P', 0x00};

/* A call size byte: 0 is a call with no bytes, 255 everything left, 200..254 a large piece. */
static size_t call_size(uint8_t v)
{
	if (v >= 200 && v < 255)
		return (size_t)(v - 199) * 300;
	return v == 255 ? SIZE_MAX : v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* Builds the stream for flags without bit 1 into a new buffer (caller frees); *len its size. */
static uint8_t *build(const uint8_t *p, size_t n, bool huge, size_t *len)
{
	/* each payload byte yields at most 9 stream bytes (a 1-byte length of an empty message) */
	size_t cap = DG_SP_HEADER_LEN + 9 * n + 8 + 16;
	uint8_t *s = malloc(cap);
	size_t at = 0, i = 0;
	if (!s)
		return NULL;
	const uint8_t hdr[DG_SP_HEADER_LEN] = {0x00, 'S', 'P', 0x00, 0x00, 0x31, 0x00, 0x00};
	memcpy(s, hdr, sizeof(hdr));
	at = sizeof(hdr);
	while (i < n) {
		size_t m = p[i++];
		if (m & 0x80) {
			m = (m & 0x7f) << 8;
			if (i < n)
				m |= p[i++];
		}
		put_be64(s + at, m);
		at += 8;
		size_t have = n - i < m ? n - i : m; /* the last message may be cut short */
		memcpy(s + at, p + i, have);
		at += have;
		i += have;
	}
	if (huge) {
		put_be64(s + at, (uint64_t)1 << 40);
		at += 8;
		memcpy(s + at, "partial body", 12);
		at += 12;
	}
	*len = at;
	return s;
}

/* The offsets at which the header and each message of a framed stream s[0..len) end, as far as
 * they are within len, into out (room for len / 8 + 1); returns how many. */
static size_t ref_ends(const uint8_t *s, size_t len, size_t *out)
{
	size_t k = 0, at = DG_SP_HEADER_LEN;
	if (len < at)
		return 0;
	out[k++] = at;
	while (len - at >= 8) {
		uint64_t m = 0;
		for (int i = 0; i < 8; i++)
			m = (m << 8) | s[at + i];
		if (m > len - at - 8)
			break;
		at += 8 + (size_t)m;
		out[k++] = at;
	}
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	uint8_t flags = data[0];
	size_t nsizes = 1 + data[1] % 16;
	if (size < 2 + nsizes)
		return 0;
	const uint8_t *sizes = data + 2;
	const uint8_t *payload = data + 2 + nsizes;
	size_t plen = size - 2 - nsizes;

	uint8_t *built = NULL;
	const uint8_t *s = payload;
	size_t len = plen;
	if (!(flags & 1)) {
		if (!(built = build(payload, plen, flags & 2, &len)))
			return 0;
		s = built;
	}
	size_t *ends_at = malloc((len / 8 + 1) * sizeof(*ends_at));
	if (!ends_at) {
		free(built);
		return 0;
	}
	size_t nends = ref_ends(s, len, ends_at);

	struct dg_sp_frames f;
	memset(&f, 0, sizeof(f));
	size_t pos = 0, next = 0, sum = 0, ci = 0, idle = 0;
	int raw = -1; /* decided by the first call with bytes: at least 4 of them and the magic */
	while (pos < len) {
		size_t c = call_size(sizes[ci++ % nsizes]);
		if (c > len - pos)
			c = len - pos;
		bool ends = true;
		if (c == 0) {
			CHECK(dg_sp_frames_scan(&f, s + pos, 0, &ends) == 0);
			CHECK(!ends);
			if (++idle > nsizes)
				c = 1; /* every size byte is 0: go on one byte at a time */
			else
				continue;
		}
		idle = 0;
		if (raw < 0)
			raw = !(c >= sizeof(magic) && memcmp(s, magic, sizeof(magic)) == 0);
		/* as the engine does: bytes not taken are offered again in the next call */
		while (c > 0) {
			ends = !ends; /* the scanner must set it either way */
			size_t r = dg_sp_frames_scan(&f, s + pos, c, &ends);
			CHECK(r <= c);
			CHECK(r > 0);
			if (raw) {
				CHECK(f.mode == DG_SP_RAW);
				CHECK(r == c && ends);
			} else {
				CHECK(f.mode == DG_SP_FRAMED);
				if (next < nends && ends_at[next] - pos <= c) {
					CHECK(r == ends_at[next] - pos);
					CHECK(ends);
					next++;
				} else {
					CHECK(r == c);
					CHECK(!ends);
				}
			}
			pos += r;
			sum += r;
			c -= r;
		}
	}
	CHECK(sum == len);
	CHECK(raw != 0 || next == nends);
	free(ends_at);
	free(built);
	return 0;
}
