/* The agent's own work on the loop thread: registering its node (with serfHealth and the consul
 * service), running the health checks whose definitions the catalog holds for this node (TCP and
 * HTTP in libuv's worker pool, TTL by deadline), removing services whose check stayed critical
 * past DeregisterCriticalServiceAfter, and expiring sessions whose TTL ran out.
 *
 * The catalog is the one source of truth: runners are rebuilt from it after every change to this
 * node's checks and at start, so a restart with a data dir resumes every check.
 * Threads: all of it runs on the loop thread, except the probe functions (probe_tcp, probe_http)
 * which run in the worker pool on copies, and session_ttl which is guarded by ttl_mu. */
#include "lan/internal.h"
#include "common/curl_lazy.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define AGENT "agent"

struct runner {
	char *id;
	char *type;
	char *service_id;
	json_t *def;
	int64_t interval_ms, timeout_ms, ttl_ms, dcsa_ms;
	uint64_t next_run_ms;
	uint64_t ttl_deadline_ms; /* 0: TTL already reported expired */
	uint64_t critical_since_ms;
	bool in_flight;
	bool reaping;
	bool dead; /* removed while a probe was in flight; freed by the probe's callback */
};

struct probe {
	uv_work_t work;
	dg_lan *lan;
	struct runner *r;
	char *type;
	char *target;
	char *method;
	json_t *headers;
	char *body;
	bool tls_skip_verify;
	int64_t timeout_ms;
	char *status;
	char *output;
};

struct dg__agent {
	struct dg_map runners; /* check id -> struct runner* */
	uint64_t last_slow_tick_ms;
	pthread_mutex_t ttl_mu;
	struct dg_map session_ttl; /* session id -> (uintptr_t) deadline ms; under ttl_mu */
	struct dg_map session_expiring; /* ids whose destroy was proposed */
};

static void runner_free(struct runner *r)
{
	if (!r)
		return;
	free(r->id);
	free(r->type);
	free(r->service_id);
	json_decref(r->def);
	free(r);
}

int dg__agent_new(dg_lan *l)
{
	struct dg__agent *a = calloc(1, sizeof(*a));
	if (!a)
		return DG_ENOMEM;
	dg_map_init(&a->runners, false);
	dg_map_init(&a->session_ttl, false);
	dg_map_init(&a->session_expiring, false);
	pthread_mutex_init(&a->ttl_mu, NULL);
	l->agent = a;
	return 0;
}

void dg__agent_free(dg_lan *l)
{
	struct dg__agent *a = l->agent;
	if (!a)
		return;
	for (size_t i = 0; i < a->runners.n; i++) {
		struct runner *r = a->runners.v[i].value;
		if (r->in_flight)
			r->dead = true; /* the probe callback frees it */
		else
			runner_free(r);
	}
	dg_map_fini(&a->runners);
	dg_map_fini(&a->session_ttl);
	dg_map_fini(&a->session_expiring);
	pthread_mutex_destroy(&a->ttl_mu);
	free(a);
	l->agent = NULL;
}

static int64_t def_ms(json_t *def, const char *key)
{
	int64_t ns = 0;
	json_t *v = json_object_get(def, key);
	if (json_is_string(v) && dg_duration_parse(json_string_value(v), &ns) == 0)
		return ns / 1000000;
	if (json_is_integer(v))
		return json_integer_value(v) / 1000000;
	return 0;
}

/* ---- probes, in the worker pool ---- */

