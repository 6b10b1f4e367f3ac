/* lan/gossip.c: the LAN membership state machine (API and threading in gossip.h). One probe at a
 * time, in a random order reshuffled every round; each update travels a bounded number of times,
 * piggybacked on pings and acks or in a gossip packet of its own; full state is exchanged by
 * push-pull on join and periodically. Incarnation numbers order what is said about a member: only the member raises
 * its own, to refute a suspicion or a death that is not true. */
#include "lan/gossip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEF_PROBE_INTERVAL 1000
#define DEF_PROBE_TIMEOUT  500
#define DEF_INDIRECT       3
#define DEF_SUSPICION_MULT 4
#define DEF_SUSPICION_MAX  60000
#define DEF_SUSPICION_DIV  3
#define DEF_RETRANSMIT     4
#define DEF_PUSHPULL       30000
#define DEF_GOSSIP         200
#define DEF_GOSSIP_NODES   3
#define DEF_REAP           (72ull * 3600 * 1000)
/* members failed this recently still get gossip (memberlist's GossipToTheDeadTime) */
#define GOSSIP_TO_DEAD_MS 30000
#define MAX_INDIRECT       16
#define MAX_RELAYS         64 /* indirect probes run for others at once */

/* A suspicion (memberlist's suspicion timer), valid while pub.suspect. It lasts max from start,
 * and each independent confirmation (a SUSPECT at the same incarnation from a member not yet
 * counted) brings the deadline closer, down to min after k of them. Confirmers are kept as
 * hashes of their names: a collision can only lose a confirmation, which makes the timeout
 * longer, never shorter. */
struct suspicion {
	uint64_t start, min, max, deadline;
	unsigned k;          /* confirmations that bring it to min; 0: it always lasts max */
	unsigned confirmed;  /* 0..k */
	uint64_t who[MAX_INDIRECT + 1]; /* the first suspector, then each confirmer */
};

struct member {
	struct dg_gossip_member pub;
	struct suspicion susp;
};

/* An update waiting to be piggybacked: one per member name (a newer one replaces it). */
struct bcast {
	char name[DG_GOSSIP_NAME_MAX + 1];
	uint8_t *msg; /* one framed message */
	size_t len;
	unsigned transmits;
	uint64_t id; /* higher is newer */
};

/* An indirect probe run for another member: our ping's seq, and whom to tell. */
struct relay {
	bool used;
	uint32_t seq, their_seq;
	char addr[DG_GOSSIP_ADDR_MAX + 1];
	uint16_t port;
	char target[DG_GOSSIP_NAME_MAX + 1];
	uint64_t deadline;
};

struct dg_gossip {
	struct dg_gossip_config cfg; /* numbers with defaults filled in; name/addr/tags unused */
	uint8_t key[DG_GOSSIP_KEY_LEN];
	bool has_key;
	uint64_t rng;

	struct member **v; /* all members, self included; probe order between reshuffles */
	size_t n, cap;
	struct dg_map idx; /* name -> struct member * */
	struct member *self;

	size_t probe_pos;
	uint64_t next_probe, next_pushpull, next_gossip;
	struct {
		bool active, acked, indirect_sent;
		uint32_t seq;
		char target[DG_GOSSIP_NAME_MAX + 1];
		uint64_t start;
	} probe;
	uint32_t seq;
	struct relay relays[MAX_RELAYS];

	struct bcast *bq;
	size_t nbq, capbq;
	uint64_t bcast_id;

	struct dg_buf pkt, one, sealed;
	struct dg_gossip_stats stats;
};

/* ---- small helpers ---- */

static uint64_t rnd(dg_gossip *g)
{
	/* xorshift64*: deterministic per seed, which the simulated-network tests rely on */
	g->rng ^= g->rng >> 12;
	g->rng ^= g->rng << 25;
	g->rng ^= g->rng >> 27;
	return g->rng * 0x2545F4914F6CDD1Dull;
}

static size_t rnd_below(dg_gossip *g, size_t n)
{
	return n ? (size_t)(rnd(g) % n) : 0;
}

static bool is_alive(const struct member *m)
{
	return m->pub.status == DG_GOSSIP_ALIVE_ST;
}

/* log10(n+1) of the members known (failed and left ones too, until reaped), as memberlist
 * counts them: a member that left still needs everyone to hear of it. */
static double log_scale(const dg_gossip *g)
{
	return log10((double)g->n + 1);
}

unsigned dg_gossip_retransmit_limit(const dg_gossip *g)
{
	return g->cfg.retransmit_mult * (unsigned)ceil(log_scale(g));
}

uint64_t dg_gossip_suspicion_ms(const dg_gossip *g)
{
	double f = log_scale(g);
	if (f < 1)
		f = 1;
	uint64_t ms = (uint64_t)(g->cfg.suspicion_mult * f * g->cfg.probe_interval_ms);
	return ms > g->cfg.suspicion_max_ms ? g->cfg.suspicion_max_ms : ms;
}

uint64_t dg_gossip_suspicion_min_ms(const dg_gossip *g)
{
	return dg_gossip_suspicion_ms(g) / g->cfg.suspicion_min_div;
}

static uint64_t name_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	return h;
}

/* The deadline for c confirmations out of k: max - (max - min) * log(c + 1) / log(k + 1), as
 * memberlist computes it: the first confirmations count the most. */
