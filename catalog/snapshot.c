/* The whole catalog as one JSON document: raft snapshots (dg_cat_snapshot on the loop thread,
 * dg_cat_restore at start or when a snapshot is installed), the state inside a /v1/snapshot
 * archive, and the "restore" command that replaces the state through raft.
 *
 * A state is always loaded into a new catalog that nobody else sees, then swapped in whole: a
 * state that does not load (wrong types, duplicates, bad base64, indexes out of range) leaves the
 * live catalog exactly as it was. Indexes are stored as they are, so a raft snapshot restore never
 * moves an index backwards; the restore command lifts them (see restore_indexes). */
#include "catalog/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Indexes in a state must stay below this: a restore puts the state one index above its highest,
 * and JSON integers (int64) would wrap a negative value into a huge unsigned one. */
#define MAX_STATE_INDEX ((uint64_t)1 << 62)

static json_t *service_json(const struct dg_cat_service *s)
{
	return json_pack("{s:s, s:s, s:s, s:O, s:s, s:O, s:O, s:i, s:{s:i, s:i}, s:b, s:b, s:I, s:I}",
			 "ID", s->id, "Service", s->name, "Kind", s->kind, "Tags", s->tags,
			 "Address", s->address, "TaggedAddresses", s->tagged, "Meta", s->meta,
			 "Port", s->port, "Weights", "Passing", s->weight_passing, "Warning",
			 s->weight_warning, "EnableTagOverride", s->enable_tag_override, "Agent",
			 s->agent, "CreateIndex", (json_int_t)s->create_index, "ModifyIndex",
			 (json_int_t)s->modify_index);
}

static json_t *check_json(const struct dg_cat_check *ch)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:O, s:b, s:I, s:I}", "CheckID",
			 ch->id, "Name", ch->name, "Status", ch->status, "Notes", ch->notes,
			 "Output", ch->output, "ServiceID", ch->service_id, "Type", ch->type,
			 "Definition", ch->definition, "Agent", ch->agent, "CreateIndex",
			 (json_int_t)ch->create_index, "ModifyIndex", (json_int_t)ch->modify_index);
}

/* The state captured for a snapshot: every table but the KV store as JSON text, and the KV
 * entries (pinned or not, as the caller says). */
struct dg_cat_frozen {
	char *rest;
	uint64_t index;
	struct dg_cat_kv **kv;
	size_t nkv;
	bool pinned;
};

/* Under the catalog's lock (the write lock when pin). NULL when out of memory. */
static struct dg_cat_frozen *freeze(dg_catalog *c, bool pin)
{
	struct dg_cat_frozen *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->index = c->last_index;
	f->pinned = pin;
	f->nkv = dg_omap_size(&c->kv);
	if (f->nkv && !(f->kv = malloc(f->nkv * sizeof(*f->kv)))) {
		free(f);
		return NULL;
	}
	json_t *root = json_object();
	json_t *nodes = json_array(), *names = json_object();
	json_t *tombs = json_object(), *sessions = json_array(), *delays = json_object();
	json_object_set_new(root, "Index", json_integer((json_int_t)c->last_index));
	json_object_set_new(root, "Idx",
			    json_pack("{s:I, s:I, s:I, s:I, s:I}", "Nodes",
				      (json_int_t)c->idx_nodes, "Services",
				      (json_int_t)c->idx_services, "Checks",
				      (json_int_t)c->idx_checks, "KV", (json_int_t)c->idx_kv,
				      "Sessions", (json_int_t)c->idx_sessions));
	if (c->idx_floor)
		json_object_set_new(root, "Floor", json_integer((json_int_t)c->idx_floor));
	for (size_t i = 0; i < c->nodes.n; i++) {
		struct node_rec *n = c->nodes.v[i].value;
		json_t *svcs = json_array(), *checks = json_array();
		for (size_t j = 0; j < n->services.n; j++)
			json_array_append_new(svcs, service_json(n->services.v[j].value));
		for (size_t j = 0; j < n->checks.n; j++)
			json_array_append_new(checks, check_json(n->checks.v[j].value));
		json_array_append_new(
			nodes, json_pack("{s:s, s:s, s:s, s:O, s:O, s:I, s:I, s:o, s:o}", "Node",
					 n->pub.name, "ID", n->pub.id, "Address", n->pub.address,
					 "TaggedAddresses", n->pub.tagged, "Meta", n->pub.meta,
					 "CreateIndex", (json_int_t)n->pub.create_index,
					 "ModifyIndex", (json_int_t)n->pub.modify_index, "Services",
					 svcs, "Checks", checks));
	}
	for (size_t i = 0; i < c->names.n; i++) {
		struct name_rec *r = c->names.v[i].value;
		json_object_set_new(names, r->name, json_integer((json_int_t)r->index));
	}
	struct dg_omap_it it;
	for (dg_omap_first(&c->tombstones, &it); dg_omap_valid(&it); dg_omap_next(&it))
		json_object_set_new(tombs, dg_omap_key(&it),
				    json_integer((json_int_t)(uintptr_t)dg_omap_value(&it)));
	for (size_t i = 0; i < c->lock_delay.n; i++)
		json_object_set_new(delays, c->lock_delay.v[i].key,
				    json_integer((json_int_t)(uintptr_t)c->lock_delay.v[i].value));
	for (size_t i = 0; i < c->sessions.n; i++) {
		struct dg_cat_session *s = c->sessions.v[i].value;
		json_array_append_new(
			sessions,
			json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:O, s:O, s:I, s:I}", "ID", s->id,
				  "Name", s->name, "Node", s->node, "LockDelay",
				  (json_int_t)s->lock_delay_ns, "Behavior", s->behavior, "TTL",
				  s->ttl, "NodeChecks", s->node_checks, "ServiceChecks",
				  s->service_checks, "CreateIndex", (json_int_t)s->create_index,
				  "ModifyIndex", (json_int_t)s->modify_index));
	}
	json_object_set_new(root, "Nodes", nodes);
	json_object_set_new(root, "Names", names);
	json_object_set_new(root, "Tombstones", tombs);
	json_object_set_new(root, "LockDelay", delays);
	json_object_set_new(root, "Sessions", sessions);
	char *rest = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	if (!rest) {
		free(f->kv);
		free(f);
		return NULL;
	}
	f->rest = rest;
	size_t i = 0;
	for (dg_omap_first(&c->kv, &it); dg_omap_valid(&it); dg_omap_next(&it)) {
		f->kv[i] = dg_omap_value(&it);
		if (pin)
			f->kv[i]->pins++;
		i++;
	}
	return f;
}

