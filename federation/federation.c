/* federation/federation.c: forwarding requests to other datacenters over the WAN pool, serving
 * the ones forwarded to us through our own HTTP API (federation/exec.c), and the pool's view as
 * Consul's datacenter list and WAN members.
 *
 * Threads: no lock of its own beyond counters (atomics); the WAN pool and the executor guard
 * their state. A forward's context lives from dg_fed_forward() to its callback. */
#include "federation/federation.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "federation/exec.h"
#include "federation/internal.h"

#define FED "fed"
#define DEFAULT_TIMEOUT_MS 10000
/* time for the WAN on top of what the remote may take */
#define WAN_MARGIN_MS 5000

/* A local caller waiting for a forwarded read. */
struct waiter {
	dg_fed_done_fn cb;
	void *arg;
	struct waiter *next;
};

/* One request on the WAN, with every local caller that asked for exactly it (reads only: the
 * same DC, path, query and headers). 10,000 clients blocked on the same remote query make one
 * WAN request, and its answer wakes them all. */
struct forward {
	dg_fed *f;
	char *key;	      /* NULL: not shared (writes) */
	struct waiter *waiters; /* f->mu */
	size_t nwaiters;
	struct forward *next; /* in its bucket of f->flights (f->mu) */
};

/* Shared reads in flight, hashed by key: a new read looks for its twin and a finished one
 * unlinks itself without walking every flight (10,000 distinct remote watchers are 10,000
 * flights). */
#define FLIGHT_BUCKETS 4096
/* Kept ?cached answers (up to CACHE_MAX), hashed by key the same way, for the same reason. */
#define CACHE_BUCKETS 4096

/* A kept answer of a remote read for ?cached, refreshed by blocking queries. */
struct centry {
	char *key;			/* the request's cache key (read_key) */
	struct dg_fed_request req;	/* a copy: dc, path_query, headers (owned) */
	char *dc, *path;		/* owned strings the copy points to */
	struct dg_fed_response resp;	/* the last answer (status 200) */
	uint64_t index;			/* its X-Consul-Index, 0 unknown */
	uint64_t confirmed_ms;		/* when the remote last confirmed it */
	uint64_t failing_since_ms;	/* 0 while refreshes succeed */
	uint64_t used_ms;		/* last read */
	uint64_t retry_ms;		/* a failed refresh is tried again then */
	bool refreshing;		/* a refresh is in flight */
	struct centry *next;
	struct centry *hnext; /* in its bucket of f->cache_index */
};

/* Flood join (Consul's floodJoins): every server joins the WAN pool with each alive server of its
 * own DC that LAN gossip shows and the pool does not know. Without it, only the servers given a
 * WAN join address (retry_join_wan, -join-wan, PUT /v1/agent/join?wan=1) are ever in the pool:
 * in a DC of three servers where one of them has retry_join_wan, the other two answer every
 * ?dc= with "No path to datacenter" (and so do the client agents that send ?dc= to them), and
 * other DCs never forward to them, so losing the one joined server cuts the DC off. Servers
 * without a WAN pool do not tell a wan_join_port and are passed over. A member whose join
 * failed (its WAN listener is down) is tried again after 5 s,
 * then 10, 20, 40, 60 s at most, so it costs one warning a minute. */
#define FLOOD_INTERVAL_MS 1000
#define FLOOD_BACKOFF_MIN_MS 5000
#define FLOOD_BACKOFF_MAX_MS 60000
#define FLOOD_MAX 64 /* servers of this DC missing from the pool, tracked at once */

struct flood_entry {
	char name[DG_WAN_NAME_MAX]; /* "<node>.<dc>" */
	uint64_t next_ms;	    /* next join attempt */
	unsigned backoff_ms;	    /* 0: never tried */
};

struct dg_fed {
	dg_wan *wan;
	dg_lan *lan; /* serving its client agents, or NULL */
	char *dc;
	dg_exec *exec;
	pthread_mutex_t mu; /* guards flights and the cache */
	struct forward *flights[FLIGHT_BUCKETS];
	struct centry *cache; /* every entry, for the refresher */
	struct centry *cache_index[CACHE_BUCKETS];
	size_t ncache;
	pthread_cond_t cond;
	pthread_t refresher;
	bool refresher_started, stopping;
	bool stopped; /* dg_fed_stop has run */
	_Atomic uint64_t forwards, forward_errors, in_flight, served, coalesced;
	_Atomic uint64_t cache_hits, cache_misses;
	/* the refresher thread's only: servers of this DC the WAN pool lacks */
	struct flood_entry flood[FLOOD_MAX];
	size_t nflood;
	uint64_t flood_ms; /* last pass */
};

static uint32_t key_hash(const char *key)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static struct forward **flight_bucket(dg_fed *f, const char *key)
{
	return &f->flights[key_hash(key) % FLIGHT_BUCKETS];
}

/* With f->mu held. */
static struct forward *flight_find(dg_fed *f, const char *key)
{
	for (struct forward *fw = *flight_bucket(f, key); fw; fw = fw->next)
		if (strcmp(fw->key, key) == 0)
			return fw;
	return NULL;
}

