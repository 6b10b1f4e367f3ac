/* bench/waiters.c: how long one KV write takes to wake N parked blocking queries, next to its floor.
 *
 * Opens N keep-alive HTTP/1.1 connections to one loopback port (spread over the source addresses
 * 127.0.0.1..127.0.0.<S>, so no single source address runs short of ephemeral ports), then:
 *
 *   mode "wake" (the agent): one PUT of the key on a separate control connection, one untimed
 *   warm-up round, then for each round
 *     plain: every connection sends GET /v1/kv/<key> at once; time until all N responses are in.
 *            This is the floor: what it costs the server to answer N ready requests on N ready
 *            sockets, and this tool to read them.
 *     wake:  every connection sends GET /v1/kv/<key>?index=<idx>&wait=<w> and is left to park;
 *            after a settle delay (no answer may arrive during it), one PUT of the key on the
 *            control connection; time from that PUT until all N answers, each carrying an
 *            X-Consul-Index above <idx>, are in.
 *   mode "hold" (the nginx anchor): one untimed warm-up round of GET <path>, then timed plain
 *   rounds of the same, with every connection left open.
 *
 * With -P <pid>, the VmRSS of that process is sampled (before connecting, and with all N
 * connections open: parked in "wake" mode, idle in "hold" mode).
 *
 * One thread, one level-triggered epoll set; requests are never pipelined, so each connection has
 * at most one response in flight. Every wait is bounded by the -t deadline (and an alarm behind it).
 * Output is "key value..." lines on stdout for bench/run.sh; on any failure the reason goes to stderr
 * and the exit status is 1.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Limits, together. */
#define MAX_CONNS 60000          /* -n ceiling */
#define MAX_ROUNDS 20            /* -r ceiling */
#define MAX_SOURCES 8            /* 127.0.0.1 .. 127.0.0.8 */
#define MAX_RESPONSE (1u << 20)  /* a larger response is an error */
#define CONNECTS_IN_FLIGHT 256   /* keeps the listener's accept queue from overflowing */
#define READ_CHUNK 16384

enum cstate { C_CONNECTING, C_IDLE, C_WAITING, C_DONE };

typedef struct conn {
	int fd;
	enum cstate state;
	char *buf;      /* owned; holds the response being read, NUL-terminated */
	size_t len, cap;
	int status;
	uint64_t index; /* X-Consul-Index of the last complete response, 0 if absent */
	int closing;    /* the response said Connection: close */
	double t_done;  /* ms, monotonic, when the response became complete */
} conn;

static conn *conns; /* n waiters, then one control connection at [n] */
static int n_waiters;
static int epfd = -1;
static double deadline_ms;
static int n_done_waiters; /* waiters in C_DONE this round */

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	fputs("waiters: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static long rss_kib(int pid)
{
	char path[64], line[256];
	long kib = -1;
	int w = snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (w < 0 || (size_t)w >= sizeof(path))
		return -1;
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	fclose(f);
	return kib;
}

/* Looks for one complete HTTP/1.x response at the start of c->buf. Returns 1 when complete (and
 * fills status, index, closing), 0 when more bytes are needed, -1 when malformed. At eof, a
 * response without a length is complete; any other incomplete response is malformed. */
static int parse_response(conn *c, int eof)
{
	char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
	if (!hend)
		return eof ? -1 : 0;
	if (c->len < 12 || strncmp(c->buf, "HTTP/1.", 7) != 0)
		return -1;
	c->status = atoi(c->buf + 9);
	c->index = 0;
	c->closing = 0;
	long long clen = -1;
	int chunked = 0;
	size_t body = (size_t)(hend - c->buf) + 4;
	for (char *p = strstr(c->buf, "\r\n") + 2; p < hend;) {
		char *eol = strstr(p, "\r\n");
		char *colon = memchr(p, ':', (size_t)(eol - p));
		if (colon) {
			size_t nlen = (size_t)(colon - p);
			char *v = colon + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0)
				clen = strtoll(v, NULL, 10);
			else if (nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0)
				chunked = strncasecmp(v, "chunked", 7) == 0;
			else if (nlen == 14 && strncasecmp(p, "x-consul-index", 14) == 0)
				c->index = strtoull(v, NULL, 10);
			else if (nlen == 10 && strncasecmp(p, "connection", 10) == 0)
				c->closing = strncasecmp(v, "close", 5) == 0;
		}
		p = eol + 2;
	}
	if (chunked) {
		size_t p = body;
		for (;;) {
			char *eol = memmem(c->buf + p, c->len - p, "\r\n", 2);
			if (!eol)
				return eof ? -1 : 0;
			unsigned long long sz = strtoull(c->buf + p, NULL, 16);
			p = (size_t)(eol - c->buf) + 2;
			if (sz == 0) /* no trailers expected: the last chunk is followed by one CRLF */
				return c->len >= p + 2 ? 1 : (eof ? -1 : 0);
			if (sz > MAX_RESPONSE)
				return -1;
			p += (size_t)sz + 2;
			if (c->len < p)
				return eof ? -1 : 0;
		}
	}
	if (clen >= 0) {
		if (c->len > body + (size_t)clen)
			return -1; /* bytes beyond the response: nothing was pipelined */
		return c->len == body + (size_t)clen ? 1 : (eof ? -1 : 0);
	}
	if (c->status == 204 || c->status == 304 || c->status / 100 == 1)
		return 1;
	c->closing = 1;
	return eof ? 1 : 0;
}