/* {..rest.., "KV":[...]}: the rest's object without its closing brace, then the keys (most of a
 * large store's bytes, written by hand). No lock: the entries are not changed while captured. */
char *dg_cat_snapshot_text(const struct dg_cat_frozen *f, size_t *len)
{
	struct dg_buf b;
	dg_buf_init(&b);
	size_t rlen = strlen(f->rest);
	int rv = rlen >= 2 ? dg_buf_append(&b, f->rest, rlen - 1) : DG_EINVAL;
	if (rv == 0)
		rv = dg_buf_append(&b, rlen > 2 ? ",\"KV\":[" : "\"KV\":[", rlen > 2 ? 7 : 6);
	for (size_t i = 0; rv == 0 && i < f->nkv; i++) {
		if (i && (rv = dg_buf_append(&b, ",", 1)) != 0)
			break;
		rv = dg__cat_kv_write(&b, f->kv[i]);
	}
	if (rv == 0)
		rv = dg_buf_append(&b, "]}", 3); /* with the NUL */
	if (rv != 0) {
		dg_buf_fini(&b);
		return NULL;
	}
	size_t n;
	char *out = dg_buf_steal(&b, &n);
	if (out && len)
		*len = n - 1;
	return out;
}

/* Frees f; the entries it pinned are let go (under the write lock). */
static void frozen_free(struct dg_cat_frozen *f)
{
	if (!f)
		return;
	for (size_t i = 0; f->pinned && i < f->nkv; i++)
		dg__cat_kv_free(f->kv[i]); /* frees one the table has replaced since */
	free(f->kv);
	free(f->rest);
	free(f);
}

struct dg_cat_frozen *dg_cat_snapshot_begin(dg_catalog *c)
{
	dg_cat_wrlock(c);
	struct dg_cat_frozen *f = freeze(c, true);
	dg_cat_unlock(c);
	return f;
}

void dg_cat_snapshot_end(dg_catalog *c, struct dg_cat_frozen *f)
{
	dg_cat_wrlock(c);
	frozen_free(f);
	dg_cat_unlock(c);
}

char *dg_cat_snapshot_index(dg_catalog *c, size_t *len, uint64_t *index)
{
	/* all of it under the read lock: readers may run side by side, so nothing is pinned */
	dg_cat_rdlock(c);
	struct dg_cat_frozen *f = freeze(c, false);
	char *text = f ? dg_cat_snapshot_text(f, len) : NULL;
	if (f && index)
		*index = f->index;
	dg_cat_unlock(c);
	frozen_free(f);
	return text;
}

char *dg_cat_snapshot(dg_catalog *c, size_t *len)
{
	return dg_cat_snapshot_index(c, len, NULL);
}

