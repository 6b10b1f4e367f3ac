/* bench/tls_bench.c: nng over loopback with dcgate's OpenSSL engine, with nng's own mbedTLS
 * engine and with plain tcp: handshakes/s (a new socket, dial and first round trip, 1 and 8 at
 * once) and small-message req/rep round trips/s on one link (1 and 8 nng contexts at once).
 * Prints `name value` lines (and `#` notes). Built by bench/tls.sh:
 *   cc ... bench/tls_bench.c build/libdcgate.a -lnng -lssl -lcrypto
 * Usage: tls_bench [-seconds S] [-only openssl|mbedtls|tcp] [-mbed]
 *   -mbed is -only mbedtls: nng's built-in engine, dg_tls_engine_init() never called.
 * Each TLS engine runs in its own child process (the TLS engine is process-wide, and nng's
 * engine is whatever was registered first), one after another, each figure S seconds (2.5).
 * Round trips of the OpenSSL engine and of plain tcp, the pair whose ratio is the target, are
 * measured in the same process, in ROUNDS alternating slices of S/ROUNDS seconds, and each is
 * the median of its slices: both see the same moments of a shared 2-core machine, so a burst
 * of noise cannot land on one side only. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <openssl/ssl.h>

#include "common/common.h"
#include "tls/tls.h"

#define MSG_SIZE    64
#define SERVER_CTXS 32
#define MAX_CONC    8
#define ROUNDS	    5

enum transport { T_OPENSSL, T_MBED, T_TCP };
static const char *tnames[] = {"openssl", "mbedtls", "tcp"};

static double seconds = 2.5;
static char dir[128];
static enum transport transport; /* of the child: the engine it runs */

/* A rep server and what a client needs to reach it; `cur` is the one being measured. */
struct endpoint {
	enum transport t;
	nng_socket server;
	char url[64];
	nng_tls_config *dial_cfg; /* NULL for tcp */
};
static struct endpoint *cur;
static volatile sig_atomic_t stopped; /* the parent was asked to stop (TERM/INT) */

static void on_stop(int sig)
{
	stopped = sig;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rv)
{
	fprintf(stderr, "tls_bench %s: %s: %s\n", tnames[cur ? cur->t : transport], what,
		rv ? nng_strerror(rv) : "failed");
	exit(1);
}

/* ---- the rep side: SERVER_CTXS contexts echoing, each an aio callback loop ---- */

struct echo {
	nng_ctx ctx;
	nng_aio *aio;
	bool sending;
};

static void echo_cb(void *arg)
{
	struct echo *e = arg;
	int rv = nng_aio_result(e->aio);
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (e->sending) {
		if (rv != 0)
			nng_msg_free(nng_aio_get_msg(e->aio));
		e->sending = false;
		nng_ctx_recv(e->ctx, e->aio);
		return;
	}
	if (rv != 0) {
		nng_ctx_recv(e->ctx, e->aio);
		return;
	}
	e->sending = true;
	nng_ctx_send(e->ctx, e->aio); /* the message is still on the aio: echo it */
}

