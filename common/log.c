/* Logging to stderr in Consul's shape: "2026-11-24T16:00:00.000Z [INFO]  module: message".
 * One fprintf per line, so lines from several threads never interleave. */
#include "common/common.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static enum dg_log_level log_level = DG_LOG_INFO;

void dg_log_set_level(enum dg_log_level level)
{
	log_level = level;
}

int dg_log_parse_level(const char *text, enum dg_log_level *out)
{
	static const struct {
		const char *name;
		enum dg_log_level level;
	} names[] = {{"trace", DG_LOG_TRACE}, {"debug", DG_LOG_DEBUG}, {"info", DG_LOG_INFO},
		     {"warn", DG_LOG_WARN},   {"err", DG_LOG_ERROR},   {"error", DG_LOG_ERROR}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (dg_streq_ci(text, names[i].name)) {
			*out = names[i].level;
			return 0;
		}
	}
	return DG_EINVAL;
}

void dg_log(enum dg_log_level level, const char *module, const char *fmt, ...)
{
	static const char *tags[] = {"[TRACE]", "[DEBUG]", "[INFO] ", "[WARN] ", "[ERROR]"};
	if (level < log_level)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char when[32];
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s %s: %s\n", when, ts.tv_nsec / 1000000, tags[level], module,
		msg);
}