/* With f->mu held; fw->key set. */
static void flight_add(dg_fed *f, struct forward *fw)
{
	struct forward **b = flight_bucket(f, fw->key);
	fw->next = *b;
	*b = fw;
}

/* With f->mu held. A flight that was never added (a write: no key) is not looked for. */
static void flight_del(dg_fed *f, struct forward *fw)
{
	if (!fw->key)
		return;
	for (struct forward **pp = flight_bucket(f, fw->key); *pp; pp = &(*pp)->next)
		if (*pp == fw) {
			*pp = fw->next;
			break;
		}
}

void dg_fed_response_fini(struct dg_fed_response *r)
{
	json_decref(r->headers);
	free(r->body);
	memset(r, 0, sizeof(*r));
}

/* ---- serving requests forwarded to us ---- */

struct served {
	dg_fed *f;
	struct dg_wan_job *job;
};

static void served_done(void *arg, int status, json_t *headers, const char *body, size_t len,
			const char *err)
{
	struct served *s = arg;
	if (status == 0) {
		json_t *e = json_pack("{s:s}", "Error", err ? err : "no answer from the HTTP API");
		dg_wan_reply(s->job, DG_WAN_ERROR, e, NULL, 0);
		json_decref(e);
	} else {
		json_t *h = json_pack("{s:i, s:o}", "Status", status, "Headers",
				      headers ? json_incref(headers) : json_object());
		dg_wan_reply(s->job, DG_WAN_HTTP_REPLY, h, body, len);
		json_decref(h);
	}
	free(s); /* headers stay the executor's */
}

const char *dg__fed_run(dg_fed *f, const struct dg_wan_msg *m, bool from_wan, dg_exec_done_fn cb,
			void *arg)
{
	const char *method = json_string_value(json_object_get(m->hdr, "Method"));
	const char *path = json_string_value(json_object_get(m->hdr, "Path"));
	json_t *headers = json_object_get(m->hdr, "Headers");
	json_t *to = json_object_get(m->hdr, "TimeoutMs");
	if (m->type != DG_WAN_HTTP || !method || !path || path[0] != '/' ||
	    (headers && !json_is_object(headers)))
		return "a forwarded request needs Method, Path (from /) and Headers (an object)";
	if (!f->exec)
		return "this server cannot serve forwarded requests (no HTTP API executor)";
	unsigned ms = json_is_integer(to) && json_integer_value(to) > 0 &&
			      json_integer_value(to) < 3600000
			  ? (unsigned)json_integer_value(to)
			  : DEFAULT_TIMEOUT_MS;
	if (from_wan) /* the federation counter: requests of other DCs */
		atomic_fetch_add(&f->served, 1);
	if (dg_exec_request(f->exec, method, path, headers, m->body, m->body_len, ms, cb, arg) != 0)
		return "the HTTP API executor is not accepting requests";
	return NULL;
}

static void serve(void *arg, struct dg_wan_job *job, const struct dg_wan_msg *m)
{
	dg_fed *f = arg;
	struct served *s = calloc(1, sizeof(*s));
	const char *why = s ? NULL : "out of memory";
	if (s) {
		s->f = f;
		s->job = job;
		if ((why = dg__fed_run(f, m, true, served_done, s)) != NULL)
			free(s);
	}
	if (why) {
		json_t *e = json_pack("{s:s}", "Error", why);
		dg_wan_reply(job, DG_WAN_ERROR, e, NULL, 0);
		json_decref(e);
	}
}

/* ---- forwarding ---- */

/* A copy of r for one more waiter (NULL body stays NULL). */
static int response_copy(const struct dg_fed_response *r, struct dg_fed_response *out)
{
	out->status = r->status;
	out->len = r->len;
	out->headers = json_deep_copy(r->headers);
	out->body = r->len ? malloc(r->len) : NULL;
	if (!out->headers || (r->len && !out->body)) {
		dg_fed_response_fini(out);
		return DG_ENOMEM;
	}
	if (r->len)
		memcpy(out->body, r->body, r->len);
	return 0;
}

int dg__fed_response_read(const struct dg_wan_msg *reply, struct dg_fed_response *out,
			  bool from_lan)
{
	if (reply->type != DG_WAN_HTTP_REPLY) {
		const char *e = json_string_value(json_object_get(reply->hdr, "Error"));
		DG_LOGW(FED, "%s: %s",
			from_lan ? "a server refused this agent's request"
				 : "forwarded request refused by the remote server",
			e ? e : dg_wan_type_name(reply->type));
		return DG_EIO;
	}
	json_t *st = json_object_get(reply->hdr, "Status");
	json_t *hd = json_object_get(reply->hdr, "Headers");
	out->status = json_is_integer(st) ? (int)json_integer_value(st) : 0;
	if (out->status < 100 || out->status > 599 || (hd && !json_is_object(hd)))
		return DG_EIO;
	/* shared, not copied: the message is freed after the callbacks and nothing else touches
	 * its headers (jansson's reference counts are atomic) */
	out->headers = hd ? json_incref(hd) : json_object();
	if (reply->body_len) {
		if (!(out->body = malloc(reply->body_len)))
			return DG_ENOMEM;
		memcpy(out->body, reply->body, reply->body_len);
	}
	out->len = reply->body_len;
	return 0;
}

