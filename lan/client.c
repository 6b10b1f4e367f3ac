/* lan/client.c: a client agent (no -server). It has no raft and no copy of the DC's catalog:
 * its catalog holds only its own node's services and checks (the agent's local state), which the
 * agent API writes and its check runners update, applied here at once. Anti-entropy keeps the
 * servers in step: after every change, and every minute in any case, the whole local state goes
 * to a server as one "register" with SyncNode, which the leader applies by changing only what
 * differs and removing what the agent no longer has (catalog/catalog.c). The local state is saved
 * in <data-dir>/local-state.json, so a restarted agent has its services again.
 *
 * Threads: everything here runs on the loop thread, except sync_done (an nng thread) which only
 * posts back to it. */
#include "lan/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CLIENT "agent"

#define SYNC_EVERY_MS 60000 /* the full comparison, even without a change */
#define SYNC_RETRY_MS 1000  /* after a failure, or while no server is known */
#define SAVE_DELAY_MS 100   /* writes to local-state.json are gathered this long */

struct dg__client {
	bool dirty;	   /* the servers have not seen the latest local state */
	bool in_flight;	   /* a sync is on its way */
	bool changed_again; /* a change came while it was */
	uint64_t next_sync_ms;
	bool save_pending;
	uint64_t save_at_ms;
	char path[PATH_MAX];
	uint64_t syncs, sync_errors;
	unsigned next_server; /* round robin over the servers gossip knows */
};

/* ---- local state on disk ---- */

static void save_state(dg_lan *l)
{
	struct dg__client *c = l->client;
	char tmp[PATH_MAX + 8];
	size_t len;
	c->save_pending = false;
	if (!*c->path)
		return;
	char *text = dg_cat_snapshot(l->cat, &len);
	if (!text)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", c->path);
	FILE *f = fopen(tmp, "w");
	bool ok = f && fwrite(text, 1, len, f) == len;
	if (f && fclose(f) != 0)
		ok = false;
	if (ok && rename(tmp, c->path) == 0)
		DG_LOGD(CLIENT, "local state saved (%zu bytes)", len);
	else
		DG_LOGW(CLIENT, "cannot save the local state to %s: %s", c->path, strerror(errno));
	free(text);
}

static int load_state(dg_lan *l, char *msg, size_t mlen)
{
	struct dg__client *c = l->client;
	FILE *f = fopen(c->path, "r");
	if (!f)
		return errno == ENOENT ? 0 : DG_EIO;
	struct dg_buf b;
	char chunk[65536];
	size_t n;
	dg_buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (dg_buf_append(&b, chunk, n) != 0)
			break;
	fclose(f);
	int rv = b.len ? dg_cat_restore(l->cat, (const char *)b.data, b.len) : 0;
	dg_buf_fini(&b);
	if (rv != 0) {
		snprintf(msg, mlen, "the saved local state %s does not load (%s); move it away to "
			 "start without it", c->path, dg_strerror(rv));
		return rv;
	}
	DG_LOGI(CLIENT, "local state loaded from %s", c->path);
	return 0;
}

/* ---- writes: applied here at once ---- */

void dg__client_apply(dg_lan *l, struct write_req *w)
{
	struct dg__client *c = l->client;
	json_t *res = NULL;
	size_t n;
	char *text = json_dumps(w->cmd, JSON_COMPACT);
	int rv = DG_ENOMEM, status = text ? 0 : DG_ENOMEM;
	if (text) {
		dg_cat_wrlock(l->cat);
		uint64_t index = dg_cat_last_index(l->cat) + 1;
		rv = dg_cat_apply(l->cat, index, text, strlen(text), &res);
		struct dg_cat_change *ch = dg_cat_take_changes(l->cat, &n);
		dg_cat_unlock(l->cat);
		free(text);
		if (n > 0) {
			if (l->hook)
				l->hook(l->hook_arg, ch, n);
			dg__agent_on_changes(l, ch, n);
			c->dirty = true;
			c->changed_again = c->in_flight;
			c->next_sync_ms = 0; /* push the change now */
			if (!c->save_pending) {
				c->save_pending = true;
				c->save_at_ms = dg_now_ms() + SAVE_DELAY_MS;
			}
		}
		dg_cat_changes_free(ch, n);
	}
	pthread_mutex_lock(&l->mu);
	l->stats.applied++;
	if (rv != 0)
		l->stats.apply_errors++;
	pthread_mutex_unlock(&l->mu);
	if (w->cb)
		w->cb(w->arg, status, res);
	else
		json_decref(res);
	json_decref(w->cmd);
	free(w);
}

/* ---- anti-entropy ---- */

struct sync_call {
	dg_lan *lan;
	int status;
};

