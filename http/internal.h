/* Internal API of the HTTP layer: the request object every handler gets, the routes, and helpers
 * to answer in Consul's shape. Shared by http/ files only.
 *
 * A request comes either from a client connection of MHD (server.c) or from an in-process call
 * (local.c: a request another DC forwarded to us, run by federation's executor); handlers do not
 * know which: they read arguments and headers and answer only through the request's ops.
 *
 * A handler is called on the thread that serves its request (MHD's, or the executor's) once the
 * whole body is in. It answers with one of the
 * dg_reply_* functions (returning their value) or suspends the request with dg_req_write() (a
 * raft write) or dg_req_block() (a blocking query). A suspended request is resumed later and its
 * handler is called again from the top with r->write_done or r->woken set, so handlers are written
 * as "if the write is done, answer from r->write_result; else validate and write". */
#ifndef DG_HTTP_INTERNAL_H
#define DG_HTTP_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <string.h>
#include <stdint.h>

#include "catalog/catalog.h"
#include "common/common.h"
#include "http/http.h"
#include "lan/lan.h"

/* Query parameters common to every endpoint, parsed once per request (query.c). */
struct dg_query {
	char *dc;          /* NULL when absent or empty */
	uint64_t index;    /* 0: no blocking */
	int64_t wait_ns;   /* 0: default */
	bool stale, consistent, pretty, cached;
	bool recurse, keys, raw;
	bool passing;
	bool wan;
	char *separator;   /* kv keys */
	char *tags[16];    /* repeatable tag= */
	size_t ntags;
	char *node_meta[16]; /* repeatable node-meta=key:value */
	size_t nnode_meta;
	char *filter;
	char *near;
	char *token;
};

/* Parses one key/value pair into q. Returns 0, or DG_EINVAL with Consul's error text in err. */
int dg_query_set(struct dg_query *q, const char *key, const char *value, char *err, size_t len);
/* Checks combinations once all pairs are in (stale with consistent, ...). */
int dg_query_finish(struct dg_query *q, char *err, size_t len);
void dg_query_fini(struct dg_query *q);

/* Blocking-query timing, Consul's rules: wait capped at 10 min, 5 min when absent, plus jitter
 * in [0, wait/16). Returns milliseconds. */
uint64_t dg_query_block_ms(int64_t wait_ns, uint32_t random);

enum dg_method { DG_GET = 1, DG_PUT = 2, DG_POST = 4, DG_DELETE = 8, DG_OPTIONS = 16 };

struct dg_req;
typedef int (*dg_handler)(struct dg_req *r);

struct dg_route {
	const char *path; /* "/v1/kv/" */
	bool prefix;      /* the rest of the path is the argument */
	unsigned methods; /* DG_GET | DG_PUT ... */
	dg_handler handler;
};

struct dg_waiter;
struct dg_resp; /* an answer being built; what it is belongs to the request's ops */

typedef void (*dg_req_arg_fn)(void *cls, const char *key, const char *value);

/* Where a request came from and where its answer goes. Every function runs on the thread that
 * serves the request, except resume, which runs on whichever thread holds the pending resume
 * (a write's callback on the loop, a waker, the deadline thread, federation's callback). */
struct dg_req_ops {
	/* A query argument, percent-decoded, the first one of that name (case-insensitive, as MHD
	 * does). False when absent; *value is NULL when it came without '='. */
	bool (*arg)(struct dg_req *r, const char *name, const char **value);
	/* Calls fn for every query argument in the order received (value NULL: no '='). */
	void (*args)(struct dg_req *r, dg_req_arg_fn fn, void *cls);
	/* A request header by name, case-insensitive; NULL when absent. Valid as long as r. */
	const char *(*header)(struct dg_req *r, const char *name);
	/* A new answer with this body. take: body was malloc'd and belongs to the answer from now
	 * on (freed here even when NULL is returned); else it is copied. NULL: out of memory. */
	struct dg_resp *(*resp_new)(struct dg_req *r, void *body, size_t len, bool take);
	void (*resp_header)(struct dg_resp *resp, const char *name, const char *value);
	void (*resp_free)(struct dg_resp *resp);
	/* Sends resp (consumed) as the answer with status; MHD_YES or MHD_NO (give up on it). */
	int (*respond)(struct dg_req *r, int status, struct dg_resp *resp);
	/* Called by the handler before it returns without answering; some later resume makes
	 * the handler run again. resume may come before the handler has returned. After resume,
	 * the resuming thread must not touch r again: it may be freed inside resume. */
	void (*suspend)(struct dg_req *r);
	void (*resume)(struct dg_req *r);
};

