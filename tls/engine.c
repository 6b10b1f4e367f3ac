/* tls/engine.c: OpenSSL 3 registered as nng 1.5.2's TLS engine. A config is an SSL_CTX, a
 * connection an SSL over a custom BIO on nng's byte stream; peer names are checked in the
 * verify callback (nng gives listeners no other way), verified peers are remembered by address,
 * and dg_tls_reload() swaps the SSL_CTX of every config made through dg_tls_*_config().
 *
 * Threads and locks. nng calls the connection ops (handshake, send, recv, close, verified) on
 * its shared worker threads with that connection's lock held, so one connection is never in two
 * ops at once; conn init and fini run without that lock (init from the dial/accept callback,
 * fini from nng's reaper). Config ops run under nng's per-config lock. Our locks:
 *   reg_mtx    the registry of configs made by dg_tls_*_config(); held across a reload and taken
 *              before a config's own mutex (order: reg_mtx -> cfg->mtx), never under a
 *              connection's lock.
 *   cfg->mtx   a config's current SSL_CTX and expected name; a leaf (conn init holds it only for
 *              SSL_new() and copying the name).
 *   peers_mtx  the table of verified peers; a leaf, taken under a connection's lock.
 * Counters and the per-connection flags the handshake watchdog reads are atomics. The watchdog
 * (one nng sleep aio per connection) runs on an nng taskq thread and closes the stream through
 * nng's own API, which takes the connection's lock; it takes no lock of ours, and conn fini
 * stops it before the connection's memory goes. */
#include "tls/tls.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nng/supplemental/tls/engine.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/common.h"
#include "tls/frames.h"

#define TLS "tls"

/* A connection whose peer has sent no application data this long after the TCP connection was
 * made is cut (and, if the handshake was not over, counted as a failed handshake). nng 1.5.2
 * bounds neither case: (1) its 10 s SP negotiation timeout cancels the header aio, but while
 * the handshake waits for the peer that aio sits in the TLS layer's send queue, and cancelling
 * it only aborts the idle TCP send, so a silent peer holds the connection, and a synchronous
 * dial, forever; (2) when TCP fails while no aio is queued on the TLS stream (for instance
 * between the SP header send and the header receive, as when a listener refuses our
 * certificate and closes), nng closes its TCP aios, and the next receive restarts one that can
 * never complete, with no error, so it too waits forever (the "zombie" below).
 *
 * How to cut matters as much: a negotiating pipe that fails with NNG_ECLOSED (what
 * nng_stream_close() gives) passes that error to the socket's listener, which then stops
 * accepting for good, and a dialer stops redialing. So the watchdog shuts the TCP socket down
 * instead (nng reports NNG_ECONNSHUT: the listener goes on, the dialer redials), and only a
 * dialer's zombie, which nothing else can release, is closed through nng; a listener's zombie
 * is left (one connection) rather than the listener stopped.
 *
 * Every SP peer sends its 8-byte header right after the handshake, so an established link
 * always passes this check; a protocol whose client speaks first and waits longer for an
 * answer (nng's HTTP over TLS) would need it relaxed. Tests lower it through the extern below. */
_Atomic unsigned dg__tls_handshake_ms = DG_TLS_HANDSHAKE_MS;
/* After shutting a socket down, how long nng gets to notice before the watchdog looks again. */
#define DG_TLS_GRACE_MS 1000

/* Longest peer address text ("[v6]:port") and role/DC labels we keep. */
#define ADDR_LEN  64
#define LABEL_LEN 64
#define NAMES_LEN 384
#define WHY_LEN	  768

/* ---- engine state ---- */

struct nng_tls_engine_config {
	pthread_mutex_t mtx;
	SSL_CTX *ctx;	   /* current context; new connections SSL_new() from it (cfg->mtx) */
	nng_tls_mode mode; /* immutable */
	nng_tls_auth_mode auth;
	int min_ver, max_ver; /* TLS1_2_VERSION .. TLS1_3_VERSION */
	char *host;	      /* name the peer must carry (dialers), NULL for none (cfg->mtx) */
	char *accept;	      /* accepted-name pattern (listeners), NULL for any; immutable */
	char *domain;	      /* for reading role.dc.domain out of peer names; immutable */
	bool registered;      /* on the reload registry (reg_mtx) */
	struct nng_tls_engine_config *next; /* registry link (reg_mtx) */
};

struct nng_tls_engine_conn {
	void *tls;			   /* nng's connection: the arg of nng_tls_engine_send */
	struct nng_tls_engine_config *cfg; /* outlives us: nng holds a ref until after fini */
	SSL *ssl;
	nng_aio *watchdog;
	uint64_t started_ms;
	unsigned limit_ms;
	nng_sockaddr local, remote; /* the TCP connection's ends (family 0 when unknown) */
	bool kicked;		    /* the watchdog has shut the socket down (watchdog only) */
	int io_err;		    /* last nng error the BIO saw, 0 if none */
	int failed;		    /* the nng error that ended the connection, 0 while it lives */
	atomic_bool hs_done;	    /* handshake finished (read by the watchdog) */
	atomic_bool heard;	    /* the peer's first application data has arrived (ditto) */
	atomic_bool counted;	    /* counted once as ok or failed, by whoever decides first */
	bool published;		    /* our entry is in the peer table */
	char peer[ADDR_LEN];	    /* "127.0.0.1:5000", or "unknown"; immutable after init */
	char expect[256]; /* name the peer must carry, for the log; immutable after init */
	char role[LABEL_LEN], dc[LABEL_LEN]; /* from the verified peer's SAN */
	char why[WHY_LEN]; /* why our verify callback refused the peer, "" if it did not */
	/* Outgoing SP messages collected piece by piece and sealed whole (see conn_send) */
	struct dg_sp_frames frames;
	uint8_t *out;	    /* OUT_MAX bytes, allocated at the first message */
	size_t out_len;	    /* bytes collected */
	size_t out_off;	    /* bytes of them already handed to OpenSSL */
	bool flush_due;	    /* a flush of out is under way and must finish before anything else */
	size_t tentative;   /* bytes of the caller's current piece already in out, not yet
			     * reported sent because sealing them has not finished */
};

/* At most this much of a message is collected before it is sealed: one TLS record (16 KiB of
 * plaintext at most) whose ciphertext, with its header and tag, still fits nng's 16 KiB send
 * buffer in one go. */
#define OUT_MAX (16384 - 64)

static pthread_mutex_t init_mtx = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool engine_ready;
static BIO_METHOD *bio_meth;
static int conn_idx = -1;

static pthread_mutex_t reg_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct nng_tls_engine_config *reg_head;

static pthread_mutex_t peers_mtx = PTHREAD_MUTEX_INITIALIZER;
static struct dg_map peers; /* "addr:port" -> struct peer_ent * */
static bool peers_ready;

static _Atomic uint64_t n_ok, n_failed, n_reloads;

/* nng_tls_config_alloc() calls our config init synchronously on the caller's thread; this is
 * how dg_tls_*_config() find the engine config nng allocated, without knowing its layout. */
static _Thread_local struct nng_tls_engine_config *tl_new_cfg;

struct peer_ent {
	char role[LABEL_LEN], dc[LABEL_LEN];
	const void *owner; /* the connection that put it, so only it removes it */
};

/* ---- small text helpers ---- */

/* Appends formatted text to buf (holding a NUL-terminated string of capacity len), truncating
 * with "..." when full, so a log line is never lost to a long certificate. */
static void __attribute__((format(printf, 3, 4)))
str_add(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strnlen(buf, len);
	if (len == 0 || used + 1 >= len)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
	if (n < 0) {
		buf[used] = '\0';
		return;
	}
	if ((size_t)n >= len - used && len >= 4)
		memcpy(buf + len - 4, "...", 4);
}

