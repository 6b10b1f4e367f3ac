/* lan/members.c: LAN gossip wired into the agent. The pure state machine (gossip.c) gets its
 * packets from a udp socket on 8301 and from push-pulls on 8301/tcp (rpc.c), its clock from a
 * 50 ms timer; joins (-join, -retry-join, PUT /v1/agent/join) go through it. What it learns is
 * published for GET /v1/agent/members, handed to raft as the list of this DC's servers, and, on
 * the leader, written into the catalog: each member's node with its serfHealth check (passing
 * while alive, critical once failed), removed when it leaves or is reaped.
 *
 * Threads: everything here runs on the loop thread except what says otherwise. The published
 * member list (l->members_json) is under l->mu. */
#include "lan/internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEM "lan"

#define GOSSIP_TICK_MS	  50
#define JOIN_TIMEOUT_MS	  5000
#define RETRY_JOIN_MS	  2000
#define RECONCILE_MS	  5000 /* the leader compares every member with the catalog */
#define MAX_TAGS	  16
#define UDP_BUF		  65536
/* Host-name lookups under way at once: they run on libuv's thread pool, which raft's disk work
 * shares, and a lookup with no DNS answer holds a thread for seconds. */
#define MAX_LOOKUPS	  2

struct pending_join {
	char addr[96]; /* "ip:port" */
	dg_lan_done_fn cb;
	void *arg;
	struct pending_join *next;
};

/* A join to a host name, being looked up (start_join). */
struct name_join {
	uv_getaddrinfo_t req;
	dg_lan *lan;
	char name[256];
	uint16_t port;
	dg_lan_done_fn cb;
	void *arg;
	struct name_join *next;
};

struct dg__members {
	dg_gossip *g;
	uv_udp_t udp;
	uv_timer_t timer;
	bool udp_open, timer_open;
	char udp_buf[UDP_BUF];

	struct rpc_in *reply_to; /* the push-pull being answered, during dg_gossip_recv */
	struct dg_buf reply;
	bool have_reply;

	struct pending_join *joins;
	struct name_join *lookups; /* host names being looked up (at most MAX_LOOKUPS) */
	bool stopped;
	char **retry;
	size_t nretry;
	bool retry_done;
	uint64_t next_retry_ms;

	bool dirty;	      /* publish the member list */
	bool reconcile_all;   /* the leader compares every member with the catalog */
	uint64_t next_reconcile_ms;
	struct dg_map reaped;	/* node names reaped by gossip, for the leader to deregister */
	struct dg_map in_flight; /* node names with a reconcile write in flight */

	struct dg_gossip_tag tags[MAX_TAGS];
	size_t ntags;
	char expect_s[16], port_s[16], wan_port_s[16], tls_port_s[16], build[96];
	int raft_state; /* 0 none, 1 bootstrapped (only the configuration), 2 in use */

	struct dg_map reaped_servers; /* raft addresses of servers reaped, for raft to remove */
	bool leaving, leave_posted;
};

static const char *tag(const struct dg_gossip_member *m, const char *key)
{
	for (size_t i = 0; i < m->ntags; i++)
		if (strcmp(m->tags[i].key, key) == 0)
			return m->tags[i].value;
	return NULL;
}

static bool in_our_dc(dg_lan *l, const struct dg_gossip_member *m)
{
	const char *dc = tag(m, "dc");
	return dc && strcmp(dc, l->cfg.dc) == 0;
}

/* A DNS name as Consul's -join takes one: letters, digits, '-' and '.', not starting with
 * '-' or '.'. */
static bool is_host_name(const char *s)
{
	if (!isalnum((unsigned char)*s))
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '-' && *s != '.')
			return false;
	return true;
}

/* "host" or "host:port" into host and port (default: ours). false when malformed; *name is
 * set when host is a host name to look up rather than an IPv4 address. */
static bool split_addr(dg_lan *l, const char *in, char *host, size_t hlen, uint16_t *port,
		       bool *name)
{
	const char *colon = strrchr(in, ':');
	size_t n = colon ? (size_t)(colon - in) : strlen(in);
	long p = l->cfg.serf_lan_port;
	if (colon) {
		char *end;
		p = strtol(colon + 1, &end, 10);
		if (*end || p <= 0 || p > 65535)
			return false;
	}
	if (n == 0 || n >= hlen)
		return false;
	memcpy(host, in, n);
	host[n] = 0;
	struct in_addr a;
	*name = inet_pton(AF_INET, host, &a) != 1;
	if (*name && !is_host_name(host))
		return false;
	*port = (uint16_t)p;
	return true;
}

/* ---- sending ---- */

