/* Internal state of the lan runtime, shared by lan/ files only. Everything here belongs to the
 * loop thread except the fields under `mu`. */
#ifndef DG_LAN_INTERNAL_H
#define DG_LAN_INTERNAL_H

#include <limits.h>
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <semaphore.h>
#include <uv.h>

#include "lan/gossip.h"
#include "lan/lan.h"

/* The first byte of a request on 8301/tcp. Gossip stream packets start with DG_GOSSIP_MAGIC or
 * DG_GOSSIP_SEALED; the servers' own requests with one of these. */
enum {
	DG_RPC_WRITE = 0xC1,	   /* a command for the leader's raft: JSON text follows */
	DG_RPC_WRITE_REPLY = 0xC2, /* {"Status":0|dg error,"Result":{...}} */
	DG_RPC_RAFT = 0xC3,	   /* a raft membership change for the leader: JSON text */
	DG_RPC_WRITE_RELAY = 0xC5, /* a client agent's write: as 0xC1, passed on to the leader */
	DG_RPC_HTTP = 0xC6,	   /* a client agent's HTTP request (wan/msg.h HTTP) for a server */
	DG_RPC_WRITE_BATCH = 0xC7, /* a follower's writes of one loop turn for the leader: a JSON
				    * array of commands; answered {"Status":0,"Results":[{"Status",
				    * "Result","Index"}..]}, one for each, in order */
};
/* Bytes of commands a follower gathers into one DG_RPC_WRITE_BATCH at most (raft.c fwd_add) */
#define DG_RPC_BATCH_BYTES (1024 * 1024)
/* One request or answer on 8301: a push-pull of the most members with room for framing. */
#define DG_RPC_MAX_MSG (DG_GOSSIP_STREAM_MAX + 64 * 1024)
/* How long a forwarded write may take, and how long a write waits for a leader to be known
 * (Consul's rpc_hold_timeout) before it fails with "No cluster leader". */
#define DG_RPC_WRITE_TIMEOUT_MS 7000
#define DG_LEADER_HOLD_MS	7000

typedef void (*dg_rpc_done_fn)(void *arg, int err, const uint8_t *buf, size_t len);
struct rpc_in;
struct dg__rpc {
	pthread_mutex_t mu;  /* guards peers, closed and the HTTP handler */
	dg_lan_http_fn http_fn;
	void *http_arg;
	unsigned http_busy;  /* handler calls running */
	pthread_cond_t idle; /* signalled when http_busy or calls_out drops to 0 */
	struct dg_map peers; /* "ip:port" -> struct rpc_peer* */
	size_t calls_out;    /* calls whose callback has not finished; idle is signalled at 0 */
	struct held_call *held; /* a follower's calls for the leader, waiting for one */
	char last_leader[96];	/* the leader's 8301 address at the last tick (loop thread) */
	bool closed, inited, rep_open;
	bool sockets_closed; /* dg_lan_stop_rpc or dg__rpc_close closed them */
	bool close_stuck;    /* their close did not finish in time (sockets_close) */
	nng_socket rep;
	/* TLS (docs/cluster.md "TLS for the servers' requests"): a server's second listener on
	 * the same rep socket, and the config every agent dials servers' TLS addresses with */
	nng_listener tls_listener;
	bool tls_listening;
	bool tls_required; /* verify_incoming: the servers' requests only over TLS */
	nng_tls_config *listen_tls, *dial_tls;
	uint64_t plain_refused; /* server requests refused on plain 8301 */
	struct rpc_in *in;
	size_t nin;
};

/* Work handed to the loop thread: fn runs there, or with cancelled true when the loop stops
 * first (then it only frees). */
struct loop_task {
	void (*fn)(dg_lan *l, void *arg, bool cancelled);
	void *arg;
	struct loop_task *next;
};

/* A server of this DC as gossip sees it (for raft). */
struct dg__server {
	char name[DG_GOSSIP_NAME_MAX + 1];
	char id[40];	     /* node ID (UUID) */
	uint64_t raft_id;    /* from the node ID */
	char raft_addr[96];  /* ip:8300 */
	char rpc_addr[96];   /* ip:8301 */
	int status;	     /* enum dg_gossip_status */
	int expect;	     /* its -bootstrap-expect, 0 when none */
	bool raft_in_use;    /* its raft log has more than the bootstrap configuration */
};

