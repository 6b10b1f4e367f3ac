/* Unit tests for wan/closer.c: sockets are closed on the closer's thread, in order; a close that
 * never returns (what nng 1.5.2 sometimes does) holds up neither the callers that hand sockets
 * over nor the stop, which gives up after its bound; and an abandoned closer finishes and frees
 * itself if the stuck close ever returns. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#include "common/common.h"
#include "wan/closer.h"

#include <nng/protocol/reqrep0/req.h>

/* ---- a close that waits at a gate until the test opens it ---- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static uint32_t closed_ids[8];
static int nclosed;

static void gated_close(nng_socket s)
{
	pthread_mutex_lock(&gate_mu);
	while (!gate_open)
		pthread_cond_wait(&gate_cond, &gate_mu);
	if (nclosed < 8)
		closed_ids[nclosed] = s.id;
	nclosed++;
	pthread_cond_broadcast(&gate_cond);
	pthread_mutex_unlock(&gate_mu);
}

static void gate_reset(bool open)
{
	pthread_mutex_lock(&gate_mu);
	gate_open = open;
	nclosed = 0;
	pthread_mutex_unlock(&gate_mu);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- tests ---- */

/* Real nng sockets (one with a TLS config, freed after its close) are closed by the stop. */
static void test_closes_real_sockets(void **state)
{
	(void)state;
	nng_socket a, b;
	nng_tls_config *tls;
	assert_int_equal(nng_req0_open(&a), 0);
	assert_int_equal(nng_req0_open(&b), 0);
	assert_int_equal(nng_tls_config_alloc(&tls, NNG_TLS_MODE_CLIENT), 0);
	struct dg__wan_closer *c = dg__wan_closer_new(NULL);
	assert_non_null(c);
	dg__wan_closer_put(c, a, NULL);
	dg__wan_closer_put(c, b, tls);
	dg__wan_closer_put(c, (nng_socket)NNG_SOCKET_INITIALIZER, NULL); /* skipped */
	assert_true(dg__wan_closer_stop(c, 5000));
	assert_int_equal(nng_socket_set_ms(a, NNG_OPT_RECVTIMEO, 1), NNG_ECLOSED);
	assert_int_equal(nng_socket_set_ms(b, NNG_OPT_RECVTIMEO, 1), NNG_ECLOSED);
}

/* Closes run in the order the sockets were handed over. */
static void test_order(void **state)
{
	(void)state;
	gate_reset(true);
	struct dg__wan_closer *c = dg__wan_closer_new(gated_close);
	assert_non_null(c);
	for (uint32_t id = 1; id <= 5; id++)
		dg__wan_closer_put(c, (nng_socket){id}, NULL);
	assert_true(dg__wan_closer_stop(c, 5000));
	assert_int_equal(nclosed, 5);
	for (int i = 0; i < 5; i++)
		assert_int_equal(closed_ids[i], (uint32_t)i + 1);
}

/* A close that never returns: handing over more sockets still returns at once, the closer says
 * how long it has been stuck, and the stop gives up after its bound. When the close returns
 * after all, the abandoned closer closes the rest and frees itself (ASan would see a leak). */
static void test_stuck_close(void **state)
{
	(void)state;
	gate_reset(false);
	struct dg__wan_closer *c = dg__wan_closer_new(gated_close);
	assert_non_null(c);
	dg__wan_closer_put(c, (nng_socket){1}, NULL);
	sleep_ms(150);
	uint64_t t0 = dg_now_ms();
	for (uint32_t id = 2; id <= 4; id++)
		dg__wan_closer_put(c, (nng_socket){id}, NULL);
	assert_true(dg_now_ms() - t0 < 50);
	assert_true(dg__wan_closer_busy_ms(c, dg_now_ms()) >= 100);
	t0 = dg_now_ms();
	assert_false(dg__wan_closer_stop(c, 300));
	uint64_t waited = dg_now_ms() - t0;
	assert_true(waited >= 300 && waited < 1000);
	/* c belongs to its thread now; let the stuck close return */
	pthread_mutex_lock(&gate_mu);
	gate_open = true;
	pthread_cond_broadcast(&gate_cond);
	uint64_t until = dg_now_ms() + 5000;
	while (nclosed < 4 && dg_now_ms() < until) {
		struct timespec ts = dg_realtime_in_ms(50);
		pthread_cond_timedwait(&gate_cond, &gate_mu, &ts);
	}
	int n = nclosed;
	pthread_mutex_unlock(&gate_mu);
	assert_int_equal(n, 4);
	sleep_ms(100); /* the thread frees the closer after its last close */
}

/* An idle closer is not busy, and stops at once. */
static void test_idle(void **state)
{
	(void)state;
	struct dg__wan_closer *c = dg__wan_closer_new(gated_close);
	assert_non_null(c);
	assert_int_equal(dg__wan_closer_busy_ms(c, dg_now_ms()), 0);
	uint64_t t0 = dg_now_ms();
	assert_true(dg__wan_closer_stop(c, 5000));
	assert_true(dg_now_ms() - t0 < 500);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_closes_real_sockets),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_stuck_close),
		cmocka_unit_test(test_idle),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
