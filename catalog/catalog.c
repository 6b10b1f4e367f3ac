/* The catalog's node, service and check tables, the apply entry point and the read side.
 * Invariants: every node_rec owns its services and checks; each service is also listed, not
 * owned, in the name_rec of its name; every change bumps the index of each table it touched and
 * records a dg_cat_change for blocking queries. */
#include "catalog/internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- json helpers ---- */

const char *dg__js(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "";
}

char *dg__jsdup(json_t *o, const char *key)
{
	return strdup(dg__js(o, key));
}

json_t *dg__jobj(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_object(v) ? json_incref(v) : json_object();
}

json_t *dg__jarr(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	return json_is_array(v) ? json_incref(v) : json_array();
}

uint64_t dg__ju64(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (json_is_integer(v))
		return (uint64_t)json_integer_value(v);
	if (json_is_string(v)) {
		uint64_t u;
		if (dg_parse_u64(json_string_value(v), &u) == 0)
			return u;
	}
	return 0;
}

int64_t dg__ji64(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* ---- lifecycle ---- */

dg_catalog *dg_cat_new(const char *dc)
{
	dg_catalog *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (!(c->dc = strdup(dc))) {
		free(c);
		return NULL;
	}
	pthread_rwlock_init(&c->lock, NULL);
	dg_map_init(&c->nodes, true);
	dg_map_init(&c->names, true);
	dg_omap_init(&c->kv);
	dg_omap_init(&c->tombstones);
	dg_map_init(&c->sessions, false);
	dg_map_init(&c->lock_delay, false);
	c->last_index = 1;
	return c;
}

void dg__cat_service_free(struct dg_cat_service *s)
{
	if (!s)
		return;
	free(s->node);
	free(s->id);
	free(s->name);
	free(s->kind);
	free(s->address);
	json_decref(s->tags);
	json_decref(s->tagged);
	json_decref(s->meta);
	free(s);
}

void dg__cat_check_free(struct dg_cat_check *ch)
{
	if (!ch)
		return;
	free(ch->node);
	free(ch->id);
	free(ch->name);
	free(ch->status);
	free(ch->notes);
	free(ch->output);
	free(ch->service_id);
	free(ch->service_name);
	free(ch->type);
	json_decref(ch->definition);
	free(ch);
}

void dg__cat_node_free(struct node_rec *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->services.n; i++)
		dg__cat_service_free(n->services.v[i].value);
	for (size_t i = 0; i < n->checks.n; i++)
		dg__cat_check_free(n->checks.v[i].value);
	dg_map_fini(&n->services);
	dg_map_fini(&n->checks);
	free(n->pub.name);
	free(n->pub.id);
	free(n->pub.address);
	json_decref(n->pub.tagged);
	json_decref(n->pub.meta);
	free(n);
}

static void name_free(struct name_rec *r)
{
	dg_map_fini(&r->inst);
	free(r->name);
	free(r);
}

/* Empties every table; the caller holds the write lock. */
void dg__cat_clear_tables(dg_catalog *c)
{
	for (size_t i = 0; i < c->nodes.n; i++)
		dg__cat_node_free(c->nodes.v[i].value);
	for (size_t i = 0; i < c->names.n; i++)
		name_free(c->names.v[i].value);
	struct dg_omap_it it;
	for (dg_omap_first(&c->kv, &it); dg_omap_valid(&it); dg_omap_next(&it))
		dg__cat_kv_free(dg_omap_value(&it));
	for (size_t i = 0; i < c->sessions.n; i++)
		dg__cat_session_free(c->sessions.v[i].value);
	dg_map_fini(&c->nodes);
	dg_map_fini(&c->names);
	dg_omap_fini(&c->kv);
	dg_omap_fini(&c->tombstones);
	dg_map_fini(&c->sessions);
	dg_map_fini(&c->lock_delay);
}

void dg_cat_free(dg_catalog *c)
{
	if (!c)
		return;
	dg__cat_clear_tables(c);
	dg_cat_changes_free(c->changes, c->nchanges);
	json_decref(c->staged);
	pthread_rwlock_destroy(&c->lock);
	free(c->dc);
	free(c);
}

const char *dg_cat_dc(const dg_catalog *c)
{
	return c->dc;
}

void dg_cat_rdlock(dg_catalog *c)
{
	pthread_rwlock_rdlock(&c->lock);
}