static void conn_close(conn *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
}

/* Reads what is there; moves a waiting connection to C_DONE when its response is complete. */
static void on_readable(int i)
{
	conn *c = &conns[i];
	size_t before = c->len;
	int eof = 0;
	for (;;) {
		if (c->cap - c->len < READ_CHUNK + 1) {
			size_t ncap = c->cap ? c->cap * 2 : READ_CHUNK * 2;
			if (ncap > MAX_RESPONSE + READ_CHUNK * 2)
				die("connection %d: response larger than %u bytes", i, MAX_RESPONSE);
			char *nb = realloc(c->buf, ncap);
			if (!nb)
				die("out of memory");
			c->buf = nb;
			c->cap = ncap;
		}
		ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
		if (r > 0) {
			c->len += (size_t)r;
			c->buf[c->len] = '\0';
			continue;
		}
		if (r == 0) {
			eof = 1;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		die("connection %d: recv: %s", i, strerror(errno));
	}
	if (c->state != C_WAITING) {
		if (c->len > before)
			die("connection %d: %zu unexpected bytes while not waiting for a response", i,
			    c->len - before);
		if (eof)
			conn_close(c); /* only fatal if the connection is used again */
		return;
	}
	int rv = parse_response(c, eof);
	if (rv < 0)
		die("connection %d: %s", i, eof ? "closed by the server before a complete response"
					    : "malformed response");
	if (rv == 0)
		return;
	c->state = C_DONE;
	c->t_done = now_ms();
	if (i < n_waiters)
		n_done_waiters++;
	if (eof || c->closing)
		conn_close(c); /* only fatal if the connection is used again */
}

/* Runs the event loop until `until` (ms) passes, or, when stop is set, until stop() is true.
 * Returns 0 if stop() became true, 1 if `until` passed; dies at the global deadline. */
static int pump(double until, int (*stop)(void))
{
	struct epoll_event ev[1024];
	for (;;) {
		if (stop && stop())
			return 0;
		double t = now_ms();
		if (t >= deadline_ms)
			die("deadline passed with %d of %d waiter responses in", n_done_waiters, n_waiters);
		if (t >= until)
			return 1;
		double lim = until < deadline_ms ? until : deadline_ms;
		int ms = (int)(lim - t) + 1;
		int k = epoll_wait(epfd, ev, 1024, ms > 100 ? 100 : ms);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait: %s", strerror(errno));
		}
		for (int j = 0; j < k; j++)
			on_readable((int)ev[j].data.u32);
	}
}

static int all_waiters_done(void) { return n_done_waiters == n_waiters; }
static int ctl_done(void) { return conns[n_waiters].state == C_DONE; }
static int everything_done(void) { return all_waiters_done() && ctl_done(); }

static void send_request(int i, const char *req, size_t len)
{
	conn *c = &conns[i];
	if (c->fd < 0)
		die("connection %d: closed by the server after its last response", i);
	c->len = 0;
	c->state = C_WAITING;
	/* A request is a few hundred bytes on a socket with nothing unsent: it goes in one call. */
	ssize_t w = send(c->fd, req, len, MSG_NOSIGNAL);
	if (w != (ssize_t)len)
		die("connection %d: send: %s", i, w < 0 ? strerror(errno) : "short write");
}