static void server_start(struct endpoint *ep, enum transport t)
{
	nng_listener l;
	nng_tls_config *cfg = NULL, *dial_cfg = NULL;
	int rv, port;
	char err[512], path[256];
	const char *base = t == T_TCP ? "tcp://127.0.0.1:0" : "tls+tcp://127.0.0.1:0";
	ep->t = t;
	cur = ep;
	if ((rv = nng_rep0_open(&ep->server)) != 0 ||
	    (rv = nng_listener_create(&l, ep->server, base)) != 0)
		die("listener", rv);
	if (t == T_OPENSSL) {
		struct dg_tls_policy p = {0};
		char ca[256], cert[256], key[256];
		snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
		snprintf(cert, sizeof(cert), "%s/server.pem", dir);
		snprintf(key, sizeof(key), "%s/server-key.pem", dir);
		p.ca_file = ca;
		p.cert_file = cert;
		p.key_file = key;
		p.verify_incoming = p.verify_outgoing = p.verify_server_hostname = true;
		p.min_version = TLS1_2_VERSION;
		p.domain = "consul";
		p.dc = "dc1";
		p.server = true;
		if (dg_tls_listener_config(&p, "server.*.consul", &cfg, err, sizeof(err)) != 0 ||
		    dg_tls_dialer_config(&p, "dc1", &dial_cfg, err, sizeof(err)) != 0) {
			fprintf(stderr, "tls_bench: %s\n", err);
			exit(1);
		}
	} else if (t == T_MBED) {
		/* nng's own API on nng's own engine: the same files, mutual TLS, name checked */
		nng_tls_config *d;
		if ((rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER)) != 0 ||
		    (rv = nng_tls_config_alloc(&d, NNG_TLS_MODE_CLIENT)) != 0)
			die("tls config", rv);
		snprintf(path, sizeof(path), "%s/ca.pem", dir);
		if ((rv = nng_tls_config_ca_file(cfg, path)) != 0 ||
		    (rv = nng_tls_config_ca_file(d, path)) != 0)
			die("ca file", rv);
		snprintf(path, sizeof(path), "%s/server-both.pem", dir);
		if ((rv = nng_tls_config_cert_key_file(cfg, path, NULL)) != 0 ||
		    (rv = nng_tls_config_cert_key_file(d, path, NULL)) != 0 ||
		    (rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
		    (rv = nng_tls_config_auth_mode(d, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
		    (rv = nng_tls_config_server_name(d, "server.dc1.consul")) != 0)
			die("cert/key", rv);
		dial_cfg = d;
	}
	if (cfg && (rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg)) != 0)
		die("listener tls config", rv);
	if ((rv = nng_listener_start(l, 0)) != 0 ||
	    (rv = nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port)) != 0)
		die("listen", rv);
	if (cfg)
		nng_tls_config_free(cfg);
	ep->dial_cfg = dial_cfg;
	snprintf(ep->url, sizeof(ep->url), "%s://127.0.0.1:%d", t == T_TCP ? "tcp" : "tls+tcp",
		 port);
	struct echo *echoes = calloc(SERVER_CTXS, sizeof(*echoes)); /* lives as long as the child */
	if (!echoes)
		die("server ctx", NNG_ENOMEM);
	for (int i = 0; i < SERVER_CTXS; i++) {
		struct echo *e = &echoes[i];
		if ((rv = nng_ctx_open(&e->ctx, ep->server)) != 0 ||
		    (rv = nng_aio_alloc(&e->aio, echo_cb, e)) != 0)
			die("server ctx", rv);
		nng_ctx_recv(e->ctx, e->aio);
	}
}

/* ---- handshakes: new socket, dial, one round trip, close ---- */

static atomic_bool stop;
static _Atomic uint64_t done;
static atomic_int failures;

static int dial(nng_socket *s)
{
	nng_dialer d;
	int rv;
	if ((rv = nng_req0_open(s)) != 0)
		return rv;
	nng_socket_set_ms(*s, NNG_OPT_RECVTIMEO, 5000);
	nng_socket_set_ms(*s, NNG_OPT_SENDTIMEO, 5000);
	if ((rv = nng_dialer_create(&d, *s, cur->url)) != 0 ||
	    (cur->dial_cfg && (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cur->dial_cfg)) != 0) ||
	    (rv = nng_dialer_start(d, 0)) != 0) {
		nng_close(*s);
		return rv;
	}
	return 0;
}

static int round_trip(nng_socket s)
{
	char msg[MSG_SIZE] = "ping", *back;
	size_t n;
	int rv;
	if ((rv = nng_send(s, msg, sizeof(msg), 0)) != 0 ||
	    (rv = nng_recv(s, &back, &n, NNG_FLAG_ALLOC)) != 0)
		return rv;
	nng_free(back, n);
	return 0;
}

static void *handshake_worker(void *arg)
{
	while (!atomic_load(&stop)) {
		nng_socket s;
		int rv = dial(&s);
		if (rv == 0) {
			rv = round_trip(s);
			nng_close(s);
		}
		if (rv != 0) {
			fprintf(stderr, "tls_bench %s: handshake: %s\n", tnames[cur->t],
				nng_strerror(rv));
			atomic_fetch_add(&failures, 1);
			return NULL;
		}
		atomic_fetch_add(&done, 1);
	}
	return NULL;
}

static double measure_handshakes(int conc)
{
	pthread_t t[MAX_CONC];
	atomic_store(&stop, false);
	atomic_store(&done, 0);
	double t0 = now_s();
	for (int i = 0; i < conc; i++)
		pthread_create(&t[i], NULL, handshake_worker, NULL);
	usleep((useconds_t)(seconds * 1e6));
	atomic_store(&stop, true);
	for (int i = 0; i < conc; i++)
		pthread_join(t[i], NULL);
	double el = now_s() - t0;
	if (atomic_load(&failures))
		die("handshakes", 0);
	return (double)atomic_load(&done) / el;
}