void dg_cat_wrlock(dg_catalog *c)
{
	pthread_rwlock_wrlock(&c->lock);
}

void dg_cat_unlock(dg_catalog *c)
{
	pthread_rwlock_unlock(&c->lock);
}

uint64_t dg_cat_last_index(dg_catalog *c)
{
	return __atomic_load_n(&c->last_index, __ATOMIC_ACQUIRE);
}

/* ---- change log ---- */

void dg__cat_change(dg_catalog *c, enum dg_cat_topic topic, const char *key)
{
	if (c->nchanges == c->capchanges) {
		size_t cap = c->capchanges ? c->capchanges * 2 : 16;
		struct dg_cat_change *v = realloc(c->changes, cap * sizeof(*v));
		if (!v)
			return; /* waiters then wake on their timeout instead */
		c->changes = v;
		c->capchanges = cap;
	}
	struct dg_cat_change *ch = &c->changes[c->nchanges++];
	ch->topic = topic;
	ch->key = key ? strdup(key) : NULL;
	ch->index = c->cur_index;
}

struct dg_cat_change *dg_cat_take_changes(dg_catalog *c, size_t *n)
{
	struct dg_cat_change *v = c->changes;
	*n = c->nchanges;
	c->changes = NULL;
	c->nchanges = c->capchanges = 0;
	return v;
}

void dg_cat_changes_free(struct dg_cat_change *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].key);
	free(v);
}

/* ---- name index ---- */

static struct name_rec *name_rec_get(dg_catalog *c, const char *name, bool create)
{
	struct name_rec *r = dg_map_find(&c->names, name);
	if (r || !create)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r || !(r->name = strdup(name))) {
		free(r);
		return NULL;
	}
	dg_map_init(&r->inst, false);
	if (dg_map_put(&c->names, name, r, NULL) != 0) {
		name_free(r);
		return NULL;
	}
	return r;
}

static void inst_key(const struct dg_cat_service *s, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s\x1f%s", s->node, s->id);
	if (n < 0 || (size_t)n >= len)
		buf[len - 1] = 0;
	for (char *p = buf; *p && *p != '\x1f'; p++)
		*p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
}

/* Marks a service name as changed at the current index. */
static void touch_name(dg_catalog *c, const char *name)
{
	struct name_rec *r = name_rec_get(c, name, true);
	if (r)
		r->index = c->cur_index;
	dg__cat_change(c, DG_TOPIC_SERVICE, name);
}

/* A node-level change (node fields, node checks) touches every service on the node. */
static void touch_node_services(dg_catalog *c, struct node_rec *n)
{
	for (size_t i = 0; i < n->services.n; i++) {
		struct dg_cat_service *s = n->services.v[i].value;
		touch_name(c, s->name);
	}
}

struct node_rec *dg__cat_node_rec(dg_catalog *c, const char *name)
{
	return dg_map_find(&c->nodes, name);
}

/* ---- register ---- */

static bool json_same(json_t *a, json_t *b)
{
	return json_equal(a, b) != 0;
}

static int node_upsert(dg_catalog *c, json_t *cmd, struct node_rec **out, char **err)
{
	const char *name = dg__js(cmd, "Node");
	struct node_rec *n = dg_map_find(&c->nodes, name);
	json_t *tagged = dg__jobj(cmd, "TaggedAddresses");
	json_t *meta = dg__jobj(cmd, "NodeMeta");
	const char *addr = dg__js(cmd, "Address");
	const char *id = dg__js(cmd, "ID");
	bool skip = json_is_true(json_object_get(cmd, "SkipNodeUpdate"));
	if (!n) {
		if (!*addr) {
			json_decref(tagged);
			json_decref(meta);
			*err = strdup("Must provide address if SkipNodeUpdate is not set");
			return DG_EINVAL;
		}
		n = calloc(1, sizeof(*n));
		if (!n) {
			json_decref(tagged);
			json_decref(meta);
			return DG_ENOMEM;
		}
		dg_map_init(&n->services, false);
		dg_map_init(&n->checks, false);
		n->pub.name = strdup(name);
		n->pub.id = strdup(id);
		n->pub.address = strdup(addr);
		n->pub.tagged = tagged;
		n->pub.meta = meta;
		n->pub.create_index = n->pub.modify_index = c->cur_index;
		if (dg_map_put(&c->nodes, name, n, NULL) != 0) {
			dg__cat_node_free(n);
			return DG_ENOMEM;
		}
		c->idx_nodes = c->cur_index;
		dg__cat_change(c, DG_TOPIC_NODES, name);
	} else if (!skip && *addr &&
		   (strcmp(n->pub.address, addr) != 0 || (*id && strcmp(n->pub.id, id) != 0) ||
		    !json_same(n->pub.tagged, tagged) || !json_same(n->pub.meta, meta))) {
		free(n->pub.address);
		n->pub.address = strdup(addr);
		if (*id) {
			free(n->pub.id);
			n->pub.id = strdup(id);
		}
		json_decref(n->pub.tagged);
		json_decref(n->pub.meta);
		n->pub.tagged = tagged;
		n->pub.meta = meta;
		n->pub.modify_index = c->cur_index;
		c->idx_nodes = c->cur_index;
		dg__cat_change(c, DG_TOPIC_NODES, name);
		touch_node_services(c, n);
	} else {
		json_decref(tagged);
		json_decref(meta);
	}
	*out = n;
	return 0;
}

