/* wan/wan.c: the WAN pool on port 8302 (see wan/wan.h for what it does).
 *
 * Links. Every server listens on one rep socket (mutual TLS, "server.*.<domain>" only). For
 * every other server it knows it dials two req sockets: `ctl` for probes, push-pull and leave,
 * `data` for forwarded requests, so that a probe never waits behind a large reply on the same
 * TCP stream. Each dial checks the SAN server.<dc>.<domain> of the DC the member claims, so a
 * request for DC x only ever leaves over a link whose far end proved it is a server of x.
 *
 * Liveness is each server's own view, from its own probes: a probe that times out is retried
 * through up to two other servers (INDIRECT); only when those fail too is the member suspected,
 * and a suspect that stays silent for SUSPECT_MS is failed. Probe timeouts follow each link's
 * smoothed RTT and its variance. Failed members are still probed, so a healed partition heals
 * the pool by itself. Push-pull spreads who exists, their addresses and incarnations, and who
 * left; a server told it is suspect or failed at an incarnation >= its own raises its own
 * (refutation), and PINGs to a suspect carry the suspicion so it can refute at once.
 *
 * Threads and locks. `mu` guards the member list, every peer's fields and the counters. nng's
 * callbacks (aio completions, pipe events) and the timer thread take it; user callbacks
 * (request replies, join results, the serve function) are always called without it. nng calls
 * that may wait for callbacks (nng_close, dialer start) are made without it too. Peers are never
 * freed before dg_wan_free(), so an op may keep a peer pointer.
 *
 * No thread here calls nng_close() on a socket that has been connected: nng 1.5.2 can wait in
 * it forever (wan/closer.c), so sockets go to the closer's thread (their dialers closed first),
 * while a close is stuck the timer replaces only links that were up, and dg_wan_free() waits
 * for the closer only CLOSE_WAIT_MS. */
#include "wan/wan.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "common/common.h"
#include "wan/closer.h"

#define WAN "wan"
#define RECV_MAX ((size_t)DG_WAN_MAX_MSG + 1024)
#define SUSPECT_MS 6000	    /* a suspect silent this long is failed */
#define SUSPECT_DOWN_MS 3000 /* ... or this long when its link is down too (a reset or a
			      * refused redial: the process is gone, not slow) */
#define RECYCLE_MS 5000	    /* a failed member's sockets are replaced this often */
#define CLOSE_STUCK_MS 2000 /* a close taking this long is stuck in nng (see timer_main) */
#define CLOSE_WAIT_MS 2000  /* shutdown waits this long for the sockets to close */
#define PROBE_MIN_MS 250    /* no probe timeout below this */
#define PROBE_MAX_MS 5000   /* nor above this */
#define PROBE_FIRST_MS 2000 /* before the first RTT sample */
#define FAILED_PROBE_MS 2000 /* failed members are probed this often */
#define INDIRECT_N 2
#define REQ_TIMEOUT_MS 10000
#define JOIN_TIMEOUT_MS 5000
#define RETRY_JOIN_MS 5000
#define LEAVE_WAIT_MS 2000
#define MAX_JOBS 8192	  /* forwarded requests served at once */
#define IDLE_RECEIVERS 4 /* jobs kept waiting for requests; more are parked */
#define TICK_MS 100
/* For this long after a server's data link went, the timer cancels requests still on it (see
 * timer_main); by then the member is failed and its sockets replaced, which ends them too. */
#define LINK_SWEEP_MS 10000
/* Batchable requests (forwarded non-blocking reads) in flight to one server at once, each
 * alone or a BATCH; more wait and leave together when it comes back. Every WAN message costs
 * nng far more CPU than its bytes do, so under load fewer, fuller messages win: one in flight
 * gave the most forwarded reads/s on loopback (docs/federation.md has the figures). */
#define BATCH_SLOTS 1
/* ... except that a full batch (DG_WAN_MAX_BATCH waiting) leaves at once, up to this many in
 * flight: on a long link one batch per round trip would cap a server pair's forwarded reads
 * at DG_WAN_MAX_BATCH per RTT (about 400/s at 150 ms), and waiting can only add latency then */
#define BATCH_SLOTS_FULL 8

struct peer {
	dg_wan *w;
	struct dg_wan_wire_member m; /* status is our view; inc the highest seen */
	nng_socket ctl, data;
	nng_dialer dialers[2]; /* of ctl and data, closed before the sockets go to the closer */
	nng_tls_config *tls;
	bool linked_since_open; /* a link came up on these sockets (see the recycling below) */
	bool open;	      /* sockets are open (and dialing) */
	bool opening;	      /* the timer thread is opening them */
	bool closing;	      /* left: the timer thread closes them */
	int ctl_pipes, data_pipes;
	bool ever_linked; /* a data link has been up at least once */
	uint64_t link_lost_ms; /* when its last data link went (0: never; see LINK_SWEEP_MS) */
	uint64_t added_ms;
	uint64_t recycled_ms; /* when its sockets were last replaced */
	bool have_rtt;
	double srtt, rttvar;
	uint64_t last_ok_ms; /* 0: never */
	uint64_t suspect_since;
	uint64_t next_probe_ms;
	bool probing;
	bool want_pushpull;
	/* forwarded reads (mu): BATCH_SLOTS of them in flight on `data` at most (each a request
	 * alone or a BATCH), and those that came meanwhile, oldest first */
	int batch_slots;
	struct op *queue, *queue_tail;
	size_t nqueued;
	struct peer *next;
};

enum op_kind {
	OP_PROBE,
	OP_INDIRECT_ASK,
	OP_INDIRECT_PROBE,
	OP_PUSHPULL,
	OP_REQ,
	OP_BATCH, /* carries OP_REQs that are batchable; they stay in the in-flight list too */
	OP_JOIN,
	OP_LEAVE
};

struct indirect_round {
	struct peer *target;
	int pending;
	bool any_ok;
};

struct op {
	dg_wan *w;
	nng_aio *aio;
	nng_ctx ctx;
	bool ctx_open;
	enum op_kind kind;
	int stage; /* 0: sending, 1: receiving */
	bool link_lost; /* pipe_cb cancelled it (mu): a send or receive not yet begun must not be */
	struct peer *peer; /* the far end (NULL for a join's first contact) */
	struct dg_buf msg;
	uint64_t started_ms;
	unsigned timeout_ms;
	/* OP_INDIRECT_ASK */
	struct indirect_round *round;
	/* OP_INDIRECT_PROBE: the INDIRECT request we answer */
	struct dg_wan_job *job;
	/* OP_REQ */
	bool retryable;
	bool batchable; /* may travel in a BATCH (a non-blocking read) */
	bool alone;	/* its answer did not fit in a batch: from now on it is sent alone */
	bool slot;	/* holds one of its peer's batch slots (OP_REQ sent alone, or OP_BATCH) */
	struct op *qnext; /* in its peer's queue (mu) */
	struct op *snext; /* in a struct after */
	nng_socket sock;  /* where a struct after starts it */
	int err;	  /* how a struct after ends it */
	/* OP_BATCH: the requests it carries, in the order of the message */
	struct op **items;
	size_t nitems;
	dg_wan_reply_fn cb;
	void *arg;
	struct peer *tried[8];
	int ntried;
	char dc[DG_WAN_LABEL_MAX];
	/* OP_JOIN */
	nng_socket tmp;
	nng_tls_config *tmp_tls;
	dg_wan_join_fn jcb;
	void *jarg;
	char addr[300];
	bool retry_join; /* from the retry list: no callback */
	struct op *prev, *next; /* in flight (mu) */
};

/* A request received on the rep socket; `dg_wan_job` to the serve function. */
struct dg_wan_job {
	dg_wan *w;
	nng_ctx ctx;
	nng_aio *aio;
	int stage; /* 0: receiving, 1: sending, 2: working on it, 3: parked */
	size_t held; /* requests it counts for in w->working while at stage 2 */
	/* one request of a BATCH (no socket of its own): its answer goes to the batch */
	struct batch_serve *batch;
	size_t index;
	struct dg_wan_job *next;	/* every job ever made, for dg_wan_free (mu) */
	struct dg_wan_job *next_parked; /* jobs waiting to be reused (mu) */
};

/* A BATCH being served: one job per request for the serve function; when the last one is
 * answered, the answers go back in one BATCH_REPLY on the job that received the batch. */
struct batch_serve {
	struct dg_wan_job *parent;
	size_t n, pending; /* pending: w->mu */
	struct dg_wan_job *subs; /* n */
	struct dg_buf *answers;	 /* n, each a whole encoded answer */
};

struct retry_addr {
	char addr[300];
	uint64_t next_ms;
	bool in_flight;
	struct retry_addr *next;
};

struct socket_to_close {
	nng_socket s;
	nng_dialer d; /* closed first (0: none) */
	nng_tls_config *tls;
	struct socket_to_close *next;
};

struct dg_wan {
	struct dg_wan_config cfg;
	char *bind, *advertise, *node, *dc, *build, *domain;
	const struct dg_tls_policy *tls;
	struct dg_wan_wire_member self;

	pthread_mutex_t mu;
	pthread_cond_t cond;
	struct peer *peers;
	size_t npeers;
	struct op *in_flight;
	struct retry_addr *retries;
	struct socket_to_close *to_close;
	struct dg_wan_job *all_jobs;
	struct dg_wan_job *parked; /* jobs with nothing to do, kept for reuse */
	int idle;		   /* jobs waiting for a request (stage 0) */
	int working;		   /* jobs held by a request being served (stage 2) */
	int leave_pending;
	bool leaving, stopping;
	struct dg_wan_stats stats;
	dg_wan_serve_fn serve;
	void *serve_arg;

	nng_socket rep;
	bool rep_open;
	nng_listener listener;
	nng_tls_config *listen_tls;
	pthread_t timer;
	bool timer_started;
	struct dg__wan_closer *closer; /* closes every socket that has been dialed or listened on */
	bool close_stuck_logged;      /* timer thread */
	uint64_t link_lost_ms;	      /* the latest of the peers' link_lost_ms (mu) */
	/* dg_wan_free() gave up on a stuck close and left the pool to the process exit: nng may
	 * still complete ops, whose callers are gone, so their callbacks are not called */
	atomic_bool abandoned;
};

/* A pool dg_wan_free() had to leave behind, kept reachable: nng's threads may still use it. */
static dg_wan *abandoned_pool;

static void op_cb(void *arg);
static void job_cb(void *arg);

/* Closes s and then frees tls (may be NULL) on the closer's thread; both are its from now on.
 * Any thread, any lock held: it never waits for the close. */
static void sock_close(dg_wan *w, nng_socket s, nng_tls_config *tls)
{
	if (w->closer) {
		dg__wan_closer_put(w->closer, s, tls);
		return;
	}
	/* no closer: dg_wan_start() failed before making one, so nothing has been connected */
	if (nng_socket_id(s) > 0)
		nng_close(s);
	if (tls)
		nng_tls_config_free(tls);
}

/* ---- small helpers ---- */

static uint64_t rand64(void)
{
	uint64_t r = 0;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = dg_now_ms() * 2654435761u;
	return r;
}

/* "host" or "host:port" (IPv6 in brackets) into a tls+tcp:// URL, port 8302 by default. */
static int addr_url(const char *addr, char *url, size_t len)
{
	const char *colon = strrchr(addr, ':');
	bool v6 = addr[0] == '[';
	bool has_port = colon && (!v6 || (colon > strchr(addr, ']')));
	int n = has_port ? snprintf(url, len, "tls+tcp://%s", addr)
			 : snprintf(url, len, "tls+tcp://%s:8302", addr);
	return n > 0 && (size_t)n < len && addr[0] ? 0 : DG_EINVAL;
}

static void member_url(const struct dg_wan_wire_member *m, char *url, size_t len)
{
	if (strchr(m->addr, ':'))
		snprintf(url, len, "tls+tcp://[%s]:%d", m->addr, m->port);
	else
		snprintf(url, len, "tls+tcp://%s:%d", m->addr, m->port);
}

