/* delayer: the packet-holding half of the WAN emulator (tests/wan). It binds one NFQUEUE, holds
 * every packet the kernel queues to it for a delay plus or minus a uniform jitter, then accepts it;
 * optionally it drops a share of packets (loss) and holds everything during periodic stalls.
 *
 * Why user space: the kernel of the test machines has no netem, so packets are queued with
 * `iptables -j NFQUEUE` on the receiving namespace's INPUT hook and released by this program.
 *
 * Ordering: one FIFO per queue. A packet's release time is max(arrival + delay + jitter, the
 * release time of the packet queued just before it), so packets leave in the order they arrived and
 * jitter never reorders a TCP stream (reordering makes TCP retransmit and collapse its window,
 * which measures TCP's reordering handling instead of latency). The price: a packet that follows a
 * "slow" one closely inherits its delay, so under dense traffic the delay drifts towards
 * delay + jitter; sparse packets (probes, RTT pings) see the full uniform spread. wanemu.sh gives
 * each (receiver, sender) pair of datacenters its own queue, so each link is one FIFO.
 *
 * Stalls: with --stall-every N --stall-for S, nothing is released during [epoch + kN, epoch + kN +
 * S) for k >= 1 (wall-clock seconds; several delayers given the same --stall-epoch stall together);
 * packets due inside a window leave at its end, in order.
 *
 * Memory: at most --cap packets are held (the kernel keeps the packets; this program keeps 24 bytes
 * each); beyond that a packet is dropped and counted. The kernel queue is sized to match.
 *
 * Counters go to stdout as one line on SIGUSR1 and on exit (SIGTERM/SIGINT); on exit every held
 * packet is accepted first. Single-threaded: one ppoll loop owns everything; signal handlers only
 * set flags, and signals are unblocked only inside ppoll.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <linux/netfilter.h> /* NF_ACCEPT, NF_DROP */
#include <libnetfilter_queue/libnetfilter_queue.h>

#define NS_PER_MS    1000000LL
#define NS_PER_S     1000000000LL
#define HIST_MS	     10000 /* hold-time histogram: 1 ms buckets up to 10 s, the last one is "more" */
#define DEFAULT_CAP  20000
#define MAX_CAP	     1000000
#define RCVBUF_BYTES (4u << 20)

/* One held packet: the kernel keeps its bytes until we give the verdict for its id. */
struct held {
	uint32_t id;
	int64_t arrive_ns;  /* CLOCK_MONOTONIC */
	int64_t release_ns; /* CLOCK_MONOTONIC, never earlier than the previous entry's */
};

struct opts {
	unsigned queue;
	double delay_ms, jitter_ms, loss_pct;
	double stall_every_s, stall_for_s, stall_epoch_s; /* epoch: wall clock, seconds */
	size_t cap;
	uint64_t seed;
	const char *ready_file;
	int verbose;
};

struct counters {
	uint64_t received, accepted, dropped_loss, dropped_cap, stall_held, verdict_errors, enobufs;
	size_t max_held;
	uint64_t hist[HIST_MS + 1];
	int64_t hold_max_ns, hold_sum_ns;
};

/* All state belongs to the main loop. */
static struct {
	struct opts o;
	struct counters c;
	struct held *ring; /* o.cap entries */
	size_t head, len;
	uint64_t rng;
	struct nfq_q_handle *qh;
	int64_t start_mono_ns;
} g;

static volatile sig_atomic_t got_stop, got_dump;

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_dump = 1;
	else
		got_stop = 1;
}