static void name_unlink(dg_catalog *c, struct dg_cat_service *s)
{
	char k[2 * DG_MAX_KEY_LEN + 2];
	struct name_rec *r = name_rec_get(c, s->name, false);
	inst_key(s, k, sizeof(k));
	if (r)
		dg_map_del(&r->inst, k);
	touch_name(c, s->name);
}

int dg__cat_name_link(dg_catalog *c, struct dg_cat_service *s)
{
	char k[2 * DG_MAX_KEY_LEN + 2];
	struct name_rec *r = name_rec_get(c, s->name, true);
	if (!r)
		return DG_ENOMEM;
	inst_key(s, k, sizeof(k));
	touch_name(c, s->name);
	return dg_map_put(&r->inst, k, s, NULL);
}

/* A service record of node from its command or snapshot JSON; ID defaults to the name and
 * Weights to 1/1; CreateIndex and ModifyIndex are read when present. NULL when out of memory.
 * The caller owns the record. */
struct dg_cat_service *dg__cat_service_from_json(const char *node, json_t *js)
{
	struct dg_cat_service *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	const char *name = dg__js(js, "Service");
	const char *id = dg__js(js, "ID");
	s->node = strdup(node);
	s->id = strdup(*id ? id : name);
	s->name = strdup(name);
	s->kind = dg__jsdup(js, "Kind");
	s->tags = dg__jarr(js, "Tags");
	s->address = dg__jsdup(js, "Address");
	s->tagged = dg__jobj(js, "TaggedAddresses");
	s->meta = dg__jobj(js, "Meta");
	s->port = (int)dg__ji64(js, "Port");
	json_t *w = json_object_get(js, "Weights");
	s->weight_passing = json_is_object(w) ? (int)dg__ji64(w, "Passing") : 1;
	s->weight_warning = json_is_object(w) ? (int)dg__ji64(w, "Warning") : 1;
	s->enable_tag_override = json_is_true(json_object_get(js, "EnableTagOverride"));
	s->agent = json_is_true(json_object_get(js, "Agent"));
	s->create_index = dg__ju64(js, "CreateIndex");
	s->modify_index = dg__ju64(js, "ModifyIndex");
	if (!s->node || !s->id || !s->name || !s->kind || !s->address) {
		dg__cat_service_free(s);
		return NULL;
	}
	return s;
}

/* A check record of node from its command or snapshot JSON, with the given status and the name
 * of the service it belongs to ("" for node checks); indexes read when present. NULL when out of
 * memory. The caller owns the record. */
struct dg_cat_check *dg__cat_check_from_json(const char *node, json_t *jc, const char *status,
					     const char *service_name)
{
	struct dg_cat_check *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->node = strdup(node);
	ch->id = dg__jsdup(jc, "CheckID");
	ch->name = dg__jsdup(jc, "Name");
	ch->status = strdup(status);
	ch->notes = dg__jsdup(jc, "Notes");
	ch->output = dg__jsdup(jc, "Output");
	ch->service_id = dg__jsdup(jc, "ServiceID");
	ch->service_name = strdup(service_name);
	ch->type = dg__jsdup(jc, "Type");
	ch->definition = dg__jobj(jc, "Definition");
	ch->agent = json_is_true(json_object_get(jc, "Agent"));
	ch->create_index = dg__ju64(jc, "CreateIndex");
	ch->modify_index = dg__ju64(jc, "ModifyIndex");
	if (!ch->node || !ch->id || !ch->name || !ch->status || !ch->notes || !ch->output ||
	    !ch->service_id || !ch->service_name || !ch->type) {
		dg__cat_check_free(ch);
		return NULL;
	}
	return ch;
}

