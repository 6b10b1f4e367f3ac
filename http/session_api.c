/* /v1/session: create (body decoded with Consul's defaults and checks), destroy and renew, and the
 * blocking reads info/node/list. The session ID is drawn here, before the proposal, so that the
 * raft command is deterministic on every server. */
#include "http/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DG_SESSION_LOCK_DELAY_DEFAULT (15LL * 1000000000LL)
#define DG_SESSION_LOCK_DELAY_MAX     (60LL * 1000000000LL) /* Consul's structs.MaxLockDelay */
#define DG_SESSION_TTL_MIN            (10LL * 1000000000LL)
#define DG_SESSION_TTL_MAX            (86400LL * 1000000000LL)
/* Consul reads a LockDelay below this as seconds ("lockDelayMinThreshold"). */
#define DG_SESSION_LOCK_DELAY_SECONDS_BELOW 1000

/* ---- encoding ---- */

/* Session as in consul-api.md §2. The check arrays are copied, not shared, so the answer owns
 * nothing of the catalog once the read lock is dropped. Returns a new reference. */
static json_t *enc_session(const struct dg_cat_session *s)
{
	json_t *nc = json_is_array(s->node_checks) ? json_deep_copy(s->node_checks) : json_array();
	json_t *sc = json_is_array(s->service_checks) && json_array_size(s->service_checks)
			     ? json_deep_copy(s->service_checks)
			     : json_null();
	return json_pack("{s:s, s:s, s:s, s:I, s:s, s:s, s:o, s:o, s:O, s:I, s:I}", "ID", s->id,
			 "Name", s->name, "Node", s->node, "LockDelay",
			 (json_int_t)s->lock_delay_ns, "Behavior", s->behavior, "TTL", s->ttl,
			 "NodeChecks", nc, "ServiceChecks", sc, "Checks", nc, "CreateIndex",
			 (json_int_t)s->create_index, "ModifyIndex", (json_int_t)s->modify_index);
}

/* ---- create: body decoding ---- */


static void type_error(char *err, size_t len, json_t *v, const char *field, const char *type)
{
	snprintf(err, len,
		 "Request decode failed: json: cannot unmarshal %s into Go struct field "
		 "Session.%s of type %s",
		 dg_json_kind(v), field, type);
}

/* A string field: "" when absent or null. Returns 0 or DG_EINVAL with the text in err. */
static int body_str(json_t *body, const char *field, const char **out, char *err, size_t len)
{
	json_t *v = dg_jget(body, field, NULL);
	*out = "";
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		type_error(err, len, v, field, "string");
		return DG_EINVAL;
	}
	*out = json_string_value(v);
	if (strlen(*out) > DG_MAX_KEY_LEN) {
		snprintf(err, len, "%s too long (%zu > %d bytes)", field, strlen(*out),
			 DG_MAX_KEY_LEN);
		return DG_EINVAL;
	}
	return 0;
}

/* Appends the check IDs of field (an array of strings) to out, skipping duplicates. *given is set
 * when the field is present and not null: an explicit [] means "no checks". */
static int body_checks(json_t *body, const char *field, json_t *out, bool *given, char *err,
		       size_t len)
{
	json_t *v = dg_jget(body, field, NULL);
	size_t i, j;
	json_t *e, *have;
	if (!v)
		return 0;
	if (!json_is_array(v)) {
		type_error(err, len, v, field, "[]types.CheckID");
		return DG_EINVAL;
	}
	*given = true;
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e)) {
			type_error(err, len, e, field, "types.CheckID");
			return DG_EINVAL;
		}
		bool dup = false;
		json_array_foreach(out, j, have)
		{
			if (strcmp(json_string_value(have), json_string_value(e)) == 0)
				dup = true;
		}
		if (!dup)
			json_array_append(out, e);
	}
	return 0;
}

/* ServiceChecks: [{"ID","Namespace"}] into canonical field names. Returns a new reference (an
 * array, possibly empty) or NULL with err filled. */