static uint64_t suspicion_deadline(const struct suspicion *s)
{
	if (s->k == 0 || s->confirmed == 0)
		return s->start + s->max;
	double frac = log((double)s->confirmed + 1) / log((double)s->k + 1);
	double t = (double)s->max - frac * (double)(s->max - s->min);
	uint64_t ms = t < (double)s->min ? s->min : (uint64_t)t;
	return s->start + ms;
}

/* Starts the suspicion of m, suspected by from. k is the indirect checks, as many members as a
 * prober asks to confirm a failed probe. With fewer alive members that could confirm (all but
 * this node and m) none are expected and the suspicion always lasts max: memberlist also sets
 * k = 0 then and waits its old fixed timeout, which here is max (docs/gossip.md). */
static void suspicion_start(dg_gossip *g, struct member *m, const char *from, uint64_t now)
{
	struct suspicion *s = &m->susp;
	size_t k = g->cfg.indirect_checks < MAX_INDIRECT ? g->cfg.indirect_checks : MAX_INDIRECT;
	size_t others = dg_gossip_alive(g);
	others = others > 2 ? others - 2 : 0;
	*s = (struct suspicion){.start = now,
				.max = dg_gossip_suspicion_ms(g),
				.min = dg_gossip_suspicion_min_ms(g),
				.k = others < k ? 0 : (unsigned)k};
	s->who[0] = name_hash(from);
	s->deadline = suspicion_deadline(s);
}

/* A SUSPECT about m, already suspect at the same incarnation, from from: true when it is a new
 * confirmation (then the deadline moved closer and it is worth gossiping on). */
static bool suspicion_confirm(struct member *m, const char *from)
{
	struct suspicion *s = &m->susp;
	if (s->confirmed >= s->k || strcmp(from, m->pub.name) == 0)
		return false;
	uint64_t h = name_hash(from);
	for (unsigned i = 0; i <= s->confirmed; i++)
		if (s->who[i] == h)
			return false;
	s->who[++s->confirmed] = h;
	s->deadline = suspicion_deadline(s);
	return true;
}

static void notify(dg_gossip *g, struct member *m, int old)
{
	if (g->cfg.change && old != m->pub.status)
		g->cfg.change(g->cfg.arg, &m->pub, old);
}

static void set_status(dg_gossip *g, struct member *m, int status, uint64_t now)
{
	int old = m->pub.status;
	m->pub.status = status;
	m->pub.suspect = false;
	if (old != status) {
		m->pub.changed_ms = now;
		notify(g, m, old);
	}
}

static void free_tags(struct dg_gossip_member *m)
{
	for (size_t i = 0; i < m->ntags; i++) {
		free((char *)m->tags[i].key);
		free((char *)m->tags[i].value);
	}
	free(m->tags);
	m->tags = NULL;
	m->ntags = 0;
}

/* Copies tags into m, replacing its own (tags may be m's own: the copy is made first); on
 * failure m keeps what it had. */
static int set_tags(struct dg_gossip_member *m, const struct dg_gossip_tag *tags, size_t n)
{
	struct dg_gossip_member fresh = {.ntags = 0};
	if (n) {
		fresh.tags = calloc(n, sizeof(*fresh.tags));
		if (!fresh.tags)
			return DG_ENOMEM;
		for (size_t i = 0; i < n; i++) {
			fresh.tags[i].key = dg_strdup(tags[i].key);
			fresh.tags[i].value = dg_strdup(tags[i].value);
			fresh.ntags = i + 1;
			if (!fresh.tags[i].key || !fresh.tags[i].value) {
				free_tags(&fresh);
				return DG_ENOMEM;
			}
		}
	}
	free_tags(m);
	m->tags = fresh.tags;
	m->ntags = fresh.ntags;
	return 0;
}

static void node_of(const struct member *m, struct dg_gossip_node *n)
{
	n->name = m->pub.name;
	n->addr = m->pub.addr;
	n->port = m->pub.port;
	n->status = (uint8_t)m->pub.status;
	n->incarnation = m->pub.incarnation;
	n->ntags = m->pub.ntags;
	n->tags = m->pub.tags;
}

static struct member *find(const dg_gossip *g, const char *name)
{
	return dg_map_find(&g->idx, name);
}

static struct member *add_member(dg_gossip *g, const struct dg_gossip_node *n)
{
	if (g->n >= DG_GOSSIP_MAX_MEMBERS)
		return NULL;
	if (g->n == g->cap) {
		size_t cap = g->cap ? g->cap * 2 : 16;
		struct member **v = realloc(g->v, cap * sizeof(*v));
		if (!v)
			return NULL;
		g->v = v;
		g->cap = cap;
	}
	struct member *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	snprintf(m->pub.name, sizeof(m->pub.name), "%s", n->name);
	snprintf(m->pub.addr, sizeof(m->pub.addr), "%s", n->addr);
	m->pub.port = n->port;
	m->pub.incarnation = n->incarnation;
	m->pub.status = DG_GOSSIP_NONE;
	if (set_tags(&m->pub, n->tags, n->ntags) != 0 ||
	    dg_map_put(&g->idx, m->pub.name, m, NULL) != 0) {
		free_tags(&m->pub);
		free(m);
		return NULL;
	}
	/* a newcomer goes to a random place among those not yet probed this round, as
	 * memberlist does, so it is probed within the round without favouring it */
	size_t pos = g->probe_pos + rnd_below(g, g->n - g->probe_pos + 1);
	if (pos >= g->n) {
		g->v[g->n++] = m;
	} else {
		g->v[g->n++] = g->v[pos];
		g->v[pos] = m;
	}
	return m;
}

