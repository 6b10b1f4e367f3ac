/* The KV table: verbs of /v1/kv and /v1/txn, tombstones for blocking queries on deleted keys,
 * and transactions that roll back as a whole. */
#include "catalog/internal.h"

#include <stdlib.h>
#include <string.h>

void dg__cat_kv_free(struct dg_cat_kv *e)
{
	if (!e)
		return;
	if (e->pins > 0) { /* a snapshot being written still reads it: it frees it at its end */
		e->pins--;
		return;
	}
	free(e->key);
	free(e->value);
	free(e->session);
	free(e);
}

struct dg_cat_kv *dg__cat_kv_clone(const struct dg_cat_kv *e)
{
	struct dg_cat_kv *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	*n = *e;
	n->pins = 0;
	n->key = strdup(e->key);
	n->session = e->session ? strdup(e->session) : NULL;
	n->value = NULL;
	if (e->value_len) {
		n->value = malloc(e->value_len);
		if (n->value)
			memcpy(n->value, e->value, e->value_len);
	}
	if (!n->key || (e->session && !n->session) || (e->value_len && !n->value)) {
		dg__cat_kv_free(n);
		return NULL;
	}
	return n;
}

json_t *dg__cat_kv_json(const struct dg_cat_kv *e, bool with_value)
{
	json_t *o = json_object();
	json_object_set_new(o, "LockIndex", json_integer((json_int_t)e->lock_index));
	json_object_set_new(o, "Key", json_string(e->key));
	json_object_set_new(o, "Flags", json_integer((json_int_t)e->flags));
	if (with_value && e->value_len) {
		char *b = dg_base64_encode(e->value, e->value_len);
		json_object_set_new(o, "Value", b ? json_string(b) : json_null());
		free(b);
	} else {
		json_object_set_new(o, "Value", json_null());
	}
	if (e->session)
		json_object_set_new(o, "Session", json_string(e->session));
	json_object_set_new(o, "CreateIndex", json_integer((json_int_t)e->create_index));
	json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)e->modify_index));
	return o;
}

const struct dg_cat_kv *dg_cat_kv_find_locked(dg_catalog *c, const char *key)
{
	return dg_omap_find(&c->kv, key);
}

int dg_cat_kv_walk_locked(dg_catalog *c, const char *prefix, dg_cat_kv_cb cb, void *arg)
{
	int rv;
	struct dg_omap_it it;
	for (dg_omap_seek(&c->kv, prefix, &it); dg_omap_in_prefix(&it, prefix); dg_omap_next(&it)) {
		if ((rv = cb(arg, dg_omap_value(&it))) != 0)
			return rv;
	}
	return 0;
}

size_t dg_cat_kv_count_locked(dg_catalog *c)
{
	return dg_omap_size(&c->kv);
}

/* A per-key index as reported: never below the last restore's index (snapshot.c), whose state
 * keeps the ModifyIndexes it was saved with. */
static uint64_t above_floor(const dg_catalog *c, uint64_t v)
{
	return v > c->idx_floor ? v : c->idx_floor;
}

uint64_t dg_cat_index_kv_locked(dg_catalog *c, const char *key, bool prefix)
{
	uint64_t best = 0;
	if (!prefix) {
		struct dg_cat_kv *e = dg_omap_find(&c->kv, key);
		if (e)
			return above_floor(c, e->modify_index ? e->modify_index : 1);
		uintptr_t t = (uintptr_t)dg_omap_find(&c->tombstones, key);
		if (t)
			return above_floor(c, (uint64_t)t);
	} else {
		struct dg_omap_it it;
		for (dg_omap_seek(&c->kv, key, &it); dg_omap_in_prefix(&it, key); dg_omap_next(&it)) {
			struct dg_cat_kv *e = dg_omap_value(&it);
			if (e->modify_index > best)
				best = e->modify_index;
		}
		for (dg_omap_seek(&c->tombstones, key, &it); dg_omap_in_prefix(&it, key);
		     dg_omap_next(&it)) {
			uint64_t t = (uint64_t)(uintptr_t)dg_omap_value(&it);
			if (t > best)
				best = t;
		}
		if (best)
			return above_floor(c, best);
	}
	return above_floor(c, c->idx_kv ? c->idx_kv : 1);
}

/* ---- undo log, so that a failed transaction leaves no trace ---- */

struct undo {
	char *key;
	struct dg_cat_kv *prev; /* NULL: the key did not exist */
	uintptr_t prev_tomb;
};

struct undo_log {
	struct undo *v;
	size_t n, cap;
	bool active;
};

static struct undo_log *cur_undo; /* only the writer thread applies; set during a txn */