static void connect_all(const struct sockaddr_in *dst, int nsrc)
{
	int total = n_waiters + 1, next = 0, pending = 0, up = 0;
	struct epoll_event ev[1024];
	while (up < total) {
		while (next < total && pending < CONNECTS_IN_FLIGHT) {
			conn *c = &conns[next];
			c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (c->fd < 0)
				die("socket (connection %d): %s", next, strerror(errno));
			int one = 1;
			setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			/* Spread sources: each source address has its own ephemeral port range. The
			 * control connection (the last) always comes from 127.0.0.1. */
			if (nsrc > 1 && next < n_waiters) {
				struct sockaddr_in src = {.sin_family = AF_INET};
				src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(next % nsrc));
				setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
				if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) != 0)
					die("bind 127.0.0.%d: %s", 1 + next % nsrc, strerror(errno));
			}
			if (connect(c->fd, (const struct sockaddr *)dst, sizeof(*dst)) != 0 &&
			    errno != EINPROGRESS)
				die("connect (connection %d): %s", next, strerror(errno));
			c->state = C_CONNECTING;
			struct epoll_event e = {.events = EPOLLOUT, .data.u32 = (uint32_t)next};
			if (epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &e) != 0)
				die("epoll_ctl: %s", strerror(errno));
			next++;
			pending++;
		}
		if (now_ms() >= deadline_ms)
			die("deadline passed with %d of %d connections up", up, total);
		int k = epoll_wait(epfd, ev, 1024, 100);
		if (k < 0 && errno != EINTR)
			die("epoll_wait: %s", strerror(errno));
		for (int j = 0; j < k; j++) {
			int i = (int)ev[j].data.u32;
			conn *c = &conns[i];
			if (c->state != C_CONNECTING)
				die("connection %d of %d: closed or reset by the server before any request "
				    "(a connection limit on the server?)", i, total);
			int err = 0;
			socklen_t el = sizeof(err);
			getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
			if (err)
				die("connect (connection %d of %d): %s", i, total, strerror(err));
			struct epoll_event e = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
			if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &e) != 0)
				die("epoll_ctl: %s", strerror(errno));
			c->state = C_IDLE;
			pending--;
			up++;
		}
	}
}

static size_t format_req(char *buf, size_t cap, const char *method, const char *target,
			 const char *host, const char *body)
{
	size_t blen = body ? strlen(body) : 0;
	int w = body ? snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %zu\r\n\r\n%s",
				method, target, host, blen, body)
		     : snprintf(buf, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n\r\n", method, target, host);
	if (w < 0 || (size_t)w >= cap)
		die("request too long");
	return (size_t)w;
}

/* Every waiter sends req at once; returns ms from the first send until the last response. */
static double plain_round(const char *req, size_t len, uint64_t *index_out)
{
	n_done_waiters = 0;
	double t0 = now_ms();
	for (int i = 0; i < n_waiters; i++)
		send_request(i, req, len);
	pump(deadline_ms, all_waiters_done);
	double last = t0;
	for (int i = 0; i < n_waiters; i++) {
		conn *c = &conns[i];
		if (c->status != 200)
			die("connection %d: plain GET answered %d", i, c->status);
		if (c->t_done > last)
			last = c->t_done;
		c->state = C_IDLE;
	}
	if (index_out)
		*index_out = conns[0].index;
	return last - t0;
}