struct stream_call {
	dg_lan *lan;
	char addr[DG_GOSSIP_ADDR_MAX + 1];
	uint16_t port;
	int err;
	uint8_t *buf;
	size_t len;
};

static void finish_joins(dg_lan *l, const char *key, int err, const char *msg)
{
	struct dg__members *m = l->members;
	struct pending_join **pp = &m->joins;
	while (*pp) {
		struct pending_join *j = *pp;
		if (key && strcmp(j->addr, key) != 0) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		if (j->cb)
			j->cb(j->arg, err, msg);
		free(j);
	}
}

static void stream_reply_task(dg_lan *l, void *arg, bool cancelled)
{
	struct stream_call *c = arg;
	char key[96];
	snprintf(key, sizeof(key), "%s:%u", c->addr, c->port);
	if (!cancelled && l->members) {
		int rv = c->err;
		if (rv == 0 && c->len == 0)
			rv = DG_EIO; /* the peer could not read ours (a wrong key, say) */
		if (rv == 0)
			rv = dg_gossip_recv(l->members->g, c->addr, c->port, c->buf, c->len, true,
					    dg_now_ms());
		if (rv != 0)
			DG_LOGD(MEM, "push-pull with %s: %s", key, dg_strerror(rv));
		finish_joins(l, key, rv, rv == 0 ? NULL : dg_strerror(rv));
		l->members->dirty = true;
	}
	free(c->buf);
	free(c);
}

static void stream_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct stream_call *c = arg;
	c->err = err;
	if (err == 0 && len > 0) {
		c->buf = malloc(len);
		if (c->buf) {
			memcpy(c->buf, buf, len);
			c->len = len;
		} else {
			c->err = DG_ENOMEM;
		}
	}
	if (dg__lan_post(c->lan, stream_reply_task, c) != 0) {
		free(c->buf);
		free(c);
	}
}

static void send_packet(void *arg, const struct dg_gossip_out *pkt)
{
	dg_lan *l = arg;
	struct dg__members *m = l->members;
	if (pkt->stream && pkt->reply) {
		if (m->reply_to) {
			m->reply.len = 0;
			m->have_reply = dg_buf_append(&m->reply, pkt->data, pkt->len) == 0;
		}
		return;
	}
	if (pkt->stream) {
		struct stream_call *c = calloc(1, sizeof(*c));
		char addr[96];
		if (!c)
			return;
		c->lan = l;
		snprintf(c->addr, sizeof(c->addr), "%s", pkt->addr);
		c->port = pkt->port;
		snprintf(addr, sizeof(addr), "%s:%u", pkt->addr, pkt->port);
		int rv = dg__rpc_call(l, addr, pkt->data, pkt->len, JOIN_TIMEOUT_MS, stream_done, c);
		if (rv != 0) {
			c->err = rv;
			stream_reply_task(l, c, false);
		}
		return;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(pkt->port)};
	if (inet_pton(AF_INET, pkt->addr, &sa.sin_addr) != 1)
		return;
	uv_buf_t b = uv_buf_init((char *)pkt->data, (unsigned)pkt->len);
	/* udp is lossy anyway: a datagram the kernel cannot take now is dropped, not queued */
	uv_udp_try_send(&m->udp, &b, 1, (const struct sockaddr *)&sa);
}

/* ---- receiving ---- */

static void udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	dg_lan *l = h->data;
	(void)suggested;
	*buf = uv_buf_init(l->members->udp_buf, sizeof(l->members->udp_buf));
}

static void udp_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
		     unsigned flags)
{
	dg_lan *l = h->data;
	char ip[INET_ADDRSTRLEN];
	(void)flags;
	if (n <= 0 || !from || from->sa_family != AF_INET || !l->members)
		return;
	const struct sockaddr_in *sin = (const struct sockaddr_in *)from;
	inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
	dg_gossip_recv(l->members->g, ip, ntohs(sin->sin_port), buf->base, (size_t)n, false,
		       dg_now_ms());
}

void dg__members_stream(dg_lan *l, struct rpc_in *in, const uint8_t *buf, size_t len)
{
	struct dg__members *m = l->members;
	char ip[64];
	if (!m) {
		dg__rpc_reply(in, NULL, 0);
		return;
	}
	dg__rpc_peer_addr(in, ip, sizeof(ip));
	m->reply_to = in;
	m->have_reply = false;
	int rv = dg_gossip_recv(m->g, *ip ? ip : "0.0.0.0", (uint16_t)l->cfg.serf_lan_port, buf,
				len, true, dg_now_ms());
	m->reply_to = NULL;
	if (rv != 0)
		DG_LOGD(MEM, "push-pull from %s dropped: %s", ip, dg_strerror(rv));
	dg__rpc_reply(in, m->have_reply ? m->reply.data : NULL, m->have_reply ? m->reply.len : 0);
	m->dirty = true;
}

