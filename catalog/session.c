/* Sessions: creation with their health-check bindings, and invalidation (destroy, a bound check
 * going critical, the node leaving) with the release-or-delete of every lock they hold and the
 * lock-delay that follows. TTL expiry is decided by the leader's timers (lan/), which then
 * propose a session_destroy like any other write. */
#include "catalog/internal.h"

#include <stdlib.h>
#include <string.h>

void dg__cat_session_free(struct dg_cat_session *s)
{
	if (!s)
		return;
	free(s->id);
	free(s->name);
	free(s->node);
	free(s->behavior);
	free(s->ttl);
	json_decref(s->node_checks);
	json_decref(s->service_checks);
	free(s);
}

const struct dg_cat_session *dg_cat_session_find_locked(dg_catalog *c, const char *id)
{
	return dg_map_find(&c->sessions, id);
}

int dg_cat_sessions_walk_locked(dg_catalog *c, dg_cat_session_cb cb, void *arg)
{
	int rv;
	for (size_t i = 0; i < c->sessions.n; i++)
		if ((rv = cb(arg, c->sessions.v[i].value)) != 0)
			return rv;
	return 0;
}

/* {"Op":"session_create","Session":{ID,Name,Node,LockDelay(ns),Behavior,TTL,NodeChecks,
 * ServiceChecks}}: the node must exist and every bound check must exist and not be critical. */
int dg__cat_session_create(dg_catalog *c, json_t *cmd, json_t **result)
{
	json_t *js = json_object_get(cmd, "Session");
	const char *node = dg__js(js, "Node");
	struct node_rec *n = dg__cat_node_rec(c, node);
	char *err = NULL;
	int n_err = 0;
	if (!n) {
		n_err = asprintf(&err, "Missing node registration");
		goto fail;
	}
	if (dg_map_find(&c->sessions, dg__js(js, "ID")) || !*dg__js(js, "ID")) {
		n_err = asprintf(&err, "Session ID '%s' is empty or already in use",
				 dg__js(js, "ID"));
		goto fail;
	}
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(js, "NodeChecks"), i, v)
	{
		const char *cid = json_string_value(v);
		struct dg_cat_check *ch = cid ? dg_map_find(&n->checks, cid) : NULL;
		if (!ch) {
			n_err = asprintf(&err, "Missing check '%s' registration", cid ? cid : "");
			goto fail;
		}
		if (strcmp(ch->status, "critical") == 0) {
			n_err = asprintf(&err, "Check '%s' is in critical state", cid);
			goto fail;
		}
	}
	json_array_foreach(json_object_get(js, "ServiceChecks"), i, v)
	{
		const char *cid = dg__js(v, "ID");
		struct dg_cat_check *ch = dg_map_find(&n->checks, cid);
		if (!ch) {
			n_err = asprintf(&err, "Missing check '%s' registration", cid);
			goto fail;
		}
		if (strcmp(ch->status, "critical") == 0) {
			n_err = asprintf(&err, "Check '%s' is in critical state", cid);
			goto fail;
		}
	}
	struct dg_cat_session *s = calloc(1, sizeof(*s));
	if (!s)
		return DG_ENOMEM;
	s->id = dg__jsdup(js, "ID");
	s->name = dg__jsdup(js, "Name");
	s->node = strdup(n->pub.name);
	s->lock_delay_ns = dg__ji64(js, "LockDelay");
	s->behavior = strdup(*dg__js(js, "Behavior") ? dg__js(js, "Behavior") : "release");
	s->ttl = dg__jsdup(js, "TTL");
	s->node_checks = dg__jarr(js, "NodeChecks");
	json_t *sc = json_object_get(js, "ServiceChecks");
	s->service_checks = json_is_array(sc) && json_array_size(sc) ? json_incref(sc) : json_null();
	s->create_index = s->modify_index = c->cur_index;
	if (!s->id || !s->name || !s->node || !s->behavior || !s->ttl ||
	    dg_map_put(&c->sessions, s->id, s, NULL) != 0) {
		dg__cat_session_free(s);
		return DG_ENOMEM;
	}
	c->idx_sessions = c->cur_index;
	dg__cat_change(c, DG_TOPIC_SESSIONS, s->id);
	*result = json_pack("{s:s}", "ID", s->id);
	return 0;