/* A node's services and checks as a client agent's anti-entropy sends them (catalog.c's
 * "register" with SyncNode reads the same shape), without indexes, serfHealth left out (the
 * leader writes it from gossip). */
json_t *dg_cat_node_state_locked(dg_catalog *c, const char *node)
{
	struct node_rec *n = dg_map_find(&c->nodes, node);
	json_t *svcs = json_array(), *checks = json_array();
	for (size_t j = 0; n && j < n->services.n; j++) {
		json_t *s = service_json(n->services.v[j].value);
		json_object_del(s, "CreateIndex");
		json_object_del(s, "ModifyIndex");
		json_array_append_new(svcs, s);
	}
	for (size_t j = 0; n && j < n->checks.n; j++) {
		const struct dg_cat_check *ch = n->checks.v[j].value;
		if (strcmp(ch->id, "serfHealth") == 0)
			continue;
		json_t *o = check_json(ch);
		json_object_del(o, "CreateIndex");
		json_object_del(o, "ModifyIndex");
		json_array_append_new(checks, o);
	}
	return json_pack("{s:o, s:o}", "Services", svcs, "Checks", checks);
}

/* ---- loading a state into a private catalog ---- */

struct load {
	char why[256];	    /* the first reason a state was refused */
	uint64_t max_index; /* the highest index anywhere in the state */
};

static int refuse(struct load *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct load *ld, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!ld->why[0] && vsnprintf(ld->why, sizeof(ld->why), fmt, ap) < 0)
		ld->why[0] = 0;
	va_end(ap);
	return DG_EINVAL;
}

/* An index value: an integer (or a decimal string, as dg__ju64 reads them) in range; absent is 0.
 * Records the highest one seen. */
static int load_index(struct load *ld, json_t *v, const char *what, uint64_t *out)
{
	uint64_t u = 0;
	*out = 0;
	if (!v)
		return 0;
	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return refuse(ld, "%s is negative", what);
		u = (uint64_t)json_integer_value(v);
	} else if (!json_is_string(v) || dg_parse_u64(json_string_value(v), &u) != 0) {
		return refuse(ld, "%s is not an index", what);
	}
	if (u >= MAX_STATE_INDEX)
		return refuse(ld, "%s %llu is out of range", what, (unsigned long long)u);
	if (u > ld->max_index)
		ld->max_index = u;
	*out = u;
	return 0;
}

static int load_field_index(struct load *ld, json_t *o, const char *key, uint64_t *out)
{
	return load_index(ld, json_object_get(o, key), key, out);
}

/* o[key] must be absent or of the given jansson type (JSON_ARRAY, JSON_OBJECT, JSON_STRING). */
static int want_type(struct load *ld, json_t *o, const char *key, json_type type, const char *what)
{
	json_t *v = json_object_get(o, key);
	if (v && json_typeof(v) != type)
		return refuse(ld, "%s: %s has the wrong type", what, key);
	return 0;
}

/* o[key] must be a string that is not empty. */
static int want_name(struct load *ld, json_t *o, const char *key, const char *what)
{
	const char *s = json_string_value(json_object_get(o, key));
	if (!s || !*s)
		return refuse(ld, "%s without %s", what, key);
	return 0;
}

static int load_service(dg_catalog *c, struct load *ld, struct node_rec *n, json_t *js)
{
	int rv;
	if (!json_is_object(js))
		return refuse(ld, "node %s: a service is not an object", n->pub.name);
	if ((rv = want_name(ld, js, "Service", "a service")) != 0 ||
	    (rv = want_type(ld, js, "ID", JSON_STRING, "a service")) != 0)
		return rv;
	struct dg_cat_service *s = dg__cat_service_from_json(n->pub.name, js);
	if (!s)
		return DG_ENOMEM;
	if ((rv = load_field_index(ld, js, "CreateIndex", &s->create_index)) != 0 ||
	    (rv = load_field_index(ld, js, "ModifyIndex", &s->modify_index)) != 0) {
		dg__cat_service_free(s);
		return rv;
	}
	if (dg_map_find(&n->services, s->id)) {
		rv = refuse(ld, "node %s: service %s twice", n->pub.name, s->id);
		dg__cat_service_free(s);
		return rv;
	}
	if (dg_map_put(&n->services, s->id, s, NULL) != 0) {
		dg__cat_service_free(s);
		return DG_ENOMEM;
	}
	return dg__cat_name_link(c, s); /* s is the node's from here on */
}

