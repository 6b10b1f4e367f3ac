/* The snapshot archive codec (archive.h): a POSIX ustar archive of three regular files, gzip'd.
 * The encoder writes what Go's archive/tar and compress/gzip would for the same files; the
 * decoder also reads what GNU tar makes of them (`tar czf x.snap meta.json state.bin SHA256SUMS`),
 * so an archive can be unpacked, looked at and packed again by hand.
 * Everything is in memory and bounded by the limits in archive.h. */
#include "catalog/archive.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "common/common.h"

#define BLOCK	512
#define SHA_LEN 32
/* the uncompressed tar: state.bin, meta.json, SHA256SUMS, their headers and padding, the end
 * blocks, and room for GNU tar's padding of the last record (10 KiB) */
#define MAX_TAR                                                                                    \
	(DG_CAT_ARCHIVE_MAX_STATE + DG_CAT_ARCHIVE_MAX_META + DG_CAT_ARCHIVE_MAX_SUMS + 64 * 1024)

/* The three files of an archive, in the order the encoder writes them. */
enum { F_META, F_STATE, F_SUMS, F_COUNT };
static const char *const file_names[F_COUNT] = {"meta.json", "state.bin", "SHA256SUMS"};
static const size_t file_max[F_COUNT] = {DG_CAT_ARCHIVE_MAX_META, DG_CAT_ARCHIVE_MAX_STATE,
					 DG_CAT_ARCHIVE_MAX_SUMS};

struct file {
	const uint8_t *data; /* into the tar; NULL until seen */
	size_t len;
};

static int fail(char *why, size_t len, int rv, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *why, size_t len, int rv, const char *fmt, ...)
{
	if (why && len) {
		va_list ap;
		va_start(ap, fmt);
		if (vsnprintf(why, len, fmt, ap) < 0)
			why[0] = 0;
		va_end(ap);
	}
	return rv;
}

static int sha256(const void *data, size_t len, uint8_t out[SHA_LEN])
{
	unsigned n = 0;
	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 || n != SHA_LEN)
		return DG_ENOMEM;
	return 0;
}

/* ---- tar headers (POSIX.1-1988 ustar) ---- */

/* Field offsets and sizes of a ustar header. */
#define H_NAME	  0
#define H_MODE	  100
#define H_UID	  108
#define H_GID	  116
#define H_SIZE	  124
#define H_MTIME	  136
#define H_CHKSUM  148
#define H_TYPE	  156
#define H_MAGIC	  257
#define H_VERSION 263
#define H_PREFIX  345

static unsigned header_sum(const uint8_t *h)
{
	unsigned sum = 0;
	for (size_t i = 0; i < BLOCK; i++)
		sum += (i >= H_CHKSUM && i < H_CHKSUM + 8) ? ' ' : h[i];
	return sum;
}

/* Writes v in octal into a field of width bytes: width-1 digits and a NUL. */
static int put_octal(uint8_t *field, size_t width, uint64_t v)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof(tmp), "%0*llo", (int)width - 1, (unsigned long long)v);
	if (n < 0 || (size_t)n != width - 1)
		return DG_ETOOBIG;
	memcpy(field, tmp, width); /* the digits and snprintf's NUL */
	return 0;
}

static int put_header(uint8_t *h, const char *name, uint64_t size, uint64_t mtime)
{
	int rv;
	memset(h, 0, BLOCK);
	memcpy(h + H_NAME, name, strlen(name)); /* short constant names */
	if ((rv = put_octal(h + H_MODE, 8, 0600)) != 0 || (rv = put_octal(h + H_UID, 8, 0)) != 0 ||
	    (rv = put_octal(h + H_GID, 8, 0)) != 0 || (rv = put_octal(h + H_SIZE, 12, size)) != 0 ||
	    (rv = put_octal(h + H_MTIME, 12, mtime)) != 0)
		return rv;
	h[H_TYPE] = '0';
	memcpy(h + H_MAGIC, "ustar", 6); /* with its NUL */
	memcpy(h + H_VERSION, "00", 2);
	/* the checksum field: six octal digits, NUL, space */
	char tmp[16];
	int n = snprintf(tmp, sizeof(tmp), "%06o", header_sum(h));
	if (n != 6)
		return DG_EINVAL;
	memcpy(h + H_CHKSUM, tmp, 6);
	h[H_CHKSUM + 6] = 0;
	h[H_CHKSUM + 7] = ' ';
	return 0;
}

