/* Tests for tls/engine.c over real loopback tls+tcp with nng req/rep: a CA and certificates are
 * made in a temp dir with the openssl command line; each test checks who is accepted, what the
 * listener learns of its peer, what a rejection logs, reload, and the handshake time limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/common.h"
#include "tls/tls.h"

/* The engine's handshake limit, lowered here so the stall tests take a second, not ten. */
extern _Atomic unsigned dg__tls_handshake_ms;
#define LIMIT_MS 3000 /* for every test here: well inside wait_failed()'s 10 s */

static char dir[256];

/* ---- certificates, made with the openssl command line ---- */

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	assert_true(n > 0 && (size_t)n < sizeof(cmd));
	if (system(cmd) != 0)
		fail_msg("command failed: %s", cmd);
}

static void make_ca(const char *name)
{
	sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out %s-key.pem 2>/dev/null "
	   "&& "
	   "openssl req -x509 -new -key %s-key.pem -out %s.pem -days 30 -subj '/CN=%s test CA' "
	   "-addext basicConstraints=critical,CA:TRUE "
	   "-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null",
	   dir, name, name, name, name);
}

/* A leaf <file>.pem / <file>-key.pem for DNS name dns (plus localhost and 127.0.0.1), both
 * serverAuth and clientAuth, signed by ca. */
static void make_leaf(const char *file, const char *dns, const char *ca)
{
	static unsigned serial = 0x1000;
	sh("cd %s && printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\\n"
	   "extendedKeyUsage=serverAuth,clientAuth\\nbasicConstraints=CA:FALSE\\n"
	   "keyUsage=critical,digitalSignature\\n' > %s.ext && "
	   "openssl ecparam -name prime256v1 -genkey -noout -out %s-key.pem 2>/dev/null && "
	   "openssl req -new -key %s-key.pem -subj '/CN=%s' -out %s.csr 2>/dev/null && "
	   "openssl x509 -req -in %s.csr -CA %s.pem -CAkey %s-key.pem -set_serial %u -days 30 "
	   "-extfile %s.ext -out %s.pem 2>/dev/null",
	   dir, dns, file, file, file, dns, file, file, ca, ca, serial++, file, file);
}

/* A policy for a certificate made above; the strings live in static storage per slot. */
struct pol {
	char ca[320], cert[320], key[320], dc[32];
	struct dg_tls_policy p;
};

static struct dg_tls_policy *pol(struct pol *s, const char *ca, const char *leaf, const char *dc,
				 bool server)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->ca, sizeof(s->ca), "%s/%s.pem", dir, ca);
	snprintf(s->cert, sizeof(s->cert), "%s/%s.pem", dir, leaf);
	snprintf(s->key, sizeof(s->key), "%s/%s-key.pem", dir, leaf);
	snprintf(s->dc, sizeof(s->dc), "%s", dc);
	s->p.ca_file = s->ca;
	s->p.cert_file = s->cert;
	s->p.key_file = s->key;
	s->p.verify_incoming = s->p.verify_outgoing = s->p.verify_server_hostname = true;
	s->p.min_version = TLS1_2_VERSION;
	s->p.domain = "consul";
	s->p.dc = s->dc;
	s->p.server = server;
	return &s->p;
}

/* ---- a rep server: answers "who" with what dg_tls_peer_identity says, echoes the rest ---- */

struct server {
	nng_socket sock;
	nng_listener l;
	nng_tls_config *cfg;
	int port;
	char url[64];
	pthread_t thr;
	atomic_bool stop;
	pthread_mutex_t mtx;
	nng_sockaddr last_peer; /* remote address of the last request (mtx) */
};

static void *server_main(void *arg)
{
	struct server *s = arg;
	while (!atomic_load(&s->stop)) {
		nng_msg *m;
		if (nng_recvmsg(s->sock, &m, 0) != 0)
			continue; /* receive timeout: look at stop again */
		nng_sockaddr sa;
		if (nng_pipe_get_addr(nng_msg_get_pipe(m), NNG_OPT_REMADDR, &sa) == 0) {
			pthread_mutex_lock(&s->mtx);
			s->last_peer = sa;
			pthread_mutex_unlock(&s->mtx);
		}
		if (nng_msg_len(m) == 3 && memcmp(nng_msg_body(m), "who", 3) == 0) {
			char role[32], dc[64], out[128];
			if (dg_tls_peer_identity(&sa, role, sizeof(role), dc, sizeof(dc)) == 0)
				snprintf(out, sizeof(out), "%s %s", role, dc);
			else
				snprintf(out, sizeof(out), "unknown");
			nng_msg_clear(m);
			nng_msg_append(m, out, strlen(out));
		}
		if (nng_sendmsg(s->sock, m, 0) != 0)
			nng_msg_free(m);
	}
	return NULL;
}