static void remove_member(dg_gossip *g, size_t i)
{
	struct member *m = g->v[i];
	dg_map_del(&g->idx, m->pub.name);
	memmove(&g->v[i], &g->v[i + 1], (g->n - i - 1) * sizeof(*g->v));
	g->n--;
	if (i < g->probe_pos)
		g->probe_pos--;
	free_tags(&m->pub);
	free(m);
}

/* ---- sending ---- */

static size_t udp_room(const dg_gossip *g)
{
	return DG_GOSSIP_UDP_MAX - (g->has_key ? DG_GOSSIP_SEAL_OVERHEAD : 0);
}

static void emit(dg_gossip *g, const char *addr, uint16_t port, const struct dg_buf *b,
		 bool stream, bool reply)
{
	struct dg_gossip_out o = {.addr = addr, .port = port, .stream = stream, .reply = reply};
	if (g->has_key) {
		g->sealed.len = 0;
		if (dg_gossip_seal(g->key, b->data, b->len, &g->sealed) != 0)
			return;
		o.data = (const uint8_t *)g->sealed.data;
		o.len = g->sealed.len;
	} else {
		o.data = (const uint8_t *)b->data;
		o.len = b->len;
	}
	g->stats.tx_packets++;
	g->stats.tx_bytes += o.len;
	g->cfg.send(g->cfg.arg, &o);
}

/* Queues an update (m is encoded now), replacing any older one about the same member. */
static void broadcast(dg_gossip *g, const struct dg_gossip_msg *m)
{
	const char *name = m->node.name;
	g->one.len = 0;
	if (dg_gossip_msg_encode(&g->one, m) != 0)
		return;
	uint8_t *copy = malloc(g->one.len);
	if (!copy)
		return;
	memcpy(copy, g->one.data, g->one.len);
	struct bcast *b = NULL;
	for (size_t i = 0; i < g->nbq; i++)
		if (strcmp(g->bq[i].name, name) == 0) {
			b = &g->bq[i];
			free(b->msg);
			break;
		}
	if (!b) {
		if (g->nbq == g->capbq) {
			size_t cap = g->capbq ? g->capbq * 2 : 16;
			struct bcast *v = realloc(g->bq, cap * sizeof(*v));
			if (!v) {
				free(copy);
				return;
			}
			g->bq = v;
			g->capbq = cap;
		}
		b = &g->bq[g->nbq++];
		snprintf(b->name, sizeof(b->name), "%s", name);
	}
	b->msg = copy;
	b->len = g->one.len;
	b->transmits = 0;
	b->id = ++g->bcast_id;
	g->stats.broadcasts_queued = g->nbq;
	if (g->nbq > g->stats.broadcasts_max)
		g->stats.broadcasts_max = g->nbq;
}

static void broadcast_alive(dg_gossip *g, const struct member *m)
{
	struct dg_gossip_msg a = {.type = DG_GOSSIP_ALIVE};
	node_of(m, &a.node);
	broadcast(g, &a);
}

static void broadcast_state(dg_gossip *g, uint8_t type, const char *name, uint32_t inc,
			    const char *from)
{
	struct dg_gossip_msg a = {.type = type, .from = from};
	a.node.name = name;
	a.node.incarnation = inc;
	broadcast(g, &a);
}

static int bcast_order(const void *a, const void *b)
{
	const struct bcast *x = *(const struct bcast *const *)a, *y = *(const struct bcast *const *)b;
	if (x->transmits != y->transmits)
		return x->transmits < y->transmits ? -1 : 1;
	return x->id > y->id ? -1 : x->id < y->id;
}

/* Fills pkt with queued updates, least sent and then newest first, within max bytes; drops
 * those sent the full number of times. */
static void piggyback(dg_gossip *g, struct dg_buf *pkt, size_t max)
{
	if (g->nbq == 0)
		return;
	struct bcast **order = malloc(g->nbq * sizeof(*order));
	if (!order)
		return;
	for (size_t i = 0; i < g->nbq; i++)
		order[i] = &g->bq[i];
	qsort(order, g->nbq, sizeof(*order), bcast_order);
	for (size_t i = 0; i < g->nbq; i++)
		if (dg_gossip_packet_append(pkt, order[i]->msg, order[i]->len, max) == 0)
			order[i]->transmits++;
	free(order);
	unsigned limit = dg_gossip_retransmit_limit(g);
	size_t w = 0;
	for (size_t i = 0; i < g->nbq; i++) {
		if (g->bq[i].transmits >= limit)
			free(g->bq[i].msg);
		else
			g->bq[w++] = g->bq[i];
	}
	g->nbq = w;
	g->stats.broadcasts_queued = w;
}

/* Sends one message with whatever updates fit beside it. */
static void send_with_updates(dg_gossip *g, const char *addr, uint16_t port,
			      const struct dg_gossip_msg *m)
{
	g->one.len = 0;
	if (dg_gossip_packet_begin(&g->pkt) != 0 || dg_gossip_msg_encode(&g->one, m) != 0 ||
	    dg_gossip_packet_append(&g->pkt, g->one.data, g->one.len, udp_room(g)) != 0)
		return;
	piggyback(g, &g->pkt, udp_room(g));
	emit(g, addr, port, &g->pkt, false, false);
}