/* An octal number field as tar writers fill them: optional leading spaces or zeros, digits,
 * then NULs or spaces to the end. Base-256 (GNU's large numbers) is refused. */
static int get_octal(const uint8_t *field, size_t width, uint64_t *out)
{
	size_t i = 0, end = width;
	uint64_t v = 0;
	while (end > 0 && (field[end - 1] == 0 || field[end - 1] == ' '))
		end--;
	while (i < end && field[i] == ' ')
		i++;
	if (i == end)
		return DG_EINVAL;
	for (; i < end; i++) {
		if (field[i] < '0' || field[i] > '7' || v > (UINT64_MAX >> 3))
			return DG_EINVAL;
		v = v * 8 + (uint64_t)(field[i] - '0');
	}
	*out = v;
	return 0;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* The entry's name: ustar's prefix "/" name, without a leading "./" (GNU tar run on "."). */
static int header_name(const uint8_t *h, bool posix, char *out, size_t len)
{
	char name[101], prefix[156];
	memcpy(name, h + H_NAME, 100);
	name[100] = 0;
	memcpy(prefix, h + H_PREFIX, 155);
	prefix[155] = 0;
	int n = posix && prefix[0] ? snprintf(out, len, "%s/%s", prefix, name)
				   : snprintf(out, len, "%s", name);
	if (n < 0 || (size_t)n >= len)
		return DG_EINVAL;
	if (strncmp(out, "./", 2) == 0)
		memmove(out, out + 2, strlen(out + 2) + 1);
	return 0;
}

/* Shows a name from an archive in a message: printable ASCII only. */
static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
			*s = '?';
}

#define READ_ERR "failed to read snapshot file: "

/* Finds the three files in a tar. Pointers in f point into buf. */
static int parse_tar(const uint8_t *buf, size_t len, struct file f[F_COUNT], char *why,
		     size_t why_len)
{
	size_t off = 0;
	memset(f, 0, sizeof(*f) * F_COUNT);
	while (off < len) {
		if (len - off < BLOCK)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: unexpected EOF");
		const uint8_t *h = buf + off;
		if (all_zero(h, BLOCK)) {
			/* the end: one or more zero blocks, maybe padding to a record */
			if (!all_zero(h, len - off))
				return fail(why, why_len, DG_EINVAL,
					    READ_ERR "failed reading snapshot: data after the end "
						     "of the archive");
			break;
		}
		uint64_t sum, size;
		if (get_octal(h + H_CHKSUM, 8, &sum) != 0 || sum != header_sum(h))
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: archive/tar: invalid tar "
					     "header (checksum)");
		bool posix = memcmp(h + H_MAGIC, "ustar\0", 6) == 0;
		bool gnu = memcmp(h + H_MAGIC, "ustar  \0", 8) == 0;
		if (!posix && !gnu)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: not a ustar archive");
		if (get_octal(h + H_SIZE, 12, &size) != 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: archive/tar: invalid size");
		char name[300];
		if (header_name(h, posix, name, sizeof(name)) != 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: invalid file name");
		printable(name);
		if (h[H_TYPE] != '0' && h[H_TYPE] != 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "unexpected entry \"%s\" of type '%c' in snapshot "
					     "(only regular files)",
				    name, h[H_TYPE] >= 0x20 && h[H_TYPE] < 0x7f ? h[H_TYPE] : '?');
		off += BLOCK;
		int k = -1;
		for (int i = 0; i < F_COUNT; i++)
			if (strcmp(name, file_names[i]) == 0)
				k = i;
		if (k < 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "unexpected file \"%s\" in snapshot", name);
		if (f[k].data)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "file \"%s\" twice in snapshot", name);
		if (size > file_max[k])
			return fail(why, why_len, DG_ETOOBIG,
				    READ_ERR "%s is %llu bytes, more than the %zu allowed", name,
				    (unsigned long long)size, file_max[k]);
		/* the data and its padding to a whole block */
		size_t padded = ((size_t)size + BLOCK - 1) / BLOCK * BLOCK;
		if (padded > len - off)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed reading snapshot: unexpected EOF in %s", name);
		f[k].data = buf + off;
		f[k].len = (size_t)size;
		off += padded;
	}
	return 0;
}

