/* federation/lan_forward.c: a client agent's catalog requests, answered by a server of its own
 * DC. The client sends the HTTP request as it came (the WAN's HTTP message, wan/msg.h) on 8301
 * (lan/rpc.c); the server runs it through its HTTP layer in process (federation/exec.c) and sends
 * back status, headers and body, which the client answers with unchanged. A request for another
 * DC goes the same way and the server forwards it over the WAN.
 *
 * Threads: dg_fed_forward_lan runs on any thread (the HTTP thread); its callback runs on an nng
 * thread. lan_serve runs on nng's threads and answers from the executor's thread. */
#include "federation/federation.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "federation/exec.h"
#include "federation/internal.h"
#include "wan/msg.h"

#define FED "fed"

/* what the server may take beyond the request's own time */
#define LAN_MARGIN_MS 2000

/* ---- the server's side ---- */

struct lan_served {
	struct dg_lan_rpc_req *req;
};

static void answer(struct dg_lan_rpc_req *req, enum dg_wan_type type, json_t *hdr,
		   const void *body, size_t len)
{
	struct dg_buf b;
	dg_buf_init(&b);
	if (dg_wan_msg_encode(&b, type, hdr, body, len) == 0)
		dg_lan_rpc_answer(req, b.data, b.len);
	else
		dg_lan_rpc_answer(req, NULL, 0);
	dg_buf_fini(&b);
}

static void lan_served_done(void *arg, int status, json_t *headers, const char *body,
			    size_t len, const char *err)
{
	struct lan_served *s = arg;
	json_t *h;
	if (status == 0) {
		h = json_pack("{s:s}", "Error", err ? err : "no answer from the HTTP API");
		answer(s->req, DG_WAN_ERROR, h, NULL, 0);
	} else {
		h = json_pack("{s:i, s:o}", "Status", status, "Headers",
			      headers ? json_incref(headers) : json_object());
		answer(s->req, DG_WAN_HTTP_REPLY, h, body, len);
	}
	json_decref(h);
	free(s);
}

static void lan_serve(void *arg, struct dg_lan_rpc_req *req, const uint8_t *buf, size_t len)
{
	dg_fed *f = arg;
	struct dg_wan_msg m;
	char err[160];
	if (dg_wan_msg_decode(buf, len, &m, err, sizeof(err)) != 0) {
		DG_LOGD(FED, "a client agent's request dropped: %s", err);
		dg_lan_rpc_answer(req, NULL, 0);
		return;
	}
	struct lan_served *s = calloc(1, sizeof(*s));
	const char *why = s ? NULL : "out of memory";
	if (s) {
		s->req = req;
		if ((why = dg__fed_run(f, &m, false, lan_served_done, s)) != NULL)
			free(s);
	}
	if (why) {
		json_t *e = json_pack("{s:s}", "Error", why);
		answer(req, DG_WAN_ERROR, e, NULL, 0);
		json_decref(e);
	}
	dg_wan_msg_fini(&m);
}

void dg__fed_lan_attach(dg_fed *f, dg_lan *lan)
{
	dg_lan_set_http_handler(lan, lan ? lan_serve : NULL, f);
}

/* ---- the client's side ---- */

struct lan_call {
	dg_fed_done_fn cb;
	void *arg;
};

static void lan_forward_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct lan_call *c = arg;
	struct dg_fed_response resp = {0};
	struct dg_wan_msg m = {0};
	char why[160];
	if (err == 0 && (len == 0 || dg_wan_msg_decode(buf, len, &m, why, sizeof(why)) != 0))
		err = DG_EIO;
	if (err == 0)
		err = dg__fed_response_read(&m, &resp, true);
	dg_wan_msg_fini(&m);
	c->cb(c->arg, err, err == 0 ? &resp : NULL);
	dg_fed_response_fini(&resp);
	free(c);
}

int dg_fed_forward_lan(dg_lan *lan, const struct dg_fed_request *req, dg_fed_done_fn cb,
		       void *arg)
{
	unsigned ms = req->timeout_ms ? req->timeout_ms : 10000;
	json_t *hdr = json_pack("{s:s, s:s, s:o, s:i}", "Method", req->method, "Path",
				req->path_query, "Headers",
				req->headers ? json_incref(req->headers) : json_object(), "TimeoutMs",
				(int)ms);
	struct lan_call *c = calloc(1, sizeof(*c));
	struct dg_buf b;
	int rv = DG_ENOMEM;
	dg_buf_init(&b);
	if (hdr && c && (rv = dg_wan_msg_encode(&b, DG_WAN_HTTP, hdr, req->body, req->len)) == 0) {
		c->cb = cb;
		c->arg = arg;
		rv = req->to_leader ? dg_lan_http_call_leader(lan, b.data, b.len, ms + LAN_MARGIN_MS,
							      lan_forward_done, c)
				    : dg_lan_http_call(lan, b.data, b.len, ms + LAN_MARGIN_MS,
						       lan_forward_done, c);
	}
	json_decref(hdr);
	dg_buf_fini(&b);
	if (rv != 0)
		free(c);
	return rv;
}
