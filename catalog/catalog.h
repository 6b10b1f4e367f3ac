/* catalog: the state store of one datacenter: nodes, services, checks, KV, sessions, with the raft
 * index of every change. Pure data: no threads of its own, no sockets, no clocks it does not get
 * passed in.
 *
 * Threads: one writer (the loop thread, through the raft FSM) and many readers (HTTP threads).
 * dg_cat_wrlock()/dg_cat_rdlock() guard every call below; functions named *_locked expect the
 * caller to hold the right lock, all others take it themselves. Pointers returned by lookups are
 * valid only while the read lock is held. */
#ifndef DG_CATALOG_H
#define DG_CATALOG_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

typedef struct dg_catalog dg_catalog;

struct dg_cat_node {
	char *name;
	char *id;
	char *address;
	json_t *tagged;   /* object str->str, never NULL */
	json_t *meta;     /* object str->str, never NULL */
	uint64_t create_index, modify_index;
};

struct dg_cat_service {
	char *node;
	char *id;
	char *name;
	char *kind;
	json_t *tags;   /* array of strings, never NULL */
	char *address;
	json_t *tagged; /* object name->{Address,Port}, never NULL */
	json_t *meta;   /* object, never NULL */
	int port;
	int weight_passing, weight_warning;
	bool enable_tag_override;
	bool agent; /* registered through this agent's /v1/agent API */
	uint64_t create_index, modify_index;
};

struct dg_cat_check {
	char *node;
	char *id;
	char *name;
	char *status; /* passing | warning | critical */
	char *notes;
	char *output;
	char *service_id;   /* "" for node checks */
	char *service_name; /* "" for node checks */
	char *type;         /* tcp | http | ttl | "" */
	json_t *definition; /* object as in Consul's HealthCheck.Definition, never NULL */
	bool agent;         /* run by this agent (the Definition says how) */
	uint64_t create_index, modify_index;
};

struct dg_cat_kv {
	char *key;
	uint8_t *value; /* NULL when empty */
	size_t value_len;
	uint64_t flags;
	uint64_t lock_index;
	char *session; /* NULL when unlocked */
	uint64_t create_index, modify_index;
	/* Raft snapshots being written that still hold this entry (dg_cat_snapshot_begin): an
	 * entry in the table is never changed, only replaced, and a replaced one is freed once the
	 * last of them lets go. Changed under the write lock only. */
	unsigned pins;
};

struct dg_cat_session {
	char *id;
	char *name;
	char *node;
	int64_t lock_delay_ns;
	char *behavior; /* release | delete */
	char *ttl;      /* "" or a Go duration */
	json_t *node_checks;    /* array of check IDs */
	json_t *service_checks; /* array of {ID} or null */
	uint64_t create_index, modify_index;
};

/* What a blocking query can wait on. A change names its topic and, where it has one, a key. */
enum dg_cat_topic {
	DG_TOPIC_NODES = 1 << 0,    /* node list and node fields; key = node name */
	DG_TOPIC_SERVICES = 1 << 1, /* the service-name list; no key */
	DG_TOPIC_SERVICE = 1 << 2,  /* instances of one service name (+ their checks, node); key = name */
	DG_TOPIC_CHECKS = 1 << 3,   /* any check; key = node name */
	DG_TOPIC_KV = 1 << 4,       /* key = KV key */
	DG_TOPIC_SESSIONS = 1 << 5, /* key = session id */
};

struct dg_cat_change {
	enum dg_cat_topic topic;
	char *key; /* may be NULL */
	uint64_t index;
};

/* Creates an empty catalog for datacenter dc. Returns NULL on allocation failure. */
dg_catalog *dg_cat_new(const char *dc);
void dg_cat_free(dg_catalog *c);
const char *dg_cat_dc(const dg_catalog *c);

void dg_cat_rdlock(dg_catalog *c);
void dg_cat_wrlock(dg_catalog *c);
void dg_cat_unlock(dg_catalog *c);

/* Highest index applied so far (at least 1). Lock not needed. */
uint64_t dg_cat_last_index(dg_catalog *c);