struct dg_req {
	dg_http *srv;
	const struct dg_req_ops *ops;
	void *io; /* the ops' own: the MHD connection, or NULL for an in-process call */
	enum dg_method method;
	const char *method_text;
	char *url;  /* path as received */
	const char *arg; /* the route argument, percent-decoded; "" when none */
	const struct dg_route *route;
	struct dg_query q;
	char *query_err; /* set when a parameter is invalid */
	struct dg_buf body;
	bool body_too_big;
	bool header_seen;
	bool answered;
	bool suspended;

	/* ?consistent on the leader: 0 not asked, 1 waiting, 2 confirmed, else a dg error */
	int verify;

	/* a write through raft */
	bool write_done;
	int write_status;
	json_t *write_result;

	/* a blocking query */
	uint64_t deadline_ms; /* 0 until the first visit computes it */
	bool woken;
	struct dg_waiter *waiter;

	/* federation (server.c): a request forwarded to another DC, or a WAN join. fed_parked and
	 * fed_done are guarded by the server's fed mutex until the callback has run; the results
	 * are the handler's once it sees fed_done. */
	enum { DG_FED_NONE, DG_FED_FORWARD, DG_FED_JOIN } fed_kind;
	bool fed_parked; /* suspended, waiting for the callback to resume it */
	bool fed_done;	 /* the callback ran */
	int fed_err;
	struct dg_fed_response fed_resp; /* forward: the remote answer, owned by r */
	char *fed_msg;			 /* join: why it failed, owned by r (NULL: none) */
	char *fed_dc, *fed_path;	 /* forward: what was sent, kept until r is freed */
	json_t *fed_headers;

	/* handler scratch space that survives a suspension */
	void *scratch;
	void (*scratch_free)(void *);
};

/* ---- the server's shared state, for handlers ---- */
dg_catalog *dg_http_cat(struct dg_req *r);
dg_lan *dg_http_lan(struct dg_req *r);
const struct dg_http_config *dg_http_cfg(struct dg_req *r);
const char *dg_http_node(struct dg_req *r); /* this agent's node name */
const char *dg_http_dc(struct dg_req *r);

/* The federation, or NULL when this agent has none; valid until dg_http_fed_release(), which
 * must follow on the same thread before the handler returns (a read lock is held: call only
 * the non-blocking dg_fed_* functions in between). */
dg_fed *dg_http_fed_acquire(struct dg_req *r);
void dg_http_fed_release(struct dg_req *r);
/* True if the query parameter is present at all (presence-based flags such as ?detailed, or
 * force-leave's ?wan); *value (may be NULL) is "" when it has no value. */
bool dg_req_arg_present(struct dg_req *r, const char *name, const char **value);
/* A query parameter's value, NULL when absent or given without '='. Valid as long as r. */
const char *dg_req_arg(struct dg_req *r, const char *name);
/* A request header, case-insensitive; NULL when absent. Valid as long as r. */
const char *dg_req_header(struct dg_req *r, const char *name);

/* ---- answers: each returns MHD_YES/MHD_NO for the handler to return ---- */
/* 200 with a JSON body (takes ownership of body; NULL means "null"). Adds X-Consul-Index etc.
 * when index > 0. */
