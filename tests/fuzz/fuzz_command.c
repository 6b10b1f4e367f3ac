/* Fuzz target: the FSM's command decoder. Each input line is one command applied to a fresh
 * catalog in order, as raft would replay a log; then a snapshot must restore to the same text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/catalog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dg_catalog *c = dg_cat_new("dc1");
	uint64_t index = 1;
	size_t start = 0;
	if (!c)
		return 0;
	for (size_t i = 0; i <= size; i++) {
		if (i < size && data[i] != '\n')
			continue;
		if (i > start) {
			json_t *res = NULL;
			size_t n;
			dg_cat_wrlock(c);
			dg_cat_apply(c, ++index, (const char *)data + start, i - start, &res);
			struct dg_cat_change *ch = dg_cat_take_changes(c, &n);
			dg_cat_changes_free(ch, n);
			dg_cat_unlock(c);
			json_decref(res);
		}
		start = i + 1;
	}
	size_t len, len2;
	char *snap = dg_cat_snapshot(c, &len);
	dg_catalog *c2 = dg_cat_new("dc1");
	if (snap && c2) {
		if (dg_cat_restore(c2, snap, len) != 0)
			abort();
		char *snap2 = dg_cat_snapshot(c2, &len2);
		if (!snap2 || len != len2 || memcmp(snap, snap2, len) != 0)
			abort();
		free(snap2);
	}
	free(snap);
	dg_cat_free(c2);
	dg_cat_free(c);
	return 0;
}
