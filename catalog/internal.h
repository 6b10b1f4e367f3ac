/* Internal layout of the catalog, shared by the files of catalog/ only. */
#ifndef DG_CATALOG_INTERNAL_H
#define DG_CATALOG_INTERNAL_H

#include <pthread.h>

#include "catalog/catalog.h"

struct node_rec {
	struct dg_cat_node pub;
	struct dg_map services; /* id -> struct dg_cat_service* */
	struct dg_map checks;   /* id -> struct dg_cat_check* */
};

/* All instances of one service name, and the index of the last change that touched them. The
 * record outlives its instances so that the index never goes backwards. */
struct name_rec {
	char *name;
	uint64_t index;
	struct dg_map inst; /* "<node lowercased>\x1f<id>" -> struct dg_cat_service* */
};

struct dg_catalog {
	pthread_rwlock_t lock;
	char *dc;
	uint64_t last_index; /* written under the write lock; read atomically */
	uint64_t idx_nodes, idx_services, idx_checks, idx_kv, idx_sessions;
	/* the index of the last "restore" command: no index the catalog reports is below it, so a
	 * state restored with older ModifyIndexes still moves every blocking query forward */
	uint64_t idx_floor;
	struct dg_map nodes;      /* nocase name -> struct node_rec* */
	struct dg_map names;      /* nocase service name -> struct name_rec* */
	struct dg_omap kv;        /* key -> struct dg_cat_kv* */
	struct dg_omap tombstones; /* key -> (uintptr_t) index of its deletion */
	struct dg_map sessions;   /* id -> struct dg_cat_session* */
	struct dg_map lock_delay; /* key -> (uintptr_t) wall ms until which acquire is refused */
	/* changes recorded by the current apply, drained by dg_cat_take_changes() */
	struct dg_cat_change *changes;
	size_t nchanges, capchanges;
	/* set while applying */
	uint64_t cur_index;
	int64_t cur_now_ns;
	/* a restore sent in parts (snapshot.c, "restore_begin"/"_part"/"_end"): the state
	 * gathered so far and its ID; NULL when none. Not in raft snapshots: none is taken while
	 * one is staged (dg_cat_restore_staged). staged_ms: when it last grew (this server's clock,
	 * for the leader's abandoned-restore check only, never for what is applied). */
	json_t *staged;
	char staged_id[64];
	uint64_t staged_ms;
};

void dg__cat_change(dg_catalog *c, enum dg_cat_topic topic, const char *key);
struct node_rec *dg__cat_node_rec(dg_catalog *c, const char *name);

void dg__cat_service_free(struct dg_cat_service *s);
void dg__cat_check_free(struct dg_cat_check *ch);
void dg__cat_node_free(struct node_rec *n);
void dg__cat_clear_tables(dg_catalog *c);
struct dg_cat_service *dg__cat_service_from_json(const char *node, json_t *js);
struct dg_cat_check *dg__cat_check_from_json(const char *node, json_t *jc, const char *status,
					     const char *service_name);
/* Lists s under its name (the name's index is bumped to the current index). */
int dg__cat_name_link(dg_catalog *c, struct dg_cat_service *s);

/* snapshot.c: the "restore" command (the whole state in cmd's "State"). */
int dg__cat_restore_apply(dg_catalog *c, json_t *cmd, char **err);
/* snapshot.c: a restore in parts: "restore_begin", "restore_part", "restore_end",
 * "restore_abort" (op names it). */
int dg__cat_restore_staged_apply(dg_catalog *c, const char *op, json_t *cmd, char **err);

/* kv.c */
json_t *dg__cat_kv_apply(dg_catalog *c, json_t *op, bool *ok, char **err);
void dg__cat_kv_free(struct dg_cat_kv *e);
/* A copy of e (NULL when out of memory), unpinned. */
struct dg_cat_kv *dg__cat_kv_clone(const struct dg_cat_kv *e);
json_t *dg__cat_kv_json(const struct dg_cat_kv *e, bool with_value);
int dg__cat_kv_write(struct dg_buf *b, const struct dg_cat_kv *e);
int dg__cat_txn_apply(dg_catalog *c, json_t *cmd, json_t **result);

/* session.c */
int dg__cat_session_create(dg_catalog *c, json_t *cmd, json_t **result);
void dg__cat_session_destroy(dg_catalog *c, const char *id);
void dg__cat_session_free(struct dg_cat_session *s);
/* Invalidates sessions that depend on a check that just went critical, or on a node. */
void dg__cat_sessions_check_critical(dg_catalog *c, const char *node, const char *check_id);
void dg__cat_sessions_node_gone(dg_catalog *c, const char *node);

/* json helpers */
const char *dg__js(json_t *o, const char *key); /* "" when absent or not a string */
char *dg__jsdup(json_t *o, const char *key);    /* strdup of dg__js */
json_t *dg__jobj(json_t *o, const char *key);   /* new reference; {} when absent */
json_t *dg__jarr(json_t *o, const char *key);   /* new reference; [] when absent */
uint64_t dg__ju64(json_t *o, const char *key);
int64_t dg__ji64(json_t *o, const char *key);

#endif
