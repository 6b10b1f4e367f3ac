/* The HTTP server: libmicrohttpd with one epoll thread, routing, answers in Consul's shape, and
 * the suspension of requests that wait for a raft write or a blocking query.
 *
 * Threads: handlers run on MHD's thread. Parked blocking queries live in the waiter list under
 * `wmu`; the loop thread (change hook) and the deadline thread take them off the list and resume
 * their connections after dropping `wmu`. A request on no list and suspended is owned by whoever
 * holds its pending resume (a write callback or the waker); nothing else touches it. */
#include "http/internal.h"
#include "http/https.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	struct dg_https https;
	struct sockaddr_in https_sa;
	uint64_t last_reap_s; /* deadline thread only */
};

static const struct dg_route *route_tables[] = {
	dg_routes_agent, dg_routes_catalog, dg_routes_health, dg_routes_kv,
	dg_routes_session, dg_routes_status, dg_routes_txn,
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

size_t dg_http_waiters(struct dg_req *r)
{
	pthread_mutex_lock(&r->srv->wmu);
	size_t n = r->srv->nwaiters;
	pthread_mutex_unlock(&r->srv->wmu);
	return n;
}

/* ---- answers ---- */

static void add_index_headers(struct dg_req *r, struct MHD_Response *resp, uint64_t index)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(index ? index : 1));
	MHD_add_response_header(resp, "X-Consul-Index", buf);
	MHD_add_response_header(resp, "X-Consul-KnownLeader",
				dg_lan_is_leader(r->srv->lan) ? "true" : "false");
	snprintf(buf, sizeof(buf), "%llu",
		 (unsigned long long)dg_lan_last_contact_ms(r->srv->lan));
	MHD_add_response_header(resp, "X-Consul-LastContact", buf);
	MHD_add_response_header(resp, "X-Consul-Effective-Consistency",
				r->q.stale ? "stale" : r->q.consistent ? "consistent" : "leader");
}

static int queue(struct dg_req *r, int status, struct MHD_Response *resp)
{
	int rv;
	if (status >= 500)
		__atomic_add_fetch(&r->srv->stats.errors_5xx, 1, __ATOMIC_RELAXED);
	else if (status >= 400)
		__atomic_add_fetch(&r->srv->stats.errors_4xx, 1, __ATOMIC_RELAXED);
	MHD_add_response_header(resp, "X-Consul-Default-ACL-Policy", "allow");
	rv = MHD_queue_response(r->conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	r->answered = true;
	return rv;
}

int dg_reply_raw(struct dg_req *r, int status, const void *data, size_t len,
		 const char *content_type, uint64_t index)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	if (content_type)
		MHD_add_response_header(resp, "Content-Type", content_type);
	if (index)
		add_index_headers(r, resp, index);
	return queue(r, status, resp);
}

int dg_reply_json_text(struct dg_req *r, int status, char *text, size_t len, uint64_t index)
{
	struct MHD_Response *resp =
		MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (index)
		add_index_headers(r, resp, index);
	return queue(r, status, resp);
}

int dg_reply_json(struct dg_req *r, int status, json_t *body, uint64_t index)
{
	size_t flags = r->q.pretty ? JSON_INDENT(4) : JSON_COMPACT;
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
	MHD_resume_connection(r->conn);
	__atomic_sub_fetch(&h->writes_in_flight, 1, __ATOMIC_RELEASE);
}