struct write_req {
	struct raft_apply apply;
	dg_lan *lan;
	json_t *cmd;
	dg_lan_write_cb cb;
	void *arg;
	struct write_req *next;
	bool forwarded;		 /* came from another server: never forwarded again */
	struct rpc_in *reply_to; /* came over 8301: answered there (forwarded, or relayed) */
	uint64_t hold_until_ms;	 /* held while no leader is known, until then */
	int status;		 /* a forwarded write's outcome, for the loop */
	json_t *result;
	uint64_t applied_index;	 /* the raft index the leader applied it at */
	bool wait_local;	 /* forwarded: answer once applied here too */
	struct write_fanin *fanin; /* came in a DG_RPC_WRITE_BATCH: answered in its slot */
	size_t fanin_slot;
};

struct dg__agent;

struct dg_lan {
	struct dg_lan_config cfg; /* strings owned (strdup'd) */
	char *node_id;
	char *address;
	dg_catalog *cat;
	pthread_t thread;
	sem_t started;
	sem_t left; /* posted once a graceful leave is over */
	int start_rv;
	char start_msg[256];

	uv_loop_t loop;
	uv_async_t wake;
	uv_timer_t tick;
	struct raft raft;
	struct raft_io io;
	struct raft_uv_transport transport;
	struct raft_fsm fsm;
	bool raft_started;
	char dir[PATH_MAX];
	bool tmpdir;
	json_t *unclaimed_result; /* last FSM result not taken by an apply callback */
	struct dg_cat_frozen *frozen; /* the state of the raft snapshot being written (raft.c) */
	size_t applies_out;	     /* raft_apply calls not yet called back (loop thread) */
	uint64_t applies_progress_ms; /* when one last started from none or ended */
	bool applies_stall_told;      /* the stall warning was logged since */
	bool was_leader;

	pthread_mutex_t mu; /* guards everything below */
	struct write_req *q_head, *q_tail;
	bool stopping;
	char leader[128];
	bool leader_known;
	uint64_t last_contact_ms;
	struct dg_lan_stats stats;

	bool is_leader; /* atomic */
	dg_lan_change_hook hook;
	void *hook_arg;
	struct dg__agent *agent;

	/* loop thread */
	struct dg__rpc rpc;
	struct dg__members *members;
	struct dg__client *client; /* a client agent's local state and anti-entropy */
	struct write_req *held, *held_tail; /* writes waiting for a leader */
#define BATCH_MAX 256
	struct write_req *batch[BATCH_MAX]; /* the leader's writes of this loop turn (raft.c) */
	size_t nbatch;
	/* a follower's writes for the leader gathered in this loop turn, each encoded (raft.c) */
	struct write_req *fwd[BATCH_MAX];
	char *fwd_text[BATCH_MAX];
	size_t nfwd, fwd_bytes;
	uv_check_t batch_check;
	char leader_rpc[96];		    /* the leader's 8301 address, "" unknown */
	bool leader_known_loop;
	bool bootstrap_pending; /* raft not started: waiting for bootstrap_expect servers */
	struct raft_change change;
	bool change_busy;
	uint64_t next_conf_ms;
	uint64_t raft_id;

	uint8_t encrypt_key[DG_GOSSIP_KEY_LEN];
	struct read_waiter *read_waiters; /* reads waiting to have applied up to an index */
	/* ?consistent reads on the leader: those waiting for the barrier in flight, and those
	 * that came after it was proposed (they need a barrier of their own) */
	uint64_t next_restore_check_ms; /* the leader's check for an abandoned restore */
	struct verify_waiter *verify_now, *verify_next;
	bool verify_busy;
	struct raft_barrier verify_req;

	/* under mu */
	bool loop_running; /* tasks may be posted */
	struct loop_task *tasks, *tasks_tail;
	json_t *members_json; /* GET /v1/agent/members */
	json_t *raft_json;    /* GET /v1/operator/raft/configuration */
	char **server_rpc;    /* 8301 addresses of this DC's alive servers (NULL-terminated) */
	char leader_rpc_pub[96]; /* the leader's 8301 address, also when it is this server */
	unsigned server_turn; /* round robin over them */
};

/* agent.c, all on the loop thread */
int dg__agent_new(dg_lan *l);
void dg__agent_free(dg_lan *l);
void dg__agent_on_leader(dg_lan *l);
void dg__agent_on_changes(dg_lan *l, const struct dg_cat_change *v, size_t n);
void dg__agent_tick(dg_lan *l);
void dg__agent_before_write(dg_lan *l, json_t *cmd);
/* Proposes a command from the loop thread itself, result ignored. */
void dg__lan_write_local(dg_lan *l, json_t *cmd);
/* Proposes a command from the loop thread with a callback (run on the loop thread). */
void dg__lan_write_loop(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg);