/* SHA256SUMS: lines "<64 hex>  <name>" for meta.json and state.bin, each once, both matching. */
static int verify_sums(const struct file f[F_COUNT], char *why, size_t why_len)
{
	uint8_t want[2][SHA_LEN];
	bool listed[2] = {false, false};
	const char *p = (const char *)f[F_SUMS].data, *end = p + f[F_SUMS].len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl ? nl : end;
		uint8_t sum[SHA_LEN];
		size_t i;
		if (eol == p) { /* an empty line */
			p = eol + 1;
			continue;
		}
		for (i = 0; i < 2 * SHA_LEN && p + i < eol; i++) {
			char c = p[i];
			int v = c >= '0' && c <= '9'   ? c - '0'
				: c >= 'a' && c <= 'f' ? c - 'a' + 10
				: c >= 'A' && c <= 'F' ? c - 'A' + 10
						       : -1;
			if (v < 0)
				break;
			if (i % 2 == 0)
				sum[i / 2] = (uint8_t)(v << 4);
			else
				sum[i / 2] |= (uint8_t)v;
		}
		const char *q = p + i;
		if (i != 2 * SHA_LEN || q >= eol || *q != ' ')
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: malformed "
					     "SHA256SUMS line");
		while (q < eol && *q == ' ')
			q++;
		char name[64];
		size_t n = (size_t)(eol - q);
		if (n == 0 || n >= sizeof(name))
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: malformed "
					     "SHA256SUMS line");
		memcpy(name, q, n);
		name[n] = 0;
		printable(name);
		int k = strcmp(name, "meta.json") == 0	 ? 0
			: strcmp(name, "state.bin") == 0 ? 1
							 : -1;
		if (k < 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: list has a "
					     "hash for unexpected file \"%s\"",
				    name);
		if (listed[k])
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: \"%s\" listed "
					     "twice",
				    name);
		listed[k] = true;
		memcpy(want[k], sum, SHA_LEN);
		p = nl ? nl + 1 : end;
	}
	for (int k = 0; k < 2; k++) {
		const struct file *fk = &f[k == 0 ? F_META : F_STATE];
		uint8_t got[SHA_LEN];
		if (!listed[k])
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: list missing "
					     "hash for \"%s\"",
				    file_names[k == 0 ? F_META : F_STATE]);
		if (sha256(fk->data, fk->len, got) != 0)
			return fail(why, why_len, DG_ENOMEM, "out of memory");
		if (memcmp(got, want[k], SHA_LEN) != 0)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: hash check "
					     "failed for \"%s\"",
				    file_names[k == 0 ? F_META : F_STATE]);
	}
	return 0;
}

static void copy_str(char *dst, size_t len, json_t *v)
{
	const char *s = json_string_value(v);
	if (snprintf(dst, len, "%s", s ? s : "") < 0)
		dst[0] = 0;
	printable(dst);
}

#define META_ERR READ_ERR "failed to decode snapshot metadata: "

