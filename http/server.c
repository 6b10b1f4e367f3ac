/* The HTTP server: libmicrohttpd with one epoll thread, routing, answers in Consul's shape, and
 * the suspension of requests that wait for a raft write or a blocking query. Requests come from
 * MHD (the ops at the end of this file) or in process (local.c); from routing on, both take
 * exactly the same path.
 *
 * Threads: handlers run on MHD's threads (HTTP and HTTPS) and on federation's executor thread
 * (in-process calls). Parked blocking queries live in the waiter list under `wmu`; the loop
 * thread (change hook), the deadline thread and any caller of dg_http_wake() (events, from a
 * handler thread) take them off the list and resume them after dropping `wmu`; r->waiter is
 * only changed under `wmu`, so "on the list" can be asked (dg__http_unpark). A request on no
 * list and suspended is owned by whoever holds its pending resume (a write callback, the
 * waker, or federation's callback); nothing else touches it.
 *
 * Federation: a request for another DC is handed to dg_fed_forward() and suspended; the answer
 * comes back on one of federation's threads, which stores it in the request and resumes it, and
 * dispatch then answers with the remote status, headers and body as they are. */
#include "http/internal.h"
#include "http/https.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#define HTTP "http"
#define DG_HTTP_RETRY 2 /* a handler asks to be run again at once */

struct dg_waiter {
	struct dg_req *r;
	unsigned topics;
	char *key;
	bool prefix;
	uint64_t deadline_ms;
	struct dg_waiter *prev, *next;
};

struct dg_http {
	struct dg_http_config cfg;
	dg_catalog *cat;
	dg_lan *lan;
	struct dg__mhd *mhd; /* the daemon and the thread that runs it */
	struct MHD_Daemon *daemon;
	int port;

	pthread_mutex_t wmu; /* guards the waiter list, nwaiters and stopping */
	pthread_cond_t wcond;
	struct dg_waiter *waiters;
	size_t nwaiters;
	bool stopping;
	pthread_t deadline_thread;

	struct dg_http_stats stats; /* updated with atomic adds */
	int writes_in_flight;       /* suspended for a raft write; atomic */
	/* cfg.fed: read-locked around every dg_fed_* call so that dg_http_set_fed(NULL) can
	 * guarantee nobody still uses the old one */
	pthread_rwlock_t fedlock;
	pthread_mutex_t fmu; /* guards fed_parked and fed_done of every request */
	int feds_in_flight;  /* forwards and joins whose callback has not finished; atomic */
	struct dg_https https;
	struct sockaddr_in https_sa;
	uint64_t last_reap_s; /* deadline thread only */
};

extern const struct dg_route dg_routes_snapshot[]; /* snapshot_api.c */

static const struct dg_route *route_tables[] = {
    dg_routes_agent, dg_routes_catalog, dg_routes_coordinate, dg_routes_event, dg_routes_health,
    dg_routes_kv,    dg_routes_session, dg_routes_status,     dg_routes_txn, dg_routes_snapshot,
};

/* ---- accessors ---- */

dg_catalog *dg_http_cat(struct dg_req *r)
{
	return r->srv->cat;
}

dg_lan *dg_http_lan(struct dg_req *r)
{
	return r->srv->lan;
}

const struct dg_http_config *dg_http_cfg(struct dg_req *r)
{
	return &r->srv->cfg;
}

const char *dg_http_node(struct dg_req *r)
{
	return dg_lan_node(r->srv->lan);
}

const char *dg_http_dc(struct dg_req *r)
{
	return dg_cat_dc(r->srv->cat);
}

int dg_http_port(dg_http *h)
{
	return h->port;
}

void dg_http_stats(struct dg_req *r, struct dg_http_stats *out)
{
	struct dg_http_stats *s = &r->srv->stats;
	out->requests = __atomic_load_n(&s->requests, __ATOMIC_RELAXED);
	out->waiters_parked = __atomic_load_n(&s->waiters_parked, __ATOMIC_RELAXED);
	out->waiters_woken = __atomic_load_n(&s->waiters_woken, __ATOMIC_RELAXED);
	out->waiters_timed_out = __atomic_load_n(&s->waiters_timed_out, __ATOMIC_RELAXED);
	out->errors_4xx = __atomic_load_n(&s->errors_4xx, __ATOMIC_RELAXED);
	out->errors_5xx = __atomic_load_n(&s->errors_5xx, __ATOMIC_RELAXED);
}

size_t dg_http_forwards(struct dg_req *r)
{
	int n = __atomic_load_n(&r->srv->feds_in_flight, __ATOMIC_RELAXED);
	return n > 0 ? (size_t)n : 0;
}

dg_fed *dg_http_fed_acquire(struct dg_req *r)
{
	pthread_rwlock_rdlock(&r->srv->fedlock);
	return r->srv->cfg.fed;
}

void dg_http_fed_release(struct dg_req *r)
{
	pthread_rwlock_unlock(&r->srv->fedlock);
}

void dg_http_set_fed(dg_http *h, dg_fed *f)
{
	pthread_rwlock_wrlock(&h->fedlock);
	h->cfg.fed = f;
	pthread_rwlock_unlock(&h->fedlock);
}

bool dg_req_arg_present(struct dg_req *r, const char *name, const char **value)
{
	const char *v = NULL;
	if (!r->ops->arg(r, name, &v))
		return false;
	if (value)
		*value = v ? v : "";
	return true;
}

const char *dg_req_arg(struct dg_req *r, const char *name)
{
	const char *v = NULL;
	return r->ops->arg(r, name, &v) ? v : NULL;
}

const char *dg_req_header(struct dg_req *r, const char *name)
{
	return r->ops->header(r, name);
}

size_t dg_http_waiters(struct dg_req *r)
{
	pthread_mutex_lock(&r->srv->wmu);
	size_t n = r->srv->nwaiters;
	pthread_mutex_unlock(&r->srv->wmu);
	return n;
}

/* ---- answers ---- */

static void add_index_headers(struct dg_req *r, struct dg_resp *resp, uint64_t index)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(index ? index : 1));
	r->ops->resp_header(resp, "X-Consul-Index", buf);
	r->ops->resp_header(resp, "X-Consul-KnownLeader",
			    dg_lan_leader_known(r->srv->lan) ? "true" : "false");
	snprintf(buf, sizeof(buf), "%llu",
		 (unsigned long long)dg_lan_last_contact_ms(r->srv->lan));
	r->ops->resp_header(resp, "X-Consul-LastContact", buf);
	r->ops->resp_header(resp, "X-Consul-Effective-Consistency",
			    r->q.stale ? "stale" : r->q.consistent ? "consistent" : "leader");
}

