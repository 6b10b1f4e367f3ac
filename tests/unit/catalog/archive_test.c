/* Unit tests for catalog/archive.c, the snapshot archive codec: a round trip, the layout Consul's
 * tools expect (gzip, ustar, three files), and refusals with their reasons: truncation, flipped
 * bits, wrong hashes, unknown or missing files, a Consul meta.json, sizes that disagree, limits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "catalog/archive.h"
#include "common/common.h"

static const char state[] = "{\"Index\":42,\"Nodes\":[],\"KV\":[]}";

static uint8_t *encode(size_t *len)
{
	uint8_t *out = NULL;
	assert_int_equal(
	    dg_cat_archive_encode(state, strlen(state), 42, "dc1", 1700000000123LL, &out, len), 0);
	return out;
}

/* Inflates a gzip buffer (test helper; the codec's own gunzip is what is under test). */
static uint8_t *gunzip(const uint8_t *in, size_t len, size_t *out_len)
{
	size_t cap = 1 << 20;
	uint8_t *out = malloc(cap);
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = (Bytef *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	*out_len = cap - z.avail_out;
	inflateEnd(&z);
	return out;
}

/* ---- a tar builder of the tests' own, to make archives the encoder never would ---- */

struct tar {
	uint8_t buf[1 << 16];
	size_t len;
};

static void tar_add(struct tar *t, const char *name, const void *data, size_t len, char type)
{
	uint8_t *h = t->buf + t->len;
	memset(h, 0, 512);
	memcpy(h, name, strlen(name));
	snprintf((char *)h + 100, 8, "%07o", 0600);
	snprintf((char *)h + 108, 8, "%07o", 0);
	snprintf((char *)h + 116, 8, "%07o", 0);
	snprintf((char *)h + 124, 12, "%011zo", len);
	snprintf((char *)h + 136, 12, "%011o", 0);
	h[156] = (uint8_t)type;
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	unsigned sum = 0;
	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	t->len += 512;
	memcpy(t->buf + t->len, data, len);
	t->len += (len + 511) / 512 * 512;
}

static void tar_end(struct tar *t)
{
	memset(t->buf + t->len, 0, 1024);
	t->len += 1024;
}

static void hex_sha(const void *data, size_t len, char out[65])
{
	uint8_t md[32];
	unsigned n;
	EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A tar of meta, st and a SHA256SUMS of both (or sums as given). */
static void tar_build(struct tar *t, const char *meta, const char *st, const char *sums)
{
	char line[2][200], text[400];
	char a[65], b[65];
	memset(t, 0, sizeof(*t));
	hex_sha(meta, strlen(meta), a);
	hex_sha(st, strlen(st), b);
	snprintf(line[0], sizeof(line[0]), "%s  meta.json\n", a);
	snprintf(line[1], sizeof(line[1]), "%s  state.bin\n", b);
	snprintf(text, sizeof(text), "%s%s", line[0], line[1]);
	tar_add(t, "meta.json", meta, strlen(meta), '0');
	tar_add(t, "state.bin", st, strlen(st), '0');
	if (sums)
		tar_add(t, "SHA256SUMS", sums, strlen(sums), '0');
	else
		tar_add(t, "SHA256SUMS", text, strlen(text), '0');
}

static char *meta_for(const char *st)
{
	static char m[256];
	snprintf(m, sizeof(m),
		 "{\"Version\":1,\"Format\":\"dcgate-catalog\",\"ID\":\"7-1\",\"Index\":7,"
		 "\"Size\":%zu}\n",
		 strlen(st));
	return m;
}

/* decode_tar must refuse t with rv and a reason containing want. */
static void expect_refused(struct tar *t, int rv, const char *want)
{
	char why[256] = "", *st = (char *)1;
	size_t n;
	assert_int_equal(dg_cat_archive_decode_tar(t->buf, t->len, NULL, &st, &n, why, sizeof(why)),
			 rv);
	assert_null(st);
	if (!strstr(why, want))
		fail_msg("reason \"%s\" does not contain \"%s\"", why, want);
}

/* ---- tests ---- */

static void round_trip(void **unused)
{
	size_t len, n;
	uint8_t *a = encode(&len);
	struct dg_cat_archive_meta m;
	char why[256], *st;
	assert_int_equal(dg_cat_archive_decode(a, len, &m, &st, &n, why, sizeof(why)), 0);
	assert_int_equal(n, strlen(state));
	assert_string_equal(st, state);
	assert_int_equal(m.version, 1);
	assert_int_equal(m.index, 42);
	assert_int_equal(m.size, strlen(state));
	assert_string_equal(m.id, "42-1700000000123");
	assert_string_equal(m.dc, "dc1");
	assert_string_equal(m.created, "2023-11-14T22:13:20Z");
	free(st);
	free(a);
}

/* gzip, then ustar with meta.json, state.bin, SHA256SUMS in that order, as Consul lays it out. */
static void layout_is_consuls(void **unused)
{
	size_t len, tl;
	uint8_t *a = encode(&len);
	assert_int_equal(a[0], 0x1f);
	assert_int_equal(a[1], 0x8b);
	uint8_t *t = gunzip(a, len, &tl);
	assert_int_equal(tl % 512, 0);
	assert_string_equal((char *)t, "meta.json");
	assert_memory_equal(t + 257,
			    "ustar\0"
			    "00",
			    8);
	size_t meta_size = strtoul((char *)t + 124, NULL, 8);
	size_t off = 512 + (meta_size + 511) / 512 * 512;
	assert_string_equal((char *)t + off, "state.bin");
	assert_int_equal(strtoul((char *)t + off + 124, NULL, 8), strlen(state));
	assert_memory_equal(t + off + 512, state, strlen(state));
	off += 512 + (strlen(state) + 511) / 512 * 512;
	assert_string_equal((char *)t + off, "SHA256SUMS");
	char sha[65];
	hex_sha(state, strlen(state), sha);
	assert_non_null(strstr((char *)t + off + 512, sha));
	/* the same tar, read without gzip */
	char *st;
	size_t n;
	assert_int_equal(dg_cat_archive_decode_tar(t, tl, NULL, &st, &n, NULL, 0), 0);
	assert_string_equal(st, state);
	free(st);
	free(t);
	free(a);
}

static void truncated_everywhere(void **unused)
{
	size_t len, n;
	uint8_t *a = encode(&len);
	for (size_t cut = 0; cut < len; cut++) {
		char why[256] = "", *st;
		int rv = dg_cat_archive_decode(a, cut, NULL, &st, &n, why, sizeof(why));
		if (rv != DG_EINVAL)
			fail_msg("cut at %zu of %zu: %d", cut, len, rv);
		assert_null(st);
		assert_true(strlen(why) > 0);
	}
	free(a);
}

/* Every single flipped bit is refused or changes nothing that is read: the few gzip header bits
 * no checksum covers (FTEXT, MTIME, XFL, OS), or a bit of a Huffman table that only describes
 * codes the stream never uses. What decodes is then exactly the archive that was written. */
static void bit_flips(void **unused)
{
	size_t len, n;
	uint8_t *a = encode(&len);
	size_t accepted = 0;
	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			char *st;
			struct dg_cat_archive_meta m;
			a[i] ^= (uint8_t)(1 << bit);
			int rv = dg_cat_archive_decode(a, len, &m, &st, &n, NULL, 0);
			a[i] ^= (uint8_t)(1 << bit);
			if (rv == 0) {
				accepted++;
				assert_string_equal(st, state);
				assert_int_equal(m.index, 42);
				assert_string_equal(m.id, "42-1700000000123");
				free(st);
			} else {
				assert_int_equal(rv, DG_EINVAL);
			}
		}
	}
	assert_true(accepted < len); /* most of the 8 * len flips are refused */
	free(a);
}