static int decode_meta(const struct file *fm, size_t state_len, struct dg_cat_archive_meta *meta,
		       char *why, size_t why_len)
{
	json_error_t jerr;
	json_t *m = json_loadb((const char *)fm->data, fm->len, 0, &jerr);
	int rv = 0;
	memset(meta, 0, sizeof(*meta));
	if (!json_is_object(m)) {
		rv = fail(why, why_len, DG_EINVAL, META_ERR "%s",
			  m ? "not a JSON object" : jerr.text);
		goto out;
	}
	json_t *fmt = json_object_get(m, "Format");
	json_t *ver = json_object_get(m, "Version");
	json_t *index = json_object_get(m, "Index");
	json_t *size = json_object_get(m, "Size");
	if (!json_is_string(fmt) || strcmp(json_string_value(fmt), DG_CAT_ARCHIVE_FORMAT) != 0) {
		rv =
		    fail(why, why_len, DG_EINVAL,
			 "not a dcgate snapshot: meta.json has no Format \"%s\"%s",
			 DG_CAT_ARCHIVE_FORMAT,
			 json_object_get(m, "Term") ? " (a Consul snapshot cannot be restored into "
						      "dcgate)"
						    : "");
		goto out;
	}
	if (!json_is_integer(ver) || json_integer_value(ver) != DG_CAT_ARCHIVE_VERSION) {
		rv = fail(why, why_len, DG_EINVAL,
			  "unsupported snapshot version (this dcgate reads version %d)",
			  DG_CAT_ARCHIVE_VERSION);
		goto out;
	}
	if (!json_is_integer(index) || json_integer_value(index) < 0 || !json_is_integer(size) ||
	    json_integer_value(size) < 0) {
		rv = fail(why, why_len, DG_EINVAL, META_ERR "Index and Size must be numbers");
		goto out;
	}
	if ((uint64_t)json_integer_value(size) != state_len) {
		rv = fail(why, why_len, DG_EINVAL,
			  READ_ERR "state.bin is %zu bytes but meta.json says %lld", state_len,
			  (long long)json_integer_value(size));
		goto out;
	}
	meta->version = DG_CAT_ARCHIVE_VERSION;
	meta->index = (uint64_t)json_integer_value(index);
	meta->size = state_len;
	copy_str(meta->id, sizeof(meta->id), json_object_get(m, "ID"));
	copy_str(meta->dc, sizeof(meta->dc), json_object_get(m, "Datacenter"));
	copy_str(meta->created, sizeof(meta->created), json_object_get(m, "Created"));
out:
	json_decref(m);
	return rv;
}

/* Checks a tar in buf and finds state.bin in it (*state_at, an offset into buf). */
static int check_tar(const uint8_t *buf, size_t len, struct dg_cat_archive_meta *meta,
		     size_t *state_at, size_t *state_len, char *why, size_t why_len)
{
	struct file f[F_COUNT];
	struct dg_cat_archive_meta scratch;
	int rv;
	if ((rv = parse_tar(buf, len, f, why, why_len)) != 0)
		return rv;
	for (int k = 0; k < F_COUNT; k++)
		if (!f[k].data)
			return fail(why, why_len, DG_EINVAL,
				    READ_ERR "failed checking integrity of snapshot: file missing "
					     "for \"%s\"",
				    file_names[k]);
	if ((rv = verify_sums(f, why, why_len)) != 0 ||
	    (rv = decode_meta(&f[F_META], f[F_STATE].len, meta ? meta : &scratch, why, why_len)) !=
		0)
		return rv;
	*state_at = (size_t)(f[F_STATE].data - buf);
	*state_len = f[F_STATE].len;
	return 0;
}

int dg_cat_archive_decode_tar(const uint8_t *buf, size_t len, struct dg_cat_archive_meta *meta,
			      char **state, size_t *state_len, char *why, size_t why_len)
{
	size_t at, n;
	*state = NULL;
	if (len > MAX_TAR)
		return fail(why, why_len, DG_ETOOBIG, "snapshot too large: more than %u bytes",
			    (unsigned)MAX_TAR);
	int rv = check_tar(buf, len, meta, &at, &n, why, why_len);
	if (rv != 0)
		return rv;
	if (!(*state = malloc(n + 1)))
		return fail(why, why_len, DG_ENOMEM, "out of memory");
	memcpy(*state, buf + at, n);
	(*state)[n] = 0;
	*state_len = n;
	return 0;
}

/* ---- gzip ---- */

