/* /v1/kv: GET (single, recurse, keys with separator, raw), PUT (flags, cas, acquire, release) and
 * DELETE (recurse, cas), with blocking queries on a key or a prefix. */
#include "http/internal.h"

#include <stdlib.h>
#include <string.h>

struct keys_walk {
	json_t *out;
	const char *prefix;
	const char *sep;
	char *last; /* last folder emitted, for de-duplication */
};

/* Appends one DirEntry to the JSON array text being built in arg. */
static int add_entry(void *arg, const struct dg_cat_kv *e)
{
	struct dg_buf *b = arg;
	dg_buf_append(b, b->len > 1 ? "," : "", b->len > 1 ? 1 : 0);
	dg_enc_kv_entry(b, e);
	return 0;
}

/* Answers a DirEntry array built as text; ?pretty re-indents it through jansson. */
static int reply_entries(struct dg_req *r, struct dg_buf *b, uint64_t index)
{
	size_t len;
	dg_buf_append(b, "]", 1);
	char *text = dg_buf_steal(b, &len);
	if (r->q.pretty) {
		json_t *v = json_loadb(text, len, 0, NULL);
		free(text);
		return dg_reply_json(r, 200, v, index);
	}
	return dg_reply_json_text(r, 200, text, len, index);
}

static int add_key(void *arg, const struct dg_cat_kv *e)
{
	struct keys_walk *w = arg;
	if (w->sep && *w->sep) {
		const char *rest = e->key + strlen(w->prefix);
		const char *s = strstr(rest, w->sep);
		if (s) {
			size_t n = (size_t)(s - e->key) + strlen(w->sep);
			if (w->last && strlen(w->last) == n && strncmp(w->last, e->key, n) == 0)
				return 0;
			free(w->last);
			w->last = dg_strndup(e->key, n);
			json_array_append_new(w->out, json_stringn(e->key, n));
			return 0;
		}
	}
	json_array_append_new(w->out, json_string(e->key));
	return 0;
}

static int kv_get(struct dg_req *r)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *key = r->arg;
	bool prefix = r->q.recurse || r->q.keys;
	if (!*key && !prefix)
		return dg_reply_text(r, 400, "Missing key name", 0);
	dg_cat_rdlock(cat);
	uint64_t seen = dg_cat_last_index(cat);
	uint64_t index = dg_cat_index_kv_locked(cat, key, prefix);
	if (dg_req_should_block(r, index)) {
		dg_cat_unlock(cat);
		return dg_req_block(r, DG_TOPIC_KV, key, prefix, seen);
	}
	if (r->q.keys) {
		struct keys_walk w = {.out = json_array(), .prefix = key, .sep = r->q.separator};
		dg_cat_kv_walk_locked(cat, key, add_key, &w);
		dg_cat_unlock(cat);
		free(w.last);
		if (json_array_size(w.out) == 0 && *key) {
			json_decref(w.out);
			return dg_reply_text(r, 404, "", index);
		}
		return dg_reply_json(r, 200, w.out, index);
	}
	if (r->q.recurse) {
		struct dg_buf b;
		dg_buf_init(&b);
		dg_buf_append(&b, "[", 1);
		dg_cat_kv_walk_locked(cat, key, add_entry, &b);
		dg_cat_unlock(cat);
		if (b.len == 1) {
			dg_buf_fini(&b);
			return dg_reply_text(r, 404, "", index);
		}
		return reply_entries(r, &b, index);
	}
	const struct dg_cat_kv *e = dg_cat_kv_find_locked(cat, key);
	if (!e) {
		dg_cat_unlock(cat);
		return dg_reply_text(r, 404, "", index);
	}
	if (r->q.raw) {
		int rv = dg_reply_raw(r, 200, e->value ? (const void *)e->value : "", e->value_len,
				      "text/plain; charset=utf-8", index);
		dg_cat_unlock(cat);
		return rv;
	}
	struct dg_buf b;
	dg_buf_init(&b);
	dg_buf_append(&b, "[", 1);
	add_entry(&b, e);
	dg_cat_unlock(cat);
	return reply_entries(r, &b, index);
}

