/* Internal to federation/: what its files share. */
#ifndef DG_FEDERATION_INTERNAL_H
#define DG_FEDERATION_INTERNAL_H

#include "federation/exec.h"
#include "federation/federation.h"

/* The executor that runs requests forwarded to this server, or NULL. */
dg_exec *dg__fed_exec(dg_fed *f);
/* lan_forward.c: this server answers its DC's client agents' requests (lan NULL: no more). */
void dg__fed_lan_attach(dg_fed *f, dg_lan *lan);

#endif