/* Sends resp (consumed) as it is: a forwarded answer carries the remote DC's headers. */
static int queue_as_is(struct dg_req *r, int status, struct dg_resp *resp)
{
	if (status >= 500)
		__atomic_add_fetch(&r->srv->stats.errors_5xx, 1, __ATOMIC_RELAXED);
	else if (status >= 400)
		__atomic_add_fetch(&r->srv->stats.errors_4xx, 1, __ATOMIC_RELAXED);
	r->answered = true;
	return r->ops->respond(r, status, resp);
}

int dg_reply_resp(struct dg_req *r, int status, struct dg_resp *resp)
{
	r->ops->resp_header(resp, "X-Consul-Default-ACL-Policy", "allow");
	return queue_as_is(r, status, resp);
}

int dg_reply_raw(struct dg_req *r, int status, const void *data, size_t len,
		 const char *content_type, uint64_t index)
{
	struct dg_resp *resp = r->ops->resp_new(r, (void *)data, len, false);
	if (!resp)
		return MHD_NO;
	if (content_type)
		r->ops->resp_header(resp, "Content-Type", content_type);
	if (index)
		add_index_headers(r, resp, index);
	return dg_reply_resp(r, status, resp);
}

int dg_reply_json_text(struct dg_req *r, int status, char *text, size_t len, uint64_t index)
{
	struct dg_resp *resp = r->ops->resp_new(r, text, len, true);
	if (!resp)
		return MHD_NO;
	r->ops->resp_header(resp, "Content-Type", "application/json");
	if (index)
		add_index_headers(r, resp, index);
	return dg_reply_resp(r, status, resp);
}

int dg_reply_json(struct dg_req *r, int status, json_t *body, uint64_t index)
{
	size_t flags = r->q.pretty ? JSON_INDENT(4) : JSON_COMPACT;
	flags |= JSON_REAL_PRECISION(15); /* Go prints floats shortest; 17 digits show binary noise */
	char *text;
	if (!body) {
		text = strdup("null");
	} else {
		text = json_dumps(body, flags | JSON_ENCODE_ANY);
		json_decref(body);
	}
	if (!text)
		return dg_reply_text(r, 500, "out of memory", 0);
	size_t len = strlen(text);
	if (r->q.pretty) {
		char *t = realloc(text, len + 2);
		if (t) {
			text = t;
			text[len++] = '\n';
			text[len] = 0;
		}
	}
	return dg_reply_json_text(r, status, text, len, index);
}

int dg_reply_text(struct dg_req *r, int status, const char *text, uint64_t index)
{
	return dg_reply_raw(r, status, text, strlen(text), "text/plain; charset=utf-8", index);
}

int dg_reply_textf(struct dg_req *r, int status, uint64_t index, const char *fmt, ...)
{
	char *text = NULL;
	va_list ap;
	va_start(ap, fmt);
	int n = vasprintf(&text, fmt, ap);
	va_end(ap);
	if (n < 0)
		return dg_reply_text(r, 500, "out of memory", 0);
	int rv = dg_reply_text(r, status, text, index);
	free(text);
	return rv;
}

int dg_reply_empty(struct dg_req *r)
{
	return dg_reply_raw(r, 200, "", 0, NULL, 0);
}

/* One table from dg errors to HTTP status codes. */
static int status_of(int err)
{
	switch (err) {
	case DG_EINVAL:
		return 400;
	case DG_ENOTFOUND:
		return 404;
	case DG_ECONFLICT:
		return 409;
	case DG_ETOOBIG:
		return 413;
	case DG_EPERM:
		return 403;
	default:
		return 500;
	}
}

int dg_reply_write_error(struct dg_req *r)
{
	json_t *res = r->write_result;
	const char *err = json_string_value(json_object_get(res, "Error"));
	if (err) {
		json_int_t st = json_integer_value(json_object_get(res, "Status"));
		return dg_reply_text(r, st ? (int)st : 500, err, 0);
	}
	/* a write forwarded to the leader whose answer never came: it may or may not have been
	 * applied, which Consul reports as an RPC error */
	if (r->write_status == DG_ETIMEDOUT || r->write_status == DG_EIO || r->write_status == DG_EOF)
		return dg_reply_textf(r, 500, 0, "rpc error making call: %s",
				      dg_strerror(r->write_status));
	if (r->write_status != 0)
		return dg_reply_text(r, status_of(r->write_status), dg_strerror(r->write_status),
				     0);
	return dg_reply_text(r, 500, "write failed", 0);
}

/* ---- writes ---- */

static void write_cb(void *arg, int status, json_t *result)
{
	struct dg_req *r = arg;
	r->write_status = status;
	r->write_result = result;
	r->write_done = true;
	dg_http *h = r->srv;
	r->ops->resume(r); /* r may be gone from here on */
	__atomic_sub_fetch(&h->writes_in_flight, 1, __ATOMIC_RELEASE);
}

int dg_req_write(struct dg_req *r, json_t *cmd)
{
	dg_http *h = r->srv;
	r->ops->suspend(r);
	r->suspended = true;
	__atomic_add_fetch(&h->writes_in_flight, 1, __ATOMIC_RELAXED);
	/* the agent endpoints read this server's own copy: a write through them is answered once
	 * it has been applied here too */
	int rv = strncmp(r->url, "/v1/agent/", 10) == 0
			 ? dg_lan_write_then_read(h->lan, cmd, write_cb, r)
			 : dg_lan_write(h->lan, cmd, write_cb, r);
	if (rv != 0) {
		r->write_status = rv;
		r->write_done = true;
		r->ops->resume(r); /* before the handler returned: never frees r */
		__atomic_sub_fetch(&h->writes_in_flight, 1, __ATOMIC_RELEASE);
	}
	return MHD_YES;
}

/* ---- blocking queries ---- */

bool dg_req_should_block(struct dg_req *r, uint64_t result_index)
{
	if (r->q.index == 0 || result_index > r->q.index)
		return false;
	uint64_t now = dg_now_ms();
	if (r->deadline_ms == 0) {
		uint32_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
			rnd = (uint32_t)now;
		r->deadline_ms = now + dg_query_block_ms(r->q.wait_ns, rnd);
	}
	return now < r->deadline_ms && !r->srv->stopping;
}

