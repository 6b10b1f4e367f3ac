/* lan/rpc.c: port 8301/tcp, nng req/rep. One listener serves what other agents of the DC ask
 * this one: gossip push-pulls (a stream packet of lan/gossip_msg.h, first byte 0xD1 or 0xE1) and
 * the servers' own requests (first byte DG_RPC_*: a write for the leader, a raft change). Calls
 * go out on one req socket per peer address, made on first use and kept.
 *
 * Threads and ownership: nng's threads run every aio callback. An incoming request is handed to
 * the loop thread (dg__lan_post) with its context; the loop answers it with dg__rpc_reply, on
 * any thread. `rpc.mu` guards the peer table and `closed`; nothing is called back under it.
 * Shutdown (dg__rpc_close, after the loop thread has ended): sockets close, which completes every
 * aio with NNG_ECLOSED; calls in flight get their callback with DG_ESHUTDOWN. */
#include "lan/internal.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RPC "rpc"

/* Contexts receiving at once: every one is busy from a request until its answer is sent, so
 * this bounds the requests being served (more wait in nng's queue). Forwarded writes from a
 * follower under load are the most numerous. */
#define RPC_CONTEXTS 128

struct rpc_in {
	nng_ctx ctx;
	nng_aio *aio;
	dg_lan *lan;
	bool sending;
	nng_msg *req; /* the request being served; the loop's until it answers */
};

struct rpc_call {
	nng_ctx ctx;
	nng_aio *aio;
	bool receiving;
	dg_rpc_done_fn cb;
	void *arg;
};

struct rpc_peer {
	nng_socket sock;
};

static void in_start(struct rpc_in *in);

static int rpc_err(int nng_rv)
{
	switch (nng_rv) {
	case NNG_ETIMEDOUT:
		return DG_ETIMEDOUT;
	case NNG_ECLOSED:
	case NNG_ECANCELED:
		return DG_ESHUTDOWN;
	case NNG_ENOMEM:
		return DG_ENOMEM;
	default:
		return DG_EIO;
	}
}

/* ---- serving ---- */

static void in_cb(void *arg)
{
	struct rpc_in *in = arg;
	int rv = nng_aio_result(in->aio);
	if (in->sending) {
		in->sending = false;
		if (rv != 0) /* the requester went away: the answer is dropped */
			nng_msg_free(nng_aio_get_msg(in->aio));
		if (rv == NNG_ECLOSED)
			return;
		in_start(in);
		return;
	}
	if (rv != 0) {
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
			in_start(in);
		return;
	}
	in->req = nng_aio_get_msg(in->aio);
	nng_aio_set_msg(in->aio, NULL);
	if (nng_msg_len(in->req) > 0 && *(uint8_t *)nng_msg_body(in->req) == DG_RPC_HTTP) {
		/* a client agent's HTTP request: straight to the HTTP layer, not via the loop */
		dg_lan *l = in->lan;
		pthread_mutex_lock(&l->rpc.mu);
		dg_lan_http_fn fn = l->rpc.closed ? NULL : l->rpc.http_fn;
		void *fa = l->rpc.http_arg;
		if (fn)
			l->rpc.http_busy++;
		pthread_mutex_unlock(&l->rpc.mu);
		if (!fn) {
			dg__rpc_reply(in, NULL, 0);
			return;
		}
		fn(fa, (struct dg_lan_rpc_req *)in, (const uint8_t *)nng_msg_body(in->req) + 1,
		   nng_msg_len(in->req) - 1);
		pthread_mutex_lock(&l->rpc.mu);
		if (--l->rpc.http_busy == 0)
			pthread_cond_broadcast(&l->rpc.idle);
		pthread_mutex_unlock(&l->rpc.mu);
		return;
	}
	if (nng_msg_len(in->req) == 0 || dg__lan_post_rpc(in->lan, in) != 0) {
		/* nothing to serve, or the loop is gone: an empty answer */
		dg__rpc_reply(in, NULL, 0);
	}
}

static void in_start(struct rpc_in *in)
{
	nng_ctx_recv(in->ctx, in->aio);
}

const uint8_t *dg__rpc_request(struct rpc_in *in, size_t *len)
{
	*len = nng_msg_len(in->req);
	return nng_msg_body(in->req);
}

