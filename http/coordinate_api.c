/* /v1/coordinate: the LAN coordinates of every node (blocking, like catalog/nodes) and of one node,
 * and the updates agents push (consul-api.md §8). dcgate keeps no Vivaldi coordinates, so every
 * catalog node has the zero coordinate a fresh Consul agent reports and updates are checked, then
 * dropped. /v1/coordinate/datacenters reads the WAN view and lives in catalog_api.c. */
#include "http/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* {"Node","Segment","Coord"} for one node: a new reference, NULL when out of memory. */
static json_t *enc_coordinate(const char *node)
{
	return json_pack("{s:s, s:s, s:{s:[i,i,i,i,i,i,i,i], s:f, s:i, s:f}}", "Node", node,
			 "Segment", "", "Coord", "Vec", 0, 0, 0, 0, 0, 0, 0, 0, "Error", 1.5,
			 "Adjustment", 0, "Height", 1e-5);
}

static int add_node(void *arg, const struct dg_cat_node *n)
{
	json_t *e = enc_coordinate(n->name);
	return e && json_array_append_new(arg, e) == 0 ? 0 : DG_ENOMEM;
}

static uint64_t nodes_index(struct dg_req *r, dg_catalog *cat)
{
	return dg_cat_index_nodes_locked(cat);
}

static json_t *nodes_build(struct dg_req *r, dg_catalog *cat)
{
	json_t *out = json_array();
	if (out && dg_cat_nodes_walk_locked(cat, add_node, out) != 0) {
		json_decref(out);
		return NULL;
	}
	return out;
}

/* GET /v1/coordinate/nodes: every node, sorted by name; the node table's index, parked on any
 * node change as catalog/nodes is. */
static int coordinate_nodes(struct dg_req *r)
{
	return dg_serve_read(r, DG_TOPIC_NODES, NULL, nodes_index, nodes_build);
}

/* GET /v1/coordinate/node/:node: a one-element array, or 404 with an empty body (Consul writes
 * the status and no body) and the blocking headers, which python-consul reads on every 404. It
 * parks on changes to that node, so a blocking read sees the node appear or go. */
static int coordinate_node(struct dg_req *r)
{
	dg_catalog *cat = dg_http_cat(r);
	dg_cat_rdlock(cat);
	uint64_t seen = dg_cat_last_index(cat);
	uint64_t index = dg_cat_index_nodes_locked(cat);
	if (dg_req_should_block(r, index)) {
		dg_cat_unlock(cat);
		return dg_req_block(r, DG_TOPIC_NODES, r->arg, false, seen);
	}
	const struct dg_cat_node *n = *r->arg ? dg_cat_node_find_locked(cat, r->arg) : NULL;
	json_t *out = n ? json_pack("[o]", enc_coordinate(n->name)) : NULL;
	dg_cat_unlock(cat);
	if (!n)
		return dg_reply_raw(r, 404, "", 0, NULL, index);
	if (!out)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json(r, 200, out, index);
}

/* ---- PUT /v1/coordinate/update ---- */

static void type_error(char *err, size_t len, json_t *v, const char *field, const char *type)
{
	snprintf(err, len,
		 "Request decode failed: json: cannot unmarshal %s into Go struct field "
		 "CoordinateUpdateRequest.%s of type %s",
		 dg_json_kind(v), field, type);
}

/* The checks Go's decoder makes on structs.CoordinateUpdateRequest (field types only; unknown
 * fields are ignored, consul-api.md §1.3). Returns 0 or DG_EINVAL with Consul's text in err. */
static int check_update(json_t *body, char *err, size_t len)
{
	static const char *const strings[] = {"Datacenter", "Node", "Segment"};
	static const char *const reals[] = {"Error", "Adjustment", "Height"};
	if (json_is_null(body))
		return 0;
	if (!json_is_object(body)) {
		snprintf(err, len,
			 "Request decode failed: json: cannot unmarshal %s into Go value of type "
			 "structs.CoordinateUpdateRequest",
			 dg_json_kind(body));
		return DG_EINVAL;
	}
	for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
		json_t *v = dg_jget(body, strings[i], NULL);
		if (v && !json_is_null(v) && !json_is_string(v)) {
			type_error(err, len, v, strings[i], "string");
			return DG_EINVAL;
		}
	}
	json_t *coord = dg_jget(body, "Coord", NULL);
	if (!coord || json_is_null(coord))
		return 0;
	if (!json_is_object(coord)) {
		type_error(err, len, coord, "Coord", "coordinate.Coordinate");
		return DG_EINVAL;
	}
	json_t *vec = dg_jget(coord, "Vec", NULL), *e;
	size_t i;
	if (vec && !json_is_null(vec) && !json_is_array(vec)) {
		type_error(err, len, vec, "Coord.Vec", "[]float64");
		return DG_EINVAL;
	}
	json_array_foreach(vec, i, e)
	{
		if (!json_is_number(e) && !json_is_null(e)) {
			type_error(err, len, e, "Coord.Vec", "float64");
			return DG_EINVAL;
		}
	}
	for (i = 0; i < sizeof(reals) / sizeof(reals[0]); i++) {
		json_t *v = dg_jget(coord, reals[i], NULL);
		if (v && !json_is_null(v) && !json_is_number(v)) {
			char field[32];
			snprintf(field, sizeof(field), "Coord.%s", reals[i]);
			type_error(err, len, v, field, "float64");
			return DG_EINVAL;
		}
	}
	return 0;
}

/* Accepted and dropped: nothing here uses coordinates (?near leaves results unsorted). */
static int coordinate_update(struct dg_req *r)
{
	char err[512];
	json_t *body = dg_decode_body(r->body.data, r->body.len, err, sizeof(err));
	if (!body)
		return dg_reply_text(r, 400, err, 0);
	int rv = check_update(body, err, sizeof(err));
	json_decref(body);
	if (rv != 0)
		return dg_reply_text(r, 400, err, 0);
	return dg_reply_empty(r);
}

const struct dg_route dg_routes_coordinate[] = {
    {"/v1/coordinate/nodes", false, DG_GET, coordinate_nodes},
    {"/v1/coordinate/node/", true, DG_GET, coordinate_node},
    {"/v1/coordinate/update", false, DG_PUT, coordinate_update},
    {NULL, false, 0, NULL},
};
