/* The HTTPS listener of the HTTP API (https.c); internal to http/. */
#ifndef DG_HTTP_HTTPS_H
#define DG_HTTP_HTTPS_H

#include <arpa/inet.h>
#include <pthread.h>

#include "http/internal.h"

struct dg_https {
	pthread_mutex_t mu;
	struct dg__mhd *daemon;	     /* the one accepting */
	struct dg__mhd *retiring[8]; /* replaced by a reload, serving their last connections */
	size_t nretiring;
	int listen_fd; /* -1 until the first daemon binds */
	int port;
};

struct dg_https_params {
	const struct sockaddr *addr;
	const char *cert_file, *key_file, *ca_file;
	bool verify_incoming;
	bool min_tls13;
	MHD_AccessHandlerCallback handler;
	MHD_RequestCompletedCallback completed;
	void *handler_arg;
};

/* Starts (or, when already running, replaces) the HTTPS daemon. 0 or an error with msg. */
int dg_https_start(struct dg_https *t, const struct dg_https_params *p, char *msg, size_t len);
/* Stops retired daemons that have no connections left. */
void dg_https_reap(struct dg_https *t);
void dg_https_stop(struct dg_https *t);
/* For daemons with verify_incoming: false if the TLS client gave no certificate of the CA. */
bool dg_https_client_ok(struct MHD_Connection *conn);

#endif