static json_t *body_service_checks(json_t *body, char *err, size_t len)
{
	json_t *v = dg_jget(body, "ServiceChecks", NULL);
	json_t *out = json_array();
	size_t i;
	json_t *e;
	if (!out || !v)
		return out;
	if (!json_is_array(v)) {
		type_error(err, len, v, "ServiceChecks", "[]structs.ServiceCheck");
		json_decref(out);
		return NULL;
	}
	json_array_foreach(v, i, e)
	{
		if (!json_is_object(e)) {
			type_error(err, len, e, "ServiceChecks", "structs.ServiceCheck");
			json_decref(out);
			return NULL;
		}
		json_t *id = dg_jget(e, "ID", NULL), *ns = dg_jget(e, "Namespace", NULL);
		if ((id && !json_is_string(id)) || (ns && !json_is_string(ns))) {
			type_error(err, len, id && !json_is_string(id) ? id : ns,
				   "ServiceChecks", "string");
			json_decref(out);
			return NULL;
		}
		json_array_append_new(out, json_pack("{s:s, s:s}", "ID", dg_jstr(id), "Namespace",
						     dg_jstr(ns)));
	}
	return out;
}

/* Go's time.ParseDuration error text for a string it refused. */
static const char *duration_error(const char *text)
{
	return text[strspn(text, "+-0123456789.")] == 0 && strpbrk(text, "0123456789")
		       ? "time: missing unit in duration"
		       : "time: invalid duration";
}

/* LockDelay, Consul's FixupLockDelay: a Go duration string or nanoseconds, and either one below
 * 1000 is read as seconds. Larger than 60s is clamped, as Consul clamps when it applies it. */
static int body_lock_delay(json_t *body, int64_t *out, char *err, size_t len)
{
	json_t *v = dg_jget(body, "LockDelay", NULL);
	int64_t ns = DG_SESSION_LOCK_DELAY_DEFAULT;
	if (v) {
		if (!json_is_string(v) && !json_is_number(v)) {
			type_error(err, len, v, "LockDelay", "time.Duration");
			return DG_EINVAL;
		}
		if (json_is_string(v) && dg_duration_parse(json_string_value(v), &ns) != 0) {
			snprintf(err, len, "Request decode failed: %s \"%s\"",
				 duration_error(json_string_value(v)), json_string_value(v));
			return DG_EINVAL;
		}
		if (json_is_integer(v))
			ns = json_integer_value(v);
		else if (json_is_real(v)) {
			/* clamp before converting: a huge double does not fit an int64 */
			double d = json_real_value(v);
			ns = d < 0 ? 0
			     : d > (double)DG_SESSION_LOCK_DELAY_MAX ? DG_SESSION_LOCK_DELAY_MAX
								     : (int64_t)d;
		}
		if (ns < 0)
			ns = 0;
		if (ns < DG_SESSION_LOCK_DELAY_SECONDS_BELOW)
			ns *= 1000000000LL; /* 0 <= ns < 1000: cannot overflow */
	}
	if (ns > DG_SESSION_LOCK_DELAY_MAX)
		ns = DG_SESSION_LOCK_DELAY_MAX;
	*out = ns;
	return 0;
}

/* TTL: "" (none) or a Go duration between 10s and 24h. Zero ("0s") means none too, as in Consul;
 * it is stored as "" so that no timer is armed for it. */
static int body_ttl(json_t *body, const char **out, char *err, size_t len)
{
	const char *ttl;
	int64_t ns = 0;
	int rv;
	if ((rv = body_str(body, "TTL", &ttl, err, len)) != 0)
		return rv;
	*out = "";
	if (!*ttl)
		return 0;
	if (dg_duration_parse(ttl, &ns) != 0) {
		snprintf(err, len, "Invalid Session TTL '%s': %s \"%s\"", ttl, duration_error(ttl),
			 ttl);
		return DG_EINVAL;
	}
	if (ns == 0)
		return 0;
	if (ns < DG_SESSION_TTL_MIN || ns > DG_SESSION_TTL_MAX) {
		snprintf(err, len, "Invalid Session TTL '%s': must be between [10s=24h0m0s]", ttl);
		return DG_EINVAL;
	}
	*out = ttl;
	return 0;
}

