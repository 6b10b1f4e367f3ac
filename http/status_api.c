/* /v1/status: the raft leader's address and the voters. */
#include "http/internal.h"

#include <stdio.h>

static int status_leader(struct dg_req *r)
{
	char leader[128];
	dg_lan_leader(dg_http_lan(r), leader, sizeof(leader));
	return dg_reply_json(r, 200, json_string(leader), 0);
}

static int status_peers(struct dg_req *r)
{
	char addr[160];
	const struct dg_lan_config *cfg = dg_lan_config(dg_http_lan(r));
	snprintf(addr, sizeof(addr), "%s:%d", cfg->bind_addr, cfg->server_port);
	return dg_reply_json(r, 200, json_pack("[s]", addr), 0);
}

const struct dg_route dg_routes_status[] = {
	{"/v1/status/leader", false, DG_GET, status_leader},
	{"/v1/status/peers", false, DG_GET, status_peers},
	{NULL, false, 0, NULL},
};
