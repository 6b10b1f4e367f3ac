/* The WAN listener: an nng rep socket on tls+tcp:// with a listener TLS config that accepts only
 * server certificates of the CA ("server.*.<domain>"), answering pings with who it is and who
 * it sees, so an operator (and the tests) can check a federation link end to end.
 *
 * Threads: nng's aio callback runs on nng's worker threads; it owns the one aio and touches
 * nothing else of dcgate but the immutable config strings. */
#include "wan/wan.h"

#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

#define WAN "wan"
#define WAN_MAX_MSG (64 * 1024)

struct dg_wan {
	nng_socket sock;
	nng_listener listener;
	nng_tls_config *tls;
	nng_aio *aio;
	char *node, *dc;
	bool receiving; /* false while the reply is being sent */
	bool stopping;  /* set by dg_wan_free before it stops the aio */
};

static void answer(dg_wan *w, nng_msg *req)
{
	char role[32] = "", dc[128] = "", buf[512];
	nng_sockaddr remote;
	nng_pipe p = nng_msg_get_pipe(req);
	if (nng_pipe_get_addr(p, NNG_OPT_REMADDR, &remote) == 0)
		dg_tls_peer_identity(&remote, role, sizeof(role), dc, sizeof(dc));
	int n = snprintf(buf, sizeof(buf),
			 "{\"Node\":\"%s\",\"Datacenter\":\"%s\",\"PeerRole\":\"%s\",\"PeerDatacenter\":\"%s\"}",
			 w->node, w->dc, role, dc);
	nng_msg_clear(req);
	if (n > 0 && (size_t)n < sizeof(buf))
		nng_msg_append(req, buf, (size_t)n);
	nng_aio_set_msg(w->aio, req);
	w->receiving = false;
	nng_send_aio(w->sock, w->aio);
}

static void aio_cb(void *arg)
{
	dg_wan *w = arg;
	int rv = nng_aio_result(w->aio);
	/* nng also cancels a pending receive when a pipe in mid-negotiation is torn down (a TLS
	 * handshake cut for stalling): only our own stop ends the loop */
	if (rv == NNG_ECLOSED || (rv == NNG_ECANCELED && __atomic_load_n(&w->stopping,
									 __ATOMIC_ACQUIRE)))
		return;
	if (!w->receiving) {
		if (rv != 0)
			nng_msg_free(nng_aio_get_msg(w->aio));
		w->receiving = true;
		nng_recv_aio(w->sock, w->aio);
		return;
	}
	if (rv != 0) {
		nng_recv_aio(w->sock, w->aio);
		return;
	}
	nng_msg *m = nng_aio_get_msg(w->aio);
	if (nng_msg_len(m) > WAN_MAX_MSG) {
		nng_msg_free(m);
		nng_recv_aio(w->sock, w->aio);
		return;
	}
	answer(w, m);
}

int dg_wan_start(const struct dg_wan_config *cfg, dg_wan **out, char *msg, size_t len)
{
	dg_wan *w = calloc(1, sizeof(*w));
	char url[256], accept[160], err[512];
	int rv;
	if (!w)
		return DG_ENOMEM;
	w->node = strdup(cfg->node);
	w->dc = strdup(cfg->dc);
	snprintf(url, sizeof(url), "tls+tcp://%s:%d", cfg->bind, cfg->port);
	snprintf(accept, sizeof(accept), "server.*.%s", cfg->tls->domain);
	if ((rv = dg_tls_listener_config(cfg->tls, accept, &w->tls, err, sizeof(err))) != 0) {
		snprintf(msg, len, "WAN TLS: %s", err);
		goto fail;
	}
	if ((rv = nng_rep0_open(&w->sock)) != 0 ||
	    (rv = nng_socket_set_size(w->sock, NNG_OPT_RECVMAXSZ, WAN_MAX_MSG)) != 0 ||
	    (rv = nng_listener_create(&w->listener, w->sock, url)) != 0 ||
	    (rv = nng_listener_set_ptr(w->listener, NNG_OPT_TLS_CONFIG, w->tls)) != 0 ||
	    (rv = nng_listener_start(w->listener, 0)) != 0) {
		snprintf(msg, len, "WAN listener on %s: %s", url, nng_strerror(rv));
		goto fail;
	}
	if ((rv = nng_aio_alloc(&w->aio, aio_cb, w)) != 0) {
		snprintf(msg, len, "WAN: %s", nng_strerror(rv));
		goto fail;
	}
	w->receiving = true;
	nng_recv_aio(w->sock, w->aio);
	DG_LOGI(WAN, "listening on %s (mutual TLS, accepting %s)", url, accept);
	*out = w;
	return 0;
fail:
	dg_wan_free(w);
	return DG_EIO;
}

void dg_wan_free(dg_wan *w)
{
	if (!w)
		return;
	__atomic_store_n(&w->stopping, true, __ATOMIC_RELEASE);
	if (w->aio)
		nng_aio_stop(w->aio);
	nng_close(w->sock);
	if (w->aio)
		nng_aio_free(w->aio);
	if (w->tls)
		nng_tls_config_free(w->tls);
	free(w->node);
	free(w->dc);
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
		snprintf(msg, len, "no answer from %s: %s (see the logs of both sides for the TLS "
			 "reason)", url, nng_strerror(rv));
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