static struct peer *peer_find(dg_wan *w, const char *name)
{
	for (struct peer *p = w->peers; p; p = p->next)
		if (strcmp(p->m.name, name) == 0)
			return p;
	return NULL;
}

static unsigned probe_timeout(const struct peer *p)
{
	if (!p->have_rtt)
		return PROBE_FIRST_MS;
	double t = p->srtt + (4 * p->rttvar > p->srtt / 2 ? 4 * p->rttvar : p->srtt / 2) + 50;
	/* a lost segment costs TCP one retransmission timeout (at least 200 ms, about one RTT
	 * more on a long link) before the answer can arrive: a probe waits that long rather than
	 * suspect a member for one lost packet */
	if (t < 2 * p->srtt + 200)
		t = 2 * p->srtt + 200;
	if (t < PROBE_MIN_MS)
		t = PROBE_MIN_MS;
	if (t > PROBE_MAX_MS)
		t = PROBE_MAX_MS;
	return (unsigned)t;
}

/* How long a suspect may stay silent before it is failed. A stall of the network keeps TCP
 * links up, so a member whose link is down as well (reset, or refused on redial) is judged
 * sooner: that is a dead process, and the bound is to notice it within 10 s. */
static unsigned suspect_limit(const struct peer *p)
{
	return p->ever_linked && p->ctl_pipes == 0 ? SUSPECT_DOWN_MS : SUSPECT_MS;
}

static void rtt_sample(struct peer *p, double ms)
{
	/* an answer held up by a stall of the whole network says nothing about the link's usual
	 * round trip: such samples count at most as 4 times the current estimate */
	if (p->have_rtt && ms > 4 * p->srtt + 100)
		ms = 4 * p->srtt + 100;
	if (!p->have_rtt) {
		p->srtt = ms;
		p->rttvar = ms / 2;
		p->have_rtt = true;
		return;
	}
	double err = ms - p->srtt;
	p->srtt += err / 8;
	p->rttvar += ((err < 0 ? -err : err) - p->rttvar) / 4;
}

static const char *status_name(int s)
{
	switch (s) {
	case DG_WAN_ALIVE:
		return "alive";
	case DG_WAN_LEAVING:
		return "leaving";
	case DG_WAN_LEFT:
		return "left";
	case DG_WAN_FAILED:
		return "failed";
	case DG_WAN_SUSPECT:
		return "suspect";
	default:
		return "unknown";
	}
}

/* ---- ops: one request/reply on a req context ---- */

/* lazy_aio: the aio is allocated when the op is first started (op_start), for batchable
 * requests: most of them travel inside a BATCH and never need one, and an aio costs an
 * allocation and a wake-up of nng's reaper thread per request. Only ops that nothing but their
 * current owner touches may be lazy (pipe_cb cancels the aios of requests that are not
 * retryable: those get theirs here). */
static struct op *op_new_lazy(dg_wan *w, enum op_kind kind, struct peer *p, bool lazy_aio)
{
	struct op *o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	if (!lazy_aio && nng_aio_alloc(&o->aio, op_cb, o) != 0) {
		free(o);
		return NULL;
	}
	o->w = w;
	o->kind = kind;
	o->peer = p;
	o->started_ms = dg_now_ms();
	dg_buf_init(&o->msg);
	return o;
}

static struct op *op_new(dg_wan *w, enum op_kind kind, struct peer *p)
{
	return op_new_lazy(w, kind, p, false);
}

/* Frees an op; may run inside its own aio callback (the aio is reaped in the background). */
static void op_free(struct op *o)
{
	if (o->ctx_open)
		nng_ctx_close(o->ctx);
	if (o->aio)
		nng_aio_reap(o->aio);
	dg_buf_fini(&o->msg);
	free(o->items); /* the requests themselves are freed on their own */
	free(o);
}

static void inflight_add(dg_wan *w, struct op *o)
{
	o->prev = NULL;
	o->next = w->in_flight;
	if (w->in_flight)
		w->in_flight->prev = o;
	w->in_flight = o;
	w->stats.in_flight += o->kind == OP_REQ;
}

static void inflight_del(dg_wan *w, struct op *o)
{
	if (o->prev)
		o->prev->next = o->next;
	else if (w->in_flight == o)
		w->in_flight = o->next;
	if (o->next)
		o->next->prev = o->prev;
	o->prev = o->next = NULL;
	w->stats.in_flight -= o->kind == OP_REQ;
}

static void op_done(struct op *o, int err, const struct dg_wan_msg *reply);

/* Sends o->msg on sock; the reply (or error) comes to op_done(). Without mu. */
static void op_start(struct op *o, nng_socket sock)
{
	nng_msg *m = NULL;
	int rv;
	if (!o->aio && nng_aio_alloc(&o->aio, op_cb, o) != 0) {
		/* no aio to complete through: end it here, as the callback would have */
		op_done(o, DG_ENOMEM, NULL);
		return;
	}
	if (o->ctx_open) {
		nng_ctx_close(o->ctx);
		o->ctx_open = false;
	}
	if ((rv = nng_ctx_open(&o->ctx, sock)) == 0) {
		o->ctx_open = true;
		rv = nng_msg_alloc(&m, 0);
		if (rv == 0)
			rv = nng_msg_append(m, o->msg.data, o->msg.len);
	}
	if (rv != 0) {
		if (m)
			nng_msg_free(m);
		if (o->ctx_open) {
			nng_ctx_close(o->ctx);
			o->ctx_open = false;
		}
		/* complete through the callback so every op ends one way */
		nng_aio_set_msg(o->aio, NULL);
		o->stage = 0;
		nng_aio_set_timeout(o->aio, 1);
		nng_sleep_aio(0, o->aio);
		return;
	}
	o->stage = 0;
	__atomic_add_fetch(&o->w->stats.bytes_sent, o->msg.len, __ATOMIC_RELAXED);
	nng_aio_set_msg(o->aio, m);
	nng_aio_set_timeout(o->aio, (nng_duration)o->timeout_ms);
	/* under mu: pipe_cb either finds the send in progress and cancels it, or has set
	 * link_lost, and nng would keep the message until a link to that server comes back */
	pthread_mutex_lock(&o->w->mu);
	if (o->link_lost) {
		pthread_mutex_unlock(&o->w->mu);
		nng_aio_set_msg(o->aio, NULL);
		nng_msg_free(m);
		nng_ctx_close(o->ctx);
		o->ctx_open = false;
		nng_aio_set_timeout(o->aio, 1);
		nng_sleep_aio(0, o->aio); /* ends as a failed start, through op_cb */
		return;
	}
	nng_ctx_send(o->ctx, o->aio);
	pthread_mutex_unlock(&o->w->mu);
}

static void batch_done(struct op *c, int err, const struct dg_wan_msg *reply,
		       const struct dg_wan_msg *items);

static int nng_to_dg(int rv)
{
	switch (rv) {
	case NNG_ETIMEDOUT:
		return DG_ETIMEDOUT;
	case NNG_ECLOSED:
		return DG_ESHUTDOWN;
	case NNG_ENOMEM:
		return DG_ENOMEM;
	default:
		return DG_EIO;
	}
}

static void op_cb(void *arg)
{
	struct op *o = arg;
	int rv = nng_aio_result(o->aio);
	if (o->stage == 0) {
		if (rv != 0) {
			nng_msg *m = nng_aio_get_msg(o->aio);
			if (m)
				nng_msg_free(m);
			op_done(o, nng_to_dg(rv), NULL);
			return;
		}
		if (!o->ctx_open) { /* the sleep that reports a failed start */
			op_done(o, DG_EIO, NULL);
			return;
		}
		o->stage = 1;
		uint64_t spent = dg_now_ms() - o->started_ms;
		unsigned left = o->timeout_ms > spent ? o->timeout_ms - (unsigned)spent : 1;
		nng_aio_set_timeout(o->aio, (nng_duration)left);
		pthread_mutex_lock(&o->w->mu);
		bool lost = o->link_lost;
		if (!lost)
			nng_ctx_recv(o->ctx, o->aio);
		pthread_mutex_unlock(&o->w->mu);
		if (lost) /* sent, and its link went before the answer could be waited for */
			op_done(o, DG_EIO, NULL);
		return;
	}
	if (rv != 0) {
		op_done(o, nng_to_dg(rv), NULL);
		return;
	}
	nng_msg *m = nng_aio_get_msg(o->aio);
	__atomic_add_fetch(&o->w->stats.bytes_received, nng_msg_len(m), __ATOMIC_RELAXED);
	struct dg_wan_msg reply;
	struct dg_wan_msg *items = NULL;
	size_t nitems = 0;
	char why[200] = "";
	int drv = dg_wan_msg_decode(nng_msg_body(m), nng_msg_len(m), &reply, why, sizeof(why));
	/* a batch's answers are checked here, with the message's link at hand: a bad one closes
	 * it like any other undecodable message */
	if (drv == 0 && o->kind == OP_BATCH && reply.type == DG_WAN_BATCH_REPLY) {
		drv = dg_wan_batch_decode(&reply, &items, &nitems, why, sizeof(why));
		if (drv == 0 && nitems != o->nitems) {
			snprintf(why, sizeof(why), "%zu answers to a batch of %zu requests", nitems,
				 o->nitems);
			dg_wan_batch_items_free(items, nitems);
			items = NULL;
			drv = DG_EINVAL;
		}
		if (drv != 0)
			dg_wan_msg_fini(&reply);
	}
	if (drv != 0) {
		DG_LOGW(WAN, "bad reply from %s: %s; closing the link",
			o->peer ? o->peer->m.name : o->addr, why);
		nng_pipe_close(nng_msg_get_pipe(m));
		nng_msg_free(m);
		pthread_mutex_lock(&o->w->mu);
		o->w->stats.bad_messages++;
		pthread_mutex_unlock(&o->w->mu);
		op_done(o, DG_EIO, NULL);
		return;
	}
	if (items)
		batch_done(o, 0, &reply, items);
	else
		op_done(o, 0, &reply);
	dg_wan_batch_items_free(items, nitems);
	dg_wan_msg_fini(&reply);
	nng_msg_free(m);
}

/* ---- sockets to peers ---- */

static void pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
	struct peer *p = arg;
	dg_wan *w = p->w;
	int id = nng_socket_id(nng_pipe_socket(pipe));
	struct op *cancel[256];
	int ncancel = 0;
	pthread_mutex_lock(&w->mu);
	bool is_data = p->open && id == nng_socket_id(p->data);
	if (!is_data && !(p->open && id == nng_socket_id(p->ctl))) {
		/* a socket already replaced (recycled or closed): its pipes count for nothing */
		pthread_mutex_unlock(&w->mu);
		return;
	}
	int *count = is_data ? &p->data_pipes : &p->ctl_pipes;
	if (ev == NNG_PIPE_EV_ADD_POST) {
		(*count)++;
		p->linked_since_open = true;
		p->ever_linked |= is_data;
		if (!is_data)
			p->want_pushpull = true; /* a new link: swap views at once */
	} else if (ev == NNG_PIPE_EV_REM_POST && *count > 0) {
		(*count)--;
		/* nng's req would send these again on the next link to the same server; a request
		 * that may have been applied must not be, so it ends here with an error.
		 * Once no data link is left, reads (and batches of them) end here too: nng keeps a
		 * request it has not yet written to a link queued until a link to this server
		 * comes back, which for a killed server is never. They waited until the member
		 * failed and its sockets were replaced (about 4 s after a kill -9) and then failed;
		 * cancelled, they move to the next server of the DC now (req_settle). Their aios
		 * exist: after_start gives each op one, under mu. */
		bool gone = *count == 0;
		if (is_data && gone)
			p->link_lost_ms = w->link_lost_ms = dg_now_ms();
		if (is_data)
			for (struct op *o = w->in_flight; o && ncancel < 256; o = o->next)
				if (o->peer == p && o->aio &&
				    ((o->kind == OP_REQ && (!o->retryable || gone)) ||
				     (o->kind == OP_BATCH && gone)))
					cancel[ncancel++] = o;
	}
	for (int i = 0; i < ncancel; i++) {
		/* an op between after_start and its send, or between its send and its receive, has
		 * no aio in progress to cancel: op_start and op_cb see the flag, under mu */
		cancel[i]->link_lost = true;
		nng_aio_cancel(cancel[i]->aio); /* completes later, on an nng thread */
	}
	pthread_mutex_unlock(&w->mu);
}