static void forward_done(void *arg, int err, const struct dg_wan_msg *reply)
{
	struct forward *fw = arg;
	dg_fed *f = fw->f;
	struct dg_fed_response resp = {0};
	atomic_fetch_sub(&f->in_flight, 1);
	if (err == 0)
		err = dg__fed_response_read(reply, &resp, false);
	/* no one can join this flight from here on */
	pthread_mutex_lock(&f->mu);
	flight_del(f, fw);
	struct waiter *ws = fw->waiters;
	fw->waiters = NULL;
	pthread_mutex_unlock(&f->mu);
	if (err != 0)
		atomic_fetch_add(&f->forward_errors, 1);
	while (ws) {
		struct waiter *w = ws;
		ws = w->next;
		struct dg_fed_response mine = {0};
		int e = err;
		if (e == 0 && ws) /* all but the last get a copy; the last takes the original */
			e = response_copy(&resp, &mine);
		else if (e == 0) {
			mine = resp;
			memset(&resp, 0, sizeof(resp));
		}
		w->cb(w->arg, e, e == 0 ? &mine : NULL);
		dg_fed_response_fini(&mine);
		free(w);
	}
	dg_fed_response_fini(&resp);
	free(fw->key);
	free(fw);
}

/* The identity of a read for sharing: every byte that could change its answer. For the ?cached
 * copies, Cache-Control is left out: it says how old an answer may be, not which answer. */
static char *read_key(const struct dg_fed_request *req, bool for_cache)
{
	const json_t *h = req->headers;
	json_t *copy = NULL;
	if (for_cache && h && json_object_size(h) > 0) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)h, k, v) if (strcasecmp(k, "Cache-Control") == 0)
		{
			copy = json_deep_copy(h);
			break;
		}
		if (copy) {
			void *tmp;
			json_object_foreach_safe(copy, tmp, k, v) if (strcasecmp(k, "Cache-Control") == 0)
			    json_object_del(copy, k);
			h = copy;
		}
	}
	/* most forwarded reads carry no headers: no need to ask jansson for "{}" */
	char *hdrs = h && json_object_size(h) > 0 ? json_dumps(h, JSON_SORT_KEYS | JSON_COMPACT)
						  : strdup("{}");
	json_decref(copy);
	if (!hdrs)
		return NULL;
	size_t n = strlen(req->dc) + strlen(req->method) + strlen(req->path_query) +
		   strlen(hdrs) + 4;
	char *k = malloc(n);
	if (k)
		snprintf(k, n, "%s\n%s\n%s\n%s", req->dc, req->method, req->path_query, hdrs);
	free(hdrs);
	return k;
}

/* True if a read is a blocking query: its query string has index= (or a name with a %-escape,
 * which might decode to index: such reads are not batched, to be safe). A blocking query may
 * wait minutes, so it must not travel in a batch whose other answers would wait with it. */
static bool may_block(const char *path_query)
{
	const char *q = strchr(path_query, '?');
	while (q) {
		const char *name = q + 1;
		size_t len = strcspn(name, "=&");
		if ((len == 5 && memcmp(name, "index", 5) == 0) || memchr(name, '%', len))
			return true;
		q = strchr(name, '&');
	}
	return false;
}

int dg_fed_forward(dg_fed *f, const struct dg_fed_request *req, dg_fed_done_fn cb, void *arg)
{
	if (!f || !f->wan)
		return DG_ENOPATH;
	if (strcmp(req->dc, f->dc) == 0)
		return DG_EINVAL;
	bool read = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
	struct waiter *w = calloc(1, sizeof(*w));
	char *key = read && !req->len ? read_key(req, false) : NULL;
	if (!w || (read && !req->len && !key)) {
		free(w);
		free(key);
		return DG_ENOMEM;
	}
	w->cb = cb;
	w->arg = arg;
	/* the same read already on its way: wait for its answer */
	if (key) {
		pthread_mutex_lock(&f->mu);
		struct forward *fw = flight_find(f, key);
		if (fw) {
			w->next = fw->waiters;
			fw->waiters = w;
			fw->nwaiters++;
			pthread_mutex_unlock(&f->mu);
			atomic_fetch_add(&f->coalesced, 1);
			free(key);
			return 0;
		}
		pthread_mutex_unlock(&f->mu);
	}
	unsigned ms = req->timeout_ms ? req->timeout_ms : DEFAULT_TIMEOUT_MS;
	json_t *hdr = json_pack("{s:s, s:s, s:O, s:i}", "Method", req->method, "Path",
				req->path_query, "Headers",
				req->headers ? req->headers : json_object(), "TimeoutMs", (int)ms);
	struct forward *fw = calloc(1, sizeof(*fw));
	if (!hdr || !fw) {
		json_decref(hdr);
		free(fw);
		free(w);
		free(key);
		return DG_ENOMEM;
	}
	fw->f = f;
	fw->key = key;
	fw->waiters = w;
	fw->nwaiters = 1;
	/* published before the request leaves, so that a twin arriving meanwhile joins it; the
	 * WAN callback cannot run before dg_wan_request returns 0 ... or can, on another thread:
	 * it takes f->mu to unlink, so it finds the flight whole either way */
	if (key) {
		pthread_mutex_lock(&f->mu);
		flight_add(f, fw);
		pthread_mutex_unlock(&f->mu);
	}
	atomic_fetch_add(&f->forwards, 1);
	atomic_fetch_add(&f->in_flight, 1);
	/* reads may go to another server when theirs fails; non-blocking ones may also share a
	 * WAN message with other reads to the same server (wan/wan.c batches them) */
	unsigned flags = !read ? 0
			 : req->len || may_block(req->path_query) ? DG_WAN_REQ_RETRYABLE
								  : DG_WAN_REQ_BATCHABLE;
	int rv = dg_wan_request(f->wan, req->dc, DG_WAN_HTTP, hdr, req->body, req->len,
				ms + WAN_MARGIN_MS, flags, forward_done, fw);
	json_decref(hdr);
	if (rv != 0) {
		/* refused at once: twins that joined meanwhile get the same answer */
		atomic_fetch_sub(&f->in_flight, 1);
		atomic_fetch_add(&f->forward_errors, 1);
		pthread_mutex_lock(&f->mu);
		flight_del(f, fw);
		struct waiter *ws = fw->waiters;
		pthread_mutex_unlock(&f->mu);
		/* the first waiter is the caller, who gets rv as the return value */
		while (ws) {
			struct waiter *x = ws;
			ws = x->next;
			if (x != w)
				x->cb(x->arg, rv, NULL);
			free(x);
		}
		free(fw->key);
		free(fw);
	}
	return rv;
}