/* Builds {"Op":"session_create","Session":{...}} from the request, with Consul's defaults for
 * every absent field. Returns a new reference, or NULL with a 400 text in err ("out of memory"
 * being the one 500). */
static json_t *create_cmd(struct dg_req *r, char *err, size_t len)
{
	json_t *body = NULL, *checks = NULL, *svc_checks = NULL, *cmd = NULL;
	const char *name, *node, *behavior, *ttl;
	int64_t lock_delay;
	bool checks_given = false;
	char id[37];

	err[0] = 0;
	if (r->body.len > 0) {
		body = dg_decode_body(r->body.data, r->body.len, err, len);
		if (!body)
			goto out;
		if (json_is_null(body)) {
			json_decref(body);
			body = NULL;
		} else if (!json_is_object(body)) {
			snprintf(err, len,
				 "Request decode failed: json: cannot unmarshal %s into Go value of "
				 "type structs.Session",
				 dg_json_kind(body));
			goto out;
		}
	}
	if (body_str(body, "Name", &name, err, len) != 0 ||
	    body_str(body, "Node", &node, err, len) != 0 ||
	    body_str(body, "Behavior", &behavior, err, len) != 0 ||
	    body_ttl(body, &ttl, err, len) != 0 || body_lock_delay(body, &lock_delay, err, len) != 0)
		goto out;
	if (!*node)
		node = dg_http_node(r);
	if (!*behavior)
		behavior = "release";
	if (strcmp(behavior, "release") != 0 && strcmp(behavior, "delete") != 0) {
		snprintf(err, len, "Invalid Behavior setting '%s'", behavior);
		goto out;
	}
	/* NodeChecks is the modern name, Checks the deprecated one; a client may send either (or
	 * both: their union). Neither present means the serfHealth default. */
	if (!(checks = json_array()))
		goto out;
	if (body_checks(body, "NodeChecks", checks, &checks_given, err, len) != 0 ||
	    body_checks(body, "Checks", checks, &checks_given, err, len) != 0)
		goto out;
	if (!checks_given)
		json_array_append_new(checks, json_string("serfHealth"));
	if (!(svc_checks = body_service_checks(body, err, len)))
		goto out;

	dg_uuid_new(id);
	cmd = json_pack("{s:s, s:{s:s, s:s, s:s, s:I, s:s, s:s, s:O, s:O}}", "Op",
			"session_create", "Session", "ID", id, "Name", name, "Node", node,
			"LockDelay", (json_int_t)lock_delay, "Behavior", behavior, "TTL", ttl,
			"NodeChecks", checks, "ServiceChecks", svc_checks);
out:
	if (!cmd && !err[0])
		snprintf(err, len, "out of memory");
	json_decref(svc_checks);
	json_decref(checks);
	json_decref(body);
	return cmd;
}

static int session_create(struct dg_req *r)
{
	char err[512];
	if (r->write_done) {
		json_t *res = r->write_result;
		const char *id = json_string_value(json_object_get(res, "ID"));
		if (r->write_status != 0 || json_object_get(res, "Error") || !id)
			return dg_reply_write_error(r);
		return dg_reply_json(r, 200, json_pack("{s:s}", "ID", id), 0);
	}
	json_t *cmd = create_cmd(r, err, sizeof(err));
	if (!cmd)
		return dg_reply_text(r, strcmp(err, "out of memory") == 0 ? 500 : 400, err, 0);
	return dg_req_write(r, cmd);
}

/* ---- destroy / renew ---- */