static void undo_record(dg_catalog *c, const char *key)
{
	struct undo_log *u = cur_undo;
	if (!u || !u->active)
		return;
	for (size_t i = 0; i < u->n; i++)
		if (strcmp(u->v[i].key, key) == 0)
			return; /* the first state is the one to restore */
	if (u->n == u->cap) {
		size_t cap = u->cap ? u->cap * 2 : 8;
		struct undo *v = realloc(u->v, cap * sizeof(*v));
		if (!v)
			return;
		u->v = v;
		u->cap = cap;
	}
	struct dg_cat_kv *e = dg_omap_find(&c->kv, key);
	u->v[u->n].key = strdup(key);
	u->v[u->n].prev = e ? dg__cat_kv_clone(e) : NULL;
	u->v[u->n].prev_tomb = (uintptr_t)dg_omap_find(&c->tombstones, key);
	u->n++;
}

static void undo_apply(dg_catalog *c, struct undo_log *u)
{
	for (size_t i = u->n; i-- > 0;) {
		struct undo *d = &u->v[i];
		dg__cat_kv_free(dg_omap_del(&c->kv, d->key));
		if (d->prev) {
			if (dg_omap_put(&c->kv, d->key, d->prev, NULL) != 0)
				dg__cat_kv_free(d->prev);
			d->prev = NULL;
		}
		dg_omap_del(&c->tombstones, d->key);
		if (d->prev_tomb)
			dg_omap_put(&c->tombstones, d->key, (void *)d->prev_tomb, NULL);
	}
}

static void undo_free(struct undo_log *u)
{
	for (size_t i = 0; i < u->n; i++) {
		free(u->v[i].key);
		dg__cat_kv_free(u->v[i].prev);
	}
	free(u->v);
}

/* ---- single verbs ---- */

static void kv_touched(dg_catalog *c, const char *key)
{
	c->idx_kv = c->cur_index;
	dg__cat_change(c, DG_TOPIC_KV, key);
}

static int kv_put(dg_catalog *c, const char *key, const uint8_t *val, size_t len, uint64_t flags,
		  const char *session, int lock_delta, bool clear_session)
{
	struct dg_cat_kv *old = dg_omap_find(&c->kv, key);
	struct dg_cat_kv *e = calloc(1, sizeof(*e));
	if (!e)
		return DG_ENOMEM;
	undo_record(c, key);
	e->key = strdup(key);
	if (len) {
		e->value = malloc(len);
		if (e->value)
			memcpy(e->value, val, len);
	}
	e->value_len = len;
	e->flags = flags;
	e->create_index = old ? old->create_index : c->cur_index;
	e->modify_index = c->cur_index;
	e->lock_index = (old ? old->lock_index : 0) + (uint64_t)lock_delta;
	if (session)
		e->session = strdup(session);
	else if (old && old->session && !clear_session)
		e->session = strdup(old->session);
	if (!e->key || (len && !e->value)) {
		dg__cat_kv_free(e);
		return DG_ENOMEM;
	}
	dg_omap_put(&c->kv, key, e, NULL);
	dg__cat_kv_free(old);
	dg_omap_del(&c->tombstones, key);
	kv_touched(c, key);
	return 0;
}

static void kv_delete(dg_catalog *c, const char *key)
{
	undo_record(c, key);
	struct dg_cat_kv *e = dg_omap_del(&c->kv, key);
	if (!e)
		return;
	dg__cat_kv_free(e);
	dg_omap_put(&c->tombstones, key, (void *)(uintptr_t)c->cur_index, NULL);
	kv_touched(c, key);
}

static bool lock_delayed(dg_catalog *c, const char *key)
{
	uintptr_t until_ms = (uintptr_t)dg_map_find(&c->lock_delay, key);
	return until_ms && (int64_t)until_ms > c->cur_now_ns / 1000000;
}

/* Applies one KV op ({"Verb","Key","Value"(base64),"Flags","Index","Session"}). *ok says whether
 * a conditional verb took effect; *err is set (malloc'd) when the op is invalid. Returns what a
 * txn result carries for this op (a DirEntry) or NULL. */
