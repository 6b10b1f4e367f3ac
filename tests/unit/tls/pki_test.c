/* Unit tests for tls/pki.c and tls/policy.c: a CA and agent certificates made in a temporary
 * directory and checked with OpenSSL (the library and the `openssl verify` command), the policy
 * read from every form of Consul's TLS keys, and the own-certificate check. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "tls/tls.h"

/* ---- helpers ---- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

/* A fresh directory per test; removed again in teardown. */
static int dir_setup(void **state)
{
	char *dir = strdup("/tmp/dcgate-pki-test-XXXXXX");
	if (!dir || !mkdtemp(dir)) {
		free(dir);
		return -1;
	}
	*state = dir;
	return 0;
}

static int dir_teardown(void **state)
{
	char *dir = *state;
	nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(dir);
	return 0;
}

static char *path_in(const char *dir, const char *name)
{
	char *p = NULL;
	assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

static bool exists(const char *dir, const char *name)
{
	char *p = path_in(dir, name);
	struct stat st;
	bool ok = stat(p, &st) == 0;
	free(p);
	return ok;
}

static mode_t file_mode(const char *dir, const char *name)
{
	char *p = path_in(dir, name);
	struct stat st;
	assert_int_equal(stat(p, &st), 0);
	free(p);
	return st.st_mode & 07777;
}

static X509 *load_cert(const char *dir, const char *name)
{
	char *p = path_in(dir, name);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	free(p);
	assert_non_null(x);
	return x;
}

/* The SAN of a certificate file as "DNS:a,DNS:b,IP:127.0.0.1" (IPv4 only is enough here). */
static void sans_of(const char *dir, const char *name, char *buf, size_t len)
{
	X509 *x = load_cert(dir, name);
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	size_t off = 0;
	buf[0] = 0;
	assert_non_null(gens);
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		int n = 0;
		if (g->type == GEN_DNS)
			n = snprintf(buf + off, len - off, "%sDNS:%.*s", off ? "," : "",
				     g->d.dNSName->length, (const char *)g->d.dNSName->data);
		else if (g->type == GEN_IPADD && g->d.iPAddress->length == 4)
			n = snprintf(buf + off, len - off, "%sIP:%d.%d.%d.%d", off ? "," : "",
				     g->d.iPAddress->data[0], g->d.iPAddress->data[1],
				     g->d.iPAddress->data[2], g->d.iPAddress->data[3]);
		assert_true(n >= 0 && (size_t)n < len - off);
		off += (size_t)n;
	}
	GENERAL_NAMES_free(gens);
	X509_free(x);
}

static uint32_t eku_of(const char *dir, const char *name)
{
	X509 *x = load_cert(dir, name);
	uint32_t flags = X509_get_extension_flags(x);
	uint32_t xku = (flags & EXFLAG_XKUSAGE) ? X509_get_extended_key_usage(x) : UINT32_MAX;
	X509_free(x);
	return xku;
}

/* Runs `openssl verify -CAfile <ca> <cert>` and returns its output (first line). */
static void openssl_verify(const char *dir, const char *ca, const char *cert, char *out, size_t len)
{
	char *cmd = NULL;
	assert_true(
	    asprintf(&cmd, "openssl verify -CAfile '%s/%s' '%s/%s' 2>&1", dir, ca, dir, cert) > 0);
	FILE *p = popen(cmd, "r");
	assert_non_null(p);
	out[0] = 0;
	if (!fgets(out, (int)len, p))
		out[0] = 0;
	pclose(p);
	free(cmd);
}

static void make_ca(const char *dir)
{
	char msg[512];
	assert_int_equal(dg_tls_ca_create(dir, "consul", 0, false, msg, sizeof(msg)), 0);
}

static void make_cert(const char *dir, bool server, const char *dc, char *msg, size_t msglen)
{
	struct dg_tls_cert_req req = {.server = server, .dc = dc, .domain = "consul"};
	int rv = dg_tls_cert_create(dir, &req, msg, msglen);
	if (rv != 0)
		fail_msg("cert create: %s", msg);
}

