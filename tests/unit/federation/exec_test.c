/* Tests for federation/exec.c against a small libmicrohttpd server started here on 127.0.0.1
 * (thread per connection, so a route may sleep or hang): round trips for every method with
 * headers and binary bodies both ways, the body cap, keep-alive reuse, many concurrent requests
 * added from several threads, timeouts, a refused port, and shutdown with requests in flight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/common.h"
#include "federation/exec.h"

#define WAIT_MS 15000 /* a callback that has not come by then never will */

/* Bytes with NULs in them, sent by /echo when the request has no body of its own. */
static const char BIN[] = "\0bin\0ary\0\xff";
#define BIN_LEN (sizeof(BIN) - 1)

/* ---- the test server ---- */

static struct {
	struct MHD_Daemon *d;
	int port;
	atomic_int conns;	 /* TCP connections accepted so far */
	atomic_int hang_arrived; /* requests now parked in /hang */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool release; /* under mu: /hang may answer */
} S;

struct conn {
	char *uri; /* as the client sent it, query included */
	struct dg_buf body;
	bool seen;
};

static void *uri_log(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct conn *k = calloc(1, sizeof(*k));
	if (k) {
		k->uri = strdup(uri);
		dg_buf_init(&k->body);
	}
	return k;
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls,
		      enum MHD_RequestTerminationCode toe)
{
	struct conn *k = *con_cls;
	if (k) {
		free(k->uri);
		dg_buf_fini(&k->body);
		free(k);
	}
	*con_cls = NULL;
}

static void notify_conn(void *cls, struct MHD_Connection *c, void **socket_context,
			enum MHD_ConnectionNotificationCode toe)
{
	if (toe == MHD_CONNECTION_NOTIFY_STARTED)
		atomic_fetch_add(&S.conns, 1);
}

static const char *req_header(struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
	return v ? v : "(none)";
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const void *body, size_t len)
{
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, "X-Consul-Index", "42");
	enum MHD_Result rv = MHD_queue_response(c, code, resp);
	MHD_destroy_response(resp);
	return rv;
}

/* Routes: /echo answers with what it received (in X- headers, the body echoed), /slow after
 * 300 ms, /hang when the test releases it, /big and /cap with bodies just over and exactly at
 * the cap, /status/404 with a 404. */
static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *upload_data,
			       size_t *upload_data_size, void **con_cls)
{
	struct conn *k = *con_cls;
	if (k == NULL)
		return MHD_NO;
	if (!k->seen) { /* answering on the first call would cost keep-alive */
		k->seen = true;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (dg_buf_append(&k->body, upload_data, *upload_data_size) != 0)
			return MHD_NO;
		*upload_data_size = 0;
		return MHD_YES;
	}

	if (strcmp(url, "/echo") == 0) {
		const void *body = k->body.len ? k->body.data : BIN;
		size_t len = k->body.len ? k->body.len : BIN_LEN;
		if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0 ||
		    strcmp(method, "DELETE") == 0) { /* exactly what came, even nothing */
			body = k->body.data;
			len = k->body.len;
		}
		struct MHD_Response *resp =
		    MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
		if (resp == NULL)
			return MHD_NO;
		MHD_add_response_header(resp, "X-Method", method);
		MHD_add_response_header(resp, "X-Uri", k->uri ? k->uri : "");
		MHD_add_response_header(resp, "X-Token", req_header(c, "X-Consul-Token"));
		MHD_add_response_header(resp, "X-Ctype", req_header(c, "Content-Type"));
		MHD_add_response_header(resp, "X-Clen", req_header(c, "Content-Length"));
		MHD_add_response_header(resp, "X-Expect", req_header(c, "Expect"));
		MHD_add_response_header(resp, "X-Injected", req_header(c, "X-Injected"));
		MHD_add_response_header(resp, "X-Bad", req_header(c, "X-Bad"));
		/* MHD refuses an empty header value: bracket it. */
		char empty[64];
		snprintf(empty, sizeof(empty), "[%.60s]", req_header(c, "X-Empty"));
		MHD_add_response_header(resp, "X-Empty-Seen", empty);
		MHD_add_response_header(resp, "X-Consul-Index", "42");
		MHD_add_response_header(resp, "X-Consul-KnownLeader", "true");
		MHD_add_response_header(resp, "X-Dup", "1");
		MHD_add_response_header(resp, "x-dup", "2");
		enum MHD_Result rv = MHD_queue_response(c, 200, resp);
		MHD_destroy_response(resp);
		return rv;
	}
	if (strcmp(url, "/slow") == 0) {
		usleep(300 * 1000);
		return reply(c, 200, "slow", 4);
	}
	if (strcmp(url, "/hang") == 0) {
		atomic_fetch_add(&S.hang_arrived, 1);
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 30;
		pthread_mutex_lock(&S.mu);
		while (!S.release)
			if (pthread_cond_timedwait(&S.cv, &S.mu, &until) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&S.mu);
		atomic_fetch_sub(&S.hang_arrived, 1);
		return reply(c, 200, "late", 4);
	}
	if (strcmp(url, "/big") == 0 || strcmp(url, "/cap") == 0) {
		size_t len = DG_WAN_MAX_MSG + (url[1] == 'b' ? 1 : 0);
		char *big = malloc(len);
		if (big == NULL)
			return MHD_NO;
		memset(big, 'x', len);
		enum MHD_Result rv = reply(c, 200, big, len);
		free(big);
		return rv;
	}
	if (strcmp(url, "/status/404") == 0)
		return reply(c, 404, "nope", 4);
	return reply(c, 500, "no route", 8);
}

