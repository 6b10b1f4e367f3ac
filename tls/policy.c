/* tls policy: turns Consul's TLS config keys into a struct dg_tls_policy, and checks this agent's
 * own certificate against its role and datacenter before any link uses it, so a wrong file is
 * reported at start (and on reload) with a message that says what is wrong, not at the first
 * failed handshake. The nng engine (engine.c) consumes the policy; nothing here does I/O besides
 * reading the configured PEM files. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "tls/tls.h"
#include "tls/internal.h"

/* Every error of this file falls back to one text when even formatting fails. */
#define set_err(err, errlen, ...) dg__tls_err(err, errlen, "invalid TLS configuration", __VA_ARGS__)

#define MOD "tls"

/* A certificate expiring sooner than this is logged as a warning at every check (start, reload),
 * so operators see it days before links start failing. */
#define EXPIRY_WARN_DAYS 30.0
/* ca_path is read file by file (as Consul does, no c_rehash links needed); a directory holding
 * more than this many entries is a mistake, not a CA bundle. */
#define MAX_CA_PATH_FILES 1000
/* Certificates beyond the first in cert_file are intermediates; a real chain is a handful. */
#define MAX_CHAIN_CERTS 16
/* Longest list of SAN entries quoted back in an error; the rest are cut to " ...". */
#define MAX_SAN_TEXT 512

/* ---- policy from config ---- */

/* One layer of settings as found in the config (NULL / -1 when the layer does not set it). The
 * layers are, lowest first: the deprecated top-level keys, tls.defaults, tls.internal_rpc. */
struct layer {
	const char *ca_file, *ca_path, *cert_file, *key_file;
	int verify_incoming, verify_outgoing, verify_server_hostname; /* -1 unset, 0, 1 */
	int min_version;					      /* 0 unset */
};

static void layer_init(struct layer *l)
{
	memset(l, 0, sizeof(*l));
	l->verify_incoming = l->verify_outgoing = l->verify_server_hostname = -1;
}

/* Short JSON type names for error messages. */
static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		return "null";
	}
	return "a value";
}

/* A file name key. An empty string counts as unset, as in Consul, so an override file can clear
 * nothing by accident; the string stays owned by cfg. */
static int get_path(const char *where, const char *key, json_t *v, const char **out, char *err,
		    size_t errlen)
{
	if (json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return set_err(err, errlen, "%s%s: expected a string, got %s", where, key,
			       json_kind(v));
	const char *s = json_string_value(v);
	if (s[0] != 0)
		*out = s;
	return 0;
}

/* Consul decodes its config weakly typed, so "true"/"false" strings are accepted beside JSON
 * booleans; anything else is an error naming the key and the value. */
static int get_bool(const char *where, const char *key, json_t *v, int *out, char *err,
		    size_t errlen)
{
	bool b;
	if (json_is_null(v))
		return 0;
	if (json_is_boolean(v)) {
		*out = json_is_true(v);
		return 0;
	}
	if (json_is_string(v) && dg_parse_bool(json_string_value(v), &b) == 0) {
		*out = b;
		return 0;
	}
	if (json_is_string(v))
		return set_err(err, errlen, "%s%s: invalid value \"%s\" (want true or false)",
			       where, key, json_string_value(v));
	return set_err(err, errlen, "%s%s: expected a boolean, got %s", where, key, json_kind(v));
}

/* Consul's names for TLS versions: TLSv1_x since 1.12, tlsNN before. TLS_AUTO means the
 * default. TLS 1.0 and 1.1 are refused outright rather than silently raised: an operator who
 * asked for them should learn that dcgate will not speak them. */
static int get_version(const char *where, const char *key, json_t *v, int *out, char *err,
		       size_t errlen)
{
	static const struct {
		const char *name;
		int version; /* 0: the default; -1: too old */
	} names[] = {
	    {"TLSv1_3", TLS1_3_VERSION},
	    {"tls13", TLS1_3_VERSION},
	    {"TLSv1_2", TLS1_2_VERSION},
	    {"tls12", TLS1_2_VERSION},
	    {"TLS_AUTO", 0},
	    {"TLSv1_1", -1},
	    {"tls11", -1},
	    {"TLSv1_0", -1},
	    {"tls10", -1},
	};
	if (json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return set_err(err, errlen, "%s%s: expected a string, got %s", where, key,
			       json_kind(v));
	const char *s = json_string_value(v);
	if (s[0] == 0)
		return 0;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i].name) != 0)
			continue;
		if (names[i].version < 0)
			return dg__tls_err(
			    err, errlen, "invalid TLS configuration",
			    "%s%s: \"%s\" is not allowed; TLS 1.2 is the lowest version "
			    "dcgate speaks (use \"TLSv1_2\" or \"TLSv1_3\")",
			    where, key, s);
		*out = names[i].version ? names[i].version : TLS1_2_VERSION;
		return 0;
	}
	return dg__tls_err(
	    err, errlen, "invalid TLS configuration",
	    "%s%s: unknown value \"%s\" (want \"TLSv1_2\", \"TLSv1_3\", \"tls12\" or "
	    "\"tls13\")",
	    where, key, s);
}