/* Re-signs a copy of a certificate of dir with the CA key and the validity window moved to
 * [now + from_days, now + to_days], saved as name: an expired or not yet valid certificate
 * with the same key, which the CLI would never make. */
static void resign_window(const char *dir, const char *src, const char *name, long from_days,
			  long to_days)
{
	X509 *x = load_cert(dir, src);
	char *kp = path_in(dir, "consul-agent-ca-key.pem"), *out = path_in(dir, name);
	FILE *f = fopen(kp, "r");
	assert_non_null(f);
	EVP_PKEY *ca_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	assert_non_null(ca_key);
	assert_non_null(X509_time_adj_ex(X509_getm_notBefore(x), (int)from_days, 0, NULL));
	assert_non_null(X509_time_adj_ex(X509_getm_notAfter(x), (int)to_days, 0, NULL));
	assert_true(X509_sign(x, ca_key, EVP_sha256()) > 0);
	f = fopen(out, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
	EVP_PKEY_free(ca_key);
	X509_free(x);
	free(kp);
	free(out);
}

/* A policy for this agent with the given files (relative to dir). */
static void policy_for(const char *dir, const char *dc, bool server, const char *cert,
		       const char *key, struct dg_tls_policy *p)
{
	char err[512];
	char *ca_p = path_in(dir, "consul-agent-ca.pem"), *cert_p = path_in(dir, cert),
	     *key_p = path_in(dir, key);
	json_t *cfg = json_pack("{s:{s:{s:s,s:s,s:s,s:b,s:b}}}", "tls", "defaults", "ca_file", ca_p,
				"cert_file", cert_p, "key_file", key_p, "verify_incoming", 1,
				"verify_outgoing", 1);
	assert_non_null(cfg);
	int rv = dg_tls_policy_from_config(cfg, dc, "consul", server, p, err, sizeof(err));
	if (rv != 0)
		fail_msg("policy: %s", err);
	json_decref(cfg);
	free(ca_p);
	free(cert_p);
	free(key_p);
}

/* ---- certificates ---- */

static void ca_files_modes_and_no_overwrite(void **state)
{
	const char *dir = *state;
	char msg[512];
	assert_int_equal(dg_tls_ca_create(dir, "consul", 0, false, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "==> Saved consul-agent-ca.pem"));
	assert_non_null(strstr(msg, "==> Saved consul-agent-ca-key.pem"));
	assert_true(exists(dir, "consul-agent-ca.pem"));
	assert_int_equal(file_mode(dir, "consul-agent-ca-key.pem"), 0600);

	X509 *ca = load_cert(dir, "consul-agent-ca.pem");
	char cn[256];
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(ca), NID_commonName, cn,
					      sizeof(cn)) > 0);
	assert_memory_equal(cn, "Consul Agent CA ", 16);
	assert_true(X509_check_ca(ca) > 0);
	/* Consul's CA lasts five years by default */
	int day, sec;
	assert_int_equal(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(ca)), 1);
	assert_true(day >= 1824 && day <= 1825);
	X509_free(ca);

	/* refuses to overwrite, with Consul's message */
	assert_int_not_equal(dg_tls_ca_create(dir, "consul", 0, false, msg, sizeof(msg)), 0);
	assert_string_equal(msg, "consul-agent-ca.pem already exists.");

	/* the key is an EC P-256 key in the form Consul reads */
	char *kp = path_in(dir, "consul-agent-ca-key.pem");
	FILE *f = fopen(kp, "r");
	char line[64] = "";
	assert_non_null(f);
	assert_non_null(fgets(line, sizeof(line), f));
	fclose(f);
	free(kp);
	assert_string_equal(line, "-----BEGIN EC PRIVATE KEY-----\n");
}