static void trailing_garbage(void **unused)
{
	size_t len, n;
	uint8_t *a = encode(&len);
	uint8_t *b = malloc(len + 3);
	memcpy(b, a, len);
	memcpy(b + len, "xyz", 3);
	char why[256], *st;
	assert_int_equal(dg_cat_archive_decode(b, len + 3, NULL, &st, &n, why, sizeof(why)),
			 DG_EINVAL);
	assert_non_null(strstr(why, "after the end of the gzip stream"));
	assert_int_equal(
	    dg_cat_archive_decode((const uint8_t *)"hello", 5, NULL, &st, &n, why, sizeof(why)),
	    DG_EINVAL);
	assert_string_equal(why, "failed to decompress snapshot: gzip: invalid header");
	free(b);
	free(a);
}

static void tar_refusals(void **unused)
{
	struct tar t;
	const char *st = "{\"Index\":7}";
	/* a well-formed one first */
	tar_build(&t, meta_for(st), st, NULL);
	tar_end(&t);
	char *out;
	size_t n;
	struct dg_cat_archive_meta m;
	assert_int_equal(dg_cat_archive_decode_tar(t.buf, t.len, &m, &out, &n, NULL, 0), 0);
	assert_string_equal(out, st);
	assert_int_equal(m.index, 7);
	free(out);
	/* and one without the end blocks: all files are there and verified */
	tar_build(&t, meta_for(st), st, NULL);
	assert_int_equal(dg_cat_archive_decode_tar(t.buf, t.len, &m, &out, &n, NULL, 0), 0);
	free(out);

	/* state.bin changed after SHA256SUMS was made */
	char other[] = "{\"Index\":8}";
	char sums[400], a[65], b[65];
	hex_sha(meta_for(other), strlen(meta_for(other)), a);
	hex_sha(st, strlen(st), b);
	snprintf(sums, sizeof(sums), "%s  meta.json\n%s  state.bin\n", a, b);
	tar_build(&t, meta_for(other), other, sums);
	expect_refused(&t, DG_EINVAL, "hash check failed for \"state.bin\"");

	/* a file SHA256SUMS does not list */
	snprintf(sums, sizeof(sums), "%s  meta.json\n", a);
	tar_build(&t, meta_for(other), other, sums);
	expect_refused(&t, DG_EINVAL, "list missing hash for \"state.bin\"");

	/* a malformed sums line */
	tar_build(&t, meta_for(st), st, "abc  meta.json\n");
	expect_refused(&t, DG_EINVAL, "malformed SHA256SUMS line");

	/* an extra file */
	tar_build(&t, meta_for(st), st, NULL);
	tar_add(&t, "evil.sh", "x", 1, '0');
	expect_refused(&t, DG_EINVAL, "unexpected file \"evil.sh\" in snapshot");

	/* a symlink named like one of ours */
	memset(&t, 0, sizeof(t));
	tar_add(&t, "state.bin", "", 0, '2');
	expect_refused(&t, DG_EINVAL, "only regular files");

	/* a file twice */
	tar_build(&t, meta_for(st), st, NULL);
	tar_add(&t, "state.bin", st, strlen(st), '0');
	expect_refused(&t, DG_EINVAL, "file \"state.bin\" twice");

	/* a missing file */
	memset(&t, 0, sizeof(t));
	tar_add(&t, "meta.json", meta_for(st), strlen(meta_for(st)), '0');
	tar_end(&t);
	expect_refused(&t, DG_EINVAL, "file missing for \"state.bin\"");

	/* a broken header checksum */
	tar_build(&t, meta_for(st), st, NULL);
	t.buf[0] = 'M';
	expect_refused(&t, DG_EINVAL, "checksum");

	/* data after the end blocks */
	tar_build(&t, meta_for(st), st, NULL);
	tar_end(&t);
	t.buf[t.len - 1] = 1;
	expect_refused(&t, DG_EINVAL, "data after the end");

	/* a size past the end of the data */
	tar_build(&t, meta_for(st), st, NULL);
	t.len -= 512;
	expect_refused(&t, DG_EINVAL, "unexpected EOF");
}