/* ---- round trips on one link: conc req contexts, each an aio loop ---- */

struct asker {
	nng_ctx ctx;
	nng_aio *aio;
	bool sending;
};

static void send_one(struct asker *a)
{
	nng_msg *m;
	if (nng_msg_alloc(&m, MSG_SIZE) != 0) {
		atomic_fetch_add(&failures, 1);
		return;
	}
	nng_aio_set_msg(a->aio, m);
	a->sending = true;
	nng_ctx_send(a->ctx, a->aio);
}

static void asker_cb(void *arg)
{
	struct asker *a = arg;
	int rv = nng_aio_result(a->aio);
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv != 0) {
		if (a->sending)
			nng_msg_free(nng_aio_get_msg(a->aio));
		fprintf(stderr, "tls_bench %s: round trip: %s\n", tnames[cur->t],
			nng_strerror(rv));
		atomic_fetch_add(&failures, 1);
		return;
	}
	if (a->sending) {
		a->sending = false;
		nng_ctx_recv(a->ctx, a->aio);
		return;
	}
	nng_msg_free(nng_aio_get_msg(a->aio));
	atomic_fetch_add(&done, 1);
	if (!atomic_load(&stop))
		send_one(a);
}

static double measure_round_trips(int conc, double secs)
{
	struct asker a[MAX_CONC];
	nng_socket s;
	int rv;
	if ((rv = dial(&s)) != 0)
		die("dial", rv);
	round_trip(s); /* the handshake is not part of this figure */
	atomic_store(&stop, false);
	atomic_store(&done, 0);
	for (int i = 0; i < conc; i++) {
		a[i].sending = false;
		if ((rv = nng_ctx_open(&a[i].ctx, s)) != 0 ||
		    (rv = nng_aio_alloc(&a[i].aio, asker_cb, &a[i])) != 0)
			die("ctx", rv);
		nng_aio_set_timeout(a[i].aio, 5000);
	}
	double t0 = now_s();
	for (int i = 0; i < conc; i++)
		send_one(&a[i]);
	usleep((useconds_t)(secs * 1e6));
	atomic_store(&stop, true);
	uint64_t n = atomic_load(&done);
	double el = now_s() - t0;
	for (int i = 0; i < conc; i++)
		nng_aio_stop(a[i].aio);
	/* The socket and its aios are left to the child's exit: nng 1.5.2's nng_close() of a req
	 * socket whose contexts were just interrupted hangs now and then (here with every engine
	 * and plain tcp; nanomsg/nng#1543, #1813), and a bench must not. */
	if (atomic_load(&failures))
		die("round trips", 0);
	return (double)n / el;
}

/* ---- one engine, in a child process ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Round trips/s of the endpoints eps[0..n) at concurrency conc: ROUNDS slices each, the order
 * turned round every slice; prints each endpoint's median, with its slices as a note. */
static void round_trips_interleaved(struct endpoint **eps, int n, int conc)
{
	double got[3][ROUNDS];
	for (int r = 0; r < ROUNDS; r++)
		for (int k = 0; k < n; k++) {
			int e = r % 2 ? n - 1 - k : k;
			cur = eps[e];
			got[e][r] = measure_round_trips(conc, seconds / ROUNDS);
		}
	for (int e = 0; e < n; e++) {
		printf("# %s round trips/s at %d, slices:", tnames[eps[e]->t], conc);
		for (int r = 0; r < ROUNDS; r++)
			printf(" %.0f", got[e][r]);
		printf("\n");
		qsort(got[e], ROUNDS, sizeof(double), cmp_double);
		printf("%s_rtt_c%d_per_s %.0f\n", tnames[eps[e]->t], conc, got[e][ROUNDS / 2]);
	}
	fflush(stdout);
}