static void server_cert_verifies_and_carries_names(void **state)
{
	const char *dir = *state;
	char msg[512], out[512], sans[512];
	make_ca(dir);
	make_cert(dir, true, "dc1", msg, sizeof(msg));
	assert_non_null(strstr(msg, "==> Saved dc1-server-consul-0.pem"));
	assert_non_null(strstr(msg, "==> Saved dc1-server-consul-0-key.pem"));
	assert_int_equal(file_mode(dir, "dc1-server-consul-0-key.pem"), 0600);

	openssl_verify(dir, "consul-agent-ca.pem", "dc1-server-consul-0.pem", out, sizeof(out));
	assert_non_null(strstr(out, "dc1-server-consul-0.pem: OK"));

	sans_of(dir, "dc1-server-consul-0.pem", sans, sizeof(sans));
	assert_string_equal(sans, "DNS:server.dc1.consul,DNS:localhost,IP:127.0.0.1");
	uint32_t xku = eku_of(dir, "dc1-server-consul-0.pem");
	assert_true((xku & XKU_SSL_SERVER) && (xku & XKU_SSL_CLIENT));

	/* n counts up from 0 to the first unused number */
	make_cert(dir, true, "dc1", msg, sizeof(msg));
	assert_non_null(strstr(msg, "==> Saved dc1-server-consul-1.pem"));
	assert_true(exists(dir, "dc1-server-consul-1-key.pem"));
	assert_int_equal(file_mode(dir, "dc1-server-consul-1-key.pem"), 0600);
}

static void client_cert_and_extra_names(void **state)
{
	const char *dir = *state;
	char msg[512], out[512], sans[512];
	const char *dns[] = {" extra.example ", ""};
	const char *ips[] = {"10.1.2.3"};
	make_ca(dir);
	struct dg_tls_cert_req req = {.server = false,
				      .dc = "east",
				      .domain = "consul",
				      .days = 30,
				      .dns = dns,
				      .ndns = 2,
				      .ips = ips,
				      .nips = 1};
	assert_int_equal(dg_tls_cert_create(dir, &req, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "east-client-consul-0.pem"));
	openssl_verify(dir, "consul-agent-ca.pem", "east-client-consul-0.pem", out, sizeof(out));
	assert_non_null(strstr(out, ": OK"));
	/* names trimmed, empty ones skipped, Consul's order */
	sans_of(dir, "east-client-consul-0.pem", sans, sizeof(sans));
	assert_string_equal(
	    sans,
	    "DNS:extra.example,DNS:client.east.consul,DNS:localhost,IP:10.1.2.3,IP:127.0.0.1");
	uint32_t xku = eku_of(dir, "east-client-consul-0.pem");
	assert_true(xku & XKU_SSL_CLIENT);
	assert_int_equal(file_mode(dir, "east-client-consul-0-key.pem"), 0600);

	double days;
	char *p = path_in(dir, "east-client-consul-0.pem");
	assert_int_equal(dg_tls_days_left(p, &days), 0);
	assert_true(days > 29.9 && days <= 30.0);
	free(p);
	p = path_in(dir, "missing.pem");
	assert_int_equal(dg_tls_days_left(p, &days), DG_ENOTFOUND);
	free(p);

	/* a bad IP is refused and nothing is written */
	const char *bad_ip[] = {"1.2.3"};
	req.ips = bad_ip;
	assert_int_not_equal(dg_tls_cert_create(dir, &req, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "1.2.3"));
	assert_false(exists(dir, "east-client-consul-1.pem"));
}

static void cert_without_ca_fails_like_consul(void **state)
{
	const char *dir = *state;
	char msg[512];
	struct dg_tls_cert_req req = {.server = true, .dc = "dc1", .domain = "consul"};
	assert_int_not_equal(dg_tls_cert_create(dir, &req, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "Error reading CA: open "));
	assert_non_null(strstr(msg, "consul-agent-ca.pem: no such file or directory"));
	assert_false(exists(dir, "dc1-server-consul-0.pem"));
}