const char *dg__rpc_peer_addr(struct rpc_in *in, char *buf, size_t len)
{
	nng_sockaddr sa;
	buf[0] = 0;
	if (nng_pipe_get_addr(nng_msg_get_pipe(in->req), NNG_OPT_REMADDR, &sa) == 0 &&
	    sa.s_family == NNG_AF_INET) {
		const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
		snprintf(buf, len, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
	}
	return buf;
}

void dg__rpc_reply(struct rpc_in *in, const void *buf, size_t len)
{
	nng_msg *m = in->req;
	in->req = NULL;
	if (!m && nng_msg_alloc(&m, 0) != 0) {
		in_start(in);
		return;
	}
	nng_msg_clear(m);
	if (len && nng_msg_append(m, buf, len) != 0)
		nng_msg_clear(m);
	in->sending = true;
	nng_aio_set_msg(in->aio, m);
	nng_ctx_send(in->ctx, in->aio);
}

void dg_lan_set_http_handler(dg_lan *l, dg_lan_http_fn fn, void *arg)
{
	pthread_mutex_lock(&l->rpc.mu);
	l->rpc.http_fn = fn;
	l->rpc.http_arg = arg;
	/* once this returns, the old handler is not running and will not run again */
	while (l->rpc.http_busy > 0)
		pthread_cond_wait(&l->rpc.idle, &l->rpc.mu);
	pthread_mutex_unlock(&l->rpc.mu);
}

void dg_lan_rpc_answer(struct dg_lan_rpc_req *req, const void *buf, size_t len)
{
	dg__rpc_reply((struct rpc_in *)req, buf, len);
}

/* ---- calling ---- */

static void call_cb(void *arg)
{
	struct rpc_call *c = arg;
	int rv = nng_aio_result(c->aio);
	if (rv == 0 && !c->receiving) {
		c->receiving = true;
		nng_ctx_recv(c->ctx, c->aio);
		return;
	}
	if (rv != 0) {
		if (!c->receiving) /* a failed send leaves the message with us */
			nng_msg_free(nng_aio_get_msg(c->aio));
		c->cb(c->arg, rpc_err(rv), NULL, 0);
	} else {
		nng_msg *m = nng_aio_get_msg(c->aio);
		c->cb(c->arg, 0, nng_msg_body(m), nng_msg_len(m));
		nng_msg_free(m);
	}
	nng_aio_set_msg(c->aio, NULL);
	nng_ctx_close(c->ctx);
	/* an aio cannot be freed from its own callback: nng frees it later */
	nng_aio_reap(c->aio);
	free(c);
}

/* The peer's socket, made on first use. Under rpc.mu. */
static int peer_socket(dg_lan *l, const char *addr, nng_socket *out)
{
	struct rpc_peer *p = dg_map_find(&l->rpc.peers, addr);
	char url[128];
	int rv;
	if (p) {
		*out = p->sock;
		return 0;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NNG_ENOMEM;
	snprintf(url, sizeof(url), "tcp://%s", addr);
	if ((rv = nng_req0_open(&p->sock)) != 0) {
		free(p);
		return rv;
	}
	/* a write is sent once: it is never resent on its own (it may have been applied) */
	nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, DG_RPC_MAX_MSG);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 1000);
	if ((rv = nng_dial(p->sock, url, NULL, NNG_FLAG_NONBLOCK)) != 0 ||
	    dg_map_put(&l->rpc.peers, addr, p, NULL) != 0) {
		nng_close(p->sock);
		free(p);
		return rv ? rv : NNG_ENOMEM;
	}
	*out = p->sock;
	return 0;
}

int dg__rpc_call(dg_lan *l, const char *addr, const void *buf, size_t len, unsigned timeout_ms,
		 dg_rpc_done_fn cb, void *arg)
{
	struct rpc_call *c = calloc(1, sizeof(*c));
	nng_socket sock;
	nng_msg *m = NULL;
	int rv;
	if (!c)
		return DG_ENOMEM;
	pthread_mutex_lock(&l->rpc.mu);
	rv = l->rpc.closed ? NNG_ECLOSED : peer_socket(l, addr, &sock);
	pthread_mutex_unlock(&l->rpc.mu);
	if (rv != 0) {
		free(c);
		return rv == NNG_ECLOSED ? DG_ESHUTDOWN : DG_EIO;
	}
	if ((rv = nng_ctx_open(&c->ctx, sock)) != 0) {
		free(c);
		return rpc_err(rv);
	}
	if ((rv = nng_aio_alloc(&c->aio, call_cb, c)) != 0 || (rv = nng_msg_alloc(&m, 0)) != 0 ||
	    (rv = nng_msg_append(m, buf, len)) != 0) {
		if (m)
			nng_msg_free(m);
		nng_aio_free(c->aio);
		nng_ctx_close(c->ctx);
		free(c);
		return rpc_err(rv);
	}
	c->cb = cb;
	c->arg = arg;
	nng_aio_set_timeout(c->aio, (nng_duration)timeout_ms);
	nng_aio_set_msg(c->aio, m);
	nng_ctx_send(c->ctx, c->aio);
	return 0;
}

/* ---- the servers' own requests: a kind byte, then JSON text ---- */

int dg__rpc_call_json(dg_lan *l, const char *addr, uint8_t kind, json_t *j, unsigned timeout_ms,
		      dg_rpc_done_fn cb, void *arg)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct dg_buf b;
	int rv = DG_ENOMEM;
	dg_buf_init(&b);
	if (text && dg_buf_append(&b, &kind, 1) == 0 && dg_buf_append(&b, text, strlen(text)) == 0)
		rv = dg__rpc_call(l, addr, b.data, b.len, timeout_ms, cb, arg);
	dg_buf_fini(&b);
	free(text);
	return rv;
}