static int service_upsert(dg_catalog *c, struct node_rec *n, json_t *js)
{
	struct dg_cat_service *s = dg__cat_service_from_json(n->pub.name, js);
	if (!s)
		return DG_ENOMEM;

	struct dg_cat_service *old = dg_map_find(&n->services, s->id);
	if (old && strcmp(old->name, s->name) == 0 && strcmp(old->kind, s->kind) == 0 &&
	    strcmp(old->address, s->address) == 0 && old->port == s->port &&
	    old->weight_passing == s->weight_passing && old->weight_warning == s->weight_warning &&
	    old->enable_tag_override == s->enable_tag_override && old->agent == s->agent &&
	    json_same(old->tags, s->tags) && json_same(old->tagged, s->tagged) &&
	    json_same(old->meta, s->meta)) {
		dg__cat_service_free(s); /* unchanged: no new index, no wakeups */
		return 0;
	}
	s->create_index = old ? old->create_index : c->cur_index;
	s->modify_index = c->cur_index;
	if (old)
		name_unlink(c, old);
	if (dg_map_put(&n->services, s->id, s, NULL) != 0) {
		dg__cat_service_free(s);
		return DG_ENOMEM;
	}
	if (old && strcmp(old->name, s->name) != 0) {
		/* a renamed service: its checks carry the new name */
		for (size_t i = 0; i < n->checks.n; i++) {
			struct dg_cat_check *ch = n->checks.v[i].value;
			char *nm;
			if (strcmp(ch->service_id, s->id) != 0 || !(nm = strdup(s->name)))
				continue;
			free(ch->service_name);
			ch->service_name = nm;
			ch->modify_index = c->cur_index;
			c->idx_checks = c->cur_index;
		}
	}
	dg__cat_service_free(old);
	c->idx_services = c->cur_index;
	dg__cat_change(c, DG_TOPIC_SERVICES, NULL);
	return dg__cat_name_link(c, s);
}

static bool valid_status(const char *s)
{
	return strcmp(s, "passing") == 0 || strcmp(s, "warning") == 0 ||
	       strcmp(s, "critical") == 0;
}

/* Records that a check changed: the check table, its node and the services it concerns. */
static void touch_check(dg_catalog *c, struct node_rec *n, const struct dg_cat_check *ch)
{
	c->idx_checks = c->cur_index;
	dg__cat_change(c, DG_TOPIC_CHECKS, n->pub.name);
	if (*ch->service_id) {
		struct dg_cat_service *s = dg_map_find(&n->services, ch->service_id);
		if (s)
			touch_name(c, s->name);
	} else {
		touch_node_services(c, n);
	}
}

