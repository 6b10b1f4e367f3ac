/* Catalog records as Consul's JSON objects (consul-api.md §2): the exact field names, [] and {}
 * instead of null, and the fields each form omits. */
#include "http/internal.h"

#include <string.h>
#include <stdlib.h>
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

/* A C string as a JSON string literal, for the hand-built encoders below (the escaping lives in
 * common/util.c). These encoders do not report allocation failures: on one, the string is left
 * out. */
static void buf_json_string(struct dg_buf *b, const char *s)
{
	(void)dg_buf_append_json_string(b, s, strlen(s));
}

/* A DirEntry, written by hand: Flags is a uint64 (jansson's integers are signed) and KV reads
 * are hot enough that skipping the json_t tree pays. */
void dg_enc_kv_entry(struct dg_buf *b, const struct dg_cat_kv *e)
{
	dg_buf_appendf(b, "{\"LockIndex\":%llu,\"Key\":", (unsigned long long)e->lock_index);
	buf_json_string(b, e->key);
	dg_buf_appendf(b, ",\"Flags\":%llu,\"Value\":", (unsigned long long)e->flags);
	if (e->value_len) {
		char *v = dg_base64_encode(e->value, e->value_len);
		if (v) {
			dg_buf_append(b, "\"", 1);
			dg_buf_append(b, v, strlen(v));
			dg_buf_append(b, "\"", 1);
			free(v);
		} else {
			dg_buf_append(b, "null", 4);
		}
	} else {
		dg_buf_append(b, "null", 4);
	}
	if (e->session) {
		dg_buf_append(b, ",\"Session\":", 11);
		buf_json_string(b, e->session);
	}
	dg_buf_appendf(b, ",\"CreateIndex\":%llu,\"ModifyIndex\":%llu}",
		       (unsigned long long)e->create_index, (unsigned long long)e->modify_index);
}