/* ---- changes ---- */

static void on_change(void *arg, const struct dg_gossip_member *gm, int old)
{
	dg_lan *l = arg;
	struct dg__members *m = l->members;
	static const char *names[] = {"none", "alive", "leaving", "left", "failed"};
	int st = gm->status;
	m->dirty = true;
	m->reconcile_all = true;
	if (st == DG_GOSSIP_NONE) {
		const char *role = tag(gm, "role"), *port = tag(gm, "port");
		dg_map_put(&m->reaped, gm->name, (void *)1, NULL);
		if (role && strcmp(role, "consul") == 0 && port && in_our_dc(l, gm)) {
			char a[96];
			snprintf(a, sizeof(a), "%s:%s", gm->addr, port);
			dg_map_put(&m->reaped_servers, a, (void *)1, NULL);
		}
		DG_LOGI(MEM, "member %s reaped", gm->name);
		return;
	}
	dg_map_del(&m->reaped, gm->name);
	if (old != st)
		DG_LOGI(MEM, "member %s (%s:%u) %s", gm->name, gm->addr, gm->port,
			st >= 0 && st <= 4 ? names[st] : "?");
}

/* ---- the published list ---- */

static json_t *member_json(const struct dg_gossip_member *gm)
{
	json_t *tags = json_object();
	for (size_t i = 0; i < gm->ntags; i++)
		json_object_set_new(tags, gm->tags[i].key, json_string(gm->tags[i].value));
	return json_pack("{s:s, s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "Name", gm->name,
			 "Addr", gm->addr, "Port", gm->port, "Tags", tags, "Status", gm->status,
			 "ProtocolMin", 1, "ProtocolMax", 5, "ProtocolCur", 2, "DelegateMin", 2,
			 "DelegateMax", 5, "DelegateCur", 4);
}

static void publish(dg_lan *l)
{
	struct dg__members *m = l->members;
	json_t *list = json_array();
	size_t n = dg_gossip_count(m->g);
	for (size_t i = 0; i < n; i++) {
		const struct dg_gossip_member *gm = dg_gossip_member_at(m->g, i);
		if (gm->status != DG_GOSSIP_NONE)
			json_array_append_new(list, member_json(gm));
	}
	struct dg__server srv[64];
	size_t ns = dg__members_servers(l, srv, 64), k = 0;
	char **rpc = calloc(ns + 1, sizeof(*rpc));
	for (size_t i = 0; rpc && i < ns; i++)
		if (srv[i].status == DG_GOSSIP_ALIVE_ST)
			rpc[k++] = dg_strdup(srv[i].rpc_addr);
	pthread_mutex_lock(&l->mu);
	json_t *old = l->members_json;
	char **old_rpc = l->server_rpc;
	l->members_json = list;
	l->server_rpc = rpc;
	pthread_mutex_unlock(&l->mu);
	json_decref(old);
	dg_strv_free(old_rpc);
	m->dirty = false;
}

json_t *dg_lan_members(dg_lan *l)
{
	pthread_mutex_lock(&l->mu);
	json_t *list = l->members_json ? json_deep_copy(l->members_json) : json_array();
	pthread_mutex_unlock(&l->mu);
	return list;
}

/* ---- servers, for raft ---- */

size_t dg__members_servers(dg_lan *l, struct dg__server *out, size_t max)
{
	struct dg__members *m = l->members;
	size_t k = 0;
	if (!m)
		return 0;
	size_t n = dg_gossip_count(m->g);
	for (size_t i = 0; i < n && k < max; i++) {
		const struct dg_gossip_member *gm = dg_gossip_member_at(m->g, i);
		const char *role = tag(gm, "role"), *id = tag(gm, "id"), *port = tag(gm, "port");
		if (!role || strcmp(role, "consul") != 0 || !in_our_dc(l, gm) || !id || !port ||
		    gm->status == DG_GOSSIP_NONE)
			continue;
		struct dg__server *s = &out[k++];
		memset(s, 0, sizeof(*s));
		snprintf(s->name, sizeof(s->name), "%s", gm->name);
		snprintf(s->id, sizeof(s->id), "%s", id);
		s->raft_id = dg__raft_id_of(id);
		snprintf(s->raft_addr, sizeof(s->raft_addr), "%s:%s", gm->addr, port);
		/* the server's TLS listener when it has one and this agent has a certificate:
		 * every request for the servers then goes over mutual TLS (lan/rpc.c) */
		const char *tls_port = tag(gm, "rpc_tls_port");
		if (tls_port && l->rpc.dial_tls)
			snprintf(s->rpc_addr, sizeof(s->rpc_addr), "tls+tcp://%s:%s", gm->addr,
				 tls_port);
		else
			snprintf(s->rpc_addr, sizeof(s->rpc_addr), "%s:%u", gm->addr, gm->port);
		s->status = gm->status;
		const char *e = tag(gm, "expect");
		s->expect = e ? atoi(e) : tag(gm, "bootstrap") ? 1 : 0;
		const char *rs = tag(gm, "raft_state");
		s->raft_in_use = rs && strcmp(rs, "in-use") == 0;
	}
	return k;
}

