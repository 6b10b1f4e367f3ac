/* federation: the query plane between datacenters. A request for another DC is sent over the WAN
 * pool (wan/) to the nearest reachable server of that DC, which runs it through its own HTTP
 * layer in process (federation/exec.c drives the calls of struct dg_fed_local_ops) and sends
 * back status, headers and body as they are; the WAN pool's view gives the datacenter list and
 * the WAN members.
 *
 * Threads: every function may be called from any thread (the HTTP thread in practice); callbacks
 * run on nng's or the executor's threads and must not block. */
#ifndef DG_FEDERATION_H
#define DG_FEDERATION_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/common.h"
#include "lan/lan.h"
#include "wan/wan.h"

typedef struct dg_fed dg_fed;
struct dg_fed_response;

/* A request to run in process, as another DC forwarded it. Valid during call_new only. */
struct dg_fed_local_request {
	const char *method;	/* "GET", "HEAD", "PUT", ... */
	const char *path_query; /* "/v1/kv/a?dc=east&index=12", percent-encoded as sent */
	json_t *headers;	/* object of request headers (strings), or NULL */
	const void *body;
	size_t len;
};

/* How federation runs a request forwarded to us through this agent's HTTP routing and handlers
 * without a socket: the HTTP layer provides it (dg_http_local_ops, http.h), cmd/main.c wires it.
 * A call is run by one runner thread (the executor's); it may suspend (a blocking query, a raft
 * write, a forward to yet another DC) and says when it may run again through ready. */
struct dg_fed_local_ops {
	/* A new call for req on srv (req is copied). ready(arg) is called on any thread, each
	 * time the call has suspended and may now run again; it must only hand the call to its
	 * runner and must not block. Any thread. Returns the call (the runner's until
	 * call_release), or NULL with *err DG_ENOMEM. */
	void *(*call_new)(void *srv, const struct dg_fed_local_request *req,
			  void (*ready)(void *arg), void *arg, int *err);
	/* Runs the call on the runner's thread until it answers (1, *out filled: the runner's
	 * to fini), suspends (0: ready follows, then run it again) or fails without an answer
	 * (-1, *why says why, a static text). Not again after 1 or -1. */
	int (*call_run)(void *call, struct dg_fed_response *out, const char **why);
	/* The runner lets go of a call, in any state but running: it is freed now, or by
	 * whatever holds it suspended when that lets go. ready is not called once this returns.
	 * Runner's thread. */
	void (*call_release)(void *call);
};

struct dg_fed_config {
	dg_wan *wan;    /* the WAN pool (not owned); NULL: this agent has no WAN */
	const char *dc; /* the local datacenter */
	/* How requests other DCs forward to us are run (not owned): srv is this agent's HTTP
	 * server, valid until dg_fed_stop() has returned. */
	const struct dg_fed_local_ops *local;
	void *local_srv;
	/* A server's LAN runtime (not owned): its DC's client agents send their catalog requests
	 * here to be run like WAN ones. NULL: none (a client agent, or no LAN). */
	dg_lan *lan;
};

int dg_fed_start(const struct dg_fed_config *cfg, dg_fed **out, char *msg, size_t len);
/* Shutdown, in this order: dg_fed_stop() answers every request other DCs forwarded to us and
 * serves no more; dg_wan_free() then ends every forward of ours in flight (their callbacks run,
 * with DG_ESHUTDOWN); dg_fed_free() last. NULL is fine for both. */
void dg_fed_stop(dg_fed *f);
void dg_fed_free(dg_fed *f);

/* A response as the remote DC gave it. */
struct dg_fed_response {
	int status;
	json_t *headers; /* object: header name -> string value (no Content-Length, Connection,
			  * Date or Transfer-Encoding) */
	char *body;	 /* malloc'd, may be NULL when len is 0 */
	size_t len;
};
void dg_fed_response_fini(struct dg_fed_response *r);

/* Called once per forward, on an nng or executor thread. err: 0 with resp filled (the callee
 * takes resp's contents, e.g. by moving them out, and the caller finis what is left after the
 * callback returns), DG_ENOPATH (no such DC: 500 "No path to datacenter"), DG_ENOSERVER
 * (the DC is known but no server of it is reachable now: 500 "Remote DC has no server currently
 * reachable"), DG_ETIMEDOUT, DG_EIO, DG_ESHUTDOWN. */
typedef void (*dg_fed_done_fn)(void *arg, int err, struct dg_fed_response *resp);

