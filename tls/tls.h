/* tls: OpenSSL 3 registered as nng's TLS engine (so every tls+tcp:// link of dcgate runs on
 * OpenSSL, not on the mbedTLS nng was built with), the verification policy built from Consul's
 * config keys, certificate checks, reload, and the CA and certificates `dcgate tls` makes.
 *
 * Names: servers carry SAN server.<dc>.<domain>, client agents client.<dc>.<domain>. */
#ifndef DG_TLS_H
#define DG_TLS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

/* ---- policy (policy.c) ---- */
struct dg_tls_policy {
	char *ca_file, *ca_path, *cert_file, *key_file; /* NULL when not configured */
	bool verify_incoming, verify_outgoing, verify_server_hostname;
	int min_version; /* OpenSSL's TLS1_2_VERSION or TLS1_3_VERSION; TLS 1.2 at least */
	char *domain;    /* "consul" */
	char *dc;        /* this agent's datacenter */
	bool server;     /* this agent is a server */
};

/* Reads Consul's keys from an agent config object: tls.defaults.*, tls.internal_rpc.* (which
 * wins for RPC), and the older top-level ca_file, ca_path, cert_file, key_file,
 * verify_incoming, verify_outgoing, verify_server_hostname, tls_min_version ("tls12", "tls13",
 * "TLSv1_2", "TLSv1_3"). domain and dc are copied. Returns 0 or DG_EINVAL with err filled. */
int dg_tls_policy_from_config(json_t *cfg, const char *dc, const char *domain, bool server,
			      struct dg_tls_policy *out, char *err, size_t errlen);
void dg_tls_policy_fini(struct dg_tls_policy *p);
/* True if a certificate and key are configured. */
bool dg_tls_policy_has_identity(const struct dg_tls_policy *p);

/* Checks this agent's own certificate against its role and DC: it must chain to the CA, be
 * valid now, and carry server.<dc>.<domain> (or client.<dc>.<domain>); a server certificate
 * must allow both serverAuth and clientAuth. Returns 0, or DG_EINVAL with a message that names
 * what is missing (the names the certificate does carry, the expected one). */
int dg_tls_check_own(const struct dg_tls_policy *p, char *err, size_t errlen);

/* Days until the certificate in a PEM file expires (negative when expired). 0 or an error. */
int dg_tls_days_left(const char *pem_file, double *days);

/* ---- the nng engine (engine.c) ---- */
/* Registers OpenSSL as nng's TLS engine. Call once, early, from the main thread, before any
 * nng socket is made. Returns 0 or an error. */
int dg_tls_engine_init(void);
/* "openssl" once registered, else the name nng reports for its own engine. */
const char *dg_tls_engine_name(void);

/* A TLS config for dialing a server of datacenter dc: our certificate, the CA, TLS >= the
 * policy's minimum, and when verify_server_hostname is on, the peer must carry
 * server.<dc>.<domain>. Caller frees with nng_tls_config_free(). */
int dg_tls_dialer_config(const struct dg_tls_policy *p, const char *dc, nng_tls_config **out,
			 char *err, size_t errlen);
/* A TLS config for dialing a server whose datacenter is not known yet (joining by address): the
 * peer must show a certificate of the CA whose SAN matches accept ("server.*.<domain>"). What it
 * claims to be is then checked by a dial with dg_tls_dialer_config(). Caller frees it. */
int dg_tls_dialer_config_any(const struct dg_tls_policy *p, const char *accept,
			     nng_tls_config **out, char *err, size_t errlen);
/* A TLS config for a listener that requires a client certificate of the CA whose SAN matches
 * accept ("server.*.<domain>" on the WAN: any DC's server). Caller frees it. */
int dg_tls_listener_config(const struct dg_tls_policy *p, const char *accept,
			   nng_tls_config **out, char *err, size_t errlen);
/* Loads the policy's files again and makes every config made above use them for new
 * handshakes; live connections carry on with what they negotiated. 0 or an error. */
int dg_tls_reload(const struct dg_tls_policy *p, char *err, size_t errlen);

/* What the listener side learnt of a verified peer, looked up by the peer's address as nng
 * reports it for a pipe (NNG_OPT_REMADDR): its role ("server"/"client") and datacenter from
 * the SAN <role>.<dc>.<domain>. 0 or DG_ENOTFOUND. */
int dg_tls_peer_identity(const nng_sockaddr *remote, char *role, size_t rlen, char *dc,
			 size_t dlen);

