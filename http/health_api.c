/* /v1/health: node/:node, checks/:service, service/:service and state/:state (consul-api.md §5),
 * all blocking, with Consul's ?passing, ?tag and ?node-meta rules.
 *
 * Like catalog_api.c, results are built under the catalog read lock, encoded after it is released
 * and kept in the response cache for their index. ?filter (go-bexpr) is not evaluated yet: every
 * read here ignores it and answers unfiltered. ?near is ignored too (no coordinates).
 *
 * HealthCheck.ServiceTags are read from the service at answer time (Consul copies them when the
 * check is written), so health/node and health/state also depend on the services table: their
 * index is the larger of the checks' and the services' and they wake on both. */
#include "http/internal.h"

#include <string.h>
#include <strings.h>


struct walk {
	struct dg_req *r;
	dg_catalog *cat;
	json_t *out;
	const char *dc;
	const char *state;              /* state/:state; NULL for any */
	const struct dg_cat_service *s; /* the instance whose checks are wanted */
	const struct dg_cat_node *node; /* the node last looked up (walks go by node) */
	bool ok;
};

/* The node of a record, remembered across calls: every walk here is sorted by node. */
static const struct dg_cat_node *node_of(struct walk *w, const char *name)
{
	if (!w->node || strcasecmp(w->node->name, name) != 0)
		w->node = dg_cat_node_find_locked(w->cat, name);
	return w->node;
}

static bool meta_ok(struct walk *w, const char *node)
{
	if (!w->r->q.nnode_meta)
		return true;
	const struct dg_cat_node *n = node_of(w, node);
	return n && dg_node_meta_match(n, w->r->q.node_meta, w->r->q.nnode_meta);
}

/* A check with the tags of its service (none for node checks). */
static json_t *enc_check(struct walk *w, const struct dg_cat_check *ch)
{
	const struct dg_cat_service *s =
		*ch->service_id ? dg_cat_service_find_locked(w->cat, ch->node, ch->service_id)
				: NULL;
	return dg_enc_check(ch, s);
}

/* The checks table and, for ServiceTags, the services table; with ?node-meta the nodes too. */
static uint64_t checks_index(struct dg_req *r, dg_catalog *cat)
{
	uint64_t index = dg_cat_index_checks_locked(cat);
	if (dg_cat_index_services_locked(cat) > index)
		index = dg_cat_index_services_locked(cat);
	if (r->q.nnode_meta && dg_cat_index_nodes_locked(cat) > index)
		index = dg_cat_index_nodes_locked(cat);
	return index;
}

/* Last change to the name's instances, their checks, their nodes or the nodes' checks. */
static uint64_t service_index(struct dg_req *r, dg_catalog *cat)
{
	return dg_cat_index_service_locked(cat, r->arg);
}

/* ---- health/node/:node ---- */

static int add_node_check(void *arg, const struct dg_cat_check *ch)
{
	struct walk *w = arg;
	json_array_append_new(w->out, enc_check(w, ch));
	return 0;
}

static json_t *node_build(struct dg_req *r, dg_catalog *cat)
{
	struct walk w = {.r = r, .cat = cat, .out = json_array()};
	if (w.out)
		dg_cat_node_checks_walk_locked(cat, r->arg, add_node_check, &w);
	return w.out;
}

static int health_node(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing node name", 0);
	return dg_serve_read(r, DG_TOPIC_CHECKS | DG_TOPIC_SERVICES, r->arg, checks_index,
			  node_build);
}

/* ---- health/checks/:service ---- */

static int add_instance_check(void *arg, const struct dg_cat_check *ch)
{
	struct walk *w = arg;
	if (strcmp(ch->service_id, w->s->id) == 0)
		json_array_append_new(w->out, dg_enc_check(ch, w->s));
	return 0;
}

static int add_instance_checks(void *arg, const struct dg_cat_service *s)
{
	struct walk *w = arg;
	if (!meta_ok(w, s->node))
		return 0;
	w->s = s;
	return dg_cat_node_checks_walk_locked(w->cat, s->node, add_instance_check, w);
}

static json_t *checks_build(struct dg_req *r, dg_catalog *cat)
{
	struct walk w = {.r = r, .cat = cat, .out = json_array()};
	if (w.out)
		dg_cat_service_walk_locked(cat, r->arg, add_instance_checks, &w);
	return w.out;
}