static void sync_answer(dg_lan *l, void *arg, bool cancelled)
{
	struct sync_call *s = arg;
	struct dg__client *c = l->client;
	if (!cancelled && c) {
		c->in_flight = false;
		if (s->status == 0) {
			c->syncs++;
			c->dirty = c->changed_again;
			c->next_sync_ms = c->dirty ? 0 : dg_now_ms() + SYNC_EVERY_MS;
		} else {
			c->sync_errors++;
			c->dirty = true;
			c->next_sync_ms = dg_now_ms() + SYNC_RETRY_MS;
			DG_LOGD(CLIENT, "anti-entropy sync failed: %s", dg_strerror(s->status));
		}
		c->changed_again = false;
	}
	free(s);
}

static void sync_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct sync_call *s = arg;
	s->status = err;
	if (err == 0) {
		json_decref(dg__rpc_answer_json(buf, len, &s->status));
	}
	if (dg__lan_post(s->lan, sync_answer, s) != 0)
		free(s);
}

/* The command that makes the servers' copy of this node what the local state says. */
static json_t *sync_command(dg_lan *l)
{
	const char *addr = l->address;
	dg_cat_rdlock(l->cat);
	json_t *state = dg_cat_node_state_locked(l->cat, l->cfg.node);
	dg_cat_unlock(l->cat);
	if (!state)
		return NULL;
	json_t *cmd = json_pack(
		"{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:s}, s:b, s:O, s:O}", "Op",
		"register", "Node", l->cfg.node, "ID", l->node_id, "Address", addr,
		"TaggedAddresses", "lan", addr, "lan_ipv4", addr, "wan", addr, "wan_ipv4", addr,
		"NodeMeta", "consul-network-segment", "", "SyncNode", 1, "Services",
		json_object_get(state, "Services"), "Checks", json_object_get(state, "Checks"));
	json_decref(state);
	if (cmd)
		json_object_set_new(cmd, "Now", json_integer(dg_wall_ns()));
	return cmd;
}

static void sync_start(dg_lan *l, uint64_t now)
{
	struct dg__client *c = l->client;
	struct dg__server srv[64];
	size_t n = dg__members_servers(l, srv, 64), alive = 0;
	for (size_t i = 0; i < n; i++)
		if (srv[i].status == DG_GOSSIP_ALIVE_ST)
			srv[alive++] = srv[i];
	if (alive == 0) {
		c->next_sync_ms = now + SYNC_RETRY_MS;
		return;
	}
	const struct dg__server *to = &srv[c->next_server++ % alive];
	json_t *cmd = sync_command(l);
	struct sync_call *s = calloc(1, sizeof(*s));
	int rv = DG_ENOMEM;
	if (cmd && s) {
		s->lan = l;
		rv = dg__rpc_call_json(l, to->rpc_addr, DG_RPC_WRITE_RELAY, cmd,
				       DG_RPC_WRITE_TIMEOUT_MS + 1000, sync_done, s);
	}
	json_decref(cmd);
	if (rv != 0) {
		free(s);
		c->next_sync_ms = now + SYNC_RETRY_MS;
		return;
	}
	c->in_flight = true;
	c->changed_again = false;
}

/* Called by members.c when this agent has (re)joined: the servers may have lost its node. */
void dg__client_resync(dg_lan *l)
{
	if (l->client) {
		l->client->dirty = true;
		l->client->next_sync_ms = 0;
	}
}

void dg__client_tick(dg_lan *l, uint64_t now)
{
	struct dg__client *c = l->client;
	if (!c)
		return;
	if (c->save_pending && now >= c->save_at_ms)
		save_state(l);
	if (!c->in_flight && now >= c->next_sync_ms)
		sync_start(l, now);
}

void dg__client_stats(dg_lan *l, uint64_t *syncs, uint64_t *errors)
{
	*syncs = l->client ? l->client->syncs : 0;
	*errors = l->client ? l->client->sync_errors : 0;
}

int dg__client_start(dg_lan *l, char *msg, size_t len)
{
	struct dg__client *c = calloc(1, sizeof(*c));
	if (!c)
		return DG_ENOMEM;
	l->client = c;
	c->dirty = true;
	if (l->cfg.data_dir && !l->cfg.dev) {
		if (dg__make_dir(l->cfg.data_dir) != 0) {
			snprintf(msg, len, "cannot create data dir %s: %s", l->cfg.data_dir,
				 strerror(errno));
			return DG_EIO;
		}
		snprintf(c->path, sizeof(c->path), "%s/local-state.json", l->cfg.data_dir);
	}
	int rv = *c->path ? load_state(l, msg, len) : 0;
	if (rv != 0)
		return rv;
	/* this node itself, which the agent's service and check registrations attach to */
	const char *addr = l->address;
	dg__lan_write_local(
		l, json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:s}}", "Op", "register",
			     "Node", l->cfg.node, "ID", l->node_id, "Address", addr,
			     "TaggedAddresses", "lan", addr, "lan_ipv4", addr, "wan", addr,
			     "wan_ipv4", addr, "NodeMeta", "consul-network-segment", ""));
	return 0;
}

void dg__client_stop(dg_lan *l)
{
	struct dg__client *c = l->client;
	if (c && c->save_pending)
		save_state(l);
}

void dg__client_free(dg_lan *l)
{
	free(l->client);
	l->client = NULL;
}