static int group_setup(void **state)
{
	pthread_mutex_init(&S.mu, NULL);
	pthread_cond_init(&S.cv, NULL);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	S.d = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL, 0, NULL,
	    NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sa, MHD_OPTION_URI_LOG_CALLBACK, uri_log,
	    NULL, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_NOTIFY_CONNECTION,
	    notify_conn, NULL, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_END);
	if (S.d == NULL)
		return -1;
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_BIND_PORT);
	if (info == NULL || info->port == 0)
		return -1;
	S.port = info->port;
	return 0;
}

static int group_teardown(void **state)
{
	pthread_mutex_lock(&S.mu);
	S.release = true;
	pthread_cond_broadcast(&S.cv);
	pthread_mutex_unlock(&S.mu);
	MHD_stop_daemon(S.d);
	return 0;
}

/* ---- collecting results ---- */

struct res {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int calls;
	int status;
	json_t *hdrs;
	char *body;
	size_t len;
	char err[256];
	bool has_err;
};

static void res_init(struct res *r)
{
	memset(r, 0, sizeof(*r));
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
}

static void res_fini(struct res *r)
{
	json_decref(r->hdrs);
	free(r->body);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
}

static void done_cb(void *arg, int status, json_t *hdrs, const char *body, size_t len,
		    const char *err)
{
	struct res *r = arg;
	pthread_mutex_lock(&r->mu);
	if (r->calls++ == 0) {
		r->status = status;
		/* A copy, not json_incref: jansson 2.14 reads the refcount plainly before its
		 * atomic decrement, which ThreadSanitizer reports when two threads decref one
		 * object. */
		r->hdrs = hdrs ? json_deep_copy(hdrs) : NULL;
		r->body = malloc(len + 1);
		if (r->body) {
			if (len)
				memcpy(r->body, body, len);
			r->body[len] = 0;
		}
		r->len = len;
		if (err) {
			r->has_err = true;
			snprintf(r->err, sizeof(r->err), "%s", err);
		}
	}
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void res_wait(struct res *r)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += WAIT_MS / 1000;
	pthread_mutex_lock(&r->mu);
	while (r->calls == 0)
		if (pthread_cond_timedwait(&r->cv, &r->mu, &until) == ETIMEDOUT)
			break;
	int calls = r->calls;
	pthread_mutex_unlock(&r->mu);
	if (calls == 0)
		fail_msg("no callback within %d ms", WAIT_MS);
}

static const char *hdr(struct res *r, const char *name)
{
	return json_string_value(json_object_get(r->hdrs, name));
}

static dg_exec *start(const char *host, int port)
{
	dg_exec *x = NULL;
	char msg[256] = "";
	int rv = dg_exec_start(host, port, &x, msg, sizeof(msg));
	if (rv != 0)
		fail_msg("dg_exec_start: %s", msg);
	return x;
}