static int session_destroy(struct dg_req *r)
{
	if (r->write_done) {
		if (r->write_status != 0 || json_object_get(r->write_result, "Error"))
			return dg_reply_write_error(r);
		return dg_reply_json(r, 200, json_true(), 0);
	}
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing session", 0);
	json_t *cmd = json_pack("{s:s, s:s}", "Op", "session_destroy", "ID", r->arg);
	if (!cmd)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_req_write(r, cmd);
}

static int session_renew(struct dg_req *r)
{
	const char *id = r->arg;
	dg_catalog *cat = dg_http_cat(r);
	if (!*id)
		return dg_reply_text(r, 400, "Missing session", 0);
	/* on a follower this never runs: the renew is passed to the leader (server.c) */
	int rv = dg_lan_session_renew(dg_http_lan(r), id);
	if (rv != 0 && rv != DG_ENOTFOUND)
		return dg_reply_text(r, 500, dg_strerror(rv), 0);
	json_t *out = NULL;
	if (rv == 0) {
		dg_cat_rdlock(cat);
		const struct dg_cat_session *s = dg_cat_session_find_locked(cat, id);
		if (s)
			out = json_pack("[o]", enc_session(s));
		dg_cat_unlock(cat);
	}
	/* also when the session went away between the renew and the read */
	if (!out)
		return dg_reply_textf(r, 404, 0, "Session id '%s' not found", id);
	return dg_reply_json(r, 200, out, 0);
}

/* ---- blocking reads ---- */

struct list_walk {
	json_t *out;
	const char *node; /* NULL: every session */
};

static int add_session(void *arg, const struct dg_cat_session *s)
{
	struct list_walk *w = arg;
	if (!w->node || strcasecmp(s->node, w->node) == 0)
		json_array_append_new(w->out, enc_session(s));
	return 0;
}

/* The three reads differ only in what they select: one ID (info), one node, or all. info parks
 * on its session's key only; the others on any session change. */
static int session_read(struct dg_req *r, const char *id, const char *node)
{
	dg_catalog *cat = dg_http_cat(r);
	dg_cat_rdlock(cat);
	uint64_t seen = dg_cat_last_index(cat);
	uint64_t index = dg_cat_index_sessions_locked(cat);
	if (dg_req_should_block(r, index)) {
		dg_cat_unlock(cat);
		return dg_req_block(r, DG_TOPIC_SESSIONS, id, false, seen);
	}
	json_t *out = json_array();
	if (id) {
		const struct dg_cat_session *s = dg_cat_session_find_locked(cat, id);
		if (s)
			json_array_append_new(out, enc_session(s));
	} else {
		struct list_walk w = {.out = out, .node = node};
		dg_cat_sessions_walk_locked(cat, add_session, &w);
	}
	dg_cat_unlock(cat);
	return dg_reply_json(r, 200, out, index);
}

static int session_info(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing session", 0);
	return session_read(r, r->arg, NULL);
}

static int session_node(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing node name", 0);
	return session_read(r, NULL, r->arg);
}

static int session_list(struct dg_req *r)
{
	return session_read(r, NULL, NULL);
}

/* The argument-taking routes are also listed without their slash so that an empty argument gets
 * Consul's 400 rather than a 404. */
const struct dg_route dg_routes_session[] = {
	{"/v1/session/create", false, DG_PUT, session_create},
	{"/v1/session/destroy/", true, DG_PUT, session_destroy},
	{"/v1/session/destroy", false, DG_PUT, session_destroy},
	{"/v1/session/renew/", true, DG_PUT, session_renew},
	{"/v1/session/renew", false, DG_PUT, session_renew},
	{"/v1/session/info/", true, DG_GET, session_info},
	{"/v1/session/info", false, DG_GET, session_info},
	{"/v1/session/node/", true, DG_GET, session_node},
	{"/v1/session/node", false, DG_GET, session_node},
	{"/v1/session/list", false, DG_GET, session_list},
	{NULL, false, 0, NULL},
};
