/* Internal to federation/: what its files share. */
#ifndef DG_FEDERATION_INTERNAL_H
#define DG_FEDERATION_INTERNAL_H

#include "federation/exec.h"
#include "federation/federation.h"

#include "wan/msg.h"

/* Runs a forwarded HTTP message (a WAN server's or a client agent's) through this server's HTTP
 * layer (from_wan: another DC's, counted as served): NULL when cb will be called with the answer, else why it cannot be run (a static
 * text, cb not called). */
const char *dg__fed_run(dg_fed *f, const struct dg_wan_msg *m, bool from_wan, dg_exec_done_fn cb,
			void *arg);
/* The answer in an HTTP_REPLY message into out (headers shared, body copied); DG_EIO when it is
 * not one or is malformed (logged, from_lan choosing the words), DG_ENOMEM. */
int dg__fed_response_read(const struct dg_wan_msg *reply, struct dg_fed_response *out,
			  bool from_lan);
/* lan_forward.c: this server answers its DC's client agents' requests (lan NULL: no more). */
void dg__fed_lan_attach(dg_fed *f, dg_lan *lan);

#endif