/* Inflates one gzip member, all of buf, into a new buffer of at most max bytes. */
static int gunzip(const uint8_t *buf, size_t len, size_t max, uint8_t **out, size_t *out_len,
		  char *why, size_t why_len)
{
	z_stream z;
	size_t cap = len * 4 < (size_t)64 * 1024 ? (size_t)64 * 1024 : len * 4, n = 0;
	uint8_t *o = NULL;
	int rv, zr;
	*out = NULL;
	if (len < 2 || buf[0] != 0x1f || buf[1] != 0x8b)
		return fail(why, why_len, DG_EINVAL,
			    "failed to decompress snapshot: gzip: invalid header");
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, 15 + 16) != Z_OK)
		return fail(why, why_len, DG_ENOMEM, "out of memory");
	z.next_in = (Bytef *)buf;
	z.avail_in = (uInt)len; /* len <= DG_CAT_ARCHIVE_MAX */
	for (;;) {
		if (cap > max + 1)
			cap = max + 1; /* one byte more tells "too large" from "exactly max" */
		if (n == cap) {
			rv = fail(why, why_len, DG_ETOOBIG,
				  "snapshot too large: more than %zu bytes uncompressed", max);
			goto out;
		}
		uint8_t *grown = realloc(o, cap);
		if (!grown) {
			rv = fail(why, why_len, DG_ENOMEM, "out of memory");
			goto out;
		}
		o = grown;
		z.next_out = o + n;
		z.avail_out = (uInt)(cap - n);
		zr = inflate(&z, Z_NO_FLUSH);
		n = cap - z.avail_out;
		if (zr == Z_STREAM_END)
			break;
		if (zr == Z_OK && z.avail_out == 0) {
			cap *= 2;
			continue;
		}
		if (zr == Z_OK || zr == Z_BUF_ERROR)
			rv = fail(why, why_len, DG_EINVAL,
				  "failed to decompress snapshot: unexpected EOF");
		else if (zr == Z_MEM_ERROR)
			rv = fail(why, why_len, DG_ENOMEM, "out of memory");
		else
			rv = fail(why, why_len, DG_EINVAL, "failed to decompress snapshot: %s",
				  z.msg ? z.msg : "corrupt data");
		goto out;
	}
	if (z.avail_in != 0) {
		rv =
		    fail(why, why_len, DG_EINVAL,
			 "failed to decompress snapshot: %u bytes after the end of the gzip stream",
			 z.avail_in);
		goto out;
	}
	*out = o;
	*out_len = n;
	o = NULL;
	rv = 0;
out:
	inflateEnd(&z);
	free(o);
	return rv;
}

int dg_cat_archive_decode(const uint8_t *buf, size_t len, struct dg_cat_archive_meta *meta,
			  char **state, size_t *state_len, char *why, size_t why_len)
{
	uint8_t *tar;
	size_t tar_len = 0, at = 0, n = 0;
	int rv;
	*state = NULL;
	if (len > DG_CAT_ARCHIVE_MAX)
		return fail(why, why_len, DG_ETOOBIG, "snapshot too large: more than %u bytes",
			    DG_CAT_ARCHIVE_MAX);
	if ((rv = gunzip(buf, len, MAX_TAR, &tar, &tar_len, why, why_len)) != 0)
		return rv;
	if ((rv = check_tar(tar, tar_len, meta, &at, &n, why, why_len)) != 0) {
		free(tar);
		return rv;
	}
	/* state.bin to the front of the buffer that holds it, NUL-terminated */
	memmove(tar, tar + at, n);
	tar[n] = 0; /* there is room: state.bin came after a header */
	char *shrunk = realloc(tar, n + 1);
	*state = shrunk ? shrunk : (char *)tar;
	*state_len = n;
	return 0;
}

/* ---- encoding ---- */