static bool waiter_matches(const struct dg_waiter *w, const struct dg_cat_change *c)
{
	if (!(w->topics & c->topic))
		return false;
	if (!w->key || !c->key)
		return true;
	if (c->topic == DG_TOPIC_KV)
		return w->prefix ? strncmp(c->key, w->key, strlen(w->key)) == 0
				 : strcmp(c->key, w->key) == 0;
	return strcasecmp(c->key, w->key) == 0;
}

static void unlink_waiter(dg_http *h, struct dg_waiter *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		h->waiters = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
	w->r->waiter = NULL;
	h->nwaiters--;
}

/* Resumes every request of a list of waiters already unlinked (so held by the caller alone). */
static void resume_all(struct dg_waiter *list)
{
	while (list) {
		struct dg_waiter *next = list->next;
		struct dg_req *r = list->r;
		r->woken = true;
		free(list->key);
		free(list);
		r->ops->resume(r);
		list = next;
	}
}

bool dg__http_unpark(struct dg_req *r)
{
	dg_http *h = r->srv;
	struct dg_waiter *w;
	pthread_mutex_lock(&h->wmu);
	if ((w = r->waiter) != NULL)
		unlink_waiter(h, w);
	pthread_mutex_unlock(&h->wmu);
	if (w) {
		free(w->key);
		free(w);
	}
	return w != NULL;
}

/* Takes every waiter that one of the n changes matches, or (v NULL) every waiter of one of
 * topics, off the list and resumes it. Any thread; takes wmu, resumes after dropping it. */
static void wake_matching(dg_http *h, const struct dg_cat_change *v, size_t n, unsigned topics)
{
	struct dg_waiter *wake = NULL;
	size_t count = 0;
	pthread_mutex_lock(&h->wmu);
	for (struct dg_waiter *w = h->waiters, *next; w; w = next) {
		next = w->next;
		bool hit = !v && (w->topics & topics);
		for (size_t i = 0; v && !hit && i < n; i++)
			hit = waiter_matches(w, &v[i]);
		if (hit) {
			unlink_waiter(h, w);
			w->next = wake;
			wake = w;
			count++;
		}
	}
	pthread_mutex_unlock(&h->wmu);
	__atomic_add_fetch(&h->stats.waiters_woken, count, __ATOMIC_RELAXED);
	resume_all(wake);
}

/* The change hook: runs on the loop thread after every apply. */
static void on_changes(void *arg, const struct dg_cat_change *v, size_t n)
{
	wake_matching(arg, v, n, 0);
}

void dg_http_wake(dg_http *h, unsigned topics)
{
	wake_matching(h, NULL, 0, topics);
}

static void *deadline_main(void *arg)
{
	dg_http *h = arg;
	pthread_mutex_lock(&h->wmu);
	while (!h->stopping) {
		struct timespec ts = dg_realtime_in_ms(25);
		pthread_cond_timedwait(&h->wcond, &h->wmu, &ts);
		uint64_t now = dg_now_ms();
		if (h->cfg.https_port && now / 1000 != h->last_reap_s) {
			h->last_reap_s = now / 1000;
			dg_https_reap(&h->https);
		}
		struct dg_waiter *wake = NULL;
		size_t count = 0;
		for (struct dg_waiter *w = h->waiters, *next; w; w = next) {
			next = w->next;
			if (h->stopping || now >= w->deadline_ms) {
				unlink_waiter(h, w);
				w->next = wake;
				wake = w;
				count++;
			}
		}
		if (wake) {
			pthread_mutex_unlock(&h->wmu);
			__atomic_add_fetch(&h->stats.waiters_timed_out, count, __ATOMIC_RELAXED);
			resume_all(wake);
			pthread_mutex_lock(&h->wmu);
		}
	}
	pthread_mutex_unlock(&h->wmu);
	return NULL;
}

int dg_req_block(struct dg_req *r, unsigned topics, const char *key, bool prefix,
		 uint64_t seen_index)
{
	dg_http *h = r->srv;
	struct dg_waiter *w = calloc(1, sizeof(*w));
	if (!w || (key && !(w->key = strdup(key)))) {
		free(w);
		return dg_reply_text(r, 500, "out of memory", 0);
	}
	w->r = r;
	w->topics = topics;
	w->prefix = prefix;
	w->deadline_ms = r->deadline_ms;
	pthread_mutex_lock(&h->wmu);
	if (dg_cat_last_index(h->cat) != seen_index || h->stopping ||
	    h->nwaiters >= DG_MAX_WAITERS) {
		/* something was applied since the result was read (or no room): run again now */
		bool full = h->nwaiters >= DG_MAX_WAITERS && !h->stopping;
		pthread_mutex_unlock(&h->wmu);
		free(w->key);
		free(w);
		if (full)
			r->deadline_ms = dg_now_ms(); /* answer with what we have */
		return DG_HTTP_RETRY;
	}
	r->ops->suspend(r);
	r->suspended = true;
	r->waiter = w;
	w->next = h->waiters;
	if (h->waiters)
		h->waiters->prev = w;
	h->waiters = w;
	h->nwaiters++;
	pthread_mutex_unlock(&h->wmu);
	__atomic_add_fetch(&h->stats.waiters_parked, 1, __ATOMIC_RELAXED);
	return MHD_YES;
}

/* ---- one blocking read, with the response cache ---- */

/* The index and the result are read under one read lock; a query whose index has not moved
 * parks on topics/key; otherwise the answer comes from the response cache when a body for this
 * URL exists at this index, else it is built, then encoded after the lock is released and kept
 * for the next identical read. idx must move whenever the body could change: the cache trusts it. */
int dg_serve_read(struct dg_req *r, unsigned topics, const char *key, dg_index_fn idx,
		  dg_build_fn build)
{
	dg_catalog *cat = r->srv->cat;
	dg_cat_rdlock(cat);
	uint64_t seen = dg_cat_last_index(cat);
	uint64_t index = idx(r, cat);
	if (dg_req_should_block(r, index)) {
		dg_cat_unlock(cat);
		return dg_req_block(r, topics, key, false, seen);
	}
	int rv = dg_reply_cached(r, index);
	if (rv != -1) {
		dg_cat_unlock(cat);
		return rv;
	}
	json_t *out = build(r, cat);
	dg_cat_unlock(cat);
	if (!out)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json_cache(r, out, index);
}