static void meta_refusals(void **unused)
{
	struct tar t;
	const char *st = "{}";
	/* what Consul writes: raft's SnapshotMeta */
	tar_build(&t,
		  "{\"Version\":1,\"ID\":\"2-11-1602262512378\",\"Index\":11,\"Term\":2,"
		  "\"Peers\":\"\",\"Configuration\":{},\"ConfigurationIndex\":1,\"Size\":2}\n",
		  st, NULL);
	expect_refused(&t, DG_EINVAL, "a Consul snapshot cannot be restored into dcgate");

	tar_build(&t, "{\"Version\":2,\"Format\":\"dcgate-catalog\",\"Index\":1,\"Size\":2}", st,
		  NULL);
	expect_refused(&t, DG_EINVAL, "unsupported snapshot version");

	tar_build(&t, "{\"Version\":1,\"Format\":\"dcgate-catalog\",\"Index\":1,\"Size\":3}", st,
		  NULL);
	expect_refused(&t, DG_EINVAL, "state.bin is 2 bytes but meta.json says 3");

	tar_build(&t, "{\"Version\":1,\"Format\":\"dcgate-catalog\",\"Index\":-1,\"Size\":2}", st,
		  NULL);
	expect_refused(&t, DG_EINVAL, "Index and Size must be numbers");

	tar_build(&t, "[1,2", st, NULL);
	expect_refused(&t, DG_EINVAL, "failed to decode snapshot metadata");
}