/* ---- ?cached: kept answers of remote reads ---- */

#define CACHE_MAX 4096		       /* kept answers */
#define CACHE_IDLE_MS (10 * 60 * 1000) /* one not read for this long is dropped */
#define REFRESH_WAIT "5m"	       /* each background refresh is a blocking query */
#define REFRESH_TIMEOUT_MS (5 * 60 * 1000 + 5 * 60 * 1000 / 16 + 5000)
#define REFRESH_RETRY_MS 1000

static uint64_t header_index(json_t *headers)
{
	const char *k;
	json_t *v;
	json_object_foreach(headers, k, v) if (strcasecmp(k, "X-Consul-Index") == 0 &&
						json_is_string(v)) return strtoull(
	    json_string_value(v), NULL, 10);
	return 0;
}

/* With f->mu held, as the two below. */
static struct centry *cache_find(dg_fed *f, const char *key)
{
	for (struct centry *e = f->cache_index[key_hash(key) % CACHE_BUCKETS]; e; e = e->hnext)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void cache_index_add(dg_fed *f, struct centry *e)
{
	struct centry **b = &f->cache_index[key_hash(e->key) % CACHE_BUCKETS];
	e->hnext = *b;
	*b = e;
}

static void cache_index_del(dg_fed *f, struct centry *e)
{
	for (struct centry **pp = &f->cache_index[key_hash(e->key) % CACHE_BUCKETS]; *pp;
	     pp = &(*pp)->hnext)
		if (*pp == e) {
			*pp = e->hnext;
			break;
		}
}

static void centry_free(struct centry *e)
{
	free(e->key);
	free(e->dc);
	free(e->path);
	json_decref(e->req.headers);
	dg_fed_response_fini(&e->resp);
	free(e);
}

/* A hit: a copy of the kept answer with X-Cache and Age (the seconds since the remote DC last
 * confirmed it; 0 while background refreshes succeed). With f->mu held. */
static void cached_reply(struct centry *e, uint64_t now, struct dg_fed_response *out)
{
	if (response_copy(&e->resp, out) != 0)
		return;
	uint64_t age_ms = e->failing_since_ms ? now - e->confirmed_ms : 0;
	char age[32];
	snprintf(age, sizeof(age), "%llu", (unsigned long long)(age_ms / 1000));
	json_object_set_new(out->headers, "X-Cache", json_string("HIT"));
	json_object_set_new(out->headers, "Age", json_string(age));
}

struct refresh {
	dg_fed *f;
	char *key;
};

static void refresh_start(dg_fed *f, struct centry *e);

static void refresh_done(void *arg, int err, struct dg_fed_response *resp)
{
	struct refresh *r = arg;
	dg_fed *f = r->f;
	uint64_t now = dg_now_ms();
	pthread_mutex_lock(&f->mu);
	struct centry *e = cache_find(f, r->key);
	if (e) {
		e->refreshing = false;
		if (err == 0 && resp->status == 200) {
			dg_fed_response_fini(&e->resp);
			e->resp = *resp;
			memset(resp, 0, sizeof(*resp));
			e->index = header_index(e->resp.headers);
			e->confirmed_ms = now;
			e->failing_since_ms = 0;
			e->retry_ms = now; /* the next blocking query at once */
		} else {
			if (!e->failing_since_ms)
				e->failing_since_ms = now;
			e->retry_ms = now + REFRESH_RETRY_MS;
		}
		pthread_cond_signal(&f->cond);
	}
	pthread_mutex_unlock(&f->mu);
	free(r->key);
	free(r);
}

/* With f->mu held: sends e's blocking refresh (the WAN call does not call back under it). */
static void refresh_start(dg_fed *f, struct centry *e)
{
	struct refresh *r = calloc(1, sizeof(*r));
	size_t n = strlen(e->path) + 64;
	char *pq = malloc(n);
	if (!r || !pq || !(r->key = strdup(e->key))) {
		free(r ? r->key : NULL);
		free(r);
		free(pq);
		e->retry_ms = dg_now_ms() + REFRESH_RETRY_MS;
		return;
	}
	r->f = f;
	snprintf(pq, n, "%s%cindex=%llu&wait=%s", e->path, strchr(e->path, '?') ? '&' : '?',
		 (unsigned long long)e->index, REFRESH_WAIT);
	struct dg_fed_request q = e->req;
	q.path_query = pq;
	q.timeout_ms = REFRESH_TIMEOUT_MS;
	e->refreshing = true;
	/* dg_fed_forward takes f->mu only to share flights: release it around the call */
	pthread_mutex_unlock(&f->mu);
	int rv = dg_fed_forward(f, &q, refresh_done, r);
	pthread_mutex_lock(&f->mu);
	free(pq);
	if (rv != 0) {
		struct centry *again = cache_find(f, r->key);
		if (again) {
			again->refreshing = false;
			if (!again->failing_since_ms)
				again->failing_since_ms = dg_now_ms();
			again->retry_ms = dg_now_ms() + REFRESH_RETRY_MS;
		}
		free(r->key);
		free(r);
	}
}

static const char *member_tag(json_t *m, const char *key)
{
	return json_string_value(json_object_get(json_object_get(m, "Tags"), key));
}

/* One flood-join pass (see FLOOD_INTERVAL_MS): a WAN join for each alive LAN server of this DC
 * that the pool does not know and is due. Refresher thread, without f->mu (the LAN and the WAN
 * pool take their own locks). */
static void flood_pass(dg_fed *f, uint64_t now)
{
	json_t *lan = dg_lan_members(f->lan);
	struct dg_wan_member *wm = NULL;
	size_t nw = dg_wan_members(f->wan, &wm);
	struct flood_entry keep[FLOOD_MAX];
	size_t nkeep = 0, i;
	json_t *m;
	json_array_foreach(lan, i, m)
	{
		const char *node = json_string_value(json_object_get(m, "Name"));
		const char *addr = json_string_value(json_object_get(m, "Addr"));
		const char *role = member_tag(m, "role"), *dc = member_tag(m, "dc");
		const char *port = member_tag(m, "wan_join_port");
		char name[DG_WAN_NAME_MAX], target[300];
		/* no wan_join_port: a server without a WAN pool (no certificates) */
		if (!node || !addr || !role || strcmp(role, "consul") != 0 || !port || !dc ||
		    strcmp(dc, f->dc) != 0 || json_integer_value(json_object_get(m, "Status")) != 1)
			continue;
		int n = snprintf(name, sizeof(name), "%s.%s", node, dc);
		if (n < 0 || (size_t)n >= sizeof(name))
			continue;
		bool known = false;
		for (size_t j = 0; j < nw && !known; j++)
			known = strcmp(wm[j].m.name, name) == 0;
		if (known || nkeep == FLOOD_MAX)
			continue;
		struct flood_entry e = {.next_ms = now};
		snprintf(e.name, sizeof(e.name), "%s", name);
		for (size_t j = 0; j < f->nflood; j++)
			if (strcmp(f->flood[j].name, name) == 0)
				e = f->flood[j];
		if (now >= e.next_ms) {
			n = snprintf(target, sizeof(target), "%s:%s", addr, port);
			if (n > 0 && (size_t)n < sizeof(target)) {
				DG_LOGI(FED, "flood join: %s (%s) is a server of this DC the WAN pool "
					     "does not know; joining it",
					name, target);
				dg_wan_join(f->wan, target, NULL, NULL); /* the outcome is logged there */
			}
			e.backoff_ms = e.backoff_ms ? 2 * e.backoff_ms : FLOOD_BACKOFF_MIN_MS;
			if (e.backoff_ms > FLOOD_BACKOFF_MAX_MS)
				e.backoff_ms = FLOOD_BACKOFF_MAX_MS;
			e.next_ms = now + e.backoff_ms;
		}
		keep[nkeep++] = e;
	}
	memcpy(f->flood, keep, nkeep * sizeof(keep[0]));
	f->nflood = nkeep;
	free(wm);
	json_decref(lan);
}

/* The refresher thread: starts due refreshes and drops answers nobody reads any more; on a
 * server, the flood join too. */
static void *refresher_main(void *arg)
{
	dg_fed *f = arg;
	pthread_mutex_lock(&f->mu);
	while (!f->stopping) {
		struct timespec ts = dg_realtime_in_ms(250);
		pthread_cond_timedwait(&f->cond, &f->mu, &ts);
		if (f->stopping)
			break;
		uint64_t now = dg_now_ms();
		if (f->lan && f->wan && now - f->flood_ms >= FLOOD_INTERVAL_MS) {
			f->flood_ms = now;
			pthread_mutex_unlock(&f->mu);
			flood_pass(f, now);
			pthread_mutex_lock(&f->mu);
			if (f->stopping)
				break;
		}
		for (struct centry **pp = &f->cache; *pp;) {
			struct centry *e = *pp;
			if (!e->refreshing && now - e->used_ms > CACHE_IDLE_MS) {
				*pp = e->next;
				cache_index_del(f, e);
				f->ncache--;
				centry_free(e);
				continue;
			}
			pp = &e->next;
		}
		/* refresh_start drops the lock, but only this thread removes entries (others add at
		 * the head), so e and its next are still there when it returns: one pass */
		for (struct centry *e = f->cache; e && !f->stopping; e = e->next)
			if (!e->refreshing && now >= e->retry_ms)
				refresh_start(f, e);
	}
	pthread_mutex_unlock(&f->mu);
	return NULL;
}

struct cached_call {
	dg_fed *f;
	char *key;
	struct dg_fed_request req; /* copies, for keeping the answer */
	char *dc, *path;
	json_t *headers;
	int64_t stale_if_error_s;
	dg_fed_done_fn cb;
	void *arg;
};

static void cached_call_free(struct cached_call *c)
{
	free(c->key);
	free(c->dc);
	free(c->path);
	json_decref(c->headers);
	free(c);
}

/* A fresh answer for a ?cached read arrived (or did not). */
static void cached_done(void *arg, int err, struct dg_fed_response *resp)
{
	struct cached_call *c = arg;
	dg_fed *f = c->f;
	uint64_t now = dg_now_ms();
	struct dg_fed_response out = {0};
	pthread_mutex_lock(&f->mu);
	struct centry *e = cache_find(f, c->key);
	if (err == 0 && resp->status == 200) {
		if (!e && f->ncache < CACHE_MAX && (e = calloc(1, sizeof(*e)))) {
			e->key = c->key;
			e->dc = c->dc;
			e->path = c->path;
			e->req.headers = c->headers;
			c->key = c->dc = c->path = NULL;
			c->headers = NULL;
			e->req.dc = e->dc;
			e->req.method = "GET";
			e->req.path_query = e->path;
			e->next = f->cache;
			f->cache = e;
			cache_index_add(f, e);
			f->ncache++;
			e->retry_ms = now; /* the refresher starts the blocking refresh */
			pthread_cond_signal(&f->cond);
		}
		if (e) {
			dg_fed_response_fini(&e->resp);
			if (response_copy(resp, &e->resp) == 0) {
				e->index = header_index(e->resp.headers);
				e->confirmed_ms = now;
				e->failing_since_ms = 0;
			}
			e->used_ms = now;
		}
		json_object_set_new(resp->headers, "X-Cache", json_string("MISS"));
		json_object_set_new(resp->headers, "Age", json_string("0"));
		pthread_mutex_unlock(&f->mu);
		atomic_fetch_add(&f->cache_misses, 1);
		c->cb(c->arg, 0, resp);
		cached_call_free(c);
		return;
	}
	/* no fresh answer: a kept one if stale-if-error allows its age */
	bool stale_ok = e && e->resp.status && c->stale_if_error_s >= 0 &&
			now - e->confirmed_ms <= (uint64_t)c->stale_if_error_s * 1000;
	if (stale_ok) {
		if (!e->failing_since_ms)
			e->failing_since_ms = now;
		e->used_ms = now;
		cached_reply(e, now, &out);
	}
	pthread_mutex_unlock(&f->mu);
	if (stale_ok && out.headers) {
		atomic_fetch_add(&f->cache_hits, 1);
		c->cb(c->arg, 0, &out);
		dg_fed_response_fini(&out);
	} else if (err == 0) {
		atomic_fetch_add(&f->cache_misses, 1);
		c->cb(c->arg, 0, resp); /* the remote's own non-200 answer */
	} else {
		c->cb(c->arg, err, NULL);
	}
	cached_call_free(c);
}

int dg_fed_forward_cached(dg_fed *f, const struct dg_fed_request *req, int64_t max_age_s,
			  int64_t stale_if_error_s, dg_fed_done_fn cb, void *arg)
{
	if (!f || !f->wan)
		return DG_ENOPATH;
	if (strcmp(req->method, "GET") != 0 || req->len)
		return dg_fed_forward(f, req, cb, arg);
	char *key = read_key(req, true);
	if (!key)
		return DG_ENOMEM;
	uint64_t now = dg_now_ms();
	struct dg_fed_response out = {0};
	pthread_mutex_lock(&f->mu);
	struct centry *e = cache_find(f, key);
	bool hit = false;
	if (e && e->resp.status) {
		/* a hit is a kept answer whose refreshes succeed (so it is current, age 0), or
		 * one within the client's max-age. Otherwise a fresh answer is fetched, and the
		 * kept one served (in cached_done) only if that fails and stale-if-error allows
		 * its age. */
		uint64_t age_ms = e->failing_since_ms ? now - e->confirmed_ms : 0;
		hit = !e->failing_since_ms ||
		      (max_age_s >= 0 && age_ms <= (uint64_t)max_age_s * 1000);
		if (hit) {
			e->used_ms = now;
			cached_reply(e, now, &out);
		}
	}
	pthread_mutex_unlock(&f->mu);
	if (hit && out.headers) {
		free(key);
		atomic_fetch_add(&f->cache_hits, 1);
		cb(arg, 0, &out);
		dg_fed_response_fini(&out);
		return 0;
	}
	struct cached_call *c = calloc(1, sizeof(*c));
	if (!c) {
		free(key);
		return DG_ENOMEM;
	}
	c->f = f;
	c->key = key;
	c->dc = strdup(req->dc);
	c->path = strdup(req->path_query);
	c->headers = req->headers ? json_deep_copy(req->headers) : json_object();
	c->stale_if_error_s = stale_if_error_s;
	c->cb = cb;
	c->arg = arg;
	if (!c->dc || !c->path || !c->headers) {
		cached_call_free(c);
		return DG_ENOMEM;
	}
	int rv = dg_fed_forward(f, req, cached_done, c);
	if (rv == DG_ENOSERVER || rv == DG_ETIMEDOUT || rv == DG_EIO) {
		/* refused at once: the same stale-if-error rule as a failure later */
		cached_done(c, rv, NULL);
		return 0;
	}
	if (rv != 0)
		cached_call_free(c);
	return rv;
}

/* ---- the pool's view ---- */

struct dc_info {
	const char *dc;
	int alive, known;
	double rtts[64];
	int nrtt;
	int64_t last_contact; /* smallest, -1 none */
	bool local;
	double median;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static int cmp_dc(const void *a, const void *b)
{
	const struct dc_info *x = a, *y = b;
	if (x->local != y->local)
		return x->local ? -1 : 1;
	bool xr = x->median >= 0, yr = y->median >= 0;
	if (xr != yr)
		return xr ? -1 : 1;
	if (xr && x->median != y->median)
		return x->median < y->median ? -1 : 1;
	return strcmp(x->dc, y->dc);
}

/* Groups the members by DC, sorted nearest first. *ms is the member array the names point
 * into (caller frees both). */
static size_t dcs_of(dg_fed *f, struct dc_info **out, struct dg_wan_member **ms)
{
	struct dg_wan_member *m = NULL;
	size_t n = f->wan ? dg_wan_members(f->wan, &m) : 0;
	struct dc_info *d = calloc(n + 1, sizeof(*d));
	size_t nd = 0;
	if (!d) {
		free(m);
		*out = NULL;
		*ms = NULL;
		return 0;
	}
	if (n == 0) {
		d[0] = (struct dc_info){.dc = f->dc, .alive = 1, .known = 1, .local = true,
					.last_contact = 0};
		*out = d;
		*ms = m;
		return 1;
	}
	for (size_t i = 0; i < n; i++) {
		if (m[i].m.status == DG_WAN_LEFT)
			continue;
		struct dc_info *x = NULL;
		for (size_t k = 0; k < nd; k++)
			if (strcmp(d[k].dc, m[i].m.dc) == 0)
				x = &d[k];
		if (!x) {
			x = &d[nd++];
			x->dc = m[i].m.dc;
			x->last_contact = -1;
			x->local = strcmp(x->dc, f->dc) == 0;
		}
		x->known++;
		bool alive = m[i].self || ((m[i].m.status == DG_WAN_ALIVE ||
					    m[i].m.status == DG_WAN_SUSPECT) &&
					   m[i].linked);
		if (alive) {
			x->alive++;
			if (m[i].self && x->nrtt < 64)
				x->rtts[x->nrtt++] = 0;
			else if (m[i].rtt_ms >= 0 && x->nrtt < 64)
				x->rtts[x->nrtt++] = m[i].rtt_ms;
		}
		int64_t lc = m[i].self ? 0 : m[i].last_contact_ms;
		if (lc >= 0 && (x->last_contact < 0 || lc < x->last_contact))
			x->last_contact = lc;
	}
	for (size_t k = 0; k < nd; k++) {
		if (d[k].nrtt == 0) {
			d[k].median = -1;
			continue;
		}
		qsort(d[k].rtts, (size_t)d[k].nrtt, sizeof(double), cmp_double);
		d[k].median = d[k].nrtt % 2 ? d[k].rtts[d[k].nrtt / 2]
					    : (d[k].rtts[d[k].nrtt / 2 - 1] + d[k].rtts[d[k].nrtt / 2]) / 2;
	}
	qsort(d, nd, sizeof(*d), cmp_dc);
	*out = d;
	*ms = m;
	return nd;
}

json_t *dg_fed_datacenters(dg_fed *f)
{
	struct dc_info *d;
	struct dg_wan_member *m;
	size_t n = dcs_of(f, &d, &m);
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(d[i].dc));
	free(d);
	free(m);
	return a;
}

json_t *dg_fed_datacenters_detailed(dg_fed *f)
{
	struct dc_info *d;
	struct dg_wan_member *m;
	size_t n = dcs_of(f, &d, &m);
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++) {
		json_t *o = json_pack("{s:s, s:b, s:i, s:i, s:f, s:I, s:b}", "Datacenter", d[i].dc,
				      "Reachable", d[i].alive > 0, "ServersAlive", d[i].alive,
				      "ServersKnown", d[i].known, "MedianRTTMs",
				      d[i].median >= 0 ? round(d[i].median * 1000) / 1000 : -1.0,
				      "LastContactMs", (json_int_t)d[i].last_contact,
				      /* a single-server DC's server is its leader while it answers */
				      "LeaderKnown", d[i].alive > 0);
		json_array_append_new(a, o);
	}
	free(d);
	free(m);
	return a;
}