/* Copies src into dst (capacity len); DG_ETOOBIG when it does not fit. */
static int str_copy(char *dst, size_t len, const char *src)
{
	int n = snprintf(dst, len, "%s", src);
	return (n < 0 || (size_t)n >= len) ? DG_ETOOBIG : 0;
}

/* The most recent OpenSSL error's reason ("certificate verify failed"), or fallback. */
static const char *ossl_reason(const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;
	return r ? r : fallback;
}

static void ossl_err(char *err, size_t errlen, const char *what, const char *path)
{
	snprintf(err, errlen, "%s%s%s: %s", what, path ? " " : "", path ? path : "",
		 ossl_reason("unknown error"));
	ERR_clear_error();
}

static void addr_format(const nng_sockaddr *sa, char *buf, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	int n = -1;
	switch (sa->s_family) {
	case NNG_AF_INET:
		if (inet_ntop(AF_INET, &sa->s_in.sa_addr, ip, sizeof(ip)))
			n = snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(sa->s_in.sa_port));
		break;
	case NNG_AF_INET6:
		if (inet_ntop(AF_INET6, sa->s_in6.sa_addr, ip, sizeof(ip)))
			n = snprintf(buf, len, "[%s]:%u", ip, (unsigned)ntohs(sa->s_in6.sa_port));
		break;
	default:
		break;
	}
	if (n < 0 || (size_t)n >= len)
		snprintf(buf, len, "unknown");
}

/* Label by label, case-insensitive; a "*" label matches exactly one non-empty label, so
 * "server.*.consul" takes server.east.consul but not server.a.b.consul or server..consul. */
static bool name_match(const char *pattern, const char *name)
{
	const char *p = pattern, *n = name;
	for (;;) {
		size_t pl = strcspn(p, "."), nl = strcspn(n, ".");
		if (nl == 0)
			return false;
		if (!(pl == 1 && p[0] == '*') && (pl != nl || strncasecmp(p, n, nl) != 0))
			return false;
		p += pl;
		n += nl;
		if (*p == '\0' || *n == '\0')
			return *p == '\0' && *n == '\0';
		p++;
		n++;
	}
}

/* Reads role and DC out of "<server|client>.<dc>.<domain>"; false when name is not of that
 * shape (domain NULL: any rest). */
static bool name_identity(const char *name, const char *domain, char *role, char *dc)
{
	size_t rl = strcspn(name, ".");
	if (name[rl] != '.')
		return false;
	const char *d = name + rl + 1;
	size_t dl = strcspn(d, ".");
	if (dl == 0 || d[dl] != '.' || dl >= LABEL_LEN)
		return false;
	if (!((rl == 6 && strncasecmp(name, "server", 6) == 0) ||
	      (rl == 6 && strncasecmp(name, "client", 6) == 0)))
		return false;
	if (domain && strcasecmp(d + dl + 1, domain) != 0)
		return false;
	for (size_t i = 0; i < rl; i++)
		role[i] = (char)(name[i] | 0x20); /* ASCII letters only here: lower-case */
	role[rl] = '\0';
	memcpy(dc, d, dl);
	dc[dl] = '\0';
	return true;
}

/* Calls fn for each DNS SAN of x that is a clean C string (a name with an embedded NUL is an
 * attack, never a match); stops when fn returns true. */
static bool each_dns_name(X509 *x, bool (*fn)(const char *name, void *arg), void *arg)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	bool hit = false;
	for (int i = 0; gens && !hit && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		if (g->type != GEN_DNS)
			continue;
		const char *s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		int len = ASN1_STRING_length(g->d.dNSName);
		if (len <= 0 || len > 253 || strnlen(s, (size_t)len) != (size_t)len)
			continue;
		char name[256];
		memcpy(name, s, (size_t)len);
		name[len] = '\0';
		hit = fn(name, arg);
	}
	GENERAL_NAMES_free(gens);
	return hit;
}

/* Lists a certificate's names for a log line: DNS and IP SANs, or the CN when there are none.
 * Non-printable bytes become '?', since the text comes from the peer. */
static void names_format(X509 *x, char *buf, size_t len)
{
	GENERAL_NAMES *gens = x ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
	int shown = 0;
	buf[0] = '\0';
	str_add(buf, len, "[");
	for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		char one[256] = "";
		if (g->type == GEN_DNS) {
			const unsigned char *s = ASN1_STRING_get0_data(g->d.dNSName);
			int n = ASN1_STRING_length(g->d.dNSName);
			size_t k = 0;
			for (int j = 0; j < n && k + 1 < sizeof(one); j++)
				one[k++] = (s[j] >= 0x20 && s[j] < 0x7f) ? (char)s[j] : '?';
			one[k] = '\0';
		} else if (g->type == GEN_IPADD) {
			int n = ASN1_STRING_length(g->d.iPAddress);
			const unsigned char *a = ASN1_STRING_get0_data(g->d.iPAddress);
			char ip[INET6_ADDRSTRLEN];
			if ((n == 4 && inet_ntop(AF_INET, a, ip, sizeof(ip))) ||
			    (n == 16 && inet_ntop(AF_INET6, a, ip, sizeof(ip))))
				snprintf(one, sizeof(one), "IP:%s", ip);
		}
		if (one[0]) {
			str_add(buf, len, "%s%s", shown ? ", " : "", one);
			shown++;
		}
	}
	GENERAL_NAMES_free(gens);
	if (!shown && x) {
		char cn[256];
		int n = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn,
						  sizeof(cn));
		if (n > 0) {
			for (int j = 0; j < n; j++)
				if ((unsigned char)cn[j] < 0x20 || (unsigned char)cn[j] >= 0x7f)
					cn[j] = '?';
			str_add(buf, len, "no SANs, CN=%s", cn);
		} else {
			str_add(buf, len, "no names");
		}
	}
	str_add(buf, len, "]");
}

/* ---- the peer table ---- */

static void peer_publish(struct nng_tls_engine_conn *c)
{
	struct peer_ent *e = calloc(1, sizeof(*e)), *old = NULL;
	if (!e)
		return;
	memcpy(e->role, c->role, sizeof(e->role));
	memcpy(e->dc, c->dc, sizeof(e->dc));
	e->owner = c;
	pthread_mutex_lock(&peers_mtx);
	if (!peers_ready) {
		dg_map_init(&peers, false);
		peers_ready = true;
	}
	if (dg_map_put(&peers, c->peer, e, (void **)&old) == 0) {
		c->published = true;
		e = NULL;
	}
	pthread_mutex_unlock(&peers_mtx);
	free(old); /* an older connection from the same address; it will not find itself */
	free(e);
}

static void peer_drop(struct nng_tls_engine_conn *c)
{
	struct peer_ent *e = NULL;
	if (!c->published)
		return;
	c->published = false;
	pthread_mutex_lock(&peers_mtx);
	struct peer_ent *cur = dg_map_find(&peers, c->peer);
	if (cur && cur->owner == c)
		e = dg_map_del(&peers, c->peer);
	pthread_mutex_unlock(&peers_mtx);
	free(e);
}

/* ---- counting and logging the outcome of a handshake ---- */

static void hs_count_ok(struct nng_tls_engine_conn *c)
{
	if (!atomic_exchange(&c->counted, true))
		atomic_fetch_add(&n_ok, 1);
}

/* Counts and logs a rejected handshake, once per connection. */
static void hs_count_failed(struct nng_tls_engine_conn *c, const char *reason)
{
	if (atomic_exchange(&c->counted, true))
		return;
	DG_LOGW(TLS, "handshake %s %s rejected: %s",
		c->cfg->mode == NNG_TLS_MODE_SERVER ? "from" : "with", c->peer, reason);
	atomic_fetch_add(&n_failed, 1); /* after the line: whoever sees the count finds the line */
}