void dg__rpc_reply_json(struct rpc_in *in, json_t *ans)
{
	char *text = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
	uint8_t kind = DG_RPC_WRITE_REPLY;
	struct dg_buf b;
	dg_buf_init(&b);
	if (text && dg_buf_append(&b, &kind, 1) == 0 && dg_buf_append(&b, text, strlen(text)) == 0)
		dg__rpc_reply(in, b.data, b.len);
	else
		dg__rpc_reply(in, NULL, 0);
	dg_buf_fini(&b);
	free(text);
	json_decref(ans);
}

json_t *dg__rpc_answer_json(const uint8_t *buf, size_t len, int *status)
{
	json_t *ans = len > 1 && buf[0] == DG_RPC_WRITE_REPLY
			      ? json_loadb((const char *)buf + 1, len - 1, 0, NULL)
			      : NULL;
	json_t *st = json_object_get(ans, "Status");
	*status = json_is_integer(st) ? (int)json_integer_value(st) : DG_EIO;
	return ans;
}

/* ---- start and stop ---- */

int dg__rpc_listen(dg_lan *l, const char *bind, int port, char *msg, size_t len)
{
	char url[128];
	int rv;
	pthread_mutex_init(&l->rpc.mu, NULL);
	pthread_cond_init(&l->rpc.idle, NULL);
	dg_map_init(&l->rpc.peers, false);
	l->rpc.inited = true;
	snprintf(url, sizeof(url), "tcp://%s:%d", bind, port);
	if ((rv = nng_rep0_open(&l->rpc.rep)) != 0)
		goto fail;
	l->rpc.rep_open = true;
	nng_socket_set_size(l->rpc.rep, NNG_OPT_RECVMAXSZ, DG_RPC_MAX_MSG);
	if ((rv = nng_listen(l->rpc.rep, url, NULL, 0)) != 0)
		goto fail;
	l->rpc.in = calloc(RPC_CONTEXTS, sizeof(*l->rpc.in));
	if (!l->rpc.in) {
		rv = NNG_ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i < RPC_CONTEXTS; i++) {
		struct rpc_in *in = &l->rpc.in[i];
		in->lan = l;
		if ((rv = nng_ctx_open(&in->ctx, l->rpc.rep)) != 0 ||
		    (rv = nng_aio_alloc(&in->aio, in_cb, in)) != 0)
			goto fail;
		l->rpc.nin = i + 1;
	}
	for (size_t i = 0; i < l->rpc.nin; i++)
		in_start(&l->rpc.in[i]);
	return 0;
fail:
	snprintf(msg, len, "cannot listen on %s: %s", url, nng_strerror(rv));
	return DG_EIO;
}

void dg__rpc_close(dg_lan *l)
{
	if (!l->rpc.inited)
		return;
	pthread_mutex_lock(&l->rpc.mu);
	l->rpc.closed = true;
	pthread_mutex_unlock(&l->rpc.mu);
	/* closing completes every aio (NNG_ECLOSED): calls get their callback, contexts stop */
	for (size_t i = 0; i < l->rpc.peers.n; i++) {
		struct rpc_peer *p = l->rpc.peers.v[i].value;
		nng_close(p->sock);
	}
	if (l->rpc.rep_open)
		nng_close(l->rpc.rep);
	for (size_t i = 0; i < l->rpc.nin; i++) {
		struct rpc_in *in = &l->rpc.in[i];
		nng_aio_stop(in->aio);
		if (in->req)
			nng_msg_free(in->req);
		nng_aio_free(in->aio);
	}
	free(l->rpc.in);
	for (size_t i = 0; i < l->rpc.peers.n; i++)
		free(l->rpc.peers.v[i].value);
	dg_map_fini(&l->rpc.peers);
	pthread_cond_destroy(&l->rpc.idle);
	pthread_mutex_destroy(&l->rpc.mu);
	l->rpc.inited = false;
}

static int http_call(dg_lan *l, bool to_leader, const void *buf, size_t len, unsigned timeout_ms,
		     dg_lan_rpc_fn cb, void *arg)
{
	char addr[96] = "";
	size_t n = 0;
	pthread_mutex_lock(&l->mu);
	if (to_leader) {
		snprintf(addr, sizeof(addr), "%s", l->leader_rpc_pub);
	} else {
		while (l->server_rpc && l->server_rpc[n])
			n++;
		if (n > 0)
			snprintf(addr, sizeof(addr), "%s", l->server_rpc[l->server_turn++ % n]);
	}
	pthread_mutex_unlock(&l->mu);
	if (!*addr)
		return to_leader ? DG_ENOLEADER : DG_ENOSERVER;
	uint8_t *msg = malloc(len + 1);
	if (!msg)
		return DG_ENOMEM;
	msg[0] = DG_RPC_HTTP;
	memcpy(msg + 1, buf, len);
	int rv = dg__rpc_call(l, addr, msg, len + 1, timeout_ms, cb, arg);
	free(msg);
	return rv;
}

int dg_lan_http_call(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
		     dg_lan_rpc_fn cb, void *arg)
{
	return http_call(l, false, buf, len, timeout_ms, cb, arg);
}

int dg_lan_http_call_leader(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
			    dg_lan_rpc_fn cb, void *arg)
{
	return http_call(l, true, buf, len, timeout_ms, cb, arg);
}
