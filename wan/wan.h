/* wan: the links between datacenters on port 8302. Every server listens with mutual TLS (the
 * OpenSSL engine; only server certificates of the federation's CA get in), keeps a link to every
 * other server it knows, and runs the WAN pool over those links:
 *   - membership: names "<node>.<dc>", statuses alive, suspect, failed, left; joining one server
 *     brings in every server it knows (push-pull of member lists, on join and periodically);
 *   - failure detection built for the WAN: probes on every link, timeouts from each link's
 *     measured RTT and its variance, suspicion before failure, indirect probes through other
 *     servers, refutation by incarnation;
 *   - requests to a datacenter: sent to its nearest reachable server (used by federation/).
 *
 * Threads: the pool's state is guarded by one mutex; nng's callbacks and one timer thread
 * drive it; every function here may be called from any thread and none blocks for long. */
#ifndef DG_WAN_H
#define DG_WAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"
#include "wan/msg.h"

typedef struct dg_wan dg_wan;
struct dg_wan_job;

struct dg_wan_config {
	const char *bind;      /* address to listen on */
	const char *advertise; /* address other servers dial (default: bind) */
	int port;	       /* 8302 */
	const char *node;
	const char *dc;
	const char *build;	       /* version, for members' Tags */
	int server_port;	       /* 8300, for members' Tags */
	const struct dg_tls_policy *tls; /* must carry a certificate, key and CA */
	/* Probe timing (tests lower them). 0 means the default. */
	unsigned probe_interval_ms; /* 1000 */
	unsigned pushpull_interval_ms; /* 10000 */
};

/* Serves forwarded HTTP requests (DG_WAN_HTTP messages): fn must call dg_wan_reply() once per
 * job, from any thread. Until this is set, such requests get an ERROR. */
typedef void (*dg_wan_serve_fn)(void *arg, struct dg_wan_job *job, const struct dg_wan_msg *m);
void dg_wan_set_serve(dg_wan *w, dg_wan_serve_fn fn, void *arg);
/* Answers a served request with a message (type, header, body); the job is gone afterwards. */
void dg_wan_reply(struct dg_wan_job *job, enum dg_wan_type type, json_t *hdr, const void *body,
		  size_t len);

/* Starts listening and the pool's timers. *out is the caller's until dg_wan_free(). */
int dg_wan_start(const struct dg_wan_config *cfg, dg_wan **out, char *msg, size_t len);
/* Stops: requests in flight get DG_ESHUTDOWN, served jobs not yet answered are dropped. */
void dg_wan_free(dg_wan *w);

/* Joins the pool through the server at addr ("host" or "host:port", port 8302 by default):
 * dials it, swaps member lists, and calls cb(arg, err, msg) once, on another thread. */
typedef void (*dg_wan_join_fn)(void *arg, int err, const char *msg);
int dg_wan_join(dg_wan *w, const char *addr, dg_wan_join_fn cb, void *arg);
/* Keeps trying to join addr every 5 s until it answers once (-retry-join-wan); never fails. */
void dg_wan_retry_join(dg_wan *w, const char *addr);
/* Tells every alive member this server is leaving (bounded: at most ~2 s), then marks it left. */
void dg_wan_leave(dg_wan *w);
/* Marks a member left ("<node>.<dc>", or a node name: first match). 0 or DG_ENOTFOUND. */
int dg_wan_force_leave(dg_wan *w, const char *name);

enum dg_wan_status {
	DG_WAN_ALIVE = 1,
	DG_WAN_LEAVING = 2,
	DG_WAN_LEFT = 3,
	DG_WAN_FAILED = 4,
	DG_WAN_SUSPECT = 5, /* shown to clients as alive */
};

/* A member as this server sees it (a copy). */
struct dg_wan_member {
	struct dg_wan_wire_member m; /* name, node, dc, addr, port, status, inc, build */
	bool self;
	bool linked;	       /* a TLS link to it is up right now */
	double rtt_ms;	       /* smoothed RTT of probes, < 0 before the first answer */
	double rtt_var_ms;     /* its mean deviation */
	int64_t last_contact_ms; /* ms since its last answer, -1 never */
};
/* A snapshot of every member, self included (caller frees *out). Returns the count. */
size_t dg_wan_members(dg_wan *w, struct dg_wan_member **out);

/* Flags of dg_wan_request. */
enum {
	/* may be sent again to another server of the DC when its server fails (reads) */
	DG_WAN_REQ_RETRYABLE = 1,
	/* an HTTP request that is quick and safe to ask twice (a non-blocking read): it may share
	 * a BATCH message with others to the same server, and is asked again alone when its answer
	 * does not fit in the batch's reply. Implies DG_WAN_REQ_RETRYABLE. */
	DG_WAN_REQ_BATCHABLE = 2,
};

/* Sends a request message to a server of datacenter dc: the nearest (by smoothed RTT) alive
 * one that has a link up, then, only for retryable requests, the next one if the first fails.
 * Batchable requests to one server are sent as they come while fewer than a few batches are
 * in flight to it; those that come meanwhile wait and leave together in the next BATCH when one
 * comes back (no timer: with one request at a time nothing waits).
 * cb(arg, err, reply) once, on an nng thread: err 0 with the decoded reply (valid during the
 * call), DG_ETIMEDOUT, DG_EIO, DG_ESHUTDOWN. Returns 0 when cb will be called, or at once
 * DG_ENOPATH (no server of dc known) or DG_ENOSERVER (known, none reachable now). */
typedef void (*dg_wan_reply_fn)(void *arg, int err, const struct dg_wan_msg *reply);
int dg_wan_request(dg_wan *w, const char *dc, enum dg_wan_type type, json_t *hdr,
		   const void *body, size_t len, unsigned timeout_ms, unsigned flags,
		   dg_wan_reply_fn cb, void *arg);

struct dg_wan_stats {
	uint64_t requests, request_errors, in_flight;
	uint64_t probes, probe_timeouts, suspicions, refutations, failures_declared;
	uint64_t bad_messages; /* closed links: undecodable or misattributed messages */
	uint64_t bytes_sent, bytes_received; /* WAN message bytes (before TLS), both directions */
	/* batches of forwarded reads: BATCH messages sent, requests that travelled in them,
	 * answers that came back "ask again alone" (too large for their batch's reply), and
	 * BATCH messages of other servers answered here */
	uint64_t batches, batched, batch_resends, batches_served;
};
void dg_wan_stats(dg_wan *w, struct dg_wan_stats *out);

/* Asks a server at addr ("host:port") of datacenter dc who it is, over mutual TLS, and writes
 * its JSON answer into out. For `dcgate wan ping` and tests. 0 or an error with msg. */
int dg_wan_ping(const struct dg_tls_policy *tls, const char *addr, const char *dc, char *out,
		size_t outlen, char *msg, size_t len);

#endif
