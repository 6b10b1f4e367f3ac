/* The thread that runs a libmicrohttpd daemon (why it is ours and not MHD's: http/internal.h).
 * The loop: wait on MHD's epoll descriptor and on an eventfd of its own, at most
 * MHD_get_timeout(); then MHD_run(), which in epoll mode does not block.
 *
 * Resuming goes through dg__mhd_resume(), which also writes the eventfd: MHD_resume_connection()
 * wakes MHD's own channel, but MHD_run() looks for resumed connections before it reads that
 * channel and clears it, so a resume landing in between would be left for the next event (up
 * to MHD's timeout). The eventfd is read before MHD_run(), so a resume after that read leaves it
 * readable and the next wait returns at once. Under load many resumes land per turn of the loop:
 * only the first after each turn's start writes the eventfd (`kicked`), which the loop clears
 * after reading the eventfd and before MHD_run(); a resume that finds it set happened before
 * that clear, so before the MHD_run() that follows it. */
#include "http/internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <string.h>
#include <unistd.h>

/* Longest single wait: MHD's timeouts are kept even if MHD_get_timeout() were to miss one. */
#define MHD_LOOP_MAX_WAIT_MS 1000

struct dg__mhd {
	struct MHD_Daemon *d;
	pthread_t thread;
	int kick; /* eventfd: a resume to look at, or stop */
	atomic_bool kicked; /* the eventfd was written since the loop last cleared this */
	atomic_bool stop;
	char name[16];
};

/* Every running loop, so that a connection's resume finds the loop of its daemon. */
#define MAX_LOOPS 16
static pthread_rwlock_t loops_lock = PTHREAD_RWLOCK_INITIALIZER;
static struct dg__mhd *loops[MAX_LOOPS];

static bool loop_register(struct dg__mhd *m, bool add)
{
	bool done = false;
	pthread_rwlock_wrlock(&loops_lock);
	for (size_t i = 0; i < MAX_LOOPS && !done; i++) {
		if (add ? loops[i] == NULL : loops[i] == m) {
			loops[i] = add ? m : NULL;
			done = true;
		}
	}
	pthread_rwlock_unlock(&loops_lock);
	return done;
}

static void wake(struct dg__mhd *m)
{
	uint64_t one = 1;
	ssize_t n;
	do
		n = write(m->kick, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
}

static void kick(struct dg__mhd *m)
{
	if (!atomic_exchange(&m->kicked, true))
		wake(m); /* otherwise a wake-up is already on its way */
}

static void *loop_main(void *arg)
{
	struct dg__mhd *m = arg;
	const union MHD_DaemonInfo *ei = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_EPOLL_FD);
	struct pollfd p[2] = {{.fd = ei ? ei->epoll_fd : -1, .events = POLLIN},
			      {.fd = m->kick, .events = POLLIN}};
	while (!atomic_load(&m->stop)) {
		MHD_UNSIGNED_LONG_LONG to = 0;
		int ms = MHD_LOOP_MAX_WAIT_MS;
		if (MHD_get_timeout(m->d, &to) == MHD_YES && to < MHD_LOOP_MAX_WAIT_MS)
			ms = (int)to;
		if (poll(p, 2, ms) < 0 && errno != EINTR) {
			DG_LOGE("http", "%s: poll: %s", m->name, strerror(errno));
			usleep(10000); /* never spin */
		}
		if (atomic_load(&m->stop))
			break;
		if (p[1].revents & POLLIN) {
			uint64_t v;
			if (read(m->kick, &v, sizeof(v)) < 0 && errno != EAGAIN)
				DG_LOGE("http", "%s: eventfd: %s", m->name, strerror(errno));
		}
		atomic_store(&m->kicked, false);
		MHD_run(m->d);
	}
	return NULL;
}

struct dg__mhd *dg__mhd_start(unsigned flags, MHD_AccessHandlerCallback handler, void *arg,
			      const struct MHD_OptionItem *opts, const char *name)
{
	struct dg__mhd *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	snprintf(m->name, sizeof(m->name), "%s", name);
	if ((m->kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		free(m);
		return NULL;
	}
	m->d = MHD_start_daemon(flags | MHD_USE_EPOLL, 0, NULL, NULL, handler, arg,
				MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
	if (!m->d || !MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_EPOLL_FD) ||
	    !loop_register(m, true)) {
		if (m->d)
			MHD_stop_daemon(m->d);
		close(m->kick);
		free(m);
		return NULL;
	}
	if (pthread_create(&m->thread, NULL, loop_main, m) != 0) {
		loop_register(m, false);
		MHD_stop_daemon(m->d);
		close(m->kick);
		free(m);
		return NULL;
	}
	pthread_setname_np(m->thread, m->name); /* for top -H and perf; best effort */
	return m;
}

struct MHD_Daemon *dg__mhd_daemon(struct dg__mhd *m)
{
	return m->d;
}

void dg__mhd_stop(struct dg__mhd *m)
{
	if (!m)
		return;
	atomic_store(&m->stop, true);
	wake(m);
	pthread_join(m->thread, NULL);
	loop_register(m, false);
	MHD_stop_daemon(m->d);
	close(m->kick);
	free(m);
}

void dg__mhd_resume(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_DAEMON);
	MHD_resume_connection(conn);
	pthread_rwlock_rdlock(&loops_lock);
	for (size_t i = 0; i < MAX_LOOPS; i++) {
		if (loops[i] && ci && loops[i]->d == ci->daemon) {
			kick(loops[i]);
			break;
		}
	}
	pthread_rwlock_unlock(&loops_lock);
}
