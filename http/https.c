/* HTTPS for the HTTP API on its own port, with libmicrohttpd's TLS (GnuTLS) reading the same PEM
 * files as the rest of dcgate. Reload without dropping connections: the listening socket is
 * handed from the old daemon to a new one made with the new files (MHD_quiesce_daemon); the old
 * daemon keeps serving its live connections and is stopped once it has none left.
 *
 * Threads: dg_https_* run on the main thread (start, reload, stop); retiring daemons are reaped
 * by dg_https_reap() from the HTTP deadline thread under https_mu. */
#include "http/https.h"

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *read_file(const char *path, char *msg, size_t len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		snprintf(msg, len, "cannot read %s", path);
		return NULL;
	}
	struct dg_buf b;
	char chunk[4096];
	size_t n;
	dg_buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0 && b.len < 1024 * 1024)
		dg_buf_append(&b, chunk, n);
	fclose(f);
	return dg_buf_steal(&b, NULL);
}

/* A connection of a daemon that asks for client certificates: the certificate must verify
 * against the CA given to MHD, or the connection is closed before any request is served. */
bool dg_https_client_ok(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	unsigned status = 0;
	if (!ci || !ci->tls_session)
		return true; /* not a TLS connection */
	gnutls_session_t s = (gnutls_session_t)ci->tls_session;
	if (gnutls_certificate_verify_peers2(s, &status) < 0 || status != 0 ||
	    gnutls_certificate_type_get(s) != GNUTLS_CRT_X509 ||
	    gnutls_certificate_get_peers(s, NULL) == NULL) {
		const union MHD_ConnectionInfo *ai =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		char addr[64] = "unknown";
		if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)ai->client_addr;
			inet_ntop(AF_INET, &in->sin_addr, addr, sizeof(addr));
		}
		DG_LOGW("http", "HTTPS client %s refused: no client certificate of the CA (%s)",
			addr, status ? "verification failed" : "none presented");
		return false;
	}
	return true;
}

int dg_https_start(struct dg_https *t, const struct dg_https_params *p, char *msg, size_t len)
{
	char *cert = read_file(p->cert_file, msg, len);
	char *key = cert ? read_file(p->key_file, msg, len) : NULL;
	char *ca = key && p->verify_incoming ? read_file(p->ca_file, msg, len) : NULL;
	int rv = DG_EINVAL;
	if (!cert || !key || (p->verify_incoming && !ca))
		goto out;
	const char *prio = p->min_tls13 ? "NORMAL:-VERS-ALL:+VERS-TLS1.3"
					: "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";
	unsigned flags = MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TLS;
	struct MHD_OptionItem tls_opts[] = {
		{MHD_OPTION_HTTPS_MEM_CERT, 0, cert},
		{MHD_OPTION_HTTPS_MEM_KEY, 0, key},
		{MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)prio},
		{ca ? MHD_OPTION_HTTPS_MEM_TRUST : MHD_OPTION_END, 0, ca},
		{MHD_OPTION_END, 0, NULL},
	};
	/* the socket of the daemon being replaced, or a new one on the address */
	struct MHD_OptionItem where = {MHD_OPTION_SOCK_ADDR, 0, (void *)p->addr};
	if (t->listen_fd >= 0)
		where = (struct MHD_OptionItem){MHD_OPTION_LISTEN_SOCKET, t->listen_fd, NULL};
	struct MHD_OptionItem opts[] = {
		where,
		{MHD_OPTION_ARRAY, 0, tls_opts},
		{MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)p->completed, p->handler_arg},
		{MHD_OPTION_CONNECTION_LIMIT, 4096, NULL},
		{MHD_OPTION_CONNECTION_TIMEOUT, 15, NULL},
		{MHD_OPTION_CONNECTION_MEMORY_LIMIT, DG_MAX_HEADER_MEM, NULL},
		{MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024, NULL},
		{MHD_OPTION_END, 0, NULL},
	};
	struct dg__mhd *d = dg__mhd_start(flags, p->handler, p->handler_arg, opts, "dg-https");
	if (!d) {
		snprintf(msg, len, "cannot start HTTPS (port in use, or %s / %s not a matching PEM "
			 "certificate and key)", p->cert_file, p->key_file);
		goto out;
	}
	pthread_mutex_lock(&t->mu);
	if (t->daemon) {
		/* hand the socket over: the old daemon stops accepting but finishes its own */
		MHD_quiesce_daemon(dg__mhd_daemon(t->daemon));
		if (t->nretiring < sizeof(t->retiring) / sizeof(t->retiring[0]))
			t->retiring[t->nretiring++] = t->daemon;
		else
			dg__mhd_stop(t->daemon);
	}
	t->daemon = d;
	if (t->listen_fd < 0) {
		struct MHD_Daemon *md = dg__mhd_daemon(d);
		const union MHD_DaemonInfo *fi = MHD_get_daemon_info(md, MHD_DAEMON_INFO_LISTEN_FD);
		const union MHD_DaemonInfo *pi = MHD_get_daemon_info(md, MHD_DAEMON_INFO_BIND_PORT);
		t->listen_fd = fi ? fi->listen_fd : -1;
		t->port = pi ? pi->port : 0;
	}
	pthread_mutex_unlock(&t->mu);
	rv = 0;
out:
	free(cert);
	free(key);
	free(ca);
	return rv;
}

void dg_https_reap(struct dg_https *t)
{
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->nretiring;) {
		const union MHD_DaemonInfo *ci =
			MHD_get_daemon_info(dg__mhd_daemon(t->retiring[i]),
					    MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
		if (ci && ci->num_connections > 0) {
			i++;
			continue;
		}
		dg__mhd_stop(t->retiring[i]);
		t->retiring[i] = t->retiring[--t->nretiring];
	}
	pthread_mutex_unlock(&t->mu);
}

void dg_https_stop(struct dg_https *t)
{
	pthread_mutex_lock(&t->mu);
	for (size_t i = 0; i < t->nretiring; i++)
		dg__mhd_stop(t->retiring[i]);
	t->nretiring = 0;
	if (t->daemon) {
		MHD_quiesce_daemon(dg__mhd_daemon(t->daemon));
		dg__mhd_stop(t->daemon);
		t->daemon = NULL;
	}
	if (t->listen_fd >= 0)
		close(t->listen_fd); /* quiesced daemons leave the socket to us */
	t->listen_fd = -1;
	pthread_mutex_unlock(&t->mu);
}