/* Opens p's two sockets and starts dialing. Timer thread, without mu. */
static void peer_open(dg_wan *w, struct peer *p)
{
	char url[400], err[512];
	nng_tls_config *tls = NULL;
	nng_socket ctl = NNG_SOCKET_INITIALIZER, data = NNG_SOCKET_INITIALIZER;
	int rv;
	struct dg_wan_wire_member m;
	pthread_mutex_lock(&w->mu);
	m = p->m;
	pthread_mutex_unlock(&w->mu);
	member_url(&m, url, sizeof(url));
	if (dg_tls_dialer_config(w->tls, m.dc, &tls, err, sizeof(err)) != 0) {
		DG_LOGW(WAN, "cannot dial %s: %s", m.name, err);
		goto fail;
	}
	nng_socket *socks[2] = {&ctl, &data};
	nng_dialer dialers[2];
	for (int i = 0; i < 2; i++) {
		nng_socket *s = socks[i];
		if ((rv = nng_req0_open(s)) != 0 ||
		    (rv = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, RECV_MAX)) != 0 ||
		    (rv = nng_socket_set_ms(*s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE)) !=
			0 ||
		    (rv = nng_socket_set_ms(*s, NNG_OPT_RECONNMINT, 100)) != 0 ||
		    (rv = nng_socket_set_ms(*s, NNG_OPT_RECONNMAXT, 2000)) != 0 ||
		    (rv = nng_pipe_notify(*s, NNG_PIPE_EV_ADD_POST, pipe_cb, p)) != 0 ||
		    (rv = nng_pipe_notify(*s, NNG_PIPE_EV_REM_POST, pipe_cb, p)) != 0 ||
		    (rv = nng_dialer_create(&dialers[i], *s, url)) != 0 ||
		    (rv = nng_dialer_set_ptr(dialers[i], NNG_OPT_TLS_CONFIG, tls)) != 0) {
			DG_LOGW(WAN, "cannot dial %s at %s: %s", m.name, url, nng_strerror(rv));
			goto fail;
		}
	}
	/* the sockets are the peer's before any link can come up: pipe_cb counts only the
	 * peer's current sockets */
	pthread_mutex_lock(&w->mu);
	p->ctl = ctl;
	p->data = data;
	p->dialers[0] = dialers[0];
	p->dialers[1] = dialers[1];
	p->linked_since_open = false;
	p->tls = tls;
	p->open = true;
	p->opening = false;
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < 2; i++)
		if ((rv = nng_dialer_start(dialers[i], NNG_FLAG_NONBLOCK)) != 0) {
			/* the timer thread closes them and dials again later */
			DG_LOGW(WAN, "cannot dial %s at %s: %s", m.name, url, nng_strerror(rv));
			pthread_mutex_lock(&w->mu);
			p->closing = true;
			pthread_mutex_unlock(&w->mu);
			return;
		}
	DG_LOGD(WAN, "dialing %s at %s", m.name, url);
	return;
fail:
	sock_close(w, ctl, NULL);
	sock_close(w, data, tls);
	pthread_mutex_lock(&w->mu);
	p->opening = false;
	pthread_mutex_unlock(&w->mu);
}

static struct peer *peer_add(dg_wan *w, const struct dg_wan_wire_member *m)
{
	if (w->npeers >= DG_WAN_MAX_MEMBERS)
		return NULL;
	struct peer *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->w = w;
	p->m = *m;
	p->ctl = p->data = (nng_socket)NNG_SOCKET_INITIALIZER;
	p->next_probe_ms = dg_now_ms();
	p->added_ms = dg_now_ms();
	p->next = w->peers;
	w->peers = p;
	w->npeers++;
	pthread_cond_signal(&w->cond); /* the timer thread dials it now, not at its next tick */
	DG_LOGI(WAN, "member %s at %s:%d joined the WAN pool", m->name, m->addr, m->port);
	return p;
}

static void mark_left(dg_wan *w, struct peer *p, uint64_t inc)
{
	if (p->m.status == DG_WAN_LEFT)
		return;
	p->m.status = DG_WAN_LEFT;
	if (inc > p->m.inc)
		p->m.inc = inc;
	p->closing = p->open;
	DG_LOGI(WAN, "member %s left the WAN pool", p->m.name);
}

/* Merges members heard from another server into our view. With mu held. */
static void merge(dg_wan *w, const struct dg_wan_wire_member *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct dg_wan_wire_member *x = &in[i];
		if (strcmp(x->name, w->self.name) == 0) {
			bool bad = x->status == DG_WAN_SUSPECT || x->status == DG_WAN_FAILED ||
				   (x->status == DG_WAN_LEFT && !w->leaving);
			if (bad && x->inc >= w->self.inc) {
				w->self.inc = x->inc + 1;
				w->stats.refutations++;
				DG_LOGI(WAN, "refuting %s about this server: incarnation now %llu",
					status_name(x->status), (unsigned long long)w->self.inc);
			}
			continue;
		}
		struct peer *p = peer_find(w, x->name);
		if (!p) {
			if (x->status == DG_WAN_LEFT || x->status == DG_WAN_LEAVING)
				continue;
			struct dg_wan_wire_member m = *x;
			/* liveness is ours to judge: start hopeful and probe */
			m.status = DG_WAN_ALIVE;
			peer_add(w, &m);
			continue;
		}
		if (x->inc > p->m.inc) {
			p->m.inc = x->inc;
			snprintf(p->m.build, sizeof(p->m.build), "%s", x->build);
			if (x->status == DG_WAN_LEFT)
				mark_left(w, p, x->inc);
			else if (p->m.status == DG_WAN_LEFT) {
				p->m.status = DG_WAN_ALIVE; /* back with a newer incarnation */
				p->suspect_since = 0;
				DG_LOGI(WAN, "member %s rejoined the WAN pool", p->m.name);
			}
		} else if (x->inc == p->m.inc && x->status == DG_WAN_LEFT) {
			mark_left(w, p, x->inc);
		}
	}
}

/* Our view, self first, as wire members (caller frees). With mu held. */
static struct dg_wan_wire_member *view(dg_wan *w, size_t *n)
{
	struct dg_wan_wire_member *v = calloc(w->npeers + 1, sizeof(*v));
	if (!v) {
		*n = 0;
		return NULL;
	}
	size_t k = 0;
	v[k] = w->self;
	v[k++].status = w->leaving ? DG_WAN_LEFT : DG_WAN_ALIVE;
	for (struct peer *p = w->peers; p; p = p->next)
		v[k++] = p->m;
	*n = k;
	return v;
}

static json_t *from_hdr(dg_wan *w)
{
	return json_pack("{s:s, s:I}", "From", w->self.name, "Inc", (json_int_t)w->self.inc);
}

/* Encodes a PUSHPULL (request or answer) with our view into out. With mu held. */
static int encode_pushpull(dg_wan *w, struct dg_buf *out)
{
	size_t n;
	struct dg_wan_wire_member *v = view(w, &n);
	struct dg_buf body;
	dg_buf_init(&body);
	int rv = v ? dg_wan_members_encode(&body, v, n) : DG_ENOMEM;
	free(v);
	if (rv == 0) {
		json_t *h = from_hdr(w);
		rv = dg_wan_msg_encode(out, DG_WAN_PUSHPULL, h, body.data, body.len);
		json_decref(h);
	}
	dg_buf_fini(&body);
	return rv;
}

static int merge_pushpull(dg_wan *w, const struct dg_wan_msg *m, char *why, size_t len)
{
	struct dg_wan_wire_member *in = NULL;
	size_t n = 0;
	int rv = dg_wan_members_decode(m->body, m->body_len, &in, &n, why, len);
	if (rv == 0) {
		pthread_mutex_lock(&w->mu);
		merge(w, in, n);
		pthread_mutex_unlock(&w->mu);
	}
	free(in);
	return rv;
}

/* ---- probes ---- */

static void suspect(dg_wan *w, struct peer *p)
{
	if (p->m.status != DG_WAN_ALIVE)
		return;
	p->m.status = DG_WAN_SUSPECT;
	p->suspect_since = dg_now_ms();
	w->stats.suspicions++;
	DG_LOGW(WAN, "member %s is suspect: no answer to a probe (timeout %u ms) nor through "
		     "other servers",
		p->m.name, probe_timeout(p));
}

static void probe_ok(dg_wan *w, struct peer *p, uint64_t started, const struct dg_wan_msg *r)
{
	uint64_t now = dg_now_ms();
	rtt_sample(p, (double)(now - started));
	p->last_ok_ms = now;
	json_t *inc = r ? json_object_get(r->hdr, "Inc") : NULL;
	if (json_is_integer(inc) && (uint64_t)json_integer_value(inc) > p->m.inc)
		p->m.inc = (uint64_t)json_integer_value(inc);
	if (p->m.status == DG_WAN_SUSPECT || p->m.status == DG_WAN_FAILED) {
		DG_LOGI(WAN, "member %s is alive again (was %s)", p->m.name,
			status_name(p->m.status));
		p->m.status = DG_WAN_ALIVE;
	}
	p->suspect_since = 0;
}

static json_t *ping_hdr(dg_wan *w, const struct peer *p)
{
	json_t *h = from_hdr(w);
	if (p->m.status == DG_WAN_SUSPECT || p->m.status == DG_WAN_FAILED) {
		/* tell it, so it can refute */
		json_object_set_new(h, "Suspect", json_true());
		json_object_set_new(h, "TargetInc", json_integer((json_int_t)p->m.inc));
	}
	return h;
}

/* Starts a probe of p. With mu held; returns the op to start after unlocking, or NULL. */
static struct op *probe_prepare(dg_wan *w, struct peer *p)
{
	struct op *o = op_new(w, OP_PROBE, p);
	if (!o)
		return NULL;
	json_t *h = ping_hdr(w, p);
	int rv = dg_wan_msg_encode(&o->msg, DG_WAN_PING, h, NULL, 0);
	json_decref(h);
	if (rv != 0) {
		op_free(o);
		return NULL;
	}
	o->timeout_ms = probe_timeout(p);
	p->probing = true;
	w->stats.probes++;
	inflight_add(w, o);
	return o;
}

static void indirect_finish(dg_wan *w, struct indirect_round *r)
{
	struct peer *p = r->target;
	if (r->any_ok) {
		p->last_ok_ms = dg_now_ms();
		if (p->m.status == DG_WAN_SUSPECT) {
			p->m.status = DG_WAN_ALIVE;
			p->suspect_since = 0;
		}
	} else {
		suspect(w, p);
	}
	p->probing = false;
	free(r);
}