/* Reads one of tls.defaults / tls.internal_rpc. verify_server_hostname belongs to internal_rpc in
 * Consul; it is taken in defaults too because older generated configs put it there and it can
 * only mean the RPC links. Keys Consul knows but dcgate does not use (cipher suites) are
 * accepted and ignored; any other key is an error, as in Consul. */
static int read_stanza(const char *where, json_t *obj, struct layer *l, char *err, size_t errlen)
{
	const char *key;
	json_t *v;
	int rv;

	if (!json_is_object(obj))
		return set_err(err, errlen, "%.*s: expected an object, got %s",
			       (int)(strlen(where) - 1), where, json_kind(obj));
	json_object_foreach(obj, key, v)
	{
		if (strcmp(key, "ca_file") == 0)
			rv = get_path(where, key, v, &l->ca_file, err, errlen);
		else if (strcmp(key, "ca_path") == 0)
			rv = get_path(where, key, v, &l->ca_path, err, errlen);
		else if (strcmp(key, "cert_file") == 0)
			rv = get_path(where, key, v, &l->cert_file, err, errlen);
		else if (strcmp(key, "key_file") == 0)
			rv = get_path(where, key, v, &l->key_file, err, errlen);
		else if (strcmp(key, "verify_incoming") == 0)
			rv = get_bool(where, key, v, &l->verify_incoming, err, errlen);
		else if (strcmp(key, "verify_outgoing") == 0)
			rv = get_bool(where, key, v, &l->verify_outgoing, err, errlen);
		else if (strcmp(key, "verify_server_hostname") == 0)
			rv = get_bool(where, key, v, &l->verify_server_hostname, err, errlen);
		else if (strcmp(key, "tls_min_version") == 0)
			rv = get_version(where, key, v, &l->min_version, err, errlen);
		else if (strcmp(key, "tls_cipher_suites") == 0)
			rv = 0;
		else
			rv = set_err(err, errlen, "%s%s: unknown TLS config key", where, key);
		if (rv != 0)
			return rv;
	}
	return 0;
}

/* The deprecated top-level keys. Only the TLS ones are looked at; the rest of the agent config is
 * someone else's. verify_incoming_rpc is Consul's older name for RPC-only verify_incoming, so it
 * lands in the internal_rpc layer when that layer does not set it. */