json_t *dg__cat_kv_apply(dg_catalog *c, json_t *op, bool *ok, char **err)
{
	const char *verb = dg__js(op, "Verb");
	const char *key = dg__js(op, "Key");
	const char *b64 = dg__js(op, "Value");
	uint64_t flags = dg__ju64(op, "Flags");
	uint64_t index = dg__ju64(op, "Index");
	const char *session = dg__js(op, "Session");
	uint8_t *val = NULL;
	size_t len = 0;
	struct dg_cat_kv *cur = dg_omap_find(&c->kv, key);
	*ok = false;
	*err = NULL;
	if (*b64 && dg_base64_decode(b64, strlen(b64), &val, &len) != 0) {
		*err = strdup("Value is not valid base64");
		return NULL;
	}
	int rv = 0;
	if (strcmp(verb, "set") == 0) {
		rv = kv_put(c, key, val, len, flags, NULL, 0, false);
		*ok = rv == 0;
	} else if (strcmp(verb, "cas") == 0) {
		if ((index == 0 && !cur) || (index != 0 && cur && cur->modify_index == index)) {
			rv = kv_put(c, key, val, len, flags, NULL, 0, false);
			*ok = rv == 0;
		} else if (json_is_true(json_object_get(op, "Txn"))) {
			if (asprintf(err, "failed to set key \"%s\", index is stale", key) < 0)
				*err = NULL;
		}
	} else if (strcmp(verb, "lock") == 0) {
		if (!dg_map_find(&c->sessions, session)) {
			if (asprintf(err, "invalid session \"%s\"", session) < 0)
				*err = NULL;
		} else if (cur && cur->session && strcmp(cur->session, session) == 0) {
			rv = kv_put(c, key, val, len, flags, session, 0, false);
			*ok = rv == 0;
		} else if ((cur && cur->session) || lock_delayed(c, key)) {
			*ok = false;
		} else {
			rv = kv_put(c, key, val, len, flags, session, 1, false);
			*ok = rv == 0;
		}
	} else if (strcmp(verb, "unlock") == 0) {
		if (cur && cur->session && strcmp(cur->session, session) == 0) {
			rv = kv_put(c, key, val, len, flags, NULL, 0, true);
			*ok = rv == 0;
		}
	} else if (strcmp(verb, "delete") == 0) {
		kv_delete(c, key);
		*ok = true;
	} else if (strcmp(verb, "delete-cas") == 0) {
		if (cur && index != 0 && cur->modify_index == index) {
			kv_delete(c, key);
			*ok = true;
		}
	} else if (strcmp(verb, "delete-tree") == 0) {
		struct dg_omap_it it;
		/* each delete moves entries: seek again from the prefix, where the next one now is */
		for (dg_omap_seek(&c->kv, key, &it); dg_omap_in_prefix(&it, key);
		     dg_omap_seek(&c->kv, key, &it)) {
			char *k = strdup(dg_omap_key(&it));
			if (!k)
				break;
			kv_delete(c, k);
			free(k);
		}
		*ok = true;
	} else if (strcmp(verb, "get") == 0 || strcmp(verb, "check-index") == 0 ||
		   strcmp(verb, "check-session") == 0 || strcmp(verb, "check-not-exists") == 0) {
		if (strcmp(verb, "get") == 0)
			*ok = cur != NULL;
		else if (strcmp(verb, "check-index") == 0)
			*ok = cur && cur->modify_index == index;
		else if (strcmp(verb, "check-session") == 0)
			*ok = cur && cur->session && strcmp(cur->session, session) == 0;
		else
			*ok = cur == NULL;
		if (!*ok) {
			int n = -1;
			if (strcmp(verb, "check-not-exists") == 0)
				n = asprintf(err, "key \"%s\" exists", key);
			else if (!cur)
				n = asprintf(err, "key \"%s\" doesn't exist", key);
			else if (strcmp(verb, "check-index") == 0)
				n = asprintf(err, "current modify index %llu != %llu",
					     (unsigned long long)cur->modify_index,
					     (unsigned long long)index);
			else
				n = asprintf(err, "current session %s != %s",
					     cur->session ? cur->session : "", session);
			if (n < 0)
				*err = NULL;
		}
	} else if (strcmp(verb, "get-tree") == 0) {
		*ok = true;
	} else {
		if (asprintf(err, "unknown KV verb \"%s\"", verb) < 0)
			*err = NULL;
	}
	free(val);
	if (rv != 0 && !*err)
		*err = strdup(dg_strerror(rv));
	if (*err || !*ok)
		return NULL;
	if (strcmp(verb, "get-tree") == 0) {
		json_t *arr = json_array();
		struct dg_omap_it it;
		for (dg_omap_seek(&c->kv, key, &it); dg_omap_in_prefix(&it, key); dg_omap_next(&it))
			json_array_append_new(arr, dg__cat_kv_json(dg_omap_value(&it), true));
		return arr;
	}
	if (strncmp(verb, "delete", 6) == 0)
		return NULL;
	cur = dg_omap_find(&c->kv, key);
	/* Consul returns DirEntries without values for writes, with values for get */
	return cur ? dg__cat_kv_json(cur, strcmp(verb, "get") == 0) : NULL;
}

