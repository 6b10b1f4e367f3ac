/* lan: one datacenter's server runtime: the loop thread that owns raft (libraft, uv backend) and
 * applies every write to the catalog, plus the agent's local work that runs on the same loop:
 * its own node registration with serfHealth, the health checks it runs (TCP, HTTP, TTL), the
 * DeregisterCriticalServiceAfter reaper and session TTLs.
 *
 * Threads: dg_lan_* functions may be called from any thread unless marked otherwise; they hand
 * work to the loop with uv_async_send. Callbacks (dg_lan_write_cb, the change hook) run on the
 * loop thread with no lock held. */
#ifndef DG_LAN_H
#define DG_LAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "catalog/catalog.h"

typedef struct dg_lan dg_lan;

/* Result of a join, a read barrier or a raft change, on the loop thread: err 0, or a dg error
 * with a text (msg may be NULL). */
typedef void (*dg_lan_done_fn)(void *arg, int err, const char *msg);

struct dg_tls_policy;

struct dg_lan_config {
	const char *node;      /* node name */
	const char *node_id;   /* UUID; generated when NULL */
	const char *dc;        /* datacenter */
	const char *bind_addr; /* address raft listens on (and the node's address) */
	const char *advertise; /* address published for this node; bind_addr when NULL */
	const char *data_dir;  /* raft log and snapshots; NULL with dev */
	int server_port;       /* raft port, 8300 */
	bool dev;              /* in-memory style: a temporary data dir removed at exit */
	bool server;           /* registers the "consul" service */
	int64_t check_deregister_min_ns; /* floor of DeregisterCriticalServiceAfter, 1m */
	unsigned snapshot_threshold;     /* raft entries between snapshots */
	const char *version;             /* for the consul service's Meta */

	/* LAN gossip and RPC on serf_lan_port (8301, udp and tcp) */
	int serf_lan_port;
	int serf_wan_port; /* a server's WAN port, told in gossip (wan_join_port); 0: no WAN pool */
	/* With a certificate, key and CA: requests for the servers (writes, reads, a client agent's
	 * HTTP requests) go over mutual TLS to a server's rpc_tls_port, told in gossip; a server
	 * with verify_incoming refuses them on plain 8301. Gossip push-pulls stay on 8301 (sealed
	 * by encrypt_key). NULL: no TLS. Kept by the caller for the agent's life. */
	const struct dg_tls_policy *tls;
	int rpc_tls_port; /* servers with tls: the TLS listener's port (docs/cluster.md) */
	int bootstrap_expect;     /* servers to wait for before bootstrapping raft; 0: never */
	const char *const *join;  /* -join: tried once at start; NULL-terminated, may be NULL */
	const char *const *retry_join; /* -retry-join: tried until one answers */
	const uint8_t *encrypt_key;    /* 32 bytes (copied), or NULL for plaintext gossip */
	uint64_t reconnect_timeout_ms; /* failed members (and servers) are reaped after: 72 h */
	uint32_t gossip_probe_interval_ms; /* 0: gossip's default (1 s) */
	uint32_t gossip_probe_timeout_ms;  /* 0: gossip's default (500 ms) */
	uint32_t gossip_suspicion_mult;    /* 0: gossip's default (4) */
};

/* Starts the loop thread, raft and the agent. *out is owned by the caller until dg_lan_free().
 * Returns 0 or a negative dg error; msg (len bytes) says why. */
int dg_lan_start(const struct dg_lan_config *cfg, dg_catalog *cat, dg_lan **out, char *msg,
		 size_t len);
/* Stops the loop and raft, waits for the thread, frees everything. NULL is fine. */
void dg_lan_free(dg_lan *l);

bool dg_lan_is_leader(dg_lan *l);
/* A leader is known (this server or another): X-Consul-KnownLeader. */
bool dg_lan_leader_known(dg_lan *l);
/* The leader's raft address ("ip:port") into buf, "" when none is known. */
void dg_lan_leader(dg_lan *l, char *buf, size_t len);
/* Milliseconds since the leader was last heard from (0 on the leader). */
uint64_t dg_lan_last_contact_ms(dg_lan *l);
const char *dg_lan_node(dg_lan *l);
const char *dg_lan_node_id(dg_lan *l);
const char *dg_lan_address(dg_lan *l);
const struct dg_lan_config *dg_lan_config(dg_lan *l);

/* Result of a write, delivered once on the loop thread. status is 0 or a negative dg error
 * (DG_ENOLEADER, DG_ESHUTDOWN, ...). result is the command's result object (see
 * dg_cat_apply) or NULL; the callee must json_decref it. */
typedef void (*dg_lan_write_cb)(void *arg, int status, json_t *result);

/* Proposes cmd (a JSON object; ownership passes to dg_lan_write) through raft. "Now" is filled
 * in here. Returns 0 (cb will be called exactly once) or an error (cb is never called). */
int dg_lan_write(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg);
/* The same, and on a follower cb waits until this server has applied the write itself: for the
 * agent endpoints, whose reads are of this server's own copy. */
int dg_lan_write_then_read(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg);