static void send_pushpull(dg_gossip *g, const char *addr, uint16_t port, uint8_t flags,
			  bool reply)
{
	struct dg_gossip_node *nodes = malloc(g->n * sizeof(*nodes));
	if (!nodes)
		return;
	for (size_t i = 0; i < g->n; i++)
		node_of(g->v[i], &nodes[i]);
	struct dg_gossip_msg m = {
	    .type = DG_GOSSIP_PUSHPULL, .flags = flags, .nmembers = g->n, .members = nodes};
	struct dg_buf out;
	dg_buf_init(&out);
	if (dg_gossip_packet_encode(&out, &m, 1, DG_GOSSIP_STREAM_MAX - DG_GOSSIP_SEAL_OVERHEAD) ==
	    0) {
		g->stats.pushpulls++;
		emit(g, addr, port, &out, true, reply);
	}
	dg_buf_fini(&out);
	free(nodes);
}

/* ---- what others tell us ---- */

/* Someone says this node is suspect, dead or gone, or knows a newer incarnation of it: say
 * otherwise, louder. */
static void refute(dg_gossip *g, uint32_t inc)
{
	struct member *s = g->self;
	uint32_t base = inc > s->pub.incarnation ? inc : s->pub.incarnation;
	if (s->pub.status != DG_GOSSIP_ALIVE_ST)
		return; /* leaving: what they say is true */
	if (base == UINT32_MAX)
		return; /* no higher number to say it with; wrapping to 0 would be worse */
	s->pub.incarnation = base + 1;
	g->stats.refutes++;
	broadcast_alive(g, s);
}

static void on_alive(dg_gossip *g, const struct dg_gossip_node *n, uint64_t now)
{
	struct member *m = find(g, n->name);
	if (m == g->self) {
		if (n->incarnation > m->pub.incarnation)
			refute(g, n->incarnation);
		return;
	}
	if (!m) {
		if (!(m = add_member(g, n)))
			return;
		set_status(g, m, DG_GOSSIP_ALIVE_ST, now);
		broadcast_alive(g, m);
		return;
	}
	if (n->incarnation <= m->pub.incarnation)
		return; /* old news */
	snprintf(m->pub.addr, sizeof(m->pub.addr), "%s", n->addr);
	m->pub.port = n->port;
	m->pub.incarnation = n->incarnation;
	set_tags(&m->pub, n->tags, n->ntags);
	set_status(g, m, DG_GOSSIP_ALIVE_ST, now);
	broadcast_alive(g, m);
}

static void on_suspect(dg_gossip *g, const char *name, uint32_t inc, const char *from,
		       uint64_t now)
{
	struct member *m = find(g, name);
	if (!m || inc < m->pub.incarnation)
		return;
	if (m == g->self) {
		refute(g, inc);
		return;
	}
	if (!is_alive(m))
		return;
	if (m->pub.suspect && inc == m->pub.incarnation) {
		/* memberlist re-gossips a new confirmation, so that the others' timers shorten
		 * too; it replaces the queued SUSPECT about m (one update per member) */
		if (suspicion_confirm(m, from)) {
			g->stats.confirmations++;
			broadcast_state(g, DG_GOSSIP_SUSPECT, name, inc, from);
		}
		return;
	}
	/* not suspect, or suspect at an older incarnation: m refuted that one (an ALIVE we
	 * missed) and is suspected anew; the old confirmations do not count for the new one */
	m->pub.suspect = true;
	m->pub.incarnation = inc;
	suspicion_start(g, m, from, now);
	g->stats.suspects++;
	broadcast_state(g, DG_GOSSIP_SUSPECT, name, inc, from);
}

/* A DEAD (left false) or a LEAVE (left true). */
static void on_gone(dg_gossip *g, const char *name, uint32_t inc, const char *from, bool left,
		    uint64_t now)
{
	struct member *m = find(g, name);
	if (!m || inc < m->pub.incarnation)
		return;
	if (m == g->self) {
		refute(g, inc);
		return;
	}
	if (m->pub.status == DG_GOSSIP_LEFT || (!left && m->pub.status == DG_GOSSIP_FAILED))
		return;
	m->pub.incarnation = inc;
	if (!left)
		g->stats.failures++;
	set_status(g, m, left ? DG_GOSSIP_LEFT : DG_GOSSIP_FAILED, now);
	broadcast_state(g, left ? DG_GOSSIP_LEAVE : DG_GOSSIP_DEAD, name, inc, from);
}

/* A push-pull's view, merged as memberlist does: a member it says failed is only suspected
 * here (it may be our side that cannot hear them), and members it no longer knows alive are
 * not learned. */
static void merge(dg_gossip *g, const struct dg_gossip_msg *m, uint64_t now)
{
	for (size_t i = 0; i < m->nmembers; i++) {
		const struct dg_gossip_node *n = &m->members[i];
		switch (n->status) {
		case DG_GOSSIP_ALIVE_ST:
		case DG_GOSSIP_LEAVING:
			on_alive(g, n, now);
			break;
		case DG_GOSSIP_LEFT:
			on_gone(g, n->name, n->incarnation, n->name, true, now);
			break;
		case DG_GOSSIP_FAILED:
			on_suspect(g, n->name, n->incarnation, g->self->pub.name, now);
			break;
		}
	}
}

