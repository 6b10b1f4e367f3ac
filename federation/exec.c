/* federation/exec.c: answers a request forwarded from another DC by sending it to this agent's
 * own HTTP API over loopback, with a libcurl multi handle on one dedicated thread, so forwarded
 * and local requests are served by the same code.
 *
 * Threads and ownership: the exec thread owns the multi handle, every easy handle once it is
 * queued, and the list of transfers in flight (x->active). dg_exec_request() runs on any thread:
 * it builds a complete easy handle there (so allocation failures are returned, not called
 * back), then hands it over through x->queue under x->mu and wakes the thread with
 * curl_multi_wakeup(), the one cross-thread call into the multi. x->stopping, also under x->mu,
 * is set once by dg_exec_free(); after that nothing more is accepted, and the exec thread
 * completes everything it holds with "shutting down" before it exits. Callbacks run on the exec
 * thread with no lock held; a callback may add requests but must not call dg_exec_free(). */
#include "federation/exec.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/common.h"

#define FED "fed"

#define EXEC_DEFAULT_TIMEOUT_MS 10000
#define EXEC_MAX_CONNECTS	64   /* idle keep-alive connections kept in the multi's cache */
#define EXEC_POLL_MS		1000 /* upper bound only: curl's own timers and wakeups cut it */
#define EXEC_LABEL_LEN		96   /* "METHOD /path" kept for logs, without the query */

struct exec_req {
	struct exec_req *next, *prev; /* in x->queue (next only) or x->active */
	dg_exec *x;
	CURL *easy;
	struct curl_slist *hdrs;
	char *body; /* our copy of the request body; curl reads it in place (CURLOPT_POSTFIELDS) */
	unsigned timeout_ms;
	uint64_t start_ms;
	dg_exec_done_fn cb;
	void *arg;

	/* the response, filled by curl's callbacks on the exec thread */
	json_t *resp_hdrs; /* NULL until the first header arrives */
	size_t hdr_bytes;
	struct dg_buf resp;
	const char *fail; /* set by a callback that aborted the transfer: why */

	char label[EXEC_LABEL_LEN];
	char errbuf[CURL_ERROR_SIZE];
};

struct dg_exec {
	pthread_t thread;
	CURLM *multi;
	char *base; /* "http://127.0.0.1:8500", no trailing slash */

	pthread_mutex_t mu;
	struct exec_req *queue, *queue_tail; /* under mu: accepted, not yet seen by the thread */
	bool stopping;			     /* under mu */

	struct exec_req *active; /* exec thread only: added to the multi */
};

/* ---- request and response headers ---- */

/* Headers that describe one hop's framing or connection, not the response: dropped from what a
 * caller sees, and never taken from a caller's request headers (curl sets them itself). */
static bool hop_header(const char *name, size_t len)
{
	static const char *const names[] = {"Content-Length", "Connection", "Date",
					    "Transfer-Encoding", "Keep-Alive"};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && strncasecmp(names[i], name, len) == 0)
			return true;
	return false;
}

static bool has_crlf(const char *s)
{
	return strpbrk(s, "\r\n") != NULL;
}

/* Appends "Name: value" lines for a JSON object of strings to *list. Names or values with CR or
 * LF (header injection), names with ':' or spaces, non-string values and framing headers are
 * skipped. Returns 0 or DG_ENOMEM (*list then still owns what was appended). */
static int request_headers(json_t *headers, struct curl_slist **list, bool *has_ctype)
{
	const char *name;
	json_t *v;
	json_object_foreach(headers, name, v)
	{
		if (!json_is_string(v))
			continue;
		const char *val = json_string_value(v);
		size_t nlen = strlen(name);
		if (nlen == 0 || has_crlf(name) || has_crlf(val) || strpbrk(name, ": \t") != NULL) {
			DG_LOGD(FED, "exec: dropping request header \"%.64s\"", name);
			continue;
		}
		if (hop_header(name, nlen) || dg_streq_ci(name, "Expect") ||
		    dg_streq_ci(name, "Host"))
			continue;
		if (dg_streq_ci(name, "Content-Type"))
			*has_ctype = true;
		/* "Name:" would tell curl to remove the header; "Name;" sends it empty. */
		char *line = NULL;
		int n =
		    val[0] ? asprintf(&line, "%s: %s", name, val) : asprintf(&line, "%s;", name);
		if (n < 0)
			return DG_ENOMEM;
		struct curl_slist *l = curl_slist_append(*list, line);
		free(line);
		if (l == NULL)
			return DG_ENOMEM;
		*list = l;
	}
	return 0;
}

/* Removes a response header already stored under any capitalisation of name, so the last value
 * wins whatever case the server used. */
