/* Fuzz target: query-string parsing. The input is split like a URL query ("k=v&k2&k3=v3"), each
 * pair fed to dg_query_set, then dg_query_finish; errors must come with a text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = dg_strndup((const char *)data, size);
	struct dg_query q;
	char err[256];
	memset(&q, 0, sizeof(q));
	if (!s)
		return 0;
	char *save = NULL;
	for (char *pair = strtok_r(s, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
		char *eq = strchr(pair, '=');
		const char *val = "";
		if (eq) {
			*eq = 0;
			val = eq + 1;
		}
		err[0] = 0;
		if (dg_query_set(&q, pair, val, err, sizeof(err)) == DG_EINVAL && !err[0])
			abort();
	}
	err[0] = 0;
	if (dg_query_finish(&q, err, sizeof(err)) != 0 && !err[0])
		abort();
	(void)dg_query_block_ms(q.wait_ns, (uint32_t)size);
	dg_query_fini(&q);
	free(s);
	return 0;
}