static int load_check(struct load *ld, struct node_rec *n, json_t *jc)
{
	int rv;
	if (!json_is_object(jc))
		return refuse(ld, "node %s: a check is not an object", n->pub.name);
	if ((rv = want_type(ld, jc, "CheckID", JSON_STRING, "a check")) != 0 ||
	    (rv = want_type(ld, jc, "ServiceID", JSON_STRING, "a check")) != 0)
		return rv;
	struct dg_cat_service *s = dg_map_find(&n->services, dg__js(jc, "ServiceID"));
	struct dg_cat_check *ch =
		dg__cat_check_from_json(n->pub.name, jc, dg__js(jc, "Status"), s ? s->name : "");
	if (!ch)
		return DG_ENOMEM;
	if ((rv = load_field_index(ld, jc, "CreateIndex", &ch->create_index)) != 0 ||
	    (rv = load_field_index(ld, jc, "ModifyIndex", &ch->modify_index)) != 0) {
		dg__cat_check_free(ch);
		return rv;
	}
	if (dg_map_find(&n->checks, ch->id)) {
		rv = refuse(ld, "node %s: check %s twice", n->pub.name, ch->id);
		dg__cat_check_free(ch);
		return rv;
	}
	if (dg_map_put(&n->checks, ch->id, ch, NULL) != 0) {
		dg__cat_check_free(ch);
		return DG_ENOMEM;
	}
	return 0;
}

static int load_node(dg_catalog *c, struct load *ld, json_t *jn)
{
	int rv;
	if (!json_is_object(jn))
		return refuse(ld, "a node is not an object");
	if ((rv = want_name(ld, jn, "Node", "a node")) != 0 ||
	    (rv = want_type(ld, jn, "Services", JSON_ARRAY, "a node")) != 0 ||
	    (rv = want_type(ld, jn, "Checks", JSON_ARRAY, "a node")) != 0)
		return rv;
	if (dg_map_find(&c->nodes, dg__js(jn, "Node")))
		return refuse(ld, "node %s twice", dg__js(jn, "Node"));
	struct node_rec *n = calloc(1, sizeof(*n));
	if (!n)
		return DG_ENOMEM;
	dg_map_init(&n->services, false);
	dg_map_init(&n->checks, false);
	n->pub.name = dg__jsdup(jn, "Node");
	n->pub.id = dg__jsdup(jn, "ID");
	n->pub.address = dg__jsdup(jn, "Address");
	n->pub.tagged = dg__jobj(jn, "TaggedAddresses");
	n->pub.meta = dg__jobj(jn, "Meta");
	if (!n->pub.name || !n->pub.id || !n->pub.address) {
		dg__cat_node_free(n);
		return DG_ENOMEM;
	}
	if ((rv = load_field_index(ld, jn, "CreateIndex", &n->pub.create_index)) != 0 ||
	    (rv = load_field_index(ld, jn, "ModifyIndex", &n->pub.modify_index)) != 0) {
		dg__cat_node_free(n);
		return rv;
	}
	if (dg_map_put(&c->nodes, n->pub.name, n, NULL) != 0) {
		dg__cat_node_free(n);
		return DG_ENOMEM;
	}
	/* n is c's from here on: whatever fails below is freed with c */
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(jn, "Services"), i, v)
	{
		if ((rv = load_service(c, ld, n, v)) != 0)
			return rv;
	}
	json_array_foreach(json_object_get(jn, "Checks"), i, v)
	{
		if ((rv = load_check(ld, n, v)) != 0)
			return rv;
	}
	return 0;
}

static int load_kv(dg_catalog *c, struct load *ld, json_t *v)
{
	int rv;
	if (!json_is_object(v))
		return refuse(ld, "a KV entry is not an object");
	json_t *key = json_object_get(v, "Key");
	json_t *val = json_object_get(v, "Value");
	if (!json_is_string(key))
		return refuse(ld, "a KV entry without Key");
	if (val && !json_is_string(val) && !json_is_null(val))
		return refuse(ld, "KV %s: Value is not a string", json_string_value(key));
	if ((rv = want_type(ld, v, "Session", JSON_STRING, "a KV entry")) != 0)
		return rv;
	if (dg_omap_find(&c->kv, json_string_value(key)))
		return refuse(ld, "KV %s twice", json_string_value(key));
	struct dg_cat_kv *e = calloc(1, sizeof(*e));
	if (!e)
		return DG_ENOMEM;
	const char *b64 = json_string_value(val);
	if (b64 && *b64 &&
	    dg_base64_decode(b64, json_string_length(val), &e->value, &e->value_len) != 0) {
		dg__cat_kv_free(e);
		return refuse(ld, "KV %s: Value is not base64", json_string_value(key));
	}
	e->key = strdup(json_string_value(key));
	e->flags = dg__ju64(v, "Flags");
	e->lock_index = dg__ju64(v, "LockIndex");
	e->session = *dg__js(v, "Session") ? dg__jsdup(v, "Session") : NULL;
	if (!e->key || (*dg__js(v, "Session") && !e->session)) {
		dg__cat_kv_free(e);
		return DG_ENOMEM;
	}
	if ((rv = load_field_index(ld, v, "CreateIndex", &e->create_index)) != 0 ||
	    (rv = load_field_index(ld, v, "ModifyIndex", &e->modify_index)) != 0) {
		dg__cat_kv_free(e);
		return rv;
	}
	if (dg_omap_put(&c->kv, e->key, e, NULL) != 0) {
		dg__cat_kv_free(e);
		return DG_ENOMEM;
	}
	return 0;
}