static int check_upsert(dg_catalog *c, struct node_rec *n, json_t *jc, char **err)
{
	const char *sid = dg__js(jc, "ServiceID");
	struct dg_cat_service *svc = NULL;
	if (*sid && !(svc = dg_map_find(&n->services, sid))) {
		*err = strdup("failed inserting check: Missing service registration");
		return DG_EIO;
	}
	const char *status = dg__js(jc, "Status");
	if (!*status)
		status = "critical";
	if (!valid_status(status)) {
		*err = strdup("Status for checks must 'passing', 'warning', 'critical'");
		return DG_EINVAL;
	}
	struct dg_cat_check *ch =
		dg__cat_check_from_json(n->pub.name, jc, status, svc ? svc->name : "");
	if (!ch)
		return DG_ENOMEM;
	struct dg_cat_check *old = dg_map_find(&n->checks, ch->id);
	if (old && json_is_true(json_object_get(jc, "KeepStatus")) &&
	    strcmp(old->type, ch->type) == 0 && json_same(old->definition, ch->definition)) {
		/* re-registering an unchanged agent check keeps its last result, so a
		 * re-register does not flap a passing service to critical */
		free(ch->status);
		free(ch->output);
		ch->status = strdup(old->status);
		ch->output = strdup(old->output);
		if (!ch->status || !ch->output) {
			dg__cat_check_free(ch);
			return DG_ENOMEM;
		}
	}
	if (old && strcmp(old->name, ch->name) == 0 && strcmp(old->status, ch->status) == 0 &&
	    strcmp(old->notes, ch->notes) == 0 && strcmp(old->output, ch->output) == 0 &&
	    strcmp(old->service_id, ch->service_id) == 0 &&
	    strcmp(old->service_name, ch->service_name) == 0 && strcmp(old->type, ch->type) == 0 &&
	    old->agent == ch->agent && json_same(old->definition, ch->definition)) {
		dg__cat_check_free(ch);
		return 0;
	}
	ch->create_index = old ? old->create_index : c->cur_index;
	ch->modify_index = c->cur_index;
	if (dg_map_put(&n->checks, ch->id, ch, NULL) != 0) {
		dg__cat_check_free(ch);
		return DG_ENOMEM;
	}
	bool went_critical = strcmp(ch->status, "critical") == 0 &&
			     (!old || strcmp(old->status, "critical") != 0);
	dg__cat_check_free(old);
	touch_check(c, n, ch);
	if (went_critical)
		dg__cat_sessions_check_critical(c, n->pub.name, ch->id);
	return 0;
}

static void check_remove(dg_catalog *c, struct node_rec *n, const char *id);

static void service_remove(dg_catalog *c, struct node_rec *n, const char *id);

static bool listed(json_t *arr, const char *key, const char *id)
{
	size_t i;
	json_t *e;
	json_array_foreach(arr, i, e) if (strcmp(dg__js(e, key), id) == 0) return true;
	return false;
}

/* A client agent's anti-entropy: the node's services and checks become exactly "Services" and
 * "Checks" (serfHealth, which the leader keeps from gossip, aside). Only what differs changes:
 * an unchanged service or check keeps its indexes and wakes nobody. */
static int apply_node_sync(dg_catalog *c, struct node_rec *n, json_t *cmd, char **err)
{
	json_t *svcs = json_object_get(cmd, "Services"), *checks = json_object_get(cmd, "Checks");
	size_t i;
	json_t *e;
	int rv;
	if (!json_is_array(svcs) || !json_is_array(checks)) {
		*err = strdup("SyncNode needs Services and Checks arrays");
		return DG_EINVAL;
	}
	json_array_foreach(svcs, i, e)
	{
		if (!json_is_object(e) || !*dg__js(e, "Service") || !*dg__js(e, "ID")) {
			*err = strdup("Must provide service name (Service.Service) and ID");
			return DG_EINVAL;
		}
		if ((rv = service_upsert(c, n, e)) != 0)
			return rv;
	}
	for (size_t k = n->services.n; k-- > 0;) {
		const char *id = n->services.v[k].key;
		if (!listed(svcs, "ID", id))
			service_remove(c, n, id);
	}
	json_array_foreach(checks, i, e)
	{
		if (!json_is_object(e) || strcmp(dg__js(e, "CheckID"), "serfHealth") == 0)
			continue;
		if ((rv = check_upsert(c, n, e, err)) != 0)
			return rv;
	}
	for (size_t k = n->checks.n; k-- > 0;) {
		const char *id = n->checks.v[k].key;
		if (strcmp(id, "serfHealth") != 0 && !listed(checks, "CheckID", id))
			check_remove(c, n, id);
	}
	return 0;
}