json_t *dg_fed_members(dg_fed *f)
{
	json_t *a = json_array();
	struct dg_wan_member *m = NULL;
	size_t n = f && f->wan ? dg_wan_members(f->wan, &m) : 0;
	for (size_t i = 0; i < n; i++) {
		const struct dg_wan_wire_member *w = &m[i].m;
		int status = w->status == DG_WAN_SUSPECT ? DG_WAN_ALIVE : w->status;
		char port[16], build[64];
		snprintf(port, sizeof(port), "%d", 8300);
		snprintf(build, sizeof(build), "%s:dcgate", w->build[0] ? w->build : "0");
		json_t *tags = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "role",
					 "consul", "dc", w->dc, "port", port, "vsn", "2", "vsn_min",
					 "2", "vsn_max", "3", "raft_vsn", "3", "build", build,
					 "segment", "");
		char wan_port[16];
		snprintf(wan_port, sizeof(wan_port), "%d", w->port);
		json_object_set_new(tags, "wan_join_port", json_string(wan_port));
		json_t *o = json_pack("{s:s, s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i}",
				      "Name", w->name, "Addr", w->addr, "Port", w->port, "Tags", tags,
				      "Status", status, "ProtocolMin", 1, "ProtocolMax", 5,
				      "ProtocolCur", 2, "DelegateMin", 2, "DelegateMax", 5,
				      "DelegateCur", 4);
		json_array_append_new(a, o);
	}
	free(m);
	return a;
}