static void name_constrained_ca(void **state)
{
	const char *dir = *state;
	char msg[512], out[512];
	assert_int_equal(dg_tls_ca_create(dir, "consul", 30, true, msg, sizeof(msg)), 0);
	X509 *ca = load_cert(dir, "consul-agent-ca.pem");
	int crit = 0;
	NAME_CONSTRAINTS *nc = X509_get_ext_d2i(ca, NID_name_constraints, &crit, NULL);
	assert_non_null(nc);
	assert_int_equal(crit, 1);
	assert_int_equal(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 2);
	NAME_CONSTRAINTS_free(nc);
	X509_free(ca);

	make_cert(dir, true, "dc1", msg, sizeof(msg));
	openssl_verify(dir, "consul-agent-ca.pem", "dc1-server-consul-0.pem", out, sizeof(out));
	assert_non_null(strstr(out, ": OK"));

	/* a name outside the constraints is refused before anything is written */
	const char *dns[] = {"www.example.com"};
	struct dg_tls_cert_req req = {
	    .server = true, .dc = "dc1", .domain = "consul", .dns = dns, .ndns = 1};
	assert_int_not_equal(dg_tls_cert_create(dir, &req, msg, sizeof(msg)), 0);
	assert_non_null(strstr(msg, "subtree"));
	assert_false(exists(dir, "dc1-server-consul-1.pem"));
}

/* ---- the own-certificate check ---- */

