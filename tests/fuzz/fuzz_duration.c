/* Fuzz target: Go duration parsing and formatting; a parsed value must format and parse back
 * to the same value. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = dg_strndup((const char *)data, size);
	int64_t ns, again;
	char buf[64];
	if (!s)
		return 0;
	if (dg_duration_parse(s, &ns) == 0 && ns != INT64_MIN) {
		if (dg_duration_format(ns, buf, sizeof(buf)) != 0)
			abort();
		if (dg_duration_parse(buf, &again) != 0)
			abort();
		/* formatting keeps every nanosecond; parsing through a double may round by one
		 * part in 2^53 for huge values */
		int64_t diff = again > ns ? again - ns : ns - again;
		if (diff > (ns > 0 ? ns : -ns) / 1000000000000LL + 1)
			abort();
	}
	free(s);
	return 0;
}
