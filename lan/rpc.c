/* lan/rpc.c: port 8301/tcp, nng req/rep. One listener serves what other agents of the DC ask
 * this one: gossip push-pulls (a stream packet of lan/gossip_msg.h, first byte 0xD1 or 0xE1) and
 * the servers' own requests (first byte DG_RPC_*: a write for the leader, a raft change). Calls
 * go out on one req socket per peer address, made on first use and kept.
 *
 * Threads and ownership: nng's threads run every aio callback. An incoming request is handed to
 * the loop thread (dg__lan_post) with its context; the loop answers it with dg__rpc_reply, on
 * any thread. `rpc.mu` guards the peer table, each peer's calls in flight, the held calls and
 * `closed`; nothing is called back under it (an aborted aio's callback runs later on nng's
 * thread). Shutdown (dg__rpc_close, after the loop thread has ended): sockets close, which
 * completes every aio with NNG_ECLOSED; calls in flight get their callback with DG_ESHUTDOWN,
 * held ones too, and close waits until those callbacks are done. */
#include "lan/internal.h"

#include "tls/tls.h"
#include "wan/closer.h"

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
/* shutdown waits this long for the sockets to close and their calls to end (sockets_close) */
#define RPC_CLOSE_WAIT_MS 3000

struct rpc_in {
	nng_ctx ctx;
	nng_aio *aio;
	dg_lan *lan;
	bool sending;
	nng_msg *req; /* the request being served; the loop's until it answers */
};

struct rpc_peer;

struct rpc_call {
	nng_ctx ctx;
	nng_aio *aio;
	bool receiving;
	bool link_lost; /* the peer's connection went while this was out: it fails with DG_EOF */
	bool for_leader; /* sent to the leader: moved on when another leader is known */
	struct rpc_peer *peer;
	struct rpc_call *prev, *next; /* the peer's calls in flight, under rpc.mu */
	dg_rpc_done_fn cb;
	void *arg;
};

/* One req socket per peer address. nng would keep a request whose connection went and send it
 * again once it reconnects (a write could be applied twice, and a caller waits out its timeout
 * meanwhile), so the pipe events are watched: when the link goes, every call out on it fails at
 * once with DG_EOF, and new calls fail at once until a link is back. */
struct rpc_peer {
	nng_socket sock;
	dg_lan *lan;
	char addr[96];
	int pipes;   /* connections up */
	bool linked; /* one was up once: none up now means the link went */
	struct rpc_call *calls;
};

/* A follower's request for the leader (a default-mode read, a session renew) that found no
 * leader it could reach: held, as Consul holds RPCs for rpc_hold_timeout, and sent again each
 * tick until a leader is reachable. Reads are safe to send again after their link went. */
struct held_call {
	struct held_call *next;
	uint8_t *msg;
	size_t len;
	unsigned timeout_ms;
	uint64_t hold_until_ms;
	dg_lan *lan;
	dg_lan_rpc_fn cb;
	void *arg;
};

static void in_start(struct rpc_in *in);
static void held_fail_all(dg_lan *l);

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
	case NNG_ECONNRESET:
		return DG_EOF;
	default:
		return DG_EIO;
	}
}

/* ---- serving ---- */

/* A server with verify_incoming takes its own requests (0xC1-0xC7) only over TLS; push-pulls
 * (gossip stream packets) come on plain 8301 from any member. The refused request gets an empty
 * answer, which its sender reports as an RPC error. */
static bool refused_plain(struct rpc_in *in)
{
	dg_lan *l = in->lan;
	if (!l->rpc.tls_required || nng_msg_len(in->req) == 0)
		return false;
	uint8_t kind = *(uint8_t *)nng_msg_body(in->req);
	if (kind < DG_RPC_WRITE || kind > DG_RPC_WRITE_BATCH)
		return false;
	nng_listener from = nng_pipe_listener(nng_msg_get_pipe(in->req));
	if (nng_listener_id(from) == nng_listener_id(l->rpc.tls_listener))
		return false;
	char ip[64];
	pthread_mutex_lock(&l->rpc.mu);
	uint64_t n = ++l->rpc.plain_refused;
	pthread_mutex_unlock(&l->rpc.mu);
	/* the first and then every 100th: a misconfigured agent retries often */
	if (n == 1 || n % 100 == 0)
		DG_LOGW(RPC,
			"a request for the servers from %s refused on plain port %d: TLS is required "
			"(verify_incoming); the agent needs a certificate of the CA (%llu refused)",
			dg__rpc_peer_addr(in, ip, sizeof(ip)), l->cfg.serf_lan_port,
			(unsigned long long)n);
	return true;
}

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
	if (refused_plain(in)) {
		dg__rpc_reply(in, NULL, 0);
		return;
	}
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