/* Counters for /v1/agent/metrics. */
struct dg_tls_stats {
	uint64_t handshakes_ok;
	uint64_t handshakes_failed;
	uint64_t reloads;
};
void dg_tls_stats(struct dg_tls_stats *out);

/* ---- certificates made by dcgate (pki.c) ----
 * What `dcgate tls ca create` and `dcgate tls cert create` write, with Consul's file names.
 * Neither function keeps any pointer it is given. */

enum dg_tls_role { DG_TLS_ROLE_SERVER, DG_TLS_ROLE_CLIENT, DG_TLS_ROLE_CLI };

struct dg_tls_ca_opts {
	const char *dir;	  /* where to write; NULL or "." is the current directory */
	const char *domain;	  /* NULL: "consul" (file names and name constraint) */
	int days;		  /* 0: 1825, Consul's five years */
	bool name_constraint;	  /* limit the CA to <domain>, localhost and constraints[] */
	const char **constraints; /* additional permitted DNS names */
	size_t nconstraints;
	const char *common_name; /* NULL: "Consul Agent CA <serial>" as Consul names it */
};

struct dg_tls_cert_opts {
	const char *dir; /* where to write; NULL or "." is the current directory */
	enum dg_tls_role role;
	const char *dc;		 /* NULL: "dc1", Consul's default */
	const char *domain;	 /* NULL: "consul" */
	const char *node;	 /* servers only: adds <node>.server.<dc>.<domain> */
	int days;		 /* 0: 365 */
	const char *ca_file;	 /* NULL: <dir>/<domain>-agent-ca.pem; else taken as given */
	const char *ca_key_file; /* NULL: <dir>/<domain>-agent-ca-key.pem */
	const char **dns;	 /* additional DNS SANs */
	size_t ndns;
	const char **ips; /* additional IP SANs */
	size_t nips;
};

#define DG_TLS_PATH_MAX 4096
/* What was written (cert, key: the names as Consul prints them, inside dir) and, for
 * certificates, the CA files used. */
struct dg_tls_written {
	char cert[DG_TLS_PATH_MAX];
	char key[DG_TLS_PATH_MAX];
	char ca[DG_TLS_PATH_MAX];
	char ca_key[DG_TLS_PATH_MAX];
};

/* Writes a new CA (EC P-256): <domain>-agent-ca.pem and <domain>-agent-ca-key.pem (0600). Never
 * overwrites. Returns 0, or an error with Consul's message in err ("consul-agent-ca.pem already
 * exists."). */
int dg_tls_ca_create_opts(const struct dg_tls_ca_opts *o, struct dg_tls_written *out, char *err,
			  size_t errlen);
/* Writes <dc>-<role>-<domain>-<n>.pem and -key.pem (0600), n the first number for which
 * neither exists, signed by the CA and checked against it before anything is written. Returns
 * 0, or an error with Consul's message in err. */
int dg_tls_cert_create_opts(const struct dg_tls_cert_opts *o, struct dg_tls_written *out, char *err,
			    size_t errlen);

/* The short forms, for callers that need no more (tests, tools). `dcgate tls ca create`: writes <domain>-agent-ca.pem and <domain>-agent-ca-key.pem (0600)
 * into dir. EC P-256. name_constraint limits the CA to <domain>, localhost and the given names.
 * Returns 0 or an error with msg; on success msg lists the files written. */
int dg_tls_ca_create(const char *dir, const char *domain, int days, bool name_constraint,
		     char *msg, size_t msglen);
struct dg_tls_cert_req {
	bool server;        /* else a client certificate */
	const char *dc;
	const char *domain;
	int days;
	const char *ca_file, *ca_key_file; /* default: <domain>-agent-ca.pem / -key.pem in dir */
	const char **dns;   /* additional DNS SANs */
	size_t ndns;
	const char **ips;   /* additional IP SANs */
	size_t nips;
};
/* `dcgate tls cert create`: writes <dc>-server-<domain>-<n>.pem and -key.pem (0600), n counting
 * up from 0 to the first unused. Servers get SANs server.<dc>.<domain>, localhost, 127.0.0.1
 * and usages serverAuth+clientAuth; clients client.<dc>.<domain>, localhost, clientAuth. */
int dg_tls_cert_create(const char *dir, const struct dg_tls_cert_req *req, char *msg,
		       size_t msglen);

#endif