/* ---- the write side: one command, as JSON, applied at one raft index ----
 * Commands are built by dg_cmd_* in command.c and applied by dg_cat_apply(). The result object
 * (owned by the caller, may be NULL) carries what the HTTP layer answers:
 *   {"Ok":bool} for KV/CAS style writes, {"Error":"text","Status":code} on failure,
 *   {"Results":[...]} / {"Errors":[...]} for txn, {"ID":...} for sessions.
 * Ops: register, deregister, check_update, kv, txn, session_create, session_destroy, noop and
 * restore (dg_cmd_restore: the whole state at once).
 * now_ns is the leader's wall clock at proposal, carried inside the command, so replay is exact. */
int dg_cat_apply(dg_catalog *c, uint64_t index, const char *cmd, size_t len, json_t **result);

/* Takes the changes recorded since the last call (caller frees with dg_cat_changes_free). Call
 * it after dg_cat_apply and notify watchers after unlocking. */
struct dg_cat_change *dg_cat_take_changes(dg_catalog *c, size_t *n);
void dg_cat_changes_free(struct dg_cat_change *v, size_t n);

/* ---- snapshot: the whole state as one JSON text, for raft snapshots and /v1/snapshot ---- */
/* Returns a malloc'd buffer; caller frees. Takes the read lock itself. */
char *dg_cat_snapshot(dg_catalog *c, size_t *len);
/* The same, and the index the state was taken at in *index (the "Index" inside the text). */
char *dg_cat_snapshot_index(dg_catalog *c, size_t *len, uint64_t *index);
/* A raft snapshot in two steps, so that the long part runs off the loop (libraft's asynchronous
 * snapshots): begin (write lock, taken here) captures the state: every table but the KV store
 * as text, and the KV entries themselves, pinned (a write that replaces one leaves the pinned
 * one alive); text (any thread, no lock) writes the KV entries after the rest, the same text
 * dg_cat_snapshot gives; end (write lock, taken here) lets the entries go and frees f. */
struct dg_cat_frozen;
struct dg_cat_frozen *dg_cat_snapshot_begin(dg_catalog *c);
char *dg_cat_snapshot_text(const struct dg_cat_frozen *f, size_t *len);
void dg_cat_snapshot_end(dg_catalog *c, struct dg_cat_frozen *f);
/* Replaces the whole state (raft's snapshot install, at start or from the leader). The text is
 * loaded into a private catalog first and swapped in whole, so a bad one changes nothing.
 * Takes the write lock itself. Returns 0, DG_EINVAL or DG_ENOMEM. */
int dg_cat_restore(dg_catalog *c, const char *buf, size_t len);

/* What a state holds, for `snapshot inspect` and logs. */
struct dg_cat_state_info {
	uint64_t index; /* the "Index" it was taken at */
	size_t nodes, services, checks, kv, tombstones, sessions;
};
/* Checks that state (a parsed dg_cat_snapshot() text; borrowed) is one dg_cat_restore() and the
 * "restore" command accept: the shape and types of every table, no duplicate nodes, services,
 * checks, keys or sessions, valid base64 values, indexes in range. It is loaded into a throwaway
 * catalog, so this costs about what the restore does. Returns 0 (info filled when not NULL), or
 * DG_EINVAL with the reason in why, or DG_ENOMEM. Any thread; touches no catalog. */
int dg_cat_state_check(json_t *state, struct dg_cat_state_info *info, char *why, size_t len);
/* The "restore" command: replaces the whole state with state through raft. state is referenced,
 * not copied (the caller keeps its own reference); NULL when out of memory. Applied, the new state
 * gets one index, above both the current one and every index inside state, which becomes every
 * table's index and the floor of every per-key index (a blocking query never sees its index go
 * backwards); every blocking query is woken. Check state with dg_cat_state_check() first: one
 * that does not load is refused at apply time and nothing changes. */
json_t *dg_cmd_restore(json_t *state);
/* The same restore as commands that each stay near part_bytes: "restore_begin" (the state with
 * its Nodes, KV and Sessions arrays empty), "restore_part"s carrying those arrays in slices, and
 * "restore_end", which applies the gathered state as "restore" does. id names the restore (its
 * parts must come in order, with nothing of another restore between); a JSON array of commands,
 * or NULL when out of memory. state is borrowed. */
