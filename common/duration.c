/* Go time.Duration parsing and formatting: clients send durations as Go strings ("10s", "1m30s",
 * "300000ms") and read them back formatted by Go ("1m0s"), so both directions follow Go exactly. */
#include "common/common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *unit;
	int64_t ns;
} units[] = {
	{"ns", 1LL},
	{"us", 1000LL},
	{"\xc2\xb5s", 1000LL}, /* U+00B5 micro sign */
	{"\xce\xbcs", 1000LL}, /* U+03BC Greek mu */
	{"ms", 1000000LL},
	{"s", 1000000000LL},
	{"m", 60000000000LL},
	{"h", 3600000000000LL},
};

int dg_duration_parse(const char *text, int64_t *out)
{
	const char *p = text;
	bool neg = false;
	if (!text || !*text)
		return DG_EINVAL;
	if (*p == '-' || *p == '+') {
		neg = *p == '-';
		p++;
	}
	if (strcmp(p, "0") == 0) {
		*out = 0;
		return 0;
	}
	if (!*p)
		return DG_EINVAL;
	double total = 0;
	while (*p) {
		/* a number: digits, optional fraction */
		const char *start = p;
		double v = 0;
		while (*p >= '0' && *p <= '9')
			v = v * 10 + (*p++ - '0');
		bool had_int = p > start;
		bool had_frac = false;
		if (*p == '.') {
			p++;
			double scale = 0.1;
			const char *fs = p;
			while (*p >= '0' && *p <= '9') {
				v += (*p++ - '0') * scale;
				scale /= 10;
			}
			had_frac = p > fs;
		}
		if (!had_int && !had_frac)
			return DG_EINVAL;
		/* a unit, required */
		size_t best = 0;
		int64_t mult = 0;
		for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
			size_t ul = strlen(units[i].unit);
			if (strncmp(p, units[i].unit, ul) == 0 && ul > best) {
				/* "m" must not swallow the "m" of "ms" */
				best = ul;
				mult = units[i].ns;
			}
		}
		if (!best)
			return DG_EINVAL;
		p += best;
		total += v * (double)mult;
		if (total > 9.2e18)
			return DG_EINVAL;
	}
	*out = (int64_t)llround(neg ? -total : total);
	return 0;
}

/* Go prints the fraction of a unit with trailing zeros removed. */
static int fmt_frac(char *buf, size_t len, uint64_t v, uint64_t unit, const char *suffix)
{
	uint64_t whole = v / unit, frac = v % unit;
	int n;
	if (frac == 0) {
		n = snprintf(buf, len, "%llu%s", (unsigned long long)whole, suffix);
	} else {
		char digits[32];
		int width = 0;
		for (uint64_t u = unit; u > 1; u /= 10)
			width++;
		int dn = snprintf(digits, sizeof(digits), "%0*llu", width & 31,
				  (unsigned long long)frac);
		if (dn < 0 || (size_t)dn >= sizeof(digits))
			return DG_ETOOBIG;
		size_t dl = strlen(digits);
		while (dl > 0 && digits[dl - 1] == '0')
			digits[--dl] = 0;
		n = snprintf(buf, len, "%llu.%s%s", (unsigned long long)whole, digits, suffix);
	}
	return (n < 0 || (size_t)n >= len) ? DG_ETOOBIG : 0;
}

int dg_duration_format(int64_t ns, char *buf, size_t len)
{
	char tmp[64];
	const char *sign = ns < 0 ? "-" : "";
	uint64_t v = ns < 0 ? (uint64_t)(-(ns + 1)) + 1 : (uint64_t)ns;
	int rv;
	if (v == 0) {
		rv = snprintf(tmp, sizeof(tmp), "0s") < 0 ? DG_EIO : 0;
	} else if (v < 1000ULL) {
		rv = fmt_frac(tmp, sizeof(tmp), v, 1, "ns");
	} else if (v < 1000000ULL) {
		rv = fmt_frac(tmp, sizeof(tmp), v, 1000ULL, "\xc2\xb5s");
	} else if (v < 1000000000ULL) {
		rv = fmt_frac(tmp, sizeof(tmp), v, 1000000ULL, "ms");
	} else {
		uint64_t h = v / 3600000000000ULL;
		uint64_t rem = v % 3600000000000ULL;
		uint64_t m = rem / 60000000000ULL;
		uint64_t s_ns = rem % 60000000000ULL;
		char secs[40];
		if ((rv = fmt_frac(secs, sizeof(secs), s_ns, 1000000000ULL, "s")) != 0)
			return rv;
		int n;
		if (h > 0)
			n = snprintf(tmp, sizeof(tmp), "%lluh%llum%s", (unsigned long long)h,
				     (unsigned long long)m, secs);
		else if (m > 0)
			n = snprintf(tmp, sizeof(tmp), "%llum%s", (unsigned long long)m, secs);
		else
			n = snprintf(tmp, sizeof(tmp), "%s", secs);
		rv = (n < 0 || (size_t)n >= sizeof(tmp)) ? DG_ETOOBIG : 0;
	}
	if (rv != 0)
		return rv;
	int n = snprintf(buf, len, "%s%s", sign, tmp);
	return (n < 0 || (size_t)n >= len) ? DG_ETOOBIG : 0;
}