static int read_legacy(json_t *cfg, struct layer *l, struct layer *rpc, char *err, size_t errlen)
{
	static const char *const deprecated[][2] = {
	    {"ca_file", "tls.defaults.ca_file"},
	    {"ca_path", "tls.defaults.ca_path"},
	    {"cert_file", "tls.defaults.cert_file"},
	    {"key_file", "tls.defaults.key_file"},
	    {"verify_incoming", "tls.defaults.verify_incoming"},
	    {"verify_incoming_rpc", "tls.internal_rpc.verify_incoming"},
	    {"verify_outgoing", "tls.defaults.verify_outgoing"},
	    {"verify_server_hostname", "tls.internal_rpc.verify_server_hostname"},
	    {"tls_min_version", "tls.defaults.tls_min_version"},
	};
	int rv = 0;
	json_t *v;

	if ((v = json_object_get(cfg, "ca_file")))
		rv = get_path("", "ca_file", v, &l->ca_file, err, errlen);
	if (!rv && (v = json_object_get(cfg, "ca_path")))
		rv = get_path("", "ca_path", v, &l->ca_path, err, errlen);
	if (!rv && (v = json_object_get(cfg, "cert_file")))
		rv = get_path("", "cert_file", v, &l->cert_file, err, errlen);
	if (!rv && (v = json_object_get(cfg, "key_file")))
		rv = get_path("", "key_file", v, &l->key_file, err, errlen);
	if (!rv && (v = json_object_get(cfg, "verify_incoming")))
		rv = get_bool("", "verify_incoming", v, &l->verify_incoming, err, errlen);
	if (!rv && (v = json_object_get(cfg, "verify_outgoing")))
		rv = get_bool("", "verify_outgoing", v, &l->verify_outgoing, err, errlen);
	if (!rv && (v = json_object_get(cfg, "verify_server_hostname")))
		rv = get_bool("", "verify_server_hostname", v, &l->verify_server_hostname, err,
			      errlen);
	if (!rv && (v = json_object_get(cfg, "tls_min_version")))
		rv = get_version("", "tls_min_version", v, &l->min_version, err, errlen);
	if (!rv && (v = json_object_get(cfg, "verify_incoming_rpc"))) {
		int b = -1;
		rv = get_bool("", "verify_incoming_rpc", v, &b, err, errlen);
		if (!rv && rpc->verify_incoming < 0)
			rpc->verify_incoming = b;
	}
	if (rv != 0)
		return rv;
	/* Consul warns about each deprecated key it maps; so do we, with its wording. */
	for (size_t i = 0; i < sizeof(deprecated) / sizeof(deprecated[0]); i++) {
		if (json_object_get(cfg, deprecated[i][0]))
			DG_LOGW(MOD, "The '%s' field is deprecated. Use the '%s' field instead.",
				deprecated[i][0], deprecated[i][1]);
	}
	return 0;
}

static const char *pick_str(const char *lo, const char *mid, const char *hi)
{
	return hi ? hi : mid ? mid : lo;
}

static int pick_int(int unset, int lo, int mid, int hi)
{
	return hi != unset ? hi : mid != unset ? mid : lo;
}

static int dup_opt(const char *s, char **out)
{
	*out = NULL;
	if (!s)
		return 0;
	if (!(*out = dg_strdup(s)))
		return DG_ENOMEM;
	return 0;
}

int dg_tls_policy_from_config(json_t *cfg, const char *dc, const char *domain, bool server,
			      struct dg_tls_policy *out, char *err, size_t errlen)
{
	struct layer legacy, defaults, rpc;
	const char *key;
	json_t *tls, *v;
	int rv;

	memset(out, 0, sizeof(*out));
	layer_init(&legacy);
	layer_init(&defaults);
	layer_init(&rpc);
	if (err && errlen)
		err[0] = 0;
	if (cfg && !json_is_object(cfg))
		return set_err(err, errlen, "agent config: expected an object, got %s",
			       json_kind(cfg));

	/* The stanza first, so the legacy verify_incoming_rpc only fills what internal_rpc left. */
	if (cfg && (tls = json_object_get(cfg, "tls")) && !json_is_null(tls)) {
		if (!json_is_object(tls))
			return set_err(err, errlen, "tls: expected an object, got %s",
				       json_kind(tls));
		json_object_foreach(tls, key, v)
		{
			if (strcmp(key, "defaults") == 0)
				rv = read_stanza("tls.defaults.", v, &defaults, err, errlen);
			else if (strcmp(key, "internal_rpc") == 0)
				rv = read_stanza("tls.internal_rpc.", v, &rpc, err, errlen);
			else if (strcmp(key, "https") == 0 || strcmp(key, "grpc") == 0)
				rv = 0; /* other listeners' settings; read where they are used */
			else
				rv = set_err(err, errlen, "tls.%s: unknown TLS config key", key);
			if (rv != 0)
				return rv;
		}
	}
	if (cfg && (rv = read_legacy(cfg, &legacy, &rpc, err, errlen)) != 0)
		return rv;

	out->verify_incoming = pick_int(-1, legacy.verify_incoming, defaults.verify_incoming,
					rpc.verify_incoming) == 1;
	out->verify_outgoing = pick_int(-1, legacy.verify_outgoing, defaults.verify_outgoing,
					rpc.verify_outgoing) == 1;
	out->verify_server_hostname =
	    pick_int(-1, legacy.verify_server_hostname, defaults.verify_server_hostname,
		     rpc.verify_server_hostname) == 1;
	out->min_version = pick_int(0, legacy.min_version, defaults.min_version, rpc.min_version);
	if (out->min_version == 0)
		out->min_version =
		    TLS1_2_VERSION; /* Consul's default; 1.3 is negotiated when both can */
	out->server = server;

