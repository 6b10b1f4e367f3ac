/* Tests for federation/exec.c over a fake HTTP layer (struct dg_fed_local_ops) defined here:
 * round trips with headers and binary bodies, calls that suspend and are made ready again from
 * other threads (also while they still run), many concurrent requests from several threads each
 * getting its own answer, timeouts, answers that cannot be sent, and shutdown with requests in
 * flight; every call must be released exactly once and never made ready after its release. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/common.h"
#include "federation/exec.h"

#define WAIT_MS 15000 /* a callback that has not come by then never will */

static const char BIN[] = "\0bin\0ary\0\xff";
#define BIN_LEN (sizeof(BIN) - 1)

/* ---- the fake HTTP layer ----
 * Paths: /echo... answers at once with the request echoed (X-Method, X-Path, request headers
 * as X-Req-<name>, the body); /later... suspends, a timer thread makes it ready 5 ms later,
 * then it echoes; /early... makes itself ready before its first run returns, then echoes;
 * /hang suspends for good; /fail gives no answer; /big answers more than a WAN message holds. */

struct fake_call {
	pthread_mutex_t mu;
	char *method, *path;
	json_t *headers;
	char *body;
	size_t len;
	void (*ready)(void *arg);
	void *arg;
	int runs;
	bool suspended; /* under mu */
	bool released;	/* under mu */
	bool timer;	/* under mu: the timer thread holds it */
};

static atomic_int created, freed, ready_after_release, runs_total;

static void fake_free(struct fake_call *c)
{
	free(c->method);
	free(c->path);
	json_decref(c->headers);
	free(c->body);
	pthread_mutex_destroy(&c->mu);
	free(c);
	atomic_fetch_add(&freed, 1);
}

static void *fake_new(void *srv, const struct dg_fed_local_request *req, void (*ready)(void *),
		      void *arg, int *err)
{
	assert_ptr_equal(srv, &created);
	struct fake_call *c = calloc(1, sizeof(*c));
	assert_non_null(c);
	pthread_mutex_init(&c->mu, NULL);
	c->method = strdup(req->method);
	c->path = strdup(req->path_query);
	c->headers = req->headers ? json_deep_copy(req->headers) : json_object();
	c->body = malloc(req->len + 1);
	memcpy(c->body, req->body ? req->body : "", req->len);
	c->len = req->len;
	c->ready = ready;
	c->arg = arg;
	atomic_fetch_add(&created, 1);
	*err = 0;
	return c;
}

static void *timer_main(void *arg)
{
	struct fake_call *c = arg;
	usleep(5000);
	pthread_mutex_lock(&c->mu);
	c->timer = false;
	if (c->released) {
		pthread_mutex_unlock(&c->mu);
		fake_free(c);
		return NULL;
	}
	c->suspended = false;
	c->ready(c->arg); /* under the call's lock, as the HTTP layer does */
	pthread_mutex_unlock(&c->mu);
	return NULL;
}

static int echo(struct fake_call *c, struct dg_fed_response *out)
{
	out->status = 200;
	out->headers = json_object();
	json_object_set_new(out->headers, "X-Method", json_string(c->method));
	json_object_set_new(out->headers, "X-Path", json_string(c->path));
	const char *k;
	json_t *v;
	json_object_foreach(c->headers, k, v)
	{
		char name[128];
		snprintf(name, sizeof(name), "X-Req-%s", k);
		json_object_set(out->headers, name, v);
	}
	out->body = c->len ? malloc(c->len) : NULL;
	if (c->len)
		memcpy(out->body, c->body, c->len);
	out->len = c->len;
	return 1;
}

static int fake_run(void *call, struct dg_fed_response *out, const char **why)
{
	struct fake_call *c = call;
	atomic_fetch_add(&runs_total, 1);
	c->runs++;
	pthread_mutex_lock(&c->mu);
	assert_false(c->released);
	assert_false(c->suspended);
	pthread_mutex_unlock(&c->mu);
	if (strncmp(c->path, "/echo", 5) == 0)
		return echo(c, out);
	if (strncmp(c->path, "/later", 6) == 0 || strncmp(c->path, "/early", 6) == 0) {
		if (c->runs > 1)
			return echo(c, out);
		pthread_mutex_lock(&c->mu);
		if (c->path[1] == 'e') {
			c->ready(c->arg); /* ready while still running */
			pthread_mutex_unlock(&c->mu);
			return 0;
		}
		c->suspended = true;
		c->timer = true;
		pthread_mutex_unlock(&c->mu);
		pthread_t t;
		assert_int_equal(pthread_create(&t, NULL, timer_main, c), 0);
		pthread_detach(t);
		return 0;
	}
	if (strcmp(c->path, "/hang") == 0) {
		pthread_mutex_lock(&c->mu);
		c->suspended = true;
		pthread_mutex_unlock(&c->mu);
		return 0;
	}
	if (strcmp(c->path, "/big") == 0) {
		out->status = 200;
		out->headers = json_object();
		out->len = DG_WAN_MAX_MSG + 1;
		out->body = calloc(1, out->len);
		return 1;
	}
	*why = "the fake gives no answer";
	return -1;
}