static struct relay *relay_find(dg_gossip *g, uint32_t seq)
{
	for (size_t i = 0; i < MAX_RELAYS; i++)
		if (g->relays[i].used && g->relays[i].seq == seq)
			return &g->relays[i];
	return NULL;
}

static void on_msg(dg_gossip *g, const char *addr, uint16_t port, const struct dg_gossip_msg *m,
		   uint64_t now)
{
	const char *self = g->self->pub.name;
	switch (m->type) {
	case DG_GOSSIP_PING: {
		if (strcmp(m->target, self) != 0) {
			g->stats.rx_ignored++; /* meant for a previous owner of this address */
			return;
		}
		struct dg_gossip_msg ack = {.type = DG_GOSSIP_ACK, .seq = m->seq, .from = self};
		send_with_updates(g, addr, port, &ack);
		return;
	}
	case DG_GOSSIP_ACK: {
		if (g->probe.active && m->seq == g->probe.seq) {
			g->probe.acked = true;
			return;
		}
		struct relay *r = relay_find(g, m->seq);
		if (r) {
			struct dg_gossip_msg ack = {
			    .type = DG_GOSSIP_ACK, .seq = r->their_seq, .from = r->target};
			r->used = false;
			send_with_updates(g, r->addr, r->port, &ack);
		}
		return;
	}
	case DG_GOSSIP_NACK:
		return; /* memberlist uses nacks to judge its own health; not needed here */
	case DG_GOSSIP_INDIRECT: {
		struct relay *r = NULL;
		for (size_t i = 0; i < MAX_RELAYS && !r; i++)
			if (!g->relays[i].used)
				r = &g->relays[i];
		if (!r)
			return; /* busy: the requester also asked others */
		r->used = true;
		r->seq = ++g->seq;
		r->their_seq = m->seq;
		snprintf(r->addr, sizeof(r->addr), "%s", addr);
		r->port = port;
		snprintf(r->target, sizeof(r->target), "%s", m->target);
		r->deadline = now + g->cfg.probe_timeout_ms;
		struct dg_gossip_msg ping = {
		    .type = DG_GOSSIP_PING, .seq = r->seq, .from = self, .target = m->target};
		send_with_updates(g, m->addr, m->port, &ping);
		return;
	}
	case DG_GOSSIP_ALIVE:
		on_alive(g, &m->node, now);
		return;
	case DG_GOSSIP_SUSPECT:
		on_suspect(g, m->node.name, m->node.incarnation, m->from, now);
		return;
	case DG_GOSSIP_DEAD:
		on_gone(g, m->node.name, m->node.incarnation, m->from, false, now);
		return;
	case DG_GOSSIP_LEAVE:
		on_gone(g, m->node.name, m->node.incarnation, m->node.name, true, now);
		return;
	case DG_GOSSIP_PUSHPULL:
		if (!(m->flags & DG_GOSSIP_PP_REPLY))
			send_pushpull(g, addr, port, DG_GOSSIP_PP_REPLY, true);
		merge(g, m, now);
		return;
	}
}

int dg_gossip_recv(dg_gossip *g, const char *addr, uint16_t port, const void *buf, size_t len,
		   bool stream, uint64_t now)
{
	struct dg_gossip_packet p;
	char err[160];
	uint8_t *plain = NULL;
	int rv;
	g->stats.rx_packets++;
	if (g->has_key) {
		size_t plen;
		if (len > (size_t)DG_GOSSIP_STREAM_MAX || len < DG_GOSSIP_SEAL_OVERHEAD ||
		    !(plain = malloc(len))) {
			g->stats.rx_auth_failed++;
			return DG_EPERM;
		}
		if ((rv = dg_gossip_open(g->key, buf, len, plain, &plen)) != 0) {
			free(plain);
			g->stats.rx_auth_failed++;
			return rv;
		}
		buf = plain;
		len = plen;
	}
	rv = dg_gossip_packet_decode(buf, len, stream, &p, err, sizeof(err));
	free(plain);
	if (rv != 0) {
		g->stats.rx_bad++;
		DG_LOGD("gossip", "dropped a packet from %s:%u: %s", addr, port, err);
		return rv;
	}
	for (size_t i = 0; i < p.n; i++)
		on_msg(g, addr, port, &p.msg[i], now);
	dg_gossip_packet_fini(&p);
	return 0;
}

/* ---- timers ---- */

/* A random member of the given status other than those named; with failed_since, members failed
 * at or after that time count too. */
static struct member *random_member_since(dg_gossip *g, int status, const char *not1,
					  const struct member **not, size_t nnot,
					  uint64_t failed_since)
{
	size_t c = 0;
	struct member *pick = NULL;
	for (size_t i = 0; i < g->n; i++) {
		struct member *m = g->v[i];
		bool recently_failed = failed_since && m->pub.status == DG_GOSSIP_FAILED &&
				       m->pub.changed_ms >= failed_since;
		if (m == g->self || (m->pub.status != status && !recently_failed) ||
		    (not1 && strcmp(m->pub.name, not1) == 0))
			continue;
		bool skip = false;
		for (size_t j = 0; j < nnot; j++)
			skip |= not[j] == m;
		if (skip)
			continue;
		/* reservoir sampling: one pass, each equally likely */
		if (rnd_below(g, ++c) == 0)
			pick = m;
	}
	return pick;
}

static struct member *random_member(dg_gossip *g, int status, const char *not1,
				    const struct member **not, size_t nnot)
{
	return random_member_since(g, status, not1, not, nnot, 0);
}