/* The handshake is over on our side. A listener has verified the client by now, so the
 * connection is good; a TLS 1.3 client finishes before the server has judged the client's
 * certificate, so a client counts success at its first application data (conn_io). */
static void hs_finished(struct nng_tls_engine_conn *c)
{
	atomic_store(&c->hs_done, true);
	if (c->cfg->mode == NNG_TLS_MODE_SERVER) {
		hs_count_ok(c);
		if (c->role[0])
			peer_publish(c);
	}
	DG_LOGD(TLS, "handshake %s %s done (%s, peer %s.%s)",
		c->cfg->mode == NNG_TLS_MODE_SERVER ? "from" : "with", c->peer,
		SSL_get_version(c->ssl), c->role[0] ? c->role : "?", c->dc[0] ? c->dc : "?");
}

/* ---- the verify callback: chain errors, expected name, accepted-name pattern ---- */

struct match_arg {
	const char *pattern, *domain;
	char *role, *dc;
	bool matched;
};

static bool match_one(const char *name, void *arg)
{
	struct match_arg *m = arg;
	if (m->pattern && !name_match(m->pattern, name))
		return false;
	if (m->pattern)
		m->matched = true;
	/* with a pattern the first matching name decides; without, the first role.dc.domain */
	return name_identity(name, m->domain, m->role, m->dc) || m->pattern;
}

static const char *chain_hint(int err)
{
	switch (err) {
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_CERT_SIGNATURE_FAILURE:
		return " (not issued by a CA in our ca_file/ca_path: is it from another CA?)";
	case X509_V_ERR_INVALID_PURPOSE:
		return " (its extendedKeyUsage lacks serverAuth/clientAuth; server certificates "
		       "need both)";
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return " (check its validity dates and the clocks)";
	default:
		return "";
	}
}

static int verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct nng_tls_engine_conn *c = ssl ? SSL_get_ex_data(ssl, conn_idx) : NULL;
	X509 *cert = X509_STORE_CTX_get_current_cert(xs);
	int depth = X509_STORE_CTX_get_error_depth(xs);
	char names[NAMES_LEN];
	if (!c)
		return ok;
	if (!ok) {
		int err = X509_STORE_CTX_get_error(xs);
		char at[320] = "";
		if (c->why[0])
			return 0;
		/* name the leaf (what an operator can fix), and the failing link if higher */
		names_format(X509_STORE_CTX_get0_cert(xs), names, sizeof(names));
		if (depth > 0 && cert) {
			char subj[256];
			X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof(subj));
			snprintf(at, sizeof(at), " (at chain depth %d, %s)", depth, subj);
		}
		if (err == X509_V_ERR_HOSTNAME_MISMATCH)
			snprintf(
			    c->why, sizeof(c->why),
			    "certificate names %s do not include the expected %s "
			    "(wrong SAN: is the peer a server of another datacenter, or was its "
			    "certificate made for another dc/domain?)",
			    names, c->expect);
		else
			snprintf(c->why, sizeof(c->why),
				 "certificate %s failed verification: %s%s%s", names,
				 X509_verify_cert_error_string(err), at, chain_hint(err));
		return 0;
	}
	if (depth != 0)
		return 1;
	/* the leaf, with its chain verified: the accepted-name pattern, and who the peer is */
	struct match_arg m = {
	    .pattern = c->cfg->accept, .domain = c->cfg->domain, .role = c->role, .dc = c->dc};
	c->role[0] = c->dc[0] = '\0';
	each_dns_name(cert, match_one, &m);
	if (m.pattern && !m.matched) {
		names_format(cert, names, sizeof(names));
		snprintf(c->why, sizeof(c->why),
			 "certificate names %s do not match %s, the names this listener accepts",
			 names, m.pattern);
		c->role[0] = c->dc[0] = '\0';
		X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	if (!c->role[0])
		c->dc[0] = '\0';
	return 1;
}

/* ---- the BIO over nng's stream ---- */

static int bio_write_ex(BIO *b, const char *buf, size_t len, size_t *done)
{
	struct nng_tls_engine_conn *c = BIO_get_data(b);
	size_t n = len;
	BIO_clear_retry_flags(b);
	int rv = nng_tls_engine_send(c->tls, (const uint8_t *)buf, &n);
	if (rv == 0) {
		*done = n;
		return 1;
	}
	if (rv == NNG_EAGAIN)
		/* nng's 16 KiB send buffer is full; its send callback calls us again */
		BIO_set_retry_write(b);
	else
		c->io_err = rv;
	return 0;
}

static int bio_read_ex(BIO *b, char *buf, size_t len, size_t *done)
{
	struct nng_tls_engine_conn *c = BIO_get_data(b);
	size_t n = len;
	BIO_clear_retry_flags(b);
	int rv = nng_tls_engine_recv(c->tls, (uint8_t *)buf, &n);
	if (rv == 0) {
		*done = n;
		return 1;
	}
	if (rv == NNG_EAGAIN)
		BIO_set_retry_read(b); /* nng has started a TCP receive; its callback retries */
	else
		c->io_err = rv;
	return 0;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	/* nng sends whatever it is given at once, so a flush has nothing to do but must succeed:
	 * OpenSSL fails the handshake when BIO_flush() returns <= 0. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

/* ---- connections ---- */

enum io_op { IO_HANDSHAKE, IO_READ, IO_WRITE };

/* Turns a failed SSL call into an nng error, and counts and logs it when it ends a handshake.
 * Called on the thread of the failed call, so the OpenSSL error queue is still ours. */
static int conn_fail(struct nng_tls_engine_conn *c, int sslerr)
{
	char reason[WHY_LEN + 256], ours[NAMES_LEN];
	/* Until the peer has spoken, a failure ends an SP negotiation, and nng hands that error
	 * to the socket's listener or dialer: NNG_EPEERAUTH and NNG_ECONNRESET keep a listener
	 * accepting at once (NNG_ECRYPTO would pause it 100 ms per bad client; NNG_ECLOSED would
	 * stop it) and make a dialer redial. */
	bool early = !atomic_load(&c->heard);
	int rv = early ? NNG_EPEERAUTH : NNG_ECRYPTO;
	bool settled = atomic_load(&c->counted);
	unsigned long e = ERR_peek_last_error();
	if (c->why[0]) {
		snprintf(reason, sizeof(reason), "%s", c->why);
		rv = NNG_EPEERAUTH;
	} else if (sslerr == SSL_ERROR_SYSCALL || (sslerr == SSL_ERROR_SSL && e == 0)) {
		rv = c->io_err ? c->io_err : NNG_ECONNSHUT;
		snprintf(reason, sizeof(reason), "transport error: %s", nng_strerror(rv));
		if (early)
			rv = NNG_ECONNRESET;
	} else if (sslerr == SSL_ERROR_ZERO_RETURN) {
		rv = early ? NNG_ECONNRESET : NNG_ECONNSHUT;
		snprintf(reason, sizeof(reason),
			 "peer closed the TLS session during the handshake");
	} else if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
		   ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
		rv = NNG_EPEERAUTH;
		snprintf(reason, sizeof(reason),
			 "peer presented no certificate; this listener requires one from our CA");
	} else if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
		/* an alert from the peer: it refused us; say which names we showed it */
		rv = NNG_EPEERAUTH;
		names_format(SSL_get_certificate(c->ssl), ours, sizeof(ours));
		snprintf(reason, sizeof(reason),
			 "the peer refused the handshake (%s); our certificate carries %s%s%s",
			 ossl_reason("alert"), SSL_get_certificate(c->ssl) ? ours : "(none)",
			 c->expect[0] ? ", we expect the peer to be " : "", c->expect);
	} else {
		snprintf(reason, sizeof(reason), "%s", ossl_reason("TLS error"));
	}
	ERR_clear_error();
	c->failed = rv;
	if (!settled)
		hs_count_failed(c, reason);
	else
		DG_LOGW(TLS, "connection %s %s: %s",
			c->cfg->mode == NNG_TLS_MODE_SERVER ? "from" : "to", c->peer, reason);
	return rv;
}