static void check_own_accepts_and_rejects(void **state)
{
	const char *dir = *state;
	char msg[512], err[1024];
	struct dg_tls_policy p;
	make_ca(dir);
	make_cert(dir, true, "dc1", msg, sizeof(msg));	/* dc1-server-consul-0 */
	make_cert(dir, true, "dc2", msg, sizeof(msg));	/* dc2-server-consul-0 */
	make_cert(dir, false, "dc1", msg, sizeof(msg)); /* dc1-client-consul-0 */

	policy_for(dir, "dc1", true, "dc1-server-consul-0.pem", "dc1-server-consul-0-key.pem", &p);
	assert_true(dg_tls_policy_has_identity(&p));
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), 0);
	dg_tls_policy_fini(&p);

	/* a server certificate of another datacenter: both names in the message */
	policy_for(dir, "dc1", true, "dc2-server-consul-0.pem", "dc2-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "DNS:server.dc2.consul, DNS:localhost, IP:127.0.0.1"));
	assert_non_null(strstr(err, "but a server of datacenter dc1 needs DNS:server.dc1.consul"));
	assert_non_null(strstr(err, "dc2-server-consul-0.pem carries"));
	dg_tls_policy_fini(&p);

	/* a client agent's certificate does not make a server */
	policy_for(dir, "dc1", true, "dc1-client-consul-0.pem", "dc1-client-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "DNS:client.dc1.consul"));
	assert_non_null(strstr(err, "needs DNS:server.dc1.consul"));
	dg_tls_policy_fini(&p);

	/* ... but is right for a client agent */
	policy_for(dir, "dc1", false, "dc1-client-consul-0.pem", "dc1-client-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), 0);
	dg_tls_policy_fini(&p);

	/* expired, and not yet valid */
	resign_window(dir, "dc1-server-consul-0.pem", "expired.pem", -10, -1);
	policy_for(dir, "dc1", true, "expired.pem", "dc1-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "expired.pem expired on"));
	dg_tls_policy_fini(&p);
	resign_window(dir, "dc1-server-consul-0.pem", "future.pem", 2, 30);
	policy_for(dir, "dc1", true, "future.pem", "dc1-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "future.pem is not valid before"));
	dg_tls_policy_fini(&p);

	/* a server certificate that only allows serverAuth (made with the openssl command) */
	char *cmd = NULL;
	assert_true(
	    asprintf(&cmd,
		     "cd '%s' && printf 'subjectAltName=DNS:server.dc1.consul\\n"
		     "extendedKeyUsage=serverAuth\\n' > eku.ext && "
		     "openssl req -new -key dc1-server-consul-0-key.pem -subj /CN=x -out eku.csr "
		     "2>/dev/null && openssl x509 -req -in eku.csr -CA consul-agent-ca.pem "
		     "-CAkey consul-agent-ca-key.pem -set_serial 7 -days 10 -extfile eku.ext "
		     "-out eku.pem 2>/dev/null",
		     dir) > 0);
	assert_int_equal(system(cmd), 0);
	free(cmd);
	policy_for(dir, "dc1", true, "eku.pem", "dc1-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(
	    strstr(err, "allows serverAuth but a server needs serverAuth and clientAuth"));
	dg_tls_policy_fini(&p);

	/* the key of another certificate */
	policy_for(dir, "dc1", true, "dc1-server-consul-0.pem", "dc2-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "does not belong to certificate"));
	dg_tls_policy_fini(&p);
}

static void check_own_rejects_other_ca(void **state)
{
	const char *dir = *state;
	char msg[512], err[1024];
	struct dg_tls_policy p;
	char *other = path_in(dir, "other");
	assert_int_equal(mkdir(other, 0700), 0);
	make_ca(dir);
	make_ca(other);
	make_cert(other, true, "dc1", msg, sizeof(msg));
	/* the certificate and key of the other CA, checked against ours */
	policy_for(dir, "dc1", true, "other/dc1-server-consul-0.pem",
		   "other/dc1-server-consul-0-key.pem", &p);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "does not verify against the CA"));
	dg_tls_policy_fini(&p);
	free(other);
}

static void check_own_with_ca_path(void **state)
{
	const char *dir = *state;
	char msg[512], err[1024];
	struct dg_tls_policy p;
	char *cas = path_in(dir, "cas");
	assert_int_equal(mkdir(cas, 0700), 0);
	make_ca(cas);
	make_cert(cas, true, "dc1", msg, sizeof(msg));
	char *cert = path_in(cas, "dc1-server-consul-0.pem");
	char *key = path_in(cas, "dc1-server-consul-0-key.pem");
	char *kp = path_in(cas, "consul-agent-ca-key.pem");
	char *notes = path_in(cas, "notes.txt");
	/* leave only certificates and one unrelated file in the CA directory */
	char *moved_key = path_in(dir, "server-key.pem");
	char *moved_cert = path_in(dir, "server.pem");
	assert_int_equal(rename(key, moved_key), 0);
	assert_int_equal(rename(cert, moved_cert), 0);
	assert_int_equal(unlink(kp), 0);
	FILE *f = fopen(notes, "w");
	assert_non_null(f);
	fputs("not a certificate\n", f);
	fclose(f);
	json_t *cfg = json_pack("{s:s,s:s,s:s,s:b}", "ca_path", cas, "cert_file", moved_cert,
				"key_file", moved_key, "verify_outgoing", 1);
	assert_int_equal(dg_tls_policy_from_config(cfg, "dc1", NULL, true, &p, err, sizeof(err)),
			 0);
	assert_string_equal(p.ca_path, cas);
	assert_int_equal(dg_tls_check_own(&p, err, sizeof(err)), 0);
	dg_tls_policy_fini(&p);
	json_decref(cfg);
	free(cas);
	free(cert);
	free(key);
	free(kp);
	free(notes);
	free(moved_key);
	free(moved_cert);
}

/* ---- policy parsing ---- */

static int parse(const char *json, bool server, struct dg_tls_policy *p, char *err, size_t len)
{
	json_error_t jerr;
	json_t *cfg = json ? json_loads(json, 0, &jerr) : NULL;
	if (json && !cfg)
		fail_msg("bad test JSON: %s", jerr.text);
	int rv = dg_tls_policy_from_config(cfg, "dc1", "consul", server, p, err, len);
	json_decref(cfg);
	return rv;
}

static void policy_defaults(void **state)
{
	struct dg_tls_policy p;
	char err[256];
	assert_int_equal(parse(NULL, true, &p, err, sizeof(err)), 0);
	assert_null(p.ca_file);
	assert_null(p.cert_file);
	assert_false(p.verify_incoming || p.verify_outgoing || p.verify_server_hostname);
	assert_int_equal(p.min_version, TLS1_2_VERSION);
	assert_string_equal(p.domain, "consul");
	assert_string_equal(p.dc, "dc1");
	assert_true(p.server);
	assert_false(dg_tls_policy_has_identity(&p));
	dg_tls_policy_fini(&p);
	dg_tls_policy_fini(NULL);
	assert_int_equal(parse("{\"tls\": {}}", false, &p, err, sizeof(err)), 0);
	assert_int_equal(p.min_version, TLS1_2_VERSION);
	dg_tls_policy_fini(&p);
}

static void policy_legacy_keys(void **state)
{
	struct dg_tls_policy p;
	char err[256];
	assert_int_equal(parse("{\"ca_file\": \"ca.pem\", \"ca_path\": \"cas\", \"cert_file\": "
			       "\"c.pem\", \"key_file\": \"k.pem\", \"verify_incoming\": true, "
			       "\"verify_outgoing\": true, \"verify_server_hostname\": true, "
			       "\"tls_min_version\": \"tls13\"}",
			       true, &p, err, sizeof(err)),
			 0);
	assert_string_equal(p.ca_file, "ca.pem"); /* relative paths as given */
	assert_string_equal(p.ca_path, "cas");
	assert_string_equal(p.cert_file, "c.pem");
	assert_string_equal(p.key_file, "k.pem");
	assert_true(p.verify_incoming && p.verify_outgoing && p.verify_server_hostname);
	assert_int_equal(p.min_version, TLS1_3_VERSION);
	assert_true(dg_tls_policy_has_identity(&p));
	dg_tls_policy_fini(&p);
}

static void policy_stanza_and_overrides(void **state)
{
	struct dg_tls_policy p;
	char err[256];
	/* tls.defaults wins over the legacy keys; tls.internal_rpc wins over tls.defaults */
	assert_int_equal(
	    parse("{\"ca_file\": \"legacy-ca.pem\", \"verify_outgoing\": false, "
		  "\"tls_min_version\": \"tls12\", \"verify_server_hostname\": false,"
		  " \"tls\": {"
		  "  \"defaults\": {\"ca_file\": \"d-ca.pem\", \"cert_file\": \"d.pem\", "
		  "\"key_file\": "
		  "\"d-key.pem\", \"verify_incoming\": true, \"verify_outgoing\": true, "
		  "\"tls_min_version\": \"TLSv1_3\", \"verify_server_hostname\": \"true\"},"
		  "  \"internal_rpc\": {\"cert_file\": \"r.pem\", \"key_file\": \"r-key.pem\", "
		  "\"verify_incoming\": false, \"tls_min_version\": \"TLSv1_2\"},"
		  "  \"https\": {\"cert_file\": \"web.pem\"}}}",
		  true, &p, err, sizeof(err)),
	    0);
	assert_string_equal(p.ca_file, "d-ca.pem");
	assert_string_equal(p.cert_file, "r.pem");
	assert_string_equal(p.key_file, "r-key.pem");
	assert_false(p.verify_incoming);
	assert_true(p.verify_outgoing);
	assert_true(p.verify_server_hostname);
	assert_int_equal(p.min_version, TLS1_2_VERSION);
	dg_tls_policy_fini(&p);

	/* verify_server_hostname in internal_rpc, and the legacy verify_incoming_rpc */
	assert_int_equal(
	    parse("{\"ca_file\": \"ca.pem\", \"cert_file\": \"c.pem\", \"key_file\": "
		  "\"k.pem\", \"verify_incoming_rpc\": true, \"tls\": {\"internal_rpc\": "
		  "{\"verify_server_hostname\": true, \"tls_min_version\": \"tls13\"}}}",
		  false, &p, err, sizeof(err)),
	    0);
	assert_true(p.verify_incoming);
	assert_true(p.verify_server_hostname);
	assert_false(p.verify_outgoing);
	assert_int_equal(p.min_version, TLS1_3_VERSION);
	dg_tls_policy_fini(&p);
}

static void policy_min_version_errors(void **state)
{
	struct dg_tls_policy p;
	char err[512];
	const char *old[] = {"TLSv1_0", "TLSv1_1", "tls10", "tls11"};
	for (size_t i = 0; i < 4; i++) {
		char json[128];
		int n = snprintf(json, sizeof(json),
				 "{\"tls\": {\"defaults\": {\"tls_min_version\": "
				 "\"%s\"}}}",
				 old[i]);
		assert_true(n > 0 && (size_t)n < sizeof(json));
		assert_int_equal(parse(json, true, &p, err, sizeof(err)), DG_EINVAL);
		assert_non_null(strstr(err, "tls.defaults.tls_min_version"));
		assert_non_null(strstr(err, old[i]));
		assert_non_null(strstr(err, "TLS 1.2 is the lowest"));
	}
	assert_int_equal(parse("{\"tls_min_version\": \"tls11\"}", true, &p, err, sizeof(err)),
			 DG_EINVAL);
	assert_non_null(strstr(err, "tls_min_version"));
	assert_int_equal(parse("{\"tls\": {\"internal_rpc\": {\"tls_min_version\": \"ssl3\"}}}",
			       true, &p, err, sizeof(err)),
			 DG_EINVAL);
	assert_non_null(strstr(err, "tls.internal_rpc.tls_min_version"));
	assert_non_null(strstr(err, "\"ssl3\""));
	assert_int_equal(parse("{\"tls\": {\"defaults\": {\"tls_min_version\": \"TLSv1_2\"}}}",
			       true, &p, err, sizeof(err)),
			 0);
	assert_int_equal(p.min_version, TLS1_2_VERSION);
	dg_tls_policy_fini(&p);
}

static void policy_bad_values(void **state)
{
	struct dg_tls_policy p;
	char err[512];
	assert_int_equal(parse("{\"tls\": {\"defaults\": {\"verify_incoming\": \"yes\"}}}", true,
			       &p, err, sizeof(err)),
			 DG_EINVAL);
	assert_non_null(strstr(err, "tls.defaults.verify_incoming"));
	assert_non_null(strstr(err, "\"yes\""));
	assert_int_equal(parse("{\"verify_outgoing\": 3}", true, &p, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "verify_outgoing"));
	assert_int_equal(
	    parse("{\"tls\": {\"defaults\": {\"ca_file\": 7}}}", true, &p, err, sizeof(err)),
	    DG_EINVAL);
	assert_non_null(strstr(err, "tls.defaults.ca_file"));
	assert_int_equal(parse("{\"tls\": {\"internal_rpc\": {\"cert_fil\": \"x\"}}}", true, &p,
			       err, sizeof(err)),
			 DG_EINVAL);
	assert_non_null(strstr(err, "tls.internal_rpc.cert_fil"));
	assert_int_equal(parse("{\"tls\": []}", true, &p, err, sizeof(err)), DG_EINVAL);
	/* settings that cannot work */
	assert_int_equal(parse("{\"cert_file\": \"c.pem\"}", true, &p, err, sizeof(err)),
			 DG_EINVAL);
	assert_non_null(strstr(err, "key_file"));
	assert_int_equal(
	    parse("{\"tls\": {\"defaults\": {\"verify_incoming\": true, \"cert_file\": "
		  "\"c.pem\", \"key_file\": \"k.pem\"}}}",
		  true, &p, err, sizeof(err)),
	    DG_EINVAL);
	assert_non_null(strstr(err, "ca_file"));
}

int main(void)
{
	/* the deprecation warnings of the legacy-key tests are expected */
	dg_log_set_level(DG_LOG_ERROR);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(ca_files_modes_and_no_overwrite, dir_setup,
					    dir_teardown),
	    cmocka_unit_test_setup_teardown(server_cert_verifies_and_carries_names, dir_setup,
					    dir_teardown),
	    cmocka_unit_test_setup_teardown(client_cert_and_extra_names, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(cert_without_ca_fails_like_consul, dir_setup,
					    dir_teardown),
	    cmocka_unit_test_setup_teardown(name_constrained_ca, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(check_own_accepts_and_rejects, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(check_own_rejects_other_ca, dir_setup, dir_teardown),
	    cmocka_unit_test_setup_teardown(check_own_with_ca_path, dir_setup, dir_teardown),
	    cmocka_unit_test(policy_defaults),
	    cmocka_unit_test(policy_legacy_keys),
	    cmocka_unit_test(policy_stanza_and_overrides),
	    cmocka_unit_test(policy_min_version_errors),
	    cmocka_unit_test(policy_bad_values),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