static int apply_register(dg_catalog *c, json_t *cmd, char **err)
{
	struct node_rec *n;
	int rv;
	if (!*dg__js(cmd, "Node")) {
		*err = strdup("Must provide node");
		return DG_EINVAL;
	}
	if ((rv = node_upsert(c, cmd, &n, err)) != 0)
		return rv;
	if (json_is_true(json_object_get(cmd, "SyncNode")))
		return apply_node_sync(c, n, cmd, err);
	json_t *svc = json_object_get(cmd, "Service");
	if (json_is_object(svc)) {
		if (!*dg__js(svc, "Service")) {
			*err = strdup("Must provide service name (Service.Service)");
			return DG_EINVAL;
		}
		if ((rv = service_upsert(c, n, svc)) != 0)
			return rv;
	}
	size_t i;
	json_t *jc;
	json_array_foreach(json_object_get(cmd, "Checks"), i, jc)
	{
		if ((rv = check_upsert(c, n, jc, err)) != 0)
			return rv;
	}
	/* ?replace-existing-checks: the service's checks are exactly the ones just given */
	if (json_is_object(svc) && json_is_true(json_object_get(cmd, "ReplaceServiceChecks"))) {
		const char *sid = *dg__js(svc, "ID") ? dg__js(svc, "ID") : dg__js(svc, "Service");
		for (size_t k = n->checks.n; k-- > 0;) {
			struct dg_cat_check *ch = n->checks.v[k].value;
			bool keep = false;
			if (strcmp(ch->service_id, sid) != 0)
				continue;
			json_array_foreach(json_object_get(cmd, "Checks"), i, jc)
				keep = keep || strcmp(dg__js(jc, "CheckID"), ch->id) == 0;
			if (!keep)
				check_remove(c, n, ch->id);
		}
	}
	return 0;
}

/* ---- deregister ---- */

static void check_remove(dg_catalog *c, struct node_rec *n, const char *id)
{
	struct dg_cat_check *ch = dg_map_del(&n->checks, id);
	if (!ch)
		return;
	touch_check(c, n, ch);
	dg__cat_sessions_check_critical(c, n->pub.name, ch->id);
	dg__cat_check_free(ch);
}

static void service_remove(dg_catalog *c, struct node_rec *n, const char *id)
{
	struct dg_cat_service *s = dg_map_find(&n->services, id);
	if (!s)
		return;
	/* its checks first, while the service still names them */
	for (size_t i = n->checks.n; i-- > 0;) {
		struct dg_cat_check *ch = n->checks.v[i].value;
		if (strcmp(ch->service_id, id) == 0)
			check_remove(c, n, ch->id);
	}
	dg_map_del(&n->services, id);
	name_unlink(c, s);
	c->idx_services = c->cur_index;
	dg__cat_change(c, DG_TOPIC_SERVICES, NULL);
	dg__cat_service_free(s);
}

static void node_remove(dg_catalog *c, struct node_rec *n)
{
	while (n->services.n > 0)
		service_remove(c, n, n->services.v[n->services.n - 1].key);
	while (n->checks.n > 0)
		check_remove(c, n, n->checks.v[n->checks.n - 1].key);
	dg__cat_sessions_node_gone(c, n->pub.name);
	dg_map_del(&c->nodes, n->pub.name);
	c->idx_nodes = c->cur_index;
	dg__cat_change(c, DG_TOPIC_NODES, n->pub.name);
	dg__cat_node_free(n);
}

static int apply_deregister(dg_catalog *c, json_t *cmd, char **err)
{
	const char *node = dg__js(cmd, "Node");
	if (!*node) {
		*err = strdup("Must provide node");
		return DG_EINVAL;
	}
	struct node_rec *n = dg_map_find(&c->nodes, node);
	if (!n)
		return 0;
	const char *sid = dg__js(cmd, "ServiceID");
	const char *cid = dg__js(cmd, "CheckID");
	if (*sid)
		service_remove(c, n, sid);
	if (*cid)
		check_remove(c, n, cid);
	if (!*sid && !*cid)
		node_remove(c, n);
	return 0;
}

/* A check result from the agent that runs it: status and output only. */
static int apply_check_update(dg_catalog *c, json_t *cmd)
{
	struct node_rec *n = dg_map_find(&c->nodes, dg__js(cmd, "Node"));
	if (!n)
		return 0;
	struct dg_cat_check *ch = dg_map_find(&n->checks, dg__js(cmd, "CheckID"));
	const char *status = dg__js(cmd, "Status");
	const char *output = dg__js(cmd, "Output");
	if (!ch || !valid_status(status))
		return 0;
	if (strcmp(ch->status, status) == 0 && strcmp(ch->output, output) == 0)
		return 0;
	bool went_critical =
		strcmp(status, "critical") == 0 && strcmp(ch->status, "critical") != 0;
	char *ns = strdup(status), *no = strdup(output);
	if (!ns || !no) {
		free(ns);
		free(no);
		return DG_ENOMEM;
	}
	free(ch->status);
	free(ch->output);
	ch->status = ns;
	ch->output = no;
	ch->modify_index = c->cur_index;
	touch_check(c, n, ch);
	if (went_critical)
		dg__cat_sessions_check_critical(c, n->pub.name, ch->id);
	return 0;
}