	const char *ca_file = pick_str(legacy.ca_file, defaults.ca_file, rpc.ca_file);
	const char *ca_path = pick_str(legacy.ca_path, defaults.ca_path, rpc.ca_path);
	const char *cert_file = pick_str(legacy.cert_file, defaults.cert_file, rpc.cert_file);
	const char *key_file = pick_str(legacy.key_file, defaults.key_file, rpc.key_file);

	/* Settings that cannot work together are refused here rather than found out at the first
	 * handshake: a half identity, or verification without anything to verify against. */
	if (cert_file && !key_file)
		return set_err(err, errlen, "tls: cert_file is set (%s) but key_file is not",
			       cert_file);
	if (key_file && !cert_file)
		return set_err(err, errlen, "tls: key_file is set (%s) but cert_file is not",
			       key_file);
	if ((out->verify_incoming || out->verify_outgoing) && !ca_file && !ca_path)
		return set_err(err, errlen, "tls: %s is set but neither ca_file nor ca_path is",
			       out->verify_incoming ? "verify_incoming" : "verify_outgoing");
	if (out->verify_incoming && !cert_file)
		return dg__tls_err(
		    err, errlen, "invalid TLS configuration",
		    "tls: verify_incoming is set but there is no cert_file/key_file to "
		    "present to the peers");

	if ((rv = dup_opt(ca_file, &out->ca_file)) != 0 ||
	    (rv = dup_opt(ca_path, &out->ca_path)) != 0 ||
	    (rv = dup_opt(cert_file, &out->cert_file)) != 0 ||
	    (rv = dup_opt(key_file, &out->key_file)) != 0 ||
	    (rv = dup_opt(domain && domain[0] ? domain : "consul", &out->domain)) != 0 ||
	    (rv = dup_opt(dc && dc[0] ? dc : "dc1", &out->dc)) != 0) {
		dg_tls_policy_fini(out);
		set_err(err, errlen, "tls: %s", dg_strerror(rv));
		return rv;
	}
	return 0;
}

void dg_tls_policy_fini(struct dg_tls_policy *p)
{
	if (!p)
		return;
	free(p->ca_file);
	free(p->ca_path);
	free(p->cert_file);
	free(p->key_file);
	free(p->domain);
	free(p->dc);
	memset(p, 0, sizeof(*p));
}

bool dg_tls_policy_has_identity(const struct dg_tls_policy *p)
{
	return p && p->cert_file && p->cert_file[0] && p->key_file && p->key_file[0];
}

/* ---- reading PEM files ---- */

/* Never prompt on the terminal for a passphrase: an encrypted key is an error for an agent. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* OpenSSL's reason for the last failure, or a fallback; clears the queue so later errors are
 * not blamed on this one. */
static const char *ossl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	ERR_clear_error();
	return r ? r : fallback;
}

/* Reads the first certificate of a PEM file and, when chain is given, the ones after it
 * (intermediates). The caller owns *cert and *chain. */
static int read_cert_file(const char *path, X509 **cert, STACK_OF(X509) * *chain, char *err,
			  size_t errlen)
{
	*cert = NULL;
	if (chain)
		*chain = NULL;
	FILE *f = fopen(path, "r");
	if (!f)
		return set_err(err, errlen, "cannot open certificate %s: %s", path,
			       strerror(errno));
	*cert = PEM_read_X509(f, NULL, no_passphrase_cb, NULL);
	if (!*cert) {
		fclose(f);
		return set_err(err, errlen, "%s holds no PEM certificate (%s)", path,
			       ossl_reason("no CERTIFICATE block"));
	}
	if (chain) {
		X509 *x;
		if (!(*chain = sk_X509_new_null()))
			goto nomem;
		for (int i = 0;
		     i < MAX_CHAIN_CERTS && (x = PEM_read_X509(f, NULL, no_passphrase_cb, NULL));
		     i++) {
			if (!sk_X509_push(*chain, x)) {
				X509_free(x);
				goto nomem;
			}
		}
		/* running off the end of the file is how the loop ends */
		ERR_clear_error();
	}
	fclose(f);
	return 0;
nomem:
	fclose(f);
	X509_free(*cert);
	*cert = NULL;
	sk_X509_pop_free(*chain, X509_free);
	*chain = NULL;
	return set_err(err, errlen, "reading %s: %s", path, dg_strerror(DG_ENOMEM));
}