/* One SSL call, on nng's worker thread with the connection's lock held. The first read or
 * write (or nng's handshake op, on each TCP completion) drives the handshake. */
static int conn_io(struct nng_tls_engine_conn *c, enum io_op op, void *buf, size_t *szp)
{
	size_t done = 0;
	int n;
	if (c->failed)
		return c->failed; /* nng offers each queued aio in turn; say it once */
	if (!atomic_load(&c->hs_done) && dg_now_ms() - c->started_ms > c->limit_ms) {
		char why[96];
		snprintf(why, sizeof(why), "handshake did not finish within %u ms", c->limit_ms);
		hs_count_failed(c, why);
		return c->failed = NNG_ETIMEDOUT;
	}
	ERR_clear_error(); /* SSL_get_error() reads the queue; other connections' leftovers on this
			    * shared thread must not decide our result */
	c->io_err = 0;
	switch (op) {
	case IO_HANDSHAKE:
		n = SSL_do_handshake(c->ssl);
		break;
	case IO_READ:
		n = SSL_read_ex(c->ssl, buf, *szp, &done);
		break;
	default:
		n = SSL_write_ex(c->ssl, buf, *szp, &done);
		break;
	}
	if (!atomic_load(&c->hs_done) && SSL_is_init_finished(c->ssl))
		hs_finished(c);
	if (n > 0) {
		if (op == IO_READ) {
			hs_count_ok(c); /* the peer's first data: it accepted us */
			atomic_store(&c->heard, true);
		}
		if (szp)
			*szp = done;
		return 0;
	}
	int err = SSL_get_error(c->ssl, n);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return NNG_EAGAIN;
	if (err == SSL_ERROR_ZERO_RETURN && atomic_load(&c->heard)) {
		ERR_clear_error();
		return NNG_ECONNSHUT; /* close_notify on an established connection */
	}
	return conn_fail(c, err);
}

static int conn_handshake(struct nng_tls_engine_conn *c)
{
	return conn_io(c, IO_HANDSHAKE, NULL, NULL);
}

static int conn_recv(struct nng_tls_engine_conn *c, uint8_t *buf, size_t *szp)
{
	return conn_io(c, IO_READ, buf, szp);
}

/* Hands everything collected in out to OpenSSL. NNG_EAGAIN leaves the rest for the next call,
 * which nng makes from its TCP send callback (the send buffer was full, so a send is running). */
static int out_flush(struct nng_tls_engine_conn *c)
{
	c->flush_due = true;
	while (c->out_off < c->out_len) {
		size_t n = c->out_len - c->out_off;
		int rv = conn_io(c, IO_WRITE, c->out + c->out_off, &n);
		if (rv != 0)
			return rv;
		c->out_off += n;
	}
	c->out_off = c->out_len = 0;
	c->flush_due = false;
	return 0;
}

/* nng offers the pieces of an SP message (length, header, body) one call and one thread hop
 * apart. Sealing each at once would cost a record, a TCP segment and a wake-up of the peer per
 * piece; so pieces are collected in out and the message is sealed as one record when its last
 * byte arrives (or out is full). A piece is reported sent only when nothing of a finished
 * message is left unsealed: nng finishes the caller's aio on that report, and nothing would
 * call us again for the tail. When sealing must wait for nng's send buffer, the piece is
 * answered NNG_EAGAIN, nng offers the same bytes again later, and the `tentative` bytes
 * already collected are skipped. Streams that are not SP are written through as they come. */
static int conn_send(struct nng_tls_engine_conn *c, const uint8_t *buf, size_t *szp)
{
	int rv;
	if (c->frames.mode == DG_SP_RAW)
		return conn_io(c, IO_WRITE, (void *)buf, szp);
	if (c->flush_due) {
		if ((rv = out_flush(c)) != 0)
			return rv;
		if (c->tentative) {
			*szp = c->tentative;
			c->tentative = 0;
			return 0;
		}
	}
	size_t room = OUT_MAX - c->out_len;
	bool ends;
	size_t n = dg_sp_frames_scan(&c->frames, buf, *szp < room ? *szp : room, &ends);
	if (c->frames.mode == DG_SP_RAW)
		return conn_io(c, IO_WRITE, (void *)buf, szp);
	if (!c->out && !(c->out = malloc(OUT_MAX)))
		return NNG_ENOMEM;
	memcpy(c->out + c->out_len, buf, n);
	c->out_len += n;
	if (ends || c->out_len == OUT_MAX) {
		rv = out_flush(c);
		if (rv == NNG_EAGAIN && ends) {
			c->tentative = n;
			return NNG_EAGAIN;
		}
		if (rv != 0 && rv != NNG_EAGAIN)
			return rv;
		/* out was full in mid-message: the rest of the message comes next, and that call
		 * finishes the flush first */
	}
	*szp = n;
	return 0;
}

/* True if ss is the address na. */
static bool addr_is(const struct sockaddr_storage *ss, const nng_sockaddr *na)
{
	if (ss->ss_family == AF_INET && na->s_family == NNG_AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
		return a->sin_port == na->s_in.sa_port && a->sin_addr.s_addr == na->s_in.sa_addr;
	}
	if (ss->ss_family == AF_INET6 && na->s_family == NNG_AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		return a->sin6_port == na->s_in6.sa_port &&
		       memcmp(&a->sin6_addr, na->s_in6.sa_addr, 16) == 0;
	}
	return false;
}

/* Shuts down the TCP socket whose ends are local and remote, so that nng's pending receive
 * ends with NNG_ECONNSHUT. nng 1.5.2 has no option that gives a stream's descriptor, so this
 * looks through our descriptors; each candidate is dup()ed first and checked and shut down
 * through the copy, so a descriptor nng closes and reuses meanwhile is never touched. Called
 * only for connections the watchdog cuts. Returns true if the socket was found. */
static bool tcp_shutdown(const nng_sockaddr *local, const nng_sockaddr *remote)
{
	DIR *d;
	struct dirent *de;
	bool found = false;
	if (local->s_family == 0 || remote->s_family == 0 || (d = opendir("/proc/self/fd")) == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);
		if (*end != '\0' || end == de->d_name || fd < 0 || fd == dirfd(d))
			continue;
		int copy = fcntl((int)fd, F_DUPFD_CLOEXEC, 0);
		struct stat st;
		struct sockaddr_storage a, b;
		socklen_t al = sizeof(a), bl = sizeof(b);
		if (copy < 0)
			continue;
		if (fstat(copy, &st) == 0 && S_ISSOCK(st.st_mode) &&
		    getsockname(copy, (struct sockaddr *)&a, &al) == 0 &&
		    getpeername(copy, (struct sockaddr *)&b, &bl) == 0 && addr_is(&a, local) &&
		    addr_is(&b, remote)) {
			found = shutdown(copy, SHUT_RDWR) == 0;
		}
		close(copy);
	}
	closedir(d);
	return found;
}

/* Runs on an nng taskq thread once the limit has passed since the connection was made, and
 * again DG_TLS_GRACE_MS after it shut the socket down if the connection is still there. */