static void header_forget(json_t *obj, const char *name)
{
	const char *key;
	json_t *v;
	void *tmp;
	json_object_foreach_safe(obj, tmp, key, v)
	{
		if (dg_streq_ci(key, name))
			json_object_del(obj, key);
	}
}

/* CURLOPT_HEADERFUNCTION: one header line per call (not NUL-terminated, CRLF included), the
 * status line first, a blank line last. A new status line (after a 1xx) starts over. */
static size_t header_cb(char *data, size_t size, size_t n, void *userp)
{
	struct exec_req *r = userp;
	size_t len = size * n;
	r->hdr_bytes += len;
	if (r->hdr_bytes > DG_WAN_MAX_HEADER) {
		r->fail = "response headers too large";
		return 0;
	}
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		if (r->resp_hdrs)
			json_object_clear(r->resp_hdrs);
		return len;
	}
	if (len == 0 || data[0] == ' ' || data[0] == '\t') /* obsolete line folding: ignored */
		return len;
	const char *colon = memchr(data, ':', len);
	if (colon == NULL || colon == data)
		return len; /* the blank line, or not a header */
	size_t nlen = (size_t)(colon - data);
	if (hop_header(data, nlen))
		return len;
	const char *v = colon + 1, *end = data + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;

	char *name = dg_strndup(data, nlen);
	if (name == NULL)
		goto nomem;
	if (r->resp_hdrs == NULL && (r->resp_hdrs = json_object()) == NULL) {
		free(name);
		goto nomem;
	}
	/* jansson takes UTF-8 only: a header that is not valid UTF-8 is dropped, not mangled. */
	json_t *s = json_stringn(v, (size_t)(end - v));
	if (s == NULL) {
		DG_LOGD(FED, "exec %s: dropping response header \"%.64s\" (not UTF-8)", r->label,
			name);
		free(name);
		return len;
	}
	header_forget(r->resp_hdrs, name);
	int rv = json_object_set_new(r->resp_hdrs, name, s);
	free(name);
	if (rv != 0)
		goto nomem;
	return len;
nomem:
	r->fail = "out of memory";
	return 0;
}

/* CURLOPT_WRITEFUNCTION: the body, capped at what one WAN message may carry. */
static size_t body_cb(char *data, size_t size, size_t n, void *userp)
{
	struct exec_req *r = userp;
	size_t len = size * n;
	if (len > DG_WAN_MAX_MSG - r->resp.len) {
		r->fail = "response too large";
		return 0;
	}
	if (dg_buf_append(&r->resp, data, len) != 0) {
		r->fail = "out of memory";
		return 0;
	}
	return len;
}

/* ---- one request ---- */

static void req_free(struct exec_req *r)
{
	if (r == NULL)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->hdrs);
	free(r->body);
	json_decref(r->resp_hdrs);
	dg_buf_fini(&r->resp);
	free(r);
}

/* Calls r's callback once and frees r; r must no longer be in the multi or on a list. status 0
 * means err says why no response came. */
static void req_complete(struct exec_req *r, int status, const char *err)
{
	uint64_t ms = dg_now_ms() - r->start_ms;
	json_t *hdrs;
	const char *body = "";
	size_t len = 0;
	if (status != 0) {
		hdrs = r->resp_hdrs ? json_incref(r->resp_hdrs) : json_object();
		if (r->resp.data) {
			body = r->resp.data;
			len = r->resp.len;
		}
		DG_LOGD(FED, "exec %s -> %d, %zu bytes, %llu ms", r->label, status, len,
			(unsigned long long)ms);
	} else {
		hdrs = json_object(); /* a partial response's headers would only mislead */
		DG_LOGD(FED, "exec %s: no response after %llu ms: %s", r->label,
			(unsigned long long)ms, err);
	}
	r->cb(r->arg, status, hdrs, body, len, err);
	json_decref(hdrs);
	req_free(r);
}

static bool method_valid(const char *m)
{
	size_t n = strlen(m);
	if (n == 0 || n > 16)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!((m[i] >= 'A' && m[i] <= 'Z') || (m[i] >= 'a' && m[i] <= 'z')))
			return false;
	return true;
}