static void set_result(struct probe *p, const char *status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void set_result(struct probe *p, const char *status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *out = NULL;
	if (vasprintf(&out, fmt, ap) < 0)
		out = NULL;
	va_end(ap);
	p->status = strdup(status);
	if (out && strlen(out) > DG_MAX_OUTPUT)
		out[DG_MAX_OUTPUT] = 0;
	p->output = out ? out : strdup("");
}

static void probe_tcp(struct probe *p)
{
	char host[256], port[16];
	const char *colon = strrchr(p->target, ':');
	if (!colon || (size_t)(colon - p->target) >= sizeof(host) || strlen(colon + 1) >= 16) {
		set_result(p, "critical", "dial tcp %s: missing port in address", p->target);
		return;
	}
	memcpy(host, p->target, (size_t)(colon - p->target));
	host[colon - p->target] = 0;
	if (host[0] == '[') { /* [v6]:port */
		memmove(host, host + 1, strlen(host));
		char *e = strchr(host, ']');
		if (e)
			*e = 0;
	}
	snprintf(port, sizeof(port), "%s", colon + 1);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	int gai = getaddrinfo(host, port, &hints, &res);
	if (gai != 0) {
		set_result(p, "critical", "dial tcp %s: lookup %s: %s", p->target, host,
			   gai_strerror(gai));
		return;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err = 0;
	if (fd < 0) {
		err = errno;
	} else if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
		if (errno != EINPROGRESS) {
			err = errno;
		} else {
			struct pollfd pfd = {.fd = fd, .events = POLLOUT};
			int pr = poll(&pfd, 1, (int)p->timeout_ms);
			if (pr == 0) {
				err = ETIMEDOUT;
			} else if (pr < 0) {
				err = errno;
			} else {
				socklen_t sl = sizeof(err);
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl);
			}
		}
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	if (err == 0)
		set_result(p, "passing", "TCP connect %s: Success", p->target);
	else if (err == ETIMEDOUT)
		set_result(p, "critical", "dial tcp %s: i/o timeout", p->target);
	else
		set_result(p, "critical", "dial tcp %s: connect: %s", p->target, strerror(err));
}

struct body_buf {
	char data[DG_MAX_OUTPUT + 1];
	size_t len;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct body_buf *b = arg;
	size_t n = size * nmemb, room = DG_MAX_OUTPUT - b->len;
	size_t take = n < room ? n : room;
	memcpy(b->data + b->len, ptr, take);
	b->len += take;
	b->data[b->len] = 0;
	return n; /* keep reading, but store only the first 4 KiB as Consul does */
}

/* The reason phrase Go's net/http prints after a status code. */
static const char *reason_phrase(long code)
{
	static const struct {
		long code;
		const char *text;
	} phrases[] = {
		{200, "OK"},		      {201, "Created"},		{202, "Accepted"},
		{204, "No Content"},	      {301, "Moved Permanently"}, {302, "Found"},
		{304, "Not Modified"},	      {400, "Bad Request"},	  {401, "Unauthorized"},
		{403, "Forbidden"},	      {404, "Not Found"},	  {405, "Method Not Allowed"},
		{408, "Request Timeout"},     {429, "Too Many Requests"}, {500, "Internal Server Error"},
		{502, "Bad Gateway"},	      {503, "Service Unavailable"}, {504, "Gateway Timeout"},
	};
	for (size_t i = 0; i < sizeof(phrases) / sizeof(phrases[0]); i++)
		if (phrases[i].code == code)
			return phrases[i].text;
	return "";
}

static void probe_http(struct probe *p)
{
	const struct dg_curl *cu = dg_curl();
	if (!cu) {
		set_result(p, "critical", "HTTP checks need libcurl: %s", dg_curl_error());
		return;
	}
	CURL *h = cu->easy_init();
	struct curl_slist *hdrs = NULL;
	struct body_buf *body = calloc(1, sizeof(*body));
	const char *method = p->method && *p->method ? p->method : "GET";
	if (!h || !body) {
		set_result(p, "critical", "out of memory");
		goto out;
	}
	cu->easy_setopt(h, CURLOPT_URL, p->target);
	cu->easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	cu->easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)p->timeout_ms);
	cu->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	cu->easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
	cu->easy_setopt(h, CURLOPT_WRITEDATA, body);
	cu->easy_setopt(h, CURLOPT_USERAGENT, "Consul Health Check");
	if (p->tls_skip_verify) {
		cu->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		cu->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	const char *k;
	json_t *vals;
	json_object_foreach(p->headers, k, vals)
	{
		size_t i;
		json_t *v;
		json_array_foreach(vals, i, v)
		{
			char *line = NULL;
			if (json_is_string(v) && asprintf(&line, "%s: %s", k, json_string_value(v)) >= 0) {
				hdrs = cu->slist_append(hdrs, line);
				free(line);
			}
		}
	}
	if (hdrs)
		cu->easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	if (p->body && *p->body)
		cu->easy_setopt(h, CURLOPT_POSTFIELDS, p->body);
	CURLcode rc = cu->easy_perform(h);
	if (rc != CURLE_OK) {
		set_result(p, "critical", "%s \"%s\": %s", method, p->target, cu->easy_strerror(rc));
		goto out;
	}
	long code = 0;
	cu->easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	const char *status = code >= 200 && code < 300 ? "passing"
			     : code == 429		   ? "warning"
							   : "critical";
	set_result(p, status, "HTTP %s %s: %ld %s Output: %s", method, p->target, code,
		   reason_phrase(code), body->data);
out:
	cu->slist_free_all(hdrs);
	if (h)
		cu->easy_cleanup(h);
	free(body);
}

