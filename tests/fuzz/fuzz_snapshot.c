/* Fuzz target: the snapshot archive of /v1/snapshot (catalog/archive.c) and the state inside it
 * (catalog/snapshot.c). Each input is tried as a gzip'd archive, as the bare tar inside one
 * (mutations rarely get past gzip's CRC) and, when it starts with '{', as a state itself (they
 * never get past SHA256SUMS). When one decodes, its state goes through the same check
 * PUT /v1/snapshot makes, and the restore command must agree with that check: refused states
 * change nothing; accepted ones restore, survive a raft snapshot round trip, and re-encode to an
 * archive that decodes to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/archive.h"
#include "catalog/catalog.h"

static json_t *apply(dg_catalog *c, uint64_t index, const char *cmd)
{
	json_t *res = NULL;
	size_t n;
	dg_cat_wrlock(c);
	dg_cat_apply(c, index, cmd, strlen(cmd), &res);
	struct dg_cat_change *ch = dg_cat_take_changes(c, &n);
	dg_cat_changes_free(ch, n);
	dg_cat_unlock(c);
	return res;
}

static void check_state(const char *state, size_t len, const struct dg_cat_archive_meta *meta)
{
	json_t *st = json_loadb(state, len, 0, NULL);
	char why[256];
	if (!st)
		return;
	int ok = dg_cat_state_check(st, NULL, why, sizeof(why)) == 0;
	dg_catalog *c = dg_cat_new("dc1");
	json_t *cmd = dg_cmd_restore(st);
	char *text = cmd ? json_dumps(cmd, JSON_COMPACT) : NULL;
	json_decref(cmd);
	json_decref(st);
	if (!c || !text) {
		dg_cat_free(c);
		free(text);
		return;
	}
	json_decref(apply(c, 2, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"before\"}"));
	size_t l1, l2;
	char *s1 = dg_cat_snapshot(c, &l1);
	json_t *res = apply(c, 3, text);
	int applied = !json_object_get(res, "Error"); /* a restore answers nothing else */
	json_decref(res);
	if (applied != ok)
		abort(); /* the check and the command disagree */
	char *s2 = dg_cat_snapshot(c, &l2);
	if (!ok) {
		/* refused: only the last applied index may differ */
		json_t *a = s1 ? json_loadb(s1, l1, 0, NULL) : NULL;
		json_t *b = s2 ? json_loadb(s2, l2, 0, NULL) : NULL;
		json_object_del(a, "Index");
		json_object_del(b, "Index");
		if (a && b && !json_equal(a, b))
			abort();
		json_decref(a);
		json_decref(b);
	} else if (s2) {
		/* restored: a raft snapshot of it restores to the same text */
		dg_catalog *c2 = dg_cat_new("dc1");
		size_t l3;
		if (c2 && dg_cat_restore(c2, s2, l2) != 0)
			abort();
		char *s3 = c2 ? dg_cat_snapshot(c2, &l3) : NULL;
		if (s3 && (l3 != l2 || memcmp(s2, s3, l2) != 0))
			abort();
		free(s3);
		dg_cat_free(c2);
		/* and the archive of the state as it came decodes to the same bytes */
		uint8_t *arch = NULL;
		size_t alen, l4;
		char *s4 = NULL;
		if (dg_cat_archive_encode(state, len, meta->index, meta->dc, 1, &arch, &alen) ==
		    0) {
			if (dg_cat_archive_decode(arch, alen, NULL, &s4, &l4, NULL, 0) != 0 ||
			    l4 != len || memcmp(s4, state, len) != 0)
				abort();
		}
		free(s4);
		free(arch);
	}
	free(s1);
	free(s2);
	free(text);
	dg_cat_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dg_cat_archive_meta meta;
	char why[256], *state;
	size_t len;
	if (dg_cat_archive_decode(data, size, &meta, &state, &len, why, sizeof(why)) == 0) {
		check_state(state, len, &meta);
		free(state);
	}
	if (dg_cat_archive_decode_tar(data, size, &meta, &state, &len, why, sizeof(why)) == 0) {
		check_state(state, len, &meta);
		free(state);
	}
	if (size > 0 && data[0] == '{') {
		memset(&meta, 0, sizeof(meta));
		check_state((const char *)data, size, &meta);
	}
	return 0;
}