/* Adds every certificate of a PEM file to the store; returns how many were added. */
static int store_add_file(X509_STORE *store, const char *path, int *added, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	if (!f)
		return set_err(err, errlen, "cannot open CA file %s: %s", path, strerror(errno));
	while ((x = PEM_read_X509(f, NULL, no_passphrase_cb, NULL))) {
		/* a CA listed twice is harmless; OpenSSL 3 accepts duplicates */
		if (X509_STORE_add_cert(store, x) != 1) {
			X509_free(x);
			fclose(f);
			return set_err(err, errlen, "CA file %s: %s", path,
				       ossl_reason("cannot add certificate"));
		}
		X509_free(x);
		(*added)++;
	}
	ERR_clear_error();
	fclose(f);
	return 0;
}

/* The trust store of the policy: ca_file and every PEM file in ca_path. The caller frees it. */
static int load_ca_store(const struct dg_tls_policy *p, X509_STORE **out, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	int added = 0, rv = 0, files = 0;
	if (!store)
		return set_err(err, errlen, "CA store: %s", dg_strerror(DG_ENOMEM));
	if (p->ca_file && (rv = store_add_file(store, p->ca_file, &added, err, errlen)) != 0)
		goto fail;
	if (p->ca_file && added == 0) {
		rv = set_err(err, errlen, "CA file %s holds no PEM certificate", p->ca_file);
		goto fail;
	}
	if (p->ca_path) {
		DIR *d = opendir(p->ca_path);
		struct dirent *de;
		if (!d) {
			rv = set_err(err, errlen, "cannot open ca_path %s: %s", p->ca_path,
				     strerror(errno));
			goto fail;
		}
		while ((de = readdir(d))) {
			char path[4096];
			struct stat st;
			if (de->d_name[0] == '.')
				continue;
			if (++files > MAX_CA_PATH_FILES) {
				closedir(d);
				rv = set_err(err, errlen, "ca_path %s holds more than %d files",
					     p->ca_path, MAX_CA_PATH_FILES);
				goto fail;
			}
			int n = snprintf(path, sizeof(path), "%s/%s", p->ca_path, de->d_name);
			if (n < 0 || (size_t)n >= sizeof(path))
				continue; /* a name too long to open cannot hold our CA */
			if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			if ((rv = store_add_file(store, path, &added, err, errlen)) != 0) {
				closedir(d);
				goto fail;
			}
		}
		closedir(d);
		if (added == 0) {
			rv =
			    set_err(err, errlen, "ca_path %s holds no PEM certificate", p->ca_path);
			goto fail;
		}
	}
	*out = store;
	return 0;
fail:
	X509_STORE_free(store);
	return rv;
}

/* "Mar  1 12:00:00 2027 GMT" */
static void format_time(const ASN1_TIME *t, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long n;
	buf[0] = 0;
	if (!b)
		return;
	if (ASN1_TIME_print(b, t) == 1 && (n = BIO_get_mem_data(b, &data)) > 0) {
		size_t m = (size_t)n < len - 1 ? (size_t)n : len - 1;
		memcpy(buf, data, m);
		buf[m] = 0;
	}
	BIO_free(b);
}

static double days_until(const ASN1_TIME *t)
{
	int day = 0, sec = 0;
	if (ASN1_TIME_diff(&day, &sec, NULL, t) != 1)
		return 0;
	return day + sec / 86400.0;
}

/* Lists the DNS, IP and URI names of the certificate's SAN as "DNS:a, DNS:b, IP:127.0.0.1" into
 * buf, or "no DNS or IP names" when it has none. */
