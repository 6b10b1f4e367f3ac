/* Small helpers shared by every module: time, base64, UUIDs, a byte buffer, string parsing. */
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

uint64_t dg_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int64_t dg_wall_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dg_base64_encode(const void *data, size_t len)
{
	const uint8_t *in = data;
	size_t olen = 4 * ((len + 2) / 3);
	char *out = malloc(olen + 1), *p = out;
	if (!out)
		return NULL;
	size_t i = 0;
	for (; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*p++ = b64chars[v >> 18 & 63];
		*p++ = b64chars[v >> 12 & 63];
		*p++ = b64chars[v >> 6 & 63];
		*p++ = b64chars[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		*p++ = b64chars[v >> 18 & 63];
		*p++ = b64chars[v >> 12 & 63];
		*p++ = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
		*p++ = '=';
	}
	*p = 0;
	return out;
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int dg_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len)
{
	while (text_len > 0 && text[text_len - 1] == '=')
		text_len--;
	if (text_len % 4 == 1)
		return DG_EINVAL;
	uint8_t *buf = malloc(text_len * 3 / 4 + 1);
	if (!buf)
		return DG_ENOMEM;
	size_t n = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < text_len; i++) {
		int v = b64val((unsigned char)text[i]);
		if (v < 0) {
			free(buf);
			return DG_EINVAL;
		}
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			buf[n++] = (uint8_t)(acc >> bits);
		}
	}
	*out = buf;
	*out_len = n;
	return 0;
}

void dg_uuid_new(char buf[37])
{
	uint8_t r[16];
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		for (size_t i = 0; i < sizeof(r); i++)
			r[i] = (uint8_t)rand();
	}
	r[6] = (r[6] & 0x0f) | 0x40;
	r[8] = (r[8] & 0x3f) | 0x80;
	snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		 r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
		 r[13], r[14], r[15]);
}

bool dg_uuid_valid(const char *t)
{
	if (!t || strlen(t) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (t[i] != '-')
				return false;
		} else if (!isxdigit((unsigned char)t[i])) {
			return false;
		}
	}
	return true;
}

void dg_buf_init(struct dg_buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void dg_buf_fini(struct dg_buf *b)
{
	free(b->data);
	dg_buf_init(b);
}

int dg_buf_reserve(struct dg_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	char *d = realloc(b->data, cap);
	if (!d)
		return DG_ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

int dg_buf_append(struct dg_buf *b, const void *data, size_t len)
{
	int rv;
	if ((rv = dg_buf_reserve(b, len)) != 0)
		return rv;
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = 0;
	return 0;
}

int dg_buf_appendf(struct dg_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return DG_EINVAL;
	int rv;
	if ((rv = dg_buf_reserve(b, (size_t)n)) != 0)
		return rv;
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

/* Appends without writing the NUL: the JSON string writer ends the text once, at the end. */
static int buf_put(struct dg_buf *b, const void *data, size_t len)
{
	int rv;
	if ((rv = dg_buf_reserve(b, len)) != 0)
		return rv;
	if (len) /* data may be NULL then */
		memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

/* The bytes JSON requires escaped: control bytes, '"' and '\\'. */
static const bool json_escaped[256] = {[0 ... 0x1f] = true, ['"'] = true, ['\\'] = true};

/* True if none of the eight bytes at p needs escaping: the classic "has a byte less than n" and
 * "has a zero byte" tests on x, x ^ '"' and x ^ '\\'. Exact: a byte is flagged only if it or a
 * byte below it needs escaping. */
static bool json_plain8(const unsigned char *p)
{
	const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
	uint64_t x, q, e;
	memcpy(&x, p, 8);
	q = x ^ (ones * '"');
	e = x ^ (ones * '\\');
	return (((x - ones * 0x20) | (q - ones) | (e - ones)) & ~x & ~q & ~e & highs) == 0;
}

int dg_buf_append_json_string(struct dg_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t start = b->len;
	/* room for a string with nothing to escape: the loop below then never reallocates */
	if (dg_buf_reserve(b, len + 2) != 0)
		return DG_ENOMEM;
	b->data[b->len++] = '"';
	const unsigned char *p = (const unsigned char *)s, *end = p + len, *run = p;
	bool tail_tried = false;
	while (p < end) {
		/* eight bytes at a time; the last few as the string's last eight, once */
		if (end - p >= 8) {
			if (json_plain8(p)) {
				p += 8;
				continue;
			}
		} else if (!tail_tried && len >= 8) {
			tail_tried = true;
			if (json_plain8(end - 8))
				break;
		}
		unsigned char c = *p++;
		if (!json_escaped[c])
			continue;
		char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
		size_t n = 2;
		switch (c) {
		case '"':
		case '\\':
			esc[1] = (char)c;
			break;
		case '\n':
			esc[1] = 'n';
			break;
		case '\r':
			esc[1] = 'r';
			break;
		case '\t':
			esc[1] = 't';
			break;
		default:
			n = 6;
		}
		if (buf_put(b, run, (size_t)(p - 1 - run)) != 0 || buf_put(b, esc, n) != 0)
			goto fail;
		run = p;
	}
	if (buf_put(b, run, (size_t)(end - run)) != 0 || buf_put(b, "\"", 1) != 0)
		goto fail;
	b->data[b->len] = 0;
	return 0;
fail:
	b->len = start;
	b->data[start] = 0;
	return DG_ENOMEM;
}

size_t dg_utf8_seq(const unsigned char *p, size_t avail)
{
	unsigned c = p[0];
	size_t n;
	uint32_t cp, min;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf) {
		n = 2, cp = c & 0x1f, min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 3, cp = c & 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 4, cp = c & 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (avail < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

char *dg_buf_steal(struct dg_buf *b, size_t *len)
{
	char *d = b->data;
	if (len)
		*len = b->len;
	if (!d)
		d = calloc(1, 1);
	dg_buf_init(b);
	return d;
}

char *dg_strdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

char *dg_strndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = 0;
	return d;
}

bool dg_streq_ci(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

int dg_parse_u64(const char *text, uint64_t *out)
{
	if (!text || !*text)
		return DG_EINVAL;
	uint64_t v = 0;
	for (const char *p = text; *p; p++) {
		if (*p < '0' || *p > '9')
			return DG_EINVAL;
		uint64_t d = (uint64_t)(*p - '0');
		if (v > (UINT64_MAX - d) / 10)
			return DG_EINVAL;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int dg_parse_bool(const char *t, bool *out)
{
	static const char *yes[] = {"1", "t", "T", "TRUE", "true", "True"};
	static const char *no[] = {"0", "f", "F", "FALSE", "false", "False"};
	for (size_t i = 0; i < 6; i++) {
		if (strcmp(t, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(t, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return DG_EINVAL;
}

bool dg_json_depth_ok(const void *text, size_t len, int max)
{
	const unsigned char *s = text;
	int depth = 0;
	bool in_str = false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = false;
			continue;
		}
		if (c == '"')
			in_str = true;
		else if (c == '[' || c == '{') {
			if (++depth > max)
				return false;
		} else if (c == ']' || c == '}')
			depth--;
	}
	return true;
}

struct timespec dg_realtime_in_ms(unsigned ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

char **dg_strv_dup(const char *const *v)
{
	size_t n = 0;
	if (!v)
		return NULL;
	while (v[n])
		n++;
	char **out = calloc(n + 1, sizeof(*out));
	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		if (!(out[i] = strdup(v[i]))) {
			dg_strv_free(out);
			return NULL;
		}
	}
	return out;
}

void dg_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}