/* Under rpc.mu. */
static void call_unlink(struct rpc_call *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else if (c->peer->calls == c)
		c->peer->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
}

static void call_cb(void *arg)
{
	struct rpc_call *c = arg;
	dg_lan *l = c->peer->lan;
	int rv = nng_aio_result(c->aio);
	bool sent = rv == 0 && !c->receiving;
	pthread_mutex_lock(&l->rpc.mu);
	if (sent && !c->link_lost) {
		/* under rpc.mu, so a lost link either finds the receive to abort or is seen here */
		c->receiving = true;
		nng_ctx_recv(c->ctx, c->aio);
		pthread_mutex_unlock(&l->rpc.mu);
		return;
	}
	call_unlink(c);
	pthread_mutex_unlock(&l->rpc.mu);
	if (sent) { /* sent, then its link went before the answer could be waited for */
		c->receiving = true;
		rv = NNG_ECONNRESET;
	}
	if (rv != 0) {
		int err = rpc_err(rv);
		if (!c->receiving) { /* a failed send leaves the message with us */
			nng_msg_free(nng_aio_get_msg(c->aio));
			/* aborted still in nng's queue: it never reached a link, so it may be sent
			 * again (DG_EBUSY: "nothing done", as a server that is not the leader says) */
			if (c->link_lost)
				err = DG_EBUSY;
		}
		c->cb(c->arg, err, NULL, 0);
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
	/* last: dg__rpc_close waits for this before it frees the peers and rpc.mu */
	pthread_mutex_lock(&l->rpc.mu);
	if (--l->rpc.calls_out == 0)
		pthread_cond_broadcast(&l->rpc.idle);
	pthread_mutex_unlock(&l->rpc.mu);
}

/* Fails p's calls out (all, or only those for the leader) as a lost link: aborting only
 * completes the aio, whose callback runs later on nng's thread. Under rpc.mu; how many. */
static int abort_calls(struct rpc_peer *p, bool leader_only)
{
	int n = 0;
	for (struct rpc_call *c = p->calls; c; c = c->next)
		if ((!leader_only || c->for_leader) && !c->link_lost) {
			c->link_lost = true;
			nng_aio_abort(c->aio, NNG_ECONNRESET);
			n++;
		}
	return n;
}

/* nng's pipe events for a peer's socket, on nng's threads. */
static void peer_pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct rpc_peer *p = arg;
	dg_lan *l = p->lan;
	(void)pipe;
	pthread_mutex_lock(&l->rpc.mu);
	if (ev == NNG_PIPE_EV_ADD_POST) {
		p->pipes++;
		p->linked = true;
	} else if (ev == NNG_PIPE_EV_REM_POST && p->pipes > 0 && --p->pipes == 0) {
		int n = abort_calls(p, false);
		DG_LOGD(RPC, "link to %s lost; %d call(s) out on it fail", p->addr, n);
	}
	pthread_mutex_unlock(&l->rpc.mu);
}