static void end_probe(dg_gossip *g, uint64_t now)
{
	if (!g->probe.active)
		return;
	g->probe.active = false;
	if (g->probe.acked)
		return;
	struct member *m = find(g, g->probe.target);
	if (m && m != g->self)
		on_suspect(g, m->pub.name, m->pub.incarnation, g->self->pub.name, now);
}

static void start_probe(dg_gossip *g, uint64_t now)
{
	struct member *m = NULL;
	for (size_t tries = 0; tries <= g->n && !m; tries++) {
		if (g->probe_pos >= g->n) {
			for (size_t i = g->n; i > 1; i--) { /* a new round, a new order */
				size_t j = rnd_below(g, i);
				struct member *t = g->v[i - 1];
				g->v[i - 1] = g->v[j];
				g->v[j] = t;
			}
			g->probe_pos = 0;
		}
		struct member *c = g->v[g->probe_pos++];
		if (c != g->self && is_alive(c))
			m = c;
	}
	if (!m)
		return;
	g->probe.active = true;
	g->probe.acked = false;
	g->probe.indirect_sent = false;
	g->probe.seq = ++g->seq;
	g->probe.start = now;
	snprintf(g->probe.target, sizeof(g->probe.target), "%s", m->pub.name);
	g->stats.probes++;
	struct dg_gossip_msg ping = {.type = DG_GOSSIP_PING,
				     .seq = g->probe.seq,
				     .from = g->self->pub.name,
				     .target = m->pub.name};
	send_with_updates(g, m->pub.addr, m->pub.port, &ping);
}

static void indirect_probe(dg_gossip *g)
{
	struct member *t = find(g, g->probe.target);
	g->probe.indirect_sent = true;
	if (!t)
		return;
	const struct member *asked[MAX_INDIRECT];
	size_t k = g->cfg.indirect_checks < MAX_INDIRECT ? g->cfg.indirect_checks : MAX_INDIRECT;
	size_t n = 0;
	while (n < k) {
		struct member *via =
		    random_member(g, DG_GOSSIP_ALIVE_ST, g->probe.target, asked, n);
		if (!via)
			break;
		asked[n++] = via;
		struct dg_gossip_msg req = {.type = DG_GOSSIP_INDIRECT,
					    .seq = g->probe.seq,
					    .target = t->pub.name,
					    .addr = t->pub.addr,
					    .port = t->pub.port,
					    .from = g->self->pub.name};
		g->stats.indirect_probes++;
		send_with_updates(g, via->pub.addr, via->pub.port, &req);
	}
}

/* Queued updates on their own, to a few random members: what memberlist's gossip interval
 * does. Piggybacking alone moves an update one hop per probe interval, so a refutation could
 * lose the race against a suspicion timeout; and a leaving node is probed by nobody. */
/* Queued updates to a few random members. Members failed in the last GOSSIP_TO_DEAD_MS are
 * among them (as memberlist's gossip to the dead): one that was restarted under its name hears
 * that it was declared failed and refutes it, instead of staying failed for the others until
 * the next push-pull. */
static void gossip(dg_gossip *g, uint64_t now)
{
	const struct member *sent[MAX_INDIRECT];
	size_t k = g->cfg.gossip_nodes < MAX_INDIRECT ? g->cfg.gossip_nodes : MAX_INDIRECT;
	uint64_t since = now > GOSSIP_TO_DEAD_MS ? now - GOSSIP_TO_DEAD_MS : 1;
	for (size_t n = 0; n < k && g->nbq; n++) {
		struct member *to =
			random_member_since(g, DG_GOSSIP_ALIVE_ST, NULL, sent, n, since);
		if (!to)
			break;
		sent[n] = to;
		if (dg_gossip_packet_begin(&g->pkt) != 0)
			return;
		piggyback(g, &g->pkt, udp_room(g));
		if ((uint8_t)g->pkt.data[1] > 0)
			emit(g, to->pub.addr, to->pub.port, &g->pkt, false, false);
	}
}

static bool leave_queued(const dg_gossip *g)
{
	for (size_t i = 0; i < g->nbq; i++)
		if (strcmp(g->bq[i].name, g->self->pub.name) == 0)
			return true;
	return false;
}