bool dg__members_rpc_of(dg_lan *l, const char *raft_addr, char *out, size_t len)
{
	struct dg__server s[64];
	size_t n = dg__members_servers(l, s, 64);
	for (size_t i = 0; i < n; i++) {
		if (strcmp(s[i].raft_addr, raft_addr) == 0) {
			snprintf(out, len, "%s", s[i].rpc_addr);
			return true;
		}
	}
	return false;
}

const char *dg__members_name_of(dg_lan *l, const char *raft_addr)
{
	struct dg__members *m = l->members;
	if (!m)
		return NULL;
	size_t n = dg_gossip_count(m->g);
	for (size_t i = 0; i < n; i++) {
		const struct dg_gossip_member *gm = dg_gossip_member_at(m->g, i);
		const char *port = tag(gm, "port");
		char a[96];
		if (!port)
			continue;
		snprintf(a, sizeof(a), "%s:%s", gm->addr, port);
		if (strcmp(a, raft_addr) == 0)
			return gm->name;
	}
	return NULL;
}

/* A server is forgotten by gossip once reaped; its raft address is kept here until raft has
 * removed it. */
bool dg__members_server_reaped(dg_lan *l, const char *raft_addr)
{
	return l->members && dg_map_find(&l->members->reaped_servers, raft_addr);
}

void dg__members_server_forget(dg_lan *l, const char *raft_addr)
{
	if (l->members)
		dg_map_del(&l->members->reaped_servers, raft_addr);
}

/* ---- tags ---- */

static void build_tags(dg_lan *l)
{
	struct dg__members *m = l->members;
	size_t n = 0;
#define TAG(k, v) (m->tags[n++] = (struct dg_gossip_tag){(k), (v)})
	snprintf(m->build, sizeof(m->build), "%s:dcgate", l->cfg.version);
	TAG("role", l->cfg.server ? "consul" : "node");
	TAG("dc", l->cfg.dc);
	TAG("segment", "");
	TAG("id", l->node_id);
	TAG("vsn", "2");
	TAG("vsn_min", "2");
	TAG("vsn_max", "3");
	TAG("build", m->build);
	if (l->cfg.server) {
		snprintf(m->port_s, sizeof(m->port_s), "%d", l->cfg.server_port);
		TAG("port", m->port_s);
		TAG("raft_vsn", "3");
		if (l->rpc.listen_tls) { /* set once at start */
			snprintf(m->tls_port_s, sizeof(m->tls_port_s), "%d", l->cfg.rpc_tls_port);
			TAG("rpc_tls_port", m->tls_port_s);
		}
		/* where the flood join of federation/ dials this server; none without a WAN pool */
		if (l->cfg.serf_wan_port > 0) {
			snprintf(m->wan_port_s, sizeof(m->wan_port_s), "%d", l->cfg.serf_wan_port);
			TAG("wan_join_port", m->wan_port_s);
		}
		if (l->cfg.bootstrap_expect > 1) {
			snprintf(m->expect_s, sizeof(m->expect_s), "%d", l->cfg.bootstrap_expect);
			TAG("expect", m->expect_s);
		} else if (l->cfg.bootstrap_expect == 1) {
			TAG("bootstrap", "1");
		}
		if (m->raft_state)
			TAG("raft_state", m->raft_state == 2 ? "in-use" : "bootstrapped");
	}
#undef TAG
	m->ntags = n;
}

void dg__members_set_raft_state(dg_lan *l, bool in_use)
{
	struct dg__members *m = l->members;
	int st = in_use ? 2 : 1;
	if (!m || m->raft_state >= st)
		return;
	m->raft_state = st;
	build_tags(l);
	dg_gossip_set_tags(m->g, m->tags, m->ntags);
	m->dirty = true;
}

/* ---- the leader's reconcile: catalog in line with gossip ---- */

struct reconcile_write {
	dg_lan *lan;
	char name[DG_GOSSIP_NAME_MAX + 1];
	bool reaped;
};