/* Called on the loop thread, without locks, after each apply that changed something. */
typedef void (*dg_lan_change_hook)(void *arg, const struct dg_cat_change *v, size_t n);
void dg_lan_set_change_hook(dg_lan *l, dg_lan_change_hook hook, void *arg);

/* Session TTL bookkeeping on the leader: renew resets the timer. 0 or DG_ENOTFOUND. */
int dg_lan_session_renew(dg_lan *l, const char *id);


/* Counters for /v1/agent/metrics. */
struct dg_lan_stats {
	uint64_t applied;
	uint64_t apply_errors;
	uint64_t writes_rejected;
	uint64_t checks_running;
	uint64_t check_runs;
	uint64_t snapshots;
	uint64_t forward_batches; /* DG_RPC_WRITE_BATCH requests sent to the leader */
	uint64_t forward_batched; /* writes they carried */
};
void dg_lan_stats(dg_lan *l, struct dg_lan_stats *out);


/* ---- membership (LAN gossip) ---- */

/* GET /v1/agent/members: the members in Consul's Member shape; a new array. */
json_t *dg_lan_members(dg_lan *l);
/* Joins the LAN pool through addr ("host" or "host:port"). 0 (cb called once) or an error. */
int dg_lan_join(dg_lan *l, const char *addr, dg_lan_done_fn cb, void *arg);
/* force-leave: a failed member becomes left. DG_ENOTFOUND, DG_EINVAL (not failed: ignored as
 * Consul does), or 0. Runs on the loop; cb gets the outcome. */
int dg_lan_force_leave(dg_lan *l, const char *name, dg_lan_done_fn cb, void *arg);
/* Graceful leave: announces it and waits (bounded) until others heard it. Blocks the caller
 * (the main thread at shutdown). */
void dg_lan_leave(dg_lan *l, unsigned timeout_ms);

/* ---- 8301 between a client agent and the servers ---- */

/* An incoming request of a client agent (its HTTP request for the server's HTTP layer). */
struct dg_lan_rpc_req;
typedef void (*dg_lan_http_fn)(void *arg, struct dg_lan_rpc_req *req, const uint8_t *buf,
			       size_t len);
/* Servers: who serves client agents' HTTP requests (federation). Called on nng's threads; must
 * answer each request once with dg_lan_rpc_answer (any thread). NULL stops it (they get an empty
 * answer). */
void dg_lan_set_http_handler(dg_lan *l, dg_lan_http_fn fn, void *arg);
void dg_lan_rpc_answer(struct dg_lan_rpc_req *req, const void *buf, size_t len);
/* Client agents: sends an HTTP request (buf, as the handler receives it) to an alive server of
 * this DC, taken in turn. cb runs once on an nng thread with the answer, or with DG_ETIMEDOUT,
 * DG_EIO, DG_ESHUTDOWN. DG_ENOSERVER (no server known) and others are returned at once, cb not
 * called. */
typedef void (*dg_lan_rpc_fn)(void *arg, int err, const uint8_t *buf, size_t len);
int dg_lan_http_call(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
		     dg_lan_rpc_fn cb, void *arg);
/* Servers: the same to the leader (a follower's default-mode read or session renew). While no
 * leader is reachable (none known, or its link went, also with the request out) the request is
 * held and sent again, for up to 7 s; then cb gets DG_ENOLEADER. cb may run on the loop thread. */
int dg_lan_http_call_leader(dg_lan *l, const void *buf, size_t len, unsigned timeout_ms,
			    dg_lan_rpc_fn cb, void *arg);

/* Servers: confirms that this server still leads before a ?consistent read (DESIGN.md): a raft
 * barrier entry, which only a leader in contact with a quorum gets committed; reads that ask
 * while one is in flight share the next. cb(arg, 0 | DG_ENOLEADER | DG_ESHUTDOWN, NULL) runs on
 * the loop thread. */
int dg_lan_verify_leader(dg_lan *l, dg_lan_done_fn cb, void *arg);

/* Closes the 8301 (and 8303) sockets at shutdown, before the WAN pool is closed: with nng 1.5.2
 * a WAN close can leave nng's reaper stuck on a lost aio (wan/closer.c), and closing a socket
 * with a listener after that never returns (the agent never exited: stress_wan_close.py). From
 * here the servers' requests fail with DG_ESHUTDOWN; gossip's probes go on until
 * dg_lan_free. Any thread, once the leave (if any) is over. Waits a bounded time (lan/rpc.c):
 * false when the closes did not finish, a reaper stuck before shutdown; nng's threads may then
 * still use the LAN's state, so the caller must not free anything (main exits at once). */
bool dg_lan_stop_rpc(dg_lan *l);

/* ---- raft ---- */

/* {"Servers":[{"ID","Node","Address","Leader","Voter","ProtocolVersion"}],"Index":n}; new. */
json_t *dg_lan_raft_configuration(dg_lan *l);
/* Removes a server from raft by ID (node ID) or address (ip:port), through the leader. */
int dg_lan_remove_peer(dg_lan *l, const char *id, const char *address, dg_lan_done_fn cb,
		       void *arg);

/* Asks the agent to leave: stops serving and makes dg_lan_wait_stop() return. */
void dg_lan_request_stop(dg_lan *l);

#endif