/* The peer, its socket made on first use. Under rpc.mu. */
static int peer_get(dg_lan *l, const char *addr, struct rpc_peer **out)
{
	struct rpc_peer *p = dg_map_find(&l->rpc.peers, addr);
	char url[128];
	int rv;
	if (p) {
		*out = p;
		return 0;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return NNG_ENOMEM;
	p->lan = l;
	snprintf(p->addr, sizeof(p->addr), "%s", addr);
	snprintf(url, sizeof(url), "tcp://%s", addr);
	if ((rv = nng_req0_open(&p->sock)) != 0) {
		free(p);
		return rv;
	}
	nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_POST, peer_pipe_cb, p);
	nng_pipe_notify(p->sock, NNG_PIPE_EV_REM_POST, peer_pipe_cb, p);
	/* a server's TLS address comes as a URL (members.c); anything else is plain 8301 */
	bool tls = strncmp(addr, "tls+tcp://", 10) == 0;
	if (tls)
		snprintf(url, sizeof(url), "%s", addr);
	/* a write is sent once: it is never resent on its own (it may have been applied) */
	nng_socket_set_ms(p->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
	nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, DG_RPC_MAX_MSG);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMINT, 100);
	nng_socket_set_ms(p->sock, NNG_OPT_RECONNMAXT, 1000);
	nng_dialer d;
	if (tls && !l->rpc.dial_tls)
		rv = NNG_ENOTSUP; /* told by a server, but this agent has no certificate */
	else if (tls)
		rv = nng_dialer_create(&d, p->sock, url) ||
			     nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, l->rpc.dial_tls) ||
			     nng_dialer_start(d, NNG_FLAG_NONBLOCK)
			 ? NNG_EINVAL
			 : 0;
	else
		rv = nng_dial(p->sock, url, NULL, NNG_FLAG_NONBLOCK);
	if (rv != 0 || dg_map_put(&l->rpc.peers, addr, p, NULL) != 0) {
		nng_close(p->sock);
		free(p);
		return rv ? rv : NNG_ENOMEM;
	}
	*out = p;
	return 0;
}

static int call_start(dg_lan *l, const char *addr, const void *buf, size_t len,
		      unsigned timeout_ms, bool for_leader, dg_rpc_done_fn cb, void *arg);

int dg__rpc_call(dg_lan *l, const char *addr, const void *buf, size_t len, unsigned timeout_ms,
		 dg_rpc_done_fn cb, void *arg)
{
	return call_start(l, addr, buf, len, timeout_ms, false, cb, arg);
}

