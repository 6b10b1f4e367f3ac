/* In-process calls: a request forwarded to us by another DC, run through the same routing and
 * handlers as a request from a client (dispatch, blocking queries, raft writes, the read cache),
 * with no socket and no HTTP parsing. Federation's executor drives them through
 * dg_http_local_ops (federation.h): it creates a call, runs it on its thread until it answers or
 * suspends, and runs it again each time the call says it is ready.
 *
 * Threads and ownership: a call belongs to its runner (the executor) except while it is
 * suspended, when it belongs to whoever holds its pending resume (a write's callback, a waker,
 * the deadline thread, a nested forward's callback). c->mu guards c->state and c->released:
 * local_resume() hands the call back to the runner through ready() under c->mu, and
 * local_release() decides under c->mu whether the runner can free the call now or the holder of
 * the resume must, so a call is freed exactly once and ready() never follows a release. */
#include "http/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum call_state {
	CALL_IDLE,	/* the runner's: not run yet, or resumed and ready to run again */
	CALL_RUNNING,	/* in dg__http_run on the runner's thread */
	CALL_RESUMED,	/* resumed while still running: the runner runs it again at once */
	CALL_SUSPENDED, /* the holder of its pending resume's */
	CALL_DONE,	/* answered, or given up: never runs again */
};

struct local_arg {
	const char *key, *value; /* into the call's query buffer; value NULL: no '=' */
};

/* The answer as the handlers build it; handed to the runner as a dg_fed_response. */
struct dg_resp {
	json_t *headers;
	char *body;
	size_t len;
};

struct local_call {
	struct dg_req r; /* first: the ops get &c->r */
	pthread_mutex_t mu;
	enum call_state state; /* under mu */
	bool released;	       /* under mu: the runner let go while it was suspended */
	void (*ready)(void *arg);
	void *ready_arg;
	bool head;    /* HEAD: the answer goes without its body, as over HTTP */
	char *method; /* as given, for r.method_text */
	char *query;  /* the query string, split in place: args point into it */
	struct local_arg *args;
	size_t nargs, cap;
	bool args_oom;
	json_t *headers; /* the request headers: our copy */
	struct dg_fed_response resp;
	bool has_resp;
};

/* ---- decoding as MHD does ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

size_t dg__http_unescape(char *s)
{
	char *w = s;
	for (const char *p = s; *p; p++) {
		int hi, lo;
		if (*p == '%' && (hi = hexval(p[1])) >= 0 && (lo = hexval(p[2])) >= 0) {
			*w++ = (char)(hi * 16 + lo);
			p += 2;
		} else {
			*w++ = *p;
		}
	}
	*w = 0;
	return strlen(s); /* a decoded %00 ends the string, as it does for MHD's callers */
}

static void unescape_arg(char *s)
{
	for (char *p = s; *p; p++)
		if (*p == '+')
			*p = ' ';
	dg__http_unescape(s);
}

void dg__http_query_split(char *qs, dg_req_arg_fn fn, void *cls)
{
	while (qs && *qs) {
		char *amp = strchr(qs, '&');
		if (amp)
			*amp++ = 0;
		char *eq = strchr(qs, '=');
		if (eq)
			*eq++ = 0;
		unescape_arg(qs);
		if (eq)
			unescape_arg(eq);
		fn(cls, qs, eq);
		qs = amp;
	}
}

/* ---- the request's ops ---- */

static bool local_arg(struct dg_req *r, const char *name, const char **value)
{
	struct local_call *c = (struct local_call *)r;
	for (size_t i = 0; i < c->nargs; i++)
		if (strcasecmp(c->args[i].key, name) == 0) {
			*value = c->args[i].value;
			return true;
		}
	return false;
}

static void local_args(struct dg_req *r, dg_req_arg_fn fn, void *cls)
{
	struct local_call *c = (struct local_call *)r;
	for (size_t i = 0; i < c->nargs; i++)
		fn(cls, c->args[i].key, c->args[i].value);
}

static const char *local_header(struct dg_req *r, const char *name)
{
	struct local_call *c = (struct local_call *)r;
	const char *key;
	json_t *v;
	json_object_foreach(c->headers, key, v)
	{
		if (strcasecmp(key, name) == 0)
			return json_string_value(v);
	}
	return NULL;
}

static struct dg_resp *local_resp_new(struct dg_req *r, void *body, size_t len, bool take)
{
	struct dg_resp *resp = calloc(1, sizeof(*resp));
	if (resp && (resp->headers = json_object()) != NULL) {
		if (take) {
			resp->body = body;
			resp->len = len;
			return resp;
		}
		if (len == 0 || (resp->body = malloc(len)) != NULL) {
			if (len)
				memcpy(resp->body, body, len);
			resp->len = len;
			return resp;
		}
	}
	if (resp)
		json_decref(resp->headers);
	free(resp);
	if (take)
		free(body);
	return NULL;
}

/* Like an HTTP header sent twice and read back by a client that keeps the last one. A value
 * that is not UTF-8 cannot be a JSON string and is left out. */
static void local_resp_header(struct dg_resp *resp, const char *name, const char *value)
{
	json_object_set_new(resp->headers, name, json_string(value));
}

static void local_resp_free(struct dg_resp *resp)
{
	if (!resp)
		return;
	json_decref(resp->headers);
	free(resp->body);
	free(resp);
}

static int local_respond(struct dg_req *r, int status, struct dg_resp *resp)
{
	struct local_call *c = (struct local_call *)r;
	dg_fed_response_fini(&c->resp);
	c->resp.status = status;
	c->resp.headers = resp->headers;
	c->resp.body = resp->body;
	c->resp.len = resp->len;
	if (c->head) {
		free(c->resp.body);
		c->resp.body = NULL;
		c->resp.len = 0;
	}
	c->has_resp = true;
	free(resp);
	return MHD_YES;
}