static bool path_valid(const char *p)
{
	if (p[0] != '/')
		return false;
	for (; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return false;
	return true;
}

/* Sets up r->easy for one exchange. Returns 0, DG_ENOMEM, or DG_EINVAL if curl refuses an
 * option (which would be a build of libcurl without HTTP). */
static int req_setup(dg_exec *x, struct exec_req *r, const char *method, const char *path_query,
		     json_t *headers, const void *body, size_t len)
{
	CURL *h = r->easy;
	char *url = NULL;
	bool has_ctype = false;
	int rv;

	if (asprintf(&url, "%s%s", x->base, path_query) < 0)
		return DG_ENOMEM;
	CURLcode c = curl_easy_setopt(h, CURLOPT_URL, url); /* curl copies the string */
	free(url);
	if (c != CURLE_OK)
		return c == CURLE_OUT_OF_MEMORY ? DG_ENOMEM : DG_EINVAL;

	if (headers && (rv = request_headers(headers, &r->hdrs, &has_ctype)) != 0)
		return rv;
	/* No "Expect: 100-continue" round trip on loopback. */
	struct curl_slist *l = curl_slist_append(r->hdrs, "Expect:");
	if (l == NULL)
		return DG_ENOMEM;
	r->hdrs = l;

	if (strcmp(method, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else {
		/* PUT, POST, DELETE and the rest send the body exactly, Content-Length: 0 included
		 * when it is empty. POSTFIELDS would add a form Content-Type of its own: remove it
		 * unless the caller gave one. */
		if (len > 0 && (r->body = malloc(len)) == NULL)
			return DG_ENOMEM;
		if (len > 0)
			memcpy(r->body, body, len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
		if (!has_ctype) {
			if ((l = curl_slist_append(r->hdrs, "Content-Type:")) == NULL)
				return DG_ENOMEM;
			r->hdrs = l;
		}
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, r->hdrs);

	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)r->timeout_ms);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(h, CURLOPT_PRIVATE, r);
	return 0;
}

int dg_exec_request(dg_exec *x, const char *method, const char *path_query, json_t *headers,
		    const void *body, size_t len, unsigned timeout_ms, dg_exec_done_fn cb,
		    void *arg)
{
	int rv;
	/* Programming errors, refused before anything is accepted. */
	if (x == NULL || method == NULL || path_query == NULL || cb == NULL ||
	    !method_valid(method) || !path_valid(path_query) || (len > 0 && body == NULL) ||
	    (headers && !json_is_object(headers)))
		return DG_EINVAL;

	struct exec_req *r = calloc(1, sizeof(*r));
	if (r == NULL)
		return DG_ENOMEM;
	r->x = x;
	r->cb = cb;
	r->arg = arg;
	r->timeout_ms = timeout_ms ? timeout_ms : EXEC_DEFAULT_TIMEOUT_MS;
	r->start_ms = dg_now_ms();
	dg_buf_init(&r->resp);
	/* The query string may carry a token: logs get the path only. */
	int plen = (int)strcspn(path_query, "?");
	if (snprintf(r->label, sizeof(r->label), "%s %.*s", method, plen, path_query) < 0)
		r->label[0] = 0;

	if ((r->easy = curl_easy_init()) == NULL) {
		rv = DG_ENOMEM;
		goto fail;
	}
	if ((rv = req_setup(x, r, method, path_query, headers, body, len)) != 0)
		goto fail;

	/* The wakeup is sent with mu held so dg_exec_free(), which takes mu to set stopping, cannot
	 * free the multi between our enqueue and our wakeup. It only writes to a socket pair. */
	pthread_mutex_lock(&x->mu);
	if (x->stopping) {
		pthread_mutex_unlock(&x->mu);
		rv = DG_ESHUTDOWN;
		goto fail;
	}
	bool was_empty = x->queue == NULL;
	if (x->queue_tail)
		x->queue_tail->next = r;
	else
		x->queue = r;
	x->queue_tail = r;
	if (was_empty)
		curl_multi_wakeup(x->multi);
	pthread_mutex_unlock(&x->mu);
	return 0;

fail:
	req_free(r);
	return rv;
}

/* ---- the exec thread ---- */

static void active_add(dg_exec *x, struct exec_req *r)
{
	r->prev = NULL;
	r->next = x->active;
	if (x->active)
		x->active->prev = r;
	x->active = r;
}

static void active_del(dg_exec *x, struct exec_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		x->active = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

/* Reports every finished transfer. */
static void exec_drain(dg_exec *x)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(x->multi, &left)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		CURL *h = m->easy_handle;
		CURLcode res = m->data.result; /* m is invalid after remove_handle */
		struct exec_req *r = NULL;
		curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&r);
		curl_multi_remove_handle(x->multi, h);
		active_del(x, r);

		long code = 0;
		if (res == CURLE_OK)
			curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
		if (res == CURLE_OK && code > 0) {
			req_complete(r, (int)code, NULL);
			continue;
		}
		const char *err = r->fail;
		if (err == NULL)
			err = res == CURLE_OK ? "no response"
			      : r->errbuf[0]  ? r->errbuf
					      : curl_easy_strerror(res);
		DG_LOGW(FED, "exec %s: %s", r->label, err);
		req_complete(r, 0, err);
	}
}

