/* lan/gossip.h: LAN membership, SWIM-style (as HashiCorp's memberlist and serf do it): random
 * round-robin probes, indirect probes, suspicion, refutation by incarnation, dissemination
 * piggybacked on pings and acks (and sent on its own to a few members every gossip interval),
 * periodic full-state push-pull, graceful leave, reaping.
 *
 * Pure: no sockets, no threads, no clock of its own. The caller (the agent's libuv loop, or a
 * simulated network in tests) feeds received packets with dg_gossip_recv, calls dg_gossip_tick
 * with the current time, and sends what comes out of the send callback. Every function must be
 * called from one thread (the owner's); callbacks run inside those calls, on that thread, and
 * must not call back into the same dg_gossip. Wire format: gossip_msg.h; docs/gossip.md. */
#ifndef DG_GOSSIP_H
#define DG_GOSSIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lan/gossip_msg.h"

typedef struct dg_gossip dg_gossip;

/* A member as this instance sees it. Owned by the dg_gossip; valid until the next call into it
 * (a reap or a merge may free it). */
struct dg_gossip_member {
	char name[DG_GOSSIP_NAME_MAX + 1];
	char addr[DG_GOSSIP_ADDR_MAX + 1];
	uint16_t port;
	int status;       /* enum dg_gossip_status: 1 alive, 2 leaving, 3 left, 4 failed */
	bool suspect;     /* alive but suspected (serf shows it as alive) */
	uint32_t incarnation;
	size_t ntags;
	struct dg_gossip_tag *tags; /* strings owned by the member */
	uint64_t changed_ms; /* when status last changed */
};

/* An outgoing packet: send data[0..len) to addr:port, over tcp when stream (a PUSHPULL), else
 * udp. reply: a tcp answer to the stream packet being handled by the current dg_gossip_recv;
 * addr and port are those the caller passed in, and the adapter writes the answer back on that
 * connection. data is valid only during the call. */
struct dg_gossip_out {
	const char *addr;
	uint16_t port;
	const uint8_t *data;
	size_t len;
	bool stream;
	bool reply;
};
typedef void (*dg_gossip_send_cb)(void *arg, const struct dg_gossip_out *pkt);
/* A member's status changed: old is the previous status (DG_GOSSIP_NONE for a new member),
 * m->status the new one; a reaped member comes once more with m->status DG_GOSSIP_NONE just
 * before it is freed. Also called for this node itself (join, leave). */
typedef void (*dg_gossip_change_cb)(void *arg, const struct dg_gossip_member *m, int old);

/* Parameters; 0 in any number means its default (memberlist's LAN profile). */
struct dg_gossip_config {
	const char *name; /* this node, 1..DG_GOSSIP_NAME_MAX bytes; required */
	const char *addr; /* the address others reach it on; required, no DNS */
	uint16_t port;    /* 8301 */
	const struct dg_gossip_tag *tags; /* copied; role, dc, id, vsn, build, port, ... */
	size_t ntags;
	uint32_t probe_interval_ms;    /* 1000: one probe per interval */
	uint32_t probe_timeout_ms;     /* 500: then indirect probes */
	uint32_t indirect_checks;      /* 3: members asked to probe indirectly */
	uint32_t suspicion_mult;       /* 4: an unconfirmed suspicion lasts max =
					* mult * max(1, log10(n+1)) * probe interval */
	uint32_t suspicion_max_ms;     /* 60000: the bound on that max */
	uint32_t suspicion_min_div;    /* 3: independent confirmations shorten it down to
					* min = max / this (memberlist's SuspicionMaxTimeoutMult,
					* anchored on max; docs/gossip.md) */
	uint32_t retransmit_mult;      /* 4: each update sent mult * ceil(log10(n+1)) times */
	uint32_t pushpull_interval_ms; /* 30000: full-state exchange with a random member */
	uint32_t gossip_interval_ms;   /* 200: queued updates sent on their own, ... */
	uint32_t gossip_nodes;         /* 3: ... to this many random members */
	uint64_t reap_ms;              /* 72 h: failed and left members forgotten after */
	uint64_t seed;                 /* random choices; 0 derives one from name and addr */
	const uint8_t *key; /* DG_GOSSIP_KEY_LEN bytes (copied) to encrypt; NULL for plaintext */
	dg_gossip_send_cb send;     /* required */
	dg_gossip_change_cb change; /* may be NULL */
	void *arg;                  /* for both callbacks */
};