/* One request, waited for; r is initialised here. */
static void call(dg_exec *x, struct res *r, const char *method, const char *pq, json_t *headers,
		 const void *body, size_t len, unsigned timeout_ms)
{
	res_init(r);
	assert_int_equal(dg_exec_request(x, method, pq, headers, body, len, timeout_ms, done_cb, r),
			 0);
	res_wait(r);
}

/* ---- tests ---- */

static void get_round_trip(void **state)
{
	dg_exec *x = start("0.0.0.0", S.port); /* the wildcard means loopback */
	json_t *h = json_pack("{s:s, s:s, s:s, s:s}", "X-Consul-Token", "tok-1", "X-Injected", "no",
			      "X-Bad", "a\r\nX-Injected: yes", "X-Empty", "");
	struct res r;
	call(x, &r, "GET", "/echo?dc=east&index=7&token=secret", h, NULL, 0, 0);
	json_decref(h);
	dg_exec_free(x);

	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 200);
	assert_false(r.has_err);
	assert_int_equal(r.len, BIN_LEN);
	assert_memory_equal(r.body, BIN, BIN_LEN);
	assert_string_equal(hdr(&r, "X-Method"), "GET");
	assert_string_equal(hdr(&r, "X-Uri"), "/echo?dc=east&index=7&token=secret");
	assert_string_equal(hdr(&r, "X-Token"), "tok-1");
	assert_string_equal(hdr(&r, "X-Injected"), "no");     /* the CRLF value smuggled nothing */
	assert_string_equal(hdr(&r, "X-Bad"), "(none)");      /* and was not sent at all */
	assert_string_equal(hdr(&r, "X-Empty-Seen"), "[]");   /* an empty value still goes */
	assert_string_equal(hdr(&r, "X-Consul-Index"), "42"); /* name as sent */
	assert_string_equal(hdr(&r, "X-Consul-KnownLeader"), "true");
	assert_null(json_object_get(r.hdrs, "Content-Length"));
	assert_null(json_object_get(r.hdrs, "Connection"));
	assert_null(json_object_get(r.hdrs, "Date"));
	assert_null(json_object_get(r.hdrs, "Transfer-Encoding"));
	assert_null(json_object_get(r.hdrs, "Keep-Alive"));
	/* X-Dup: 1 then x-dup: 2: one header, the last value. */
	assert_null(json_object_get(r.hdrs, "X-Dup"));
	assert_string_equal(hdr(&r, "x-dup"), "2");
	/* No status line made its way in. */
	const char *k;
	json_t *v;
	json_object_foreach(r.hdrs, k, v) assert_null(strstr(k, "HTTP/"));
	res_fini(&r);
}

static void put_sends_body_exactly(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	static const char body[] = "{\"k\":\"\0v\"}\0\x01";
	struct res r;

	call(x, &r, "PUT", "/echo?cas=3", NULL, body, sizeof(body), 2000);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Method"), "PUT");
	assert_string_equal(hdr(&r, "X-Uri"), "/echo?cas=3");
	assert_int_equal(r.len, sizeof(body));
	assert_memory_equal(r.body, body, sizeof(body));
	/* curl neither invents a form Content-Type nor asks for 100-continue. */
	assert_string_equal(hdr(&r, "X-Ctype"), "(none)");
	assert_string_equal(hdr(&r, "X-Expect"), "(none)");
	char clen[32];
	snprintf(clen, sizeof(clen), "%zu", sizeof(body));
	assert_string_equal(hdr(&r, "X-Clen"), clen);
	res_fini(&r);

	/* An empty PUT still says Content-Length: 0. */
	call(x, &r, "PUT", "/echo", NULL, NULL, 0, 2000);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Clen"), "0");
	assert_int_equal(r.len, 0);
	res_fini(&r);

	/* A caller's Content-Type is passed on; a big POST goes whole without 100-continue. */
	size_t big = 1536 * 1024;
	char *data = malloc(big);
	assert_non_null(data);
	for (size_t i = 0; i < big; i++)
		data[i] = (char)(i * 7);
	json_t *h = json_pack("{s:s}", "Content-Type", "application/octet-stream");
	call(x, &r, "POST", "/echo", h, data, big, 5000);
	json_decref(h);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Method"), "POST");
	assert_string_equal(hdr(&r, "X-Ctype"), "application/octet-stream");
	assert_string_equal(hdr(&r, "X-Expect"), "(none)");
	assert_int_equal(r.len, big);
	assert_memory_equal(r.body, data, big);
	free(data);
	res_fini(&r);
	dg_exec_free(x);
}

