/* http: Consul's HTTP API on libmicrohttpd. One epoll thread serves every connection; writes and
 * blocking queries suspend their connection instead of holding a thread. */
#ifndef DG_HTTP_H
#define DG_HTTP_H

#include <stdint.h>

#include "catalog/catalog.h"
#include "federation/federation.h"
#include "lan/lan.h"

typedef struct dg_http dg_http;

struct dg_http_config {
	const char *bind;   /* client address, 127.0.0.1 */
	int port;           /* 8500 */
	const char *version;
	const char *consul_version;
	const char *domain; /* "consul." */
	const char *config_json; /* the agent's effective config as JSON, for agent/self */
	void (*on_leave)(void *arg);  /* PUT /v1/agent/leave */
	void (*on_reload)(void *arg); /* PUT /v1/agent/reload */
	void *cb_arg;
	/* HTTPS on its own port (0: off), from PEM files; verify_incoming asks HTTPS clients for a
	 * certificate of the CA and refuses those without one. */
	int https_port;
	const char *https_cert_file, *https_key_file, *https_ca_file;
	bool https_verify_incoming;
	bool https_min_tls13; /* else TLS 1.2 is the lowest */
	/* Days to expiry of the certificate and CA in use right now (a refused reload keeps the
	 * old ones), for /v1/agent/metrics; NULL when TLS is not configured. A value < -1e9 means
	 * unknown. Called on HTTP threads. */
	void (*tls_days)(void *arg, double *cert_days, double *ca_days);
	/* Federation (not owned): ?dc= of another DC, a catalog write whose body names another
	 * DC, the WAN members, join and force-leave, the datacenter lists. NULL: this agent has no
	 * WAN (every other DC is "No path to datacenter"). May also be set after the start, see
	 * dg_http_set_fed(). */
	dg_fed *fed;
};

/* Runs requests forwarded from other DCs through this server's routing and handlers, in
 * process (local.c); srv is the dg_http. Every call must be released before dg_http_free(). */
extern const struct dg_fed_local_ops dg_http_local_ops;

/* Starts serving. *out is the caller's until dg_http_free(). msg says why on failure. */
int dg_http_start(const struct dg_http_config *cfg, dg_catalog *cat, dg_lan *lan, dg_http **out,
		  char *msg, size_t len);
/* Stops the listener, answers every parked blocking query, frees. NULL is fine.
 * With federation, the order at shutdown is dg_http_set_fed(h, NULL), then federation's own
 * shutdown (federation.h: it runs the callback of every forward and join in flight), then
 * dg_http_free(): a request suspended for a forward or a WAN join is only resumed by that
 * callback, and MHD must not stop with suspended connections. dg_http_free() waits up to 3 s
 * for such callbacks and logs an error if some never came. */
void dg_http_free(dg_http *h);
/* Sets (or clears, with NULL) the federation the HTTP API uses: for an agent whose federation
 * starts after the HTTP API (it needs the bound port), and to detach it before dg_fed_free().
 * Once it returns, no HTTP thread is inside a dg_fed_* call on the old value (a read-write lock
 * covers each call); forwards already in flight still get their callbacks. Any thread. */
void dg_http_set_fed(dg_http *h, dg_fed *f);
/* Loads the HTTPS certificate, key and CA files again: new HTTPS connections use them, live
 * ones carry on with the old ones. 0, or an error with msg. No-op without HTTPS. */
int dg_http_reload_tls(dg_http *h, const char *cert_file, const char *key_file,
		       const char *ca_file, char *msg, size_t len);
/* The HTTPS port actually bound, 0 when off. */
int dg_http_https_port(dg_http *h);
/* The port actually bound (useful with port 0). */
int dg_http_port(dg_http *h);

#endif