static void *exec_main(void *arg)
{
	dg_exec *x = arg;
	for (;;) {
		pthread_mutex_lock(&x->mu);
		struct exec_req *q = x->queue;
		bool stop = x->stopping;
		x->queue = x->queue_tail = NULL;
		pthread_mutex_unlock(&x->mu);

		while (q) {
			struct exec_req *r = q;
			q = r->next;
			r->next = NULL;
			if (stop) {
				req_complete(r, 0, dg_strerror(DG_ESHUTDOWN));
				continue;
			}
			CURLMcode mc = curl_multi_add_handle(x->multi, r->easy);
			if (mc != CURLM_OK) {
				DG_LOGW(FED, "exec %s: %s", r->label, curl_multi_strerror(mc));
				req_complete(r, 0, curl_multi_strerror(mc));
				continue;
			}
			active_add(x, r);
		}
		if (stop)
			break;

		int running = 0;
		CURLMcode mc = curl_multi_perform(x->multi, &running);
		if (mc != CURLM_OK)
			DG_LOGW(FED, "exec: curl_multi_perform: %s", curl_multi_strerror(mc));
		exec_drain(x);
		mc = curl_multi_poll(x->multi, NULL, 0, EXEC_POLL_MS, NULL);
		if (mc != CURLM_OK)
			DG_LOGW(FED, "exec: curl_multi_poll: %s", curl_multi_strerror(mc));
	}

	/* Stopping: whatever is still in flight ends here, each reported once. */
	while (x->active) {
		struct exec_req *r = x->active;
		active_del(x, r);
		curl_multi_remove_handle(x->multi, r->easy);
		req_complete(r, 0, dg_strerror(DG_ESHUTDOWN));
	}
	return NULL;
}

/* ---- start and free ---- */

/* http://host:port with the wildcard addresses turned into loopback and IPv6 in brackets. */
static char *base_url(const char *host, int port)
{
	if (host == NULL || host[0] == 0 || strcmp(host, "0.0.0.0") == 0)
		host = "127.0.0.1";
	else if (strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0)
		host = "::1";
	bool v6 = strchr(host, ':') != NULL && host[0] != '[';
	char *url = NULL;
	if (asprintf(&url, "http://%s%s%s:%d", v6 ? "[" : "", host, v6 ? "]" : "", port) < 0)
		return NULL;
	return url;
}

int dg_exec_start(const char *host, int port, dg_exec **out, char *msg, size_t len)
{
	int rv;
	*out = NULL;
	if (port <= 0 || port > 65535 || (host && (has_crlf(host) || strpbrk(host, "/?#@ ")))) {
		snprintf(msg, len, "exec: bad HTTP address %s:%d", host ? host : "", port);
		return DG_EINVAL;
	}
	/* Thread-safe in libcurl >= 7.84. Deliberately never paired with curl_global_cleanup()
	 * here: other modules use curl relying on the implicit init, and a cleanup from us could
	 * pull libcurl's global state from under them. The reference lives until exit. */
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		snprintf(msg, len, "exec: cannot initialise libcurl");
		return DG_EIO;
	}
	dg_exec *x = calloc(1, sizeof(*x));
	if (x == NULL) {
		snprintf(msg, len, "exec: out of memory");
		return DG_ENOMEM;
	}
	if ((x->base = base_url(host, port)) == NULL) {
		snprintf(msg, len, "exec: out of memory");
		rv = DG_ENOMEM;
		goto err_x;
	}
	if ((x->multi = curl_multi_init()) == NULL) {
		snprintf(msg, len, "exec: cannot create a curl multi handle");
		rv = DG_ENOMEM;
		goto err_base;
	}
	curl_multi_setopt(x->multi, CURLMOPT_MAXCONNECTS, (long)EXEC_MAX_CONNECTS);
	if (pthread_mutex_init(&x->mu, NULL) != 0) {
		snprintf(msg, len, "exec: cannot create a mutex");
		rv = DG_ENOMEM;
		goto err_multi;
	}
	if (pthread_create(&x->thread, NULL, exec_main, x) != 0) {
		snprintf(msg, len, "exec: cannot start a thread");
		rv = DG_ENOMEM;
		goto err_mu;
	}
	DG_LOGD(FED, "exec: forwarding to %s", x->base);
	*out = x;
	return 0;

err_mu:
	pthread_mutex_destroy(&x->mu);
err_multi:
	curl_multi_cleanup(x->multi);
err_base:
	free(x->base);
err_x:
	free(x);
	return rv;
}

void dg_exec_free(dg_exec *x)
{
	if (x == NULL)
		return;
	pthread_mutex_lock(&x->mu);
	x->stopping = true;
	curl_multi_wakeup(x->multi);
	pthread_mutex_unlock(&x->mu);
	pthread_join(x->thread, NULL); /* the thread has completed every request it held */
	curl_multi_cleanup(x->multi);
	pthread_mutex_destroy(&x->mu);
	free(x->base);
	free(x);
}