static int load_session(dg_catalog *c, struct load *ld, json_t *v)
{
	int rv;
	if (!json_is_object(v))
		return refuse(ld, "a session is not an object");
	if ((rv = want_name(ld, v, "ID", "a session")) != 0)
		return rv;
	if (dg_map_find(&c->sessions, dg__js(v, "ID")))
		return refuse(ld, "session %s twice", dg__js(v, "ID"));
	struct dg_cat_session *s = calloc(1, sizeof(*s));
	if (!s)
		return DG_ENOMEM;
	s->id = dg__jsdup(v, "ID");
	s->name = dg__jsdup(v, "Name");
	s->node = dg__jsdup(v, "Node");
	s->lock_delay_ns = dg__ji64(v, "LockDelay");
	s->behavior = dg__jsdup(v, "Behavior");
	s->ttl = dg__jsdup(v, "TTL");
	s->node_checks = dg__jarr(v, "NodeChecks");
	json_t *sc = json_object_get(v, "ServiceChecks");
	s->service_checks = json_is_array(sc) ? json_incref(sc) : json_null();
	if (!s->id || !s->name || !s->node || !s->behavior || !s->ttl) {
		dg__cat_session_free(s);
		return DG_ENOMEM;
	}
	if ((rv = load_field_index(ld, v, "CreateIndex", &s->create_index)) != 0 ||
	    (rv = load_field_index(ld, v, "ModifyIndex", &s->modify_index)) != 0) {
		dg__cat_session_free(s);
		return rv;
	}
	if (dg_map_put(&c->sessions, s->id, s, NULL) != 0) {
		dg__cat_session_free(s);
		return DG_ENOMEM;
	}
	return 0;
}

/* A map of key -> integer (Tombstones: an index each; LockDelay: a wall-clock time). */
static int put_in_map(void *map, const char *key, uint64_t u)
{
	return dg_map_put(map, key, (void *)(uintptr_t)u, NULL);
}

static int put_in_omap(void *map, const char *key, uint64_t u)
{
	return dg_omap_put(map, key, (void *)(uintptr_t)u, NULL);
}

/* Loads {key: integer} into a table through put (put_in_map or put_in_omap). */
static int load_int_map(struct load *ld, json_t *obj, const char *what, bool is_index,
			int (*put)(void *map, const char *key, uint64_t u), void *out)
{
	const char *k;
	json_t *v;
	int rv;
	json_object_foreach(obj, k, v)
	{
		uint64_t u;
		if (is_index) {
			if ((rv = load_index(ld, v, what, &u)) != 0)
				return rv;
		} else if (!json_is_integer(v)) {
			return refuse(ld, "%s %s is not a number", what, k);
		} else {
			u = (uint64_t)json_integer_value(v);
		}
		if (put(out, k, u) != 0)
			return DG_ENOMEM;
	}
	return 0;
}

/* Loads root into c, a new catalog that nobody else sees. 0, DG_EINVAL (ld->why says why) or
 * DG_ENOMEM; on failure c holds part of the state and is only fit to be freed. */