static void probe_done(struct op *o, int err, const struct dg_wan_msg *reply)
{
	dg_wan *w = o->w;
	struct peer *p = o->peer;
	struct op *asks[INDIRECT_N];
	int nasks = 0;
	pthread_mutex_lock(&w->mu);
	if (err == 0 && reply && reply->type == DG_WAN_PONG) {
		probe_ok(w, p, o->started_ms, reply);
		p->probing = false;
	} else if (w->stopping || p->m.status == DG_WAN_LEFT) {
		p->probing = false;
	} else {
		w->stats.probe_timeouts++;
		/* ask up to INDIRECT_N other linked, alive servers to try */
		struct indirect_round *r = calloc(1, sizeof(*r));
		if (r) {
			r->target = p;
			for (struct peer *q = w->peers; q && nasks < INDIRECT_N; q = q->next) {
				if (q == p || q->m.status != DG_WAN_ALIVE || q->ctl_pipes == 0)
					continue;
				struct op *a = op_new(w, OP_INDIRECT_ASK, q);
				if (!a)
					break;
				char addr[300];
				snprintf(addr, sizeof(addr), "%s:%d", p->m.addr, p->m.port);
				json_t *h = json_pack("{s:s, s:s, s:i}", "Target", p->m.name, "Addr",
						      addr, "TimeoutMs", (int)probe_timeout(p));
				int rv = dg_wan_msg_encode(&a->msg, DG_WAN_INDIRECT, h, NULL, 0);
				json_decref(h);
				if (rv != 0) {
					op_free(a);
					break;
				}
				/* the helper's own probe plus the round trip to it */
				a->timeout_ms = probe_timeout(p) + probe_timeout(q);
				a->round = r;
				r->pending++;
				inflight_add(w, a);
				asks[nasks++] = a;
			}
			if (nasks == 0)
				indirect_finish(w, r);
		} else {
			suspect(w, p);
			p->probing = false;
		}
	}
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < nasks; i++)
		op_start(asks[i], asks[i]->peer->ctl);
}

/* ---- the rep side: requests from other servers ---- */

/* Puts a job back to waiting for a request, or parks it when enough jobs wait already: the
 * number of jobs follows the most requests served at once, not how many were ever served. */
static void job_receive(struct dg_wan_job *j)
{
	dg_wan *w = j->w;
	pthread_mutex_lock(&w->mu);
	if (w->idle >= IDLE_RECEIVERS) {
		j->stage = 3;
		j->next_parked = w->parked;
		w->parked = j;
		pthread_mutex_unlock(&w->mu);
		return;
	}
	w->idle++;
	j->stage = 0;
	pthread_mutex_unlock(&w->mu);
	nng_ctx_recv(j->ctx, j->aio);
}

static void job_send(struct dg_wan_job *j, struct dg_buf *msg)
{
	nng_msg *m = NULL;
	if (j->stage == 2) {
		pthread_mutex_lock(&j->w->mu);
		j->w->working -= j->held;
		pthread_mutex_unlock(&j->w->mu);
	}
	if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, msg->data, msg->len) != 0) {
		if (m)
			nng_msg_free(m);
		/* no reply: the asker times out; take the next request */
		job_receive(j);
		return;
	}
	j->stage = 1;
	__atomic_add_fetch(&j->w->stats.bytes_sent, msg->len, __ATOMIC_RELAXED);
	nng_aio_set_msg(j->aio, m);
	nng_ctx_send(j->ctx, j->aio);
}

static void batch_serve_free(struct batch_serve *b)
{
	for (size_t i = 0; i < b->n; i++)
		dg_buf_fini(&b->answers[i]);
	free(b->answers);
	free(b->subs);
	free(b);
}

/* One request of a batch is answered (out: its encoded answer, taken). The last one sends the
 * batch's reply: answers too large to fit with the others become "ask again alone" markers. */
static void batch_answer(struct dg_wan_job *j, struct dg_buf *out)
{
	struct batch_serve *b = j->batch;
	dg_wan *w = j->w;
	b->answers[j->index] = *out;
	dg_buf_init(out);
	pthread_mutex_lock(&w->mu);
	bool last = --b->pending == 0;
	pthread_mutex_unlock(&w->mu);
	if (!last)
		return;
	struct dg_buf msg;
	size_t resends = 0;
	dg_buf_init(&msg);
	if (dg_wan_batch_reply_encode(&msg, b->answers, b->n, DG_WAN_MAX_MSG, &resends) != 0) {
		json_t *e = json_pack("{s:s}", "Error", "cannot encode the answers of a batch");
		dg_wan_msg_encode(&msg, DG_WAN_ERROR, e, NULL, 0);
		json_decref(e);
	}
	pthread_mutex_lock(&w->mu);
	w->stats.batches_served++;
	pthread_mutex_unlock(&w->mu);
	if (resends)
		DG_LOGD(WAN, "%zu of %zu answers did not fit in a batch's reply: asked again alone",
			resends, b->n);
	job_send(b->parent, &msg);
	dg_buf_fini(&msg);
	batch_serve_free(b);
}

void dg_wan_reply(struct dg_wan_job *j, enum dg_wan_type type, json_t *hdr, const void *body,
		  size_t len)
{
	struct dg_buf out;
	dg_buf_init(&out);
	if (dg_wan_msg_encode(&out, type, hdr, body, len) != 0) {
		json_t *e = json_pack("{s:s}", "Error", "reply too large for the WAN");
		dg_buf_fini(&out);
		dg_buf_init(&out);
		dg_wan_msg_encode(&out, DG_WAN_ERROR, e, NULL, 0);
		json_decref(e);
	}
	if (j->batch)
		batch_answer(j, &out);
	else
		job_send(j, &out);
	dg_buf_fini(&out);
}

static void reply_error(struct dg_wan_job *j, const char *text)
{
	json_t *e = json_pack("{s:s}", "Error", text);
	dg_wan_reply(j, DG_WAN_ERROR, e, NULL, 0);
	json_decref(e);
}

/* Starts one more receiving job, so that a job kept for a while does not stop the socket from
 * taking requests. Without mu. */