static void watchdog_cb(void *arg)
{
	struct nng_tls_engine_conn *c = arg;
	char ours[NAMES_LEN] = "";
	if (nng_aio_result(c->watchdog) != 0 || atomic_load(&c->heard))
		return;
	const char *dir = c->cfg->mode == NNG_TLS_MODE_SERVER ? "from" : "with";
	if (!c->kicked) {
		if (!atomic_load(&c->hs_done)) {
			if (!atomic_exchange(&c->counted, true)) {
				DG_LOGW(TLS,
					"handshake %s %s rejected: did not finish within %u ms%s%s",
					dir, c->peer, c->limit_ms,
					c->expect[0] ? ", expecting " : "", c->expect);
				atomic_fetch_add(&n_failed, 1);
			}
		} else if (!atomic_exchange(&c->counted, true)) {
			/* A client whose handshake finished but that never heard from the server:
			 * the server most likely refused our certificate and its alert was lost
			 * with the close. The SSL belongs to nng's threads: name our certificate
			 * from the config. */
			pthread_mutex_lock(&c->cfg->mtx);
			names_format(SSL_CTX_get0_certificate(c->cfg->ctx), ours, sizeof(ours));
			pthread_mutex_unlock(&c->cfg->mtx);
			DG_LOGW(TLS,
				"handshake %s %s rejected: the peer closed or fell silent right "
				"after the handshake and sent nothing within %u ms (did it refuse "
				"our certificate %s?)",
				dir, c->peer, c->limit_ms, ours);
			atomic_fetch_add(&n_failed, 1);
		} else {
			DG_LOGW(TLS,
				"connection %s %s: the peer sent nothing within %u ms; closing",
				dir, c->peer, c->limit_ms);
		}
		c->kicked = true;
		if (tcp_shutdown(&c->local, &c->remote)) {
			nng_sleep_aio(DG_TLS_GRACE_MS,
				      c->watchdog); /* fini cancels it if it worked */
			return;
		}
	}
	/* nng did not let go: its TCP aios are already gone (the zombie) or the socket is. */
	if (c->cfg->mode == NNG_TLS_MODE_CLIENT) {
		/* nng 1.5.2: the engine's void * is nng's TLS connection, which begins with its
		 * nng_stream. Closing it fails the queued aios with NNG_ECLOSED: a synchronous dial
		 * returns; a background dialer does not redial, but it was stuck for good anyway.
		 */
		nng_stream_close((nng_stream *)c->tls);
	} else {
		DG_LOGW(TLS,
			"connection from %s: nng lost its transport and cannot release it "
			"without stopping the listener (nng 1.5.2); it stays until the listener "
			"closes",
			c->peer);
	}
}

static int conn_init(struct nng_tls_engine_conn *c, void *tls, struct nng_tls_engine_config *cfg)
{
	int rv;
	c->tls = tls;
	c->cfg = cfg;
	c->started_ms = dg_now_ms();
	c->limit_ms = atomic_load(&dg__tls_handshake_ms);
	/* nng 1.5.2 hands us its TLS connection (an nng_stream whose TCP stream is set by now);
	 * asking it for the remote address takes no lock of the connection. */
	if (nng_stream_get_addr((nng_stream *)tls, NNG_OPT_REMADDR, &c->remote) == 0)
		addr_format(&c->remote, c->peer, sizeof(c->peer));
	else
		snprintf(c->peer, sizeof(c->peer), "unknown");
	if (nng_stream_get_addr((nng_stream *)tls, NNG_OPT_LOCADDR, &c->local) != 0)
		c->local.s_family = 0;

	BIO *bio = BIO_new(bio_meth);
	if (!bio)
		return NNG_ENOMEM;
	BIO_set_data(bio, c);
	BIO_set_init(bio, 1);

	ERR_clear_error();
	pthread_mutex_lock(&cfg->mtx);
	c->ssl = SSL_new(cfg->ctx); /* holds its own reference: a reload does not touch it */
	if (c->ssl && cfg->host) {
		snprintf(c->expect, sizeof(c->expect), "%s", cfg->host);
		X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
		X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (X509_VERIFY_PARAM_set1_ip_asc(vp, cfg->host) != 1) {
			ERR_clear_error();
			X509_VERIFY_PARAM_set1_host(vp, cfg->host, 0);
			SSL_set_tlsext_host_name(c->ssl, cfg->host);
		}
	}
	pthread_mutex_unlock(&cfg->mtx);
	if (!c->ssl) {
		BIO_free(bio);
		ERR_clear_error();
		return NNG_ENOMEM;
	}
	SSL_set_bio(c->ssl, bio, bio); /* one reference, owned by the SSL from now on */
	SSL_set_ex_data(c->ssl, conn_idx, c);
	if (cfg->mode == NNG_TLS_MODE_SERVER)
		SSL_set_accept_state(c->ssl);
	else
		SSL_set_connect_state(c->ssl);
	/* take whatever nng has received in one BIO call rather than a record header and then its
	 * body: with messages sealed whole, one read usually holds a whole message */
	SSL_set_read_ahead(c->ssl, 1);

	if ((rv = nng_aio_alloc(&c->watchdog, watchdog_cb, c)) != 0)
		return rv; /* fini frees the SSL */
	nng_sleep_aio((nng_duration)c->limit_ms, c->watchdog);
	return 0;
}

/* A connection that ends before it was counted, without an error of ours: mid-handshake, or
 * a client whose handshake finished but that never heard from the server. Every SP peer
 * speaks first thing, so this is the peer closing on us (or a local close); when a listener
 * refuses our certificate its alert is often lost with the reset, so name what we showed. */
static void fini_count_failed(struct nng_tls_engine_conn *c)
{
	char reason[NAMES_LEN + 192], ours[NAMES_LEN];
	X509 *x = SSL_get_certificate(c->ssl);
	names_format(x, ours, sizeof(ours));
	if (atomic_load(&c->hs_done))
		snprintf(reason, sizeof(reason),
			 "the connection closed right after the handshake, before the peer sent "
			 "anything (did it refuse our certificate %s?)",
			 x ? ours : "(none)");
	else
		snprintf(reason, sizeof(reason),
			 "connection closed before the handshake finished%s%s",
			 x ? "; our certificate carries " : "", x ? ours : "");
	hs_count_failed(c, reason);
}

/* Called by nng's reaper, with no lock, after everything else on the connection has stopped;
 * also for connections whose init never ran (a failed dial), which are all zeroes. */