static int load_state(dg_catalog *c, json_t *root, struct load *ld)
{
	static const struct {
		const char *key;
		json_type type;
	} tables[] = {{"Idx", JSON_OBJECT},	   {"Nodes", JSON_ARRAY},
		      {"Names", JSON_OBJECT},	   {"KV", JSON_ARRAY},
		      {"Tombstones", JSON_OBJECT}, {"LockDelay", JSON_OBJECT},
		      {"Sessions", JSON_ARRAY}};
	int rv;
	if (!json_is_object(root))
		return refuse(ld, "the state is not a JSON object");
	for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++)
		if ((rv = want_type(ld, root, tables[i].key, tables[i].type, "the state")) != 0)
			return rv;
	json_t *idx = json_object_get(root, "Idx");
	uint64_t last, floor;
	if ((rv = load_field_index(ld, idx, "Nodes", &c->idx_nodes)) != 0 ||
	    (rv = load_field_index(ld, idx, "Services", &c->idx_services)) != 0 ||
	    (rv = load_field_index(ld, idx, "Checks", &c->idx_checks)) != 0 ||
	    (rv = load_field_index(ld, idx, "KV", &c->idx_kv)) != 0 ||
	    (rv = load_field_index(ld, idx, "Sessions", &c->idx_sessions)) != 0 ||
	    (rv = load_field_index(ld, root, "Index", &last)) != 0 ||
	    (rv = load_field_index(ld, root, "Floor", &floor)) != 0)
		return rv;
	c->idx_floor = floor;
	c->last_index = last > 1 ? last : 1;
	size_t i;
	json_t *v;
	const char *k;
	json_array_foreach(json_object_get(root, "Nodes"), i, v)
	{
		if ((rv = load_node(c, ld, v)) != 0)
			return rv;
	}
	/* the names' indexes as they were, after linking reset them */
	json_object_foreach(json_object_get(root, "Names"), k, v)
	{
		uint64_t index;
		if ((rv = load_index(ld, v, "a service name's index", &index)) != 0)
			return rv;
		struct name_rec *r = dg_map_find(&c->names, k);
		if (r && strcmp(r->name, k) != 0) {
			/* names are case-insensitive: linking took the spelling of whichever
			 * instance came first, the state says which one the record had */
			char *spelling = strdup(k);
			if (!spelling)
				return DG_ENOMEM;
			dg_map_del(&c->names, r->name);
			free(r->name);
			r->name = spelling;
			if (dg_map_put(&c->names, k, r, NULL) != 0) {
				dg_map_fini(&r->inst);
				free(r->name);
				free(r);
				return DG_ENOMEM;
			}
		}
		if (!r) {
			r = calloc(1, sizeof(*r));
			if (!r || !(r->name = strdup(k))) {
				free(r);
				return DG_ENOMEM;
			}
			dg_map_init(&r->inst, false);
			if (dg_map_put(&c->names, k, r, NULL) != 0) {
				free(r->name);
				free(r);
				return DG_ENOMEM;
			}
		}
		r->index = index;
	}
	json_array_foreach(json_object_get(root, "KV"), i, v)
	{
		if ((rv = load_kv(c, ld, v)) != 0)
			return rv;
	}
	if ((rv = load_int_map(ld, json_object_get(root, "Tombstones"), "a tombstone", true,
			       put_in_omap, &c->tombstones)) != 0 ||
	    (rv = load_int_map(ld, json_object_get(root, "LockDelay"), "a lock delay", false,
			       put_in_map, &c->lock_delay)) != 0)
		return rv;
	json_array_foreach(json_object_get(root, "Sessions"), i, v)
	{
		if ((rv = load_session(c, ld, v)) != 0)
			return rv;
	}
	/* the changes recorded while linking services belong to nobody */
	size_t n;
	struct dg_cat_change *ch = dg_cat_take_changes(c, &n);
	dg_cat_changes_free(ch, n);
	return 0;
}

/* Exchanges the tables and their indexes of a and b (both write-locked or private). */
static void swap_tables(dg_catalog *a, dg_catalog *b)
{
#define SWAP(field)                                                                                \
	do {                                                                                       \
		__typeof__(a->field) t_ = a->field;                                                \
		a->field = b->field;                                                               \
		b->field = t_;                                                                     \
	} while (0)
	SWAP(nodes);
	SWAP(names);
	SWAP(kv);
	SWAP(tombstones);
	SWAP(sessions);
	SWAP(lock_delay);
	SWAP(idx_nodes);
	SWAP(idx_services);
	SWAP(idx_checks);
	SWAP(idx_kv);
	SWAP(idx_sessions);
	SWAP(idx_floor);
#undef SWAP
}

int dg_cat_restore(dg_catalog *c, const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, 0, &jerr);
	struct load ld = {.why = ""};
	if (!json_is_object(root)) {
		json_decref(root);
		return DG_EINVAL;
	}
	dg_catalog *fresh = dg_cat_new(c->dc);
	int rv = fresh ? load_state(fresh, root, &ld) : DG_ENOMEM;
	json_decref(root);
	if (rv != 0) {
		dg_cat_free(fresh);
		return rv;
	}
	dg_cat_wrlock(c);
	swap_tables(c, fresh);
	if (fresh->last_index > c->last_index)
		__atomic_store_n(&c->last_index, fresh->last_index, __ATOMIC_RELEASE);
	dg_cat_unlock(c);
	dg_cat_free(fresh); /* the old tables */
	return 0;
}

