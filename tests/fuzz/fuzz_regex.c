/* Fuzz target: the cost check for client regexes (common/regex.c). Whatever it accepts must be
 * cheap to compile and to run: glibc's regcomp and one regexec run on it, under libFuzzer's
 * time and memory limits (a pattern that got past the check and blew up would trip them). */
#include <regex.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4096)
		return 0;
	char *s = dg_strndup((const char *)data, size);
	const char *why = NULL;
	if (!s)
		return 0;
	if (dg_regex_check(s, &why) == 0) {
		regex_t re;
		if (regcomp(&re, s, REG_EXTENDED | REG_NOSUB) == 0) {
			(void)regexec(&re, "web-01.example dc1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaab", 0, NULL,
				      0);
			regfree(&re);
		}
	} else if (!why || !why[0]) {
		abort(); /* a refusal always says why */
	}
	free(s);
	return 0;
}