/* ---- apply ---- */

static json_t *error_result(int status, const char *text)
{
	return json_pack("{s:s, s:i}", "Error", text ? text : "internal error", "Status", status);
}

/* One command (cmd borrowed), at c->cur_index: its result in *result (NULL for none). */
static int apply_one(dg_catalog *c, json_t *cmd, json_t **result)
{
	json_t *res = NULL;
	char *err = NULL;
	int rv = 0;
	c->cur_now_ns = dg__ji64(cmd, "Now");
	const char *op = dg__js(cmd, "Op");

	if (strcmp(op, "register") == 0) {
		rv = apply_register(c, cmd, &err);
	} else if (strcmp(op, "deregister") == 0) {
		rv = apply_deregister(c, cmd, &err);
	} else if (strcmp(op, "check_update") == 0) {
		rv = apply_check_update(c, cmd);
	} else if (strcmp(op, "kv") == 0) {
		bool ok = false;
		json_t *r = dg__cat_kv_apply(c, cmd, &ok, &err);
		json_decref(r);
		if (!err)
			res = json_pack("{s:b}", "Ok", ok);
		else
			rv = DG_EINVAL;
	} else if (strcmp(op, "txn") == 0) {
		rv = dg__cat_txn_apply(c, cmd, &res);
	} else if (strcmp(op, "session_create") == 0) {
		rv = dg__cat_session_create(c, cmd, &res);
	} else if (strcmp(op, "session_destroy") == 0) {
		dg__cat_session_destroy(c, dg__js(cmd, "ID"));
		res = json_pack("{s:b}", "Ok", 1);
	} else if (strcmp(op, "restore") == 0) {
		rv = dg__cat_restore_apply(c, cmd, &err);
	} else if (strncmp(op, "restore_", 8) == 0) {
		rv = dg__cat_restore_staged_apply(c, op, cmd, &err);
	} else if (strcmp(op, "noop") == 0) {
		/* leadership barriers and index bumps */
	} else {
		rv = DG_EINVAL;
		err = strdup("unknown command");
	}
	if (rv != 0 && !res)
		res = error_result(rv == DG_ENOTFOUND ? 404 : 500, err ? err : dg_strerror(rv));
	free(err);
	*result = res;
	return rv;
}

int dg_cat_apply(dg_catalog *c, uint64_t index, const char *buf, size_t len, json_t **result)
{
	json_error_t jerr;
	json_t *cmd = json_loadb(buf, len, 0, &jerr);
	json_t *res = NULL;
	int rv = 0;
	if (result)
		*result = NULL;
	if (!json_is_object(cmd)) {
		json_decref(cmd);
		if (result)
			*result = error_result(500, "corrupt command");
		return DG_EINVAL;
	}
	/* an index can only move forward, even if a caller passes an old one */
	c->cur_index = index > c->last_index ? index : c->last_index + 1;
	if (strcmp(dg__js(cmd, "Op"), "batch") == 0) {
		/* writes the leader gathered in one loop turn (lan/raft.c): applied in order at one
		 * index, each with its own result */
		json_t *cmds = json_object_get(cmd, "Cmds"), *sub;
		size_t i;
		res = json_array();
		json_array_foreach(cmds, i, sub)
		{
			json_t *r = NULL;
			if (!json_is_object(sub) || strcmp(dg__js(sub, "Op"), "batch") == 0)
				r = error_result(500, "corrupt command");
			else
				apply_one(c, sub, &r);
			json_array_append_new(res, r ? r : json_null());
		}
	} else {
		rv = apply_one(c, cmd, &res);
	}
	__atomic_store_n(&c->last_index, c->cur_index, __ATOMIC_RELEASE);
	json_decref(cmd);
	if (result)
		*result = res;
	else
		json_decref(res);
	return rv;
}

/* ---- reads ---- */

const struct dg_cat_node *dg_cat_node_find_locked(dg_catalog *c, const char *name)
{
	struct node_rec *n = dg_map_find(&c->nodes, name);
	return n ? &n->pub : NULL;
}

int dg_cat_nodes_walk_locked(dg_catalog *c, dg_cat_node_cb cb, void *arg)
{
	int rv;
	for (size_t i = 0; i < c->nodes.n; i++) {
		struct node_rec *n = c->nodes.v[i].value;
		if ((rv = cb(arg, &n->pub)) != 0)
			return rv;
	}
	return 0;
}

