/* common: errors, logging, time, Go-style durations, base64, UUIDs and a growable byte buffer.
 * libc only; every function here is safe to call from any thread unless it says otherwise. */
#ifndef DG_COMMON_H
#define DG_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* One error list for the whole project: 0 is success, errors are negative. The HTTP layer maps
 * codes to status codes in one table (http/server.c). */
#define DG_ERRORS(X)                                                                               \
	X(DG_ENOMEM, -1, "out of memory")                                                          \
	X(DG_EINVAL, -2, "invalid argument")                                                       \
	X(DG_ENOTFOUND, -3, "not found")                                                           \
	X(DG_ETOOBIG, -4, "too large")                                                             \
	X(DG_EIO, -5, "input/output error")                                                        \
	X(DG_ENOLEADER, -6, "No cluster leader")                                                   \
	X(DG_ECONFLICT, -7, "conflict")                                                            \
	X(DG_ESHUTDOWN, -8, "shutting down")                                                       \
	X(DG_EPERM, -9, "permission denied")                                                       \
	X(DG_EBUSY, -10, "busy")                                                                   \
	X(DG_ENOPATH, -11, "No path to datacenter")                                                \
	X(DG_ENOSERVER, -12, "Remote DC has no server currently reachable")                        \
	X(DG_ETIMEDOUT, -13, "timed out")                                                          \
	X(DG_EOF, -14, "EOF")

enum {
#define DG_ERR_ENUM(name, code, text) name = code,
	DG_ERRORS(DG_ERR_ENUM)
#undef DG_ERR_ENUM
};

/* Returns a static string for an error code (never NULL). */
const char *dg_strerror(int err);

/* ---- limits: every input's hard cap lives here ---- */
#define DG_MAX_BODY          (1024 * 1024 + 64 * 1024) /* whole request body */
#define DG_MAX_SNAPSHOT_BODY (64 * 1024 * 1024)        /* PUT /v1/snapshot: a gzip'd archive */
#define DG_MAX_KV_VALUE      (512 * 1024)              /* Consul's kv_max_value_size */
#define DG_MAX_JSON_DEPTH    32                        /* nesting of any request body */
#define DG_MAX_KEY_LEN       2048                      /* KV key, IDs, names */
#define DG_MAX_TXN_OPS       64
#define DG_MAX_QUERY_VALUE   8192                      /* one query-string value */
#define DG_MAX_SERVICE_CHECKS 64                       /* checks in one registration */
#define DG_MAX_WAITERS       20000                     /* parked blocking queries */
#define DG_MAX_OUTPUT        4096                      /* check Output */
#define DG_MAX_HEADER_MEM    (16 * 1024)               /* per-connection header memory */
#define DG_TLS_HANDSHAKE_MS  10000                     /* a TLS peer must speak within this */
#define DG_WAN_MAX_MSG       (2 * 1024 * 1024)         /* one message on 8302 */
#define DG_WAN_MAX_HEADER    (64 * 1024)               /* its JSON header */
#define DG_WAN_MAX_MEMBERS   4096                      /* servers in the WAN pool */
#define DG_MAX_REGEX_COPIES  1000                      /* atoms a client regex expands into */
#define DG_MAX_REGEX_DEPTH   8                         /* its nested groups */
#define DG_MAX_REGEX_LEN     512                       /* its length */

/* ---- JSON text ---- */
/* True if the JSON text[0..len) nests no deeper than max. Meant to run before a parser, so that
 * ten thousand '[' cost one pass and no allocation; brackets inside strings do not count. Exact
 * for valid JSON; for invalid JSON anything, and the parser refuses the text afterwards. */
bool dg_json_depth_ok(const void *text, size_t len, int max);

/* ---- client regexes ---- */
/* Refuses a POSIX extended regex that would be costly to compile or to run (repetitions that
 * multiply past DG_MAX_REGEX_COPIES atoms, groups deeper than DG_MAX_REGEX_DEPTH,
 * back-references) before regcomp() sees it. Returns 0, or DG_EINVAL with *why in Go's words. */