static void probe_work(uv_work_t *w)
{
	struct probe *p = w->data;
	if (strcmp(p->type, "tcp") == 0)
		probe_tcp(p);
	else
		probe_http(p);
}

static void probe_free(struct probe *p)
{
	free(p->type);
	free(p->target);
	free(p->method);
	free(p->body);
	json_decref(p->headers);
	free(p->status);
	free(p->output);
	free(p);
}

/* Proposes a new status for one of this node's checks if it differs from the catalog's. */
static void report(dg_lan *l, const char *check_id, const char *status, const char *output)
{
	bool same = false;
	dg_cat_rdlock(l->cat);
	const struct dg_cat_check *ch = dg_cat_check_find_locked(l->cat, l->cfg.node, check_id);
	if (!ch)
		same = true; /* gone meanwhile */
	else
		same = strcmp(ch->status, status) == 0 && strcmp(ch->output, output) == 0;
	dg_cat_unlock(l->cat);
	if (same)
		return;
	dg__lan_write_local(l, json_pack("{s:s, s:s, s:s, s:s, s:s}", "Op", "check_update", "Node",
					 l->cfg.node, "CheckID", check_id, "Status", status,
					 "Output", output));
}

static void probe_done(uv_work_t *w, int status)
{
	struct probe *p = w->data;
	struct runner *r = p->r;
	r->in_flight = false;
	if (r->dead) {
		runner_free(r);
	} else if (status == 0 && p->status && p->lan->agent) {
		report(p->lan, r->id, p->status, p->output ? p->output : "");
	}
	probe_free(p);
}

static void runner_start_probe(dg_lan *l, struct runner *r)
{
	struct probe *p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->lan = l;
	p->r = r;
	p->type = strdup(r->type);
	p->timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : 10000;
	if (strcmp(r->type, "tcp") == 0) {
		p->target = strdup(json_string_value(json_object_get(r->def, "TCP")));
	} else {
		p->target = strdup(json_string_value(json_object_get(r->def, "HTTP")));
		p->method = dg_strdup(json_string_value(json_object_get(r->def, "Method")));
		p->body = dg_strdup(json_string_value(json_object_get(r->def, "Body")));
		json_t *hd = json_object_get(r->def, "Header");
		p->headers = json_is_object(hd) ? json_incref(hd) : json_object();
		p->tls_skip_verify = json_is_true(json_object_get(r->def, "TLSSkipVerify"));
	}
	if (!p->type || !p->target) {
		probe_free(p);
		return;
	}
	p->work.data = p;
	if (uv_queue_work(&l->loop, &p->work, probe_work, probe_done) != 0) {
		probe_free(p);
		return;
	}
	r->in_flight = true;
	pthread_mutex_lock(&l->mu);
	l->stats.check_runs++;
	pthread_mutex_unlock(&l->mu);
}

/* ---- reconciling runners with the catalog ---- */

struct want {
	dg_lan *lan;
	struct dg_map seen;
};

