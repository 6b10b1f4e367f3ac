/* wan/closer.c: one thread that closes the WAN pool's sockets, in the order they are handed over.
 *
 * Why a thread of its own: in nng 1.5.2, closing a socket can wait forever. An aio begun after
 * its transport's aio was stopped never completes (nni_aio_begin() then fails without running
 * the callback), and the TLS layer cancels a queued receive by aborting its TCP aio, which does
 * nothing when that aio is idle; so a pipe that closes while a receive is being posted on it
 * (a peer that goes away, a socket recycled with requests in flight) keeps an aio that no one
 * will finish (nanomsg/nng#1543, #1813). The pipe's teardown waits for that aio on nng's single
 * reaper thread, and from then on every nng_close() that needs a pipe or a dialer reaped waits
 * too. Caught in dcgate: the WAN timer thread stuck in nng_close() of a failed member's recycled
 * socket (no more probes, redials or failure detection), and shutdown stuck in nng_close() of
 * the rep socket (the agent never exits).
 *
 * So the pool never calls nng_close() on a thread anything waits for: the timer thread and
 * shutdown hand sockets here. If a close sticks, only this thread and the sockets queued behind
 * it wait; the timer notices (dg__wan_closer_busy_ms) and replaces only links it must, and shutdown
 * gives up after a bounded wait and leaves the rest to the process exit.
 *
 * Ownership: the closer belongs to its creator until dg__wan_closer_stop(); after a stop that
 * timed out it belongs to its thread, which frees it if its close ever returns. The queue holds
 * no pointer into the pool, so an abandoned closer never touches freed memory. */
#include "wan/closer.h"

#include <pthread.h>
#include <stdlib.h>

#include "common/common.h"

struct item {
	nng_socket s;
	nng_tls_config *tls;
	struct item *next;
};

struct dg__wan_closer {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	dg__wan_close_fn close_fn;
	struct item *head, *tail; /* mu */
	uint64_t busy_since;	  /* mu; 0 while idle */
	bool stop;		  /* mu: end once the queue is empty */
	bool done;		  /* mu: the thread has left its loop */
	bool abandoned;		  /* mu: the thread frees the closer when done */
	pthread_t thread;
};

static void closer_free(struct dg__wan_closer *c)
{
	while (c->head) { /* only after an abandoned stop whose stuck close returned: none */
		struct item *i = c->head;
		c->head = i->next;
		if (i->tls)
			nng_tls_config_free(i->tls);
		free(i);
	}
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cond);
	free(c);
}

static void close_default(nng_socket s)
{
	nng_close(s);
}

static void *closer_main(void *arg)
{
	struct dg__wan_closer *c = arg;
	pthread_mutex_lock(&c->mu);
	for (;;) {
		while (!c->head && !c->stop)
			pthread_cond_wait(&c->cond, &c->mu);
		if (!c->head)
			break;
		struct item *i = c->head;
		c->head = i->next;
		if (!c->head)
			c->tail = NULL;
		c->busy_since = dg_now_ms();
		pthread_mutex_unlock(&c->mu);
		if (nng_socket_id(i->s) > 0)
			c->close_fn(i->s);
		/* after the close: the socket's dialers and listener hold the config until then */
		if (i->tls)
			nng_tls_config_free(i->tls);
		free(i);
		pthread_mutex_lock(&c->mu);
		c->busy_since = 0;
	}
	c->done = true;
	pthread_cond_broadcast(&c->cond);
	bool mine = c->abandoned;
	pthread_mutex_unlock(&c->mu);
	if (mine)
		closer_free(c);
	return NULL;
}

struct dg__wan_closer *dg__wan_closer_new(dg__wan_close_fn close_fn)
{
	struct dg__wan_closer *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->close_fn = close_fn ? close_fn : close_default;
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cond, NULL);
	if (pthread_create(&c->thread, NULL, closer_main, c) != 0) {
		pthread_mutex_destroy(&c->mu);
		pthread_cond_destroy(&c->cond);
		free(c);
		return NULL;
	}
	return c;
}

void dg__wan_closer_put(struct dg__wan_closer *c, nng_socket s, nng_tls_config *tls)
{
	struct item *i = calloc(1, sizeof(*i));
	if (!i) {
		/* closing here could hang the caller, which is what the closer is for: the socket
		 * stays open (and the config with it) rather than that */
		DG_LOGE("wan", "out of memory: WAN socket %d left open", nng_socket_id(s));
		return;
	}
	i->s = s;
	i->tls = tls;
	pthread_mutex_lock(&c->mu);
	if (c->tail)
		c->tail->next = i;
	else
		c->head = i;
	c->tail = i;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->mu);
}

uint64_t dg__wan_closer_busy_ms(struct dg__wan_closer *c, uint64_t now)
{
	pthread_mutex_lock(&c->mu);
	uint64_t since = c->busy_since;
	pthread_mutex_unlock(&c->mu);
	return since && now > since ? now - since : 0;
}

bool dg__wan_closer_stop(struct dg__wan_closer *c, unsigned wait_ms)
{
	uint64_t until = dg_now_ms() + wait_ms;
	pthread_mutex_lock(&c->mu);
	c->stop = true;
	pthread_cond_broadcast(&c->cond);
	while (!c->done && dg_now_ms() < until) {
		struct timespec ts = dg_realtime_in_ms(50);
		pthread_cond_timedwait(&c->cond, &c->mu, &ts);
	}
	bool done = c->done;
	pthread_t t = c->thread; /* once abandoned, c may be freed as soon as mu is released */
	if (!done)
		c->abandoned = true; /* decided under mu: the thread sees it when it is done */
	pthread_mutex_unlock(&c->mu);
	if (done) {
		pthread_join(t, NULL);
		closer_free(c);
	} else {
		pthread_detach(t);
	}
	return done;
}
