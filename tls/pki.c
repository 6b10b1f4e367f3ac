/* tls pki: the CA and the agent certificates `dcgate tls` makes, the way `consul tls` makes them
 * (EC P-256 keys, same names, same extensions, same file names), with OpenSSL. Each call makes
 * one key pair, writes two new files and never overwrites anything. Safe from any thread. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "tls/tls.h"
#include "tls/internal.h"

/* Every error of this file falls back to one text when even formatting fails. */
#define set_err(err, errlen, ...)                                                                  \
	dg__tls_err(err, errlen, "could not make the certificate", __VA_ARGS__)
#include "common/common.h"
#include "tls/tls.h"

#define CA_DAYS	  1825 /* Consul's CA default: five years */
#define CERT_DAYS 365  /* Consul's certificate default */
/* Consul gives up after this many numbered files with the same prefix. */
#define MAX_CERT_INDEX 10000
/* Hard caps on what a command line can put into a certificate. */
#define MAX_EXTRA_NAMES 256
#define MAX_DNS_NAME	253
#define MAX_DAYS	(100 * 366)
/* CA and key files are a few KiB; anything far bigger is not one. */
#define MAX_PEM_FILE (1024 * 1024)

int dg__tls_err(char *err, size_t errlen, const char *fallback, const char *fmt, ...)
{
	if (!err || errlen == 0)
		return DG_EINVAL;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	if (n < 0 && snprintf(err, errlen, "%s", fallback) < 0)
		err[0] = 0;
	return DG_EINVAL;
}

/* Go prints system errors in lower case ("open x: no such file or directory"); so do we, since
 * scripts may match Consul's messages. */
static int set_errno(char *err, size_t errlen, const char *prefix, const char *path, int e)
{
	char text[128];
	int n = snprintf(text, sizeof(text), "%s", strerror(e));
	if (n < 0)
		text[0] = 0;
	text[0] = (char)tolower((unsigned char)text[0]);
	set_err(err, errlen, "%sopen %s: %s", prefix, path, text);
	return e == ENOENT ? DG_ENOTFOUND : DG_EIO;
}

/* OpenSSL's reason for the last failure (or fallback); clears its error queue. */
static const char *ossl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	ERR_clear_error();
	return r ? r : fallback;
}

/* dir + name, or name alone for the current directory so messages read like Consul's. */
static int join_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n;
	if (!dir || !dir[0] || strcmp(dir, ".") == 0)
		n = snprintf(buf, len, "%s", name);
	else
		n = snprintf(buf, len, "%s/%s", dir, name);
	return n < 0 || (size_t)n >= len ? DG_ETOOBIG : 0;
}

/* Go's os.Stat + IsNotExist: anything but "no such file" counts as taken. */
static bool file_exists(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 || errno != ENOENT;
}

/* ---- files ---- */

/* Writes data to a new file (O_EXCL: never replaces one, even one made a moment ago by someone
 * else) and syncs it; a failed write leaves no half file behind. Keys get exactly mode (0600),
 * certificates mode less the umask, as Consul's 0666 does. */