/* ---- federation: forwarding to another DC, WAN joins ---- */

/* Every forward and join ends in fed_finish(), on federation's thread, after the results are
 * stored in r. The handler, on the MHD thread, suspends the request only if the callback has not
 * run yet (fed_park); both decide under fmu, so exactly one of them resumes or answers. The
 * callback does not touch r after the resume: from then on the thread serving r owns it again
 * and may free it. */
static void fed_finish(struct dg_req *r)
{
	dg_http *h = r->srv;
	pthread_mutex_lock(&h->fmu);
	r->fed_done = true;
	bool parked = r->fed_parked;
	pthread_mutex_unlock(&h->fmu);
	if (parked)
		r->ops->resume(r); /* r may be gone from here on */
	__atomic_sub_fetch(&h->feds_in_flight, 1, __ATOMIC_RELEASE);
}

/* After the forward or join was started: suspends the request unless the callback already ran.
 * True when suspended (the handler returns MHD_YES), false when the results are in r now. */
static bool fed_park(struct dg_req *r)
{
	dg_http *h = r->srv;
	pthread_mutex_lock(&h->fmu);
	bool done = r->fed_done;
	if (!done) {
		r->ops->suspend(r);
		r->suspended = true;
		r->fed_parked = true;
	}
	pthread_mutex_unlock(&h->fmu);
	return !done;
}

static void forward_cb(void *arg, int err, struct dg_fed_response *resp)
{
	struct dg_req *r = arg;
	r->fed_err = err;
	if (err == 0 && resp) {
		r->fed_resp = *resp; /* moved: the caller's fini finds nothing left */
		memset(resp, 0, sizeof(*resp));
	} else if (err == 0) {
		r->fed_err = DG_EIO;
	}
	fed_finish(r);
}

static void join_cb(void *arg, int err, const char *msg)
{
	struct dg_req *r = arg;
	r->fed_err = err;
	r->fed_msg = msg && *msg ? strdup(msg) : NULL;
	fed_finish(r);
}

/* Consul's texts for a forward that failed; err comes from dg_fed_forward or its callback. */
static int reply_fed_error(struct dg_req *r, int err)
{
	/* ENOLEADER: a follower's read held for a leader that did not come (Consul's own text) */
	if (err == DG_ENOPATH || err == DG_ENOSERVER || err == DG_ENOLEADER)
		return dg_reply_text(r, 500, dg_strerror(err), 0);
	return dg_reply_textf(r, 500, 0, "rpc error making call: %s", dg_strerror(err));
}

/* A header from the remote DC that may be passed on: a token without separators or controls
 * and a value without line breaks, and none that MHD writes itself. */
static bool header_ok(const char *name, const char *value)
{
	static const char *const own[] = {"Content-Length", "Connection", "Transfer-Encoding",
					  "Date", "Keep-Alive"};
	if (!*name)
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f ||
		    strchr(":()<>@,;\\\"/[]?={}", *p))
			return false;
	for (const char *p = value; *p; p++)
		if (*p == '\r' || *p == '\n')
			return false;
	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (strcasecmp(name, own[i]) == 0)
			return false;
	return true;
}

/* The remote DC's answer exactly: its status, every header it sent and its body. */
static int reply_forwarded(struct dg_req *r)
{
	struct dg_fed_response *fr = &r->fed_resp;
	if (r->fed_err != 0)
		return reply_fed_error(r, r->fed_err);
	if (fr->status < 100 || fr->status > 999)
		return reply_fed_error(r, DG_EIO);
	struct dg_resp *resp;
	if (fr->body && fr->len) {
		resp = r->ops->resp_new(r, fr->body, fr->len, true);
		fr->body = NULL; /* the response's now, or freed */
		fr->len = 0;
	} else {
		resp = r->ops->resp_new(r, "", 0, false);
	}
	if (!resp)
		return MHD_NO;
	const char *name;
	json_t *v;
	json_object_foreach(fr->headers, name, v)
	{
		const char *value = json_string_value(v);
		if (value && header_ok(name, value))
			r->ops->resp_header(resp, name, value);
	}
	return queue_as_is(r, fr->status, resp);
}

/* Appends s percent-encoded: everything but unreserved characters and those in keep. */
static int url_escape(struct dg_buf *b, const char *s, const char *keep)
{
	static const char hex[] = "0123456789ABCDEF";
	int rv = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p && rv == 0; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p) || strchr(keep, *p)) {
			rv = dg_buf_append(b, p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			rv = dg_buf_append(b, e, 3);
		}
	}
	return rv;
}

struct query_text {
	struct dg_buf *b;
	bool first;
	int err;
};

/* One GET argument as decoded, encoded again; a key given without '=' stays bare. */
static void query_text_cb(void *cls, const char *key, const char *value)
{
	struct query_text *q = cls;
	if (q->err == 0)
		q->err = dg_buf_append(q->b, q->first ? "?" : "&", 1);
	q->first = false;
	if (q->err == 0)
		q->err = url_escape(q->b, key, "");
	if (value && q->err == 0 && (q->err = dg_buf_append(q->b, "=", 1)) == 0)
		q->err = url_escape(q->b, value, "");
}

/* The request's path and query as the remote DC's HTTP API must receive them. Both come
 * decoded, so they are encoded again; the dc parameter stays (it names the remote DC,
 * which answers it locally). */
static int forward_path(struct dg_req *r, struct dg_buf *out)
{
	struct query_text q = {.b = out, .first = true, .err = 0};
	int rv = url_escape(out, r->url, "/:@");
	if (rv != 0)
		return rv;
	r->ops->args(r, query_text_cb, &q);
	return q.err;
}

/* The request headers the remote DC needs (a new object, NULL when out of memory). */
static json_t *forward_headers(struct dg_req *r)
{
	static const char *const names[] = {"X-Consul-Token", "Content-Type", "Cache-Control"};
	json_t *h = json_object();
	for (size_t i = 0; h && i < sizeof(names) / sizeof(names[0]); i++) {
		const char *v = dg_req_header(r, names[i]);
		if (v && json_object_set_new(h, names[i], json_string(v)) != 0) {
			json_decref(h);
			h = NULL;
		}
	}
	return h;
}

