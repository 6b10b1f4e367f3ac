/* catalog/archive: the snapshot archive of GET/PUT /v1/snapshot and `dcgate snapshot`, shaped like
 * Consul's: a gzip'd tar holding meta.json (what the snapshot is), state.bin (the catalog state,
 * dg_cat_snapshot()'s JSON text) and SHA256SUMS (of the other two). Format and limits:
 * docs/snapshot.md.
 *
 * Pure: bytes in, bytes out (zlib, OpenSSL's SHA-256); no sockets, no clock of its own, no
 * shared state, so any thread may call it and it can be fuzzed (tests/fuzz/fuzz_snapshot.c). */
#ifndef DG_CATALOG_ARCHIVE_H
#define DG_CATALOG_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

/* Input limits of the decoder; an archive the encoder writes stays within them as long as the
 * state does. */
#define DG_CAT_ARCHIVE_MAX	 (64u * 1024 * 1024)  /* an archive, gzip'd, as sent or stored */
#define DG_CAT_ARCHIVE_MAX_STATE (128u * 1024 * 1024) /* state.bin */
#define DG_CAT_ARCHIVE_MAX_META	 (64u * 1024)	      /* meta.json */
#define DG_CAT_ARCHIVE_MAX_SUMS	 4096		      /* SHA256SUMS */

#define DG_CAT_ARCHIVE_VERSION 1		/* meta.json "Version" */
#define DG_CAT_ARCHIVE_FORMAT  "dcgate-catalog" /* meta.json "Format": what state.bin holds */

/* meta.json, as far as dcgate reads it. */
struct dg_cat_archive_meta {
	unsigned version; /* DG_CAT_ARCHIVE_VERSION */
	char id[64];	/* "<index>-<unix ms>", as Consul's "<term>-<index>-<unix ms>" minus term */
	uint64_t index; /* the catalog index the state was taken at */
	uint64_t size;	/* bytes of state.bin */
	char dc[128];	/* the datacenter it was taken in ("" when not given) */
	char created[32]; /* UTC, RFC 3339 ("" when not given) */
};

/* Builds an archive of state (len bytes, not NUL-terminated; dg_cat_snapshot_index() text) taken
 * at index in datacenter dc, now_ms being the wall clock in ms (for the ID and times). Returns 0
 * with *out (malloc'd, the caller frees it) and *out_len, DG_ETOOBIG when state is larger than
 * DG_CAT_ARCHIVE_MAX_STATE, or DG_ENOMEM. */
int dg_cat_archive_encode(const char *state, size_t len, uint64_t index, const char *dc,
			  int64_t now_ms, uint8_t **out, size_t *out_len);

/* Reads and verifies an archive: gzip (one member, nothing after it), tar (regular files only,
 * named meta.json, state.bin and SHA256SUMS, each once, nothing else), every header checksum and
 * size, the SHA-256 of meta.json and state.bin against SHA256SUMS, meta.json's Format, Version and
 * Size. The state's JSON is not parsed here (dg_cat_state_check does that).
 * Returns 0 with meta filled and *state (malloc'd, NUL-terminated, the caller frees it) of
 * *state_len bytes; else DG_EINVAL (not a valid archive), DG_ETOOBIG (over a limit above) or
 * DG_ENOMEM, with a reason in Consul's words in why (why may be NULL), and *state NULL. */
int dg_cat_archive_decode(const uint8_t *buf, size_t len, struct dg_cat_archive_meta *meta,
			  char **state, size_t *state_len, char *why, size_t why_len);

/* The same checks on the tar inside, uncompressed (what gunzip gives): for the unit tests and the
 * fuzz target, which could not get past gzip's CRC otherwise. */
int dg_cat_archive_decode_tar(const uint8_t *buf, size_t len, struct dg_cat_archive_meta *meta,
			      char **state, size_t *state_len, char *why, size_t why_len);

#endif