int dg_cat_state_check(json_t *state, struct dg_cat_state_info *info, char *why, size_t len)
{
	struct load ld = {.why = ""};
	dg_catalog *c = dg_cat_new("check");
	int rv = c ? load_state(c, state, &ld) : DG_ENOMEM;
	if (rv == DG_EINVAL && why && len && snprintf(why, len, "%s", ld.why) < 0)
		why[0] = 0;
	if (rv == 0 && info) {
		memset(info, 0, sizeof(*info));
		info->index = c->last_index;
		info->nodes = c->nodes.n;
		for (size_t i = 0; i < c->nodes.n; i++) {
			struct node_rec *n = c->nodes.v[i].value;
			info->services += n->services.n;
			info->checks += n->checks.n;
		}
		info->kv = dg_omap_size(&c->kv);
		info->tombstones = dg_omap_size(&c->tombstones);
		info->sessions = c->sessions.n;
	}
	dg_cat_free(c);
	return rv;
}

json_t *dg_cmd_restore(json_t *state)
{
	return json_pack("{s:s, s:O}", "Op", "restore", "State", state);
}

/* ---- the restore command ---- */

/* Every node of c's tables gets a check change of its own: the agent reconciles the checks it
 * runs on a check change keyed by its node (lan/agent.c), and its node may have come or gone. */
static void touch_nodes(dg_catalog *c, const struct dg_map *nodes, const struct dg_map *skip)
{
	for (size_t i = 0; i < nodes->n; i++)
		if (!skip || !dg_map_find(skip, nodes->v[i].key))
			dg__cat_change(c, DG_TOPIC_CHECKS, nodes->v[i].key);
}

/* The restored state takes one index, `at`, above both the live catalog's and every index
 * inside the state, so that indexes keep moving forward whatever the archive held (an older
 * backup, or one from a DC whose indexes ran higher). Object indexes (CreateIndex, ModifyIndex,
 * tombstones) stay as saved, so a CAS against a saved ModifyIndex works as it did; every table
 * and service name gets `at`, and `at` is the floor under per-key KV indexes. */
static void restore_indexes(dg_catalog *c, uint64_t at)
{
	c->idx_nodes = c->idx_services = c->idx_checks = c->idx_kv = c->idx_sessions = at;
	c->idx_floor = at;
	for (size_t i = 0; i < c->names.n; i++) {
		struct name_rec *r = c->names.v[i].value;
		r->index = at;
	}
}

int dg__cat_restore_apply(dg_catalog *c, json_t *cmd, char **err)
{
	struct load ld = {.why = ""};
	dg_catalog *fresh = dg_cat_new(c->dc);
	int rv = fresh ? load_state(fresh, json_object_get(cmd, "State"), &ld) : DG_ENOMEM;
	if (rv != 0) {
		if (rv == DG_EINVAL && asprintf(err, "invalid snapshot state: %s", ld.why) < 0)
			*err = NULL;
		dg_cat_free(fresh);
		return rv;
	}
	uint64_t at = ld.max_index + 1 > c->cur_index ? ld.max_index + 1 : c->cur_index;
	c->cur_index = at; /* dg_cat_apply makes it the last applied index */
	swap_tables(c, fresh);
	restore_indexes(c, at);
	/* wake every blocking query: a change without a key matches every waiter of its topic */
	static const enum dg_cat_topic all[] = {DG_TOPIC_NODES, DG_TOPIC_SERVICES, DG_TOPIC_SERVICE,
						DG_TOPIC_CHECKS, DG_TOPIC_KV, DG_TOPIC_SESSIONS};
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		dg__cat_change(c, all[i], NULL);
	touch_nodes(c, &fresh->nodes, NULL);	   /* the old nodes */
	touch_nodes(c, &c->nodes, &fresh->nodes); /* the new ones not among them */
	dg_cat_free(fresh);			   /* the old tables */
	return 0;
}

/* ---- a restore in parts ----
 * A large state as one raft entry holds every server's loop while it is appended, sent and
 * applied, and cannot pass the 8 MiB a follower may send the leader. So /v1/snapshot sends it as
 * "restore_begin" (the state with its big arrays cut short), "restore_part"s (more of Nodes, KV
 * and Sessions, each well under a MiB) and "restore_end", which applies the gathered state as
 * the "restore" command does, at once. Until then nothing changes that a read sees. Parts name
 * the restore's ID; a begin drops any restore still gathered, and "restore_abort" drops it. */

static const char *const staged_arrays[] = {"Nodes", "KV", "Sessions"};

static void staged_drop(dg_catalog *c)
{
	json_decref(c->staged);
	c->staged = NULL;
	c->staged_id[0] = 0;
}