static void server_start(struct server *s, const struct dg_tls_policy *p, const char *accept)
{
	char err[512];
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->mtx, NULL);
	int rv = dg_tls_listener_config(p, accept, &s->cfg, err, sizeof(err));
	if (rv != 0)
		fail_msg("listener config: %s", err);
	assert_int_equal(nng_rep0_open(&s->sock), 0);
	assert_int_equal(nng_socket_set_ms(s->sock, NNG_OPT_RECVTIMEO, 100), 0);
	assert_int_equal(nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, 4 << 20), 0);
	assert_int_equal(nng_listener_create(&s->l, s->sock, "tls+tcp://127.0.0.1:0"), 0);
	assert_int_equal(nng_listener_set_ptr(s->l, NNG_OPT_TLS_CONFIG, s->cfg), 0);
	assert_int_equal(nng_listener_start(s->l, 0), 0);
	assert_int_equal(nng_listener_get_int(s->l, NNG_OPT_TCP_BOUND_PORT, &s->port), 0);
	snprintf(s->url, sizeof(s->url), "tls+tcp://127.0.0.1:%d", s->port);
	assert_int_equal(pthread_create(&s->thr, NULL, server_main, s), 0);
}

static void server_stop(struct server *s)
{
	atomic_store(&s->stop, true);
	pthread_join(s->thr, NULL);
	nng_close(s->sock);
	nng_tls_config_free(s->cfg);
	pthread_mutex_destroy(&s->mtx);
}

/* ---- a req client ---- */

/* Dials url with a dialer config for dc made from p, synchronously; the nng result. */
static int client_dial(nng_socket *sock, const struct dg_tls_policy *p, const char *dc,
		       const char *url)
{
	nng_tls_config *cfg;
	nng_dialer d;
	char err[512];
	if (dg_tls_dialer_config(p, dc, &cfg, err, sizeof(err)) != 0)
		fail_msg("dialer config: %s", err);
	assert_int_equal(nng_req0_open(sock), 0);
	assert_int_equal(nng_socket_set_ms(*sock, NNG_OPT_RECVTIMEO, 5000), 0);
	assert_int_equal(nng_socket_set_ms(*sock, NNG_OPT_SENDTIMEO, 5000), 0);
	assert_int_equal(nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, 4 << 20), 0);
	assert_int_equal(nng_dialer_create(&d, *sock, url), 0);
	assert_int_equal(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg), 0);
	nng_tls_config_free(cfg); /* the dialer holds its own reference */
	return nng_dialer_start(d, 0);
}

/* One request, its reply into out (NUL-terminated); the nng result. */
static int ask(nng_socket sock, const void *req, size_t len, char *out, size_t outlen)
{
	void *buf;
	size_t n;
	int rv;
	if ((rv = nng_send(sock, (void *)req, len, 0)) != 0)
		return rv;
	if ((rv = nng_recv(sock, &buf, &n, NNG_FLAG_ALLOC)) != 0)
		return rv;
	if (out) {
		size_t k = n < outlen - 1 ? n : outlen - 1;
		memcpy(out, buf, k);
		out[k] = '\0';
	}
	nng_free(buf, n);
	return 0;
}