static void reconcile_done(void *arg, int status, json_t *result)
{
	struct reconcile_write *w = arg;
	dg_lan *l = w->lan;
	json_decref(result);
	if (l->members) {
		dg_map_del(&l->members->in_flight, w->name);
		if (status == 0 && w->reaped)
			dg_map_del(&l->members->reaped, w->name);
		if (status != 0)
			l->members->reconcile_all = true; /* try again at the next pass */
	}
	free(w);
}

static void propose(dg_lan *l, const char *name, json_t *cmd, bool reaped)
{
	struct reconcile_write *w = calloc(1, sizeof(*w));
	if (!w || !cmd) {
		free(w);
		json_decref(cmd);
		return;
	}
	w->lan = l;
	w->reaped = reaped;
	snprintf(w->name, sizeof(w->name), "%s", name);
	dg_map_put(&l->members->in_flight, name, (void *)1, NULL);
	dg__lan_write_loop(l, cmd, reconcile_done, w);
}

static json_t *register_cmd(dg_lan *l, const struct dg_gossip_member *gm, bool alive)
{
	const char *id = tag(gm, "id");
	json_t *cmd = json_pack(
		"{s:s, s:s, s:s, s:{s:s, s:s, s:s, s:s}, s:{s:s}}", "Op", "register", "Node",
		gm->name, "Address", gm->addr, "TaggedAddresses", "lan", gm->addr, "lan_ipv4",
		gm->addr, "wan", gm->addr, "wan_ipv4", gm->addr, "NodeMeta",
		"consul-network-segment", "");
	if (!cmd)
		return NULL;
	if (id)
		json_object_set_new(cmd, "ID", json_string(id));
	const char *role = tag(gm, "role"), *port = tag(gm, "port");
	if (role && strcmp(role, "consul") == 0 && port) {
		char version[64];
		const char *build = tag(gm, "build");
		snprintf(version, sizeof(version), "%s", build ? build : "");
		char *colon = strchr(version, ':');
		if (colon)
			*colon = 0;
		json_object_set_new(
			cmd, "Service",
			json_pack("{s:s, s:s, s:[], s:i, s:{s:s, s:s, s:s, s:s, s:s, s:s, s:s}}", "ID",
				  "consul", "Service", "consul", "Tags", "Port", atoi(port), "Meta",
				  "version", version, "raft_version", "3", "serf_protocol_current",
				  "2", "serf_protocol_min", "1", "serf_protocol_max", "5",
				  "non_voter", "false", "read_replica", "false"));
	}
	json_object_set_new(
		cmd, "Checks",
		json_pack("[{s:s, s:s, s:s, s:s}]", "CheckID", "serfHealth", "Name",
			  "Serf Health Status", "Status", alive ? "passing" : "critical", "Output",
			  alive ? "Agent alive and reachable" : "Agent not live or unreachable"));
	return cmd;
}

/* Whether the catalog already says what gossip says of gm. Under the catalog's read lock. */
static bool up_to_date(dg_lan *l, const struct dg_gossip_member *gm, bool alive)
{
	const struct dg_cat_node *n = dg_cat_node_find_locked(l->cat, gm->name);
	if (!n || !n->address || strcmp(n->address, gm->addr) != 0)
		return false;
	const struct dg_cat_check *ch = dg_cat_check_find_locked(l->cat, gm->name, "serfHealth");
	if (!ch || strcmp(ch->status, alive ? "passing" : "critical") != 0)
		return false;
	const char *role = tag(gm, "role");
	if (role && strcmp(role, "consul") == 0 &&
	    !dg_cat_service_find_locked(l->cat, gm->name, "consul"))
		return false;
	return true;
}

static void reconcile_member(dg_lan *l, const struct dg_gossip_member *gm, bool self)
{
	struct dg__members *m = l->members;
	if (!in_our_dc(l, gm) || dg_map_find(&m->in_flight, gm->name))
		return;
	int st = self ? DG_GOSSIP_ALIVE_ST : gm->status;
	if (st == DG_GOSSIP_LEFT) {
		dg_cat_rdlock(l->cat);
		bool present = dg_cat_node_find_locked(l->cat, gm->name) != NULL;
		dg_cat_unlock(l->cat);
		if (present)
			propose(l, gm->name,
				json_pack("{s:s, s:s}", "Op", "deregister", "Node", gm->name), false);
		return;
	}
	bool alive = st == DG_GOSSIP_ALIVE_ST || st == DG_GOSSIP_LEAVING;
	dg_cat_rdlock(l->cat);
	bool ok = up_to_date(l, gm, alive);
	dg_cat_unlock(l->cat);
	if (!ok)
		propose(l, gm->name, register_cmd(l, gm, alive), false);
}

