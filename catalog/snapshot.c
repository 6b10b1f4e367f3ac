/* The whole catalog as one JSON document, for raft snapshots: written by dg_cat_snapshot() on
 * the loop thread, read back by dg_cat_restore() at start or when a snapshot is installed.
 * Indexes are stored as they are, so a restore never moves an index backwards. */
#include "catalog/internal.h"

#include <stdlib.h>
#include <string.h>

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

char *dg_cat_snapshot(dg_catalog *c, size_t *len)
{
	dg_cat_rdlock(c);
	json_t *root = json_object();
	json_t *nodes = json_array(), *names = json_object(), *kv = json_array();
	json_t *tombs = json_object(), *sessions = json_array(), *delays = json_object();
	json_object_set_new(root, "Index", json_integer((json_int_t)c->last_index));
	json_object_set_new(root, "Idx",
			    json_pack("{s:I, s:I, s:I, s:I, s:I}", "Nodes",
				      (json_int_t)c->idx_nodes, "Services",
				      (json_int_t)c->idx_services, "Checks",
				      (json_int_t)c->idx_checks, "KV", (json_int_t)c->idx_kv,
				      "Sessions", (json_int_t)c->idx_sessions));
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
	/* the keys are written by hand after the rest (below): most of a large store's bytes */
	for (size_t i = 0; i < c->tombstones.n; i++)
		json_object_set_new(tombs, c->tombstones.v[i].key,
				    json_integer((json_int_t)(uintptr_t)c->tombstones.v[i].value));
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
	json_decref(kv);
	json_object_set_new(root, "Tombstones", tombs);
	json_object_set_new(root, "LockDelay", delays);
	json_object_set_new(root, "Sessions", sessions);
	char *rest = json_dumps(root, JSON_COMPACT);
	json_decref(root);
	/* {..rest.., "KV":[...]}: the object without its closing brace, then the keys */
	struct dg_buf b;
	dg_buf_init(&b);
	size_t rlen = rest ? strlen(rest) : 0;
	int rv = rest && rlen >= 2 ? dg_buf_append(&b, rest, rlen - 1) : DG_ENOMEM;
	if (rv == 0)
		rv = dg_buf_append(&b, rlen > 2 ? ",\"KV\":[" : "\"KV\":[", rlen > 2 ? 7 : 6);
	for (size_t i = 0; rv == 0 && i < c->kv.n; i++) {
		if (i && (rv = dg_buf_append(&b, ",", 1)) != 0)
			break;
		rv = dg__cat_kv_write(&b, c->kv.v[i].value);
	}
	if (rv == 0)
		rv = dg_buf_append(&b, "]}", 3); /* with the NUL */
	dg_cat_unlock(c);
	free(rest);
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

static int restore_node(dg_catalog *c, json_t *jn)
{
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
	n->pub.create_index = dg__ju64(jn, "CreateIndex");
	n->pub.modify_index = dg__ju64(jn, "ModifyIndex");
	if (!n->pub.name || !n->pub.id || !n->pub.address ||
	    dg_map_put(&c->nodes, n->pub.name, n, NULL) != 0) {
		dg__cat_node_free(n);
		return DG_ENOMEM;
	}
	size_t i;
	json_t *js;
	json_array_foreach(json_object_get(jn, "Services"), i, js)
	{
		struct dg_cat_service *s = dg__cat_service_from_json(n->pub.name, js);
		if (!s || dg_map_put(&n->services, s->id, s, NULL) != 0) {
			dg__cat_service_free(s);
			return DG_ENOMEM;
		}
		if (dg__cat_name_link(c, s) != 0)
			return DG_ENOMEM;
	}
	json_array_foreach(json_object_get(jn, "Checks"), i, js)
	{
		struct dg_cat_service *s = dg_map_find(&n->services, dg__js(js, "ServiceID"));
		struct dg_cat_check *ch = dg__cat_check_from_json(n->pub.name, js, dg__js(js, "Status"),
								  s ? s->name : "");
		if (!ch || dg_map_put(&n->checks, ch->id, ch, NULL) != 0) {
			dg__cat_check_free(ch);
			return DG_ENOMEM;
		}
	}
	return 0;
}

int dg_cat_restore(dg_catalog *c, const char *buf, size_t len)
{
	json_error_t jerr;
	json_t *root = json_loadb(buf, len, 0, &jerr);
	int rv = 0;
	if (!json_is_object(root)) {
		json_decref(root);
		return DG_EINVAL;
	}
	dg_cat_wrlock(c);
	dg__cat_clear_tables(c);
	json_t *idx = json_object_get(root, "Idx");
	c->idx_nodes = dg__ju64(idx, "Nodes");
	c->idx_services = dg__ju64(idx, "Services");
	c->idx_checks = dg__ju64(idx, "Checks");
	c->idx_kv = dg__ju64(idx, "KV");
	c->idx_sessions = dg__ju64(idx, "Sessions");
	size_t i;
	json_t *v;
	const char *k;
	json_array_foreach(json_object_get(root, "Nodes"), i, v)
	{
		if ((rv = restore_node(c, v)) != 0)
			goto out;
	}
	/* the names' indexes as they were, after linking reset them */
	json_object_foreach(json_object_get(root, "Names"), k, v)
	{
		struct name_rec *r = dg_map_find(&c->names, k);
		if (!r) {
			r = calloc(1, sizeof(*r));
			if (!r || !(r->name = strdup(k))) {
				free(r);
				rv = DG_ENOMEM;
				goto out;
			}
			dg_map_init(&r->inst, false);
			dg_map_put(&c->names, k, r, NULL);
		}
		r->index = (uint64_t)json_integer_value(v);
	}
	json_array_foreach(json_object_get(root, "KV"), i, v)
	{
		struct dg_cat_kv *e = calloc(1, sizeof(*e));
		if (!e) {
			rv = DG_ENOMEM;
			goto out;
		}
		e->key = dg__jsdup(v, "Key");
		const char *b64 = dg__js(v, "Value");
		if (*b64 && dg_base64_decode(b64, strlen(b64), &e->value, &e->value_len) != 0)
			e->value_len = 0;
		e->flags = dg__ju64(v, "Flags");
		e->lock_index = dg__ju64(v, "LockIndex");
		e->session = *dg__js(v, "Session") ? dg__jsdup(v, "Session") : NULL;
		e->create_index = dg__ju64(v, "CreateIndex");
		e->modify_index = dg__ju64(v, "ModifyIndex");
		if (!e->key || dg_map_put(&c->kv, e->key, e, NULL) != 0) {
			dg__cat_kv_free(e);
			rv = DG_ENOMEM;
			goto out;
		}
	}
	json_object_foreach(json_object_get(root, "Tombstones"), k, v)
		dg_map_put(&c->tombstones, k, (void *)(uintptr_t)json_integer_value(v), NULL);
	json_object_foreach(json_object_get(root, "LockDelay"), k, v)
		dg_map_put(&c->lock_delay, k, (void *)(uintptr_t)json_integer_value(v), NULL);
	json_array_foreach(json_object_get(root, "Sessions"), i, v)
	{
		struct dg_cat_session *s = calloc(1, sizeof(*s));
		if (!s) {
			rv = DG_ENOMEM;
			goto out;
		}
		s->id = dg__jsdup(v, "ID");
		s->name = dg__jsdup(v, "Name");
		s->node = dg__jsdup(v, "Node");
		s->lock_delay_ns = dg__ji64(v, "LockDelay");
		s->behavior = dg__jsdup(v, "Behavior");
		s->ttl = dg__jsdup(v, "TTL");
		s->node_checks = dg__jarr(v, "NodeChecks");
		json_t *sc = json_object_get(v, "ServiceChecks");
		s->service_checks = json_is_array(sc) ? json_incref(sc) : json_null();
		s->create_index = dg__ju64(v, "CreateIndex");
		s->modify_index = dg__ju64(v, "ModifyIndex");
		if (!s->id || !s->name || !s->node || !s->behavior || !s->ttl ||
		    dg_map_put(&c->sessions, s->id, s, NULL) != 0) {
			dg__cat_session_free(s);
			rv = DG_ENOMEM;
			goto out;
		}
	}
	uint64_t last = dg__ju64(root, "Index");
	if (last > c->last_index)
		__atomic_store_n(&c->last_index, last, __ATOMIC_RELEASE);
out:
	dg_cat_unlock(c);
	json_decref(root);
	return rv;
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