void dg_gossip_tick(dg_gossip *g, uint64_t now)
{
	const struct dg_gossip_config *c = &g->cfg;
	bool leaving = g->self->pub.status == DG_GOSSIP_LEAVING;

	if (g->probe.active && !g->probe.acked && !g->probe.indirect_sent &&
	    now >= g->probe.start + c->probe_timeout_ms)
		indirect_probe(g);
	if (now >= g->next_probe) {
		end_probe(g, now);
		if (g->self->pub.status == DG_GOSSIP_ALIVE_ST)
			start_probe(g, now);
		g->next_probe = now + c->probe_interval_ms;
	}
	if (now >= g->next_gossip) {
		g->next_gossip = now + c->gossip_interval_ms;
		if (g->self->pub.status == DG_GOSSIP_ALIVE_ST || leaving)
			gossip(g, now);
	}
	if (leaving && !leave_queued(g))
		set_status(g, g->self, DG_GOSSIP_LEFT, now);
	for (size_t i = 0; i < MAX_RELAYS; i++) {
		struct relay *r = &g->relays[i];
		if (r->used && now >= r->deadline) {
			struct dg_gossip_msg nack = {
			    .type = DG_GOSSIP_NACK, .seq = r->their_seq, .from = g->self->pub.name};
			r->used = false;
			send_with_updates(g, r->addr, r->port, &nack);
		}
	}
	for (size_t i = 0; i < g->n; i++) {
		struct member *m = g->v[i];
		if (m->pub.suspect && now >= m->susp.deadline)
			on_gone(g, m->pub.name, m->pub.incarnation, g->self->pub.name, false, now);
	}
	if (now >= g->next_pushpull) {
		g->next_pushpull = now + c->pushpull_interval_ms;
		if (g->self->pub.status == DG_GOSSIP_ALIVE_ST) {
			struct member *m = random_member(g, DG_GOSSIP_ALIVE_ST, NULL, NULL, 0);
			if (m)
				send_pushpull(g, m->pub.addr, m->pub.port, 0, false);
			/* and, as serf's reconnect does, one failed member: the only way two
			 * halves of a healed partition find each other again */
			if ((m = random_member(g, DG_GOSSIP_FAILED, NULL, NULL, 0)))
				send_pushpull(g, m->pub.addr, m->pub.port, 0, false);
		}
	}
	for (size_t i = 0; i < g->n;) {
		struct member *m = g->v[i];
		if (m != g->self &&
		    (m->pub.status == DG_GOSSIP_FAILED || m->pub.status == DG_GOSSIP_LEFT) &&
		    now - m->pub.changed_ms >= c->reap_ms) {
			int old = m->pub.status;
			m->pub.status = DG_GOSSIP_NONE;
			notify(g, m, old);
			remove_member(g, i);
		} else {
			i++;
		}
	}
}

uint64_t dg_gossip_next_ms(const dg_gossip *g)
{
	uint64_t t = g->next_probe < g->next_pushpull ? g->next_probe : g->next_pushpull;
#define EARLIER(x)                                                                                 \
	do {                                                                                       \
		uint64_t x_ = (x);                                                                 \
		if (x_ < t)                                                                        \
			t = x_;                                                                    \
	} while (0)
	if (g->probe.active && !g->probe.acked && !g->probe.indirect_sent)
		EARLIER(g->probe.start + g->cfg.probe_timeout_ms);
	if (g->nbq)
		EARLIER(g->next_gossip);
	for (size_t i = 0; i < MAX_RELAYS; i++)
		if (g->relays[i].used)
			EARLIER(g->relays[i].deadline);
	for (size_t i = 0; i < g->n; i++) {
		const struct member *m = g->v[i];
		if (m->pub.suspect)
			EARLIER(m->susp.deadline);
		if (m != g->self &&
		    (m->pub.status == DG_GOSSIP_FAILED || m->pub.status == DG_GOSSIP_LEFT))
			EARLIER(m->pub.changed_ms + g->cfg.reap_ms);
	}
#undef EARLIER
	return t;
}

/* ---- the rest of the API ---- */

static int bad(char *err, size_t errlen, const char *why)
{
	snprintf(err, errlen, "%s", why);
	return DG_EINVAL;
}

int dg_gossip_new(const struct dg_gossip_config *cfg, uint64_t now, dg_gossip **out, char *err,
		  size_t errlen)
{
	*out = NULL;
	if (!cfg->name || !cfg->name[0] || strlen(cfg->name) > DG_GOSSIP_NAME_MAX)
		return bad(err, errlen, "node name must be 1 to 128 bytes");
	if (!cfg->addr || !cfg->addr[0] || strlen(cfg->addr) > DG_GOSSIP_ADDR_MAX)
		return bad(err, errlen, "gossip address must be 1 to 64 bytes");
	if (!cfg->send)
		return bad(err, errlen, "no send callback");
	if (cfg->ntags && !cfg->tags)
		return bad(err, errlen, "tags missing");

	dg_gossip *g = calloc(1, sizeof(*g));
	if (!g)
		return DG_ENOMEM;
	g->cfg = *cfg;
	struct dg_gossip_config *c = &g->cfg;
	c->port = c->port ? c->port : 8301;
	c->probe_interval_ms = c->probe_interval_ms ? c->probe_interval_ms : DEF_PROBE_INTERVAL;
	c->probe_timeout_ms = c->probe_timeout_ms ? c->probe_timeout_ms : DEF_PROBE_TIMEOUT;
	c->indirect_checks = c->indirect_checks ? c->indirect_checks : DEF_INDIRECT;
	c->suspicion_mult = c->suspicion_mult ? c->suspicion_mult : DEF_SUSPICION_MULT;
	c->suspicion_max_ms = c->suspicion_max_ms ? c->suspicion_max_ms : DEF_SUSPICION_MAX;
	c->suspicion_min_div = c->suspicion_min_div ? c->suspicion_min_div : DEF_SUSPICION_DIV;
	c->retransmit_mult = c->retransmit_mult ? c->retransmit_mult : DEF_RETRANSMIT;
	c->pushpull_interval_ms = c->pushpull_interval_ms ? c->pushpull_interval_ms : DEF_PUSHPULL;
	c->gossip_interval_ms = c->gossip_interval_ms ? c->gossip_interval_ms : DEF_GOSSIP;
	c->gossip_nodes = c->gossip_nodes ? c->gossip_nodes : DEF_GOSSIP_NODES;
	c->reap_ms = c->reap_ms ? c->reap_ms : DEF_REAP;
	c->name = c->addr = NULL;
	c->tags = NULL;
	c->ntags = 0;
	c->key = NULL;
	if (cfg->key) {
		memcpy(g->key, cfg->key, DG_GOSSIP_KEY_LEN);
		g->has_key = true;
	}
	g->rng = cfg->seed;
	if (!g->rng) {
		g->rng = 1469598103934665603ull; /* FNV-1a of name and address */
		for (const char *s = cfg->name; *s; s++)
			g->rng = (g->rng ^ (uint8_t)*s) * 1099511628211ull;
		for (const char *s = cfg->addr; *s; s++)
			g->rng = (g->rng ^ (uint8_t)*s) * 1099511628211ull;
		g->rng |= 1;
	}
	dg_map_init(&g->idx, false);
	dg_buf_init(&g->pkt);
	dg_buf_init(&g->one);
	dg_buf_init(&g->sealed);

	/* our own entry must encode: the limits of the wire are the limits of the config */
	struct dg_gossip_msg a = {.type = DG_GOSSIP_ALIVE};
	a.node = (struct dg_gossip_node){.name = cfg->name,
					 .addr = cfg->addr,
					 .port = c->port,
					 .status = DG_GOSSIP_ALIVE_ST,
					 .incarnation = 1,
					 .ntags = cfg->ntags,
					 .tags = cfg->tags};
	int rv = dg_gossip_msg_encode(&g->one, &a);
	if (rv != 0) {
		rv = bad(err, errlen, "node name, address or tags over the gossip limits");
		goto fail;
	}
	rv = DG_ENOMEM;
	if (!(g->self = add_member(g, &a.node)))
		goto fail;
	g->self->pub.status = DG_GOSSIP_ALIVE_ST;
	g->self->pub.changed_ms = now;
	broadcast_alive(g, g->self);
	g->next_probe = now + c->probe_interval_ms;
	g->next_pushpull = now + c->pushpull_interval_ms;
	g->next_gossip = now + c->gossip_interval_ms;
	*out = g;
	return 0;
fail:
	dg_gossip_free(g);
	return rv;
}