static void delete_and_head(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	struct res r;

	call(x, &r, "DELETE", "/echo?recurse", NULL, "a\0b", 3, 2000);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Method"), "DELETE");
	assert_string_equal(hdr(&r, "X-Uri"), "/echo?recurse");
	assert_int_equal(r.len, 3);
	assert_memory_equal(r.body, "a\0b", 3);
	res_fini(&r);

	call(x, &r, "HEAD", "/echo", NULL, NULL, 0, 2000);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 200);
	assert_string_equal(hdr(&r, "X-Method"), "HEAD");
	assert_string_equal(hdr(&r, "X-Consul-Index"), "42");
	assert_null(json_object_get(r.hdrs, "Content-Length"));
	assert_int_equal(r.len, 0);
	res_fini(&r);

	/* A status other than 200 is a response like any other. */
	call(x, &r, "GET", "/status/404", NULL, NULL, 0, 2000);
	assert_int_equal(r.status, 404);
	assert_false(r.has_err);
	assert_string_equal(r.body, "nope");
	assert_string_equal(hdr(&r, "X-Consul-Index"), "42");
	res_fini(&r);
	dg_exec_free(x);
}

static void body_cap(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	struct res r;

	call(x, &r, "GET", "/cap", NULL, NULL, 0, 5000);
	assert_int_equal(r.status, 200);
	assert_int_equal(r.len, DG_WAN_MAX_MSG);
	res_fini(&r);

	call(x, &r, "GET", "/big", NULL, NULL, 0, 5000);
	assert_int_equal(r.status, 0);
	assert_true(r.has_err);
	assert_string_equal(r.err, "response too large");
	assert_int_equal(r.len, 0);
	res_fini(&r);

	/* The executor is still fine afterwards. */
	call(x, &r, "GET", "/echo", NULL, NULL, 0, 2000);
	assert_int_equal(r.status, 200);
	res_fini(&r);
	dg_exec_free(x);
}

static void connections_are_reused(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	struct res r;
	call(x, &r, "GET", "/echo", NULL, NULL, 0, 2000);
	res_fini(&r);
	int before = atomic_load(&S.conns);
	for (int i = 0; i < 5; i++) {
		call(x, &r, i % 2 ? "PUT" : "GET", "/echo", NULL, "v", 1, 2000);
		assert_int_equal(r.status, 200);
		res_fini(&r);
	}
	assert_int_equal(atomic_load(&S.conns), before);
	dg_exec_free(x);
}

/* 50 requests to the 300 ms route, added from 5 threads at once. Each may take 5 s, so they
 * all succeed only if they run side by side (one after another would take 15 s). */
#define NCONC	 50
#define NTHREADS 5
struct adder {
	dg_exec *x;
	struct res *r;
	int rv[NCONC / NTHREADS];
};

static void *adder_main(void *arg)
{
	struct adder *a = arg;
	for (int i = 0; i < NCONC / NTHREADS; i++)
		a->rv[i] =
		    dg_exec_request(a->x, "GET", "/slow", NULL, NULL, 0, 5000, done_cb, &a->r[i]);
	return NULL;
}

