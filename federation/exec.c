/* federation/exec.c: answers requests forwarded from other DCs by running them through this
 * agent's HTTP layer in process (struct dg_fed_local_ops), on one executor thread, so forwarded
 * and local requests are served by the same code with no loopback HTTP in between.
 *
 * Threads and ownership: the exec thread runs every call and owns x->active, the requests it has
 * taken in and not completed. dg_exec_request() runs on any thread: it creates the call there
 * (so allocation failures are returned, not called back) and queues it on x->ready under x->mu.
 * A call that suspends is the HTTP layer's until it says it is ready again (exec_ready(), any
 * thread, queues it on x->ready under x->mu) or until we release it. x->stopping, under x->mu,
 * is set once by dg_exec_free(); after that nothing more is accepted, and the exec thread
 * completes everything it holds with "shutting down" before it exits. Each request's callback
 * runs exactly once, on the exec thread with no lock held, always before its call is released;
 * a callback may add requests but must not call dg_exec_free(). Lock order: a call's own lock
 * (held by the HTTP layer around ready) before x->mu; the exec thread never calls into the HTTP
 * layer with x->mu held. */
#include "federation/exec.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

#define FED "fed"

#define EXEC_DEFAULT_TIMEOUT_MS 10000
#define EXEC_IDLE_MS		1000 /* upper bound of a wait with no deadline closer */
#define EXEC_LABEL_LEN		96   /* "METHOD /path" kept for logs, without the query */

struct exec_req {
	struct exec_req *qnext; /* in x->ready, under x->mu */
	bool queued;		/* under x->mu */
	bool taken;		/* exec thread: in x->active */
	struct exec_req *anext, *aprev;
	dg_exec *x;
	void *call;
	uint64_t start_ms, deadline_ms;
	dg_exec_done_fn cb;
	void *arg;
	char label[EXEC_LABEL_LEN];
};

struct dg_exec {
	pthread_t thread;
	const struct dg_fed_local_ops *ops;
	void *srv;

	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct exec_req *ready, *ready_tail; /* under mu: new, or resumed and to run again */
	bool stopping;			     /* under mu */

	struct exec_req *active; /* exec thread only */
	uint64_t next_deadline;	 /* exec thread only: no request in active expires before */
};

/* ---- the queue ---- */

/* Puts r at the end of x->ready, unless it is there already, and wakes the thread. Under mu. */
static void enqueue(dg_exec *x, struct exec_req *r)
{
	if (r->queued)
		return;
	r->queued = true;
	r->qnext = NULL;
	if (x->ready_tail)
		x->ready_tail->qnext = r;
	else
		x->ready = r;
	x->ready_tail = r;
	pthread_cond_signal(&x->cond);
}

/* The HTTP layer's ready(): any thread, with the call's own lock held. */
static void exec_ready(void *arg)
{
	struct exec_req *r = arg;
	dg_exec *x = r->x;
	pthread_mutex_lock(&x->mu);
	enqueue(x, r);
	pthread_mutex_unlock(&x->mu);
}

/* Takes r off x->ready if it is there. Under mu. */
static void unqueue(dg_exec *x, struct exec_req *r)
{
	if (!r->queued)
		return;
	struct exec_req *prev = NULL;
	for (struct exec_req *p = x->ready; p; prev = p, p = p->qnext) {
		if (p != r)
			continue;
		if (prev)
			prev->qnext = p->qnext;
		else
			x->ready = p->qnext;
		if (x->ready_tail == p)
			x->ready_tail = prev;
		break;
	}
	r->queued = false;
	r->qnext = NULL;
}

static void active_add(dg_exec *x, struct exec_req *r)
{
	r->taken = true;
	r->aprev = NULL;
	r->anext = x->active;
	if (x->active)
		x->active->aprev = r;
	x->active = r;
	if (r->deadline_ms < x->next_deadline)
		x->next_deadline = r->deadline_ms;
}

static void active_del(dg_exec *x, struct exec_req *r)
{
	if (!r->taken)
		return;
	if (r->aprev)
		r->aprev->anext = r->anext;
	else
		x->active = r->anext;
	if (r->anext)
		r->anext->aprev = r->aprev;
	r->anext = r->aprev = NULL;
	r->taken = false;
}

/* ---- completing ---- */

/* Calls r's callback once, releases its call and frees r. Exec thread, no lock held. resp is
 * the answer when status != 0 (its contents stay the caller's). */
static void complete(dg_exec *x, struct exec_req *r, const struct dg_fed_response *resp,
		     const char *err)
{
	uint64_t ms = dg_now_ms() - r->start_ms;
	int status = resp ? resp->status : 0;
	if (resp && resp->len > DG_WAN_MAX_MSG) {
		status = 0;
		err = "response too large";
	}
	if (status != 0) {
		json_t *hdrs = resp->headers ? json_incref(resp->headers) : json_object();
		DG_LOGD(FED, "exec %s -> %d, %zu bytes, %llu ms", r->label, status, resp->len,
			(unsigned long long)ms);
		r->cb(r->arg, status, hdrs, resp->body ? resp->body : "", resp->len, NULL);
		json_decref(hdrs);
	} else {
		json_t *hdrs = json_object();
		DG_LOGD(FED, "exec %s: no answer after %llu ms: %s", r->label,
			(unsigned long long)ms, err);
		r->cb(r->arg, 0, hdrs, "", 0, err);
		json_decref(hdrs);
	}
	/* released before r is freed: once release returns, no exec_ready() can queue r again */
	x->ops->call_release(r->call);
	pthread_mutex_lock(&x->mu);
	unqueue(x, r);
	pthread_mutex_unlock(&x->mu);
	active_del(x, r);
	free(r);
}