/* The control connection sends req and waits for its answer, which must be 200. */
static void ctl_request(const char *req, size_t len)
{
	send_request(n_waiters, req, len);
	pump(deadline_ms, ctl_done);
	if (conns[n_waiters].status != 200)
		die("control request answered %d: %.200s", conns[n_waiters].status, conns[n_waiters].buf);
	conns[n_waiters].state = C_IDLE;
}

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: waiters -p port [-a 127.0.0.1] [-n 10000] [-S sources] [-r rounds] [-t timeout_s]\n"
		"               [-P pid] [-m wake|hold] [-k kv-key] [-w wait] [-s settle_ms] [-u path]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1", *key = "bench/wake", *wait = "60s", *mode = "wake", *path = "/";
	int port = 0, nsrc = 8, rounds = 3, timeout_s = 120, pid = 0, settle_ms = 2000, opt;
	n_waiters = 10000;
	while ((opt = getopt(argc, argv, "a:p:n:S:r:t:P:m:k:w:s:u:")) != -1) {
		switch (opt) {
		case 'a': addr = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 'n': n_waiters = atoi(optarg); break;
		case 'S': nsrc = atoi(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 't': timeout_s = atoi(optarg); break;
		case 'P': pid = atoi(optarg); break;
		case 'm': mode = optarg; break;
		case 'k': key = optarg; break;
		case 'w': wait = optarg; break;
		case 's': settle_ms = atoi(optarg); break;
		case 'u': path = optarg; break;
		default: usage();
		}
	}
	int hold = strcmp(mode, "hold") == 0;
	if (port <= 0 || port > 65535 || n_waiters < 1 || n_waiters > MAX_CONNS || nsrc < 1 ||
	    nsrc > MAX_SOURCES || rounds < 1 || rounds > MAX_ROUNDS || timeout_s < 1 || settle_ms < 0 ||
	    (!hold && strcmp(mode, "wake") != 0))
		usage();

	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, addr, &dst.sin_addr) != 1 || (ntohl(dst.sin_addr.s_addr) >> 24) != 127)
		die("%s is not a loopback (127.0.0.0/8) address", addr);

	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)n_waiters + 64) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
		if (rl.rlim_cur < (rlim_t)n_waiters + 64)
			die("open file limit %llu is below %d connections (raise ulimit -n)",
			    (unsigned long long)rl.rlim_cur, n_waiters + 64);
	}
	signal(SIGPIPE, SIG_IGN);
	alarm((unsigned)timeout_s + 10); /* backstop: the deadline checks below should fire first */
	deadline_ms = now_ms() + timeout_s * 1e3;

	conns = calloc((size_t)n_waiters + 1, sizeof(*conns));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!conns || epfd < 0)
		die("setup: %s", strerror(errno));
	char host[64];
	int hw = snprintf(host, sizeof(host), "%s:%d", addr, port);
	if (hw < 0 || (size_t)hw >= sizeof(host))
		die("host too long");

	if (pid > 0)
		printf("rss_before_kib %ld\n", rss_kib(pid));
	double t_conn = now_ms();
	connect_all(&dst, nsrc);
	printf("connections %d\nconnect_ms %.1f\n", n_waiters, now_ms() - t_conn);
	fflush(stdout);

	char req[1024], wreq[1024], target[512];
	size_t len;
	double plain[MAX_ROUNDS], wake[MAX_ROUNDS];

	if (hold) {
		len = format_req(req, sizeof(req), "GET", path, host, NULL);
		plain_round(req, len, NULL); /* warm-up: every connection accepted and served once */
		for (int r = 0; r < rounds; r++) {
			plain[r] = plain_round(req, len, NULL);
			printf("round %d plain_ms %.2f\n", r + 1, plain[r]);
		}
		if (pid > 0)
			printf("rss_open_kib %ld\n", rss_kib(pid));
		printf("plain_ms_median %.2f\n", median(plain, rounds));
		return 0;
	}

	int tw = snprintf(target, sizeof(target), "/v1/kv/%s", key);
	if (tw < 0 || (size_t)tw >= sizeof(target))
		die("key too long");
	len = format_req(req, sizeof(req), "PUT", target, host, "bench-wake-0");
	ctl_request(req, len); /* the key exists, so every GET below is a 200 with its index */
	len = format_req(req, sizeof(req), "GET", target, host, NULL);
	uint64_t idx;
	plain_round(req, len, &idx); /* warm-up: every connection accepted and served once */

	for (int r = 0; r < rounds; r++) {
		plain[r] = plain_round(req, len, &idx);
		if (idx == 0)
			die("GET %s answered without X-Consul-Index", target);

		char wt[640];
		int w = snprintf(wt, sizeof(wt), "%s?index=%llu&wait=%s", target, (unsigned long long)idx, wait);
		if (w < 0 || (size_t)w >= sizeof(wt))
			die("target too long");
		size_t wlen = format_req(wreq, sizeof(wreq), "GET", wt, host, NULL);
		n_done_waiters = 0;
		for (int i = 0; i < n_waiters; i++)
			send_request(i, wreq, wlen);
		pump(now_ms() + settle_ms, NULL);
		if (n_done_waiters > 0)
			die("%d of %d blocking GETs (index=%llu) were answered before the write: not parked",
			    n_done_waiters, n_waiters, (unsigned long long)idx);
		if (r == 0 && pid > 0)
			printf("rss_parked_kib %ld\n", rss_kib(pid));

		char val[64], preq[1024];
		w = snprintf(val, sizeof(val), "bench-wake-%d", r + 1);
		if (w < 0 || (size_t)w >= sizeof(val))
			die("value too long");
		size_t plen = format_req(preq, sizeof(preq), "PUT", target, host, val);
		double t0 = now_ms();
		send_request(n_waiters, preq, plen);
		pump(deadline_ms, everything_done);
		if (conns[n_waiters].status != 200)
			die("PUT %s answered %d", target, conns[n_waiters].status);
		double first = 1e300, last = 0;
		for (int i = 0; i < n_waiters; i++) {
			conn *c = &conns[i];
			if (c->status != 200)
				die("waiter %d answered %d", i, c->status);
			if (c->index <= idx)
				die("waiter %d answered with X-Consul-Index %llu, not above %llu (woken by timeout?)",
				    i, (unsigned long long)c->index, (unsigned long long)idx);
			if (c->t_done - t0 < first)
				first = c->t_done - t0;
			if (c->t_done - t0 > last)
				last = c->t_done - t0;
			c->state = C_IDLE;
		}
		conns[n_waiters].state = C_IDLE;
		wake[r] = last;
		printf("round %d plain_ms %.2f wake_ms %.2f first_ms %.2f put_ack_ms %.2f index %llu\n", r + 1,
		       plain[r], wake[r], first, conns[n_waiters].t_done - t0, (unsigned long long)idx);
		fflush(stdout);
	}
	printf("plain_ms_median %.2f\nwake_ms_median %.2f\n", median(plain, rounds), median(wake, rounds));
	return 0;
}