/* "true"/"false" as Consul answers writes to /v1/kv. */
static int reply_write_bool(struct dg_req *r)
{
	json_t *res = r->write_result;
	if (r->write_status != 0 || json_object_get(res, "Error"))
		return dg_reply_write_error(r);
	return dg_reply_json(r, 200, json_boolean(json_is_true(json_object_get(res, "Ok"))), 0);
}

static int conflicting(struct dg_req *r)
{
	const char *q = strchr(r->url, '?');
	(void)q;
	return dg_reply_text(r, 400, "Conflicting flags: cas, acquire and release are exclusive\n",
			     0);
}

static int kv_put(struct dg_req *r)
{
	if (r->write_done)
		return reply_write_bool(r);
	const char *key = r->arg;
	if (!*key)
		return dg_reply_text(r, 400, "Missing key name", 0);
	if (strlen(key) > DG_MAX_KEY_LEN)
		return dg_reply_textf(r, 400, 0, "Key too long (%zu > %d bytes)", strlen(key),
				      DG_MAX_KEY_LEN);
	if (r->body.len > DG_MAX_KV_VALUE || r->body_too_big)
		return dg_reply_textf(
			r, 413, 0,
			"Request body(%zu bytes) too large, max size: %d bytes. See "
			"https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
			r->body.len, DG_MAX_KV_VALUE);
	const char *flags_s = dg_req_arg(r, "flags");
	const char *cas_s = dg_req_arg(r, "cas");
	const char *acq = dg_req_arg(r, "acquire");
	const char *rel = dg_req_arg(r, "release");
	uint64_t flags = 0, cas = 0;
	if ((cas_s != NULL) + (acq != NULL) + (rel != NULL) > 1)
		return conflicting(r);
	if (flags_s && dg_parse_u64(flags_s, &flags) != 0)
		return dg_reply_textf(r, 500, 0, "strconv.ParseUint: parsing \"%s\": invalid syntax",
				      flags_s);
	if (cas_s && dg_parse_u64(cas_s, &cas) != 0)
		return dg_reply_textf(r, 500, 0, "strconv.ParseUint: parsing \"%s\": invalid syntax",
				      cas_s);
	const char *verb = cas_s ? "cas" : acq ? "lock" : rel ? "unlock" : "set";
	const char *session = acq ? acq : rel;
	json_t *cmd = dg_cmd_kv(verb, key, (const uint8_t *)r->body.data, r->body.len, flags, cas,
				session);
	if (!cmd)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_req_write(r, cmd);
}

static int kv_delete(struct dg_req *r)
{
	if (r->write_done)
		return reply_write_bool(r);
	const char *key = r->arg;
	const char *cas_s = dg_req_arg(r, "cas");
	uint64_t cas = 0;
	if (cas_s && r->q.recurse)
		return conflicting(r);
	if (cas_s && dg_parse_u64(cas_s, &cas) != 0)
		return dg_reply_textf(r, 500, 0, "strconv.ParseUint: parsing \"%s\": invalid syntax",
				      cas_s);
	if (!*key && !r->q.recurse)
		return dg_reply_text(r, 400, "Missing key name", 0);
	const char *verb = r->q.recurse ? "delete-tree" : cas_s ? "delete-cas" : "delete";
	json_t *cmd = dg_cmd_kv(verb, key, NULL, 0, 0, cas, NULL);
	if (!cmd)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_req_write(r, cmd);
}

static int kv(struct dg_req *r)
{
	switch (r->method) {
	case DG_GET:
		return kv_get(r);
	case DG_PUT:
	case DG_POST:
		return kv_put(r);
	default:
		return kv_delete(r);
	}
}

const struct dg_route dg_routes_kv[] = {
	{"/v1/kv/", true, DG_GET | DG_PUT | DG_DELETE, kv},
	{"/v1/kv", false, DG_GET | DG_PUT | DG_DELETE, kv},
	{NULL, false, 0, NULL},
};
