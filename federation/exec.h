/* federation/exec.h: answering a request forwarded from another DC through this agent's own HTTP
 * API, so a forwarded request is served by exactly the code a local one is (blocking queries,
 * consistency modes, errors and headers included).
 *
 * One thread runs a libcurl multi handle over a pool of keep-alive connections to
 * http://<host>:<port>; requests may be added from any thread; completions are reported on that
 * thread. Nothing here blocks the caller. */
#ifndef DG_FEDERATION_EXEC_H
#define DG_FEDERATION_EXEC_H

#include <jansson.h>
#include <stddef.h>

typedef struct dg_exec dg_exec;

/* host: the address the HTTP API listens on ("0.0.0.0" and "::" mean loopback). */
int dg_exec_start(const char *host, int port, dg_exec **out, char *msg, size_t len);
/* Stops the thread; requests in flight complete with status 0 (see below) first. NULL fine. */
void dg_exec_free(dg_exec *x);

/* status: the HTTP status, or 0 when no response came (err says why: connection refused,
 * timeout, shutting down). headers: a JSON object of the response headers except
 * Content-Length, Connection, Date, Transfer-Encoding and Keep-Alive (valid during the call
 * only: json_incref or copy to keep). body/len: the response body, valid during the call only. */
typedef void (*dg_exec_done_fn)(void *arg, int status, json_t *headers, const char *body,
				size_t len, const char *err);

/* Sends method path_query (e.g. "/v1/kv/a?dc=east") with the given request headers (a JSON
 * object of strings, or NULL) and body; timeout_ms bounds the whole exchange (0: 10 s).
 * Returns 0 when cb will be called exactly once, or DG_ENOMEM/DG_ESHUTDOWN. */
int dg_exec_request(dg_exec *x, const char *method, const char *path_query, json_t *headers,
		    const void *body, size_t len, unsigned timeout_ms, dg_exec_done_fn cb,
		    void *arg);

#endif
