/* common/regex.c: a cost check for POSIX extended regexes from clients (event filters), run
 * before regcomp(): glibc copies the operand of every repetition, so a short nested pattern can
 * take seconds and gigabytes to compile. Pure; fuzzed by tests/fuzz/fuzz_regex.c. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "common/common.h"

/* a * b, or cap when that is larger */
static size_t mul_cap(size_t a, size_t b, size_t cap)
{
	return a && b > cap / a ? cap : a * b > cap ? cap : a * b;
}

/* The end of the bracket expression that starts at p ('['): past its ']', or the NUL. */
static const char *bracket_end(const char *p)
{
	const char *q = p + 1;
	if (*q == '^')
		q++;
	if (*q == ']')
		q++; /* a leading ']' is a member */
	while (*q && *q != ']') {
		if (*q == '[' && (q[1] == ':' || q[1] == '=' || q[1] == '.')) {
			const char *e = q + 2;
			while (*e && !(e[0] == q[1] && e[1] == ']'))
				e++;
			q = *e ? e + 2 : q + 1;
		} else {
			q++;
		}
	}
	return *q ? q + 1 : q;
}

/* How many atoms the pattern from *pp up to its ')' (or the end) expands into, capped at cap;
 * *pp is left on that ')'. glibc's regcomp copies the operand of a repetition: n times for
 * {m,n}, m + 1 for {m,}, twice for '+' (x+ is x x*). Nested, the copies multiply:
 * "((a{1,100}){1,100}){1,100}" or twenty nested "(...)+" take seconds and gigabytes to
 * compile, on the thread that asks. Returns SIZE_MAX, with *why, for what Go's regexp refuses
 * anyway: groups nested deeper than DG_MAX_REGEX_DEPTH and back-references (RE2 has none, and
 * glibc may take exponential time to match them). */
static size_t re_cost(const char **pp, int depth, size_t cap, const char **why)
{
	const char *p = *pp;
	size_t total = 0, last = 0; /* last: the previous atom's cost, what a repetition copies */
	bool after_rep = false;	    /* the previous token was a repetition operator */
	while (*p && *p != ')') {
		size_t atom = 1, copies = 0;
		bool rep = last && (*p == '*' || *p == '?' || *p == '+' ||
				    (*p == '{' && ((p[1] >= '0' && p[1] <= '9') || p[1] == ',')));
		if (rep && after_rep) {
			/* "a**", "a+{2}": glibc compounds them (a 14-character "x+++*+++..." took
			 * 15 s to compile, found by fuzz_regex); Go refuses them too */
			*why = "invalid nested repetition operator";
			return SIZE_MAX;
		}
		after_rep = rep;
		if (*p == '|') {
			p++;
			last = 0;
			continue;
		} else if (last && (*p == '*' || *p == '?')) {
			p++; /* no copy: last stays what a following repetition copies */
			continue;
		} else if (last && *p == '+') {
			copies = 2;
			p++;
		} else if (*p == '(') {
			if (depth >= DG_MAX_REGEX_DEPTH) {
				*why = "expression nests too deeply";
				return SIZE_MAX;
			}
			p++;
			if ((atom = re_cost(&p, depth + 1, cap, why)) == SIZE_MAX)
				return SIZE_MAX;
			if (atom == 0)
				atom = 1; /* "()" is still a node that a repetition copies */
			if (*p != ')') {
				*why = "missing closing )";
				return SIZE_MAX;
			}
			p++;
		} else if (*p == '\\') {
			if (p[1] >= '0' && p[1] <= '9') {
				*why = "invalid escape sequence (back-reference)";
				return SIZE_MAX;
			}
			p += p[1] ? 2 : 1;
		} else if (*p == '[') {
			p = bracket_end(p);
		} else if (*p == '{' && last && ((p[1] >= '0' && p[1] <= '9') || p[1] == ',')) {
			/* {m}, {m,}, {m,n} or glibc's {,n} */
			size_t m = 0, n;
			const char *q = p + 1;
			for (; *q >= '0' && *q <= '9'; q++)
				m = m < cap ? m * 10 + (size_t)(*q - '0') : cap;
			n = m;
			if (*q == ',') {
				q++;
				n = *q >= '0' && *q <= '9' ? 0 : m + 1;
				for (; *q >= '0' && *q <= '9'; q++)
					n = n < cap ? n * 10 + (size_t)(*q - '0') : cap;
			}
			if (*q == '}') {
				copies = n > m ? n : m > 0 ? m : 1;
				p = q + 1;
			} else {
				/* not an interval to us; glibc may still read one ("{0,10\0}" with the
				 * escape matched for 20 s): count it as one, never less */
				copies = n > m ? n : m > 0 ? m : 1;
				p++;
			}
		} else {
			p++;
		}
		if (copies) {
			size_t grown = mul_cap(last, copies, cap);
			total = total - last + grown > cap ? cap : total - last + grown;
			last = grown;
			continue;
		}
		total = total + atom > cap ? cap : total + atom;
		last = atom;
	}
	*pp = p;
	return total;
}

/* Refuses what would be costly to compile or to run (see re_cost) before regcomp sees it.
 * Returns 0, or DG_EINVAL with *why in Go's words. */
int dg_regex_check(const char *pattern, const char **why)
{
	const char *p = pattern;
	size_t total = 0;
	/* glibc's epsilon closures grow with nested, repeated groups that can match nothing
	 * ("(()+)+"...) beyond what the copy count shows: found by fuzz_regex. Filters name nodes,
	 * services and tags; short and shallow is plenty. */
	if (strlen(pattern) > DG_MAX_REGEX_LEN) {
		*why = "expression too large";
		return DG_EINVAL;
	}
	while (*p) {
		size_t c = re_cost(&p, 0, DG_MAX_REGEX_COPIES + 1, why);
		if (c == SIZE_MAX)
			return DG_EINVAL;
		total += c;
		if (total > DG_MAX_REGEX_COPIES) {
			*why = "expression too large";
			return DG_EINVAL;
		}
		if (*p == ')') {
			/* glibc takes a stray ')' as a literal and goes on; with empty groups around
			 * it, compiling took seconds (fuzz_regex). Go refuses it. */
			*why = "unexpected )";
			return DG_EINVAL;
		}
	}
	return 0;
}