static void many_concurrent(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	static struct res r[NCONC];
	struct adder a[NTHREADS];
	pthread_t t[NTHREADS];
	for (int i = 0; i < NCONC; i++)
		res_init(&r[i]);
	for (int i = 0; i < NTHREADS; i++) {
		a[i].x = x;
		a[i].r = &r[i * (NCONC / NTHREADS)];
		assert_int_equal(pthread_create(&t[i], NULL, adder_main, &a[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		for (int j = 0; j < NCONC / NTHREADS; j++)
			assert_int_equal(a[i].rv[j], 0);
	}
	for (int i = 0; i < NCONC; i++)
		res_wait(&r[i]);
	dg_exec_free(x);
	for (int i = 0; i < NCONC; i++) {
		assert_int_equal(r[i].calls, 1);
		if (r[i].status != 200)
			fail_msg("request %d: status %d, %s", i, r[i].status, r[i].err);
		assert_string_equal(r[i].body, "slow");
		res_fini(&r[i]);
	}
}

static void timeout_gives_status_0(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	struct res r;
	call(x, &r, "GET", "/slow", NULL, NULL, 0, 100);
	dg_exec_free(x);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 0);
	assert_true(r.has_err);
	assert_non_null(strstr(r.err, "timed out"));
	assert_non_null(r.hdrs);
	assert_int_equal(json_object_size(r.hdrs), 0);
	res_fini(&r);
}

static void refused_port_gives_status_0(void **state)
{
	/* A port that is bound but not listening refuses connections, and nobody can take it. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	socklen_t sl = sizeof(sa);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);

	dg_exec *x = start("127.0.0.1", ntohs(sa.sin_port));
	struct res r;
	call(x, &r, "PUT", "/v1/kv/a", NULL, "x", 1, 2000);
	dg_exec_free(x);
	close(fd);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.status, 0);
	assert_true(r.has_err);
	assert_true(strlen(r.err) > 0);
	res_fini(&r);
}

static void free_completes_everything_once(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	enum { INFLIGHT = 8, QUEUED = 8 };
	struct res r[INFLIGHT + QUEUED];
	for (int i = 0; i < INFLIGHT + QUEUED; i++)
		res_init(&r[i]);
	int base = atomic_load(&S.hang_arrived);
	for (int i = 0; i < INFLIGHT; i++)
		assert_int_equal(
		    dg_exec_request(x, "GET", "/hang", NULL, NULL, 0, 20000, done_cb, &r[i]), 0);
	/* Wait until the server holds them all, so they are truly in flight. */
	for (int i = 0; i < WAIT_MS / 10 && atomic_load(&S.hang_arrived) < base + INFLIGHT; i++)
		usleep(10 * 1000);
	assert_int_equal(atomic_load(&S.hang_arrived), base + INFLIGHT);
	/* These may or may not have reached the exec thread when it is told to stop. */
	for (int i = INFLIGHT; i < INFLIGHT + QUEUED; i++)
		assert_int_equal(
		    dg_exec_request(x, "PUT", "/hang", NULL, "b", 1, 20000, done_cb, &r[i]), 0);
	dg_exec_free(x);
	for (int i = 0; i < INFLIGHT + QUEUED; i++) {
		assert_int_equal(r[i].calls, 1);
		assert_int_equal(r[i].status, 0);
		assert_string_equal(r[i].err, "shutting down");
		res_fini(&r[i]);
	}
	dg_exec_free(NULL);
}

static void bad_arguments_are_refused(void **state)
{
	dg_exec *x = start("127.0.0.1", S.port);
	struct res r;
	res_init(&r);
	assert_int_equal(dg_exec_request(x, "G ET", "/echo", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "echo", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "/a\r\nX: y", NULL, NULL, 0, 0, done_cb, &r),
			 DG_EINVAL);
	assert_int_equal(dg_exec_request(x, "GET", "/echo", NULL, NULL, 0, 0, NULL, &r), DG_EINVAL);
	dg_exec_free(x);
	assert_int_equal(r.calls, 0);
	res_fini(&r);

	dg_exec *y = NULL;
	char msg[128];
	assert_int_equal(dg_exec_start("127.0.0.1", 0, &y, msg, sizeof(msg)), DG_EINVAL);
	assert_null(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(get_round_trip),
	    cmocka_unit_test(put_sends_body_exactly),
	    cmocka_unit_test(delete_and_head),
	    cmocka_unit_test(body_cap),
	    cmocka_unit_test(connections_are_reused),
	    cmocka_unit_test(many_concurrent),
	    cmocka_unit_test(timeout_gives_status_0),
	    cmocka_unit_test(refused_port_gives_status_0),
	    cmocka_unit_test(free_completes_everything_once),
	    cmocka_unit_test(bad_arguments_are_refused),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