/* Runs r's call once (its first run, or after it said it was ready). */
static void run(dg_exec *x, struct exec_req *r)
{
	struct dg_fed_response out = {0};
	const char *why = "no answer";
	int rv = x->ops->call_run(r->call, &out, &why);
	if (rv == 0)
		return; /* suspended: exec_ready() brings it back */
	complete(x, r, rv > 0 ? &out : NULL, why);
	dg_fed_response_fini(&out);
}

/* Completes every request whose time is up, and finds the next deadline. */
static void expire(dg_exec *x, uint64_t now)
{
	if (now < x->next_deadline)
		return;
	uint64_t next = UINT64_MAX;
	for (struct exec_req *r = x->active, *n; r; r = n) {
		n = r->anext;
		if (now >= r->deadline_ms) {
			char why[64];
			snprintf(why, sizeof(why), "timed out after %llu ms",
				 (unsigned long long)(now - r->start_ms));
			DG_LOGW(FED, "exec %s: %s", r->label, why);
			complete(x, r, NULL, why);
		} else if (r->deadline_ms < next) {
			next = r->deadline_ms;
		}
	}
	x->next_deadline = next;
}

static void *exec_main(void *arg)
{
	dg_exec *x = arg;
	pthread_mutex_lock(&x->mu);
	for (;;) {
		while (!x->ready && !x->stopping) {
			uint64_t now = dg_now_ms();
			if (now >= x->next_deadline)
				break;
			uint64_t wait = x->next_deadline - now;
			struct timespec ts = dg_realtime_in_ms(wait < EXEC_IDLE_MS ? wait : EXEC_IDLE_MS);
			pthread_cond_timedwait(&x->cond, &x->mu, &ts);
		}
		struct exec_req *q = x->ready;
		bool stop = x->stopping;
		x->ready = x->ready_tail = NULL;
		for (struct exec_req *r = q; r; r = r->qnext)
			r->queued = false;
		pthread_mutex_unlock(&x->mu);

		while (q) {
			struct exec_req *r = q;
			q = r->qnext;
			r->qnext = NULL;
			if (!r->taken)
				active_add(x, r);
			if (!stop)
				run(x, r);
		}
		if (stop)
			break;
		expire(x, dg_now_ms());
		pthread_mutex_lock(&x->mu);
	}

	/* Stopping: whatever is still held ends here, each reported once. */
	while (x->active)
		complete(x, x->active, NULL, dg_strerror(DG_ESHUTDOWN));
	return NULL;
}

/* ---- requests ---- */

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

int dg_exec_request(dg_exec *x, const char *method, const char *path_query, json_t *headers,
		    const void *body, size_t len, unsigned timeout_ms, dg_exec_done_fn cb,
		    void *arg)
{
	int rv;
	/* Programming errors and malformed requests, refused before anything is accepted. */
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
	r->start_ms = dg_now_ms();
	r->deadline_ms = r->start_ms + (timeout_ms ? timeout_ms : EXEC_DEFAULT_TIMEOUT_MS);
	/* The query string may carry a token: logs get the path only. */
	int plen = (int)strcspn(path_query, "?");
	if (snprintf(r->label, sizeof(r->label), "%s %.*s", method, plen, path_query) < 0)
		r->label[0] = 0;

	struct dg_fed_local_request lr = {
		.method = method,
		.path_query = path_query,
		.headers = headers,
		.body = body,
		.len = len,
	};
	if ((r->call = x->ops->call_new(x->srv, &lr, exec_ready, r, &rv)) == NULL) {
		free(r);
		return rv ? rv : DG_ENOMEM;
	}

	pthread_mutex_lock(&x->mu);
	if (x->stopping) {
		pthread_mutex_unlock(&x->mu);
		x->ops->call_release(r->call); /* never run: nothing else holds it */
		free(r);
		return DG_ESHUTDOWN;
	}
	enqueue(x, r);
	pthread_mutex_unlock(&x->mu);
	return 0;
}

/* ---- start and free ---- */

int dg_exec_start(const struct dg_fed_local_ops *ops, void *srv, dg_exec **out, char *msg,
		  size_t len)
{
	int rv;
	*out = NULL;
	if (ops == NULL || ops->call_new == NULL || ops->call_run == NULL ||
	    ops->call_release == NULL) {
		snprintf(msg, len, "exec: no HTTP layer to run forwarded requests");
		return DG_EINVAL;
	}
	dg_exec *x = calloc(1, sizeof(*x));
	if (x == NULL) {
		snprintf(msg, len, "exec: out of memory");
		return DG_ENOMEM;
	}
	x->ops = ops;
	x->srv = srv;
	x->next_deadline = UINT64_MAX;
	if (pthread_mutex_init(&x->mu, NULL) != 0) {
		snprintf(msg, len, "exec: cannot create a mutex");
		rv = DG_ENOMEM;
		goto err_x;
	}
	if (pthread_cond_init(&x->cond, NULL) != 0) {
		snprintf(msg, len, "exec: cannot create a condition variable");
		rv = DG_ENOMEM;
		goto err_mu;
	}
	if (pthread_create(&x->thread, NULL, exec_main, x) != 0) {
		snprintf(msg, len, "exec: cannot start a thread");
		rv = DG_ENOMEM;
		goto err_cond;
	}
	pthread_setname_np(x->thread, "dg-fed-exec"); /* for top -H and perf; best effort */
	*out = x;
	return 0;

err_cond:
	pthread_cond_destroy(&x->cond);
err_mu:
	pthread_mutex_destroy(&x->mu);
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
	pthread_cond_signal(&x->cond);
	pthread_mutex_unlock(&x->mu);
	pthread_join(x->thread, NULL); /* the thread has completed every request it held */
	pthread_cond_destroy(&x->cond);
	pthread_mutex_destroy(&x->mu);
	free(x);
}