fail:
	*result = json_pack("{s:s, s:i}", "Error", n_err >= 0 && err ? err : "session error",
			    "Status", 500);
	free(err);
	return DG_EINVAL;
}

void dg__cat_session_destroy(dg_catalog *c, const char *id)
{
	struct dg_cat_session *s = dg_map_del(&c->sessions, id);
	if (!s)
		return;
	bool del = strcmp(s->behavior, "delete") == 0;
	int64_t delay_ms = s->lock_delay_ns / 1000000;
	/* every key this session holds: release or delete, then lock-delay */
	struct dg_omap_it it;
	for (dg_omap_first(&c->kv, &it); dg_omap_valid(&it);) {
		struct dg_cat_kv *e = dg_omap_value(&it);
		if (!e->session || strcmp(e->session, id) != 0) {
			dg_omap_next(&it);
			continue;
		}
		char *key = strdup(e->key);
		if (!key) {
			dg_omap_next(&it);
			continue;
		}
		if (del) {
			dg__cat_kv_free(dg_omap_del(&c->kv, key));
			dg_omap_put(&c->tombstones, key, (void *)(uintptr_t)c->cur_index, NULL);
			dg_omap_seek(&c->kv, key, &it); /* the delete moved entries: on from the next key */
		} else {
			/* replaced, not changed: a raft snapshot being written may hold e */
			struct dg_cat_kv *n = dg__cat_kv_clone(e);
			if (n) {
				free(n->session);
				n->session = NULL;
				n->modify_index = c->cur_index;
				dg_omap_put(&c->kv, key, n, NULL);
				dg__cat_kv_free(e);
			}
			dg_omap_seek(&c->kv, key, &it);
			dg_omap_next(&it);
		}
		if (delay_ms > 0)
			dg_map_put(&c->lock_delay, key,
				   (void *)(uintptr_t)(c->cur_now_ns / 1000000 + delay_ms), NULL);
		c->idx_kv = c->cur_index;
		dg__cat_change(c, DG_TOPIC_KV, key);
		free(key);
	}
	/* expired lock-delays go now, so the table holds only the delays still running */
	for (size_t i = 0; i < c->lock_delay.n;) {
		if ((int64_t)(uintptr_t)c->lock_delay.v[i].value <= c->cur_now_ns / 1000000)
			dg_map_del(&c->lock_delay, c->lock_delay.v[i].key);
		else
			i++;
	}
	c->idx_sessions = c->cur_index;
	dg__cat_change(c, DG_TOPIC_SESSIONS, id);
	dg__cat_session_free(s);
}

static bool session_uses_check(const struct dg_cat_session *s, const char *check_id)
{
	size_t i;
	json_t *v;
	json_array_foreach(s->node_checks, i, v)
	{
		if (json_is_string(v) && strcmp(json_string_value(v), check_id) == 0)
			return true;
	}
	json_array_foreach(s->service_checks, i, v)
	{
		if (strcmp(dg__js(v, "ID"), check_id) == 0)
			return true;
	}
	return false;
}

void dg__cat_sessions_check_critical(dg_catalog *c, const char *node, const char *check_id)
{
	for (size_t i = 0; i < c->sessions.n;) {
		struct dg_cat_session *s = c->sessions.v[i].value;
		if (strcasecmp(s->node, node) == 0 && session_uses_check(s, check_id)) {
			char *id = strdup(s->id);
			if (!id)
				return;
			dg__cat_session_destroy(c, id);
			free(id);
			continue; /* the array shifted */
		}
		i++;
	}
}

void dg__cat_sessions_node_gone(dg_catalog *c, const char *node)
{
	for (size_t i = 0; i < c->sessions.n;) {
		struct dg_cat_session *s = c->sessions.v[i].value;
		if (strcasecmp(s->node, node) == 0) {
			char *id = strdup(s->id);
			if (!id)
				return;
			dg__cat_session_destroy(c, id);
			free(id);
			continue;
		}
		i++;
	}
}