static int want_check(void *arg, const struct dg_cat_check *ch)
{
	struct want *w = arg;
	dg_lan *l = w->lan;
	struct dg__agent *a = l->agent;
	bool runnable = strcmp(ch->type, "ttl") == 0 || strcmp(ch->type, "tcp") == 0 ||
			strcmp(ch->type, "http") == 0;
	if (!ch->agent || !runnable)
		return 0;
	dg_map_put(&w->seen, ch->id, (void *)1, NULL);
	struct runner *r = dg_map_find(&a->runners, ch->id);
	if (r && strcmp(r->type, ch->type) == 0 && json_equal(r->def, ch->definition))
		return 0;
	if (r) {
		dg_map_del(&a->runners, ch->id);
		if (r->in_flight)
			r->dead = true;
		else
			runner_free(r);
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return 0;
	r->id = strdup(ch->id);
	r->type = strdup(ch->type);
	r->service_id = strdup(ch->service_id);
	r->def = json_deep_copy(ch->definition);
	r->interval_ms = def_ms(ch->definition, "Interval");
	r->timeout_ms = def_ms(ch->definition, "Timeout");
	r->ttl_ms = def_ms(ch->definition, "TTL");
	r->dcsa_ms = def_ms(ch->definition, "DeregisterCriticalServiceAfter");
	if (r->interval_ms > 0 && r->interval_ms < 1000)
		r->interval_ms = 1000; /* Consul's minimum check interval */
	uint64_t now = dg_now_ms();
	r->next_run_ms = now; /* first run at once, as Consul's checks do after a short stagger */
	r->ttl_deadline_ms = r->ttl_ms > 0 ? now + (uint64_t)r->ttl_ms : 0;
	if (!r->id || !r->type || !r->service_id || !r->def ||
	    dg_map_put(&a->runners, r->id, r, NULL) != 0) {
		runner_free(r);
		return 0;
	}
	DG_LOGD(AGENT, "check %s (%s) scheduled", r->id, r->type);
	return 0;
}

static void reconcile(dg_lan *l)
{
	struct dg__agent *a = l->agent;
	struct want w = {.lan = l};
	dg_map_init(&w.seen, false);
	dg_cat_rdlock(l->cat);
	dg_cat_node_checks_walk_locked(l->cat, l->cfg.node, want_check, &w);
	dg_cat_unlock(l->cat);
	for (size_t i = 0; i < a->runners.n;) {
		struct runner *r = a->runners.v[i].value;
		if (dg_map_find(&w.seen, r->id)) {
			i++;
			continue;
		}
		dg_map_del(&a->runners, r->id);
		if (r->in_flight)
			r->dead = true;
		else
			runner_free(r);
	}
	dg_map_fini(&w.seen);
	pthread_mutex_lock(&l->mu);
	l->stats.checks_running = a->runners.n;
	pthread_mutex_unlock(&l->mu);
}

void dg__agent_on_changes(dg_lan *l, const struct dg_cat_change *v, size_t n)
{
	bool mine = false;
	if (!l->agent)
		return;
	for (size_t i = 0; i < n && !mine; i++)
		mine = v[i].topic == DG_TOPIC_CHECKS && v[i].key &&
		       strcasecmp(v[i].key, l->cfg.node) == 0;
	if (mine)
		reconcile(l);
}

/* The leader registers every member's node with its serfHealth check (this one's included) from
 * gossip: lan/members.c. */
void dg__agent_on_leader(dg_lan *l)
{
	dg__members_reconcile(l, true);
	reconcile(l);
}

/* A TTL update through the agent API resets the check's TTL timer before it is proposed. */
void dg__agent_before_write(dg_lan *l, json_t *cmd)
{
	struct dg__agent *a = l->agent;
	if (!a || !json_is_true(json_object_get(cmd, "TTLReset")))
		return;
	const char *id = json_string_value(json_object_get(cmd, "CheckID"));
	struct runner *r = id ? dg_map_find(&a->runners, id) : NULL;
	if (r && r->ttl_ms > 0)
		r->ttl_deadline_ms = dg_now_ms() + (uint64_t)r->ttl_ms;
}

/* ---- periodic work ---- */

static void check_reaper(dg_lan *l, uint64_t now)
{
	struct dg__agent *a = l->agent;
	int64_t floor_ms = l->cfg.check_deregister_min_ns / 1000000;
	for (size_t i = 0; i < a->runners.n; i++) {
		struct runner *r = a->runners.v[i].value;
		if (r->dcsa_ms <= 0 || !*r->service_id)
			continue;
		bool critical = false;
		dg_cat_rdlock(l->cat);
		const struct dg_cat_check *ch = dg_cat_check_find_locked(l->cat, l->cfg.node, r->id);
		critical = ch && strcmp(ch->status, "critical") == 0;
		dg_cat_unlock(l->cat);
		if (!critical) {
			r->critical_since_ms = 0;
			continue;
		}
		if (!r->critical_since_ms)
			r->critical_since_ms = now;
		int64_t limit = r->dcsa_ms > floor_ms ? r->dcsa_ms : floor_ms;
		if (!r->reaping && (int64_t)(now - r->critical_since_ms) >= limit) {
			r->reaping = true;
			DG_LOGW(AGENT,
				"Check %s for service %s has been critical for too long; "
				"deregistered service",
				r->id, r->service_id);
			dg__lan_write_local(l, json_pack("{s:s, s:s, s:s}", "Op", "deregister", "Node",
							 l->cfg.node, "ServiceID", r->service_id));
		}
	}
}

static int want_session(void *arg, const struct dg_cat_session *s)
{
	struct dg_map *seen = arg;
	if (*s->ttl)
		dg_map_put(seen, s->id, (void *)s->ttl, NULL);
	return 0;
}

/* Session TTL timers live on the leader only; a TTL session not renewed within 2 x TTL (Consul's
 * grace multiplier) is destroyed through raft like any write. */
static void session_timers(dg_lan *l, uint64_t now)
{
	struct dg__agent *a = l->agent;
	struct dg_map seen;
	dg_map_init(&seen, false);
	dg_cat_rdlock(l->cat);
	dg_cat_sessions_walk_locked(l->cat, want_session, &seen);
	/* copy ttl strings while locked */
	for (size_t i = 0; i < seen.n; i++)
		seen.v[i].value = strdup(seen.v[i].value);
	dg_cat_unlock(l->cat);
	pthread_mutex_lock(&a->ttl_mu);
	for (size_t i = 0; i < seen.n; i++) {
		if (dg_map_find(&a->session_ttl, seen.v[i].key))
			continue;
		int64_t ns = 0;
		dg_duration_parse(seen.v[i].value ? seen.v[i].value : "", &ns);
		if (ns <= 0)
			continue; /* "0s" means no TTL */
		dg_map_put(&a->session_ttl, seen.v[i].key,
			   (void *)(uintptr_t)(now + 2 * (uint64_t)(ns / 1000000)), NULL);
	}
	for (size_t i = 0; i < a->session_ttl.n;) {
		const char *id = a->session_ttl.v[i].key;
		uint64_t deadline = (uint64_t)(uintptr_t)a->session_ttl.v[i].value;
		if (!dg_map_find(&seen, id)) {
			dg_map_del(&a->session_expiring, id);
			dg_map_del(&a->session_ttl, id);
			continue;
		}
		if (now >= deadline && !dg_map_find(&a->session_expiring, id)) {
			DG_LOGI(AGENT, "session %s TTL expired, destroying it", id);
			dg_map_put(&a->session_expiring, id, (void *)1, NULL);
			dg__lan_write_local(l, json_pack("{s:s, s:s}", "Op", "session_destroy", "ID",
							 id));
		}
		i++;
	}
	pthread_mutex_unlock(&a->ttl_mu);
	for (size_t i = 0; i < seen.n; i++)
		free(seen.v[i].value);
	dg_map_fini(&seen);
}

int dg_lan_session_renew(dg_lan *l, const char *id)
{
	struct dg__agent *a = l->agent;
	int rv = DG_ENOTFOUND;
	int64_t ns = 0;
	char *ttl = NULL;
	dg_cat_rdlock(l->cat);
	const struct dg_cat_session *s = dg_cat_session_find_locked(l->cat, id);
	if (s) {
		rv = 0;
		ttl = strdup(s->ttl);
	}
	dg_cat_unlock(l->cat);
	if (rv != 0 || !a)
		return rv;
	if (ttl && *ttl && dg_duration_parse(ttl, &ns) == 0 && ns > 0) {
		pthread_mutex_lock(&a->ttl_mu);
		dg_map_put(&a->session_ttl, id,
			   (void *)(uintptr_t)(dg_now_ms() + 2 * (uint64_t)(ns / 1000000)), NULL);
		pthread_mutex_unlock(&a->ttl_mu);
	}
	free(ttl);
	return 0;
}

void dg__agent_tick(dg_lan *l)
{
	struct dg__agent *a = l->agent;
	uint64_t now = dg_now_ms();
	/* every agent runs its own node's checks; their results reach the leader as writes */
	if (!a)
		return;
	for (size_t i = 0; i < a->runners.n; i++) {
		struct runner *r = a->runners.v[i].value;
		if (strcmp(r->type, "ttl") == 0) {
			if (r->ttl_deadline_ms && now >= r->ttl_deadline_ms) {
				r->ttl_deadline_ms = 0;
				report(l, r->id, "critical", "TTL expired");
			}
			continue;
		}
		if (r->in_flight || r->interval_ms <= 0 || now < r->next_run_ms)
			continue;
		r->next_run_ms = now + (uint64_t)r->interval_ms;
		runner_start_probe(l, r);
	}
	if (now - a->last_slow_tick_ms >= 1000) {
		a->last_slow_tick_ms = now;
		check_reaper(l, now);
		if (dg_lan_is_leader(l))
			session_timers(l, now);
	}
}