json_t *dg_cmd_restore_parts(json_t *state, const char *id, size_t part_bytes);
/* True while a restore in parts is gathered (begun, not ended or aborted); *since_ms: when its
 * last part came (this server's clock). Takes the read lock. */
bool dg_cat_restore_staged(dg_catalog *c, uint64_t *since_ms);

/* ---- reads (hold the read lock) ---- */
/* {"Services":[..],"Checks":[..]} of one node, as "register" with SyncNode takes them (no
 * indexes, no serfHealth); empty arrays for an unknown node. A new object. */
json_t *dg_cat_node_state_locked(dg_catalog *c, const char *node);
typedef int (*dg_cat_node_cb)(void *arg, const struct dg_cat_node *n);
typedef int (*dg_cat_service_cb)(void *arg, const struct dg_cat_service *s);
typedef int (*dg_cat_check_cb)(void *arg, const struct dg_cat_check *ch);
typedef int (*dg_cat_kv_cb)(void *arg, const struct dg_cat_kv *e);
typedef int (*dg_cat_session_cb)(void *arg, const struct dg_cat_session *s);

const struct dg_cat_node *dg_cat_node_find_locked(dg_catalog *c, const char *name);
/* Nodes sorted by name. A callback returning non-zero stops the walk and is returned. */
int dg_cat_nodes_walk_locked(dg_catalog *c, dg_cat_node_cb cb, void *arg);
/* Services of one node, sorted by ID. */
int dg_cat_node_services_walk_locked(dg_catalog *c, const char *node, dg_cat_service_cb cb,
				     void *arg);
/* Checks of one node (node checks and service checks), sorted by check ID. */
int dg_cat_node_checks_walk_locked(dg_catalog *c, const char *node, dg_cat_check_cb cb, void *arg);
/* Instances of one service name (case-insensitive), sorted by node then ID. */
int dg_cat_service_walk_locked(dg_catalog *c, const char *name, dg_cat_service_cb cb, void *arg);
/* Every service instance, sorted by node then ID. */
int dg_cat_services_all_walk_locked(dg_catalog *c, dg_cat_service_cb cb, void *arg);
const struct dg_cat_service *dg_cat_service_find_locked(dg_catalog *c, const char *node,
							const char *id);
const struct dg_cat_check *dg_cat_check_find_locked(dg_catalog *c, const char *node,
						    const char *id);
/* Every check in the catalog, sorted by node then check ID. */
int dg_cat_checks_walk_locked(dg_catalog *c, dg_cat_check_cb cb, void *arg);

const struct dg_cat_kv *dg_cat_kv_find_locked(dg_catalog *c, const char *key);
/* Entries whose key starts with prefix (plain string prefix), sorted by key. */
int dg_cat_kv_walk_locked(dg_catalog *c, const char *prefix, dg_cat_kv_cb cb, void *arg);
size_t dg_cat_kv_count_locked(dg_catalog *c);

const struct dg_cat_session *dg_cat_session_find_locked(dg_catalog *c, const char *id);
int dg_cat_sessions_walk_locked(dg_catalog *c, dg_cat_session_cb cb, void *arg);

/* Indexes for X-Consul-Index (hold the read lock); never 0. */
uint64_t dg_cat_index_nodes_locked(dg_catalog *c);
uint64_t dg_cat_index_services_locked(dg_catalog *c);
uint64_t dg_cat_index_checks_locked(dg_catalog *c);
uint64_t dg_cat_index_sessions_locked(dg_catalog *c);
/* Last change to the instances of this service name, their checks or their nodes. */
uint64_t dg_cat_index_service_locked(dg_catalog *c, const char *name);
/* Highest ModifyIndex or tombstone index at key (prefix=false) or under it (prefix=true);
 * the KV table's index when nothing matches. */
uint64_t dg_cat_index_kv_locked(dg_catalog *c, const char *key, bool prefix);

/* ---- command builders (command.c): each returns a JSON object the caller owns ---- */
/* A KV verb as in /v1/txn: set cas lock unlock delete delete-tree delete-cas (+ reads in txn). */
json_t *dg_cmd_kv(const char *verb, const char *key, const uint8_t *value, size_t len,
		  uint64_t flags, uint64_t index, const char *session);

/* Aggregated status of a set of checks, Consul's rules. */
const char *dg_cat_aggregate_status(json_t *checks);

#endif