static int call_start(dg_lan *l, const char *addr, const void *buf, size_t len,
		      unsigned timeout_ms, bool for_leader, dg_rpc_done_fn cb, void *arg)
{
	struct rpc_call *c = calloc(1, sizeof(*c));
	struct rpc_peer *p = NULL;
	nng_msg *m = NULL;
	int rv;
	if (!c)
		return DG_ENOMEM;
	pthread_mutex_lock(&l->rpc.mu);
	rv = l->rpc.closed ? NNG_ECLOSED : peer_get(l, addr, &p);
	pthread_mutex_unlock(&l->rpc.mu);
	if (rv != 0) {
		free(c);
		return rv == NNG_ECLOSED ? DG_ESHUTDOWN : DG_EIO;
	}
	if ((rv = nng_ctx_open(&c->ctx, p->sock)) != 0) {
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
	c->peer = p;
	c->for_leader = for_leader;
	nng_aio_set_timeout(c->aio, (nng_duration)timeout_ms);
	nng_aio_set_msg(c->aio, m);
	pthread_mutex_lock(&l->rpc.mu);
	if (l->rpc.closed || (p->linked && p->pipes == 0)) {
		/* shutting down, or the link went: not sent, so the caller may try elsewhere */
		rv = l->rpc.closed ? DG_ESHUTDOWN : DG_EOF;
		pthread_mutex_unlock(&l->rpc.mu);
		nng_msg_free(m);
		nng_aio_free(c->aio);
		nng_ctx_close(c->ctx);
		free(c);
		return rv;
	}
	c->next = p->calls;
	if (p->calls)
		p->calls->prev = c;
	p->calls = c;
	l->rpc.calls_out++;
	nng_ctx_send(c->ctx, c->aio);
	pthread_mutex_unlock(&l->rpc.mu);
	return 0;
}

/* ---- the servers' own requests: a kind byte, then JSON text ---- */

static int call_json(dg_lan *l, const char *addr, uint8_t kind, json_t *j, unsigned timeout_ms,
		     bool for_leader, dg_rpc_done_fn cb, void *arg)
{
	char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	struct dg_buf b;
	int rv = DG_ENOMEM;
	dg_buf_init(&b);
	if (text && dg_buf_append(&b, &kind, 1) == 0 && dg_buf_append(&b, text, strlen(text)) == 0)
		rv = call_start(l, addr, b.data, b.len, timeout_ms, for_leader, cb, arg);
	dg_buf_fini(&b);
	free(text);
	return rv;
}

int dg__rpc_call_json(dg_lan *l, const char *addr, uint8_t kind, json_t *j, unsigned timeout_ms,
		      dg_rpc_done_fn cb, void *arg)
{
	return call_json(l, addr, kind, j, timeout_ms, false, cb, arg);
}

int dg__rpc_call_json_leader(dg_lan *l, const char *addr, uint8_t kind, json_t *j,
			     unsigned timeout_ms, dg_rpc_done_fn cb, void *arg)
{
	return call_json(l, addr, kind, j, timeout_ms, true, cb, arg);
}

int dg__rpc_call_leader(dg_lan *l, const char *addr, const void *buf, size_t len,
			unsigned timeout_ms, dg_rpc_done_fn cb, void *arg)
{
	return call_start(l, addr, buf, len, timeout_ms, true, cb, arg);
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

/* With a certificate and a CA: the dialer config for servers' TLS addresses (any agent), and on
 * a server a second listener on the rep socket that takes any agent of this DC
 * (<role>.<dc>.<domain>). */
static int tls_start(dg_lan *l, const char *bind, char *msg, size_t len)
{
	const struct dg_tls_policy *pol = l->cfg.tls;
	char err[256], accept[300], url[128];
	int rv;
	if (!pol)
		return 0;
	if (dg_tls_dialer_config(pol, l->cfg.dc, &l->rpc.dial_tls, err, sizeof(err)) != 0) {
		snprintf(msg, len, "TLS for the servers' requests: %s", err);
		return DG_EINVAL;
	}
	if (!l->cfg.server || l->cfg.rpc_tls_port <= 0)
		return 0;
	snprintf(accept, sizeof(accept), "*.%s.%s", l->cfg.dc, pol->domain ? pol->domain : "consul");
	snprintf(url, sizeof(url), "tls+tcp://%s:%d", bind, l->cfg.rpc_tls_port);
	if (dg_tls_listener_config(pol, accept, &l->rpc.listen_tls, err, sizeof(err)) != 0) {
		snprintf(msg, len, "TLS for the servers' requests: %s", err);
		return DG_EINVAL;
	}
	if ((rv = nng_listener_create(&l->rpc.tls_listener, l->rpc.rep, url)) != 0 ||
	    (rv = nng_listener_set_ptr(l->rpc.tls_listener, NNG_OPT_TLS_CONFIG,
				       l->rpc.listen_tls)) != 0 ||
	    (rv = nng_listener_start(l->rpc.tls_listener, 0)) != 0) {
		snprintf(msg, len, "cannot listen on %s: %s", url, nng_strerror(rv));
		return DG_EIO;
	}
	l->rpc.tls_listening = true;
	l->rpc.tls_required = pol->verify_incoming;
	return 0;
}

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
	if ((rv = tls_start(l, bind, msg, len)) != 0)
		return rv;
	for (size_t i = 0; i < l->rpc.nin; i++)
		in_start(&l->rpc.in[i]);
	return 0;
fail:
	snprintf(msg, len, "cannot listen on %s: %s", url, nng_strerror(rv));
	return DG_EIO;
}

/* Closes the sockets (the peers', then the listeners'): calls out complete with NNG_ECLOSED and
 * get their callback with DG_ESHUTDOWN, new ones fail at once, requests coming in stop. Once.
 * The closes run on a closer thread (wan/closer.c), waited for at most RPC_CLOSE_WAIT_MS with
 * the calls' callbacks: a WAN close can leave nng's reaper stuck on a lost aio, and a close
 * after that never returns (stress_wan_close.py: the agent did not exit). Returns false when
 * they did not all finish: nng's threads may still use the sockets, the calls and l. */
static bool sockets_close(dg_lan *l)
{
	pthread_mutex_lock(&l->rpc.mu);
	bool done = l->rpc.sockets_closed;
	l->rpc.closed = true;
	l->rpc.sockets_closed = true;
	pthread_mutex_unlock(&l->rpc.mu);
	if (done)
		return !l->rpc.close_stuck;
	uint64_t deadline = dg_now_ms() + RPC_CLOSE_WAIT_MS;
	struct dg__wan_closer *closer = dg__wan_closer_new(NULL);
	/* no peer is added once closed is set (dg__rpc_call checks it under rpc.mu) */
	for (size_t i = 0; i < l->rpc.peers.n; i++) {
		struct rpc_peer *p = l->rpc.peers.v[i].value;
		if (closer)
			dg__wan_closer_put(closer, p->sock, NULL);
		else
			nng_close(p->sock); /* no thread to spare: as before, unbounded */
	}
	if (l->rpc.rep_open) { /* its TLS listener with it */
		if (closer)
			dg__wan_closer_put(closer, l->rpc.rep, NULL);
		else
			nng_close(l->rpc.rep);
	}
	bool ok = !closer || dg__wan_closer_stop(closer, RPC_CLOSE_WAIT_MS);
	/* every call completed with NNG_ECLOSED: wait until their callbacks are done with us */
	pthread_mutex_lock(&l->rpc.mu);
	while (ok && l->rpc.calls_out > 0) {
		uint64_t now = dg_now_ms();
		if (now >= deadline) {
			ok = false;
			break;
		}
		struct timespec ts = dg_realtime_in_ms((unsigned)(deadline - now));
		pthread_cond_timedwait(&l->rpc.idle, &l->rpc.mu, &ts);
	}
	l->rpc.close_stuck = !ok;
	pthread_mutex_unlock(&l->rpc.mu);
	if (!ok)
		DG_LOGW(RPC, "closing the 8301 sockets did not finish within %d ms (nng 1.5.2 lost an "
			       "aio, wan/closer.c)",
			RPC_CLOSE_WAIT_MS);
	return ok;
}

bool dg_lan_stop_rpc(dg_lan *l)
{
	return !l || !l->rpc.inited || sockets_close(l);
}

void dg__rpc_close(dg_lan *l)
{
	if (!l->rpc.inited)
		return;
	if (!sockets_close(l))
		return; /* nng may still use all of it: left to the process exit */
	for (size_t i = 0; i < l->rpc.nin; i++) {
		struct rpc_in *in = &l->rpc.in[i];
		nng_aio_stop(in->aio);
		if (in->req)
			nng_msg_free(in->req);
		nng_aio_free(in->aio);
	}
	free(l->rpc.in);
	held_fail_all(l);
	if (l->rpc.listen_tls)
		nng_tls_config_free(l->rpc.listen_tls);
	if (l->rpc.dial_tls)
		nng_tls_config_free(l->rpc.dial_tls);
	l->rpc.listen_tls = l->rpc.dial_tls = NULL;
	for (size_t i = 0; i < l->rpc.peers.n; i++)
		free(l->rpc.peers.v[i].value);
	dg_map_fini(&l->rpc.peers);
	pthread_cond_destroy(&l->rpc.idle);
	pthread_mutex_destroy(&l->rpc.mu);
	l->rpc.inited = false;
}

/* ---- HTTP requests for a server (client agents) or the leader (followers) ---- */

static uint8_t *http_msg(const void *buf, size_t len)
{
	uint8_t *msg = malloc(len + 1);
	if (msg) {
		msg[0] = DG_RPC_HTTP;
		memcpy(msg + 1, buf, len);
	}
	return msg;
}

static void held_free(struct held_call *h)
{
	free(h->msg);
	free(h);
}

static void held_park(struct held_call *h)
{
	dg_lan *l = h->lan;
	pthread_mutex_lock(&l->rpc.mu);
	bool closed = l->rpc.closed;
	if (!closed) {
		h->next = l->rpc.held;
		l->rpc.held = h;
	}
	pthread_mutex_unlock(&l->rpc.mu);
	if (closed) {
		h->cb(h->arg, DG_ESHUTDOWN, NULL, 0);
		held_free(h);
	}
}

static int held_send(struct held_call *h);

static void held_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct held_call *h = arg;
	/* the leader's link went with the request out, or the leader changed: asked again of the
	 * next leader, held up to DG_LEADER_HOLD_MS from now (a blocking query may have been out
	 * for minutes) */
	if (err == DG_EOF || err == DG_EBUSY) {
		uint64_t until = dg_now_ms() + DG_LEADER_HOLD_MS;
		if (h->hold_until_ms < until)
			h->hold_until_ms = until;
		held_park(h);
		return;
	}
	h->cb(h->arg, err, buf, len);
	held_free(h);
}

