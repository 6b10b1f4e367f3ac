/* /v1/status (the raft leader's address and the voters) and /v1/operator/raft (the
 * configuration, and removing a server from it). */
#include "http/internal.h"

#include <stdio.h>
#include <string.h>

static int status_leader(struct dg_req *r)
{
	char leader[128];
	dg_lan_leader(dg_http_lan(r), leader, sizeof(leader));
	return dg_reply_json(r, 200, json_string(leader), 0);
}

static int status_peers(struct dg_req *r)
{
	json_t *conf = dg_lan_raft_configuration(dg_http_lan(r));
	json_t *peers = json_array(), *s;
	size_t i;
	json_array_foreach(json_object_get(conf, "Servers"), i, s)
	{
		if (json_is_true(json_object_get(s, "Voter")))
			json_array_append(peers, json_object_get(s, "Address"));
	}
	json_decref(conf);
	return dg_reply_json(r, 200, peers, 0);
}

static int raft_configuration(struct dg_req *r)
{
	json_t *conf = dg_lan_raft_configuration(dg_http_lan(r));
	if (!conf)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json(r, 200, conf, 0);
}

static int remove_peer_start(dg_lan *l, const char *id, const char *address, dg_lan_done_fn cb,
			     void *arg)
{
	return dg_lan_remove_peer(l, id, address, cb, arg);
}

/* DELETE /v1/operator/raft/peer?id=<node id> or ?address=<ip:port> */
static int raft_remove_peer(struct dg_req *r)
{
	const char *id = dg_req_arg(r, "id"), *address = dg_req_arg(r, "address");
	if (!r->fed_done) {
		if ((!id || !*id) && (!address || !*address))
			return dg_reply_text(r, 400, "Must specify either ?id with the server's ID or "
						     "?address with IP:port of peer to remove",
					     0);
		return dg_req_lan_op(r, remove_peer_start, id ? id : "", address ? address : "");
	}
	if (r->fed_err == 0)
		return dg_reply_empty(r);
	return dg_reply_text(r, 500, r->fed_msg ? r->fed_msg : dg_strerror(r->fed_err), 0);
}

const struct dg_route dg_routes_status[] = {
	{"/v1/status/leader", false, DG_GET, status_leader},
	{"/v1/status/peers", false, DG_GET, status_peers},
	{"/v1/operator/raft/configuration", false, DG_GET, raft_configuration},
	{"/v1/operator/raft/peer", false, DG_DELETE, raft_remove_peer},
	{NULL, false, 0, NULL},
};