/* The state changes when the visit ends (local_run), under c->mu. */
static void local_suspend(struct dg_req *r)
{
}

static void call_free(struct local_call *c)
{
	dg__http_req_fini(&c->r);
	free(c->args);
	free(c->method);
	free(c->query);
	json_decref(c->headers);
	dg_fed_response_fini(&c->resp);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

static void local_resume(struct dg_req *r)
{
	struct local_call *c = (struct local_call *)r;
	pthread_mutex_lock(&c->mu);
	if (c->state == CALL_RUNNING) {
		c->state = CALL_RESUMED;
		pthread_mutex_unlock(&c->mu);
		return;
	}
	if (c->state != CALL_SUSPENDED) {
		pthread_mutex_unlock(&c->mu);
		DG_LOGE("http", "in-process %s %s resumed while not suspended", c->method,
			c->r.url);
		return;
	}
	if (c->released) {
		pthread_mutex_unlock(&c->mu);
		call_free(c); /* its runner let go: the last holder frees it */
		return;
	}
	c->state = CALL_IDLE;
	c->ready(c->ready_arg); /* under mu: a release waits until the runner has it queued */
	pthread_mutex_unlock(&c->mu);
}

static const struct dg_req_ops local_ops = {
	.arg = local_arg,
	.args = local_args,
	.header = local_header,
	.resp_new = local_resp_new,
	.resp_header = local_resp_header,
	.resp_free = local_resp_free,
	.respond = local_respond,
	.suspend = local_suspend,
	.resume = local_resume,
};

/* ---- the executor's side (dg_fed_local_ops) ---- */

static void add_arg(void *cls, const char *key, const char *value)
{
	struct local_call *c = cls;
	if (c->nargs == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 8;
		struct local_arg *a = realloc(c->args, cap * sizeof(*a));
		if (!a) {
			c->args_oom = true;
			return;
		}
		c->args = a;
		c->cap = cap;
	}
	c->args[c->nargs].key = key;
	c->args[c->nargs].value = value;
	c->nargs++;
}

static void *local_call_new(void *srv, const struct dg_fed_local_request *req,
			    void (*ready)(void *arg), void *arg, int *err)
{
	dg_http *h = srv;
	struct local_call *c = calloc(1, sizeof(*c));
	*err = DG_ENOMEM;
	if (!c)
		return NULL;
	pthread_mutex_init(&c->mu, NULL);
	dg__http_req_init(&c->r, h, &local_ops, NULL);
	c->ready = ready;
	c->ready_arg = arg;
	c->head = strcmp(req->method, "HEAD") == 0;
	const char *q = strchr(req->path_query, '?');
	size_t plen = q ? (size_t)(q - req->path_query) : strlen(req->path_query);
	if (!(c->method = strdup(req->method)) || !(c->r.url = dg_strndup(req->path_query, plen)) ||
	    (q && !(c->query = strdup(q + 1))) ||
	    /* shared, not copied: only read, and jansson's reference counts are atomic */
	    !(c->headers = req->headers ? json_incref(req->headers) : json_object()))
		goto fail;
	dg__http_unescape(c->r.url);
	c->r.method = dg__http_method_parse(c->method);
	c->r.method_text = c->method;
	dg__http_query_split(c->query, add_arg, c);
	if (c->args_oom)
		goto fail;
	if (req->len > dg__http_body_limit(&c->r))
		c->r.body_too_big = true; /* 413, before any forwarding, as over HTTP */
	else if (req->len && dg_buf_append(&c->r.body, req->body, req->len) != 0)
		goto fail;
	*err = 0;
	return c;
fail:
	call_free(c);
	return NULL;
}

static int local_call_run(void *call, struct dg_fed_response *out, const char **why)
{
	struct local_call *c = call;
	pthread_mutex_lock(&c->mu);
	c->state = CALL_RUNNING;
	pthread_mutex_unlock(&c->mu);
	for (;;) {
		int rv = dg__http_run(&c->r);
		pthread_mutex_lock(&c->mu);
		if (c->r.answered && c->has_resp) {
			c->state = CALL_DONE;
			pthread_mutex_unlock(&c->mu);
			*out = c->resp;
			memset(&c->resp, 0, sizeof(c->resp));
			c->has_resp = false;
			return 1;
		}
		if (rv == MHD_NO || c->r.answered || (!c->r.suspended && c->state != CALL_RESUMED)) {
			/* what MHD would take for "close the connection": no answer at all */
			c->state = CALL_DONE;
			pthread_mutex_unlock(&c->mu);
			*why = "the HTTP API gave no answer (out of memory?)";
			return -1;
		}
		if (c->state == CALL_RESUMED) {
			c->state = CALL_RUNNING;
			pthread_mutex_unlock(&c->mu);
			continue;
		}
		c->state = CALL_SUSPENDED;
		pthread_mutex_unlock(&c->mu);
		return 0;
	}
}

static void local_call_release(void *call)
{
	struct local_call *c = call;
	if (!c)
		return;
	/* A parked blocking query is taken off the list, so the runner holds its resume itself
	 * and it does not wait out its deadline. */
	if (!dg__http_unpark(&c->r)) {
		pthread_mutex_lock(&c->mu);
		if (c->state == CALL_SUSPENDED) {
			c->released = true; /* a write or a forward holds it: freed on its resume */
			pthread_mutex_unlock(&c->mu);
			return;
		}
		pthread_mutex_unlock(&c->mu);
	}
	call_free(c);
}

const struct dg_fed_local_ops dg_http_local_ops = {
	.call_new = local_call_new,
	.call_run = local_call_run,
	.call_release = local_call_release,
};