void dg__members_reconcile(dg_lan *l, bool all)
{
	struct dg__members *m = l->members;
	if (!m)
		return;
	if (all)
		m->reconcile_all = true;
	if (!dg_lan_is_leader(l) || !m->reconcile_all)
		return;
	m->reconcile_all = false;
	const struct dg_gossip_member *self = dg_gossip_self(m->g);
	size_t n = dg_gossip_count(m->g);
	for (size_t i = 0; i < n; i++) {
		const struct dg_gossip_member *gm = dg_gossip_member_at(m->g, i);
		reconcile_member(l, gm, gm == self);
	}
	for (size_t i = 0; i < m->reaped.n; i++) {
		const char *name = m->reaped.v[i].key;
		if (dg_map_find(&m->in_flight, name) || strcmp(name, l->cfg.node) == 0)
			continue;
		dg_cat_rdlock(l->cat);
		bool present = dg_cat_node_find_locked(l->cat, name) != NULL;
		dg_cat_unlock(l->cat);
		if (present)
			propose(l, name, json_pack("{s:s, s:s}", "Op", "deregister", "Node", name),
				true);
	}
}

/* ---- joins ---- */

static int start_join(dg_lan *l, const char *addr, dg_lan_done_fn cb, void *arg);

static void name_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
	struct name_join *nj = req->data;
	dg_lan *l = nj->lan;
	struct dg__members *m = l->members;
	for (struct name_join **pp = &m->lookups; *pp; pp = &(*pp)->next)
		if (*pp == nj) {
			*pp = nj->next;
			break;
		}
	char ip[INET_ADDRSTRLEN] = "";
	for (struct addrinfo *ai = status == 0 ? res : NULL; ai && !*ip; ai = ai->ai_next)
		if (ai->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, ip,
				  sizeof(ip));
	if (res)
		uv_freeaddrinfo(res);
	char msg[320];
	int rv = 0;
	if (m->stopped || status == UV_ECANCELED) {
		rv = DG_ESHUTDOWN;
		snprintf(msg, sizeof(msg), "shutting down");
	} else if (!*ip) {
		rv = DG_ENOTFOUND;
		snprintf(msg, sizeof(msg), "cannot resolve %s: %s", nj->name,
			 status ? uv_strerror(status) : "no IPv4 address");
	} else {
		char addr[96];
		snprintf(addr, sizeof(addr), "%s:%u", ip, nj->port);
		DG_LOGD(MEM, "join: %s is %s", nj->name, ip);
		if ((rv = start_join(l, addr, nj->cb, nj->arg)) != 0)
			snprintf(msg, sizeof(msg), "%s", dg_strerror(rv));
	}
	if (rv != 0 && nj->cb)
		nj->cb(nj->arg, rv, msg);
	free(nj);
}

/* A host name is looked up on libuv's thread pool (never on the loop: a DNS wait would stall
 * raft), then joined at its first IPv4 address, as Consul's -join and -retry-join do. */
static int start_lookup(dg_lan *l, const char *host, uint16_t port, dg_lan_done_fn cb, void *arg)
{
	struct dg__members *m = l->members;
	size_t under_way = 0;
	for (struct name_join *q = m->lookups; q; q = q->next, under_way++)
		if (strcmp(q->name, host) == 0 && q->cb == cb && q->arg == arg)
			return 0; /* a retry-join round while the last lookup is under way */
	if (under_way >= MAX_LOOKUPS)
		return DG_EBUSY;
	struct name_join *nj = calloc(1, sizeof(*nj));
	if (!nj)
		return DG_ENOMEM;
	nj->lan = l;
	snprintf(nj->name, sizeof(nj->name), "%s", host);
	nj->port = port;
	nj->cb = cb;
	nj->arg = arg;
	nj->req.data = nj;
	struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
	int rv = uv_getaddrinfo(&l->loop, &nj->req, name_resolved, nj->name, NULL, &hints);
	if (rv != 0) {
		free(nj);
		return DG_EIO;
	}
	nj->next = m->lookups;
	m->lookups = nj;
	return 0;
}

static int start_join(dg_lan *l, const char *addr, dg_lan_done_fn cb, void *arg)
{
	struct dg__members *m = l->members;
	char host[256];
	uint16_t port;
	bool name;
	if (!split_addr(l, addr, host, sizeof(host), &port, &name))
		return DG_EINVAL;
	if (name)
		return start_lookup(l, host, port, cb, arg);
	struct pending_join *j = calloc(1, sizeof(*j));
	if (!j)
		return DG_ENOMEM;
	snprintf(j->addr, sizeof(j->addr), "%s:%u", host, port);
	j->cb = cb;
	j->arg = arg;
	j->next = m->joins;
	m->joins = j;
	int rv = dg_gossip_join(m->g, host, port, dg_now_ms());
	if (rv != 0)
		finish_joins(l, j->addr, rv, dg_strerror(rv));
	return 0;
}