/* meta.json for a state: one line of JSON, as Go's json.Encoder ends it. */
static char *meta_text(size_t len, uint64_t index, const char *dc, int64_t now_ms)
{
	char id[64], created[32] = "";
	time_t secs = (time_t)(now_ms / 1000);
	struct tm tm;
	if (snprintf(id, sizeof(id), "%llu-%lld", (unsigned long long)index, (long long)now_ms) < 0)
		return NULL;
	if (gmtime_r(&secs, &tm) &&
	    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		created[0] = 0;
	json_t *m =
	    json_pack("{s:i, s:s, s:s, s:I, s:I, s:s, s:s}", "Version", DG_CAT_ARCHIVE_VERSION,
		      "Format", DG_CAT_ARCHIVE_FORMAT, "ID", id, "Index", (json_int_t)index, "Size",
		      (json_int_t)len, "Datacenter", dc ? dc : "", "Created", created);
	char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
	json_decref(m);
	if (!text)
		return NULL;
	size_t n = strlen(text);
	char *lined = realloc(text, n + 2);
	if (!lined) {
		free(text);
		return NULL;
	}
	lined[n] = '\n';
	lined[n + 1] = 0;
	return lined;
}

static size_t padded(size_t n)
{
	return (n + BLOCK - 1) / BLOCK * BLOCK;
}

/* Appends one file (header, data, padding) at tar + *off. */
static int put_file(uint8_t *tar, size_t *off, const char *name, const void *data, size_t len,
		    uint64_t mtime)
{
	int rv = put_header(tar + *off, name, len, mtime);
	if (rv != 0)
		return rv;
	*off += BLOCK;
	memcpy(tar + *off, data, len);
	memset(tar + *off + len, 0, padded(len) - len);
	*off += padded(len);
	return 0;
}

static int gzip_buf(const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
	z_stream z;
	memset(&z, 0, sizeof(z));
	if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
	    Z_OK)
		return DG_ENOMEM;
	size_t cap = deflateBound(&z, (uLong)len);
	uint8_t *o = malloc(cap);
	int rv = DG_ENOMEM;
	if (o) {
		z.next_in = (Bytef *)in;
		z.avail_in = (uInt)len;
		z.next_out = o;
		z.avail_out = (uInt)cap;
		if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
			*out = o;
			*out_len = cap - z.avail_out;
			o = NULL;
			rv = 0;
		}
	}
	deflateEnd(&z);
	free(o);
	return rv;
}

int dg_cat_archive_encode(const char *state, size_t len, uint64_t index, const char *dc,
			  int64_t now_ms, uint8_t **out, size_t *out_len)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t sums[2][SHA_LEN];
	char sums_text[256]; /* two lines of 64 hex digits, two spaces, a name and a newline */
	int rv;
	*out = NULL;
	if (len > DG_CAT_ARCHIVE_MAX_STATE)
		return DG_ETOOBIG;
	char *meta = meta_text(len, index, dc, now_ms);
	if (!meta)
		return DG_ENOMEM;
	size_t meta_len = strlen(meta);
	if ((rv = sha256(meta, meta_len, sums[0])) != 0 || (rv = sha256(state, len, sums[1])) != 0)
		goto out_meta;
	size_t k = 0;
	for (int f = 0; f < 2; f++) {
		for (int i = 0; i < SHA_LEN; i++) {
			sums_text[k++] = hex[sums[f][i] >> 4];
			sums_text[k++] = hex[sums[f][i] & 15];
		}
		int n = snprintf(sums_text + k, sizeof(sums_text) - k, "  %s\n", file_names[f]);
		if (n < 0 || (size_t)n >= sizeof(sums_text) - k) {
			rv = DG_EINVAL;
			goto out_meta;
		}
		k += (size_t)n;
	}
	uint64_t mtime = now_ms > 0 ? (uint64_t)now_ms / 1000 : 0;
	size_t tar_len = 3 * BLOCK + padded(meta_len) + padded(len) + padded(k) + 2 * BLOCK;
	uint8_t *tar = calloc(1, tar_len); /* the two end blocks stay zero */
	size_t off = 0;
	if (!tar) {
		rv = DG_ENOMEM;
		goto out_meta;
	}
	if ((rv = put_file(tar, &off, "meta.json", meta, meta_len, mtime)) == 0 &&
	    (rv = put_file(tar, &off, "state.bin", state, len, mtime)) == 0 &&
	    (rv = put_file(tar, &off, "SHA256SUMS", sums_text, k, mtime)) == 0)
		rv = gzip_buf(tar, tar_len, out, out_len);
	free(tar);
out_meta:
	free(meta);
	return rv;
}
