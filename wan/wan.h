/* wan: the links between datacenters on port 8302. Today: the mutual-TLS listener every server
 * runs (tls+tcp://, OpenSSL engine, only server certificates of the federation's CA get in) and
 * a ping over it, the foundation federation builds on. */
#ifndef DG_WAN_H
#define DG_WAN_H

#include <stddef.h>

#include "tls/tls.h"

typedef struct dg_wan dg_wan;

struct dg_wan_config {
	const char *bind; /* address to listen on */
	int port;         /* 8302 */
	const char *node;
	const char *dc;
	const struct dg_tls_policy *tls; /* must carry a certificate, key and CA */
};

/* Starts listening. *out is the caller's until dg_wan_free(). 0 or an error with msg. */
int dg_wan_start(const struct dg_wan_config *cfg, dg_wan **out, char *msg, size_t len);
void dg_wan_free(dg_wan *w);
/* Asks a server at addr ("host:port") of datacenter dc who it is, over mutual TLS, and writes
 * its JSON answer into out. For `dcgate wan ping` and tests. 0 or an error with msg. */
int dg_wan_ping(const struct dg_tls_policy *tls, const char *addr, const char *dc, char *out,
		size_t outlen, char *msg, size_t len);

#endif