static int write_new_file(const char *path, const char *shown, const void *data, size_t len,
			  mode_t mode, bool exact_mode, char *err, size_t errlen)
{
	const char *p = data;
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		if (errno == EEXIST)
			return set_err(err, errlen, "%s already exists.", shown);
		return set_errno(err, errlen, "", path, errno);
	}
	if (exact_mode && fchmod(fd, mode) != 0)
		goto fail;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			goto fail;
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0)
		goto fail;
	if (close(fd) != 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	set_err(err, errlen, "write %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(path);
	return DG_EIO;
}

/* Writes a certificate as PEM to a new file. */
static int write_cert(const char *path, const char *shown, X509 *x, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int rv;
	if (!b || PEM_write_bio_X509(b, x) != 1 || (len = BIO_get_mem_data(b, &data)) <= 0) {
		BIO_free(b);
		return set_err(err, errlen, "encoding %s: %s", shown, ossl_reason("out of memory"));
	}
	rv = write_new_file(path, shown, data, (size_t)len, 0666, false, err, errlen);
	BIO_free(b);
	return rv;
}

/* Writes a private key, mode 0600, in the "EC PRIVATE KEY" form Consul writes and reads back
 * (Consul's -key accepts nothing else). Secure memory so the key does not linger in freed heap. */
static int write_key(const char *path, const char *shown, EVP_PKEY *key, char *err, size_t errlen)
{
	BIO *b = BIO_new(BIO_s_secmem());
	char *data;
	long len;
	int rv;
	if (!b || PEM_write_bio_PrivateKey_traditional(b, key, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (len = BIO_get_mem_data(b, &data)) <= 0) {
		BIO_free(b);
		return set_err(err, errlen, "encoding %s: %s", shown, ossl_reason("out of memory"));
	}
	rv = write_new_file(path, shown, data, (size_t)len, 0600, true, err, errlen);
	BIO_free(b);
	return rv;
}

/* Never prompt on the terminal for a passphrase: an encrypted CA key is reported instead. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/* Opens a PEM file for reading with Consul's "open <path>: <reason>" message on failure. */
static int open_pem(const char *path, const char *what, FILE **f, char *err, size_t errlen)
{
	struct stat st;
	char prefix[64];
	int n = snprintf(prefix, sizeof(prefix), "Error reading %s: ", what);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		prefix[0] = 0;
	if (!(*f = fopen(path, "r")))
		return set_errno(err, errlen, prefix, path, errno);
	if (fstat(fileno(*f), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_PEM_FILE) {
		fclose(*f);
		*f = NULL;
		return set_err(err, errlen, "%s%s is not a PEM file", prefix, path);
	}
	return 0;
}

static int read_ca(const char *ca_path, const char *key_path, X509 **ca, EVP_PKEY **key, char *err,
		   size_t errlen)
{
	FILE *f;
	int rv;
	*ca = NULL;
	*key = NULL;
	if ((rv = open_pem(ca_path, "CA", &f, err, errlen)) != 0)
		return rv;
	*ca = PEM_read_X509(f, NULL, no_passphrase_cb, NULL);
	fclose(f);
	if (!*ca)
		return set_err(err, errlen, "Error reading CA: %s holds no PEM certificate (%s)",
			       ca_path, ossl_reason("no CERTIFICATE block"));
	if ((rv = open_pem(key_path, "CA key", &f, err, errlen)) != 0)
		goto fail;
	*key = PEM_read_PrivateKey(f, NULL, no_passphrase_cb, NULL);
	fclose(f);
	if (!*key) {
		rv = set_err(err, errlen,
			     "Error reading CA key: %s holds no usable PEM private key (%s; "
			     "encrypted keys are not supported)",
			     key_path, ossl_reason("no PRIVATE KEY block"));
		goto fail;
	}
	/* Caught here, the mistake gets a plain message instead of a bad signature later. */
	if (X509_check_private_key(*ca, *key) != 1) {
		ERR_clear_error();
		rv = set_err(err, errlen, "CA key %s does not belong to CA certificate %s",
			     key_path, ca_path);
		goto fail;
	}
	return 0;
fail:
	X509_free(*ca);
	EVP_PKEY_free(*key);
	*ca = NULL;
	*key = NULL;
	return rv;
}

/* ---- building certificates ---- */

/* A random positive 128-bit serial, as Consul's crypto/rand one; also names the CA. */
static int random_serial(X509 *x, BIGNUM **out)
{
	BIGNUM *bn = BN_new();
	if (!bn)
		return DG_ENOMEM;
	do {
		if (BN_rand(bn, 128, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) != 1) {
			BN_free(bn);
			return DG_EIO;
		}
	} while (BN_is_zero(bn)); /* serials must be positive (RFC 5280 4.1.2.2) */
	if (!BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
		BN_free(bn);
		return DG_ENOMEM;
	}
	if (out)
		*out = bn;
	else
		BN_free(bn);
	return 0;
}

/* Adds an extension written in OpenSSL's config syntax. Only constant texts come here; names a
 * user typed are encoded structurally (add_san, add_name_constraints), never pasted into this
 * syntax where a comma would add an entry. */
static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;
	int ok;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
	if (!(ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value)))
		return DG_EINVAL;
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	return ok == 1 ? 0 : DG_ENOMEM;
}

static GENERAL_NAME *dns_name(const char *name)
{
	GENERAL_NAME *g = GENERAL_NAME_new();
	ASN1_IA5STRING *s = ASN1_IA5STRING_new();
	if (!g || !s || ASN1_STRING_set(s, name, (int)strlen(name)) != 1) {
		GENERAL_NAME_free(g);
		ASN1_IA5STRING_free(s);
		return NULL;
	}
	GENERAL_NAME_set0_value(g, GEN_DNS, s);
	return g;
}

/* A DNS name as a SAN or name constraint may carry it: letters, digits, '-', '_', '.', and a
 * '*' label for wildcards; IA5 only, so no spaces or non-ASCII. */
static bool dns_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > MAX_DNS_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!isalnum(c) && c != '-' && c != '_' && c != '.' && c != '*')
			return false;
	}
	return true;
}