static void retry_joined(void *arg, int err, const char *msg)
{
	dg_lan *l = arg;
	(void)msg;
	if (err == 0 && l->members && !l->members->retry_done) {
		l->members->retry_done = true;
		DG_LOGI(MEM, "joined the LAN pool (retry-join)");
	}
}

static void join_logged(void *arg, int err, const char *msg)
{
	const char *addr = arg;
	if (err)
		DG_LOGW(MEM, "cannot join %s: %s", addr, msg ? msg : dg_strerror(err));
	else
		DG_LOGI(MEM, "joined the LAN pool through %s", addr);
}

struct join_task {
	char addr[256];
	dg_lan_done_fn cb;
	void *arg;
	char name[DG_GOSSIP_NAME_MAX + 1];
};

static void join_task_run(dg_lan *l, void *arg, bool cancelled)
{
	struct join_task *t = arg;
	int rv = cancelled || !l->members ? DG_ESHUTDOWN : start_join(l, t->addr, t->cb, t->arg);
	if (rv != 0 && t->cb)
		t->cb(t->arg, rv,
		      rv == DG_EINVAL   ? "not an IPv4 address or host name"
		      : rv == DG_EBUSY ? "too many host-name lookups under way"
					 : dg_strerror(rv));
	free(t);
}

int dg_lan_join(dg_lan *l, const char *addr, dg_lan_done_fn cb, void *arg)
{
	struct join_task *t = calloc(1, sizeof(*t));
	if (!t)
		return DG_ENOMEM;
	if (snprintf(t->addr, sizeof(t->addr), "%s", addr) >= (int)sizeof(t->addr)) {
		free(t);
		return DG_EINVAL;
	}
	t->cb = cb;
	t->arg = arg;
	int rv = dg__lan_post(l, join_task_run, t);
	if (rv != 0)
		free(t);
	return rv;
}

static void force_leave_run(dg_lan *l, void *arg, bool cancelled)
{
	struct join_task *t = arg;
	int rv = cancelled || !l->members ? DG_ESHUTDOWN
					  : dg_gossip_force_leave(l->members->g, t->name,
								  dg_now_ms());
	if (rv == 0 && l->members)
		l->members->dirty = true;
	if (t->cb)
		t->cb(t->arg, rv, NULL);
	free(t);
}

int dg_lan_force_leave(dg_lan *l, const char *name, dg_lan_done_fn cb, void *arg)
{
	struct join_task *t = calloc(1, sizeof(*t));
	if (!t)
		return DG_ENOMEM;
	if (snprintf(t->name, sizeof(t->name), "%s", name) >= (int)sizeof(t->name)) {
		free(t);
		return DG_ENOTFOUND;
	}
	t->cb = cb;
	t->arg = arg;
	int rv = dg__lan_post(l, force_leave_run, t);
	if (rv != 0)
		free(t);
	return rv;
}

static void leave_run(dg_lan *l, void *arg, bool cancelled)
{
	(void)arg;
	if (cancelled || !l->members) {
		sem_post(&l->left);
		return;
	}
	l->members->leaving = true;
	dg_gossip_leave(l->members->g, dg_now_ms());
	l->members->dirty = true;
}

void dg_lan_leave(dg_lan *l, unsigned timeout_ms)
{
	if (dg__lan_post(l, leave_run, NULL) != 0)
		return;
	struct timespec ts = dg_realtime_in_ms(timeout_ms);
	if (sem_timedwait(&l->left, &ts) != 0)
		DG_LOGW(MEM, "leave: not every member heard of it within %u ms", timeout_ms);
	else
		DG_LOGI(MEM, "left the LAN pool");
}

/* ---- timer, start and stop ---- */

void dg__members_tick(dg_lan *l, uint64_t now)
{
	struct dg__members *m = l->members;
	if (!m)
		return;
	dg_gossip_tick(m->g, now);
	if (!m->retry_done && m->nretry > 0 && now >= m->next_retry_ms) {
		m->next_retry_ms = now + RETRY_JOIN_MS;
		for (size_t i = 0; i < m->nretry; i++)
			if (start_join(l, m->retry[i], retry_joined, l) == DG_EINVAL)
				DG_LOGW(MEM, "retry-join: \"%s\" is not an IPv4 address or host name",
					m->retry[i]);
	}
	if (m->leaving && !m->leave_posted && dg_gossip_leave_done(m->g)) {
		m->leave_posted = true;
		sem_post(&l->left);
	}
	if (now >= m->next_reconcile_ms) {
		m->next_reconcile_ms = now + RECONCILE_MS;
		m->reconcile_all = true;
	}
	dg__members_reconcile(l, false);
	if (m->dirty)
		publish(l);
}