int dg_req_write(struct dg_req *r, json_t *cmd)
{
	MHD_suspend_connection(r->conn);
	r->suspended = true;
	__atomic_add_fetch(&r->srv->writes_in_flight, 1, __ATOMIC_RELAXED);
	int rv = dg_lan_write(r->srv->lan, cmd, write_cb, r);
	if (rv != 0) {
		r->write_status = rv;
		r->write_done = true;
		MHD_resume_connection(r->conn);
		__atomic_sub_fetch(&r->srv->writes_in_flight, 1, __ATOMIC_RELEASE);
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
	h->nwaiters--;
}

static void resume_all(struct dg_waiter *list)
{
	while (list) {
		struct dg_waiter *next = list->next;
		struct dg_req *r = list->r;
		r->waiter = NULL;
		r->woken = true;
		free(list->key);
		free(list);
		MHD_resume_connection(r->conn);
		list = next;
	}
}

/* The change hook: runs on the loop thread after every apply. */
static void on_changes(void *arg, const struct dg_cat_change *v, size_t n)
{
	dg_http *h = arg;
	struct dg_waiter *wake = NULL;
	size_t count = 0;
	pthread_mutex_lock(&h->wmu);
	for (struct dg_waiter *w = h->waiters, *next; w; w = next) {
		next = w->next;
		for (size_t i = 0; i < n; i++) {
			if (waiter_matches(w, &v[i])) {
				unlink_waiter(h, w);
				w->next = wake;
				wake = w;
				count++;
				break;
			}
		}
	}
	pthread_mutex_unlock(&h->wmu);
	__atomic_add_fetch(&h->stats.waiters_woken, count, __ATOMIC_RELAXED);
	resume_all(wake);
}

static void *deadline_main(void *arg)
{
	dg_http *h = arg;
	pthread_mutex_lock(&h->wmu);
	while (!h->stopping) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 25 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
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
	MHD_suspend_connection(r->conn);
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

/* ---- dispatch ---- */

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
				const char *value)
{
	struct dg_req *r = cls;
	char err[256];
	if (r->query_err)
		return MHD_YES;
	if (dg_query_set(&r->q, key, value ? value : "", err, sizeof(err)) != 0)
		r->query_err = strdup(err);
	return MHD_YES;
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
			struct MHD_Response *resp =
				MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
			int status = r->method == DG_OPTIONS ? 200 : 405;
			char body[64];
			if (!resp)
				return MHD_NO;
			MHD_add_response_header(resp, "Allow",
						method_list(r->route->methods, allow, sizeof(allow)));
			if (status == 405) {
				MHD_destroy_response(resp);
				snprintf(body, sizeof(body), "method %s not allowed", r->method_text);
				resp = MHD_create_response_from_buffer(strlen(body), body,
								       MHD_RESPMEM_MUST_COPY);
				if (!resp)
					return MHD_NO;
				MHD_add_response_header(resp, "Allow", allow);
				MHD_add_response_header(resp, "Content-Type",
							"text/plain; charset=utf-8");
			}
			return queue(r, status, resp);
		}
		MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_cb, r);
		char err[256];
		if (!r->query_err && dg_query_finish(&r->q, err, sizeof(err)) != 0)
			r->query_err = strdup(err);
		if (r->query_err)
			return dg_reply_text(r, 400, r->query_err, 0);
		if (!r->q.token) {
			const char *tok = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
								      "X-Consul-Token");
			if (tok)
				r->q.token = strdup(tok);
		}
		/* another datacenter: the one place where federation will forward */
		if (r->q.dc && strcmp(r->q.dc, dg_cat_dc(r->srv->cat)) != 0 && forwardable(r->url))
			return dg_reply_text(r, 500, "No path to datacenter", 0);
		if (r->body_too_big)
			return dg_reply_textf(r, 413, 0,
					      "Request body too large, max size: %d bytes",
					      DG_MAX_BODY);
	}
	for (int tries = 0;; tries++) {
		int rv = r->route->handler(r);
		if (rv != DG_HTTP_RETRY)
			return rv;
		r->woken = true;
		if (tries > 50)
			r->deadline_ms = dg_now_ms(); /* a storm of writes: answer now */
	}
}

static enum dg_method parse_method(const char *m)
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
		r->srv = h;
		r->conn = conn;
		r->method = parse_method(method);
		r->method_text = method;
		r->url = strdup(url);
		dg_buf_init(&r->body);
		*con_cls = r;
		__atomic_add_fetch(&h->stats.requests, 1, __ATOMIC_RELAXED);
		return r->url ? MHD_YES : MHD_NO;
	}
	if (*upload_data_size) {
		if (!r->body_too_big && r->body.len + *upload_data_size <= DG_MAX_BODY)
			dg_buf_append(&r->body, upload_data, *upload_data_size);
		else
			r->body_too_big = true;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (r->answered)
		return MHD_YES;
	r->suspended = false;
	return dispatch(r) == MHD_NO ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct dg_req *r = *con_cls;
	if (!r)
		return;
	dg_query_fini(&r->q);
	free(r->query_err);
	free(r->url);
	dg_buf_fini(&r->body);
	json_decref(r->write_result);
	if (r->scratch_free)
		r->scratch_free(r->scratch);
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
	if (pthread_create(&h->deadline_thread, NULL, deadline_main, h) != 0) {
		snprintf(msg, len, "cannot start the deadline thread");
		free(h);
		return DG_ENOMEM;
	}
	dg_lan_set_change_hook(lan, on_changes, h);
	h->daemon = MHD_start_daemon(
		MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
		NULL, NULL, on_request, h, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
		MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
		(unsigned)(DG_MAX_WAITERS + 2048), MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)15,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)DG_MAX_HEADER_MEM,
		MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_EXTERNAL_LOGGER,
		log_mhd, NULL, MHD_OPTION_END);
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
	for (int i = 0; i < 300 && __atomic_load_n(&h->writes_in_flight, __ATOMIC_ACQUIRE) > 0; i++)
		usleep(10000);
	MHD_quiesce_daemon(h->daemon);
	usleep(20000); /* let MHD's thread answer the connections just resumed */
	dg_https_stop(&h->https);
	pthread_mutex_destroy(&h->https.mu);
	MHD_stop_daemon(h->daemon);
	dg_lan_set_change_hook(h->lan, NULL, NULL);
	pthread_mutex_destroy(&h->wmu);
	pthread_cond_destroy(&h->wcond);
	free(h);
}