int dg_fed_join(dg_fed *f, const char *addr, dg_fed_join_fn cb, void *arg)
{
	if (!f || !f->wan)
		return DG_EINVAL;
	return dg_wan_join(f->wan, addr, cb, arg);
}

int dg_fed_force_leave(dg_fed *f, const char *name)
{
	if (!f || !f->wan)
		return DG_ENOTFOUND;
	return dg_wan_force_leave(f->wan, name);
}

void dg_fed_stats(dg_fed *f, struct dg_fed_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (!f)
		return;
	out->forwards = atomic_load(&f->forwards);
	out->forward_errors = atomic_load(&f->forward_errors);
	out->in_flight = atomic_load(&f->in_flight);
	out->served = atomic_load(&f->served);
	out->coalesced = atomic_load(&f->coalesced);
	out->cache_hits = atomic_load(&f->cache_hits);
	out->cache_misses = atomic_load(&f->cache_misses);
	pthread_mutex_lock(&f->mu);
	out->cache_entries = f->ncache;
	pthread_mutex_unlock(&f->mu);
	if (f->wan) {
		struct dg_wan_stats ws;
		dg_wan_stats(f->wan, &ws);
		out->wan_bytes_sent = ws.bytes_sent;
		out->wan_bytes_received = ws.bytes_received;
		out->wan_probes = ws.probes;
		out->wan_probe_timeouts = ws.probe_timeouts;
		out->wan_suspicions = ws.suspicions;
		out->wan_failures = ws.failures_declared;
		out->wan_bad_messages = ws.bad_messages;
		out->wan_batches = ws.batches;
		out->wan_batched = ws.batched;
		out->wan_batch_resends = ws.batch_resends;
		out->wan_batches_served = ws.batches_served;
	}
}

