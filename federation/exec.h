/* federation/exec.h: answering a request forwarded from another DC by running it through this
 * agent's own HTTP routing and handlers, in process (struct dg_fed_local_ops), so a forwarded
 * request is served by exactly the code a local one is (blocking queries, consistency modes,
 * raft writes, errors and headers included), without a socket or HTTP parsing.
 *
 * One thread runs every call; requests may be added from any thread; completions are reported
 * on that thread. Nothing here blocks the caller. */
#ifndef DG_FEDERATION_EXEC_H
#define DG_FEDERATION_EXEC_H

#include <jansson.h>
#include <stddef.h>

#include "federation/federation.h"

typedef struct dg_exec dg_exec;

/* Starts the executor thread over ops and srv (neither owned; srv must outlive dg_exec_free).
 * *out is the caller's until dg_exec_free(). msg says why on failure. */
int dg_exec_start(const struct dg_fed_local_ops *ops, void *srv, dg_exec **out, char *msg,
		  size_t len);
/* Stops the thread; every request not yet answered completes with status 0 ("shutting down")
 * first, exactly once. Calls still held by the HTTP layer (a raft write, a forward to another
 * DC) are released to it. NULL fine. Not from a callback. */
void dg_exec_free(dg_exec *x);

/* status: the HTTP status, or 0 when no response came (err says why: timeout, shutting down,
 * no answer). headers: a JSON object of the response headers, without Content-Length,
 * Connection, Date, Transfer-Encoding and Keep-Alive (valid during the call only: json_incref
 * or copy to keep). body/len: the response body, valid during the call only. */
typedef void (*dg_exec_done_fn)(void *arg, int status, json_t *headers, const char *body,
				size_t len, const char *err);

/* Runs method path_query (e.g. "/v1/kv/a?dc=east") with the given request headers (a JSON
 * object of strings, or NULL) and body (all copied); timeout_ms bounds the whole exchange
 * (0: 10 s). Returns 0 when cb will be called exactly once, or DG_EINVAL/DG_ENOMEM/DG_ESHUTDOWN
 * with cb not called. Any thread. */
int dg_exec_request(dg_exec *x, const char *method, const char *path_query, json_t *headers,
		    const void *body, size_t len, unsigned timeout_ms, dg_exec_done_fn cb,
		    void *arg);

#endif
