/* Fuzz target: request body decoding (JSON with the depth limit) and the case-insensitive field
 * and duration helpers used by every endpoint. */
#include <stdint.h>
#include <stdlib.h>

#include "http/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	err[0] = 0;
	json_t *v = dg_decode_body((const char *)data, size, err, sizeof(err));
	if (!v) {
		if (!err[0])
			abort();
		return 0;
	}
	int64_t ns;
	json_t *f = dg_jget(v, "Interval", "interval", NULL);
	(void)dg_jduration(f, &ns);
	(void)dg_jstr(dg_jget(v, "Name", NULL));
	json_t *chk = dg_jget(v, "Check", "check", NULL);
	(void)dg_jduration(dg_jget(chk, "DeregisterCriticalServiceAfter",
				   "deregister_critical_service_after", NULL),
			   &ns);
	json_decref(v);
	return 0;
}