/* DG_ENOLEADER or DG_EOF: no leader this server can reach now; the caller holds it. */
static int held_send(struct held_call *h)
{
	dg_lan *l = h->lan;
	char addr[96];
	pthread_mutex_lock(&l->mu);
	snprintf(addr, sizeof(addr), "%s", l->leader_rpc_pub);
	pthread_mutex_unlock(&l->mu);
	if (!*addr)
		return DG_ENOLEADER;
	return call_start(l, addr, h->msg, h->len, h->timeout_ms, true, held_done, h);
}

/* Loop thread, each tick: held calls go to the leader once one is reachable, or fail with
 * DG_ENOLEADER once held DG_LEADER_HOLD_MS. */
/* Once another leader is known, calls for the leader still out to a server that no longer is
 * one are aborted: a read is asked again of the new leader; a write still in nng's queue
 * (DG_EBUSY) is held and sent to it (lan/raft.c), one already sent fails with DG_EOF (it may
 * have been applied). The server may be dead without
 * its link's loss having been told: nng tells it from its reaper thread, which a WAN socket's
 * close can leave stuck (wan/closer.c), and such a read then waited out its whole timeout. Under
 * rpc.mu. */
static void held_move_on(dg_lan *l, const char *leader)
{
	for (size_t i = 0; i < l->rpc.peers.n; i++) {
		struct rpc_peer *p = l->rpc.peers.v[i].value;
		if (strcmp(p->addr, leader) != 0)
			abort_calls(p, true);
	}
}

