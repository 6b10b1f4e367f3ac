/* Catalog records as Consul's JSON objects (consul-api.md §2): the exact field names, [] and {}
 * instead of null, and the fields each form omits. */
#include "http/internal.h"

#include <string.h>
#include <strings.h>

json_t *dg_enc_node(const struct dg_cat_node *n, const char *dc)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:I, s:I}", "ID", n->id, "Node", n->name,
			 "Address", n->address, "Datacenter", dc, "TaggedAddresses", n->tagged,
			 "Meta", n->meta, "CreateIndex", (json_int_t)n->create_index,
			 "ModifyIndex", (json_int_t)n->modify_index);
}

static void add_service_common(json_t *o, const struct dg_cat_service *s)
{
	if (*s->kind)
		json_object_set_new(o, "Kind", json_string(s->kind));
	json_object_set_new(o, "ID", json_string(s->id));
	json_object_set_new(o, "Service", json_string(s->name));
	json_object_set(o, "Tags", s->tags);
	json_object_set_new(o, "Address", json_string(s->address));
	if (json_object_size(s->tagged))
		json_object_set(o, "TaggedAddresses", s->tagged);
	json_object_set(o, "Meta", s->meta);
}

json_t *dg_enc_node_service(const struct dg_cat_service *s)
{
	json_t *o = json_object();
	add_service_common(o, s);
	if (s->port)
		json_object_set_new(o, "Port", json_integer(s->port));
	json_object_set_new(o, "Weights", json_pack("{s:i, s:i}", "Passing", s->weight_passing,
						   "Warning", s->weight_warning));
	json_object_set_new(o, "EnableTagOverride", json_boolean(s->enable_tag_override));
	json_object_set_new(o, "Proxy", json_pack("{s:{}, s:{}}", "MeshGateway", "Expose"));
	json_object_set_new(o, "Connect", json_object());
	json_object_set_new(o, "CreateIndex", json_integer((json_int_t)s->create_index));
	json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)s->modify_index));
	return o;
}

json_t *dg_enc_agent_service(const struct dg_cat_service *s, const char *dc)
{
	json_t *o = json_object();
	add_service_common(o, s);
	json_object_set_new(o, "Port", json_integer(s->port));
	json_object_set_new(o, "Weights", json_pack("{s:i, s:i}", "Passing", s->weight_passing,
						   "Warning", s->weight_warning));
	json_object_set_new(o, "EnableTagOverride", json_boolean(s->enable_tag_override));
	json_object_set_new(o, "Datacenter", json_string(dc));
	return o;
}

json_t *dg_enc_service_node(const struct dg_cat_node *n, const struct dg_cat_service *s,
			    const char *dc)
{
	json_t *o = json_pack(
		"{s:s, s:s, s:s, s:s, s:O, s:O, s:s, s:s, s:s, s:O, s:s, s:{s:i, s:i}, s:O, s:i, "
		"s:s, s:b, s:{s:{}, s:{}}, s:{}, s:I, s:I}",
		"ID", n->id, "Node", n->name, "Address", n->address, "Datacenter", dc,
		"TaggedAddresses", n->tagged, "NodeMeta", n->meta, "ServiceKind", s->kind,
		"ServiceID", s->id, "ServiceName", s->name, "ServiceTags", s->tags,
		"ServiceAddress", s->address, "ServiceWeights", "Passing", s->weight_passing,
		"Warning", s->weight_warning, "ServiceMeta", s->meta, "ServicePort", s->port,
		"ServiceSocketPath", "", "ServiceEnableTagOverride", s->enable_tag_override,
		"ServiceProxy", "MeshGateway", "Expose", "ServiceConnect", "CreateIndex",
		(json_int_t)s->create_index, "ModifyIndex", (json_int_t)s->modify_index);
	if (o && json_object_size(s->tagged))
		json_object_set(o, "ServiceTaggedAddresses", s->tagged);
	return o;
}

json_t *dg_enc_check(const struct dg_cat_check *ch, const struct dg_cat_service *svc)
{
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s}", "Node",
			      ch->node, "CheckID", ch->id, "Name", ch->name, "Status", ch->status,
			      "Notes", ch->notes, "Output", ch->output, "ServiceID", ch->service_id,
			      "ServiceName", ch->service_name, "ServiceTags",
			      svc ? json_incref(svc->tags) : json_array(), "Type", ch->type);
	if (!o)
		return NULL;
	const char *interval = json_string_value(json_object_get(ch->definition, "Interval"));
	const char *timeout = json_string_value(json_object_get(ch->definition, "Timeout"));
	json_object_set_new(o, "Interval", json_string(interval ? interval : ""));
	json_object_set_new(o, "Timeout", json_string(timeout ? timeout : ""));
	json_object_set_new(o, "ExposedPort", json_integer(0));
	json_object_set(o, "Definition", ch->definition);
	json_object_set_new(o, "CreateIndex", json_integer((json_int_t)ch->create_index));
	json_object_set_new(o, "ModifyIndex", json_integer((json_int_t)ch->modify_index));
	return o;
}

bool dg_service_has_tags(const struct dg_cat_service *s, char *const *tags, size_t ntags)
{
	for (size_t i = 0; i < ntags; i++) {
		bool found = false;
		size_t j;
		json_t *t;
		json_array_foreach(s->tags, j, t)
		{
			if (json_is_string(t) && strcasecmp(json_string_value(t), tags[i]) == 0) {
				found = true;
				break;
			}
		}
		if (!found)
			return false;
	}
	return true;
}

bool dg_node_meta_match(const struct dg_cat_node *n, char *const *pairs, size_t npairs)
{
	for (size_t i = 0; i < npairs; i++) {
		const char *colon = strchr(pairs[i], ':');
		if (!colon)
			return false;
		char key[256];
		size_t kl = (size_t)(colon - pairs[i]);
		if (kl >= sizeof(key))
			return false;
		memcpy(key, pairs[i], kl);
		key[kl] = 0;
		const char *v = json_string_value(json_object_get(n->meta, key));
		if (!v || strcmp(v, colon + 1) != 0)
			return false;
	}
	return true;
}