/* How long the remote DC may take: a blocking query's whole wait plus its largest jitter
 * (wait/16) plus 5 s for the WAN; 0 (federation's default) for anything else. */
static unsigned forward_timeout_ms(struct dg_req *r)
{
	if (r->q.index == 0)
		return 0;
	uint64_t wait = dg_query_block_ms(r->q.wait_ns, 0);
	return (unsigned)(wait + wait / 16 + 5000);
}

/* The remote reads `?cached` serves from a kept copy (issue: health/service, catalog/services,
 * kv); other paths with ?cached are simply forwarded. */
static bool cacheable(const char *path)
{
	return strncmp(path, "/v1/health/service/", 19) == 0 ||
	       strcmp(path, "/v1/catalog/services") == 0 || strncmp(path, "/v1/kv/", 7) == 0;
}

/* max-age and stale-if-error from the request's Cache-Control (seconds; -1 when absent). */
static void cache_control(struct dg_req *r, int64_t *max_age, int64_t *stale_if_error)
{
	const char *cc = dg_req_header(r, "Cache-Control");
	static const struct {
		const char *name;
		size_t len;
	} keys[] = {{"max-age=", 8}, {"stale-if-error=", 15}};
	int64_t *out[] = {max_age, stale_if_error};
	for (const char *p = cc; p && *p;) {
		while (*p == ' ' || *p == ',')
			p++;
		for (size_t k = 0; k < 2; k++)
			if (strncasecmp(p, keys[k].name, keys[k].len) == 0) {
				char *end;
				long long v = strtoll(p + keys[k].len, &end, 10);
				if (end != p + keys[k].len && v >= 0)
					*out[k] = v;
			}
		p = strchr(p, ',');
	}
}

const char dg__leader_dc[] = "(leader)";

int dg_req_forward(struct dg_req *r, const char *dc)
{
	dg_http *h = r->srv;
	struct dg_buf path;
	int rv;
	dg_buf_init(&path);
	free(r->fed_dc);
	free(r->fed_path);
	json_decref(r->fed_headers);
	r->fed_path = NULL;
	r->fed_headers = NULL;
	/* NULL: a client agent's request for its own DC's servers; LEADER: a follower's read */
	bool to_leader = dc == LEADER;
	bool to_server = dc == NULL || to_leader;
	if (to_server)
		dc = dg_cat_dc(h->cat);
	if (!(r->fed_dc = strdup(dc)) || forward_path(r, &path) != 0 ||
	    !(r->fed_path = dg_buf_steal(&path, NULL)) || !(r->fed_headers = forward_headers(r))) {
		dg_buf_fini(&path);
		return dg_reply_text(r, 500, "out of memory", 0);
	}
	struct dg_fed_request req = {
	    .dc = r->fed_dc,
	    .method = r->method_text,
	    .path_query = r->fed_path,
	    .headers = r->fed_headers,
	    .body = r->body.data,
	    .len = r->body.len,
	    .timeout_ms = forward_timeout_ms(r),
	    .to_leader = to_leader,
	};
	r->fed_kind = DG_FED_FORWARD;
	r->fed_done = false;
	r->fed_err = 0;
	int64_t max_age = -1, stale_if_error = -1;
	bool cached = r->q.cached && r->method == DG_GET && cacheable(r->url);
	if (cached)
		cache_control(r, &max_age, &stale_if_error);
	__atomic_add_fetch(&h->feds_in_flight, 1, __ATOMIC_RELAXED);
	pthread_rwlock_rdlock(&h->fedlock);
	if (to_server)
		rv = dg_fed_forward_lan(h->lan, &req, forward_cb, r);
	else if (!h->cfg.fed)
		rv = DG_ENOPATH;
	else if (cached)
		rv = dg_fed_forward_cached(h->cfg.fed, &req, max_age, stale_if_error, forward_cb, r);
	else
		rv = dg_fed_forward(h->cfg.fed, &req, forward_cb, r);
	pthread_rwlock_unlock(&h->fedlock);
	if (rv != 0) {
		/* decided at once (unknown DC, no server reachable): answered now, unsuspended */
		__atomic_sub_fetch(&h->feds_in_flight, 1, __ATOMIC_RELEASE);
		r->fed_kind = DG_FED_NONE;
		if (to_server && rv == DG_ENOSERVER)
			return dg_reply_text(r, 500, "No known Consul servers", 0);
		if (to_server && rv == DG_ENOLEADER)
			return dg_reply_text(r, 500, dg_strerror(DG_ENOLEADER), 0);
		return reply_fed_error(r, rv);
	}
	return fed_park(r) ? MHD_YES : reply_forwarded(r);
}

int dg_req_wan_join(struct dg_req *r, const char *addr)
{
	dg_http *h = r->srv;
	int rv;
	r->fed_kind = DG_FED_JOIN;
	r->fed_done = false;
	r->fed_err = 0;
	__atomic_add_fetch(&h->feds_in_flight, 1, __ATOMIC_RELAXED);
	pthread_rwlock_rdlock(&h->fedlock);
	rv = h->cfg.fed ? dg_fed_join(h->cfg.fed, addr, join_cb, r) : DG_EINVAL;
	pthread_rwlock_unlock(&h->fedlock);
	if (rv != 0) {
		__atomic_sub_fetch(&h->feds_in_flight, 1, __ATOMIC_RELEASE);
		r->fed_err = rv;
		r->fed_done = true;
		return DG_HTTP_RETRY;
	}
	return fed_park(r) ? MHD_YES : DG_HTTP_RETRY;
}

int dg_req_lan_op(struct dg_req *r, dg_req_lan_start_fn start, const char *a, const char *b)
{
	dg_http *h = r->srv;
	r->fed_kind = DG_FED_JOIN;
	r->fed_done = false;
	r->fed_err = 0;
	__atomic_add_fetch(&h->feds_in_flight, 1, __ATOMIC_RELAXED);
	int rv = start(h->lan, a, b, join_cb, r);
	if (rv != 0) {
		__atomic_sub_fetch(&h->feds_in_flight, 1, __ATOMIC_RELEASE);
		r->fed_err = rv;
		r->fed_done = true;
		return DG_HTTP_RETRY;
	}
	return fed_park(r) ? MHD_YES : DG_HTTP_RETRY;
}

/* ---- dispatch ---- */