static int job_spawn(dg_wan *w)
{
	pthread_mutex_lock(&w->mu);
	struct dg_wan_job *j = w->parked;
	if (j)
		w->parked = j->next_parked;
	pthread_mutex_unlock(&w->mu);
	if (j) {
		job_receive(j);
		return 0;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return DG_ENOMEM;
	j->w = w;
	if (nng_aio_alloc(&j->aio, job_cb, j) != 0) {
		free(j);
		return DG_ENOMEM;
	}
	if (nng_ctx_open(&j->ctx, w->rep) != 0) {
		nng_aio_free(j->aio);
		free(j);
		return DG_EIO;
	}
	pthread_mutex_lock(&w->mu);
	j->next = w->all_jobs;
	w->all_jobs = j;
	w->idle++;
	j->stage = 0;
	pthread_mutex_unlock(&w->mu);
	nng_ctx_recv(j->ctx, j->aio);
	return 0;
}

/* A job keeps its request (n requests for a batch) while it is served elsewhere: make sure
 * another one listens. */
static void job_hold(struct dg_wan_job *j, size_t n)
{
	dg_wan *w = j->w;
	pthread_mutex_lock(&w->mu);
	j->stage = 2;
	j->held = n;
	w->working += (int)n;
	bool none_listening = w->idle == 0;
	pthread_mutex_unlock(&w->mu);
	if (none_listening)
		job_spawn(w);
}

/* The DC a message claims ("From" or "Name": "<node>.<dc>") must be the one in the TLS
 * certificate of the link it came on. */
static bool claim_matches(nng_msg *m, const struct dg_wan_msg *d, char *why, size_t len)
{
	json_t *from = json_object_get(d->hdr, "From");
	if (!from)
		from = json_object_get(d->hdr, "Name");
	if (!json_is_string(from))
		return true; /* nothing claimed */
	const char *name = json_string_value(from);
	const char *dot = strrchr(name, '.');
	nng_sockaddr sa;
	char role[32] = "", dc[DG_WAN_LABEL_MAX] = "";
	if (nng_pipe_get_addr(nng_msg_get_pipe(m), NNG_OPT_REMADDR, &sa) != 0 ||
	    dg_tls_peer_identity(&sa, role, sizeof(role), dc, sizeof(dc)) != 0)
		return true; /* not known by address (should not happen on a verified link) */
	if (!dot || strcmp(dot + 1, dc) != 0) {
		snprintf(why, len, "it claims to be %s but its certificate is for datacenter %s",
			 name, dc);
		return false;
	}
	return true;
}

/* Serves the n requests of a BATCH, each as its own job for the serve function, which answers
 * each one as it would a request alone. items point into the batch's message, which the serve
 * function copies what it keeps from (as for a request alone). */
static void serve_batch(struct dg_wan_job *j, const struct dg_wan_msg *items, size_t n)
{
	dg_wan *w = j->w;
	pthread_mutex_lock(&w->mu);
	dg_wan_serve_fn fn = w->serve;
	void *arg = w->serve_arg;
	bool busy = w->working + (int)n > MAX_JOBS;
	pthread_mutex_unlock(&w->mu);
	if (!fn || busy) {
		reply_error(j, fn ? "too many forwarded requests in progress"
				  : "this server does not serve forwarded requests yet");
		return;
	}
	struct batch_serve *b = calloc(1, sizeof(*b));
	if (!b || !(b->subs = calloc(n, sizeof(*b->subs))) ||
	    !(b->answers = calloc(n, sizeof(*b->answers)))) {
		if (b)
			free(b->subs);
		free(b);
		reply_error(j, "out of memory for a batch");
		return;
	}
	b->parent = j;
	b->n = b->pending = n;
	for (size_t i = 0; i < n; i++) {
		b->subs[i].w = w;
		b->subs[i].batch = b;
		b->subs[i].index = i;
		dg_buf_init(&b->answers[i]);
	}
	job_hold(j, n);
	/* the last answer frees b, and may come before fn returns: nothing of b is touched after
	 * the last call */
	struct dg_wan_job *subs = b->subs;
	for (size_t i = 0; i < n; i++)
		fn(arg, &subs[i], &items[i]);
}

static void job_handle(struct dg_wan_job *j, nng_msg *m)
{
	dg_wan *w = j->w;
	struct dg_wan_msg d;
	char why[256];
	size_t len = nng_msg_len(m);
	const char *body = nng_msg_body(m);
	if (len == 4 && memcmp(body, "ping", 4) == 0) {
		/* `dcgate wan ping`: who answers, and who it sees dialing */
		char role[32] = "", dc[128] = "", buf[700];
		nng_sockaddr remote;
		if (nng_pipe_get_addr(nng_msg_get_pipe(m), NNG_OPT_REMADDR, &remote) == 0)
			dg_tls_peer_identity(&remote, role, sizeof(role), dc, sizeof(dc));
		int n = snprintf(buf, sizeof(buf),
				 "{\"Node\":\"%s\",\"Datacenter\":\"%s\",\"PeerRole\":\"%s\","
				 "\"PeerDatacenter\":\"%s\"}",
				 w->node, w->dc, role, dc);
		nng_msg_clear(m);
		if (n > 0 && (size_t)n < sizeof(buf))
			nng_msg_append(m, buf, (size_t)n);
		j->stage = 1;
		nng_aio_set_msg(j->aio, m);
		nng_ctx_send(j->ctx, j->aio);
		return;
	}
	struct dg_wan_msg *items = NULL;
	size_t nitems = 0;
	if (dg_wan_msg_decode(body, len, &d, why, sizeof(why)) != 0 ||
	    !claim_matches(m, &d, why, sizeof(why)) ||
	    (d.type == DG_WAN_BATCH &&
	     dg_wan_batch_decode(&d, &items, &nitems, why, sizeof(why)) != 0)) {
		nng_sockaddr sa;
		char from[96] = "unknown";
		if (nng_pipe_get_addr(nng_msg_get_pipe(m), NNG_OPT_REMADDR, &sa) == 0 &&
		    sa.s_family == NNG_AF_INET) {
			const uint8_t *a = (const uint8_t *)&sa.s_in.sa_addr;
			snprintf(from, sizeof(from), "%u.%u.%u.%u:%u", a[0], a[1], a[2], a[3],
				 (unsigned)((sa.s_in.sa_port >> 8) | ((sa.s_in.sa_port & 0xff) << 8)));
		}
		DG_LOGW(WAN, "closing the link from %s: %s", from, why);
		pthread_mutex_lock(&w->mu);
		w->stats.bad_messages++;
		pthread_mutex_unlock(&w->mu);
		if (d.hdr)
			dg_wan_msg_fini(&d);
		nng_pipe_close(nng_msg_get_pipe(m));
		nng_msg_free(m);
		job_receive(j);
		return;
	}
	switch (d.type) {
	case DG_WAN_PING: {
		json_t *s = json_object_get(d.hdr, "Suspect");
		json_t *ti = json_object_get(d.hdr, "TargetInc");
		pthread_mutex_lock(&w->mu);
		if (json_is_true(s) && json_is_integer(ti) &&
		    (uint64_t)json_integer_value(ti) >= w->self.inc) {
			w->self.inc = (uint64_t)json_integer_value(ti) + 1;
			w->stats.refutations++;
			DG_LOGI(WAN, "a server suspects this one: refuting with incarnation %llu",
				(unsigned long long)w->self.inc);
		}
		json_t *h = from_hdr(w);
		pthread_mutex_unlock(&w->mu);
		dg_wan_reply(j, DG_WAN_PONG, h, NULL, 0);
		json_decref(h);
		break;
	}
	case DG_WAN_PUSHPULL: {
		if (merge_pushpull(w, &d, why, sizeof(why)) != 0) {
			DG_LOGW(WAN, "bad member list from %s: %s",
				json_string_value(json_object_get(d.hdr, "From")), why);
			reply_error(j, why);
			break;
		}
		struct dg_buf out;
		dg_buf_init(&out);
		pthread_mutex_lock(&w->mu);
		int rv = encode_pushpull(w, &out);
		pthread_mutex_unlock(&w->mu);
		if (rv == 0)
			job_send(j, &out);
		else
			reply_error(j, "cannot encode the member list");
		dg_buf_fini(&out);
		break;
	}
	case DG_WAN_LEAVE: {
		json_t *name = json_object_get(d.hdr, "Name");
		json_t *inc = json_object_get(d.hdr, "Inc");
		pthread_mutex_lock(&w->mu);
		struct peer *p = json_is_string(name) ? peer_find(w, json_string_value(name)) : NULL;
		if (p)
			mark_left(w, p, json_is_integer(inc) ? (uint64_t)json_integer_value(inc) : 0);
		pthread_mutex_unlock(&w->mu);
		dg_wan_reply(j, DG_WAN_ACK, NULL, NULL, 0);
		break;
	}
	case DG_WAN_INDIRECT: {
		json_t *t = json_object_get(d.hdr, "Target");
		json_t *to = json_object_get(d.hdr, "TimeoutMs");
		struct op *o = NULL;
		pthread_mutex_lock(&w->mu);
		struct peer *p = json_is_string(t) ? peer_find(w, json_string_value(t)) : NULL;
		if (p && p->open && p->m.status != DG_WAN_LEFT && (o = op_new(w, OP_INDIRECT_PROBE, p))) {
			json_t *h = from_hdr(w);
			if (dg_wan_msg_encode(&o->msg, DG_WAN_PING, h, NULL, 0) != 0) {
				op_free(o);
				o = NULL;
			}
			json_decref(h);
		}
		if (o) {
			int64_t ms = json_is_integer(to) ? json_integer_value(to) : PROBE_FIRST_MS;
			o->timeout_ms = ms < PROBE_MIN_MS ? PROBE_MIN_MS
				      : ms > PROBE_MAX_MS ? PROBE_MAX_MS
							  : (unsigned)ms;
			o->job = j;
			inflight_add(w, o);
		}
		nng_socket ctl = p ? p->ctl : (nng_socket)NNG_SOCKET_INITIALIZER;
		pthread_mutex_unlock(&w->mu);
		if (!o) {
			json_t *h = json_pack("{s:b}", "Ok", 0);
			dg_wan_reply(j, DG_WAN_ACK, h, NULL, 0);
			json_decref(h);
			break;
		}
		job_hold(j, 1);
		op_start(o, ctl);
		break;
	}
	case DG_WAN_HTTP: {
		pthread_mutex_lock(&w->mu);
		dg_wan_serve_fn fn = w->serve;
		void *arg = w->serve_arg;
		bool busy = w->working >= MAX_JOBS;
		pthread_mutex_unlock(&w->mu);
		if (!fn || busy) {
			reply_error(j, fn ? "too many forwarded requests in progress"
					  : "this server does not serve forwarded requests yet");
			break;
		}
		job_hold(j, 1);
		fn(arg, j, &d);
		break;
	}
	case DG_WAN_BATCH:
		serve_batch(j, items, nitems);
		break;
	default: {
		char text[96];
		snprintf(text, sizeof(text), "unexpected message %s", dg_wan_type_name(d.type));
		reply_error(j, text);
		break;
	}
	}
	dg_wan_batch_items_free(items, nitems);
	dg_wan_msg_fini(&d);
	nng_msg_free(m);
}

static void job_cb(void *arg)
{
	struct dg_wan_job *j = arg;
	dg_wan *w = j->w;
	int rv = nng_aio_result(j->aio);
	if (j->stage == 1) {
		if (rv != 0) {
			nng_msg *m = nng_aio_get_msg(j->aio);
			if (m)
				nng_msg_free(m);
		}
		if (rv != NNG_ECLOSED)
			job_receive(j);
		return;
	}
	pthread_mutex_lock(&w->mu);
	w->idle--;
	bool stopping = w->stopping;
	pthread_mutex_unlock(&w->mu);
	if (rv == NNG_ECLOSED)
		return; /* the socket is closing: dg_wan_free reaps jobs */
	if (rv != 0) {
		if (!stopping)
			job_receive(j);
		return;
	}
	nng_msg *m = nng_aio_get_msg(j->aio);
	__atomic_add_fetch(&w->stats.bytes_received, nng_msg_len(m), __ATOMIC_RELAXED);
	job_handle(j, m); /* the decoder refuses (and the link closes on) anything over the limit */
}

/* ---- op completions ---- */

/* A member just learnt of is still being dialed: a request may wait for that link (nng sends
 * it once the link is up, within the request's timeout) rather than fail while nothing is
 * known to be wrong. One whose link was up and went (a server killed, a reset) is not usable
 * until it is back: that is the "no server reachable" answer, given at once. */
#define NEW_MEMBER_GRACE_MS 5000

static bool usable(const struct peer *p, uint64_t now)
{
	if (p->m.status == DG_WAN_FAILED || p->m.status == DG_WAN_LEFT)
		return false;
	return p->data_pipes > 0 ||
	       (!p->ever_linked && p->open && now - p->added_ms < NEW_MEMBER_GRACE_MS);
}

static int peer_rank(const struct peer *p)
{
	int rank = p->have_rtt ? (int)(p->srtt * 1000) : 1 << 29;
	return p->data_pipes > 0 ? rank : rank + (1 << 29); /* linked ones first */
}

/* The nearest linked, alive (or suspect) server of dc not yet tried. With mu held. */
static struct peer *pick(dg_wan *w, const char *dc, struct peer *const *tried, int ntried,
			 bool *known)
{
	struct peer *best = NULL;
	uint64_t now = dg_now_ms();
	*known = false;
	for (struct peer *p = w->peers; p; p = p->next) {
		if (strcmp(p->m.dc, dc) != 0 || p->m.status == DG_WAN_LEFT)
			continue;
		*known = true;
		if (!usable(p, now))
			continue;
		bool seen = false;
		for (int i = 0; i < ntried; i++)
			seen |= tried[i] == p;
		if (seen)
			continue;
		if (!best || peer_rank(p) < peer_rank(best))
			best = p;
	}
	return best;
}

/* Work found with mu held and done after it is released (op_start and user callbacks may not
 * run under it): requests to send, each on its socket, and requests that end now, each with
 * its error (already out of the in-flight list). */
struct after {
	struct op *start, *end;
};

static void after_start(struct after *a, struct op *o, nng_socket s)
{
	/* the aio is made here, under mu, rather than in op_start, so that pipe_cb can cancel
	 * any request that is about to be sent or on a link (op_start reports a failure) */
	if (!o->aio && nng_aio_alloc(&o->aio, op_cb, o) != 0)
		o->aio = NULL;
	o->link_lost = false; /* a request moved to another server starts afresh */
	o->sock = s;
	o->snext = a->start;
	a->start = o;
}

static void after_end(struct after *a, struct op *o, int err)
{
	o->err = err;
	o->snext = a->end;
	a->end = o;
}

/* Without mu. */
static void after_run(struct after *a)
{
	while (a->start) {
		struct op *o = a->start;
		a->start = o->snext;
		o->snext = NULL;
		op_start(o, o->sock);
	}
	while (a->end) {
		struct op *o = a->end;
		a->end = o->snext;
		if (!atomic_load(&o->w->abandoned))
			o->cb(o->arg, o->err, NULL);
		op_free(o);
	}
}

/* Sends request o to p: at once, or, when it is batchable and p's batch slots are all taken,
 * after the others waiting in p's queue (slot_release sends them). With mu held. */
static void slot_release(dg_wan *w, struct peer *p, struct after *a);
static bool req_settle(dg_wan *w, struct op *o, int err, struct after *a);

static void req_route(dg_wan *w, struct op *o, struct peer *p, struct after *a)
{
	o->peer = p;
	if (o->batchable && !o->alone) {
		if (p->batch_slots >= BATCH_SLOTS) {
			o->qnext = NULL;
			if (p->queue_tail)
				p->queue_tail->qnext = o;
			else
				p->queue = o;
			p->queue_tail = o;
			p->nqueued++;
			if (p->nqueued >= DG_WAN_MAX_BATCH && p->batch_slots < BATCH_SLOTS_FULL) {
				p->batch_slots++; /* a full batch does not wait for a slot */
				slot_release(w, p, a);
			}
			return;
		}
		p->batch_slots++;
		o->slot = true;
	}
	after_start(a, o, p->data);
}

static struct op *queue_pop(struct peer *p)
{
	struct op *o = p->queue;
	if (o) {
		p->queue = o->qnext;
		if (!p->queue)
			p->queue_tail = NULL;
		p->nqueued--;
		o->qnext = NULL;
	}
	return o;
}

/* One of p's batch slots is free again: it goes to what waits in p's queue, everything (up to
 * a batch's limits) in one message, or alone when only one waits; with nothing waiting it is
 * given back. Requests whose time ran out while waiting end here. With mu held. */
static void slot_release(dg_wan *w, struct peer *p, struct after *a)
{
	uint64_t now = dg_now_ms();
	struct op *take[DG_WAN_MAX_BATCH];
	size_t n = 0;
	/* p's data link is down (the slot comes back because the request holding it failed with
	 * its link): what waits in p's queue moves to the next server of its DC now, rather than
	 * wait in nng's queue for a link to p that a killed server never brings back */
	if (!w->stopping && !usable(p, now)) {
		struct op *o;
		while ((o = queue_pop(p)) != NULL)
			if (req_settle(w, o, DG_EIO, a))
				after_end(a, o, DG_EIO);
		p->batch_slots--;
		return;
	}
	struct dg_wan_batch b;
	dg_wan_batch_init(&b, DG_WAN_BATCH, DG_WAN_MAX_MSG);
	while (p->queue && n < DG_WAN_MAX_BATCH) {
		struct op *o = p->queue;
		int err = 0;
		if (w->stopping)
			err = DG_ESHUTDOWN;
		else if (now - o->started_ms >= o->timeout_ms)
			err = DG_ETIMEDOUT;
		else if (dg_wan_batch_add(&b, o->msg.data, o->msg.len) != 0) {
			if (n > 0)
				break; /* the batch is full: the rest waits for the next slot */
			o->alone = true; /* it cannot travel in a batch at all */
		}
		queue_pop(p);
		if (err != 0) {
			inflight_del(w, o);
			w->stats.request_errors++;
			after_end(a, o, err);
			continue;
		}
		if (o->alone) {
			o->slot = true;
			after_start(a, o, p->data);
			dg_wan_batch_fini(&b);
			return;
		}
		take[n++] = o;
	}
	if (n == 0) {
		p->batch_slots--;
	} else if (n == 1) {
		/* one request needs no batch around it */
		take[0]->slot = true;
		after_start(a, take[0], p->data);
	} else {
		struct op *c = op_new(w, OP_BATCH, p);
		struct op **items = calloc(n, sizeof(*items));
		if (!c || !items || dg_wan_batch_encode(&b, &c->msg) != 0) {
			if (c)
				op_free(c);
			free(items);
			for (size_t i = 0; i < n; i++) {
				inflight_del(w, take[i]);
				w->stats.request_errors++;
				after_end(a, take[i], DG_ENOMEM);
			}
			p->batch_slots--;
		} else {
			/* the batch may take as long as the most patient of its requests */
			unsigned left = 1;
			for (size_t i = 0; i < n; i++) {
				uint64_t spent = now - take[i]->started_ms;
				unsigned l = take[i]->timeout_ms - (unsigned)spent;
				if (l > left)
					left = l;
				items[i] = take[i];
			}
			c->items = items;
			c->nitems = n;
			c->timeout_ms = left;
			c->slot = true;
			w->stats.batches++;
			w->stats.batched += n;
			inflight_add(w, c);
			after_start(a, c, p->data);
		}
	}
	dg_wan_batch_fini(&b);
}

/* Request o's attempt on o->peer ended: err, or 0 when an answer came. With mu held: gives
 * back the batch slot it held, and moves a retryable request that failed to the next server
 * of its DC while it has time left. Returns true when o is finished: out of the in-flight
 * list, for the caller to call o->cb and free o, without mu. */
static bool req_settle(dg_wan *w, struct op *o, int err, struct after *a)
{
	struct peer *was = o->peer;
	if (err == 0 && was)
		was->last_ok_ms = dg_now_ms();
	if (o->slot) {
		o->slot = false;
		slot_release(w, was, a);
	}
	/* retry elsewhere only what may safely run twice, and only within the time left */
	if (err != 0 && err != DG_ESHUTDOWN && o->retryable && !w->stopping && o->ntried < 8 &&
	    dg_now_ms() - o->started_ms < o->timeout_ms) {
		bool known;
		struct peer *next = pick(w, o->dc, o->tried, o->ntried, &known);
		if (next) {
			o->tried[o->ntried++] = next;
			DG_LOGD(WAN, "request to %s failed (%s); trying %s", o->dc, dg_strerror(err),
				next->m.name);
			req_route(w, o, next, a);
			return false;
		}
	}
	inflight_del(w, o);
	w->stats.request_errors += err != 0;
	return true;
}

static void req_done(struct op *o, int err, const struct dg_wan_msg *reply)
{
	dg_wan *w = o->w;
	struct after a = {0};
	pthread_mutex_lock(&w->mu);
	/* NNG_ECLOSED while the pool runs is our own close of the socket (a failed member's
	 * sockets replaced): a failed link like any other, so the request may move on, and its
	 * client is not told "shutting down" */
	if (err == DG_ESHUTDOWN && !w->stopping)
		err = DG_EIO;
	bool finished = req_settle(w, o, err, &a);
	if (finished && err != 0 && w->stopping)
		err = DG_ESHUTDOWN; /* closing our sockets ended it, whatever nng called it */
	pthread_mutex_unlock(&w->mu);
	after_run(&a);
	if (finished) {
		if (!atomic_load(&w->abandoned))
			o->cb(o->arg, err, reply);
		op_free(o);
	}
}

/* A BATCH came back with its answers (items, one per request in order), or failed (err), or
 * was refused whole (reply an ERROR, which each request gets as its answer, as it would have
 * alone). Each request then ends, moves to the next server like a request alone, or, when its
 * answer did not fit in the batch's reply, is asked again alone of the same server. */
static void batch_done(struct op *c, int err, const struct dg_wan_msg *reply,
		       const struct dg_wan_msg *items)
{
	dg_wan *w = c->w;
	struct after a = {0};
	size_t n = c->nitems;
	bool fin[DG_WAN_MAX_BATCH];
	int ierr[DG_WAN_MAX_BATCH];
	const struct dg_wan_msg *ans[DG_WAN_MAX_BATCH];
	if (err == 0 && !items && reply->type != DG_WAN_ERROR) {
		DG_LOGW(WAN, "%s answered a batch with %s", c->peer->m.name,
			dg_wan_type_name(reply->type));
		err = DG_EIO;
	}
	pthread_mutex_lock(&w->mu);
	if (err == DG_ESHUTDOWN && !w->stopping)
		err = DG_EIO; /* as in req_done */
	inflight_del(w, c);
	if (c->slot) {
		c->slot = false;
		slot_release(w, c->peer, &a);
	}
	for (size_t i = 0; i < n; i++) {
		struct op *o = c->items[i];
		fin[i] = false;
		if (items && dg_wan_is_resend(&items[i])) {
			o->alone = true;
			w->stats.batch_resends++;
			after_start(&a, o, c->peer->data);
			continue;
		}
		ans[i] = err != 0 ? NULL : items ? &items[i] : reply;
		ierr[i] = err;
		fin[i] = req_settle(w, o, err, &a);
		if (fin[i] && err != 0 && w->stopping)
			ierr[i] = DG_ESHUTDOWN;
	}
	pthread_mutex_unlock(&w->mu);
	after_run(&a);
	/* only finished requests are touched from here: the others may already be in flight */
	for (size_t i = 0; i < n; i++)
		if (fin[i]) {
			struct op *o = c->items[i];
			if (!atomic_load(&w->abandoned))
				o->cb(o->arg, ierr[i], ans[i]);
			op_free(o);
		}
	op_free(c);
}

static void join_finish(struct op *o, int err, const char *msg)
{
	dg_wan *w = o->w;
	struct socket_to_close *c = calloc(1, sizeof(*c));
	pthread_mutex_lock(&w->mu);
	inflight_del(w, o);
	if (c) { /* nng_close() waits for callbacks like this one: the timer thread hands it on */
		c->s = o->tmp;
		c->tls = o->tmp_tls;
		c->next = w->to_close;
		w->to_close = c;
	}
	for (struct retry_addr *r = w->retries; r; r = r->next)
		if (o->retry_join && strcmp(r->addr, o->addr) == 0) {
			r->in_flight = false;
			if (err == 0)
				r->next_ms = UINT64_MAX; /* done */
			else
				r->next_ms = dg_now_ms() + RETRY_JOIN_MS;
		}
	pthread_mutex_unlock(&w->mu);
	if (err == 0)
		DG_LOGI(WAN, "joined the WAN pool through %s", o->addr);
	else
		DG_LOGW(WAN, "WAN join through %s failed: %s", o->addr, msg);
	if (o->jcb && !atomic_load(&w->abandoned))
		o->jcb(o->jarg, err, msg);
	op_free(o);
}

static void op_done(struct op *o, int err, const struct dg_wan_msg *reply)
{
	dg_wan *w = o->w;
	char why[256];
	switch (o->kind) {
	case OP_PROBE:
		pthread_mutex_lock(&w->mu);
		inflight_del(w, o);
		pthread_mutex_unlock(&w->mu);
		probe_done(o, err, reply);
		op_free(o);
		return;
	case OP_INDIRECT_ASK: {
		pthread_mutex_lock(&w->mu);
		inflight_del(w, o);
		struct indirect_round *r = o->round;
		if (err == 0 && reply && reply->type == DG_WAN_ACK &&
		    json_is_true(json_object_get(reply->hdr, "Ok")))
			r->any_ok = true;
		if (--r->pending == 0)
			indirect_finish(w, r);
		pthread_mutex_unlock(&w->mu);
		op_free(o);
		return;
	}
	case OP_INDIRECT_PROBE: {
		bool ok = err == 0 && reply && reply->type == DG_WAN_PONG;
		pthread_mutex_lock(&w->mu);
		inflight_del(w, o);
		if (ok)
			probe_ok(w, o->peer, o->started_ms, reply);
		pthread_mutex_unlock(&w->mu);
		json_t *h = json_pack("{s:b}", "Ok", ok);
		dg_wan_reply(o->job, DG_WAN_ACK, h, NULL, 0);
		json_decref(h);
		op_free(o);
		return;
	}
	case OP_PUSHPULL:
		if (err == 0 && reply && reply->type == DG_WAN_PUSHPULL &&
		    merge_pushpull(w, reply, why, sizeof(why)) != 0)
			DG_LOGW(WAN, "bad member list from %s: %s", o->peer->m.name, why);
		pthread_mutex_lock(&w->mu);
		inflight_del(w, o);
		if (err == 0)
			o->peer->last_ok_ms = dg_now_ms();
		pthread_mutex_unlock(&w->mu);
		op_free(o);
		return;
	case OP_LEAVE:
		pthread_mutex_lock(&w->mu);
		inflight_del(w, o);
		w->leave_pending--;
		pthread_cond_broadcast(&w->cond);
		pthread_mutex_unlock(&w->mu);
		op_free(o);
		return;
	case OP_REQ:
		req_done(o, err, reply);
		return;
	case OP_BATCH:
		batch_done(o, err, reply, NULL);
		return;
	case OP_JOIN:
		if (err != 0) {
			snprintf(why, sizeof(why),
				 "no answer from %s: %s (is it a dcgate server's WAN port, and "
				 "does its certificate come from our CA? see both logs)",
				 o->addr, dg_strerror(err));
			join_finish(o, err, why);
		} else if (!reply || reply->type != DG_WAN_PUSHPULL) {
			snprintf(why, sizeof(why), "%s answered the join with %s", o->addr,
				 reply ? dg_wan_type_name(reply->type) : "nothing");
			join_finish(o, DG_EIO, why);
		} else if (merge_pushpull(w, reply, why, sizeof(why)) != 0) {
			join_finish(o, DG_EIO, why);
		} else {
			join_finish(o, 0, "");
		}
		return;
	}
}

/* ---- joining ---- */

static int join_start(dg_wan *w, const char *addr, dg_wan_join_fn cb, void *arg, bool retry)
{
	char url[400], err[512], accept[160];
	int rv;
	if (addr_url(addr, url, sizeof(url)) != 0)
		return DG_EINVAL;
	struct op *o = op_new(w, OP_JOIN, NULL);
	if (!o)
		return DG_ENOMEM;
	snprintf(o->addr, sizeof(o->addr), "%s", addr);
	o->jcb = cb;
	o->jarg = arg;
	o->retry_join = retry;
	o->timeout_ms = JOIN_TIMEOUT_MS;
	o->tmp = (nng_socket)NNG_SOCKET_INITIALIZER;
	snprintf(accept, sizeof(accept), "server.*.%s", w->domain);
	if (dg_tls_dialer_config_any(w->tls, accept, &o->tmp_tls, err, sizeof(err)) != 0) {
		DG_LOGW(WAN, "join %s: %s", addr, err);
		op_free(o);
		return DG_EINVAL;
	}
	nng_dialer d;
	if ((rv = nng_req0_open(&o->tmp)) != 0 ||
	    (rv = nng_socket_set_size(o->tmp, NNG_OPT_RECVMAXSZ, RECV_MAX)) != 0 ||
	    (rv = nng_dialer_create(&d, o->tmp, url)) != 0 ||
	    (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, o->tmp_tls)) != 0 ||
	    (rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
		DG_LOGW(WAN, "join %s: %s", url, nng_strerror(rv));
		sock_close(w, o->tmp, o->tmp_tls);
		op_free(o);
		return DG_EIO;
	}
	pthread_mutex_lock(&w->mu);
	rv = encode_pushpull(w, &o->msg);
	if (rv == 0)
		inflight_add(w, o);
	pthread_mutex_unlock(&w->mu);
	if (rv != 0) {
		sock_close(w, o->tmp, o->tmp_tls);
		op_free(o);
		return rv;
	}
	op_start(o, o->tmp);
	return 0;
}

int dg_wan_join(dg_wan *w, const char *addr, dg_wan_join_fn cb, void *arg)
{
	return join_start(w, addr, cb, arg, false);
}

void dg_wan_retry_join(dg_wan *w, const char *addr)
{
	struct retry_addr *r = calloc(1, sizeof(*r));
	if (!r)
		return;
	snprintf(r->addr, sizeof(r->addr), "%s", addr);
	pthread_mutex_lock(&w->mu);
	r->next_ms = dg_now_ms();
	r->next = w->retries;
	w->retries = r;
	pthread_mutex_unlock(&w->mu);
}

/* ---- the timer thread ---- */

static void *timer_main(void *arg)
{
	dg_wan *w = arg;
	uint64_t next_pushpull = dg_now_ms() + w->cfg.pushpull_interval_ms;
	for (;;) {
		struct op *start[256];
		nng_socket start_sock[256];
		int nstart = 0;
		struct peer *to_open[32];
		int nopen = 0;
		struct socket_to_close *closing = NULL;
		char joins[8][300];
		int njoins = 0;
		struct timespec ts = dg_realtime_in_ms(TICK_MS);
		pthread_mutex_lock(&w->mu);
		if (!w->stopping)
			pthread_cond_timedwait(&w->cond, &w->mu, &ts);
		if (w->stopping) {
			pthread_mutex_unlock(&w->mu);
			break;
		}
		uint64_t now = dg_now_ms();
		bool pushpull_due = now >= next_pushpull;
		/* a request started on a server's data socket just as its link went (routed before
		 * pipe_cb ran, sent after its cancel) waits in nng's queue for a link that a killed
		 * server never brings back: while a link is down, such requests are cancelled here,
		 * so they too move to the next server within a tick. The in-flight list is walked
		 * only for LINK_SWEEP_MS after a link was lost. */
		if (w->link_lost_ms && now - w->link_lost_ms < LINK_SWEEP_MS) {
			int nswept = 0;
			for (struct op *o = w->in_flight; o && nswept < 256; o = o->next) {
				struct peer *q = o->peer;
				if ((o->kind == OP_REQ || o->kind == OP_BATCH) && q && o->aio &&
				    q->data_pipes == 0 && q->link_lost_ms &&
				    now - q->link_lost_ms < LINK_SWEEP_MS) {
					nng_aio_cancel(o->aio); /* completes later, on an nng thread */
					nswept++;
				}
			}
		}
		/* a close stuck in nng (wan/closer.c) means nng's reaper is stuck: nothing more gets
		 * closed, and a socket whose link dies is not redialed either (nng redials once the
		 * dead pipe is reaped). Sockets that never had a link keep redialing by themselves,
		 * so only those whose link came up and may have died are replaced then: one
		 * leaked socket pair per link lost, not one per RECYCLE_MS */
		uint64_t stuck_ms = dg__wan_closer_busy_ms(w->closer, now);
		bool close_stuck = stuck_ms >= CLOSE_STUCK_MS;
		if (close_stuck && !w->close_stuck_logged) {
			DG_LOGW(WAN, "closing a WAN socket has taken %llu ms (nng 1.5.2 lost an aio); "
				     "failed members' links are replaced only after a link was lost",
				(unsigned long long)stuck_ms);
			w->close_stuck_logged = true;
		} else if (stuck_ms == 0 && w->close_stuck_logged) {
			DG_LOGI(WAN, "WAN sockets close again; failed members' links are replaced as usual");
			w->close_stuck_logged = false;
		}
		if (pushpull_due)
			next_pushpull = now + w->cfg.pushpull_interval_ms;
		/* one random linked member gets the periodic push-pull */
		struct peer *pp_target = NULL;
		if (pushpull_due) {
			size_t linked = 0;
			for (struct peer *p = w->peers; p; p = p->next)
				linked += p->ctl_pipes > 0 && p->m.status != DG_WAN_LEFT;
			if (linked) {
				size_t k = rand64() % linked;
				for (struct peer *p = w->peers; p; p = p->next)
					if (p->ctl_pipes > 0 && p->m.status != DG_WAN_LEFT && k-- == 0)
						pp_target = p;
			}
		}
		for (struct peer *p = w->peers; p; p = p->next) {
			if (p->closing) {
				struct socket_to_close *c = calloc(1, sizeof(*c));
				struct socket_to_close *d = calloc(1, sizeof(*d));
				if (c && d) {
					c->s = p->ctl;
					c->d = p->dialers[0];
					d->s = p->data;
					d->d = p->dialers[1];
					d->tls = p->tls; /* freed after both closes */
					c->next = d;
					d->next = closing;
					closing = c;
					p->open = false;
					p->closing = false;
					p->ctl_pipes = p->data_pipes = 0;
					p->tls = NULL;
					p->ctl = p->data = (nng_socket)NNG_SOCKET_INITIALIZER;
					p->dialers[0] = p->dialers[1] =
						(nng_dialer)NNG_DIALER_INITIALIZER;
				} else {
					free(c);
					free(d);
				}
				continue;
			}
			if (p->m.status == DG_WAN_LEFT)
				continue;
			if (!p->open && !p->opening && nopen < 32) {
				p->opening = true;
				to_open[nopen++] = p;
				continue;
			}
			if (!p->open)
				continue;
			unsigned limit = suspect_limit(p);
			if (p->m.status == DG_WAN_SUSPECT && now - p->suspect_since >= limit &&
			    (p->last_ok_ms == 0 || now - p->last_ok_ms >= limit)) {
				p->m.status = DG_WAN_FAILED;
				w->stats.failures_declared++;
				DG_LOGW(WAN, "member %s failed: suspect for %u ms with no answer, "
					     "direct or indirect%s",
					p->m.name, limit,
					p->ctl_pipes == 0 ? ", and its link is down" : "");
			}
			/* a failed member's links may be TCP connections stuck in retransmission
			 * backoff (a partition: minutes), or a connect whose SYNs are backing off:
			 * replace them now and then, so that when the member comes back a fresh
			 * connection finds it within RECYCLE_MS */
			if (p->m.status == DG_WAN_FAILED && now - p->recycled_ms >= RECYCLE_MS &&
			    (!close_stuck || p->linked_since_open)) {
				p->recycled_ms = now;
				p->closing = true;
				continue;
			}
			if (!p->probing && now >= p->next_probe_ms && nstart < 256) {
				struct op *o = probe_prepare(w, p);
				if (o) {
					start[nstart] = o;
					start_sock[nstart++] = p->ctl;
				}
				unsigned every = p->m.status == DG_WAN_FAILED
						     ? FAILED_PROBE_MS
						     : w->cfg.probe_interval_ms;
				p->next_probe_ms = now + every;
			}
			if ((p->want_pushpull || p == pp_target) && p->ctl_pipes > 0 &&
			    nstart < 256) {
				struct op *o = op_new(w, OP_PUSHPULL, p);
				if (o && encode_pushpull(w, &o->msg) == 0) {
					o->timeout_ms = REQ_TIMEOUT_MS;
					inflight_add(w, o);
					start[nstart] = o;
					start_sock[nstart++] = p->ctl;
					p->want_pushpull = false;
				} else if (o) {
					op_free(o);
				}
			}
		}
		for (struct retry_addr *r = w->retries; r && njoins < 8; r = r->next)
			if (!r->in_flight && now >= r->next_ms && r->next_ms != UINT64_MAX) {
				r->in_flight = true;
				snprintf(joins[njoins++], sizeof(joins[0]), "%s", r->addr);
			}
		struct socket_to_close *tc = w->to_close;
		w->to_close = NULL;
		pthread_mutex_unlock(&w->mu);

		for (int i = 0; i < nopen; i++)
			peer_open(w, to_open[i]);
		for (int i = 0; i < nstart; i++)
			op_start(start[i], start_sock[i]);
		for (int i = 0; i < njoins; i++)
			if (join_start(w, joins[i], NULL, NULL, true) != 0) {
				pthread_mutex_lock(&w->mu);
				for (struct retry_addr *r = w->retries; r; r = r->next)
					if (strcmp(r->addr, joins[i]) == 0) {
						r->in_flight = false;
						r->next_ms = dg_now_ms() + RETRY_JOIN_MS;
					}
				pthread_mutex_unlock(&w->mu);
			}
		for (struct socket_to_close *lists[2] = {closing, tc}, **l = lists; l < lists + 2;
		     l++)
			while (*l) {
				struct socket_to_close *c = *l;
				*l = c->next;
				/* nng_dialer_close() waits for nothing: a socket that waits in the
				 * closer's queue (or forever, behind a stuck close) no longer dials */
				if (nng_dialer_id(c->d) > 0)
					nng_dialer_close(c->d);
				sock_close(w, c->s, c->tls);
				free(c);
			}
	}
	return NULL;
}

/* ---- public ---- */

void dg_wan_set_serve(dg_wan *w, dg_wan_serve_fn fn, void *arg)
{
	pthread_mutex_lock(&w->mu);
	w->serve = fn;
	w->serve_arg = arg;
	pthread_mutex_unlock(&w->mu);
}

int dg_wan_start(const struct dg_wan_config *cfg, dg_wan **out, char *msg, size_t len)
{
	dg_wan *w = calloc(1, sizeof(*w));
	char url[256], accept[160], err[512];
	int rv;
	if (!w)
		return DG_ENOMEM;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->rep = (nng_socket)NNG_SOCKET_INITIALIZER;
	if (!(w->closer = dg__wan_closer_new(NULL))) {
		snprintf(msg, len, "WAN: cannot start the closer thread");
		dg_wan_free(w);
		return DG_ENOMEM;
	}
	w->cfg = *cfg;
	if (!w->cfg.probe_interval_ms)
		w->cfg.probe_interval_ms = 1000;
	if (!w->cfg.pushpull_interval_ms)
		w->cfg.pushpull_interval_ms = 10000;
	w->tls = cfg->tls;
	w->bind = strdup(cfg->bind);
	w->advertise = strdup(cfg->advertise && cfg->advertise[0] ? cfg->advertise : cfg->bind);
	w->node = strdup(cfg->node);
	w->dc = strdup(cfg->dc);
	w->build = strdup(cfg->build ? cfg->build : "");
	w->domain = strdup(cfg->tls->domain ? cfg->tls->domain : "consul");
	if (!w->bind || !w->advertise || !w->node || !w->dc || !w->build || !w->domain) {
		dg_wan_free(w);
		return DG_ENOMEM;
	}
	struct dg_wan_wire_member *s = &w->self;
	if (snprintf(s->name, sizeof(s->name), "%s.%s", w->node, w->dc) >= (int)sizeof(s->name) ||
	    snprintf(s->node, sizeof(s->node), "%s", w->node) >= (int)sizeof(s->node) ||
	    snprintf(s->dc, sizeof(s->dc), "%s", w->dc) >= (int)sizeof(s->dc) ||
	    snprintf(s->addr, sizeof(s->addr), "%s", w->advertise) >= (int)sizeof(s->addr)) {
		snprintf(msg, len, "WAN: node, datacenter or address too long");
		dg_wan_free(w);
		return DG_EINVAL;
	}
	snprintf(s->build, sizeof(s->build), "%s", w->build);
	s->port = cfg->port;
	s->status = DG_WAN_ALIVE;
	/* the wall clock makes a restarted server newer than anything said about its last life */
	s->inc = (uint64_t)(dg_wall_ns() / 1000000000LL);

	snprintf(url, sizeof(url), strchr(cfg->bind, ':') ? "tls+tcp://[%s]:%d" : "tls+tcp://%s:%d",
		 cfg->bind, cfg->port);
	snprintf(accept, sizeof(accept), "server.*.%s", w->domain);
	if ((rv = dg_tls_listener_config(cfg->tls, accept, &w->listen_tls, err, sizeof(err))) != 0) {
		snprintf(msg, len, "WAN TLS: %s", err);
		goto fail;
	}
	if ((rv = nng_rep0_open(&w->rep)) != 0 ||
	    (rv = nng_socket_set_size(w->rep, NNG_OPT_RECVMAXSZ, RECV_MAX)) != 0 ||
	    (rv = nng_listener_create(&w->listener, w->rep, url)) != 0 ||
	    (rv = nng_listener_set_ptr(w->listener, NNG_OPT_TLS_CONFIG, w->listen_tls)) != 0 ||
	    (rv = nng_listener_start(w->listener, 0)) != 0) {
		snprintf(msg, len, "WAN listener on %s: %s", url, nng_strerror(rv));
		goto fail;
	}
	w->rep_open = true;
	for (int i = 0; i < 4; i++)
		if (job_spawn(w) != 0) {
			snprintf(msg, len, "WAN: cannot start receiving");
			goto fail;
		}
	if (pthread_create(&w->timer, NULL, timer_main, w) != 0) {
		snprintf(msg, len, "WAN: cannot start the timer thread");
		goto fail;
	}
	w->timer_started = true;
	DG_LOGI(WAN, "listening on %s as %s (mutual TLS, accepting %s)", url, s->name, accept);
	*out = w;
	return 0;
fail:
	dg_wan_free(w);
	return DG_EIO;
}

void dg_wan_leave(dg_wan *w)
{
	struct op *ops[256];
	nng_socket socks[256];
	int n = 0;
	pthread_mutex_lock(&w->mu);
	w->leaving = true;
	json_t *h = json_pack("{s:s, s:I}", "Name", w->self.name, "Inc",
			      (json_int_t)w->self.inc);
	for (struct peer *p = w->peers; p && n < 256; p = p->next) {
		if (p->m.status == DG_WAN_LEFT || p->m.status == DG_WAN_FAILED || p->ctl_pipes == 0)
			continue;
		struct op *o = op_new(w, OP_LEAVE, p);
		if (!o || dg_wan_msg_encode(&o->msg, DG_WAN_LEAVE, h, NULL, 0) != 0) {
			if (o)
				op_free(o);
			continue;
		}
		o->timeout_ms = LEAVE_WAIT_MS;
		inflight_add(w, o);
		w->leave_pending++;
		ops[n] = o;
		socks[n++] = p->ctl;
	}
	json_decref(h);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < n; i++)
		op_start(ops[i], socks[i]);
	uint64_t until = dg_now_ms() + LEAVE_WAIT_MS + 200;
	pthread_mutex_lock(&w->mu);
	while (w->leave_pending > 0 && dg_now_ms() < until) {
		struct timespec ts = dg_realtime_in_ms(50);
		pthread_cond_timedwait(&w->cond, &w->mu, &ts);
	}
	pthread_mutex_unlock(&w->mu);
	DG_LOGI(WAN, "left the WAN pool (%d of %d servers told)", n - w->leave_pending, n);
}

