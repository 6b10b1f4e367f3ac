/* wan/closer.h: closes the WAN pool's nng sockets on a thread of their own, so that no thread
 * the pool depends on ever waits inside nng_close() (wan/closer.c says why). The WAN pool's, and
 * lan/rpc.c's at shutdown (a reaper the WAN left stuck blocks any socket's close). */
#ifndef DG_WAN_CLOSER_H
#define DG_WAN_CLOSER_H

#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>

struct dg__wan_closer;

/* How a socket is closed: nng_close() but in tests, which stand in one that can be held up. */
typedef void (*dg__wan_close_fn)(nng_socket s);

/* Starts the closer's thread; close_fn NULL means nng_close(). Returns NULL when out of memory
 * or threads. The caller owns the closer until dg__wan_closer_stop(). Any thread. */
struct dg__wan_closer *dg__wan_closer_new(dg__wan_close_fn close_fn);

/* Queues s to be closed, then tls (may be NULL) to be freed, after every socket queued before
 * it; both belong to the closer from now on. Never waits for a close: any thread, with any lock
 * held. A socket whose id is not valid is skipped (tls is still freed). */
void dg__wan_closer_put(struct dg__wan_closer *c, nng_socket s, nng_tls_config *tls);

/* How long the close under way has taken at now (dg_now_ms()), 0 when the closer is idle. */
uint64_t dg__wan_closer_busy_ms(struct dg__wan_closer *c, uint64_t now);

/* Closes what is queued and ends the thread, waiting at most wait_ms. Returns true if it all
 * finished (the closer is freed); false if a close is still stuck in nng: the closer is then
 * left to its thread, which frees it if that close ever returns, and the sockets not yet
 * closed stay open until the process exits. Either way c must not be used again. */
bool dg__wan_closer_stop(struct dg__wan_closer *c, unsigned wait_ms);

#endif