static void san_text(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	struct dg_buf b;
	int rv = 0;

	dg_buf_init(&b);
	for (int i = 0; rv == 0 && gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *sep = b.len ? ", " : "";
		char ip[INET6_ADDRSTRLEN];
		if (g->type == GEN_DNS) {
			rv = dg_buf_appendf(&b, "%sDNS:%.*s", sep, g->d.dNSName->length,
					    (const char *)g->d.dNSName->data);
		} else if (g->type == GEN_URI) {
			rv = dg_buf_appendf(&b, "%sURI:%.*s", sep,
					    g->d.uniformResourceIdentifier->length,
					    (const char *)g->d.uniformResourceIdentifier->data);
		} else if (g->type == GEN_IPADD) {
			const ASN1_OCTET_STRING *a = g->d.iPAddress;
			int af = a->length == 4 ? AF_INET : a->length == 16 ? AF_INET6 : 0;
			if (af && inet_ntop(af, a->data, ip, sizeof(ip)))
				rv = dg_buf_appendf(&b, "%sIP:%s", sep, ip);
		}
	}
	GENERAL_NAMES_free(gens);
	/* an error message needs the gist, not every one of a hundred names */
	if (rv != 0 || b.len == 0) {
		int n = snprintf(buf, len, "%s",
				 rv ? "names that could not be listed" : "no DNS or IP names");
		if (n < 0)
			buf[0] = 0;
	} else if (b.len < len && b.len <= MAX_SAN_TEXT) {
		memcpy(buf, b.data, b.len + 1);
	} else {
		size_t keep = len - 1 < MAX_SAN_TEXT ? len - 1 : MAX_SAN_TEXT;
		int n = snprintf(buf, len, "%.*s ...", (int)(keep > 4 ? keep - 4 : 0), b.data);
		if (n < 0)
			buf[0] = 0;
	}
	dg_buf_fini(&b);
}

/* The extended key usages a certificate allows, for messages: "serverAuth, clientAuth". */
static void eku_text(uint32_t xku, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s%s%s", (xku & XKU_SSL_SERVER) ? "serverAuth" : "",
			 (xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT) ? ", " : "",
			 (xku & XKU_SSL_CLIENT) ? "clientAuth" : "");
	if (n == 0 || (n < 0 && len > 0))
		n = snprintf(buf, len, "neither serverAuth nor clientAuth");
	if (n < 0 && len > 0)
		buf[0] = 0;
}