static void conn_fini(struct nng_tls_engine_conn *c)
{
	if (c->watchdog) {
		nng_aio_stop(c->watchdog); /* waits for a running watchdog_cb */
		nng_aio_free(c->watchdog);
		c->watchdog = NULL;
	}
	if (c->ssl) {
		if (!atomic_load(&c->counted))
			fini_count_failed(c);
		peer_drop(c);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	free(c->out);
	c->out = NULL;
}

static void conn_close(struct nng_tls_engine_conn *c)
{
	peer_drop(c);
	if (c->ssl && atomic_load(&c->hs_done)) {
		/* close_notify, best effort: nng closes the TCP stream right after this */
		ERR_clear_error();
		(void)SSL_shutdown(c->ssl);
		ERR_clear_error();
	}
}

static bool conn_verified(struct nng_tls_engine_conn *c)
{
	return c->ssl && SSL_get0_peer_certificate(c->ssl) &&
	       SSL_get_verify_result(c->ssl) == X509_V_OK;
}

/* ---- configs ---- */

/* Applies a config's authentication mode and versions to ctx. Caller holds cfg->mtx or owns
 * a cfg nobody else can see yet. */
static void ctx_apply(struct nng_tls_engine_config *cfg, SSL_CTX *ctx)
{
	int vmode = SSL_VERIFY_NONE;
	if (cfg->auth == NNG_TLS_AUTH_MODE_OPTIONAL)
		vmode = SSL_VERIFY_PEER;
	else if (cfg->auth == NNG_TLS_AUTH_MODE_REQUIRED)
		vmode = SSL_VERIFY_PEER |
			(cfg->mode == NNG_TLS_MODE_SERVER ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
	SSL_CTX_set_verify(ctx, vmode, verify_cb);
	SSL_CTX_set_min_proto_version(ctx, cfg->min_ver);
	SSL_CTX_set_max_proto_version(ctx, cfg->max_ver);
}

static SSL_CTX *ctx_new(struct nng_tls_engine_config *cfg)
{
	SSL_CTX *ctx = SSL_CTX_new(cfg->mode == NNG_TLS_MODE_SERVER ? TLS_server_method()
								    : TLS_client_method());
	if (!ctx)
		return NULL;
	/* nng may take fewer bytes than offered and retries from the same aio, whose buffer
	 * address can move between calls */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* send the chain in cert_file and nothing more, as Consul does; OpenSSL would otherwise
	 * add the CA from our trust store to every handshake */
	SSL_CTX_set_mode(ctx, SSL_MODE_NO_AUTO_CHAIN);
	/* every nng connection is a fresh handshake: tickets and a session cache are dead weight */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	ctx_apply(cfg, ctx);
	return ctx;
}

static int config_init(struct nng_tls_engine_config *cfg, nng_tls_mode mode)
{
	if (pthread_mutex_init(&cfg->mtx, NULL) != 0)
		return NNG_ENOMEM;
	cfg->mode = mode;
	/* as nng's own engine: clients verify the server, servers ask nothing unless told */
	cfg->auth =
	    mode == NNG_TLS_MODE_SERVER ? NNG_TLS_AUTH_MODE_NONE : NNG_TLS_AUTH_MODE_REQUIRED;
	cfg->min_ver = TLS1_2_VERSION;
	cfg->max_ver = TLS1_3_VERSION;
	ERR_clear_error();
	if ((cfg->ctx = ctx_new(cfg)) == NULL) {
		ERR_clear_error();
		pthread_mutex_destroy(&cfg->mtx);
		return NNG_ENOMEM;
	}
	tl_new_cfg = cfg;
	return 0;
}

static void config_fini(struct nng_tls_engine_config *cfg)
{
	pthread_mutex_lock(&reg_mtx);
	if (cfg->registered) {
		struct nng_tls_engine_config **pp = &reg_head;
		while (*pp && *pp != cfg)
			pp = &(*pp)->next;
		if (*pp)
			*pp = cfg->next;
		cfg->registered = false;
	}
	pthread_mutex_unlock(&reg_mtx);
	SSL_CTX_free(cfg->ctx);
	free(cfg->host);
	free(cfg->accept);
	free(cfg->domain);
	pthread_mutex_destroy(&cfg->mtx);
}

static int config_server(struct nng_tls_engine_config *cfg, const char *name)
{
	char *dup = NULL;
	if (name && name[0] && (dup = strdup(name)) == NULL)
		return NNG_ENOMEM;
	pthread_mutex_lock(&cfg->mtx);
	free(cfg->host);
	cfg->host = dup;
	pthread_mutex_unlock(&cfg->mtx);
	return 0;
}

static int config_auth(struct nng_tls_engine_config *cfg, nng_tls_auth_mode mode)
{
	if (mode != NNG_TLS_AUTH_MODE_NONE && mode != NNG_TLS_AUTH_MODE_OPTIONAL &&
	    mode != NNG_TLS_AUTH_MODE_REQUIRED)
		return NNG_EINVAL;
	pthread_mutex_lock(&cfg->mtx);
	cfg->auth = mode;
	ctx_apply(cfg, cfg->ctx);
	pthread_mutex_unlock(&cfg->mtx);
	return 0;
}

/* Reads every certificate in a PEM text or file into sk; returns how many, -1 on a bad block. */
static int pem_certs(BIO *in, STACK_OF(X509) * sk)
{
	int n = 0;
	X509 *x;
	while ((x = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
		if (!sk_X509_push(sk, x)) {
			X509_free(x);
			return -1;
		}
		n++;
	}
	unsigned long e = ERR_peek_last_error();
	if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)
		ERR_clear_error(); /* the normal end of the text */
	return ERR_peek_error() ? -1 : n;
}

/* Adds every certificate of sk to st; the same CA twice (ca_file and ca_path, or two calls)
 * is not an error. 0 or -1 with the OpenSSL error queued. */
static int store_add_all(X509_STORE *st, STACK_OF(X509) * sk)
{
	for (int i = 0; i < sk_X509_num(sk); i++) {
		if (X509_STORE_add_cert(st, sk_X509_value(sk, i)) == 1)
			continue;
		if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_CERT_ALREADY_IN_HASH_TABLE)
			return -1;
		ERR_clear_error();
	}
	return 0;
}

static int config_ca_chain(struct nng_tls_engine_config *cfg, const char *certs, const char *crl)
{
	STACK_OF(X509) *sk = sk_X509_new_null();
	BIO *in = BIO_new_mem_buf(certs, -1);
	int rv = NNG_ECRYPTO;
	ERR_clear_error();
	if (!sk || !in || pem_certs(in, sk) <= 0)
		goto out;
	pthread_mutex_lock(&cfg->mtx);
	X509_STORE *st = SSL_CTX_get_cert_store(cfg->ctx);
	rv = store_add_all(st, sk) == 0 ? 0 : NNG_ECRYPTO;
	if (rv == 0 && crl) {
		BIO *cin = BIO_new_mem_buf(crl, -1);
		X509_CRL *x;
		int ncrl = 0;
		while (cin && (x = PEM_read_bio_X509_CRL(cin, NULL, NULL, NULL)) != NULL) {
			if (!X509_STORE_add_crl(st, x))
				rv = NNG_ECRYPTO;
			X509_CRL_free(x);
			ncrl++;
		}
		if (ncrl)
			X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
		BIO_free(cin);
	}
	pthread_mutex_unlock(&cfg->mtx);
out:
	ERR_clear_error();
	BIO_free(in);
	sk_X509_pop_free(sk, X509_free);
	return rv;
}

/* Password callback that never prompts: OpenSSL's default reads the terminal. */
static int pass_cb(char *buf, int size, int rwflag, void *u)
{
	const char *pass = u;
	if (!pass || size <= 0)
		return 0;
	size_t n = strnlen(pass, (size_t)size);
	if (n >= (size_t)size)
		return 0;
	memcpy(buf, pass, n);
	return (int)n;
}

/* Our identity: a certificate (first PEM certificate), its chain (the others) and key. */
struct ident {
	X509 *cert;
	STACK_OF(X509) * chain;
	EVP_PKEY *key;
};

static void ident_fini(struct ident *id)
{
	X509_free(id->cert);
	sk_X509_pop_free(id->chain, X509_free);
	EVP_PKEY_free(id->key);
	memset(id, 0, sizeof(*id));
}

static int ident_parse(BIO *certs, BIO *key, const char *pass, struct ident *id)
{
	STACK_OF(X509) *all = sk_X509_new_null();
	memset(id, 0, sizeof(*id));
	if (!all || pem_certs(certs, all) <= 0) {
		sk_X509_pop_free(all, X509_free);
		return -1;
	}
	id->cert = sk_X509_shift(all);
	id->chain = all;
	id->key = PEM_read_bio_PrivateKey(key, NULL, pass_cb, (void *)pass);
	if (!id->key || X509_check_private_key(id->cert, id->key) != 1) {
		ident_fini(id);
		return -1;
	}
	return 0;
}

static int ctx_use_ident(SSL_CTX *ctx, const struct ident *id)
{
	if (SSL_CTX_use_certificate(ctx, id->cert) != 1 || SSL_CTX_clear_chain_certs(ctx) != 1)
		return -1;
	for (int i = 0; i < sk_X509_num(id->chain); i++)
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(id->chain, i)) != 1)
			return -1;
	if (SSL_CTX_use_PrivateKey(ctx, id->key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		return -1;
	return 0;
}

static int config_own_cert(struct nng_tls_engine_config *cfg, const char *cert, const char *key,
			   const char *pass)
{
	BIO *cin = BIO_new_mem_buf(cert, -1), *kin = BIO_new_mem_buf(key, -1);
	struct ident id;
	int rv = NNG_ECRYPTO;
	ERR_clear_error();
	if (cin && kin && ident_parse(cin, kin, pass, &id) == 0) {
		pthread_mutex_lock(&cfg->mtx);
		rv = ctx_use_ident(cfg->ctx, &id) == 0 ? 0 : NNG_ECRYPTO;
		pthread_mutex_unlock(&cfg->mtx);
		ident_fini(&id);
	}
	ERR_clear_error();
	BIO_free(cin);
	BIO_free(kin);
	return rv;
}

static int config_version(struct nng_tls_engine_config *cfg, nng_tls_version min_ver,
			  nng_tls_version max_ver)
{
	/* 1.2 is the oldest we speak; a range entirely below it cannot be met */
	if (min_ver > max_ver || max_ver < NNG_TLS_1_2 || max_ver > NNG_TLS_1_3)
		return NNG_ENOTSUP;
	pthread_mutex_lock(&cfg->mtx);
	/* nng's version numbers are the wire numbers, as OpenSSL's are (0x303 is TLS 1.2) */
	cfg->min_ver = min_ver < NNG_TLS_1_2 ? TLS1_2_VERSION : (int)min_ver;
	cfg->max_ver = (int)max_ver;
	ctx_apply(cfg, cfg->ctx);
	pthread_mutex_unlock(&cfg->mtx);
	return 0;
}

static nng_tls_engine_config_ops config_ops = {
    .size = sizeof(struct nng_tls_engine_config),
    .init = config_init,
    .fini = config_fini,
    .server = config_server,
    .auth = config_auth,
    .ca_chain = config_ca_chain,
    .own_cert = config_own_cert,
    .version = config_version,
};

static nng_tls_engine_conn_ops conn_ops = {
    .size = sizeof(struct nng_tls_engine_conn),
    .init = conn_init,
    .fini = conn_fini,
    .close = conn_close,
    .handshake = conn_handshake,
    .recv = conn_recv,
    .send = conn_send,
    .verified = conn_verified,
};

static nng_tls_engine engine = {
    .version = NNG_TLS_ENGINE_VERSION,
    .config_ops = &config_ops,
    .conn_ops = &conn_ops,
    .name = "openssl",
    .description = "OpenSSL",
    .fips_mode = false,
};

/* ---- the public side ---- */

int dg_tls_engine_init(void)
{
	int rv = 0;
	pthread_mutex_lock(&init_mtx);
	if (engine_ready)
		goto out;
	/* nng initialises itself lazily on first use, and that init registers mbedTLS over
	 * whatever engine was registered before; make it happen now (any nng call does). */
	(void)nng_tls_engine_name();
	if (OPENSSL_init_ssl(0, NULL) != 1) {
		rv = DG_EIO;
		goto out;
	}
	if (conn_idx < 0)
		conn_idx = SSL_get_ex_new_index(0, "dcgate nng conn", NULL, NULL, NULL);
	if (!bio_meth) {
		bio_meth = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "nng stream");
		if (!bio_meth || BIO_meth_set_write_ex(bio_meth, bio_write_ex) != 1 ||
		    BIO_meth_set_read_ex(bio_meth, bio_read_ex) != 1 ||
		    BIO_meth_set_ctrl(bio_meth, bio_ctrl) != 1) {
			BIO_meth_free(bio_meth);
			bio_meth = NULL;
		}
	}
	if (conn_idx < 0 || !bio_meth) {
		ERR_clear_error();
		rv = DG_ENOMEM;
		goto out;
	}
	engine.description = OpenSSL_version(OPENSSL_VERSION);
	int nrv = nng_tls_engine_register(&engine);
	if (nrv != 0 || strcmp(nng_tls_engine_name(), engine.name) != 0) {
		DG_LOGE(TLS, "registering OpenSSL with nng failed: %s",
			nrv ? nng_strerror(nrv) : "nng kept another engine");
		rv = DG_EIO;
		goto out;
	}
	engine_ready = true;
	DG_LOGD(TLS, "nng TLS engine: %s", engine.description);
out:
	pthread_mutex_unlock(&init_mtx);
	return rv;
}