/* raft.c: hands work to the loop thread from any thread. 0, or DG_ESHUTDOWN (fn not called). */
int dg__lan_post(dg_lan *l, void (*fn)(dg_lan *l, void *arg, bool cancelled), void *arg);
/* An incoming 8301 request, for the loop. 0 or DG_ESHUTDOWN. */
int dg__lan_post_rpc(dg_lan *l, struct rpc_in *in);
uint64_t dg__raft_id_of(const char *node_id);

/* rpc.c */
int dg__rpc_listen(dg_lan *l, const char *bind, int port, char *msg, size_t len);
void dg__rpc_close(dg_lan *l);
void dg__rpc_tick(dg_lan *l, uint64_t now);
/* Sends buf to addr ("ip:port"); cb runs once on an nng thread, with the answer or an error
 * (DG_ETIMEDOUT, DG_EIO, DG_ESHUTDOWN), unless this returns an error. */
int dg__rpc_call(dg_lan *l, const char *addr, const void *buf, size_t len, unsigned timeout_ms,
		 dg_rpc_done_fn cb, void *arg);
const uint8_t *dg__rpc_request(struct rpc_in *in, size_t *len);
const char *dg__rpc_peer_addr(struct rpc_in *in, char *buf, size_t len);
/* Answers an incoming request (any thread), once. */
void dg__rpc_reply(struct rpc_in *in, const void *buf, size_t len);
/* A request of the servers' own (DG_RPC_WRITE, _RELAY, _RAFT): kind, then j as compact JSON;
 * as dg__rpc_call. j stays the caller's. */
int dg__rpc_call_json(dg_lan *l, const char *addr, uint8_t kind, json_t *j, unsigned timeout_ms,
		      dg_rpc_done_fn cb, void *arg);
/* The same for the leader (a forwarded write): aborted when another leader is known while it
 * is out (lan/rpc.c held_move_on). */
int dg__rpc_call_json_leader(dg_lan *l, const char *addr, uint8_t kind, json_t *j,
			     unsigned timeout_ms, dg_rpc_done_fn cb, void *arg);
/* The same with the request's bytes as they are (first byte the kind). */
int dg__rpc_call_leader(dg_lan *l, const char *addr, const void *buf, size_t len,
			unsigned timeout_ms, dg_rpc_done_fn cb, void *arg);
/* Answers with DG_RPC_WRITE_REPLY and ans (consumed; NULL: an empty answer). */
void dg__rpc_reply_json(struct rpc_in *in, json_t *ans);
/* The JSON of a DG_RPC_WRITE_REPLY answer (the caller's to decref; NULL when it is not one) and
 * its "Status" in *status (DG_EIO when missing). */
json_t *dg__rpc_answer_json(const uint8_t *buf, size_t len, int *status);

/* mkdir -p (mode 0700). 0, DG_EINVAL (too long) or DG_EIO (errno says why). */
int dg__make_dir(const char *path);

/* client.c, on the loop thread */
int dg__client_start(dg_lan *l, char *msg, size_t len);
void dg__client_apply(dg_lan *l, struct write_req *w);
void dg__client_tick(dg_lan *l, uint64_t now);
void dg__client_resync(dg_lan *l);
void dg__client_stop(dg_lan *l);
void dg__client_free(dg_lan *l);
void dg__client_stats(dg_lan *l, uint64_t *syncs, uint64_t *errors);

/* members.c, on the loop thread */
int dg__members_start(dg_lan *l, char *msg, size_t len);
void dg__members_stop(dg_lan *l);
void dg__members_tick(dg_lan *l, uint64_t now);
/* A gossip stream packet that came on 8301/tcp. */
void dg__members_stream(dg_lan *l, struct rpc_in *in, const uint8_t *buf, size_t len);
/* Servers of this DC that gossip knows (alive, failed or left), at most max. */
size_t dg__members_servers(dg_lan *l, struct dg__server *out, size_t max);
/* The 8301 address of the server whose raft address is raft_addr; false when not known. */
bool dg__members_rpc_of(dg_lan *l, const char *raft_addr, char *out, size_t len);
/* The node name of the server with this raft address, or NULL. */
const char *dg__members_name_of(dg_lan *l, const char *raft_addr);
/* The leader brings the catalog in line with gossip (serfHealth, left and reaped nodes). */
void dg__members_reconcile(dg_lan *l, bool all);
/* The "raft_state" tag others decide to bootstrap by: "bootstrapped" (only the configuration
 * entry), then "in-use" (a cluster that has elected a leader and written to its log). */
void dg__members_set_raft_state(dg_lan *l, bool in_use);
bool dg__members_server_reaped(dg_lan *l, const char *raft_addr);
void dg__members_server_forget(dg_lan *l, const char *raft_addr);
void dg__members_free(dg_lan *l);

#endif