int dg_fed_start(const struct dg_fed_config *cfg, dg_fed **out, char *msg, size_t len)
{
	dg_fed *f = calloc(1, sizeof(*f));
	if (!f || !(f->dc = strdup(cfg->dc))) {
		free(f);
		return DG_ENOMEM;
	}
	f->wan = cfg->wan;
	f->lan = cfg->lan;
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cond, NULL);
	if (f->wan || f->lan) {
		int rv = dg_exec_start(cfg->local, cfg->local_srv, &f->exec, msg, len);
		if (rv != 0) {
			free(f->dc);
			free(f);
			return rv;
		}
	}
	if (f->lan)
		dg__fed_lan_attach(f, f->lan);
	if (f->wan) {
		dg_wan_set_serve(f->wan, serve, f);
		if (pthread_create(&f->refresher, NULL, refresher_main, f) == 0)
			f->refresher_started = true;
	}
	*out = f;
	return 0;
}

void dg_fed_stop(dg_fed *f)
{
	if (!f || f->stopped)
		return;
	f->stopped = true; /* once: dg_fed_free calls it again after the WAN pool is gone */
	if (f->wan)
		dg_wan_set_serve(f->wan, NULL, NULL);
	if (f->lan)
		dg_lan_set_http_handler(f->lan, NULL, NULL);
	dg_exec_free(f->exec); /* answers what it still holds, through the live WAN pool */
	f->exec = NULL;
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_cond_broadcast(&f->cond);
	pthread_mutex_unlock(&f->mu);
	if (f->refresher_started) {
		pthread_join(f->refresher, NULL);
		f->refresher_started = false;
	}
}

void dg_fed_free(dg_fed *f)
{
	if (!f)
		return;
	dg_fed_stop(f);
	/* refreshes in flight ended with the WAN pool (dg_wan_free before this) */
	while (f->cache) {
		struct centry *e = f->cache;
		f->cache = e->next;
		centry_free(e);
	}
	pthread_cond_destroy(&f->cond);
	pthread_mutex_destroy(&f->mu);
	free(f->dc);
	free(f);
}