int dg__cat_txn_apply(dg_catalog *c, json_t *cmd, json_t **result)
{
	struct undo_log u = {.active = true};
	json_t *results = json_array();
	json_t *errors = json_array();
	uint64_t saved_idx_kv = c->idx_kv;
	size_t saved_changes = c->nchanges;
	size_t i;
	json_t *op;
	cur_undo = &u;
	json_array_foreach(json_object_get(cmd, "Ops"), i, op)
	{
		json_t *kv = json_object_get(op, "KV");
		bool ok;
		char *err = NULL;
		if (!json_is_object(kv)) {
			json_array_append_new(errors, json_pack("{s:I, s:s}", "OpIndex",
								(json_int_t)i, "What",
								"only KV operations are supported"));
			continue;
		}
		json_object_set_new(kv, "Txn", json_true());
		json_t *r = dg__cat_kv_apply(c, kv, &ok, &err);
		if (err || !ok) {
			const char *verb = dg__js(kv, "Verb");
			char *what = err;
			if (!what && asprintf(&what, "failed to %s key \"%s\"", verb,
					      dg__js(kv, "Key")) < 0)
				what = NULL;
			json_array_append_new(errors, json_pack("{s:I, s:s}", "OpIndex",
								(json_int_t)i, "What",
								what ? what : "failed"));
			free(what);
			json_decref(r);
			continue;
		}
		if (json_is_array(r)) {
			size_t j;
			json_t *e;
			json_array_foreach(r, j, e)
				json_array_append_new(results, json_pack("{s:O}", "KV", e));
			json_decref(r);
		} else if (r) {
			json_array_append_new(results, json_pack("{s:o}", "KV", r));
		}
	}
	cur_undo = NULL;
	if (json_array_size(errors) > 0) {
		undo_apply(c, &u);
		c->idx_kv = saved_idx_kv;
		/* drop the changes of the rolled-back ops: nothing changed */
		for (size_t k = saved_changes; k < c->nchanges; k++)
			free(c->changes[k].key);
		c->nchanges = saved_changes;
		*result = json_pack("{s:n, s:o}", "Results", "Errors", errors);
		json_decref(results);
	} else {
		*result = json_pack("{s:o, s:n}", "Results", results, "Errors");
		json_decref(errors);
	}
	undo_free(&u);
	return 0;
}

json_t *dg_cmd_kv(const char *verb, const char *key, const uint8_t *value, size_t len,
		  uint64_t flags, uint64_t index, const char *session)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "Op", "kv", "Verb", verb, "Key", key);
	if (!o)
		return NULL;
	if (len) {
		char *b = dg_base64_encode(value, len);
		if (!b) {
			json_decref(o);
			return NULL;
		}
		json_object_set_new(o, "Value", json_string(b));
		free(b);
	}
	if (flags)
		json_object_set_new(o, "Flags", json_integer((json_int_t)flags));
	if (index)
		json_object_set_new(o, "Index", json_integer((json_int_t)index));
	if (session)
		json_object_set_new(o, "Session", json_string(session));
	return o;
}

/* The object dg__cat_kv_json(e, true) builds, written straight into b as compact JSON: a raft
 * snapshot writes one per key, and building and dumping a jansson tree for each was most of the
 * time the loop thread spent on a snapshot of a large store. 0 or DG_ENOMEM. */
int dg__cat_kv_write(struct dg_buf *b, const struct dg_cat_kv *e)
{
	int rv = dg_buf_appendf(b, "{\"LockIndex\":%llu,\"Key\":", (unsigned long long)e->lock_index);
	if (rv == 0)
		rv = dg_buf_append_json_string(b, e->key, strlen(e->key));
	if (rv == 0)
		/* as jansson prints it: a signed 64-bit integer */
		rv = dg_buf_appendf(b, ",\"Flags\":%lld,\"Value\":", (long long)(json_int_t)e->flags);
	if (rv == 0 && e->value_len) {
		char *v = dg_base64_encode(e->value, e->value_len);
		rv = v ? dg_buf_appendf(b, "\"%s\"", v) : DG_ENOMEM;
		free(v);
	} else if (rv == 0) {
		rv = dg_buf_append(b, "null", 4);
	}
	if (rv == 0 && e->session) {
		rv = dg_buf_append(b, ",\"Session\":", 11);
		if (rv == 0)
			rv = dg_buf_append_json_string(b, e->session, strlen(e->session));
	}
	if (rv == 0)
		rv = dg_buf_appendf(b, ",\"CreateIndex\":%llu,\"ModifyIndex\":%llu}",
				    (unsigned long long)e->create_index,
				    (unsigned long long)e->modify_index);
	return rv;
}