static void query_cb(void *cls, const char *key, const char *value)
{
	struct dg_req *r = cls;
	char err[256];
	if (r->query_err)
		return;
	if (dg_query_set(&r->q, key, value ? value : "", err, sizeof(err)) != 0)
		r->query_err = strdup(err);
}

static const char *method_list(unsigned m, char *buf, size_t len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {{DG_DELETE, "DELETE"}, {DG_GET, "GET"}, {DG_POST, "POST"}, {DG_PUT, "PUT"}};
	int n = snprintf(buf, len, "OPTIONS");
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (m & names[i].bit)
			n += snprintf(buf + n, len - (size_t)n, ",%s", names[i].name);
	return buf;
}

static bool printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static int find_route(struct dg_req *r)
{
	const char *path = r->url;
	for (size_t t = 0; t < sizeof(route_tables) / sizeof(route_tables[0]); t++) {
		for (const struct dg_route *rt = route_tables[t]; rt->path; rt++) {
			size_t pl = strlen(rt->path);
			if (rt->prefix ? strncmp(path, rt->path, pl) == 0
				       : strcmp(path, rt->path) == 0) {
				r->route = rt;
				r->arg = rt->prefix ? path + pl : "";
				return 0;
			}
		}
	}
	return DG_ENOTFOUND;
}

/* Endpoints that honour ?dc= (consul-api.md §1.8). Catalog register and deregister take the DC
 * from the body and check it themselves; agent endpoints and catalog/datacenters never forward. */
