/* http: Consul's HTTP API on libmicrohttpd. One epoll thread serves every connection; writes and
 * blocking queries suspend their connection instead of holding a thread. */
#ifndef DG_HTTP_H
#define DG_HTTP_H

#include <stdint.h>

#include "catalog/catalog.h"
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
};

/* Starts serving. *out is the caller's until dg_http_free(). msg says why on failure. */
int dg_http_start(const struct dg_http_config *cfg, dg_catalog *cat, dg_lan *lan, dg_http **out,
		  char *msg, size_t len);
/* Stops the listener, answers every parked blocking query, frees. NULL is fine. */
void dg_http_free(dg_http *h);
/* The port actually bound (useful with port 0). */
int dg_http_port(dg_http *h);

#endif