/* Consul trims the names it is given and skips empty ones; this copies a trimmed name into buf,
 * or returns false for an empty one. */
static bool trimmed(const char *s, char *buf, size_t len)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0)
		return false;
	if (n >= len)
		n = len - 1; /* longer than any DNS name; dns_name_ok rejects the cut one */
	memcpy(buf, s, n);
	buf[n] = 0;
	return true;
}

/* The SAN list, DNS names in order then IPs in order (Go's order). */
static int add_san(X509 *x, const char **dns, size_t ndns, const char **ips, size_t nips, char *err,
		   size_t errlen)
{
	GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
	GENERAL_NAME *g = NULL;
	int rv = DG_ENOMEM;
	if (!gens)
		goto out;
	for (size_t i = 0; i < ndns; i++) {
		if (!(g = dns_name(dns[i])) || !sk_GENERAL_NAME_push(gens, g))
			goto out;
		g = NULL;
	}
	for (size_t i = 0; i < nips; i++) {
		ASN1_OCTET_STRING *ip = a2i_IPADDRESS(ips[i]);
		if (!ip) {
			ERR_clear_error();
			rv = set_err(err, errlen, "invalid IP address \"%s\"", ips[i]);
			goto out;
		}
		if (!(g = GENERAL_NAME_new())) {
			ASN1_OCTET_STRING_free(ip);
			goto out;
		}
		GENERAL_NAME_set0_value(g, GEN_IPADD, ip);
		if (!sk_GENERAL_NAME_push(gens, g))
			goto out;
		g = NULL;
	}
	rv = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1
		 ? 0
		 : DG_ENOMEM;
out:
	if (rv == DG_ENOMEM)
		set_err(err, errlen, "subject alternative names: %s", dg_strerror(rv));
	GENERAL_NAME_free(g);
	GENERAL_NAMES_free(gens);
	return rv;
}

/* Critical permitted DNS subtrees, as Go writes PermittedDNSDomains with
 * PermittedDNSDomainsCritical. */
static int add_name_constraints(X509 *x, const char **names, size_t n)
{
	NAME_CONSTRAINTS *nc = NAME_CONSTRAINTS_new();
	GENERAL_SUBTREE *st = NULL;
	int rv = DG_ENOMEM;
	if (!nc || !(nc->permittedSubtrees = sk_GENERAL_SUBTREE_new_null()))
		goto out;
	for (size_t i = 0; i < n; i++) {
		GENERAL_NAME *g = dns_name(names[i]);
		if (!g || !(st = GENERAL_SUBTREE_new())) {
			GENERAL_NAME_free(g);
			goto out;
		}
		GENERAL_NAME_free(st->base);
		st->base = g;
		if (!sk_GENERAL_SUBTREE_push(nc->permittedSubtrees, st))
			goto out;
		st = NULL;
	}
	if (X509_add1_ext_i2d(x, NID_name_constraints, nc, 1, X509V3_ADD_DEFAULT) == 1)
		rv = 0;
out:
	GENERAL_SUBTREE_free(st);
	NAME_CONSTRAINTS_free(nc);
	return rv;
}