static bool forwardable(const char *path)
{
	static const char *prefixes[] = {"/v1/catalog/nodes",	  "/v1/catalog/services",
					 "/v1/catalog/service/",  "/v1/catalog/node/",
					 "/v1/catalog/node-services/", "/v1/health/",
					 "/v1/kv",		  "/v1/session/",
					 "/v1/txn",		  "/v1/status/",
					 "/v1/coordinate/nodes",  "/v1/coordinate/node/",
					 "/v1/event/fire/",	  "/v1/query"};
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (strncmp(path, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

/* Reads that the default consistency mode sends to the leader: on a follower they wait until it
 * has applied what the leader had (dg_lan_read_barrier). ?stale reads are served as they are. */
static bool leader_read(struct dg_req *r)
{
	/* a renew resets the TTL timer the leader keeps, and answers with the session as the
	 * leader has it */
	if (r->method == DG_PUT && strncmp(r->url, "/v1/session/renew/", 18) == 0)
		return dg_lan_config(r->srv->lan)->server && !dg_lan_is_leader(r->srv->lan);
	return r->method == DG_GET && !r->q.stale && forwardable(r->url) &&
	       strncmp(r->url, "/v1/status/", 11) != 0 && strncmp(r->url, "/v1/event/", 10) != 0 &&
	       dg_lan_config(r->srv->lan)->server && !dg_lan_is_leader(r->srv->lan);
}

/* A client agent's request for the servers. A session created through it belongs to its node
 * unless the body names another, as Consul's client agents fill it in. */
static int client_forward(struct dg_req *r)
{
	if (r->method == DG_PUT && strcmp(r->url, "/v1/session/create") == 0) {
		json_t *body = r->body.len ? json_loadb((const char *)r->body.data, r->body.len, 0,
							 NULL)
					   : json_object();
		if (json_is_object(body) && !json_object_get(body, "Node")) {
			json_object_set_new(body, "Node", json_string(dg_lan_node(r->srv->lan)));
			char *text = json_dumps(body, JSON_COMPACT);
			if (text) {
				r->body.len = 0;
				dg_buf_append(&r->body, text, strlen(text));
				free(text);
			}
		}
		json_decref(body);
	}
	return dg_req_forward(r, NULL);
}

static void verify_cb(void *arg, int err, const char *msg)
{
	struct dg_req *r = arg;
	dg_http *h = r->srv;
	(void)msg;
	r->verify = err == 0 ? 2 : err;
	r->ops->resume(r); /* r may be gone from here on */
	__atomic_sub_fetch(&h->writes_in_flight, 1, __ATOMIC_RELEASE);
}

/* A ?consistent read on the leader waits for dg_lan_verify_leader, as a write waits for raft;
 * the handler then runs as for any read. */
static int verify_leader(struct dg_req *r)
{
	dg_http *h = r->srv;
	r->ops->suspend(r);
	r->suspended = true;
	r->verify = 1;
	__atomic_add_fetch(&h->writes_in_flight, 1, __ATOMIC_RELAXED);
	int rv = dg_lan_verify_leader(h->lan, verify_cb, r);
	if (rv != 0) {
		r->verify = rv;
		r->ops->resume(r); /* before the handler returned: never frees r */
		__atomic_sub_fetch(&h->writes_in_flight, 1, __ATOMIC_RELEASE);
	}
	return MHD_YES;
}

static int dispatch(struct dg_req *r)
{
	char allow[64];
	if (!r->route) {
		if (!printable(r->url))
			return dg_reply_textf(r, 400, 0, "Invalid URL path: contains unprintable characters");
		if (strcmp(r->url, "/") == 0)
			return dg_reply_text(r, 200, "Consul Agent: dcgate serves no UI here", 0);
		if (find_route(r) != 0)
			return dg_reply_text(r, 404,
					     "Invalid URL path: not a recognized HTTP API endpoint\n",
					     0);
		if (r->method == DG_OPTIONS || !(r->route->methods & r->method)) {
			int status = r->method == DG_OPTIONS ? 200 : 405;
			char body[64] = "";
			if (status == 405)
				snprintf(body, sizeof(body), "method %s not allowed", r->method_text);
			struct dg_resp *resp = r->ops->resp_new(r, body, strlen(body), false);
			if (!resp)
				return MHD_NO;
			r->ops->resp_header(resp, "Allow",
					    method_list(r->route->methods, allow, sizeof(allow)));
			if (status == 405)
				r->ops->resp_header(resp, "Content-Type",
						    "text/plain; charset=utf-8");
			return dg_reply_resp(r, status, resp);
		}
		r->ops->args(r, query_cb, r);
		char err[256];
		if (!r->query_err && dg_query_finish(&r->q, err, sizeof(err)) != 0)
			r->query_err = strdup(err);
		if (r->query_err)
			return dg_reply_text(r, 400, r->query_err, 0);
		if (!r->q.token) {
			const char *tok = dg_req_header(r, "X-Consul-Token");
			if (tok)
				r->q.token = strdup(tok);
		}
		/* before forwarding: a body cut at the limit must not be sent on */
		if (r->body_too_big)
			return dg_reply_textf(r, 413, 0,
					      "Request body too large, max size: %zu bytes",
					      dg__http_body_limit(r));
		/* another datacenter: the one place where ?dc= forwards (catalog register and
		 * deregister forward by their body's Datacenter, in their handlers) */
		/* a client agent keeps only its own services and checks: everything else is the
		 * servers' (?dc= included, which they forward on) */
		if (!dg_lan_config(r->srv->lan)->server && strncmp(r->url, "/v1/agent/", 10) != 0)
			return client_forward(r);
		if (r->q.dc && strcmp(r->q.dc, dg_cat_dc(r->srv->cat)) != 0 && forwardable(r->url))
			return dg_req_forward(r, r->q.dc);
		/* the default consistency mode reads what the leader has: a follower passes the
		 * read on to it over 8301, as Consul's servers do */
		if (leader_read(r))
			return dg_req_forward(r, LEADER);
		/* ?consistent on the leader: confirmed with a quorum before it is answered */
		if (r->q.consistent && r->method == DG_GET && forwardable(r->url) &&
		    dg_lan_config(r->srv->lan)->server && dg_lan_is_leader(r->srv->lan))
			return verify_leader(r);
	}
	if (r->verify == 1)
		return MHD_YES; /* still waiting (a spurious visit) */
	if (r->verify < 0)
		return dg_reply_text(r, 500, dg_strerror(DG_ENOLEADER), 0);
	/* a forward's answer is the remote DC's, whichever handler started it */
	if (r->fed_kind == DG_FED_FORWARD && r->fed_done)
		return reply_forwarded(r);
	for (int tries = 0;; tries++) {
		int rv = r->route->handler(r);
		if (rv != DG_HTTP_RETRY)
			return rv;
		r->woken = true;
		if (tries > 50)
			r->deadline_ms = dg_now_ms(); /* a storm of writes: answer now */
	}
}

enum dg_method dg__http_method_parse(const char *m)
{
	if (strcmp(m, "GET") == 0 || strcmp(m, "HEAD") == 0)
		return DG_GET;
	if (strcmp(m, "PUT") == 0)
		return DG_PUT;
	if (strcmp(m, "POST") == 0)
		return DG_POST;
	if (strcmp(m, "DELETE") == 0)
		return DG_DELETE;
	if (strcmp(m, "OPTIONS") == 0)
		return DG_OPTIONS;
	return 0;
}

int dg__http_run(struct dg_req *r)
{
	if (r->answered)
		return MHD_YES;
	r->suspended = false;
	return dispatch(r) == MHD_NO ? MHD_NO : MHD_YES;
}

void dg__http_req_init(struct dg_req *r, dg_http *h, const struct dg_req_ops *ops, void *io)
{
	r->srv = h;
	r->ops = ops;
	r->io = io;
	dg_buf_init(&r->body);
	__atomic_add_fetch(&h->stats.requests, 1, __ATOMIC_RELAXED);
}

void dg__http_req_fini(struct dg_req *r)
{
	dg_query_fini(&r->q);
	free(r->query_err);
	free(r->url);
	dg_buf_fini(&r->body);
	json_decref(r->write_result);
	dg_fed_response_fini(&r->fed_resp);
	free(r->fed_msg);
	free(r->fed_dc);
	free(r->fed_path);
	json_decref(r->fed_headers);
	if (r->scratch_free)
		r->scratch_free(r->scratch);
}

/* ---- requests from MHD: r->io is the connection, a dg_resp is an MHD_Response ---- */

static bool mhd_arg(struct dg_req *r, const char *name, const char **value)
{
	return MHD_lookup_connection_value_n(r->io, MHD_GET_ARGUMENT_KIND, name, strlen(name), value,
					     NULL) == MHD_YES;
}

struct mhd_args {
	dg_req_arg_fn fn;
	void *cls;
};

static enum MHD_Result mhd_args_cb(void *cls, enum MHD_ValueKind kind, const char *key,
				   const char *value)
{
	struct mhd_args *a = cls;
	a->fn(a->cls, key, value);
	return MHD_YES;
}

static void mhd_args(struct dg_req *r, dg_req_arg_fn fn, void *cls)
{
	struct mhd_args a = {fn, cls};
	MHD_get_connection_values(r->io, MHD_GET_ARGUMENT_KIND, mhd_args_cb, &a);
}

static const char *mhd_header(struct dg_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->io, MHD_HEADER_KIND, name);
}

static struct dg_resp *mhd_resp_new(struct dg_req *r, void *body, size_t len, bool take)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(
		len, body, take ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
	if (!resp && take)
		free(body);
	return (struct dg_resp *)resp;
}

static void mhd_resp_header(struct dg_resp *resp, const char *name, const char *value)
{
	MHD_add_response_header((struct MHD_Response *)resp, name, value);
}

static void mhd_resp_free(struct dg_resp *resp)
{
	MHD_destroy_response((struct MHD_Response *)resp);
}

static int mhd_respond(struct dg_req *r, int status, struct dg_resp *resp)
{
	int rv = MHD_queue_response(r->io, (unsigned)status, (struct MHD_Response *)resp);
	MHD_destroy_response((struct MHD_Response *)resp);
	return rv;
}

static void mhd_suspend(struct dg_req *r)
{
	MHD_suspend_connection(r->io);
}

static void mhd_resume(struct dg_req *r)
{
	dg__mhd_resume(r->io);
}

static const struct dg_req_ops mhd_ops = {
	.arg = mhd_arg,
	.args = mhd_args,
	.header = mhd_header,
	.resp_new = mhd_resp_new,
	.resp_header = mhd_resp_header,
	.resp_free = mhd_resp_free,
	.respond = mhd_respond,
	.suspend = mhd_suspend,
	.resume = mhd_resume,
};

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	dg_http *h = cls;
	struct dg_req *r = *con_cls;
	if (!r) {
		/* first call: headers only. Answering now would cost keep-alive (MHD 0.9.75), so
		 * only set up and answer on a later call. */
		if (h->cfg.https_verify_incoming && !dg_https_client_ok(conn))
			return MHD_NO; /* closes the connection */
		r = calloc(1, sizeof(*r));
		if (!r)
			return MHD_NO;
		dg__http_req_init(r, h, &mhd_ops, conn);
		r->method = dg__http_method_parse(method);
		r->method_text = method;
		r->url = strdup(url);
		*con_cls = r;
		return r->url ? MHD_YES : MHD_NO;
	}
	if (*upload_data_size) {
		if (!r->body_too_big && r->body.len + *upload_data_size <= dg__http_body_limit(r))
			dg_buf_append(&r->body, upload_data, *upload_data_size);
		else
			r->body_too_big = true;
		*upload_data_size = 0;
		return MHD_YES;
	}
	return dg__http_run(r) == MHD_NO ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct dg_req *r = *con_cls;
	if (!r)
		return;
	dg__http_req_fini(r);
	free(r);
	*con_cls = NULL;
}

static void log_mhd(void *arg, const char *fmt, va_list ap)
{
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = 0;
	DG_LOGD(HTTP, "%s", msg);
}

int dg_http_start(const struct dg_http_config *cfg, dg_catalog *cat, dg_lan *lan, dg_http **out,
		  char *msg, size_t len)
{
	dg_http *h = calloc(1, sizeof(*h));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cfg->port)};
	if (!h)
		return DG_ENOMEM;
	if (inet_pton(AF_INET, cfg->bind, &sa.sin_addr) != 1) {
		snprintf(msg, len, "invalid client address %s", cfg->bind);
		free(h);
		return DG_EINVAL;
	}
	h->cfg = *cfg;
	h->cat = cat;
	h->lan = lan;
	pthread_mutex_init(&h->https.mu, NULL);
	h->https.listen_fd = -1;
	pthread_mutex_init(&h->wmu, NULL);
	pthread_cond_init(&h->wcond, NULL);
	pthread_rwlock_init(&h->fedlock, NULL);
	pthread_mutex_init(&h->fmu, NULL);
	if (pthread_create(&h->deadline_thread, NULL, deadline_main, h) != 0) {
		snprintf(msg, len, "cannot start the deadline thread");
		free(h);
		return DG_ENOMEM;
	}
	dg_lan_set_change_hook(lan, on_changes, h);
	struct MHD_OptionItem opts[] = {
		{MHD_OPTION_SOCK_ADDR, 0, &sa},
		{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, h},
		{MHD_OPTION_CONNECTION_LIMIT, DG_MAX_WAITERS + 2048, NULL},
		{MHD_OPTION_CONNECTION_TIMEOUT, 15, NULL},
		{MHD_OPTION_CONNECTION_MEMORY_LIMIT, DG_MAX_HEADER_MEM, NULL},
		{MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096, NULL},
		{MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)log_mhd, NULL},
		{MHD_OPTION_END, 0, NULL},
	};
	h->mhd = dg__mhd_start(MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, on_request, h, opts,
			       "dg-http");
	h->daemon = h->mhd ? dg__mhd_daemon(h->mhd) : NULL;
	if (!h->daemon) {
		snprintf(msg, len, "cannot listen on %s:%d (address in use?)", cfg->bind, cfg->port);
		dg_lan_set_change_hook(lan, NULL, NULL);
		pthread_mutex_lock(&h->wmu);
		h->stopping = true;
		pthread_cond_signal(&h->wcond);
		pthread_mutex_unlock(&h->wmu);
		pthread_join(h->deadline_thread, NULL);
		free(h);
		return DG_EIO;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
	h->port = info ? info->port : cfg->port;
	if (cfg->https_port) {
		char tmsg[256];
		h->https_sa = sa;
		h->https_sa.sin_port = htons((uint16_t)cfg->https_port);
		if (dg_http_reload_tls(h, cfg->https_cert_file, cfg->https_key_file,
				       cfg->https_ca_file, tmsg, sizeof(tmsg)) != 0) {
			snprintf(msg, len, "HTTPS on %s:%d: %s", cfg->bind, cfg->https_port, tmsg);
			dg_http_free(h);
			return DG_EIO;
		}
	}
	*out = h;
	return 0;
}