const char *dg_tls_engine_name(void)
{
	return nng_tls_engine_name();
}

void dg_tls_stats(struct dg_tls_stats *out)
{
	out->handshakes_ok = atomic_load(&n_ok);
	out->handshakes_failed = atomic_load(&n_failed);
	out->reloads = atomic_load(&n_reloads);
}

int dg_tls_peer_identity(const nng_sockaddr *remote, char *role, size_t rlen, char *dc, size_t dlen)
{
	char key[ADDR_LEN];
	int rv = DG_ENOTFOUND;
	addr_format(remote, key, sizeof(key));
	pthread_mutex_lock(&peers_mtx);
	struct peer_ent *e = peers_ready ? dg_map_find(&peers, key) : NULL;
	if (e && (rv = str_copy(role, rlen, e->role)) == 0)
		rv = str_copy(dc, dlen, e->dc);
	pthread_mutex_unlock(&peers_mtx);
	return rv;
}

/* What a policy's files hold: our identity (maybe none) and the CA certificates. */
struct material {
	struct ident id;
	bool has_id;
	STACK_OF(X509) * cas;
};

static void material_fini(struct material *m)
{
	ident_fini(&m->id);
	sk_X509_pop_free(m->cas, X509_free);
	memset(m, 0, sizeof(*m));
}

static int ca_file_load(const char *path, STACK_OF(X509) * cas, bool must, char *err, size_t errlen)
{
	BIO *in = BIO_new_file(path, "r");
	int n = in ? pem_certs(in, cas) : -1;
	BIO_free(in);
	if (n > 0 || !must) {
		ERR_clear_error();
		return 0;
	}
	if (n == 0)
		snprintf(err, errlen, "no certificates in CA file %s", path);
	else
		ossl_err(err, errlen, "reading CA file", path);
	return DG_EINVAL;
}

/* Loads the policy's files with plain OpenSSL calls; need_id: fail without cert and key. */
static int material_load(const struct dg_tls_policy *p, bool need_id, struct material *m, char *err,
			 size_t errlen)
{
	int rv;
	memset(m, 0, sizeof(*m));
	ERR_clear_error();
	if ((m->cas = sk_X509_new_null()) == NULL)
		return DG_ENOMEM;
	if (p->ca_file && (rv = ca_file_load(p->ca_file, m->cas, true, err, errlen)) != 0)
		goto fail;
	if (p->ca_path) {
		/* like Consul: every file in the directory that holds PEM certificates */
		DIR *d = opendir(p->ca_path);
		struct dirent *de;
		if (!d) {
			snprintf(err, errlen, "ca_path %s: cannot open the directory", p->ca_path);
			rv = DG_EINVAL;
			goto fail;
		}
		while ((de = readdir(d)) != NULL) {
			char path[4096];
			struct stat st;
			int n = snprintf(path, sizeof(path), "%s/%s", p->ca_path, de->d_name);
			if (de->d_name[0] == '.' || n < 0 || (size_t)n >= sizeof(path) ||
			    stat(path, &st) != 0 || !S_ISREG(st.st_mode))
				continue;
			ca_file_load(path, m->cas, false, err, errlen);
		}
		closedir(d);
	}
	if (sk_X509_num(m->cas) == 0) {
		snprintf(err, errlen, "no CA certificates (set ca_file or ca_path)%s%s",
			 p->ca_path ? ": none found in " : "", p->ca_path ? p->ca_path : "");
		rv = DG_EINVAL;
		goto fail;
	}
	if (p->cert_file && p->key_file) {
		BIO *cin = BIO_new_file(p->cert_file, "r"), *kin = BIO_new_file(p->key_file, "r");
		int bad = !cin || !kin || ident_parse(cin, kin, NULL, &m->id) != 0;
		BIO_free(cin);
		BIO_free(kin);
		if (bad) {
			snprintf(err, errlen, "cert_file %s / key_file %s: %s", p->cert_file,
				 p->key_file,
				 ERR_peek_last_error() ? ossl_reason("unreadable")
						       : "no certificate or key in the files");
			ERR_clear_error();
			rv = DG_EINVAL;
			goto fail;
		}
		m->has_id = true;
	} else if (need_id) {
		snprintf(err, errlen, "a TLS listener needs cert_file and key_file");
		rv = DG_EINVAL;
		goto fail;
	}
	return 0;
fail:
	material_fini(m);
	return rv;
}