/* A good peer dials url and gets an answer: the listener is still accepting. */
static void assert_good_peer_gets_in(const char *url)
{
	struct pol cp;
	nng_socket c;
	char out[64];
	assert_int_equal(client_dial(&c, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", url), 0);
	assert_int_equal(ask(c, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc2");
	nng_close(c);
}

/* ---- capturing the log (dg_log writes lines to stderr) ---- */

static int saved_stderr = -1;
static char log_path[300];

static void log_capture_start(void)
{
	snprintf(log_path, sizeof(log_path), "%s/log.txt", dir);
	int fd = open(log_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	fflush(stderr);
	saved_stderr = dup(2);
	dup2(fd, 2);
	close(fd);
}

/* Stops capturing; returns what was logged (caller frees). */
static char *log_capture_stop(void)
{
	fflush(stderr);
	dup2(saved_stderr, 2);
	close(saved_stderr);
	saved_stderr = -1;
	FILE *f = fopen(log_path, "r");
	assert_non_null(f);
	char *text = calloc(1, 1 << 16);
	size_t n = fread(text, 1, (1 << 16) - 1, f);
	text[n] = '\0';
	fclose(f);
	fprintf(stderr, "%s", text); /* keep it visible in the test output */
	return text;
}

/* Teardown of the tests that capture: a failed assertion leaves stderr redirected, with
 * cmocka's message in the file; put stderr back and show it. */
static int log_capture_teardown(void **state)
{
	if (saved_stderr >= 0)
		free(log_capture_stop());
	return 0;
}

/* Waits (up to 10 s) until the failed-handshake counter has reached at least want. */
static void wait_failed(uint64_t want)
{
	struct dg_tls_stats st;
	for (int i = 0; i < 1000; i++) {
		dg_tls_stats(&st);
		if (st.handshakes_failed >= want)
			return;
		usleep(10000);
	}
	fail_msg("handshakes_failed stayed at %llu, wanted %llu",
		 (unsigned long long)st.handshakes_failed, (unsigned long long)want);
}

/* ---- tests ---- */

static void engine_is_openssl(void **state)
{
	assert_string_equal(dg_tls_engine_name(), "openssl");
}

/* ---- messages of every size, on several links at once ---- */

struct sizes_client {
	const char *url;
	int id;
	int failures; /* messages that did not come back byte for byte */
};

/* Sizes around the points where the engine seals a message: nothing, the SP pieces alone, one
 * record's worth (16320 plaintext bytes) and either side of it, several records, nng's 16 KiB
 * send buffer, and one large message. */
static const size_t sizes[] = {0,     1,     3,	    8,	   9,	  64,	  1000,	 16311, 16312,
			       16313, 16319, 16320, 16321, 16384, 32640, 32641, 65536, 300001};

static void *sizes_client_main(void *arg)
{
	struct sizes_client *sc = arg;
	struct pol cp;
	nng_socket c;
	size_t max = 300001;
	uint8_t *msg = malloc(max);
	assert_int_equal(client_dial(&c, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", sc->url),
			 0);
	for (int round = 0; round < 3; round++) {
		for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
			size_t len = sizes[k];
			for (size_t i = 0; i < len; i++)
				msg[i] = (uint8_t)(i * 31 + k * 7 + (size_t)sc->id * 13 + (size_t)round);
			void *back = NULL;
			size_t n = 0;
			if (nng_send(c, msg, len, 0) != 0 ||
			    nng_recv(c, &back, &n, NNG_FLAG_ALLOC) != 0) {
				sc->failures++;
				continue;
			}
			/* "who" is the one request the server answers differently: never sent here */
			if (n != len || (len && memcmp(back, msg, len) != 0))
				sc->failures++;
			nng_free(back, n);
		}
	}
	nng_close(c);
	free(msg);
	return NULL;
}

/* The engine collects the pieces nng hands it (length, header, body) and seals each message
 * as one record; every size must still arrive whole and in order, on four links at once. */
static void messages_of_every_size_arrive_whole(void **state)
{
	struct pol sp;
	struct server s;
	enum { N = 4 };
	struct sizes_client sc[N];
	pthread_t t[N];
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");
	for (int i = 0; i < N; i++) {
		sc[i] = (struct sizes_client){.url = s.url, .id = i};
		assert_int_equal(pthread_create(&t[i], NULL, sizes_client_main, &sc[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(sc[i].failures, 0);
	}
	server_stop(&s);
}

static void good_pair_talks(void **state)
{
	struct pol sp, cp;
	struct server s;
	nng_socket c;
	char out[128];
	struct dg_tls_stats before, after;
	dg_tls_stats(&before);
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");
	assert_int_equal(client_dial(&c, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", s.url), 0);
	assert_int_equal(ask(c, "hello", 5, out, sizeof(out)), 0);
	assert_string_equal(out, "hello");
	/* the listener knows who dialed: role and DC from the client's SAN server.dc2.consul */
	assert_int_equal(ask(c, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc2");

	/* a message much larger than nng's 16 KiB TLS buffers: partial writes and retries */
	size_t big = 1 << 20;
	char *msg = malloc(big), *back = malloc(big + 1);
	for (size_t i = 0; i < big; i++)
		msg[i] = (char)(i * 7 + 3);
	assert_int_equal(nng_send(c, msg, big, 0), 0);
	void *buf;
	size_t n;
	assert_int_equal(nng_recv(c, &buf, &n, NNG_FLAG_ALLOC), 0);
	assert_int_equal(n, big);
	assert_memory_equal(buf, msg, big);
	nng_free(buf, n);
	free(msg);
	free(back);

	dg_tls_stats(&after);
	assert_true(after.handshakes_ok >= before.handshakes_ok + 2); /* both ends */
	assert_int_equal(after.handshakes_failed, before.handshakes_failed);

	/* the record goes with the connection */
	nng_sockaddr peer;
	pthread_mutex_lock(&s.mtx);
	peer = s.last_peer;
	pthread_mutex_unlock(&s.mtx);
	char role[32], dc[64];
	assert_int_equal(dg_tls_peer_identity(&peer, role, sizeof(role), dc, sizeof(dc)), 0);
	nng_close(c);
	int rv = 0;
	for (int i = 0; i < 500; i++) {
		if ((rv = dg_tls_peer_identity(&peer, role, sizeof(role), dc, sizeof(dc))) != 0)
			break;
		usleep(10000);
	}
	assert_int_equal(rv, DG_ENOTFOUND);
	server_stop(&s);
}

static void dialer_rejects_wrong_san(void **state)
{
	struct pol sp, cp;
	struct server s;
	nng_socket c;
	struct dg_tls_stats before;
	dg_tls_stats(&before);
	/* a west server answers where the east one was expected */
	server_start(&s, pol(&sp, "ca1", "srv-west", "west", true), "server.*.consul");
	log_capture_start();
	int rv = client_dial(&c, pol(&cp, "ca1", "srv-east", "east", true), "east", s.url);
	wait_failed(before.handshakes_failed + 2); /* we refuse; the west server sees the alert */
	char *log = log_capture_stop();
	assert_int_not_equal(rv, 0);
	/* the dialer's line says what it expected, what it got, and from where */
	assert_non_null(strstr(log, "expected server.east.consul"));
	assert_non_null(strstr(log, "server.west.consul"));
	assert_non_null(strstr(log, s.url + strlen("tls+tcp://")));
	/* the listener's line says it was refused (or, when the dialer's alert was lost with its
	 * close, that the connection ended mid-handshake) and which names it showed */
	assert_true(strstr(log, "peer refused") ||
		    strstr(log, "closed before the handshake finished"));
	assert_non_null(strstr(log, "our certificate carries [server.west.consul"));
	free(log);
	nng_close(c);
	/* and the listener still takes a dialer that expects it */
	char out[64];
	assert_int_equal(client_dial(&c, pol(&cp, "ca1", "srv-east", "east", true), "west", s.url),
			 0);
	assert_int_equal(ask(c, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server east");
	nng_close(c);
	server_stop(&s);
}

static void listener_rejects_client_cert_and_other_ca(void **state)
{
	struct pol sp, cp;
	struct server s;
	nng_socket c;
	struct dg_tls_stats before;
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");

	/* a client agent's certificate from the right CA: not a server */
	dg_tls_stats(&before);
	log_capture_start();
	int rv = client_dial(&c, pol(&cp, "ca1", "cli-dc1", "dc1", false), "dc1", s.url);
	if (rv == 0) /* TLS 1.3: the client may finish first; the refusal comes with the data */
		rv = ask(c, "who", 3, NULL, 0);
	wait_failed(before.handshakes_failed + 2);
	char *log = log_capture_stop();
	assert_int_not_equal(rv, 0);
	assert_non_null(strstr(log, "client.dc1.consul"));
	assert_non_null(strstr(log, "do not match server.*.consul"));
	free(log);
	nng_close(c);

	/* a server certificate from another CA (trusting ours, so only the listener objects) */
	dg_tls_stats(&before);
	log_capture_start();
	rv = client_dial(&c, pol(&cp, "ca1", "srv-dc1-ca2", "dc1", true), "dc1", s.url);
	if (rv == 0)
		rv = ask(c, "who", 3, NULL, 0);
	wait_failed(before.handshakes_failed + 2);
	log = log_capture_stop();
	assert_int_not_equal(rv, 0);
	assert_non_null(strstr(log, "unable to get local issuer certificate"));
	assert_non_null(strstr(log, "another CA"));
	free(log);
	nng_close(c);

	/* no certificate at all */
	dg_tls_stats(&before);
	log_capture_start();
	struct dg_tls_policy *anon = pol(&cp, "ca1", "cli-dc1", "dc1", false);
	anon->cert_file = anon->key_file = NULL;
	rv = client_dial(&c, anon, "dc1", s.url);
	if (rv == 0)
		rv = ask(c, "who", 3, NULL, 0);
	wait_failed(before.handshakes_failed + 2);
	log = log_capture_stop();
	assert_int_not_equal(rv, 0);
	assert_non_null(strstr(log, "peer presented no certificate"));
	free(log);
	nng_close(c);

	/* and the right kind still gets in */
	assert_int_equal(client_dial(&c, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", s.url), 0);
	char out[64];
	assert_int_equal(ask(c, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc2");
	nng_close(c);
	server_stop(&s);
}

static void reload_swaps_ca_and_keeps_live_links(void **state)
{
	struct pol sp, cp, np;
	struct server s;
	nng_socket old, fresh;
	char out[64], err[512];
	struct dg_tls_stats before, after;
	dg_tls_stats(&before);
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");
	/* an established link from the old CA */
	assert_int_equal(client_dial(&old, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", s.url),
			 0);
	assert_int_equal(ask(old, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc2");

	/* a peer that has only the new CA and its certificate cannot get in yet */
	struct dg_tls_policy *newp = pol(&np, "ca2", "srv-dc3-ca2", "dc3", true);
	int rv = client_dial(&fresh, newp, "dc1", s.url);
	if (rv == 0)
		rv = ask(fresh, "who", 3, NULL, 0);
	assert_int_not_equal(rv, 0);
	nng_close(fresh);

	/* the server moves to the new CA and a certificate from it */
	struct pol rp;
	struct dg_tls_policy *reloaded = pol(&rp, "ca2", "srv-dc1-ca2", "dc1", true);
	if (dg_tls_reload(reloaded, err, sizeof(err)) != 0)
		fail_msg("reload: %s", err);
	assert_int_equal(client_dial(&fresh, newp, "dc1", s.url), 0);
	assert_int_equal(ask(fresh, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc3");
	/* the old link carries on with what it negotiated */
	assert_int_equal(ask(old, "who", 3, out, sizeof(out)), 0);
	assert_string_equal(out, "server dc2");

	/* a bad file changes nothing */
	struct pol bp;
	struct dg_tls_policy *bad = pol(&bp, "ca2", "missing", "dc1", true);
	assert_int_not_equal(dg_tls_reload(bad, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "missing"));

	dg_tls_stats(&after);
	assert_int_equal(after.reloads, before.reloads + 1);
	nng_close(fresh);
	nng_close(old);
	server_stop(&s);
}

/* Connects to the listener's port from 127.0.0.1; the socket. */
static int tcp_connect(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	struct timeval tv = {.tv_sec = 8};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* True when the peer closes fd (EOF or reset) within its receive timeout. */
static bool closed_by_peer(int fd)
{
	char b[256];
	for (;;) {
		ssize_t n = recv(fd, b, sizeof(b), 0);
		if (n > 0)
			continue; /* e.g. the rest of a TLS flight */
		return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
	}
}

static void silent_peer_does_not_hold_a_listener_slot(void **state)
{
	struct pol sp;
	struct server s;
	struct dg_tls_stats before;
	atomic_store(&dg__tls_handshake_ms, 1000);
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");
	dg_tls_stats(&before);
	/* TCP peers that connect and say nothing */
	int fds[4];
	for (int i = 0; i < 4; i++)
		fds[i] = tcp_connect(s.port);
	for (int i = 0; i < 4; i++) {
		assert_true(closed_by_peer(fds[i]));
		close(fds[i]);
	}
	wait_failed(before.handshakes_failed + 4);
	/* cutting them must not have stopped the listener (nng stops a listener whose
	 * negotiating pipe fails with NNG_ECLOSED) */
	assert_good_peer_gets_in(s.url);
	server_stop(&s);
	atomic_store(&dg__tls_handshake_ms, LIMIT_MS);
}

static void silent_after_handshake_is_cut(void **state)
{
	struct pol sp;
	struct server s;
	char path[320], kpath[320], capath[320];
	atomic_store(&dg__tls_handshake_ms, 1000);
	server_start(&s, pol(&sp, "ca1", "srv-dc1", "dc1", true), "server.*.consul");
	/* a real TLS client with a good certificate that never sends the SP header */
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	snprintf(path, sizeof(path), "%s/srv-dc2.pem", dir);
	snprintf(kpath, sizeof(kpath), "%s/srv-dc2-key.pem", dir);
	snprintf(capath, sizeof(capath), "%s/ca1.pem", dir);
	assert_int_equal(SSL_CTX_use_certificate_file(ctx, path, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey_file(ctx, kpath, SSL_FILETYPE_PEM), 1);
	assert_int_equal(SSL_CTX_load_verify_locations(ctx, capath, NULL), 1);
	int fd = tcp_connect(s.port);
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	assert_int_equal(SSL_connect(ssl), 1);
	/* the listener sends its SP header, then must cut us: EOF or an error, not our timeout */
	char b[64];
	int n;
	while ((n = SSL_read(ssl, b, sizeof(b))) > 0)
		;
	int err = SSL_get_error(ssl, n);
	assert_false(err == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK));
	assert_true(err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL ||
		    err == SSL_ERROR_SSL);
	ERR_clear_error();
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd);
	assert_good_peer_gets_in(s.url);
	server_stop(&s);
	atomic_store(&dg__tls_handshake_ms, LIMIT_MS);
}

static void silent_server_does_not_hang_a_dial(void **state)
{
	struct pol cp;
	nng_socket c;
	atomic_store(&dg__tls_handshake_ms, 1000);
	/* a TCP listener that never answers (the kernel completes the TCP handshake) */
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin = {.sin_family = AF_INET};
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sin);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	char url[64];
	snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
	/* without a bound this synchronous dial would never return */
	int rv = client_dial(&c, pol(&cp, "ca1", "srv-dc2", "dc2", true), "dc1", url);
	assert_int_not_equal(rv, 0);
	nng_close(c);
	close(lfd);
	atomic_store(&dg__tls_handshake_ms, LIMIT_MS);
}

static void configs_report_bad_files(void **state)
{
	struct pol p;
	nng_tls_config *cfg = NULL;
	char err[512];
	struct dg_tls_policy *bad = pol(&p, "nope", "srv-dc1", "dc1", true);
	assert_int_equal(dg_tls_dialer_config(bad, "dc1", &cfg, err, sizeof(err)), DG_EINVAL);
	assert_non_null(strstr(err, "nope.pem"));
	assert_null(cfg);
	/* a listener must have an identity */
	bad = pol(&p, "ca1", "srv-dc1", "dc1", true);
	bad->cert_file = bad->key_file = NULL;
	assert_int_equal(dg_tls_listener_config(bad, "server.*.consul", &cfg, err, sizeof(err)),
			 DG_EINVAL);
	assert_null(cfg);
	/* a key that does not belong to the certificate */
	bad = pol(&p, "ca1", "srv-dc1", "dc1", true);
	snprintf(p.key, sizeof(p.key), "%s/srv-dc2-key.pem", dir);
	assert_int_equal(dg_tls_listener_config(bad, "server.*.consul", &cfg, err, sizeof(err)),
			 DG_EINVAL);
	assert_null(cfg);
}

static int setup(void **state)
{
	signal(SIGPIPE, SIG_IGN);
	if (dg_tls_engine_init() != 0)
		return -1;
	atomic_store(&dg__tls_handshake_ms, LIMIT_MS);
	snprintf(dir, sizeof(dir), "/tmp/dcgate-tls-test.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	make_ca("ca1");
	make_ca("ca2");
	make_leaf("srv-dc1", "server.dc1.consul", "ca1");
	make_leaf("srv-dc2", "server.dc2.consul", "ca1");
	make_leaf("srv-east", "server.east.consul", "ca1");
	make_leaf("srv-west", "server.west.consul", "ca1");
	make_leaf("cli-dc1", "client.dc1.consul", "ca1");
	make_leaf("srv-dc1-ca2", "server.dc1.consul", "ca2");
	make_leaf("srv-dc3-ca2", "server.dc3.consul", "ca2");
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (strncmp(dir, "/tmp/dcgate-tls-test.", 21) == 0)
		(void)system(cmd);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(engine_is_openssl),
	    cmocka_unit_test(good_pair_talks),
	    cmocka_unit_test(messages_of_every_size_arrive_whole),
	    cmocka_unit_test_teardown(dialer_rejects_wrong_san, log_capture_teardown),
	    cmocka_unit_test_teardown(listener_rejects_client_cert_and_other_ca,
				      log_capture_teardown),
	    cmocka_unit_test(reload_swaps_ca_and_keeps_live_links),
	    cmocka_unit_test(silent_peer_does_not_hold_a_listener_slot),
	    cmocka_unit_test(silent_after_handshake_is_cut),
	    cmocka_unit_test(silent_server_does_not_hang_a_dial),
	    cmocka_unit_test(configs_report_bad_files),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