int dg_http_reload_tls(dg_http *h, const char *cert_file, const char *key_file,
		       const char *ca_file, char *msg, size_t len)
{
	if (!h->cfg.https_port)
		return 0;
	struct dg_https_params p = {
		.addr = (struct sockaddr *)&h->https_sa,
		.cert_file = cert_file,
		.key_file = key_file,
		.ca_file = ca_file,
		.verify_incoming = h->cfg.https_verify_incoming,
		.min_tls13 = h->cfg.https_min_tls13,
		.handler = on_request,
		.completed = on_completed,
		.handler_arg = h,
	};
	return dg_https_start(&h->https, &p, msg, len);
}

int dg_http_https_port(dg_http *h)
{
	return h->cfg.https_port ? h->https.port : 0;
}

/* Call while the loop still runs: parked queries are answered and writes in flight finish
 * (MHD must not be stopped with suspended connections); then the caller stops the loop. */
void dg_http_free(dg_http *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->wmu);
	h->stopping = true;
	pthread_cond_signal(&h->wcond);
	pthread_mutex_unlock(&h->wmu);
	pthread_join(h->deadline_thread, NULL);
	for (int i = 0; i < 300 && (__atomic_load_n(&h->writes_in_flight, __ATOMIC_ACQUIRE) > 0 ||
				    __atomic_load_n(&h->feds_in_flight, __ATOMIC_ACQUIRE) > 0);
	     i++)
		usleep(10000);
	int feds = __atomic_load_n(&h->feds_in_flight, __ATOMIC_ACQUIRE);
	if (feds > 0)
		DG_LOGE(HTTP,
			"%d requests still wait for federation at shutdown (dg_fed_free() "
			"must come before dg_http_free())",
			feds);
	MHD_quiesce_daemon(h->daemon);
	usleep(20000); /* let MHD's thread answer the connections just resumed */
	dg_https_stop(&h->https);
	pthread_mutex_destroy(&h->https.mu);
	dg__mhd_stop(h->mhd);
	dg_lan_set_change_hook(h->lan, NULL, NULL);
	pthread_mutex_destroy(&h->wmu);
	pthread_cond_destroy(&h->wcond);
	pthread_rwlock_destroy(&h->fedlock);
	pthread_mutex_destroy(&h->fmu);
	free(h);
}