/* Counters for /v1/agent/self and logs; bad and unauthenticated packets are dropped here. */
struct dg_gossip_stats {
	uint64_t rx_packets, rx_bad, rx_auth_failed, rx_ignored;
	uint64_t tx_packets, tx_bytes;
	uint64_t probes, indirect_probes, suspects, failures, refutes, pushpulls;
	uint64_t confirmations; /* a suspect member suspected by one more member: timer shortened */
	size_t broadcasts_queued; /* updates waiting to be piggybacked */
	size_t broadcasts_max;    /* the most ever queued at once */
};

/* Creates an instance that knows only itself (alive). now_ms is the caller's clock (any
 * monotonic millisecond count). *out is the caller's until dg_gossip_free. 0, DG_EINVAL (a bad
 * name, address, port, tags over the limits, no send callback) with the reason in err, or
 * DG_ENOMEM. */
int dg_gossip_new(const struct dg_gossip_config *cfg, uint64_t now_ms, dg_gossip **out,
		  char *err, size_t errlen);
/* Frees everything; NULL is fine. Sends nothing: call dg_gossip_leave first for a graceful
 * exit. */
void dg_gossip_free(dg_gossip *g);

/* Joins through a seed: a join push-pull to addr:port (stream); the seed's answer fills in
 * every member. May be called again (retry-join, several seeds). 0 or DG_ENOMEM. */
int dg_gossip_join(dg_gossip *g, const char *addr, uint16_t port, uint64_t now_ms);
/* Runs the timers due at now_ms: probes, indirect probes, suspicion timeouts, push-pull,
 * reaping. Call it at least every probe_timeout/5 or so (the agent: a 50 ms libuv timer, or
 * at dg_gossip_next_ms). */
void dg_gossip_tick(dg_gossip *g, uint64_t now_ms);
/* Handles one received packet from addr:port (stream: it came over tcp). 0; DG_EPERM when it
 * fails decryption or is plaintext while a key is set; DG_EINVAL / DG_ETOOBIG when it does not
 * decode. Bad packets are counted and change nothing. */
int dg_gossip_recv(dg_gossip *g, const char *addr, uint16_t port, const void *buf, size_t len,
		   bool stream, uint64_t now_ms);
/* The next time dg_gossip_tick has work to do. */
uint64_t dg_gossip_next_ms(const dg_gossip *g);

/* Graceful leave: this node becomes "leaving", announces LEAVE (others mark it left) and
 * stops probing. Keep calling tick and recv until dg_gossip_leave_done (or a timeout), then
 * free. */
int dg_gossip_leave(dg_gossip *g, uint64_t now_ms);
bool dg_gossip_leave_done(const dg_gossip *g);
/* Consul's force-leave: a failed member becomes left (and is reaped on the left schedule).
 * DG_ENOTFOUND when not known, DG_EINVAL when not failed. */
int dg_gossip_force_leave(dg_gossip *g, const char *name, uint64_t now_ms);

/* Replaces this node's tags (copied) and announces them with a higher incarnation, as serf's
 * SetTags does. 0, DG_EINVAL (over the limits; nothing changes) or DG_ENOMEM. */
int dg_gossip_set_tags(dg_gossip *g, const struct dg_gossip_tag *tags, size_t ntags);

/* Members, this node included, in no particular order; valid until the next call that may
 * change the table (recv, tick, join, leave). */
size_t dg_gossip_count(const dg_gossip *g);
const struct dg_gossip_member *dg_gossip_member_at(const dg_gossip *g, size_t i);
/* NULL when absent. */
const struct dg_gossip_member *dg_gossip_find(const dg_gossip *g, const char *name);
const struct dg_gossip_member *dg_gossip_self(const dg_gossip *g);
/* Members alive (suspects included). */
size_t dg_gossip_alive(const dg_gossip *g);
const struct dg_gossip_stats *dg_gossip_stats(const dg_gossip *g);
/* The suspicion timeouts for the current number of members (for tests and logs). A suspect
 * member is failed dg_gossip_suspicion_ms after this node suspected it unless confirmed: each
 * SUSPECT at the same incarnation from another member (up to indirect_checks of them) brings
 * that down towards dg_gossip_suspicion_min_ms = the first / suspicion_min_div. With fewer than
 * indirect_checks alive members besides this node and the suspect, it is always the first. */
uint64_t dg_gossip_suspicion_ms(const dg_gossip *g);
uint64_t dg_gossip_suspicion_min_ms(const dg_gossip *g);
/* How many times each update is sent for the current number of members. */
unsigned dg_gossip_retransmit_limit(const dg_gossip *g);

#endif