static int64_t clock_ns(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* xorshift64*: fast, seedable, good enough to pick delays and losses. Returns [0, 1). */
static double rand_unit(void)
{
	g.rng ^= g.rng >> 12;
	g.rng ^= g.rng << 25;
	g.rng ^= g.rng >> 27;
	return (double)((g.rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

/* If wall-clock time real_ns lies inside a stall window, returns 1 and stores the window's end. */
static int in_stall(int64_t real_ns, int64_t *end_real_ns)
{
	if (g.o.stall_every_s <= 0 || g.o.stall_for_s <= 0)
		return 0;
	int64_t every = (int64_t)(g.o.stall_every_s * NS_PER_S);
	int64_t len = (int64_t)(g.o.stall_for_s * NS_PER_S);
	int64_t since = real_ns - (int64_t)(g.o.stall_epoch_s * NS_PER_S);
	if (since < every)
		return 0; /* the first stall comes one period after the epoch */
	int64_t k = since / every;
	int64_t into = since - k * every;
	if (into >= len)
		return 0;
	if (end_real_ns)
		*end_real_ns = real_ns - into + len;
	return 1;
}

static void verdict(uint32_t id, unsigned v)
{
	if (nfq_set_verdict(g.qh, id, v, 0, NULL) < 0)
		g.c.verdict_errors++;
}

static void release_head(int64_t now_mono, int64_t real_off)
{
	struct held *e = &g.ring[g.head];
	int64_t hold = now_mono - e->arrive_ns;
	if (hold < 0)
		hold = 0;
	int64_t ms = hold / NS_PER_MS;
	g.c.hist[ms > HIST_MS ? HIST_MS : ms]++;
	g.c.hold_sum_ns += hold;
	if (hold > g.c.hold_max_ns)
		g.c.hold_max_ns = hold;
	if (in_stall(e->release_ns + real_off, NULL))
		g.c.stall_held++;
	if (g.o.verbose)
		printf("release id=%" PRIu32 " held_ms=%.1f\n", e->id, (double)hold / NS_PER_MS);
	verdict(e->id, NF_ACCEPT);
	g.c.accepted++;
	g.head = (g.head + 1) % g.o.cap;
	g.len--;
}

/* Releases every packet that is due, unless a stall is on. Returns the monotonic time at which
 * to look again, or -1 when nothing is held. */
static int64_t release_due(void)
{
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	int64_t real_off = clock_ns(CLOCK_REALTIME) - now;
	int64_t stall_end;
	if (in_stall(now + real_off, &stall_end))
		return g.len ? stall_end - real_off : -1;
	while (g.len && g.ring[g.head].release_ns <= now)
		release_head(now, real_off);
	return g.len ? g.ring[g.head].release_ns : -1;
}

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
		     void *data)
{
	(void)qh;
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (!ph)
		return 0;
	uint32_t id = ntohl(ph->packet_id);
	int64_t now = clock_ns(CLOCK_MONOTONIC);
	g.c.received++;

	if (g.o.verbose) {
		unsigned char *p;
		int n = nfq_get_payload(nfa, &p);
		if (n >= 20 && (p[0] >> 4) == 4)
			printf("queue id=%" PRIu32 " proto=%u %u.%u.%u.%u -> %u.%u.%u.%u len=%d\n",
			       id, p[9], p[12], p[13], p[14], p[15], p[16], p[17], p[18], p[19], n);
	}
	if (g.o.loss_pct > 0 && rand_unit() * 100.0 < g.o.loss_pct) {
		g.c.dropped_loss++;
		verdict(id, NF_DROP);
		return 0;
	}
	if (g.len == g.o.cap) {
		g.c.dropped_cap++;
		verdict(id, NF_DROP);
		return 0;
	}
	double d_ms = g.o.delay_ms + (2.0 * rand_unit() - 1.0) * g.o.jitter_ms;
	int64_t rel = now + (d_ms > 0 ? (int64_t)(d_ms * NS_PER_MS) : 0);
	if (g.len) {
		int64_t prev = g.ring[(g.head + g.len - 1) % g.o.cap].release_ns;
		if (rel < prev)
			rel = prev; /* FIFO: see the top of the file */
	}
	struct held *e = &g.ring[(g.head + g.len) % g.o.cap];
	e->id = id;
	e->arrive_ns = now;
	e->release_ns = rel;
	g.len++;
	if (g.len > g.c.max_held)
		g.c.max_held = g.len;
	return 0;
}

/* Hold time (ms) below which a share q of released packets fall; from the 1 ms histogram. */
static double hold_quantile(double q)
{
	uint64_t n = g.c.accepted, seen = 0;
	if (n == 0)
		return 0;
	uint64_t want = (uint64_t)(q * (double)n);
	if (want >= n)
		want = n - 1;
	for (int i = 0; i <= HIST_MS; i++) {
		seen += g.c.hist[i];
		if (seen > want)
			return i;
	}
	return HIST_MS;
}

static void print_counters(const char *why)
{
	int64_t real = clock_ns(CLOCK_REALTIME);
	uint64_t windows = 0;
	if (g.o.stall_every_s > 0 && g.o.stall_for_s > 0) {
		double since = (double)real / NS_PER_S - g.o.stall_epoch_s;
		if (since >= g.o.stall_every_s)
			windows = (uint64_t)(since / g.o.stall_every_s);
	}
	printf("delayer %s queue=%u uptime_s=%.1f received=%" PRIu64 " accepted=%" PRIu64
	       " dropped_loss=%" PRIu64 " dropped_cap=%" PRIu64 " held=%zu max_held=%zu"
	       " stall_windows=%" PRIu64 " stall_held=%" PRIu64 " hold_ms_p50=%.0f hold_ms_p90=%.0f"
	       " hold_ms_p99=%.0f hold_ms_max=%.1f hold_ms_mean=%.1f verdict_errors=%" PRIu64
	       " enobufs=%" PRIu64 "\n",
	       why, g.o.queue, (double)(clock_ns(CLOCK_MONOTONIC) - g.start_mono_ns) / NS_PER_S,
	       g.c.received, g.c.accepted, g.c.dropped_loss, g.c.dropped_cap, g.len, g.c.max_held,
	       windows, g.c.stall_held, hold_quantile(0.5), hold_quantile(0.9), hold_quantile(0.99),
	       (double)g.c.hold_max_ns / NS_PER_MS,
	       g.c.accepted ? (double)g.c.hold_sum_ns / NS_PER_MS / (double)g.c.accepted : 0.0,
	       g.c.verdict_errors, g.c.enobufs);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: delayer [options]   (run inside the namespace whose INPUT queues to it)\n"
	    "  -q, --queue N            NFQUEUE number to bind (default 0)\n"
	    "  -d, --delay MS           one-way delay added to every packet (default 0)\n"
	    "  -j, --jitter MS          uniform jitter: delay is drawn from [MS-J, MS+J] (default "
	    "0)\n"
	    "  -l, --loss PCT           drop this percentage of packets (default 0)\n"
	    "  -e, --stall-every S      every S seconds, hold everything ...\n"
	    "  -s, --stall-for S        ... for S seconds (a total stall; default: no stalls)\n"
	    "  -E, --stall-epoch T      wall-clock time (s since 1970) the stall periods count "
	    "from\n"
	    "                           (default: now; give all delayers the same T to stall "
	    "together)\n"
	    "  -c, --cap N              most packets held at once; more are dropped (default %d)\n"
	    "  -r, --seed N             random seed (default: from time and pid)\n"
	    "  -R, --ready-file PATH    write our pid there once the queue is bound\n"
	    "  -v, --verbose            one line per packet\n"
	    "Signals: SIGUSR1 prints counters; SIGTERM/SIGINT accept held packets, print, exit.\n",
	    DEFAULT_CAP);
}

static int parse_double(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || *end || !(v >= lo && v <= hi))
		return -1;
	*out = v;
	return 0;
}

static int parse_opts(int argc, char **argv)
{
	static const struct option longopts[] = {{"queue", required_argument, 0, 'q'},
						 {"delay", required_argument, 0, 'd'},
						 {"jitter", required_argument, 0, 'j'},
						 {"loss", required_argument, 0, 'l'},
						 {"stall-every", required_argument, 0, 'e'},
						 {"stall-for", required_argument, 0, 's'},
						 {"stall-epoch", required_argument, 0, 'E'},
						 {"cap", required_argument, 0, 'c'},
						 {"seed", required_argument, 0, 'r'},
						 {"ready-file", required_argument, 0, 'R'},
						 {"verbose", no_argument, 0, 'v'},
						 {"help", no_argument, 0, 'h'},
						 {0, 0, 0, 0}};
	double v;
	int ch;
	g.o.cap = DEFAULT_CAP;
	g.o.stall_epoch_s = (double)clock_ns(CLOCK_REALTIME) / NS_PER_S;
	g.o.seed = (uint64_t)clock_ns(CLOCK_REALTIME) ^ ((uint64_t)getpid() << 32);
	while ((ch = getopt_long(argc, argv, "q:d:j:l:e:s:E:c:r:R:vh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'q':
			if (parse_double(optarg, 0, 65535, &v) || v != (unsigned)v)
				goto bad;
			g.o.queue = (unsigned)v;
			break;
		case 'd':
			if (parse_double(optarg, 0, 600000, &g.o.delay_ms))
				goto bad;
			break;
		case 'j':
			if (parse_double(optarg, 0, 600000, &g.o.jitter_ms))
				goto bad;
			break;
		case 'l':
			if (parse_double(optarg, 0, 100, &g.o.loss_pct))
				goto bad;
			break;
		case 'e':
			if (parse_double(optarg, 0, 1e6, &g.o.stall_every_s))
				goto bad;
			break;
		case 's':
			if (parse_double(optarg, 0, 1e6, &g.o.stall_for_s))
				goto bad;
			break;
		case 'E':
			if (parse_double(optarg, 0, 1e11, &g.o.stall_epoch_s))
				goto bad;
			break;
		case 'c':
			if (parse_double(optarg, 1, MAX_CAP, &v) || v != (size_t)v)
				goto bad;
			g.o.cap = (size_t)v;
			break;
		case 'r':
			if (parse_double(optarg, 0, 1e18, &v))
				goto bad;
			g.o.seed = (uint64_t)v;
			break;
		case 'R':
			g.o.ready_file = optarg;
			break;
		case 'v':
			g.o.verbose = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "delayer: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (g.o.stall_every_s > 0 && g.o.stall_for_s >= g.o.stall_every_s) {
		fprintf(stderr, "delayer: --stall-for must be shorter than --stall-every\n");
		return -1;
	}
	g.rng = g.o.seed ? g.o.seed : 0x9E3779B97F4A7C15ULL;
	return 0;
bad:
	fprintf(stderr, "delayer: bad value '%s' for -%c\n", optarg, ch);
	return -1;
}

static int write_ready_file(const char *path)
{
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if (n < 0 || (size_t)n >= sizeof tmp)
		return -1;
	FILE *f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%ld\n", (long)getpid());
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct nfq_handle *h = NULL;
	static char buf[65536] __attribute__((aligned));
	int rc = 1;

	if (parse_opts(argc, argv) != 0)
		return 2;
	g.ring = calloc(g.o.cap, sizeof *g.ring);
	if (!g.ring) {
		fprintf(stderr, "delayer: out of memory for %zu entries\n", g.o.cap);
		return 1;
	}

	/* Signals stay blocked except inside ppoll, so a flag set by a handler is always seen. */
	sigset_t block, orig;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGUSR1);
	sigprocmask(SIG_BLOCK, &block, &orig);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	h = nfq_open();
	if (!h) {
		fprintf(stderr,
			"delayer: nfq_open: %s (needs CAP_NET_ADMIN and a kernel with "
			"NETFILTER_NETLINK_QUEUE)\n",
			strerror(errno));
		goto out;
	}
	g.qh = nfq_create_queue(h, (uint16_t)g.o.queue, on_packet, NULL);
	if (!g.qh) {
		fprintf(stderr,
			"delayer: cannot bind queue %u: %s (another program bound to it?)\n",
			g.o.queue, strerror(errno));
		goto out_close;
	}
	/* 40 bytes: IP and the start of TCP/UDP, for --verbose; the verdict needs only the id. */
	if (nfq_set_mode(g.qh, NFQNL_COPY_PACKET, 40) < 0) {
		fprintf(stderr, "delayer: nfq_set_mode: %s\n", strerror(errno));
		goto out_queue;
	}
	if (nfq_set_queue_maxlen(g.qh, (uint32_t)(g.o.cap + 64)) < 0)
		fprintf(stderr, "delayer: warning: nfq_set_queue_maxlen: %s\n", strerror(errno));
	/* Take GSO packets whole: fewer messages, and nothing to checksum since we never edit. */
	nfq_set_queue_flags(g.qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO);
	nfnl_rcvbufsiz(nfq_nfnlh(h), RCVBUF_BYTES);
	int fd = nfq_fd(h);

	g.start_mono_ns = clock_ns(CLOCK_MONOTONIC);
	if (g.o.ready_file && write_ready_file(g.o.ready_file) != 0) {
		fprintf(stderr, "delayer: cannot write %s: %s\n", g.o.ready_file, strerror(errno));
		goto out_queue;
	}
	printf(
	    "delayer start queue=%u delay_ms=%.1f jitter_ms=%.1f loss_pct=%.2f stall_every_s=%.1f "
	    "stall_for_s=%.1f stall_epoch=%.3f cap=%zu\n",
	    g.o.queue, g.o.delay_ms, g.o.jitter_ms, g.o.loss_pct, g.o.stall_every_s,
	    g.o.stall_for_s, g.o.stall_epoch_s, g.o.cap);
	fflush(stdout);

	for (;;) {
		int64_t wake = release_due();
		if (got_stop)
			break;
		if (got_dump) {
			got_dump = 0;
			print_counters("counters");
		}
		struct timespec ts, *tsp = NULL;
		if (wake >= 0) {
			int64_t d = wake - clock_ns(CLOCK_MONOTONIC);
			if (d < 0)
				d = 0;
			ts.tv_sec = (time_t)(d / NS_PER_S);
			ts.tv_nsec = (long)(d % NS_PER_S);
			tsp = &ts;
		}
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		int n = ppoll(&pfd, 1, tsp, &orig);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "delayer: ppoll: %s\n", strerror(errno));
			goto out_release;
		}
		if (n == 0 || !(pfd.revents & POLLIN))
			continue;
		for (;;) { /* drain everything the kernel has queued */
			ssize_t r = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
			if (r < 0) {
				if (errno == EAGAIN || errno == EWOULDBLOCK)
					break;
				if (errno == EINTR)
					continue;
				if (errno == ENOBUFS) { /* the kernel dropped messages for us:
							   count, go on */
					g.c.enobufs++;
					continue;
				}
				fprintf(stderr, "delayer: recv: %s\n", strerror(errno));
				goto out_release;
			}
			nfq_handle_packet(h, buf, (int)r);
		}
	}
	rc = 0;
out_release:
	while (g.len) /* let held packets go rather than drop them with the queue */
		release_head(clock_ns(CLOCK_MONOTONIC),
			     clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC));
	print_counters("exit");
out_queue:
	nfq_destroy_queue(g.qh);
out_close:
	nfq_close(h);
out:
	free(g.ring);
	return rc;
}