void dg__rpc_tick(dg_lan *l, uint64_t now)
{
	char leader[sizeof(l->leader_rpc_pub)];
	pthread_mutex_lock(&l->mu);
	snprintf(leader, sizeof(leader), "%s", l->leader_rpc_pub);
	pthread_mutex_unlock(&l->mu);
	pthread_mutex_lock(&l->rpc.mu);
	if (*leader && strcmp(leader, l->rpc.last_leader) != 0)
		held_move_on(l, leader);
	snprintf(l->rpc.last_leader, sizeof(l->rpc.last_leader), "%s", leader);
	struct held_call *h = l->rpc.held;
	l->rpc.held = NULL;
	pthread_mutex_unlock(&l->rpc.mu);
	while (h) {
		struct held_call *next = h->next;
		int rv = now >= h->hold_until_ms ? DG_ENOLEADER : held_send(h);
		if (now < h->hold_until_ms && (rv == DG_ENOLEADER || rv == DG_EOF)) {
			held_park(h);
		} else if (rv != 0) {
			h->cb(h->arg, rv, NULL, 0);
			held_free(h);
		}
		h = next;
	}
}

/* After the loop has ended: what is still held fails. */
static void held_fail_all(dg_lan *l)
{
	pthread_mutex_lock(&l->rpc.mu);
	struct held_call *h = l->rpc.held;
	l->rpc.held = NULL;
	pthread_mutex_unlock(&l->rpc.mu);
	while (h) {
		struct held_call *next = h->next;
		h->cb(h->arg, DG_ESHUTDOWN, NULL, 0);
		held_free(h);
		h = next;
	}
}

int dg_lan_http_call(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
		     dg_lan_rpc_fn cb, void *arg)
{
	uint8_t *msg = http_msg(buf, len);
	int rv = DG_ENOSERVER;
	if (!msg)
		return DG_ENOMEM;
	/* servers in turn; one whose link went is passed over (the request was not sent) */
	for (size_t tries = 0;; tries++) {
		char addr[96] = "";
		size_t n = 0;
		pthread_mutex_lock(&l->mu);
		while (l->server_rpc && l->server_rpc[n])
			n++;
		if (n > 0 && tries < n)
			snprintf(addr, sizeof(addr), "%s", l->server_rpc[l->server_turn++ % n]);
		pthread_mutex_unlock(&l->mu);
		if (!*addr)
			break;
		if ((rv = dg__rpc_call(l, addr, msg, len + 1, timeout_ms, cb, arg)) != DG_EOF)
			break;
	}
	free(msg);
	return rv;
}

int dg_lan_http_call_leader(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
			    dg_lan_rpc_fn cb, void *arg)
{
	struct held_call *h = calloc(1, sizeof(*h));
	if (!h || !(h->msg = http_msg(buf, len))) {
		free(h);
		return DG_ENOMEM;
	}
	h->len = len + 1;
	h->timeout_ms = timeout_ms;
	h->hold_until_ms = dg_now_ms() + DG_LEADER_HOLD_MS;
	h->lan = l;
	h->cb = cb;
	h->arg = arg;
	int rv = held_send(h);
	if (rv == DG_ENOLEADER || rv == DG_EOF) {
		held_park(h);
		return 0;
	}
	if (rv != 0)
		held_free(h);
	return rv;
}
