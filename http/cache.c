/* A cache of encoded read responses, keyed by path and query and valid for one index. A read
 * whose index has not moved since the body was built is answered from here with one copy, which
 * keeps the large discovery reads (health/service with many instances) as cheap as static files.
 * An entry is only ever reused for the same index, so it can never be stale: any change that
 * touches the result moves its index (catalog.c guarantees that for every read it indexes).
 *
 * Threads: guarded by one mutex, taken by whichever thread serves the request (MHD's HTTP and
 * HTTPS threads, federation's executor); held only to look up or store one entry. */
#include "http/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_MAX_ENTRIES 256
#define CACHE_MAX_BODY (256 * 1024) /* bigger bodies are rebuilt every time */

struct cache_entry {
	uint64_t index;
	char *body;
	size_t len;
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dg_map cache = {.nocase = false};

static void add_arg(void *cls, const char *key, const char *value)
{
	struct dg_buf *b = cls;
	/* index and wait only decide when to answer; the index is compared on its own */
	if (strcmp(key, "index") == 0 || strcmp(key, "wait") == 0)
		return;
	dg_buf_appendf(b, "&%s=%s", key, value ? value : "");
}

/* The key: method-independent (only GET handlers use it), path plus every query argument. */
static char *cache_key(struct dg_req *r)
{
	struct dg_buf b;
	dg_buf_init(&b);
	dg_buf_appendf(&b, "%s?", r->url);
	r->ops->args(r, add_arg, &b);
	return dg_buf_steal(&b, NULL);
}

int dg_reply_cached(struct dg_req *r, uint64_t index)
{
	char *key = cache_key(r);
	int rv = -1;
	if (!key)
		return -1;
	pthread_mutex_lock(&cache_mu);
	struct cache_entry *e = dg_map_find(&cache, key);
	if (e && e->index == index) {
		char *copy = malloc(e->len + 1);
		if (copy) {
			memcpy(copy, e->body, e->len);
			size_t len = e->len;
			pthread_mutex_unlock(&cache_mu);
			free(key);
			return dg_reply_json_text(r, 200, copy, len, index);
		}
	}
	pthread_mutex_unlock(&cache_mu);
	free(key);
	return rv;
}

int dg_reply_json_cache(struct dg_req *r, json_t *body, uint64_t index)
{
	size_t flags = r->q.pretty ? JSON_INDENT(4) : JSON_COMPACT;
	char *text = json_dumps(body, flags | JSON_ENCODE_ANY | JSON_REAL_PRECISION(15));
	json_decref(body);
	if (!text)
		return dg_reply_text(r, 500, "out of memory", 0);
	size_t len = strlen(text);
	if (r->q.pretty) {
		char *t = realloc(text, len + 2);
		if (!t) {
			free(text);
			return dg_reply_text(r, 500, "out of memory", 0);
		}
		text = t;
		text[len++] = '\n';
		text[len] = 0;
	}
	char *key = cache_key(r);
	struct cache_entry *e = key && len <= CACHE_MAX_BODY ? calloc(1, sizeof(*e)) : NULL;
	if (e && (e->body = malloc(len + 1)) != NULL) {
		memcpy(e->body, text, len + 1);
		e->len = len;
		e->index = index;
		void *old = NULL;
		pthread_mutex_lock(&cache_mu);
		if (cache.n >= CACHE_MAX_ENTRIES && !dg_map_find(&cache, key)) {
			/* full: start over rather than track recency; rebuilding is cheap */
			for (size_t i = 0; i < cache.n; i++) {
				struct cache_entry *x = cache.v[i].value;
				free(x->body);
				free(x);
			}
			dg_map_fini(&cache);
		}
		if (dg_map_put(&cache, key, e, &old) != 0) {
			free(e->body);
			free(e);
		}
		pthread_mutex_unlock(&cache_mu);
		if (old) {
			free(((struct cache_entry *)old)->body);
			free(old);
		}
	} else {
		free(e);
	}
	free(key);
	return dg_reply_json_text(r, 200, text, len, index);
}