int dg_wan_force_leave(dg_wan *w, const char *name)
{
	int rv = DG_ENOTFOUND;
	pthread_mutex_lock(&w->mu);
	struct peer *p = peer_find(w, name);
	for (struct peer *q = w->peers; !p && q; q = q->next)
		if (strcmp(q->m.node, name) == 0)
			p = q;
	if (p) {
		mark_left(w, p, p->m.inc);
		rv = 0;
	}
	pthread_mutex_unlock(&w->mu);
	return rv;
}

size_t dg_wan_members(dg_wan *w, struct dg_wan_member **out)
{
	pthread_mutex_lock(&w->mu);
	struct dg_wan_member *v = calloc(w->npeers + 1, sizeof(*v));
	size_t n = 0;
	uint64_t now = dg_now_ms();
	if (v) {
		v[n].m = w->self;
		v[n].m.status = w->leaving ? DG_WAN_LEFT : DG_WAN_ALIVE;
		v[n].self = true;
		v[n].linked = true;
		v[n].rtt_ms = 0;
		v[n++].last_contact_ms = 0;
		for (struct peer *p = w->peers; p; p = p->next) {
			struct dg_wan_member *m = &v[n++];
			m->m = p->m;
			m->linked = p->ctl_pipes > 0 && p->data_pipes > 0;
			m->rtt_ms = p->have_rtt ? p->srtt : -1;
			m->rtt_var_ms = p->have_rtt ? p->rttvar : -1;
			m->last_contact_ms = p->last_ok_ms ? (int64_t)(now - p->last_ok_ms) : -1;
		}
	}
	pthread_mutex_unlock(&w->mu);
	*out = v;
	return n;
}