static void timer_cb(uv_timer_t *t)
{
	dg_lan *l = t->data;
	dg__members_tick(l, dg_now_ms());
}

int dg__members_start(dg_lan *l, char *msg, size_t len)
{
	struct dg__members *m = calloc(1, sizeof(*m));
	char err[256];
	int rv;
	if (!m)
		return DG_ENOMEM;
	l->members = m;
	dg_buf_init(&m->reply);
	dg_map_init(&m->reaped, false);
	dg_map_init(&m->in_flight, false);
	dg_map_init(&m->reaped_servers, false);
	build_tags(l);
	struct dg_gossip_config gc = {
	    .name = l->cfg.node,
	    .addr = l->address,
	    .port = (uint16_t)l->cfg.serf_lan_port,
	    .tags = m->tags,
	    .ntags = m->ntags,
	    .probe_interval_ms = l->cfg.gossip_probe_interval_ms,
	    .probe_timeout_ms = l->cfg.gossip_probe_timeout_ms,
	    .suspicion_mult = l->cfg.gossip_suspicion_mult,
	    .reap_ms = l->cfg.reconnect_timeout_ms,
	    .key = l->cfg.encrypt_key,
	    .send = send_packet,
	    .change = on_change,
	    .arg = l,
	};
	if ((rv = dg_gossip_new(&gc, dg_now_ms(), &m->g, err, sizeof(err))) != 0) {
		snprintf(msg, len, "gossip: %s", err);
		return rv;
	}
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)l->cfg.serf_lan_port)};
	if (inet_pton(AF_INET, l->cfg.bind_addr, &sa.sin_addr) != 1) {
		snprintf(msg, len, "gossip: bind address %s is not IPv4", l->cfg.bind_addr);
		return DG_EINVAL;
	}
	uv_udp_init(&l->loop, &m->udp);
	m->udp.data = l;
	m->udp_open = true;
	if ((rv = uv_udp_bind(&m->udp, (const struct sockaddr *)&sa, 0)) != 0 ||
	    (rv = uv_udp_recv_start(&m->udp, udp_alloc, udp_recv)) != 0) {
		snprintf(msg, len, "cannot listen on udp %s:%d: %s", l->cfg.bind_addr,
			 l->cfg.serf_lan_port, uv_strerror(rv));
		return DG_EIO;
	}
	uv_timer_init(&l->loop, &m->timer);
	m->timer.data = l;
	m->timer_open = true;
	uv_timer_start(&m->timer, timer_cb, GOSSIP_TICK_MS, GOSSIP_TICK_MS);
	for (const char *const *a = l->cfg.retry_join; a && *a; a++) {
		char **v = realloc(m->retry, (m->nretry + 1) * sizeof(*v));
		if (!v)
			return DG_ENOMEM;
		m->retry = v;
		m->retry[m->nretry++] = dg_strdup(*a);
	}
	for (const char *const *a = l->cfg.join; a && *a; a++)
		if (start_join(l, *a, join_logged, (void *)*a) == DG_EINVAL)
			DG_LOGW(MEM, "join: \"%s\" is not an IPv4 address or host name", *a);
	publish(l);
	return 0;
}

void dg__members_stop(dg_lan *l)
{
	struct dg__members *m = l->members;
	if (!m)
		return;
	finish_joins(l, NULL, DG_ESHUTDOWN, "shutting down");
	/* lookups not started end now; one under way ends with its lookup (the loop waits) */
	m->stopped = true;
	for (struct name_join *nj = m->lookups; nj; nj = nj->next)
		uv_cancel((uv_req_t *)&nj->req);
	if (m->leaving && !m->leave_posted) {
		m->leave_posted = true;
		sem_post(&l->left);
	}
	if (m->udp_open)
		uv_close((uv_handle_t *)&m->udp, NULL);
	if (m->timer_open)
		uv_close((uv_handle_t *)&m->timer, NULL);
	/* the handles close on the next loop turn; the struct goes in dg__members_free */
}

void dg__members_free(dg_lan *l)
{
	struct dg__members *m = l->members;
	if (!m)
		return;
	l->members = NULL;
	dg_gossip_free(m->g);
	dg_buf_fini(&m->reply);
	dg_map_fini(&m->reaped);
	dg_map_fini(&m->in_flight);
	dg_map_fini(&m->reaped_servers);
	for (size_t i = 0; i < m->nretry; i++)
		free(m->retry[i]);
	free(m->retry);
	free(m);
}