int dg_regex_check(const char *pattern, const char **why);

/* ---- logging ---- */
enum dg_log_level { DG_LOG_TRACE, DG_LOG_DEBUG, DG_LOG_INFO, DG_LOG_WARN, DG_LOG_ERROR };
void dg_log_set_level(enum dg_log_level level);
/* Parses "trace|debug|info|warn|err|error"; returns 0 or DG_EINVAL. */
int dg_log_parse_level(const char *text, enum dg_log_level *out);
void dg_log(enum dg_log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#define DG_LOGI(mod, ...) dg_log(DG_LOG_INFO, mod, __VA_ARGS__)
#define DG_LOGW(mod, ...) dg_log(DG_LOG_WARN, mod, __VA_ARGS__)
#define DG_LOGE(mod, ...) dg_log(DG_LOG_ERROR, mod, __VA_ARGS__)
#define DG_LOGD(mod, ...) dg_log(DG_LOG_DEBUG, mod, __VA_ARGS__)

/* ---- time ---- */
/* Monotonic milliseconds, for deadlines. */
uint64_t dg_now_ms(void);
/* The CLOCK_REALTIME time ms from now, for pthread_cond_timedwait(). */
struct timespec dg_realtime_in_ms(unsigned ms);
/* Wall clock in nanoseconds since the epoch. */
int64_t dg_wall_ns(void);

/* ---- Go durations ---- */
/* Parses a Go duration ("10s", "1m30s", "250ms", "1.5h", "-1s", "0"); nanoseconds into *out.
 * A bare number other than "0" is an error, as in Go. Returns 0 or DG_EINVAL. */
int dg_duration_parse(const char *text, int64_t *out);
/* Formats nanoseconds the way Go's time.Duration.String() does ("1m0s", "10s", "1.5s", "0s").
 * Writes at most len bytes including the NUL; returns 0 or DG_ETOOBIG. */
int dg_duration_format(int64_t ns, char *buf, size_t len);

/* ---- base64 (standard alphabet, padded) ---- */
/* Caller frees the returned string with free(); NULL on allocation failure. */
char *dg_base64_encode(const void *data, size_t len);
/* Decodes into a new buffer (caller frees); accepts missing padding. Returns 0 or DG_EINVAL. */
int dg_base64_decode(const char *text, size_t text_len, uint8_t **out, size_t *out_len);

/* ---- UUIDs ---- */
/* Writes a random version-4 UUID, 36 chars plus NUL, into buf (>= 37 bytes). */
void dg_uuid_new(char buf[37]);
bool dg_uuid_valid(const char *text);

/* ---- growable byte buffer ---- */
struct dg_buf {
	char *data; /* always NUL-terminated when non-NULL */
	size_t len;
	size_t cap;
};
void dg_buf_init(struct dg_buf *b);
void dg_buf_fini(struct dg_buf *b);
int dg_buf_append(struct dg_buf *b, const void *data, size_t len);
/* Makes room for extra more bytes (and the NUL), so that appends of up to that much do not
 * reallocate. 0 or DG_ENOMEM; b's bytes are unchanged either way. */
int dg_buf_reserve(struct dg_buf *b, size_t extra);
/* Appends s[0..len) as a JSON string literal: in quotes, with '"', '\\' and every byte below 0x20
 * escaped (\n \r \t, the others \u00xx) and all other bytes copied as they are, so UTF-8 stays
 * UTF-8 (s is not checked to be UTF-8; NUL bytes become \u0000). The one JSON string writer of
 * the hand-built encoders (http/encode.c, wan/msg.c). 0 or DG_ENOMEM; on failure b is left as it
 * was. */
int dg_buf_append_json_string(struct dg_buf *b, const char *s, size_t len);
int dg_buf_appendf(struct dg_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands the bytes to the caller (free() them) and leaves b empty. */
char *dg_buf_steal(struct dg_buf *b, size_t *len);

/* ---- strings ---- */
/* Length of the valid UTF-8 sequence at p (at most avail bytes, avail >= 1), 0 if invalid:
 * jansson's rules (no overlong forms, no surrogates, nothing past U+10FFFF). NUL counts as a
 * one-byte sequence; callers that refuse it check for it themselves. */
size_t dg_utf8_seq(const unsigned char *p, size_t avail);
/* strdup that aborts never: returns NULL on failure. */
char *dg_strdup(const char *s);
/* A copy of a NULL-terminated string array (NULL for NULL); free with dg_strv_free. */
char **dg_strv_dup(const char *const *v);
void dg_strv_free(char **v);
char *dg_strndup(const char *s, size_t n);
/* ASCII case-insensitive equality. */
bool dg_streq_ci(const char *a, const char *b);
/* Parses a decimal uint64 with no sign, no spaces, no overflow. Returns 0 or DG_EINVAL. */
int dg_parse_u64(const char *text, uint64_t *out);
/* Go's strconv.ParseBool: 1 t T TRUE true True 0 f F FALSE false False. */
int dg_parse_bool(const char *text, bool *out);

/* ---- sorted string-keyed map ----
 * A sorted array of (key, value) pairs: O(log n) lookups, ordered walks and prefix scans, O(n)
 * inserts. Keys are owned by the map (copied on insert); values are the caller's. */
struct dg_map_ent {
	char *key;
	void *value;
};
struct dg_map {
	struct dg_map_ent *v;
	size_t n, cap;
	bool nocase; /* ASCII case-insensitive keys */
};
void dg_map_init(struct dg_map *m, bool nocase);
/* Frees the keys and the array; values are the caller's to free first. */
void dg_map_fini(struct dg_map *m);
/* NULL when absent. */
void *dg_map_find(const struct dg_map *m, const char *key);
/* Inserts or replaces; the replaced value is stored in *old (NULL if none). 0 or DG_ENOMEM. */
int dg_map_put(struct dg_map *m, const char *key, void *value, void **old);
/* Removes key; returns its value or NULL. */
void *dg_map_del(struct dg_map *m, const char *key);
/* Position of the first key >= key. */
size_t dg_map_lower_bound(const struct dg_map *m, const char *key);
/* True if key starts with prefix (respecting the map's case rule). */
bool dg_map_has_prefix(const struct dg_map *m, const char *key, const char *prefix);

/* ---- sorted string-keyed map in chunks (common/omap.c) ----
 * For tables that grow large under writes (the KV store): the same sorted order and O(log n)
 * lookups as dg_map, with inserts and deletes that move at most one chunk. Case-sensitive keys,
 * owned by the map; values are the caller's. Walks go through an iterator, which any put or del
 * invalidates (seek again from a copy of the key). */
struct dg_omap_chunk;
struct dg_omap {
	struct dg_omap_chunk **chunks;
	size_t nchunks, cap;
	size_t n; /* entries */
};
struct dg_omap_it {
	const struct dg_omap *m;
	size_t c, i;
};
void dg_omap_init(struct dg_omap *m);
/* Frees the keys and the chunks; values are the caller's to free first. */
void dg_omap_fini(struct dg_omap *m);
void *dg_omap_find(const struct dg_omap *m, const char *key);
/* Inserts or replaces; the replaced value is stored in *old (NULL if none). 0 or DG_ENOMEM. */
int dg_omap_put(struct dg_omap *m, const char *key, void *value, void **old);
void *dg_omap_del(struct dg_omap *m, const char *key);
size_t dg_omap_size(const struct dg_omap *m);
void dg_omap_first(const struct dg_omap *m, struct dg_omap_it *it);
/* At the first key >= key. */
void dg_omap_seek(const struct dg_omap *m, const char *key, struct dg_omap_it *it);
bool dg_omap_valid(const struct dg_omap_it *it);
const char *dg_omap_key(const struct dg_omap_it *it);
void *dg_omap_value(const struct dg_omap_it *it);
void dg_omap_next(struct dg_omap_it *it);
/* Valid and its key starts with prefix. */
bool dg_omap_in_prefix(const struct dg_omap_it *it, const char *prefix);

#endif