int dg_reply_json(struct dg_req *r, int status, json_t *body, uint64_t index);
/* A JSON body already encoded (takes ownership of text). */
int dg_reply_json_text(struct dg_req *r, int status, char *text, size_t len, uint64_t index);
/* Plain text (Consul's error shape): status and a text body. index > 0 adds the blocking
 * headers (404s of blocking reads carry them). */
int dg_reply_text(struct dg_req *r, int status, const char *text, uint64_t index);
int dg_reply_textf(struct dg_req *r, int status, uint64_t index, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* 200 with an empty body, for void calls. */
int dg_reply_empty(struct dg_req *r);
/* A response built with r->ops (consumed): adds what every answer of ours carries (the ACL
 * policy header), counts errors, and marks r answered. For answers with headers of their own. */
int dg_reply_resp(struct dg_req *r, int status, struct dg_resp *resp);
/* Raw bytes with a content type (kv ?raw, metrics text). */
int dg_reply_raw(struct dg_req *r, int status, const void *data, size_t len,
		 const char *content_type, uint64_t index);
/* The response cache (cache.c) for reads that depend on one index: dg_reply_cached() answers from
 * the cache when a body for this path, query and index exists and returns its MHD result, or -1
 * when there is none; dg_reply_json_cache() answers like dg_reply_json(r, 200, body, index) and
 * keeps the encoded body for the next identical read. */
int dg_reply_cached(struct dg_req *r, uint64_t index);
int dg_reply_json_cache(struct dg_req *r, json_t *body, uint64_t index);
/* Answers the failure of a write (r->write_status / an {"Error","Status"} result). */
int dg_reply_write_error(struct dg_req *r);

/* ---- suspension ---- */
/* Proposes cmd (ownership passes) through raft and suspends; the handler is called again with
 * r->write_done set and r->write_status / r->write_result filled (write_result owned by r). */
int dg_req_write(struct dg_req *r, json_t *cmd);
/* True when the handler should park instead of answering: ?index was given, the result's index
 * is not past it, and the wait has not run out. Call with the catalog read lock held or not. */
bool dg_req_should_block(struct dg_req *r, uint64_t result_index);
/* Parks the request until a change matching topics (DG_TOPIC_* and DG_HTTP_TOPIC_* mask) and
 * key (NULL: any; prefix: key is a prefix) or the deadline; then the handler runs again.
 * seen_index is dg_cat_last_index() read under the same read lock as the result. */
int dg_req_block(struct dg_req *r, unsigned topics, const char *key, bool prefix,
		 uint64_t seen_index);

/* A topic of the HTTP layer's own, for waiters on something that is not in the catalog: the
 * agent's user-event buffer (event_api.c). Above every DG_TOPIC_* bit, which the catalog's
 * changes carry; only dg_http_wake() wakes it. */
#define DG_HTTP_TOPIC_EVENTS (1u << 16)
/* Resumes every parked query waiting on one of topics (a DG_HTTP_TOPIC_* mask); each runs its
 * handler again. Any thread. It takes the waiter lock, as dg_req_block() does: a lock the caller
 * holds here must come before the waiter lock in every thread (event_api.c's buffer lock does). */
void dg_http_wake(dg_http *h, unsigned topics);

/* A blocking, cached catalog read (server.c): idx gives the result's index, build the body
 * (a new reference, NULL only when out of memory), both under the catalog's read lock. */
typedef uint64_t (*dg_index_fn)(struct dg_req *r, dg_catalog *cat);
typedef json_t *(*dg_build_fn)(struct dg_req *r, dg_catalog *cat);
int dg_serve_read(struct dg_req *r, unsigned topics, const char *key, dg_index_fn idx,
		  dg_build_fn build);

/* ---- federation (server.c) ---- */
/* Forwards this request as received (method, path, the whole query string, X-Consul-Token,
 * Content-Type and Cache-Control, the body unchanged) to datacenter dc and answers with the
 * remote DC's status, headers and body, suspending meanwhile; dispatch answers when the
 * request runs again, so the handler is not called back. Without federation: 500 "No path to
 * datacenter". A blocking query (?index) may take its wait plus jitter plus 5 s. */
int dg_req_forward(struct dg_req *r, const char *dc);
/* (dc NULL: a client agent's request, to a server of its own DC over 8301; 500 "No known Consul
 * servers" when it knows none. dc LEADER: a follower's read, to the leader; 500 "No cluster
 * leader" when none is known.) */
extern const char dg__leader_dc[];
#define LEADER dg__leader_dc
/* Joins the WAN pool through addr and suspends until it is done; the handler is then called
 * again with r->fed_done set, r->fed_err 0 or an error and r->fed_msg the reason (may be NULL).
 * When federation refuses at once (or there is none: DG_EINVAL), or the join is over before
 * the request could be suspended, the handler is called again at once the same way. Returns
 * what the handler must return. */
int dg_req_wan_join(struct dg_req *r, const char *addr);
/* The same for an operation of the LAN runtime (join, force-leave, remove-peer) that reports
 * through a dg_lan_done_fn: start(lan, a, b, cb, arg) begins it. */
typedef int (*dg_req_lan_start_fn)(dg_lan *l, const char *a, const char *b, dg_lan_done_fn cb,
				   void *arg);
int dg_req_lan_op(struct dg_req *r, dg_req_lan_start_fn start, const char *a, const char *b);

/* ---- request bodies (decode.c) ---- */
/* Go's name for a JSON value's kind ("object", "string", "number", "bool", ...), for Consul's
 * "cannot unmarshal <kind>" texts. */
const char *dg_json_kind(json_t *v);
/* Parses the body as JSON with Consul's texts: empty -> "Request decode failed: EOF". Depth is
 * limited to DG_MAX_JSON_DEPTH. Returns a new reference, or NULL with err filled. */
json_t *dg_decode_body(const char *body, size_t len, char *err, size_t errlen);
/* Case-insensitive field lookup (Go's encoding/json rule: an exact match first, then any
 * case-insensitive one); also tries each alias (snake_case names) in the NULL-terminated list. */
json_t *dg_jget(json_t *obj, const char *name, ...) __attribute__((sentinel));
/* A duration field: a Go duration string or a number of nanoseconds. 0 when absent/null.
 * Returns 0 or DG_EINVAL. */
int dg_jduration(json_t *v, int64_t *ns);
/* Strings from a field, "" when absent or not a string. */
const char *dg_jstr(json_t *v);

/* ---- response objects in Consul's field names (encode.c); each returns a new reference ---- */
json_t *dg_enc_node(const struct dg_cat_node *n, const char *dc);
/* NodeService: health .Service, catalog/node .Services values. */
json_t *dg_enc_node_service(const struct dg_cat_service *s);
/* AgentService: agent/services values. */
json_t *dg_enc_agent_service(const struct dg_cat_service *s, const char *dc);
/* ServiceNode: catalog/service elements. */
json_t *dg_enc_service_node(const struct dg_cat_node *n, const struct dg_cat_service *s,
			    const char *dc);
/* HealthCheck; svc gives ServiceTags (NULL for node checks). */
json_t *dg_enc_check(const struct dg_cat_check *ch, const struct dg_cat_service *svc);
/* Appends a KV DirEntry as JSON text. */
void dg_enc_kv_entry(struct dg_buf *b, const struct dg_cat_kv *e);
/* True if every wanted tag is on the service (case-insensitive). */
bool dg_service_has_tags(const struct dg_cat_service *s, char *const *tags, size_t ntags);
/* True if the node's Meta has every "key:value" pair. */
bool dg_node_meta_match(const struct dg_cat_node *n, char *const *pairs, size_t npairs);

/* Route tables, one per endpoint file, each ending with a {NULL} entry. */
extern const struct dg_route dg_routes_agent[];
extern const struct dg_route dg_routes_catalog[];
extern const struct dg_route dg_routes_coordinate[];
extern const struct dg_route dg_routes_event[];
extern const struct dg_route dg_routes_health[];
extern const struct dg_route dg_routes_kv[];
extern const struct dg_route dg_routes_session[];
extern const struct dg_route dg_routes_status[];
extern const struct dg_route dg_routes_txn[];

/* Counters for /v1/agent/metrics (server.c). */
struct dg_http_stats {
	uint64_t requests;
	uint64_t waiters_parked;
	uint64_t waiters_woken;
	uint64_t waiters_timed_out;
	uint64_t errors_4xx, errors_5xx;
};
void dg_http_stats(struct dg_req *r, struct dg_http_stats *out);
/* Number of queries parked right now. */
size_t dg_http_waiters(struct dg_req *r);
/* Number of requests suspended for a forward or a WAN join right now. */
size_t dg_http_forwards(struct dg_req *r);

/* ---- running a daemon (mhd_loop.c) ---- */

/* A libmicrohttpd daemon driven by a thread of dcgate's own rather than MHD's internal one.
 * libmicrohttpd (0.9.75, and still 1.0.1) drains epoll 128 events at a time and, after a full
 * batch, calls epoll_wait again with the whole timeout: when exactly 128 (or 256, ...)
 * connections become readable at once, its internal thread sleeps with their requests unread
 * until another event or a connection timeout (up to 15 s). Here MHD_run() never blocks; the
 * thread waits itself, on MHD's epoll descriptor, at most as long as MHD_get_timeout() says. */
struct dg__mhd;
/* Starts a daemon (flags without any thread mode: MHD_USE_EPOLL is added) with opts (ending
 * with MHD_OPTION_END) and its thread, named name (at most 15 characters). NULL on failure. */
struct dg__mhd *dg__mhd_start(unsigned flags, MHD_AccessHandlerCallback handler, void *arg,
			      const struct MHD_OptionItem *opts, const char *name);
struct MHD_Daemon *dg__mhd_daemon(struct dg__mhd *m);
/* Stops the thread, then the daemon (MHD_stop_daemon, on the caller's thread); frees m. */
void dg__mhd_stop(struct dg__mhd *m);
/* MHD_resume_connection() for a connection of any daemon started here, and a wake-up of the
 * loop that runs it; every resume in http/ goes through this. */
void dg__mhd_resume(struct MHD_Connection *conn);

/* ---- between server.c and local.c ---- */
/* Sets up r for h with its ops and io: the fields every request starts with. */
void dg__http_req_init(struct dg_req *r, dg_http *h, const struct dg_req_ops *ops, void *io);
/* Frees what r holds (not r itself). */
void dg__http_req_fini(struct dg_req *r);
/* The method a request line names (0: none that dcgate serves; HEAD is DG_GET). */
enum dg_method dg__http_method_parse(const char *m);
/* One visit of the request, as MHD makes when a request is complete or resumed: routing and
 * the handler, unless r was answered already. Returns MHD_YES or MHD_NO (give up on r). */
int dg__http_run(struct dg_req *r);
/* Takes r off the waiter list if it is parked there. True: it was, and the caller now holds
 * its pending resume (nothing else will resume it). Any thread. */
bool dg__http_unpark(struct dg_req *r);
/* MHD's decoding of a URL path (%XX only) in place; stops at a decoded NUL. Returns the length. */
size_t dg__http_unescape(char *s);
/* Splits a query string (without '?') into arguments as MHD does: '&' between arguments, the
 * first '=' between key and value ("k" alone: value NULL), '+' as space, then %XX, in place.
 * Calls fn for each; like MHD, an empty argument between two '&' gives an empty key, a
 * trailing '&' gives nothing. */
void dg__http_query_split(char *qs, dg_req_arg_fn fn, void *cls);

/* The largest body a request may have: a snapshot restore's archive may be larger than any
 * other request (docs/snapshot.md). */
static inline size_t dg__http_body_limit(const struct dg_req *r)
{
	return r->method == DG_PUT && r->url && strcmp(r->url, "/v1/snapshot") == 0
		       ? DG_MAX_SNAPSHOT_BODY
		       : DG_MAX_BODY;
}

#endif