/* A fresh SSL_CTX for cfg from m. Caller holds cfg->mtx (or owns an unpublished cfg). */
static SSL_CTX *ctx_build(struct nng_tls_engine_config *cfg, const struct material *m, char *err,
			  size_t errlen)
{
	ERR_clear_error();
	SSL_CTX *ctx = ctx_new(cfg);
	if (!ctx) {
		ossl_err(err, errlen, "SSL_CTX_new", NULL);
		return NULL;
	}
	if (store_add_all(SSL_CTX_get_cert_store(ctx), m->cas) != 0)
		goto fail;
	if (m->has_id && ctx_use_ident(ctx, &m->id) != 0)
		goto fail;
	return ctx;
fail:
	ossl_err(err, errlen, "setting up the TLS context", NULL);
	SSL_CTX_free(ctx);
	return NULL;
}

static int tls_min(const struct dg_tls_policy *p)
{
	return p->min_version >= TLS1_3_VERSION ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* Makes an nng config for our engine and fills it from p; the common half of the two
 * dg_tls_*_config() calls. host and accept are copied. */
static int config_make(const struct dg_tls_policy *p, nng_tls_mode mode, const char *host,
		       const char *accept, nng_tls_config **out, char *err, size_t errlen)
{
	struct material m;
	nng_tls_config *ncfg = NULL;
	int rv;
	*out = NULL;
	if (!engine_ready) {
		snprintf(err, errlen, "the OpenSSL engine is not registered (dg_tls_engine_init)");
		return DG_EINVAL;
	}
	if ((rv = material_load(p, mode == NNG_TLS_MODE_SERVER, &m, err, errlen)) != 0)
		return rv;
	tl_new_cfg = NULL;
	if ((rv = nng_tls_config_alloc(&ncfg, mode)) != 0 || tl_new_cfg == NULL) {
		snprintf(err, errlen, "nng_tls_config_alloc: %s",
			 rv ? nng_strerror(rv) : "another TLS engine is registered");
		if (ncfg)
			nng_tls_config_free(ncfg);
		material_fini(&m);
		return rv == NNG_ENOMEM ? DG_ENOMEM : DG_EIO;
	}
	struct nng_tls_engine_config *cfg = tl_new_cfg;
	tl_new_cfg = NULL;
	/* nobody else sees cfg until we return it, so no lock is needed to fill it */
	cfg->auth = NNG_TLS_AUTH_MODE_REQUIRED;
	cfg->min_ver = tls_min(p);
	cfg->max_ver = TLS1_3_VERSION;
	if ((host && (cfg->host = strdup(host)) == NULL) ||
	    (accept && accept[0] && (cfg->accept = strdup(accept)) == NULL) ||
	    (p->domain && (cfg->domain = strdup(p->domain)) == NULL)) {
		snprintf(err, errlen, "out of memory");
		rv = DG_ENOMEM;
		goto fail;
	}
	SSL_CTX *ctx = ctx_build(cfg, &m, err, errlen);
	if (!ctx) {
		rv = DG_EINVAL;
		goto fail;
	}
	SSL_CTX_free(cfg->ctx);
	cfg->ctx = ctx;
	material_fini(&m);
	pthread_mutex_lock(&reg_mtx);
	cfg->next = reg_head;
	reg_head = cfg;
	cfg->registered = true;
	pthread_mutex_unlock(&reg_mtx);
	*out = ncfg;
	return 0;
fail:
	material_fini(&m);
	nng_tls_config_free(ncfg);
	return rv;
}

int dg_tls_dialer_config(const struct dg_tls_policy *p, const char *dc, nng_tls_config **out,
			 char *err, size_t errlen)
{
	char host[256];
	const char *domain = p->domain ? p->domain : "consul";
	int n = dc && dc[0] ? snprintf(host, sizeof(host), "server.%s.%s", dc, domain) : -1;
	if (n < 0 || (size_t)n >= sizeof(host) || strchr(dc, '.') != NULL) {
		snprintf(err, errlen, "bad datacenter name for a TLS dialer: \"%s\"", dc ? dc : "");
		return DG_EINVAL;
	}
	/* The name is checked when the policy asks, and always across datacenters and from a
	 * server: a server only ever dials servers, and every WAN dial must know who answers. */
	bool check = p->verify_server_hostname || p->server || !p->dc || strcmp(dc, p->dc) != 0;
	return config_make(p, NNG_TLS_MODE_CLIENT, check ? host : NULL, NULL, out, err, errlen);
}

int dg_tls_dialer_config_any(const struct dg_tls_policy *p, const char *accept, nng_tls_config **out,
			     char *err, size_t errlen)
{
	return config_make(p, NNG_TLS_MODE_CLIENT, NULL, accept, out, err, errlen);
}

int dg_tls_listener_config(const struct dg_tls_policy *p, const char *accept, nng_tls_config **out,
			   char *err, size_t errlen)
{
	return config_make(p, NNG_TLS_MODE_SERVER, NULL, accept, out, err, errlen);
}

int dg_tls_reload(const struct dg_tls_policy *p, char *err, size_t errlen)
{
	struct material m;
	size_t n = 0, i = 0;
	int rv;
	bool any_server = false;
	pthread_mutex_lock(&reg_mtx);
	for (struct nng_tls_engine_config *c = reg_head; c; c = c->next) {
		n++;
		any_server |= c->mode == NNG_TLS_MODE_SERVER;
	}
	if ((rv = material_load(p, any_server, &m, err, errlen)) != 0) {
		pthread_mutex_unlock(&reg_mtx);
		return rv;
	}
	/* Build every new context first and swap only if all could be built, so a bad file
	 * leaves every link as it was. */
	SSL_CTX **fresh = n ? calloc(n, sizeof(*fresh)) : NULL;
	if (n && !fresh) {
		rv = DG_ENOMEM;
		goto out;
	}
	for (struct nng_tls_engine_config *c = reg_head; c; c = c->next, i++) {
		pthread_mutex_lock(&c->mtx);
		int saved = c->min_ver;
		c->min_ver = tls_min(p);
		fresh[i] = ctx_build(c, &m, err, errlen);
		c->min_ver = saved;
		pthread_mutex_unlock(&c->mtx);
		if (!fresh[i]) {
			rv = DG_EINVAL;
			goto out;
		}
	}
	i = 0;
	for (struct nng_tls_engine_config *c = reg_head; c; c = c->next, i++) {
		pthread_mutex_lock(&c->mtx);
		SSL_CTX *old = c->ctx;
		c->ctx = fresh[i];
		c->min_ver = tls_min(p);
		fresh[i] = old; /* freed below; live SSLs keep their own reference */
		pthread_mutex_unlock(&c->mtx);
	}
	atomic_fetch_add(&n_reloads, 1);
	DG_LOGI(TLS, "reloaded certificates for %zu TLS configs (cert %s, CA %s%s%s)", n,
		p->cert_file ? p->cert_file : "none", p->ca_file ? p->ca_file : "",
		p->ca_path ? " " : "", p->ca_path ? p->ca_path : "");
out:
	pthread_mutex_unlock(&reg_mtx);
	for (size_t k = 0; fresh && k < n; k++)
		SSL_CTX_free(fresh[k]);
	free(fresh);
	material_fini(&m);
	return rv;
}