static int health_checks(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing service name", 0);
	return dg_serve_read(r, DG_TOPIC_SERVICE, r->arg, service_index, checks_build);
}

/* ---- health/service/:service ---- */

/* ?passing: every check of the entry (node-level included) must be passing. */
static int check_passing(void *arg, const struct dg_cat_check *ch)
{
	struct walk *w = arg;
	if ((!*ch->service_id || strcmp(ch->service_id, w->s->id) == 0) &&
	    strcmp(ch->status, "passing") != 0)
		w->ok = false;
	return w->ok ? 0 : 1;
}

static int add_node_level_check(void *arg, const struct dg_cat_check *ch)
{
	struct walk *w = arg;
	if (!*ch->service_id)
		json_array_append_new(w->out, dg_enc_check(ch, NULL));
	return 0;
}

/* One CheckServiceNode: Checks are the node's own checks first, then the instance's, each in
 * check-ID order, as Consul's parseCheckServiceNodes lists them. */
static int add_check_service_node(void *arg, const struct dg_cat_service *s)
{
	struct walk *w = arg;
	struct dg_req *r = w->r;
	if (!dg_service_has_tags(s, r->q.tags, r->q.ntags))
		return 0;
	const struct dg_cat_node *n = node_of(w, s->node);
	if (!n || !dg_node_meta_match(n, r->q.node_meta, r->q.nnode_meta))
		return 0;
	w->s = s;
	if (r->q.passing) {
		w->ok = true;
		dg_cat_node_checks_walk_locked(w->cat, n->name, check_passing, w);
		if (!w->ok)
			return 0;
	}
	json_t *checks = json_array();
	json_t *entry = json_pack("{s:o, s:o, s:o}", "Node", dg_enc_node(n, w->dc), "Service",
				  dg_enc_node_service(s), "Checks", checks);
	if (!entry)
		return 0;
	struct walk cw = {.r = r, .cat = w->cat, .out = checks, .s = s};
	dg_cat_node_checks_walk_locked(w->cat, n->name, add_node_level_check, &cw);
	dg_cat_node_checks_walk_locked(w->cat, n->name, add_instance_check, &cw);
	json_array_append_new(w->out, entry);
	return 0;
}

static json_t *service_build(struct dg_req *r, dg_catalog *cat)
{
	struct walk w = {.r = r, .cat = cat, .out = json_array(), .dc = dg_http_dc(r)};
	if (w.out)
		dg_cat_service_walk_locked(cat, r->arg, add_check_service_node, &w);
	return w.out;
}

static int health_service(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing service name", 0);
	return dg_serve_read(r, DG_TOPIC_SERVICE, r->arg, service_index, service_build);
}

/* ---- health/state/:state ---- */

static int add_state_check(void *arg, const struct dg_cat_check *ch)
{
	struct walk *w = arg;
	if (w->state && strcmp(ch->status, w->state) != 0)
		return 0;
	if (!meta_ok(w, ch->node))
		return 0;
	json_array_append_new(w->out, enc_check(w, ch));
	return 0;
}

/* Consul does not validate the state: an unknown one simply matches nothing. */
static json_t *state_build(struct dg_req *r, dg_catalog *cat)
{
	const char *state = r->arg;
	bool any = strcmp(state, "any") == 0;
	bool known = any || strcmp(state, "passing") == 0 || strcmp(state, "warning") == 0 ||
		     strcmp(state, "critical") == 0;
	struct walk w = {.r = r, .cat = cat, .out = json_array(), .state = any ? NULL : state};
	if (w.out && known)
		dg_cat_checks_walk_locked(cat, add_state_check, &w);
	return w.out;
}

static int health_state(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing check state", 0);
	unsigned topics =
		DG_TOPIC_CHECKS | DG_TOPIC_SERVICES | (r->q.nnode_meta ? DG_TOPIC_NODES : 0);
	return dg_serve_read(r, topics, NULL, checks_index, state_build);
}

const struct dg_route dg_routes_health[] = {
	{"/v1/health/node/", true, DG_GET, health_node},
	{"/v1/health/checks/", true, DG_GET, health_checks},
	{"/v1/health/service/", true, DG_GET, health_service},
	{"/v1/health/state/", true, DG_GET, health_state},
	{NULL, false, 0, NULL},
};