static void fake_release(void *call)
{
	struct fake_call *c = call;
	pthread_mutex_lock(&c->mu);
	if (c->released)
		atomic_fetch_add(&ready_after_release, 1000); /* released twice */
	c->released = true;
	bool held = c->timer;
	pthread_mutex_unlock(&c->mu);
	if (!held)
		fake_free(c);
}

static const struct dg_fed_local_ops fake_ops = {
	.call_new = fake_new,
	.call_run = fake_run,
	.call_release = fake_release,
};

/* ---- results ---- */

struct res {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	int status;
	json_t *headers;
	struct dg_buf body;
	char err[128];
};

static void res_init(struct res *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	dg_buf_init(&r->body);
}

static void res_fini(struct res *r)
{
	json_decref(r->headers);
	dg_buf_fini(&r->body);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

static void done_cb(void *arg, int status, json_t *headers, const char *body, size_t len,
		    const char *err)
{
	struct res *r = arg;
	pthread_mutex_lock(&r->mu);
	r->calls++;
	r->status = status;
	json_decref(r->headers);
	r->headers = json_deep_copy(headers);
	dg_buf_append(&r->body, body, len);
	snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void res_wait(struct res *r)
{
	pthread_mutex_lock(&r->mu);
	struct timespec ts = dg_realtime_in_ms(WAIT_MS);
	while (r->calls == 0 && pthread_cond_timedwait(&r->cv, &r->mu, &ts) == 0)
		;
	pthread_mutex_unlock(&r->mu);
	assert_int_equal(r->calls, 1);
}

static dg_exec *start(void)
{
	dg_exec *x = NULL;
	char msg[128];
	assert_int_equal(dg_exec_start(&fake_ops, &created, &x, msg, sizeof(msg)), 0);
	return x;
}

/* Every call made was freed once, none made ready after its release. */
static void check_calls(void)
{
	for (int i = 0; i < WAIT_MS / 10 && atomic_load(&freed) < atomic_load(&created); i++)
		usleep(10000); /* a timer thread may still hold one */
	assert_int_equal(atomic_load(&freed), atomic_load(&created));
	assert_int_equal(atomic_load(&ready_after_release), 0);
}

static const char *hdr(struct res *r, const char *name)
{
	return json_string_value(json_object_get(r->headers, name));
}

/* ---- tests ---- */

static void round_trip(void **state)
{
	dg_exec *x = start();
	struct res r;
	res_init(&r);
	json_t *h = json_pack("{s:s}", "X-Consul-Token", "t1");
	assert_int_equal(dg_exec_request(x, "PUT", "/echo/k?dc=east&flags=3", h, BIN, BIN_LEN, 0,
					 done_cb, &r),
			 0);
	json_decref(h); /* copied: the executor keeps nothing of the caller's */
	res_wait(&r);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Method"), "PUT");
	assert_string_equal(hdr(&r, "X-Path"), "/echo/k?dc=east&flags=3");
	assert_string_equal(hdr(&r, "X-Req-X-Consul-Token"), "t1");
	assert_int_equal(r.body.len, BIN_LEN);
	assert_memory_equal(r.body.data, BIN, BIN_LEN);
	assert_string_equal(r.err, "");
	res_fini(&r);
	dg_exec_free(x);
	check_calls();
}

static void suspended_calls_run_again(void **state)
{
	dg_exec *x = start();
	struct res a, b;
	res_init(&a);
	res_init(&b);
	int runs = atomic_load(&runs_total);
	assert_int_equal(dg_exec_request(x, "GET", "/later/1", NULL, NULL, 0, 0, done_cb, &a), 0);
	assert_int_equal(dg_exec_request(x, "GET", "/early/2", NULL, NULL, 0, 0, done_cb, &b), 0);
	res_wait(&a);
	res_wait(&b);
	assert_int_equal(a.status, 200);
	assert_string_equal(hdr(&a, "X-Path"), "/later/1");
	assert_int_equal(b.status, 200);
	assert_string_equal(hdr(&b, "X-Path"), "/early/2");
	assert_int_equal(atomic_load(&runs_total) - runs, 4);
	res_fini(&a);
	res_fini(&b);
	dg_exec_free(x);
	check_calls();
}

#define THREADS 8
#define PER_THREAD 40

struct adder {
	dg_exec *x;
	int id;
	struct res r[PER_THREAD];
};

static void *adder_main(void *arg)
{
	struct adder *a = arg;
	for (int i = 0; i < PER_THREAD; i++) {
		char path[64], body[32];
		snprintf(path, sizeof(path), "/%s/%d/%d", i % 3 == 0 ? "later" : "echo", a->id, i);
		snprintf(body, sizeof(body), "%d-%d", a->id, i);
		if (dg_exec_request(a->x, "PUT", path, NULL, body, strlen(body), 0, done_cb,
				    &a->r[i]) != 0)
			return "refused";
	}
	return NULL;
}

static void many_concurrent(void **state)
{
	dg_exec *x = start();
	static struct adder ad[THREADS];
	pthread_t t[THREADS];
	for (int k = 0; k < THREADS; k++) {
		ad[k].x = x;
		ad[k].id = k;
		for (int i = 0; i < PER_THREAD; i++)
			res_init(&ad[k].r[i]);
		assert_int_equal(pthread_create(&t[k], NULL, adder_main, &ad[k]), 0);
	}
	for (int k = 0; k < THREADS; k++) {
		void *rv;
		pthread_join(t[k], &rv);
		assert_null(rv);
	}
	for (int k = 0; k < THREADS; k++)
		for (int i = 0; i < PER_THREAD; i++) {
			struct res *r = &ad[k].r[i];
			char path[64], body[32];
			snprintf(path, sizeof(path), "/%s/%d/%d", i % 3 == 0 ? "later" : "echo", k,
				 i);
			snprintf(body, sizeof(body), "%d-%d", k, i);
			res_wait(r);
			assert_int_equal(r->status, 200);
			assert_string_equal(hdr(r, "X-Path"), path);
			assert_int_equal(r->body.len, strlen(body));
			assert_memory_equal(r->body.data, body, strlen(body));
			res_fini(r);
		}
	dg_exec_free(x);
	check_calls();
}

static void timeout_gives_status_0(void **state)
{
	dg_exec *x = start();
	struct res r;
	res_init(&r);
	uint64_t t0 = dg_now_ms();
	assert_int_equal(dg_exec_request(x, "GET", "/hang", NULL, NULL, 0, 100, done_cb, &r), 0);
	res_wait(&r);
	assert_true(dg_now_ms() - t0 >= 100);
	assert_int_equal(r.status, 0);
	assert_non_null(strstr(r.err, "timed out"));
	assert_int_equal(json_object_size(r.headers), 0);
	res_fini(&r);
	dg_exec_free(x);
	check_calls();
}

static void no_answer_gives_status_0(void **state)
{
	dg_exec *x = start();
	struct res a, b;
	res_init(&a);
	res_init(&b);
	assert_int_equal(dg_exec_request(x, "GET", "/fail", NULL, NULL, 0, 0, done_cb, &a), 0);
	assert_int_equal(dg_exec_request(x, "GET", "/big", NULL, NULL, 0, 0, done_cb, &b), 0);
	res_wait(&a);
	res_wait(&b);
	assert_int_equal(a.status, 0);
	assert_string_equal(a.err, "the fake gives no answer");
	assert_int_equal(b.status, 0);
	assert_string_equal(b.err, "response too large");
	res_fini(&a);
	res_fini(&b);
	dg_exec_free(x);
	check_calls();
}

static void free_completes_everything_once(void **state)
{
	enum { HUNG = 20, LATER = 20 };
	dg_exec *x = start();
	struct res r[HUNG + LATER];
	for (int i = 0; i < HUNG + LATER; i++)
		res_init(&r[i]);
	for (int i = 0; i < HUNG; i++)
		assert_int_equal(
		    dg_exec_request(x, "GET", "/hang", NULL, NULL, 0, 20000, done_cb, &r[i]), 0);
	/* these may be queued, running, or held by their timer when the executor stops */
	for (int i = HUNG; i < HUNG + LATER; i++)
		assert_int_equal(
		    dg_exec_request(x, "PUT", "/later", NULL, "b", 1, 20000, done_cb, &r[i]), 0);
	usleep(2000);
	dg_exec_free(x);
	for (int i = 0; i < HUNG + LATER; i++) {
		assert_int_equal(r[i].calls, 1);
		if (i < HUNG || r[i].status == 0)
			assert_string_equal(r[i].err, "shutting down");
		res_fini(&r[i]);
	}
	check_calls();
	dg_exec_free(NULL);
}

static void bad_arguments_are_refused(void **state)
{
	dg_exec *x = start();
	struct res r;
	res_init(&r);
	assert_int_equal(dg_exec_request(x, "G ET", "/echo", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "echo", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "/a\r\nX: y", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "/echo", NULL, NULL, 0, 0, NULL, &r), DG_EINVAL);
	json_t *arr = json_array();
	assert_int_equal(dg_exec_request(x, "GET", "/echo", arr, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	json_decref(arr);
	dg_exec_free(x);
	assert_int_equal(r.calls, 0);
	res_fini(&r);
	check_calls();

	dg_exec *y = NULL;
	char msg[128];
	assert_int_equal(dg_exec_start(NULL, NULL, &y, msg, sizeof(msg)), DG_EINVAL);
	assert_null(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(round_trip),
	    cmocka_unit_test(suspended_calls_run_again),
	    cmocka_unit_test(many_concurrent),
	    cmocka_unit_test(timeout_gives_status_0),
	    cmocka_unit_test(no_answer_gives_status_0),
	    cmocka_unit_test(free_completes_everything_once),
	    cmocka_unit_test(bad_arguments_are_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