/* Ed25519/Ed448 sign without a separate digest; everything else with SHA-256 (ECDSA-SHA256 for
 * our P-256 keys, as Go uses). */
static const EVP_MD *sign_md(EVP_PKEY *key)
{
	if (EVP_PKEY_is_a(key, "ED25519") || EVP_PKEY_is_a(key, "ED448"))
		return NULL;
	return EVP_sha256();
}

/* A new certificate with serial, validity from now for days, subject CN and public key set. */
static X509 *cert_new(EVP_PKEY *pub, const char *cn, int days, BIGNUM **serial)
{
	X509 *x = X509_new();
	X509_NAME *name;
	if (!x || X509_set_version(x, 2) != 1 || random_serial(x, serial) != 0)
		goto fail;
	if (!X509_gmtime_adj(X509_getm_notBefore(x), 0) ||
	    !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, NULL))
		goto fail;
	if (X509_set_pubkey(x, pub) != 1)
		goto fail;
	name = X509_get_subject_name(x);
	if (cn && X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
					     (const unsigned char *)cn, -1, -1, 0) != 1)
		goto fail;
	return x;
fail:
	if (serial && *serial) {
		BN_free(*serial);
		*serial = NULL;
	}
	X509_free(x);
	return NULL;
}

/* ---- the CA ---- */

