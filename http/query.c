/* Query-parameter parsing with Consul's exact rules (consul-api.md §1.2): presence-based flags,
 * value-based wan, Go durations for wait, and Consul's error texts. Pure: fuzzed alone. */
#include "http/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_str(char **dst, const char *v)
{
	char *d = strdup(v);
	if (!d)
		return DG_ENOMEM;
	free(*dst);
	*dst = d;
	return 0;
}

int dg_query_set(struct dg_query *q, const char *key, const char *value, char *err, size_t len)
{
	if (strlen(value) > DG_MAX_QUERY_VALUE) {
		snprintf(err, len, "Query parameter %s is too long", key);
		return DG_EINVAL;
	}
	if (strcmp(key, "dc") == 0)
		return *value ? set_str(&q->dc, value) : 0;
	if (strcmp(key, "index") == 0) {
		if (dg_parse_u64(value, &q->index) != 0) {
			snprintf(err, len, "Invalid index");
			return DG_EINVAL;
		}
		return 0;
	}
	if (strcmp(key, "wait") == 0) {
		int64_t ns;
		if (dg_duration_parse(value, &ns) != 0 || ns < 0) {
			snprintf(err, len, "Invalid wait time");
			return DG_EINVAL;
		}
		q->wait_ns = ns;
		return 0;
	}
	if (strcmp(key, "max_stale") == 0) {
		int64_t ns;
		if (dg_duration_parse(value, &ns) != 0) {
			snprintf(err, len, "Invalid max_stale value \"%s\"", value);
			return DG_EINVAL;
		}
		return 0;
	}
	/* presence-based flags: any value means on */
	static const struct {
		const char *name;
		size_t off;
	} flags[] = {
		{"stale", offsetof(struct dg_query, stale)},
		{"consistent", offsetof(struct dg_query, consistent)},
		{"pretty", offsetof(struct dg_query, pretty)},
		{"cached", offsetof(struct dg_query, cached)},
		{"recurse", offsetof(struct dg_query, recurse)},
		{"keys", offsetof(struct dg_query, keys)},
		{"raw", offsetof(struct dg_query, raw)},
	};
	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		if (strcmp(key, flags[i].name) == 0) {
			*(bool *)((char *)q + flags[i].off) = true;
			return 0;
		}
	}
	if (strcmp(key, "wan") == 0) {
		q->wan = *value != 0;
		return 0;
	}
	if (strcmp(key, "passing") == 0) {
		bool b = true;
		if (*value && dg_parse_bool(value, &b) != 0) {
			snprintf(err, len, "Invalid value for ?passing");
			return DG_EINVAL;
		}
		q->passing = b;
		return 0;
	}
	if (strcmp(key, "tag") == 0) {
		if (q->ntags >= sizeof(q->tags) / sizeof(q->tags[0])) {
			snprintf(err, len, "Too many tag filters");
			return DG_EINVAL;
		}
		if (!(q->tags[q->ntags] = strdup(value)))
			return DG_ENOMEM;
		q->ntags++;
		return 0;
	}
	if (strcmp(key, "node-meta") == 0) {
		if (!strchr(value, ':')) {
			snprintf(err, len, "Invalid node-meta filter \"%s\": must be key:value",
				 value);
			return DG_EINVAL;
		}
		if (q->nnode_meta >= sizeof(q->node_meta) / sizeof(q->node_meta[0])) {
			snprintf(err, len, "Too many node-meta filters");
			return DG_EINVAL;
		}
		if (!(q->node_meta[q->nnode_meta] = strdup(value)))
			return DG_ENOMEM;
		q->nnode_meta++;
		return 0;
	}
	if (strcmp(key, "separator") == 0 || strcmp(key, "seperator") == 0)
		return set_str(&q->separator, value);
	if (strcmp(key, "filter") == 0)
		return set_str(&q->filter, value);
	if (strcmp(key, "near") == 0)
		return set_str(&q->near, value);
	if (strcmp(key, "token") == 0)
		return set_str(&q->token, value);
	return 0; /* unknown parameters are endpoint-specific or ignored, as in Consul */
}

int dg_query_finish(struct dg_query *q, char *err, size_t len)
{
	if (q->stale && q->consistent) {
		snprintf(err, len, "Cannot specify ?stale with ?consistent, conflicting semantics.");
		return DG_EINVAL;
	}
	return 0;
}

void dg_query_fini(struct dg_query *q)
{
	free(q->dc);
	free(q->separator);
	free(q->filter);
	free(q->near);
	free(q->token);
	for (size_t i = 0; i < q->ntags; i++)
		free(q->tags[i]);
	for (size_t i = 0; i < q->nnode_meta; i++)
		free(q->node_meta[i]);
	memset(q, 0, sizeof(*q));
}

uint64_t dg_query_block_ms(int64_t wait_ns, uint32_t random)
{
	const uint64_t max_ms = 600000, default_ms = 300000;
	uint64_t ms = wait_ns > 0 ? (uint64_t)(wait_ns / 1000000) : default_ms;
	if (ms > max_ms)
		ms = max_ms;
	if (wait_ns > 0 && ms == 0)
		ms = 1;
	uint64_t jitter_span = ms / 16;
	return ms + (jitter_span ? random % jitter_span : 0);
}