static void limits(void **unused)
{
	uint8_t *out = NULL;
	size_t len;
	char *st;
	char why[256];
	assert_int_equal(dg_cat_archive_encode(state, (size_t)DG_CAT_ARCHIVE_MAX_STATE + 1, 1,
					       "dc1", 0, &out, &len),
			 DG_ETOOBIG);
	assert_null(out);
	/* a size field larger than state.bin may be, before any data is read */
	struct tar t;
	memset(&t, 0, sizeof(t));
	tar_add(&t, "state.bin", "", 0, '0');
	snprintf((char *)t.buf + 124, 12, "%011o", DG_CAT_ARCHIVE_MAX_STATE + 1);
	unsigned sum = 0;
	memset(t.buf + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += t.buf[i];
	snprintf((char *)t.buf + 148, 8, "%06o", sum);
	expect_refused(&t, DG_ETOOBIG, "more than");
	/* a gzip bomb: zeros that inflate past every limit */
	size_t zlen = (size_t)DG_CAT_ARCHIVE_MAX_STATE + (2u << 20);
	uint8_t *zeros = calloc(1, zlen);
	uLongf clen = compressBound(zlen) + 64;
	uint8_t *gz = malloc(clen);
	z_stream z;
	memset(&z, 0, sizeof(z));
	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = zeros;
	z.avail_in = (uInt)zlen;
	z.next_out = gz;
	z.avail_out = (uInt)clen;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	size_t gzlen = clen - z.avail_out;
	deflateEnd(&z);
	free(zeros);
	assert_int_equal(dg_cat_archive_decode(gz, gzlen, NULL, &st, &len, why, sizeof(why)),
			 DG_ETOOBIG);
	assert_non_null(strstr(why, "uncompressed"));
	free(gz);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip),	    cmocka_unit_test(layout_is_consuls),
	    cmocka_unit_test(truncated_everywhere), cmocka_unit_test(bit_flips),
	    cmocka_unit_test(trailing_garbage),	    cmocka_unit_test(tar_refusals),
	    cmocka_unit_test(meta_refusals),	    cmocka_unit_test(limits),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