int dg__cat_restore_staged_apply(dg_catalog *c, const char *op, json_t *cmd, char **err)
{
	const char *id = json_string_value(json_object_get(cmd, "ID"));
	if (strcmp(op, "restore_abort") == 0) {
		if (!id || strcmp(id, c->staged_id) == 0)
			staged_drop(c);
		return 0;
	}
	if (!id || !*id || strlen(id) >= sizeof(c->staged_id)) {
		*err = strdup("a restore part needs an ID");
		return DG_EINVAL;
	}
	if (strcmp(op, "restore_begin") == 0) {
		json_t *state = json_object_get(cmd, "State");
		if (!json_is_object(state)) {
			*err = strdup("restore_begin needs a State object");
			return DG_EINVAL;
		}
		staged_drop(c);
		c->staged = json_deep_copy(state);
		if (!c->staged)
			return DG_ENOMEM;
		snprintf(c->staged_id, sizeof(c->staged_id), "%s", id);
		c->staged_ms = dg_now_ms();
		return 0;
	}
	if (!c->staged || strcmp(id, c->staged_id) != 0) {
		if (asprintf(err, "no snapshot restore %s in progress", id) < 0)
			*err = NULL;
		return DG_ECONFLICT;
	}
	if (strcmp(op, "restore_part") == 0) {
		for (size_t i = 0; i < sizeof(staged_arrays) / sizeof(staged_arrays[0]); i++) {
			json_t *more = json_object_get(cmd, staged_arrays[i]);
			if (!more)
				continue;
			json_t *have = json_object_get(c->staged, staged_arrays[i]);
			if (!json_is_array(more) || (have && !json_is_array(have))) {
				if (asprintf(err, "restore part: %s is not an array", staged_arrays[i]) < 0)
					*err = NULL;
				return DG_EINVAL;
			}
			if (!have)
				json_object_set(c->staged, staged_arrays[i], more);
			else if (json_array_extend(have, more) != 0)
				return DG_ENOMEM;
		}
		c->staged_ms = dg_now_ms();
		return 0;
	}
	if (strcmp(op, "restore_end") == 0) {
		json_t *whole = json_pack("{s:O}", "State", c->staged);
		staged_drop(c);
		int rv = whole ? dg__cat_restore_apply(c, whole, err) : DG_ENOMEM;
		json_decref(whole);
		return rv;
	}
	*err = strdup("unknown command");
	return DG_EINVAL;
}

bool dg_cat_restore_staged(dg_catalog *c, uint64_t *since_ms)
{
	dg_cat_rdlock(c);
	bool staged = c->staged != NULL;
	if (since_ms)
		*since_ms = c->staged_ms;
	dg_cat_unlock(c);
	return staged;
}

json_t *dg_cmd_restore_parts(json_t *state, const char *id, size_t part_bytes)
{
	json_t *parts = json_array(), *head = json_copy(state);
	if (!parts || !head)
		goto fail;
	/* the head keeps every small field; the arrays go out in parts of about part_bytes */
	for (size_t i = 0; i < sizeof(staged_arrays) / sizeof(staged_arrays[0]); i++)
		json_object_set_new(head, staged_arrays[i], json_array());
	if (json_array_append_new(parts, json_pack("{s:s, s:s, s:O}", "Op", "restore_begin", "ID",
						   id, "State", head)) != 0)
		goto fail;
	for (size_t i = 0; i < sizeof(staged_arrays) / sizeof(staged_arrays[0]); i++) {
		json_t *all = json_object_get(state, staged_arrays[i]), *v;
		json_t *cur = NULL;
		size_t cur_bytes = 0, j;
		json_array_foreach(all, j, v)
		{
			size_t n = json_dumpb(v, NULL, 0, JSON_COMPACT);
			if (cur && cur_bytes + n > part_bytes) {
				if (json_array_append_new(parts, json_pack("{s:s, s:s, s:o}", "Op",
									   "restore_part", "ID", id,
									   staged_arrays[i], cur)) != 0)
					goto fail;
				cur = NULL;
				cur_bytes = 0;
			}
			if (!cur && !(cur = json_array()))
				goto fail;
			json_array_append(cur, v);
			cur_bytes += n + 1;
		}
		if (cur && json_array_append_new(parts, json_pack("{s:s, s:s, s:o}", "Op",
								  "restore_part", "ID", id,
								  staged_arrays[i], cur)) != 0)
			goto fail;
	}
	if (json_array_append_new(parts, json_pack("{s:s, s:s}", "Op", "restore_end", "ID", id)) !=
	    0)
		goto fail;
	json_decref(head);
	return parts;
fail:
	json_decref(head);
	json_decref(parts);
	return NULL;
}