struct dg_fed_request {
	const char *dc;
	const char *method;	/* "GET", "PUT", ... */
	const char *path_query; /* "/v1/health/service/web?dc=east&passing=1", already encoded */
	json_t *headers;	/* object of request headers to pass on (X-Consul-Token,
				 * Content-Type, Cache-Control), or NULL */
	const void *body;
	size_t len;
	unsigned timeout_ms; /* how long the remote may take: a blocking query's wait plus its
			      * jitter; 0 for the default (10 s) */
	bool to_leader;	     /* dg_fed_forward_lan: to the leader, not any server */
};
/* Forwards a request. Returns 0 when cb will be called, or an error (DG_ENOPATH, DG_ENOSERVER
 * are decided at once, from the pool's view) with cb not called. A request other than GET/HEAD
 * is sent once: if its server fails after the request left, the error is returned rather than
 * the request sent again to another server. Identical reads (GET/HEAD without a body: same DC,
 * path, query and headers) made while one is in flight share its WAN request and its answer. */
int dg_fed_forward(dg_fed *f, const struct dg_fed_request *req, dg_fed_done_fn cb, void *arg);

/* `?cached` on a remote read (health/service, catalog/services, kv): answered from this server's
 * copy of the remote answer when there is one, else forwarded and the answer kept; a kept answer
 * is refreshed in the background with blocking queries, so while the remote DC is reachable it
 * is current (Age 0), and while it is not, Age counts the seconds since it was last confirmed.
 * max_age_s (-1: none) asks for a fresh answer when the copy is older; stale_if_error_s (-1:
 * none) allows a copy that old when a fresh answer cannot be had. The response carries
 * `X-Cache: HIT|MISS` and `Age`. Same contract as dg_fed_forward otherwise (a GET only). */
int dg_fed_forward_cached(dg_fed *f, const struct dg_fed_request *req, int64_t max_age_s,
			  int64_t stale_if_error_s, dg_fed_done_fn cb, void *arg);

/* A client agent's request for its DC's servers: sent to one of them over 8301 and answered as
 * it answers (same contract and errors as dg_fed_forward; DG_ENOSERVER when no server is known).
 * Runs without a dg_fed. */
int dg_fed_forward_lan(dg_lan *lan, const struct dg_fed_request *req, dg_fed_done_fn cb,
		       void *arg);

/* Datacenter names, the local DC first, then by the median RTT of their alive servers, then by
 * name; a new JSON array. */
json_t *dg_fed_datacenters(dg_fed *f);
/* ?detailed: per DC {"Datacenter","Reachable","ServersAlive","ServersKnown","MedianRTTMs",
 * "LastContactMs" (ms since the last answer from any of its servers, -1 never),
 * "LeaderKnown"}, same order; a new JSON array. */
json_t *dg_fed_datacenters_detailed(dg_fed *f);
/* The WAN members in Consul's Member shape (Name "<node>.<dc>", Port 8302, Tags role/dc/port/
 * build/..., Status 1 alive, 2 leaving, 3 left, 4 failed); a new JSON array ([] without WAN). */
json_t *dg_fed_members(dg_fed *f);
/* `PUT /v1/agent/join/<addr>?wan=1`: contacts addr (host or host:port, 8302 by default), swaps
 * member lists, and calls cb(arg, err, msg) once (on another thread) with 0 or an error and a
 * message for the 500 body. Returns 0 when cb will be called, or an error at once (no WAN:
 * DG_EINVAL with "Must be a server to join WAN cluster"). */
typedef void (*dg_fed_join_fn)(void *arg, int err, const char *msg);
int dg_fed_join(dg_fed *f, const char *addr, dg_fed_join_fn cb, void *arg);
/* `force-leave` of a WAN member "<node>.<dc>" (or a bare node name, first match): marks it left.
 * 0 or DG_ENOTFOUND. */
int dg_fed_force_leave(dg_fed *f, const char *name);
/* Counters for /v1/agent/metrics: requests sent over the WAN, those that failed, WAN requests
 * in flight now, local reads that joined an identical one already in flight instead of making
 * their own (coalesced), and requests from other DCs served here. */
struct dg_fed_stats {
	uint64_t forwards, forward_errors, in_flight, served, coalesced;
	uint64_t cache_hits, cache_misses, cache_entries;
	/* from the WAN pool: bytes of WAN messages, probes and failures declared */
	uint64_t wan_bytes_sent, wan_bytes_received, wan_probes, wan_probe_timeouts,
	    wan_suspicions, wan_failures, wan_bad_messages;
	/* batches of forwarded reads: BATCH messages sent and the requests in them, requests
	 * asked again alone because their answer did not fit, batches served for other DCs */
	uint64_t wan_batches, wan_batched, wan_batch_resends, wan_batches_served;
};
void dg_fed_stats(dg_fed *f, struct dg_fed_stats *out);

#endif