void dg_gossip_free(dg_gossip *g)
{
	if (!g)
		return;
	for (size_t i = 0; i < g->n; i++) {
		free_tags(&g->v[i]->pub);
		free(g->v[i]);
	}
	free(g->v);
	dg_map_fini(&g->idx);
	for (size_t i = 0; i < g->nbq; i++)
		free(g->bq[i].msg);
	free(g->bq);
	dg_buf_fini(&g->pkt);
	dg_buf_fini(&g->one);
	dg_buf_fini(&g->sealed);
	free(g);
}

int dg_gossip_join(dg_gossip *g, const char *addr, uint16_t port, uint64_t now)
{
	send_pushpull(g, addr, port, DG_GOSSIP_PP_JOIN, false);
	return 0;
}

int dg_gossip_leave(dg_gossip *g, uint64_t now)
{
	struct member *s = g->self;
	if (s->pub.status != DG_GOSSIP_ALIVE_ST)
		return 0;
	set_status(g, s, DG_GOSSIP_LEAVING, now);
	broadcast_state(g, DG_GOSSIP_LEAVE, s->pub.name, s->pub.incarnation, NULL);
	g->probe.active = false;
	gossip(g, now);
	return 0;
}

bool dg_gossip_leave_done(const dg_gossip *g)
{
	return g->self->pub.status == DG_GOSSIP_LEFT;
}

int dg_gossip_force_leave(dg_gossip *g, const char *name, uint64_t now)
{
	struct member *m = find(g, name);
	if (!m)
		return DG_ENOTFOUND;
	if (m->pub.status != DG_GOSSIP_FAILED)
		return DG_EINVAL;
	on_gone(g, m->pub.name, m->pub.incarnation, g->self->pub.name, true, now);
	return 0;
}

int dg_gossip_set_tags(dg_gossip *g, const struct dg_gossip_tag *tags, size_t ntags)
{
	struct member *s = g->self;
	struct dg_gossip_msg a = {.type = DG_GOSSIP_ALIVE};
	int rv;
	if (ntags && !tags)
		return DG_EINVAL;
	node_of(s, &a.node);
	a.node.tags = tags;
	a.node.ntags = ntags;
	g->one.len = 0;
	if (dg_gossip_msg_encode(&g->one, &a) != 0)
		return DG_EINVAL;
	if ((rv = set_tags(&s->pub, tags, ntags)) != 0)
		return rv;
	s->pub.incarnation++;
	broadcast_alive(g, s);
	return 0;
}

size_t dg_gossip_count(const dg_gossip *g)
{
	return g->n;
}

const struct dg_gossip_member *dg_gossip_member_at(const dg_gossip *g, size_t i)
{
	return i < g->n ? &g->v[i]->pub : NULL;
}

const struct dg_gossip_member *dg_gossip_find(const dg_gossip *g, const char *name)
{
	struct member *m = find(g, name);
	return m ? &m->pub : NULL;
}

const struct dg_gossip_member *dg_gossip_self(const dg_gossip *g)
{
	return &g->self->pub;
}

size_t dg_gossip_alive(const dg_gossip *g)
{
	size_t c = 0;
	for (size_t i = 0; i < g->n; i++)
		c += is_alive(g->v[i]);
	return c;
}

const struct dg_gossip_stats *dg_gossip_stats(const dg_gossip *g)
{
	return &g->stats;
}