static int run(enum transport t)
{
	static const int concs[] = {1, MAX_CONC};
	struct endpoint main_ep, tcp_ep;
	transport = t;
	dg_log_set_level(DG_LOG_WARN);
	if (t != T_MBED && dg_tls_engine_init() != 0)
		die("dg_tls_engine_init", 0);
	if (t == T_MBED && strcmp(nng_tls_engine_name(), "mbed") != 0) {
		fprintf(stderr, "tls_bench: nng's engine is %s, not mbed\n", nng_tls_engine_name());
		return 1;
	}
	server_start(&main_ep, t);
	if (t != T_TCP)
		printf("# %s: nng TLS engine %s (%s)\n", tnames[t], nng_tls_engine_name(),
		       nng_tls_engine_description());
	for (size_t i = 0; i < 2; i++) {
		printf("%s_handshakes_c%d_per_s %.0f\n", tnames[t], concs[i],
		       measure_handshakes(concs[i]));
		fflush(stdout);
	}
	if (t == T_TCP)
		return 0; /* plain tcp's round trips are measured beside the OpenSSL engine's */
	struct endpoint *eps[2] = {&main_ep, &tcp_ep};
	int n = 1;
	if (t == T_OPENSSL) {
		server_start(&tcp_ep, T_TCP); /* tcp:// does not touch the TLS engine */
		n = 2;
	}
	for (size_t i = 0; i < 2; i++)
		round_trips_interleaved(eps, n, concs[i]);
	return 0; /* the servers go with the process, for the same reason */
}

static int make_certs(void)
{
	char cmd[2048];
	snprintf(dir, sizeof(dir), "/tmp/dcgate-tls-bench.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	int n = snprintf(
	    cmd, sizeof(cmd),
	    "cd %s && openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem && "
	    "openssl req -x509 -new -key ca-key.pem -out ca.pem -days 2 -subj '/CN=bench CA' "
	    "-addext basicConstraints=critical,CA:TRUE "
	    "-addext keyUsage=critical,keyCertSign,cRLSign && "
	    "printf 'subjectAltName=DNS:server.dc1.consul,DNS:localhost,IP:127.0.0.1\\n"
	    "extendedKeyUsage=serverAuth,clientAuth\\nbasicConstraints=CA:FALSE\\n' > s.ext && "
	    "openssl ecparam -name prime256v1 -genkey -noout -out server-key.pem && "
	    "openssl req -new -key server-key.pem -subj '/CN=server.dc1.consul' -out s.csr && "
	    "openssl x509 -req -in s.csr -CA ca.pem -CAkey ca-key.pem -set_serial 7 -days 2 "
	    "-extfile s.ext -out server.pem 2>/dev/null && cat server.pem server-key.pem > "
	    "server-both.pem",
	    dir);
	if (n < 0 || (size_t)n >= sizeof(cmd))
		return -1;
	return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
	int only = -1;
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-seconds") == 0 && i + 1 < argc) {
			seconds = atof(argv[++i]);
		} else if (strcmp(argv[i], "-mbed") == 0) {
			only = T_MBED;
		} else if (strcmp(argv[i], "-only") == 0 && i + 1 < argc) {
			i++;
			for (int k = 0; k < 3; k++)
				if (strcmp(argv[i], tnames[k]) == 0)
					only = k;
		} else {
			fprintf(stderr, "usage: tls_bench [-seconds S] [-only openssl|mbedtls|tcp] "
					"[-mbed]\n");
			return 2;
		}
	}
	if (seconds < 0.2 || seconds > 60) {
		fprintf(stderr, "tls_bench: -seconds between 0.2 and 60\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	/* no SA_RESTART: a stop interrupts waitpid(), and the parent kills its child and cleans up
	 */
	struct sigaction sa = {.sa_handler = on_stop};
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (make_certs() != 0) {
		fprintf(stderr, "tls_bench: could not make certificates with openssl in %s\n", dir);
		return 1;
	}
	int status = 0;
	/* no nng call in this process: each child starts nng fresh with its own engine */
	for (int t = 0; t < 3; t++) {
		if (only >= 0 && t != only)
			continue;
		fflush(stdout);
		pid_t pid = fork();
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a killed parent */
			signal(SIGTERM, SIG_DFL);
			signal(SIGINT, SIG_DFL);
			_exit(run((enum transport)t));
		}
		int ws = 0;
		pid_t got = -1;
		while (pid > 0 && (got = waitpid(pid, &ws, 0)) < 0 && errno == EINTR && !stopped)
			;
		if (stopped) {
			if (pid > 0) {
				kill(pid, SIGKILL);
				waitpid(pid, &ws, 0);
			}
			fprintf(stderr, "tls_bench: stopped by signal %d\n", (int)stopped);
			status = 1;
			break;
		}
		if (pid < 0 || got != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
			fprintf(stderr, "tls_bench: the %s run failed\n", tnames[t]);
			status = 1;
		}
	}
	char cmd[200];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "tls_bench: could not remove %s\n", dir);
	return status;
}