int dg_cat_node_services_walk_locked(dg_catalog *c, const char *node, dg_cat_service_cb cb,
				     void *arg)
{
	struct node_rec *n = dg_map_find(&c->nodes, node);
	int rv;
	if (!n)
		return 0;
	for (size_t i = 0; i < n->services.n; i++)
		if ((rv = cb(arg, n->services.v[i].value)) != 0)
			return rv;
	return 0;
}

int dg_cat_node_checks_walk_locked(dg_catalog *c, const char *node, dg_cat_check_cb cb, void *arg)
{
	struct node_rec *n = dg_map_find(&c->nodes, node);
	int rv;
	if (!n)
		return 0;
	for (size_t i = 0; i < n->checks.n; i++)
		if ((rv = cb(arg, n->checks.v[i].value)) != 0)
			return rv;
	return 0;
}

int dg_cat_service_walk_locked(dg_catalog *c, const char *name, dg_cat_service_cb cb, void *arg)
{
	struct name_rec *r = dg_map_find(&c->names, name);
	int rv;
	if (!r)
		return 0;
	for (size_t i = 0; i < r->inst.n; i++)
		if ((rv = cb(arg, r->inst.v[i].value)) != 0)
			return rv;
	return 0;
}

int dg_cat_services_all_walk_locked(dg_catalog *c, dg_cat_service_cb cb, void *arg)
{
	int rv;
	for (size_t i = 0; i < c->nodes.n; i++) {
		struct node_rec *n = c->nodes.v[i].value;
		for (size_t j = 0; j < n->services.n; j++)
			if ((rv = cb(arg, n->services.v[j].value)) != 0)
				return rv;
	}
	return 0;
}

const struct dg_cat_service *dg_cat_service_find_locked(dg_catalog *c, const char *node,
							const char *id)
{
	struct node_rec *n = dg_map_find(&c->nodes, node);
	return n ? dg_map_find(&n->services, id) : NULL;
}

const struct dg_cat_check *dg_cat_check_find_locked(dg_catalog *c, const char *node,
						    const char *id)
{
	struct node_rec *n = dg_map_find(&c->nodes, node);
	return n ? dg_map_find(&n->checks, id) : NULL;
}

int dg_cat_checks_walk_locked(dg_catalog *c, dg_cat_check_cb cb, void *arg)
{
	int rv;
	for (size_t i = 0; i < c->nodes.n; i++) {
		struct node_rec *n = c->nodes.v[i].value;
		for (size_t j = 0; j < n->checks.n; j++)
			if ((rv = cb(arg, n->checks.v[j].value)) != 0)
				return rv;
	}
	return 0;
}

static uint64_t at_least_1(uint64_t v)
{
	return v ? v : 1;
}

uint64_t dg_cat_index_nodes_locked(dg_catalog *c)
{
	return at_least_1(c->idx_nodes);
}

uint64_t dg_cat_index_services_locked(dg_catalog *c)
{
	return at_least_1(c->idx_services);
}

uint64_t dg_cat_index_checks_locked(dg_catalog *c)
{
	return at_least_1(c->idx_checks);
}

uint64_t dg_cat_index_sessions_locked(dg_catalog *c)
{
	return at_least_1(c->idx_sessions);
}

uint64_t dg_cat_index_service_locked(dg_catalog *c, const char *name)
{
	struct name_rec *r = dg_map_find(&c->names, name);
	if (r)
		return at_least_1(r->index);
	/* an unknown name: the services table index, as Consul does */
	return at_least_1(c->idx_services);
}

const char *dg_cat_aggregate_status(json_t *checks)
{
	bool warn = false, crit = false;
	size_t i;
	json_t *ch;
	json_array_foreach(checks, i, ch)
	{
		const char *id = dg__js(ch, "CheckID");
		if (strcmp(id, "_node_maintenance") == 0 ||
		    strncmp(id, "_service_maintenance:", 21) == 0)
			return "maintenance";
		const char *st = dg__js(ch, "Status");
		if (strcmp(st, "critical") == 0)
			crit = true;
		else if (strcmp(st, "warning") == 0)
			warn = true;
	}
	return crit ? "critical" : warn ? "warning" : "passing";
}