int dg_wan_request(dg_wan *w, const char *dc, enum dg_wan_type type, json_t *hdr,
		   const void *body, size_t len, unsigned timeout_ms, unsigned flags,
		   dg_wan_reply_fn cb, void *arg)
{
	bool known;
	bool batchable = (flags & DG_WAN_REQ_BATCHABLE) && type == DG_WAN_HTTP;
	struct op *o = op_new_lazy(w, OP_REQ, NULL, batchable);
	if (!o)
		return DG_ENOMEM;
	int rv = dg_wan_msg_encode(&o->msg, type, hdr, body, len);
	if (rv != 0) {
		op_free(o);
		return rv;
	}
	snprintf(o->dc, sizeof(o->dc), "%s", dc);
	o->timeout_ms = timeout_ms ? timeout_ms : REQ_TIMEOUT_MS;
	o->retryable = (flags & (DG_WAN_REQ_RETRYABLE | DG_WAN_REQ_BATCHABLE)) != 0;
	o->batchable = batchable;
	o->cb = cb;
	o->arg = arg;
	struct after a = {0};
	pthread_mutex_lock(&w->mu);
	struct peer *p = w->stopping ? NULL : pick(w, dc, NULL, 0, &known);
	if (!p) {
		pthread_mutex_unlock(&w->mu);
		op_free(o);
		return w->stopping ? DG_ESHUTDOWN : known ? DG_ENOSERVER : DG_ENOPATH;
	}
	o->tried[o->ntried++] = p;
	w->stats.requests++;
	inflight_add(w, o);
	req_route(w, o, p, &a);
	pthread_mutex_unlock(&w->mu);
	after_run(&a);
	return 0;
}