static int read_key_file(const char *path, EVP_PKEY **key, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	*key = NULL;
	if (!f)
		return set_err(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
	*key = PEM_read_PrivateKey(f, NULL, no_passphrase_cb, NULL);
	fclose(f);
	if (!*key)
		return dg__tls_err(
		    err, errlen,
		    "key file %s holds no usable PEM private key (%s; encrypted keys are "
		    "not supported)",
		    path, ossl_reason("no PRIVATE KEY block"));
	return 0;
}

/* Verifies cert (with the intermediates in chain) against the policy's CA files. */
static int check_chain(const struct dg_tls_policy *p, X509 *cert, STACK_OF(X509) * chain, char *err,
		       size_t errlen)
{
	X509_STORE *store = NULL;
	X509_STORE_CTX *ctx = NULL;
	const char *ca = p->ca_file ? p->ca_file : p->ca_path;
	int rv;

	if ((rv = load_ca_store(p, &store, err, errlen)) != 0)
		return rv;
	if (!(ctx = X509_STORE_CTX_new()) || X509_STORE_CTX_init(ctx, store, cert, chain) != 1) {
		rv = set_err(err, errlen, "CA store: %s", dg_strerror(DG_ENOMEM));
		goto out;
	}
	if (X509_verify_cert(ctx) != 1) {
		int code = X509_STORE_CTX_get_error(ctx);
		int depth = X509_STORE_CTX_get_error_depth(ctx);
		X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
		char subj[256] = "";
		if (bad)
			X509_NAME_oneline(X509_get_subject_name(bad), subj, sizeof(subj));
		if (depth == 0)
			rv = set_err(err, errlen,
				     "certificate %s does not verify against the CA in %s: %s",
				     p->cert_file, ca, X509_verify_cert_error_string(code));
		else
			rv = dg__tls_err(
			    err, errlen,
			    "certificate %s does not verify against the CA in %s: %s (at %s)",
			    p->cert_file, ca, X509_verify_cert_error_string(code), subj);
		goto out;
	}
	rv = 0;
out:
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rv;
}

int dg_tls_check_own(const struct dg_tls_policy *p, char *err, size_t errlen)
{
	X509 *cert = NULL;
	STACK_OF(X509) *chain = NULL;
	EVP_PKEY *key = NULL;
	char when[64], want[512], names[MAX_SAN_TEXT + 8];
	const char *role;
	int rv, n;

	if (err && errlen)
		err[0] = 0;
	if (!dg_tls_policy_has_identity(p))
		return set_err(err, errlen, "tls: no cert_file and key_file configured");
	role = p->server ? "server" : "client";
	n = snprintf(want, sizeof(want), "%s.%s.%s", role, p->dc ? p->dc : "dc1",
		     p->domain ? p->domain : "consul");
	if (n < 0 || (size_t)n >= sizeof(want))
		return set_err(err, errlen, "tls: datacenter or domain name too long");

	if ((rv = read_cert_file(p->cert_file, &cert, &chain, err, errlen)) != 0)
		goto out;
	if ((rv = read_key_file(p->key_file, &key, err, errlen)) != 0)
		goto out;
	if (X509_check_private_key(cert, key) != 1) {
		ERR_clear_error();
		rv = set_err(err, errlen, "key file %s does not belong to certificate %s",
			     p->key_file, p->cert_file);
		goto out;
	}
	/* The time window first: "expired" says more than the chain's generic failure would. */
	if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
		format_time(X509_get0_notBefore(cert), when, sizeof(when));
		rv = set_err(err, errlen, "certificate %s is not valid before %s", p->cert_file,
			     when);
		goto out;
	}
	if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
		format_time(X509_get0_notAfter(cert), when, sizeof(when));
		rv = set_err(err, errlen, "certificate %s expired on %s", p->cert_file, when);
		goto out;
	}
	/* Without a CA nothing checks peers either (from_config refuses verify_* then), so the
	 * chain is only checked when there is something to check it against. */
	if ((p->ca_file || p->ca_path) && (rv = check_chain(p, cert, chain, err, errlen)) != 0)
		goto out;
	/* Consul (Go) matches names against the SAN only, wildcards allowed in the left label;
	 * the subject CN is never consulted, so NEVER_CHECK_SUBJECT. */
	if (X509_check_host(cert, want, 0,
			    X509_CHECK_FLAG_NEVER_CHECK_SUBJECT |
				X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
			    NULL) != 1) {
		san_text(cert, names, sizeof(names));
		rv = set_err(err, errlen,
			     "certificate %s carries %s but a %s of datacenter %s needs DNS:%s",
			     p->cert_file, names, p->server ? "server" : "client agent",
			     p->dc ? p->dc : "dc1", want);
		goto out;
	}
	/* No extendedKeyUsage extension means every usage is allowed (RFC 5280 4.2.1.12). A server
	 * both accepts links and dials other servers, so it needs both; a client agent only dials.
	 */
	uint32_t flags = X509_get_extension_flags(cert);
	if (flags & EXFLAG_XKUSAGE) {
		uint32_t xku = X509_get_extended_key_usage(cert);
		uint32_t need = p->server ? (XKU_SSL_SERVER | XKU_SSL_CLIENT) : XKU_SSL_CLIENT;
		if (!(xku & XKU_ANYEKU) && (xku & need) != need) {
			char has[64];
			eku_text(xku, has, sizeof(has));
			rv = dg__tls_err(
			    err, errlen, "invalid TLS configuration",
			    "certificate %s allows %s but a %s needs %s (extendedKeyUsage)",
			    p->cert_file, has, p->server ? "server" : "client agent",
			    p->server ? "serverAuth and clientAuth" : "clientAuth");
			goto out;
		}
	}
	double days = days_until(X509_get0_notAfter(cert));
	if (days < EXPIRY_WARN_DAYS) {
		format_time(X509_get0_notAfter(cert), when, sizeof(when));
		DG_LOGW(MOD, "certificate %s expires in %.1f days (%s); make a new one and reload",
			p->cert_file, days, when);
	}
	rv = 0;
out:
	X509_free(cert);
	sk_X509_pop_free(chain, X509_free);
	EVP_PKEY_free(key);
	return rv;
}

int dg_tls_days_left(const char *pem_file, double *days)
{
	FILE *f = fopen(pem_file, "r");
	X509 *x;
	if (!f)
		return errno == ENOENT ? DG_ENOTFOUND : DG_EIO;
	x = PEM_read_X509(f, NULL, no_passphrase_cb, NULL);
	fclose(f);
	if (!x) {
		ERR_clear_error();
		return DG_EINVAL;
	}
	*days = days_until(X509_get0_notAfter(x));
	X509_free(x);
	return 0;
}