int dg_tls_ca_create_opts(const struct dg_tls_ca_opts *o, struct dg_tls_written *out, char *err,
			  size_t errlen)
{
	const char *domain = o->domain && o->domain[0] ? o->domain : "consul";
	int days = o->days ? o->days : CA_DAYS;
	char cert_name[DG_TLS_PATH_MAX], key_name[DG_TLS_PATH_MAX];
	char cert_path[DG_TLS_PATH_MAX], key_path[DG_TLS_PATH_MAX];
	const char **permitted = NULL;
	char(*trim)[MAX_DNS_NAME + 2] = NULL;
	size_t npermitted = 0;
	EVP_PKEY *key = NULL;
	BIGNUM *serial = NULL;
	char *serial_dec = NULL, *cn_buf = NULL;
	X509 *ca = NULL;
	int rv, n;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = 0;
	if (days < 0 || days > MAX_DAYS)
		return set_err(err, errlen, "-days must be between 1 and %d", MAX_DAYS);
	if (!dns_name_ok(domain))
		return set_err(err, errlen, "invalid domain \"%s\"", domain);
	if (o->nconstraints > MAX_EXTRA_NAMES)
		return set_err(err, errlen, "too many name constraints (at most %d)",
			       MAX_EXTRA_NAMES);
	n = snprintf(cert_name, sizeof(cert_name), "%s-agent-ca.pem", domain);
	if (n < 0 || (size_t)n >= sizeof(cert_name))
		return set_err(err, errlen, "domain name too long");
	n = snprintf(key_name, sizeof(key_name), "%s-agent-ca-key.pem", domain);
	if (n < 0 || (size_t)n >= sizeof(key_name))
		return set_err(err, errlen, "domain name too long");
	if (join_path(cert_path, sizeof(cert_path), o->dir, cert_name) != 0 ||
	    join_path(key_path, sizeof(key_path), o->dir, key_name) != 0)
		return set_err(err, errlen, "directory name too long");
	/* Consul checks both before making anything, so nothing is half made. */
	if (file_exists(cert_path))
		return set_err(err, errlen, "%s already exists.", cert_name);
	if (file_exists(key_path))
		return set_err(err, errlen, "%s already exists.", key_name);

	/* Consul's order: the additional names, then the domain and localhost. */
	if (o->name_constraint) {
		permitted = calloc(o->nconstraints + 2, sizeof(*permitted));
		trim = calloc(o->nconstraints + 1, sizeof(*trim));
		if (!permitted || !trim) {
			set_err(err, errlen, "%s", dg_strerror(DG_ENOMEM));
			rv = DG_ENOMEM;
			goto out;
		}
		for (size_t i = 0; i < o->nconstraints; i++) {
			if (!trimmed(o->constraints[i], trim[i], sizeof(trim[i])))
				continue;
			if (!dns_name_ok(trim[i])) {
				rv = set_err(err, errlen, "invalid name constraint \"%s\"",
					     o->constraints[i]);
				goto out;
			}
			permitted[npermitted++] = trim[i];
		}
		permitted[npermitted++] = domain;
		permitted[npermitted++] = "localhost";
	}

	if (!(key = EVP_EC_gen("P-256"))) {
		rv = set_err(err, errlen, "error generating private key: %s",
			     ossl_reason("EC key generation failed"));
		goto out;
	}
	if (!(ca = cert_new(key, NULL, days, &serial)) || !(serial_dec = BN_bn2dec(serial))) {
		rv = set_err(err, errlen, "error generating CA certificate: %s",
			     ossl_reason("out of memory"));
		goto out;
	}
	const char *cn = o->common_name && o->common_name[0] ? o->common_name : NULL;
	if (!cn) {
		if (asprintf(&cn_buf, "Consul Agent CA %s", serial_dec) < 0) {
			cn_buf = NULL;
			set_err(err, errlen, "%s", dg_strerror(DG_ENOMEM));
			rv = DG_ENOMEM;
			goto out;
		}
		cn = cn_buf;
	}
	/* Self-signed: the subject is the issuer. SKI before AKI, which copies it. */
	if (X509_NAME_add_entry_by_NID(X509_get_subject_name(ca), NID_commonName, MBSTRING_UTF8,
				       (const unsigned char *)cn, -1, -1, 0) != 1 ||
	    X509_set_issuer_name(ca, X509_get_subject_name(ca)) != 1 ||
	    add_ext(ca, ca, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
	    add_ext(ca, ca, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign") != 0 ||
	    add_ext(ca, ca, NID_subject_key_identifier, "hash") != 0 ||
	    add_ext(ca, ca, NID_authority_key_identifier, "keyid:always") != 0 ||
	    (npermitted && add_name_constraints(ca, permitted, npermitted) != 0) ||
	    X509_sign(ca, key, sign_md(key)) <= 0) {
		rv = set_err(err, errlen, "error generating CA certificate: %s",
			     ossl_reason("invalid common name or out of memory"));
		goto out;
	}
	if ((rv = write_cert(cert_path, cert_name, ca, err, errlen)) != 0)
		goto out;
	if ((rv = write_key(key_path, key_name, key, err, errlen)) != 0) {
		unlink(cert_path); /* a CA without its key is useless and would block a retry */
		goto out;
	}
	/* both fit: they were formatted into buffers of this size above */
	memcpy(out->cert, cert_name, strlen(cert_name) + 1);
	memcpy(out->key, key_name, strlen(key_name) + 1);
	rv = 0;
out:
	OPENSSL_free(serial_dec);
	BN_free(serial);
	free(cn_buf);
	free(permitted);
	free(trim);
	X509_free(ca);
	EVP_PKEY_free(key);
	return rv;
}

/* ---- agent certificates ---- */

/* Checks the new certificate against the CA as Consul does before saving (tlsutil.Verify): it
 * must chain and carry name. This is where a CA's name constraints refuse a name. */
static int verify_new(X509 *ca, X509 *cert, const char *name, char *err, size_t errlen)
{
	X509_STORE *store = X509_STORE_new();
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	int rv = 0;
	if (!store || !ctx || X509_STORE_add_cert(store, ca) != 1 ||
	    X509_STORE_CTX_init(ctx, store, cert, NULL) != 1) {
		rv = set_err(err, errlen, "verifying the certificate: %s", dg_strerror(DG_ENOMEM));
	} else if (X509_verify_cert(ctx) != 1) {
		int code = X509_STORE_CTX_get_error(ctx);
		rv = dg__tls_err(
		    err, errlen, "could not make the certificate",
		    "the new certificate does not verify against the CA: %s%s",
		    X509_verify_cert_error_string(code),
		    code == X509_V_ERR_PERMITTED_VIOLATION
			? " (the CA's name constraints do not allow one of its DNS names)"
			: "");
	} else if (X509_check_host(cert, name, 0, X509_CHECK_FLAG_NEVER_CHECK_SUBJECT, NULL) != 1) {
		rv = set_err(err, errlen, "the new certificate is not valid for %s", name);
	}
	ERR_clear_error();
	X509_STORE_CTX_free(ctx);
	X509_STORE_free(store);
	return rv;
}

int dg_tls_cert_create_opts(const struct dg_tls_cert_opts *o, struct dg_tls_written *out, char *err,
			    size_t errlen)
{
	static const char *const roles[] = {"server", "client", "cli"};
	const char *domain = o->domain && o->domain[0] ? o->domain : "consul";
	const char *dc = o->dc && o->dc[0] ? o->dc : "dc1";
	int days = o->days ? o->days : CERT_DAYS;
	char name[512], node_name[512], prefix[512], buf[512];
	char cert_path[DG_TLS_PATH_MAX], key_path[DG_TLS_PATH_MAX];
	const char **dns = NULL, **ips = NULL;
	char(*trim)[MAX_DNS_NAME + 2] = NULL;
	size_t ndns = 0, nips = 0, ntrim = 0;
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *ca_key = NULL, *key = NULL;
	int rv, n;

	memset(out, 0, sizeof(*out));
	if (err && errlen)
		err[0] = 0;
	if (o->role != DG_TLS_ROLE_SERVER && o->role != DG_TLS_ROLE_CLIENT &&
	    o->role != DG_TLS_ROLE_CLI)
		return set_err(err, errlen, "Please provide either -server, -client, or -cli");
	if (o->node && o->node[0] && o->role != DG_TLS_ROLE_SERVER)
		return set_err(err, errlen, "-node requires -server");
	if (days < 0 || days > MAX_DAYS)
		return set_err(err, errlen, "-days must be between 1 and %d", MAX_DAYS);
	if (o->ndns > MAX_EXTRA_NAMES || o->nips > MAX_EXTRA_NAMES)
		return set_err(err, errlen, "too many additional names (at most %d of each)",
			       MAX_EXTRA_NAMES);
	const char *role = roles[o->role];
	n = snprintf(name, sizeof(name), "%s.%s.%s", role, dc, domain);
	if (n < 0 || (size_t)n >= sizeof(name) || !dns_name_ok(name))
		return set_err(err, errlen, "invalid datacenter \"%s\" or domain \"%s\"", dc,
			       domain);
	n = snprintf(prefix, sizeof(prefix), "%s-%s-%s", dc, role, domain);
	if (n < 0 || (size_t)n >= sizeof(prefix))
		return set_err(err, errlen, "datacenter or domain name too long");

	/* SANs in Consul's order: the additional names, <node>.server..., the role name, localhost;
	 * IPs: the additional ones, then 127.0.0.1 (not for -cli, as in Consul). */
	dns = calloc(o->ndns + 3, sizeof(*dns));
	ips = calloc(o->nips + 1, sizeof(*ips));
	trim = calloc(o->ndns + o->nips + 1, sizeof(*trim));
	if (!dns || !ips || !trim) {
		set_err(err, errlen, "%s", dg_strerror(DG_ENOMEM));
		rv = DG_ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < o->ndns; i++) {
		if (!trimmed(o->dns[i], trim[ntrim], sizeof(trim[ntrim])))
			continue;
		if (!dns_name_ok(trim[ntrim])) {
			rv = set_err(err, errlen, "invalid DNS name \"%s\"", o->dns[i]);
			goto out;
		}
		dns[ndns++] = trim[ntrim++];
	}
	if (o->node && o->node[0]) {
		n = snprintf(node_name, sizeof(node_name), "%s.server.%s.%s", o->node, dc, domain);
		if (n < 0 || (size_t)n >= sizeof(node_name) || !dns_name_ok(node_name)) {
			rv = set_err(err, errlen, "invalid node name \"%s\"", o->node);
			goto out;
		}
		dns[ndns++] = node_name;
	}
	dns[ndns++] = name;
	dns[ndns++] = "localhost";
	for (size_t i = 0; i < o->nips; i++) {
		ASN1_OCTET_STRING *ip;
		if (!trimmed(o->ips[i], trim[ntrim], sizeof(trim[ntrim])))
			continue;
		/* checked now so a typo fails before the CA is even read */
		if (!(ip = a2i_IPADDRESS(trim[ntrim]))) {
			ERR_clear_error();
			rv = set_err(err, errlen, "invalid IP address \"%s\"", o->ips[i]);
			goto out;
		}
		ASN1_OCTET_STRING_free(ip);
		ips[nips++] = trim[ntrim++];
	}
	if (o->role != DG_TLS_ROLE_CLI)
		ips[nips++] = "127.0.0.1";

	/* The first n for which neither file exists, as Consul counts. */
	for (int i = 0;; i++) {
		if (i > MAX_CERT_INDEX) {
			rv = set_err(err, errlen,
				     "Could not find a filename that doesn't already exist");
			goto out;
		}
		n = snprintf(out->cert, sizeof(out->cert), "%s-%d.pem", prefix, i);
		int m = snprintf(out->key, sizeof(out->key), "%s-%d-key.pem", prefix, i);
		if (n < 0 || (size_t)n >= sizeof(out->cert) || m < 0 ||
		    (size_t)m >= sizeof(out->key) ||
		    join_path(cert_path, sizeof(cert_path), o->dir, out->cert) != 0 ||
		    join_path(key_path, sizeof(key_path), o->dir, out->key) != 0) {
			rv = set_err(err, errlen, "directory name too long");
			goto out;
		}
		if (!file_exists(cert_path) && !file_exists(key_path))
			break;
	}

	/* A CA given on the command line is taken as given; the defaults live in dir. */
	if (o->ca_file) {
		n = snprintf(out->ca, sizeof(out->ca), "%s", o->ca_file);
	} else {
		n = snprintf(buf, sizeof(buf), "%s-agent-ca.pem", domain);
		if (n >= 0 && (size_t)n < sizeof(buf))
			n = join_path(out->ca, sizeof(out->ca), o->dir, buf) ? -1 : 0;
	}
	if (n < 0 || (size_t)n >= sizeof(out->ca)) {
		rv = set_err(err, errlen, "CA file name too long");
		goto out;
	}
	if (o->ca_key_file) {
		n = snprintf(out->ca_key, sizeof(out->ca_key), "%s", o->ca_key_file);
	} else {
		n = snprintf(buf, sizeof(buf), "%s-agent-ca-key.pem", domain);
		if (n >= 0 && (size_t)n < sizeof(buf))
			n = join_path(out->ca_key, sizeof(out->ca_key), o->dir, buf) ? -1 : 0;
	}
	if (n < 0 || (size_t)n >= sizeof(out->ca_key)) {
		rv = set_err(err, errlen, "CA key file name too long");
		goto out;
	}
	if (!out->ca[0]) {
		rv = set_err(err, errlen, "Please provide the ca");
		goto out;
	}
	if (!out->ca_key[0]) {
		rv = set_err(err, errlen, "Please provide the key");
		goto out;
	}
	if ((rv = read_ca(out->ca, out->ca_key, &ca, &ca_key, err, errlen)) != 0)
		goto out;

	if (!(key = EVP_EC_gen("P-256"))) {
		rv = set_err(err, errlen, "error generating private key: %s",
			     ossl_reason("EC key generation failed"));
		goto out;
	}
	/* Consul's agent certificates: CN is the role name, not a CA, signatures and key
	 * exchange only; servers and client agents may act as both ends of a TLS link. */
	if (!(cert = cert_new(key, name, days, NULL)) ||
	    X509_set_issuer_name(cert, X509_get_subject_name(ca)) != 1 ||
	    add_ext(cert, ca, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
	    add_ext(cert, ca, NID_key_usage, "critical,digitalSignature,keyEncipherment") != 0 ||
	    (o->role != DG_TLS_ROLE_CLI &&
	     add_ext(cert, ca, NID_ext_key_usage,
		     o->role == DG_TLS_ROLE_SERVER ? "serverAuth,clientAuth"
						   : "clientAuth,serverAuth") != 0) ||
	    add_ext(cert, ca, NID_subject_key_identifier, "hash") != 0 ||
	    (X509_get_ext_by_NID(ca, NID_subject_key_identifier, -1) >= 0 &&
	     add_ext(cert, ca, NID_authority_key_identifier, "keyid") != 0)) {
		rv = set_err(err, errlen, "error generating certificate: %s",
			     ossl_reason("out of memory"));
		goto out;
	}
	if ((rv = add_san(cert, dns, ndns, ips, nips, err, errlen)) != 0)
		goto out;
	if (X509_sign(cert, ca_key, sign_md(ca_key)) <= 0) {
		rv = set_err(err, errlen, "error signing certificate: %s",
			     ossl_reason("signature failed"));
		goto out;
	}
	if ((rv = verify_new(ca, cert, name, err, errlen)) != 0)
		goto out;
	if ((rv = write_cert(cert_path, out->cert, cert, err, errlen)) != 0)
		goto out;
	if ((rv = write_key(key_path, out->key, key, err, errlen)) != 0) {
		unlink(cert_path); /* a certificate without its key would only take up the number */
		goto out;
	}
	rv = 0;
out:
	if (rv != 0)
		out->cert[0] = out->key[0] = 0;
	free(dns);
	free(ips);
	free(trim);
	X509_free(cert);
	X509_free(ca);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ca_key);
	return rv;
}

/* ---- tls.h's forms ---- */

/* "==> Saved <cert>\n==> Saved <key>", the lines Consul prints, as the success message. */
static void saved_msg(const struct dg_tls_written *w, char *msg, size_t msglen)
{
	if (!msg || msglen == 0)
		return;
	int n = snprintf(msg, msglen, "==> Saved %s\n==> Saved %s", w->cert, w->key);
	if (n < 0)
		msg[0] = 0;
}

int dg_tls_ca_create(const char *dir, const char *domain, int days, bool name_constraint, char *msg,
		     size_t msglen)
{
	struct dg_tls_ca_opts o = {
	    .dir = dir, .domain = domain, .days = days, .name_constraint = name_constraint};
	struct dg_tls_written *w = malloc(sizeof(*w)); /* 16 KiB: kept off the caller's stack */
	int rv;
	if (!w) {
		set_err(msg, msglen, "%s", dg_strerror(DG_ENOMEM));
		return DG_ENOMEM;
	}
	if ((rv = dg_tls_ca_create_opts(&o, w, msg, msglen)) == 0)
		saved_msg(w, msg, msglen);
	free(w);
	return rv;
}

int dg_tls_cert_create(const char *dir, const struct dg_tls_cert_req *req, char *msg, size_t msglen)
{
	struct dg_tls_cert_opts o = {
	    .dir = dir,
	    .role = req->server ? DG_TLS_ROLE_SERVER : DG_TLS_ROLE_CLIENT,
	    .dc = req->dc,
	    .domain = req->domain,
	    .days = req->days,
	    .ca_file = req->ca_file,
	    .ca_key_file = req->ca_key_file,
	    .dns = req->dns,
	    .ndns = req->ndns,
	    .ips = req->ips,
	    .nips = req->nips,
	};
	struct dg_tls_written *w = malloc(sizeof(*w));
	int rv;
	if (!w) {
		set_err(msg, msglen, "%s", dg_strerror(DG_ENOMEM));
		return DG_ENOMEM;
	}
	if ((rv = dg_tls_cert_create_opts(&o, w, msg, msglen)) == 0)
		saved_msg(w, msg, msglen);
	free(w);
	return rv;
}