void dg_wan_stats(dg_wan *w, struct dg_wan_stats *out)
{
	pthread_mutex_lock(&w->mu);
	*out = w->stats;
	pthread_mutex_unlock(&w->mu);
	/* these two are counted without the lock, on the send and receive paths */
	out->bytes_sent = __atomic_load_n(&w->stats.bytes_sent, __ATOMIC_RELAXED);
	out->bytes_received = __atomic_load_n(&w->stats.bytes_received, __ATOMIC_RELAXED);
}

void dg_wan_free(dg_wan *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->mu);
	if (w->timer_started)
		pthread_join(w->timer, NULL);
	/* closing the sockets ends every op in flight (NNG_ECLOSED -> DG_ESHUTDOWN to callers).
	 * The closer does it (a join's own socket, whose config join_finish() frees, included),
	 * and the agent's exit waits for it only CLOSE_WAIT_MS: nng 1.5.2 may never return. */
	pthread_mutex_lock(&w->mu);
	if (w->rep_open) {
		sock_close(w, w->rep, w->listen_tls);
		w->listen_tls = NULL;
		w->rep_open = false;
	}
	for (struct peer *p = w->peers; p; p = p->next)
		if (p->open) {
			sock_close(w, p->ctl, NULL);
			sock_close(w, p->data, p->tls);
			p->tls = NULL;
			p->open = false;
		}
	for (struct op *o = w->in_flight; o; o = o->next)
		if (o->kind == OP_JOIN)
			sock_close(w, o->tmp, NULL);
	while (w->to_close) {
		struct socket_to_close *c = w->to_close;
		w->to_close = c->next;
		sock_close(w, c->s, c->tls);
		free(c);
	}
	struct dg__wan_closer *closer = w->closer;
	w->closer = NULL; /* from here on, nothing is left to close but what join_finish() lists */
	pthread_mutex_unlock(&w->mu);
	if (closer && !dg__wan_closer_stop(closer, CLOSE_WAIT_MS)) {
		/* the rest of the pool may still be used by nng's threads: leave it all */
		DG_LOGW(WAN, "closing the WAN sockets did not finish within %d ms (nng 1.5.2 lost an "
			     "aio); leaving them to the process exit",
			CLOSE_WAIT_MS);
		atomic_store(&w->abandoned, true);
		abandoned_pool = w;
		return;
	}
	/* reads still waiting for a batch slot: the batches in flight end them as they close, and
	 * anything left (nothing, while the slots are kept right) ends here */
	struct after a = {0};
	pthread_mutex_lock(&w->mu);
	for (struct peer *p = w->peers; p; p = p->next)
		for (struct op *o; (o = queue_pop(p));) {
			inflight_del(w, o);
			after_end(&a, o, DG_ESHUTDOWN);
		}
	pthread_mutex_unlock(&w->mu);
	after_run(&a);
	/* wait (bounded) for ops to finish: their callbacks free them */
	for (int i = 0; i < 200; i++) {
		pthread_mutex_lock(&w->mu);
		bool empty = w->in_flight == NULL;
		pthread_mutex_unlock(&w->mu);
		if (empty)
			break;
		struct timespec ts = {0, 10 * 1000000L};
		nanosleep(&ts, NULL);
	}
	while (w->peers) {
		struct peer *p = w->peers;
		w->peers = p->next;
		if (p->tls)
			nng_tls_config_free(p->tls);
		free(p);
	}
	while (w->retries) {
		struct retry_addr *r = w->retries;
		w->retries = r->next;
		free(r);
	}
	while (w->to_close) { /* joins that ended as their sockets closed: closed already */
		struct socket_to_close *c = w->to_close;
		w->to_close = c->next;
		if (c->tls)
			nng_tls_config_free(c->tls);
		free(c);
	}
	if (w->listen_tls)
		nng_tls_config_free(w->listen_tls);
	/* the rep socket is closed and the serve function detached (dg_fed_stop() first), so no
	 * job is in use any more */
	while (w->all_jobs) {
		struct dg_wan_job *j = w->all_jobs;
		w->all_jobs = j->next;
		nng_aio_free(j->aio);
		free(j);
	}
	free(w->bind);
	free(w->advertise);
	free(w->node);
	free(w->dc);
	free(w->build);
	free(w->domain);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cond);
	free(w);
}

int dg_wan_ping(const struct dg_tls_policy *tls, const char *addr, const char *dc, char *out,
		size_t outlen, char *msg, size_t len)
{
	nng_socket s;
	nng_dialer d;
	nng_tls_config *cfg = NULL;
	nng_msg *m = NULL;
	char url[256], err[512];
	int rv;
	snprintf(url, sizeof(url), "tls+tcp://%s", addr);
	if (dg_tls_dialer_config(tls, dc, &cfg, err, sizeof(err)) != 0) {
		snprintf(msg, len, "TLS: %s", err);
		return DG_EINVAL;
	}
	if ((rv = nng_req0_open(&s)) != 0) {
		nng_tls_config_free(cfg);
		snprintf(msg, len, "%s", nng_strerror(rv));
		return DG_EIO;
	}
	nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 5000);
	nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 5000);
	if ((rv = nng_dialer_create(&d, s, url)) != 0 ||
	    (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg)) != 0 ||
	    (rv = nng_dialer_start(d, 0)) != 0 || (rv = nng_msg_alloc(&m, 0)) != 0 ||
	    (rv = nng_msg_append(m, "ping", 4)) != 0 || (rv = nng_sendmsg(s, m, 0)) != 0) {
		if (m && rv != 0)
			nng_msg_free(m);
		snprintf(msg, len, "dial %s: %s", url, nng_strerror(rv));
		nng_close(s);
		nng_tls_config_free(cfg);
		return DG_EIO;
	}
	if ((rv = nng_recvmsg(s, &m, 0)) != 0) {
		snprintf(msg, len,
			 "no answer from %s: %s (see the logs of both sides for the TLS reason)",
			 url, nng_strerror(rv));
		nng_close(s);
		nng_tls_config_free(cfg);
		return DG_EIO;
	}
	snprintf(out, outlen, "%.*s", (int)nng_msg_len(m), (const char *)nng_msg_body(m));
	nng_msg_free(m);
	nng_close(s);
	nng_tls_config_free(cfg);
	return 0;
}
