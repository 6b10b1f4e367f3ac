/* /v1/catalog: register and deregister (consul-api.md §4), datacenters, and the blocking reads
 * nodes, services, service/:name, node/:node and node-services/:node; also
 * /v1/coordinate/datacenters, which reads the same WAN view as catalog/datacenters.
 *
 * Writes decode the body with Go's rules (case-insensitive keys, null for any object or array,
 * unknown fields ignored), validate with Consul's texts and propose one canonical command, so the
 * FSM never sees client spellings. Reads build their JSON under the catalog read lock and encode
 * it after the lock is released (the catalog never mutates a json_t it has stored, and references
 * taken under the lock keep what we point at alive); the encoded body is kept in the response
 * cache (cache.c) for its index, so repeated reads cost one copy.
 *
 * ?filter (go-bexpr) is parsed by query.c but not evaluated yet: every read here ignores it and
 * answers unfiltered. ?near is ignored too (no coordinates): the order stays by name. */
#include "http/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- shared ---- */

/* True when dc names a datacenter other than ours. dc may be NULL or "". */
static bool foreign_dc(struct dg_req *r, const char *dc)
{
	return dc && *dc && strcmp(dc, dg_http_dc(r)) != 0;
}

/* The body's Datacenter (any case, as Go decodes it; python-consul sends "datacenter"), or NULL
 * when absent or not a string (the decoder then reports the type). Borrowed from body. Register
 * and deregister read only this: Consul ignores ?dc on them (consul-api.md §1.8). */
static const char *body_dc(json_t *body)
{
	json_t *v = json_is_object(body) ? dg_jget(body, "Datacenter", NULL) : NULL;
	return json_string_value(v);
}

/* Reads with ?dc= of another DC are forwarded by dispatch before they get here; this only
 * keeps a handler from ever answering for the wrong DC. */
static int forward_dc(struct dg_req *r)
{
	return dg_req_forward(r, r->q.dc);
}

/* ---- body decoding with Go's encoding/json texts ---- */

/* The first error of one body: 400 for decode errors, 500 for validation (Consul's RPC errors). */
struct rd {
	int status;
	char err[512];
};

static int fail(struct rd *d, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct rd *d, int status, const char *fmt, ...)
{
	if (!d->status) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(d->err, sizeof(d->err), fmt, ap);
		va_end(ap);
		d->status = status;
	}
	return DG_EINVAL;
}


static int bad_type(struct rd *d, const char *where, const char *field, json_t *v,
		    const char *go_type)
{
	return fail(d, 400,
		    "Request decode failed: json: cannot unmarshal %s into Go struct field %s.%s of "
		    "type %s",
		    dg_json_kind(v), where, field, go_type);
}

/* A string field: "" when absent or null. *out points into obj (borrowed). alias may be NULL. */
static int rd_str(struct rd *d, json_t *obj, const char *where, const char *name, const char *alias,
		  const char **out)
{
	json_t *v = dg_jget(obj, name, alias, NULL);
	*out = "";
	if (!v)
		return 0;
	if (!json_is_string(v))
		return bad_type(d, where, name, v, "string");
	*out = json_string_value(v);
	return 0;
}

/* An identifier: a string that must fit the catalog's key limit. */
static int rd_name(struct rd *d, json_t *obj, const char *where, const char *name,
		   const char *alias, const char **out)
{
	int rv;
	if ((rv = rd_str(d, obj, where, name, alias, out)) != 0)
		return rv;
	if (strlen(*out) > DG_MAX_KEY_LEN)
		return fail(d, 400, "%s.%s too long (%zu > %d bytes)", where, name, strlen(*out),
			    DG_MAX_KEY_LEN);
	return 0;
}

static int rd_int(struct rd *d, json_t *obj, const char *where, const char *name, const char *alias,
		  json_int_t *out)
{
	json_t *v = dg_jget(obj, name, alias, NULL);
	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v))
		return bad_type(d, where, name, v, "int");
	*out = json_integer_value(v);
	return 0;
}

static int rd_bool(struct rd *d, json_t *obj, const char *where, const char *name,
		   const char *alias, bool *out)
{
	json_t *v = dg_jget(obj, name, alias, NULL);
	*out = false;
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad_type(d, where, name, v, "bool");
	*out = json_is_true(v);
	return 0;
}

/* map[string]string: a new object (the caller's), {} when absent or null. */
static int rd_strmap(struct rd *d, json_t *obj, const char *where, const char *name,
		     const char *alias, json_t **out)
{
	json_t *v = dg_jget(obj, name, alias, NULL), *e;
	const char *k;
	*out = NULL;
	if (v && !json_is_object(v))
		return bad_type(d, where, name, v, "map[string]string");
	json_t *m = json_object();
	if (!m)
		return fail(d, 500, "out of memory");
	json_object_foreach(v, k, e)
	{
		if (json_is_null(e))
			continue;
		if (!json_is_string(e)) {
			json_decref(m);
			return bad_type(d, where, name, e, "string");
		}
		json_object_set(m, k, e);
	}
	*out = m;
	return 0;
}

/* []string: a new array (the caller's), [] when absent or null. */
static int rd_strlist(struct rd *d, json_t *obj, const char *where, const char *name,
		      const char *alias, const char *alias2, json_t **out)
{
	json_t *v = dg_jget(obj, name, alias, alias2, NULL), *e;
	size_t i;
	*out = NULL;
	if (v && !json_is_array(v))
		return bad_type(d, where, name, v, "[]string");
	json_t *a = json_array();
	if (!a)
		return fail(d, 500, "out of memory");
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e)) {
			json_decref(a);
			return bad_type(d, where, name, e, "string");
		}
		json_array_append(a, e);
	}
	*out = a;
	return 0;
}

/* A duration: a Go duration string or nanoseconds; 0 when absent. Tries each alias in turn. */
static int rd_duration(struct rd *d, json_t *obj, const char *where, const char *name,
		       const char *alias, const char *alias2, int64_t *ns)
{
	json_t *v = dg_jget(obj, name, alias, alias2, NULL);
	*ns = 0;
	if (!v)
		return 0;
	if (json_is_string(v)) {
		if (dg_jduration(v, ns) != 0)
			return fail(d, 400, "Request decode failed: time: invalid duration \"%s\"",
				    json_string_value(v));
		return 0;
	}
	if (!json_is_number(v))
		return bad_type(d, where, name, v, "time.Duration");
	return dg_jduration(v, ns) == 0 ? 0 : bad_type(d, where, name, v, "time.Duration");
}

/* go-uuid's ParseUUID with its texts: 0 when valid, else DG_EINVAL and the reason in buf. */
static int uuid_check(const char *s, char *buf, size_t len)
{
	if (strlen(s) != 36) {
		snprintf(buf, len, "uuid string is wrong length");
		return DG_EINVAL;
	}
	if (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		snprintf(buf, len, "uuid is improperly formatted");
		return DG_EINVAL;
	}
	for (int i = 0; i < 36; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == 8 || i == 13 || i == 18 || i == 23)
			continue;
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
			/* encoding/hex's InvalidByteError */
			if (c >= 0x20 && c < 0x7f)
				snprintf(buf, len, "encoding/hex: invalid byte: U+%04X '%c'", c, c);
			else
				snprintf(buf, len, "encoding/hex: invalid byte: U+%04X", c);
			return DG_EINVAL;
		}
	}
	return 0;
}

/* ---- register ---- */

/* HealthCheckDefinition fields as Consul stores them (omitempty; durations as Go strings). */
enum def_type { DEF_STR, DEF_BOOL, DEF_DUR, DEF_UINT, DEF_LIST, DEF_HEADER };
static const struct {
	const char *name, *alias, *alias2;
	enum def_type type;
} def_fields[] = {
	{"HTTP", NULL, NULL, DEF_STR},
	{"Header", NULL, NULL, DEF_HEADER},
	{"Method", NULL, NULL, DEF_STR},
	{"Body", NULL, NULL, DEF_STR},
	{"DisableRedirects", "disable_redirects", NULL, DEF_BOOL},
	{"TLSServerName", "tls_server_name", NULL, DEF_STR},
	{"TLSSkipVerify", "tls_skip_verify", NULL, DEF_BOOL},
	{"TCP", NULL, NULL, DEF_STR},
	{"TCPUseTLS", "tcp_use_tls", NULL, DEF_BOOL},
	{"UDP", NULL, NULL, DEF_STR},
	{"H2PING", NULL, NULL, DEF_STR},
	{"H2PingUseTLS", "h2ping_use_tls", NULL, DEF_BOOL},
	{"OSService", "os_service", NULL, DEF_STR},
	{"Interval", "IntervalDuration", NULL, DEF_DUR},
	{"OutputMaxSize", "output_max_size", NULL, DEF_UINT},
	{"Timeout", "TimeoutDuration", NULL, DEF_DUR},
	{"DeregisterCriticalServiceAfter", "deregister_critical_service_after",
	 "DeregisterCriticalServiceAfterDuration", DEF_DUR},
	{"ScriptArgs", "script_args", "args", DEF_LIST},
	{"DockerContainerID", "docker_container_id", NULL, DEF_STR},
	{"Shell", NULL, NULL, DEF_STR},
	{"GRPC", NULL, NULL, DEF_STR},
	{"GRPCUseTLS", "grpc_use_tls", NULL, DEF_BOOL},
	{"AliasNode", "alias_node", NULL, DEF_STR},
	{"AliasService", "alias_service", NULL, DEF_STR},
	{"TTL", NULL, NULL, DEF_DUR},
};

/* The canonical Definition of one check (a new object, the caller's). */
static int decode_definition(struct rd *d, json_t *jd, json_t **out)
{
	static const char *where = "HealthCheck.Definition";
	json_t *def = json_object();
	int rv = 0;
	*out = NULL;
	if (!def)
		return fail(d, 500, "out of memory");
	if (jd && !json_is_object(jd)) {
		json_decref(def);
		return bad_type(d, "HealthCheck", "Definition", jd, "structs.HealthCheckDefinition");
	}
	for (size_t i = 0; i < sizeof(def_fields) / sizeof(def_fields[0]) && rv == 0; i++) {
		const char *name = def_fields[i].name;
		const char *a1 = def_fields[i].alias, *a2 = def_fields[i].alias2;
		switch (def_fields[i].type) {
		case DEF_STR: {
			const char *s;
			if ((rv = rd_str(d, jd, where, name, a1, &s)) == 0 && *s)
				json_object_set_new(def, name, json_string(s));
			break;
		}
		case DEF_BOOL: {
			bool b;
			if ((rv = rd_bool(d, jd, where, name, a1, &b)) == 0 && b)
				json_object_set_new(def, name, json_true());
			break;
		}
		case DEF_UINT: {
			json_int_t n;
			if ((rv = rd_int(d, jd, where, name, a1, &n)) == 0 && n < 0)
				rv = bad_type(d, where, name, dg_jget(jd, name, a1, NULL), "uint");
			if (rv == 0 && n > 0)
				json_object_set_new(def, name, json_integer(n));
			break;
		}
		case DEF_DUR: {
			int64_t ns;
			char buf[64];
			if ((rv = rd_duration(d, jd, where, name, a1, a2, &ns)) == 0 && ns != 0) {
				if (dg_duration_format(ns, buf, sizeof(buf)) != 0)
					rv = fail(d, 400, "Request decode failed: bad %s", name);
				else
					json_object_set_new(def, name, json_string(buf));
			}
			break;
		}
		case DEF_LIST: {
			json_t *l;
			if ((rv = rd_strlist(d, jd, where, name, a1, a2, &l)) == 0) {
				if (json_array_size(l))
					json_object_set(def, name, l);
				json_decref(l);
			}
			break;
		}
		case DEF_HEADER: {
			json_t *h = dg_jget(jd, name, NULL), *vals, *e;
			const char *k;
			size_t j;
			if (!h)
				break;
			if (!json_is_object(h)) {
				rv = bad_type(d, where, name, h, "map[string][]string");
				break;
			}
			json_object_foreach(h, k, vals)
			{
				if (json_is_null(vals))
					continue;
				if (!json_is_array(vals)) {
					rv = bad_type(d, where, name, vals, "[]string");
					break;
				}
				json_array_foreach(vals, j, e)
				{
					if (!json_is_string(e))
						rv = bad_type(d, where, name, e, "string");
				}
			}
			if (rv == 0 && json_object_size(h))
				json_object_set(def, name, h);
			break;
		}
		}
	}
	if (rv != 0) {
		json_decref(def);
		return rv;
	}
	*out = def;
	return 0;
}

/* CheckType.Type() of Consul: what a definition would run as ("" when nothing). */
static const char *definition_type(json_t *def)
{
#define HAS(f) (json_object_get(def, f) != NULL)
	bool iv = HAS("Interval");
	if (HAS("GRPC") && iv)
		return "grpc";
	if (HAS("HTTP") && iv)
		return "http";
	if (HAS("TTL"))
		return "ttl";
	if (HAS("TCP") && iv)
		return "tcp";
	if (HAS("UDP") && iv)
		return "udp";
	if (HAS("AliasNode") || HAS("AliasService"))
		return "alias";
	if (HAS("DockerContainerID") && iv)
		return "docker";
	if (HAS("ScriptArgs") && iv)
		return "script";
	if (HAS("H2PING") && iv)
		return "h2ping";
	if (HAS("OSService") && iv)
		return "os_service";
	return "";
#undef HAS
}

/* One HealthCheck of a register body, canonical (a new object appended to checks). */
static int decode_check(struct rd *d, json_t *jc, const char *where, const char *node,
			json_t *checks)
{
	const char *cnode, *id, *name, *status, *notes, *output, *sid, *type;
	json_t *def;
	int rv;
	if (!json_is_object(jc))
		return bad_type(d, "RegisterRequest", where, jc, "structs.HealthCheck");
	if ((rv = rd_name(d, jc, "HealthCheck", "Node", NULL, &cnode)) != 0 ||
	    (rv = rd_name(d, jc, "HealthCheck", "CheckID", "check_id", &id)) != 0 ||
	    (rv = rd_name(d, jc, "HealthCheck", "Name", NULL, &name)) != 0 ||
	    (rv = rd_str(d, jc, "HealthCheck", "Status", NULL, &status)) != 0 ||
	    (rv = rd_str(d, jc, "HealthCheck", "Notes", NULL, &notes)) != 0 ||
	    (rv = rd_str(d, jc, "HealthCheck", "Output", NULL, &output)) != 0 ||
	    (rv = rd_name(d, jc, "HealthCheck", "ServiceID", "service_id", &sid)) != 0 ||
	    (rv = rd_str(d, jc, "HealthCheck", "Type", NULL, &type)) != 0)
		return rv;
	if ((rv = decode_definition(d, dg_jget(jc, "Definition", NULL), &def)) != 0)
		return rv;
	/* checkPreApply: the ID defaults to the name */
	if (!*id)
		id = name;
	if (!*id) {
		json_decref(def);
		return fail(d, 500, "Must provide check ID or name");
	}
	if (*cnode && strcasecmp(cnode, node) != 0) {
		json_decref(def);
		return fail(d, 500, "Node '%s' for check '%s' doesn't match register request node '%s'",
			    cnode, id, node);
	}
	if (!*status)
		status = "critical";
	if (strcmp(status, "passing") != 0 && strcmp(status, "warning") != 0 &&
	    strcmp(status, "critical") != 0) {
		json_decref(def);
		return fail(d, 500, "Status for checks must 'passing', 'warning', 'critical'");
	}
	if (!*type)
		type = definition_type(def);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o}", "CheckID", id,
			      "Name", name, "Status", status, "Notes", notes, "Output", output,
			      "ServiceID", sid, "Type", type, "Node", node, "Definition", def);
	if (!o)
		return fail(d, 500, "out of memory");
	json_array_append_new(checks, o);
	return 0;
}

/* Consul's ipaddr.IsAny on a string. */
static bool is_any_addr(const char *a)
{
	return strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0 || strcmp(a, "[::]") == 0;
}

/* The NodeService of a register body, canonical (a new object, the caller's). */
static int decode_service(struct rd *d, json_t *js, json_t **out)
{
	static const char *where = "RegisterRequest.Service";
	const char *id, *name, *kind, *addr;
	json_int_t port, wp = 1, ww = 1;
	bool eto;
	json_t *svc = NULL, *tags = NULL, *meta = NULL, *tagged = NULL;
	int rv;
	*out = NULL;
	if (!json_is_object(js))
		return bad_type(d, "RegisterRequest", "Service", js, "structs.NodeService");
	if ((rv = rd_name(d, js, where, "ID", NULL, &id)) != 0 ||
	    (rv = rd_name(d, js, where, "Service", NULL, &name)) != 0 ||
	    (rv = rd_str(d, js, where, "Kind", NULL, &kind)) != 0 ||
	    (rv = rd_str(d, js, where, "Address", NULL, &addr)) != 0 ||
	    (rv = rd_int(d, js, where, "Port", NULL, &port)) != 0 ||
	    (rv = rd_bool(d, js, where, "EnableTagOverride", "enable_tag_override", &eto)) != 0)
		return rv;
	json_t *w = dg_jget(js, "Weights", NULL);
	if (w && !json_is_object(w))
		return bad_type(d, where, "Weights", w, "structs.Weights");
	if (w) {
		json_int_t p, q;
		if ((rv = rd_int(d, w, "Weights", "Passing", NULL, &p)) != 0 ||
		    (rv = rd_int(d, w, "Weights", "Warning", NULL, &q)) != 0)
			return rv;
		/* ToServiceNode: weights that fail ValidateWeights fall back to {1,1} */
		if (p >= 1 && q >= 0) {
			wp = p;
			ww = q;
		}
	}
	json_t *jt = dg_jget(js, "TaggedAddresses", "tagged_addresses", NULL), *e;
	const char *k;
	if (jt && !json_is_object(jt))
		return bad_type(d, where, "TaggedAddresses", jt,
				"map[string]structs.ServiceAddress");
	if (!(tagged = json_object()))
		return fail(d, 500, "out of memory");
	json_object_foreach(jt, k, e)
	{
		const char *ta;
		json_int_t tp;
		if (json_is_null(e))
			continue;
		if (!json_is_object(e)) {
			rv = bad_type(d, where, "TaggedAddresses", e, "structs.ServiceAddress");
			goto fail_tagged;
		}
		if ((rv = rd_str(d, e, "ServiceAddress", "Address", NULL, &ta)) != 0 ||
		    (rv = rd_int(d, e, "ServiceAddress", "Port", NULL, &tp)) != 0)
			goto fail_tagged;
		json_object_set_new(tagged, k, json_pack("{s:s, s:I}", "Address", ta, "Port", tp));
	}
	if ((rv = rd_strlist(d, js, where, "Tags", NULL, NULL, &tags)) != 0)
		goto fail_tagged;
	if ((rv = rd_strmap(d, js, where, "Meta", NULL, &meta)) != 0)
		goto fail_tags;
	/* servicePreApply */
	if (!*id)
		id = name;
	if (!*name) {
		rv = *id ? fail(d, 500, "Must provide service name with ID")
			 : fail(d, 500, "Must provide service name (Service.Service)");
		goto fail_meta;
	}
	if (is_any_addr(addr)) {
		rv = fail(d, 500, "Invalid service address");
		goto fail_meta;
	}
	svc = json_pack("{s:s, s:s, s:s, s:o, s:s, s:o, s:o, s:I, s:{s:I, s:I}, s:b}", "ID", id,
			"Service", name, "Kind", kind, "Tags", tags, "Address", addr,
			"TaggedAddresses", tagged, "Meta", meta, "Port", port, "Weights", "Passing",
			wp, "Warning", ww, "EnableTagOverride", eto);
	if (!svc)
		return fail(d, 500, "out of memory"); /* json_pack's o stole the three, even failing */
	*out = svc;
	return 0;

fail_meta:
	json_decref(meta);
fail_tags:
	json_decref(tags);
fail_tagged:
	json_decref(tagged);
	return rv;
}

/* The whole register body as the FSM's "register" command (a new object, the caller's). */
static int decode_register(struct dg_req *r, struct rd *d, json_t *body, json_t **out)
{
	static const char *where = "RegisterRequest";
	const char *dc, *node, *id, *addr;
	bool skip;
	json_t *tagged = NULL, *meta = NULL, *svc = NULL, *checks = NULL, *cmd;
	int rv;
	*out = NULL;
	if (!json_is_object(body))
		return fail(d, 400,
			    "Request decode failed: json: cannot unmarshal %s into Go value of type "
			    "structs.RegisterRequest",
			    dg_json_kind(body));
	if ((rv = rd_str(d, body, where, "Datacenter", NULL, &dc)) != 0 ||
	    (rv = rd_name(d, body, where, "Node", NULL, &node)) != 0 ||
	    (rv = rd_str(d, body, where, "ID", NULL, &id)) != 0 ||
	    (rv = rd_str(d, body, where, "Address", NULL, &addr)) != 0 ||
	    (rv = rd_bool(d, body, where, "SkipNodeUpdate", NULL, &skip)) != 0)
		return rv;
	if ((rv = rd_strmap(d, body, where, "TaggedAddresses", "tagged_addresses", &tagged)) != 0)
		return rv;
	if ((rv = rd_strmap(d, body, where, "NodeMeta", "node_meta", &meta)) != 0)
		goto out;
	json_t *js = dg_jget(body, "Service", NULL);
	if (js && (rv = decode_service(d, js, &svc)) != 0)
		goto out;
	if (!(checks = json_array())) {
		rv = fail(d, 500, "out of memory");
		goto out;
	}
	/* Consul appends the single Check after Checks */
	json_t *jl = dg_jget(body, "Checks", NULL), *jc;
	size_t i;
	if (jl && !json_is_array(jl)) {
		rv = bad_type(d, where, "Checks", jl, "structs.HealthChecks");
		goto out;
	}
	json_array_foreach(jl, i, jc)
	{
		if (!json_is_null(jc) && (rv = decode_check(d, jc, "Checks", node, checks)) != 0)
			goto out;
	}
	if ((jc = dg_jget(body, "Check", NULL)) && (rv = decode_check(d, jc, "Check", node, checks)))
		goto out;

	/* Datacenter is only type-checked here: a body naming another DC was forwarded before
	 * decoding (catalog_register) */
	/* nodePreApply, then the address rule, in Consul's order */
	if (!*node) {
		rv = fail(d, 500, "Must provide node");
		goto out;
	}
	char uerr[96];
	if (*id && uuid_check(id, uerr, sizeof(uerr)) != 0) {
		rv = fail(d, 500, "Bad node ID: %s", uerr);
		goto out;
	}
	if (!*addr && !skip) {
		rv = fail(d, 500, "Must provide address if SkipNodeUpdate is not set");
		goto out;
	}
	cmd = json_pack("{s:s, s:s, s:s, s:s, s:O, s:O, s:b, s:O}", "Op", "register", "Node", node,
			"ID", id, "Address", addr, "TaggedAddresses", tagged, "NodeMeta", meta,
			"SkipNodeUpdate", skip, "Checks", checks);
	if (!cmd) {
		rv = fail(d, 500, "out of memory");
		goto out;
	}
	if (svc)
		json_object_set(cmd, "Service", svc);
	*out = cmd;
out:
	json_decref(tagged);
	json_decref(meta);
	json_decref(svc);
	json_decref(checks);
	return rv;
}

/* What the FSM would refuse after a raft round trip, checked against the current state so the
 * client gets Consul's texts at once: checks bound to a service that will not exist, and
 * SkipNodeUpdate for an unknown node. The apply still checks again (the state may move). */
static int check_against_catalog(struct dg_req *r, struct rd *d, json_t *cmd)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *node = json_string_value(json_object_get(cmd, "Node"));
	json_t *svc = json_object_get(cmd, "Service");
	const char *own = svc ? json_string_value(json_object_get(svc, "ID")) : NULL;
	json_t *checks = json_object_get(cmd, "Checks"), *jc;
	size_t i;
	int rv = 0;
	dg_cat_rdlock(cat);
	bool known = dg_cat_node_find_locked(cat, node) != NULL;
	if (!known && json_is_true(json_object_get(cmd, "SkipNodeUpdate")) &&
	    (svc || json_array_size(checks)))
		rv = fail(d, 500, "failed inserting %s: Missing node registration",
			  svc ? "service" : "check");
	json_array_foreach(checks, i, jc)
	{
		const char *sid = json_string_value(json_object_get(jc, "ServiceID"));
		if (rv || !sid || !*sid || (own && strcmp(own, sid) == 0))
			continue;
		if (!dg_cat_service_find_locked(cat, node, sid))
			rv = fail(d, 500, "failed inserting check: Missing service registration");
	}
	dg_cat_unlock(cat);
	return rv;
}

/* Consul answers catalog writes with JSON true; every failure of the RPC is a 500. */
static int reply_true(struct dg_req *r)
{
	const char *err = json_string_value(json_object_get(r->write_result, "Error"));
	if (err) {
		json_int_t st = json_integer_value(json_object_get(r->write_result, "Status"));
		return dg_reply_text(r, st == 403 ? 403 : 500, err, 0);
	}
	if (r->write_status != 0)
		return dg_reply_write_error(r);
	return dg_reply_json(r, 200, json_true(), 0);
}

static int catalog_register(struct dg_req *r)
{
	if (r->write_done)
		return reply_true(r);
	char err[256];
	struct rd d = {0};
	json_t *cmd = NULL;
	json_t *body = dg_decode_body(r->body.data, r->body.len, err, sizeof(err));
	if (!body)
		return dg_reply_text(r, 400, err, 0);
	const char *dc = body_dc(body);
	if (foreign_dc(r, dc)) {
		/* the remote DC decodes and validates the body, unchanged, as if sent there */
		int rv = dg_req_forward(r, dc);
		json_decref(body);
		return rv;
	}
	decode_register(r, &d, body, &cmd);
	json_decref(body);
	if (!d.status)
		check_against_catalog(r, &d, cmd);
	if (d.status) {
		json_decref(cmd);
		return dg_reply_text(r, d.status, d.err, 0);
	}
	return dg_req_write(r, cmd);
}

static int catalog_deregister(struct dg_req *r)
{
	if (r->write_done)
		return reply_true(r);
	static const char *where = "DeregisterRequest";
	char err[256];
	struct rd d = {0};
	const char *dc = "", *node = "", *sid = "", *cid = "";
	json_t *body = dg_decode_body(r->body.data, r->body.len, err, sizeof(err));
	if (!body)
		return dg_reply_text(r, 400, err, 0);
	if (foreign_dc(r, body_dc(body))) {
		int rv = dg_req_forward(r, body_dc(body));
		json_decref(body);
		return rv;
	}
	if (!json_is_object(body))
		fail(&d, 400,
		     "Request decode failed: json: cannot unmarshal %s into Go value of type "
		     "structs.DeregisterRequest",
		     dg_json_kind(body));
	else if (rd_str(&d, body, where, "Datacenter", NULL, &dc) == 0 &&
		 rd_name(&d, body, where, "Node", NULL, &node) == 0 &&
		 rd_name(&d, body, where, "ServiceID", "service_id", &sid) == 0 &&
		 rd_name(&d, body, where, "CheckID", "check_id", &cid) == 0) {
		if (!*node)
			fail(&d, 500, "Must provide node");
	}
	if (d.status) {
		json_decref(body);
		return dg_reply_text(r, d.status, d.err, 0);
	}
	json_t *cmd = json_pack("{s:s, s:s, s:s, s:s}", "Op", "deregister", "Node", node,
				"ServiceID", sid, "CheckID", cid);
	json_decref(body); /* after the pack: the strings above point into it */
	if (!cmd)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_req_write(r, cmd);
}

/* ---- reads ---- */

/* GET /v1/catalog/datacenters: names, the local DC first, then by the median RTT to each DC's
 * servers (federation orders them). ?detailed (a dcgate extension, presence-based) says per DC
 * whether it is reachable, so a client can tell a DC that does not exist from one that is down. */
static int catalog_datacenters(struct dg_req *r)
{
	bool detailed = dg_req_arg_present(r, "detailed", NULL);
	json_t *out = NULL;
	dg_fed *f = dg_http_fed_acquire(r);
	if (f)
		out = detailed ? dg_fed_datacenters_detailed(f) : dg_fed_datacenters(f);
	dg_http_fed_release(r);
	if (!f && detailed)
		/* no WAN: this DC alone, answered by ourselves */
		out = json_pack("[{s:s, s:b, s:i, s:i, s:i, s:i, s:b}]", "Datacenter",
				dg_http_dc(r), "Reachable", 1, "ServersAlive", 1, "ServersKnown", 1,
				"MedianRTTMs", 0, "LastContactMs", 0, "LeaderKnown", 1);
	else if (!f)
		out = json_pack("[s]", dg_http_dc(r));
	if (!out)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json(r, 200, out, 0);
}

/* The datacenter of a WAN member: its "dc" tag, else what follows the last '.' of its name. */
static const char *member_dc(json_t *m)
{
	const char *dc = json_string_value(json_object_get(json_object_get(m, "Tags"), "dc"));
	if (dc)
		return dc;
	const char *name = json_string_value(json_object_get(m, "Name"));
	const char *dot = name ? strrchr(name, '.') : NULL;
	return dot ? dot + 1 : "";
}

/* GET /v1/coordinate/datacenters: per DC, in catalog/datacenters' order, its alive WAN servers.
 * dcgate keeps no Vivaldi coordinates (it measures RTTs per link instead), so every coordinate
 * is the zero one a fresh Consul server reports (consul-api.md §8). */
static int coordinate_datacenters(struct dg_req *r)
{
	json_t *dcs = NULL, *members = NULL;
	dg_fed *f = dg_http_fed_acquire(r);
	if (f) {
		dcs = dg_fed_datacenters(f);
		members = dg_fed_members(f);
	}
	dg_http_fed_release(r);
	if (!f)
		dcs = json_pack("[s]", dg_http_dc(r));
	json_t *out = json_array();
	size_t i, k;
	json_t *dc, *m;
	json_array_foreach(dcs, i, dc)
	{
		const char *name = json_string_value(dc);
		json_t *coords = json_array();
		if (!name || !coords || !out) {
			json_decref(coords);
			continue;
		}
		json_array_foreach(members, k, m)
		{
			if (json_integer_value(json_object_get(m, "Status")) != 1 ||
			    strcmp(member_dc(m), name) != 0)
				continue;
			json_array_append_new(
			    coords,
			    json_pack("{s:O, s:{s:[i,i,i,i,i,i,i,i], s:f, s:i, s:f}}", "Node",
				      json_object_get(m, "Name"), "Coord", "Vec", 0, 0, 0, 0, 0, 0,
				      0, 0, "Error", 1.5, "Adjustment", 0, "Height", 1e-5));
		}
		json_array_append_new(out, json_pack("{s:s, s:s, s:o}", "Datacenter", name,
						     "AreaID", "WAN", "Coordinates", coords));
	}
	bool complete = out && json_array_size(out) == json_array_size(dcs);
	json_decref(dcs);
	json_decref(members);
	if (!complete) {
		json_decref(out);
		return dg_reply_text(r, 500, "out of memory", 0);
	}
	return dg_reply_json(r, 200, out, 0);
}

struct walk {
	struct dg_req *r;
	dg_catalog *cat;
	json_t *out;
	const char *dc;
};

/* catalog/nodes: depends on the node table only */
static int add_node(void *arg, const struct dg_cat_node *n)
{
	struct walk *w = arg;
	if (dg_node_meta_match(n, w->r->q.node_meta, w->r->q.nnode_meta))
		json_array_append_new(w->out, dg_enc_node(n, w->dc));
	return 0;
}

static uint64_t nodes_index(struct dg_req *r, dg_catalog *cat)
{
	return dg_cat_index_nodes_locked(cat);
}

static json_t *nodes_build(struct dg_req *r, dg_catalog *cat)
{
	struct walk w = {.r = r, .cat = cat, .out = json_array(), .dc = dg_http_dc(r)};
	if (w.out)
		dg_cat_nodes_walk_locked(cat, add_node, &w);
	return w.out;
}

static int catalog_nodes(struct dg_req *r)
{
	if (foreign_dc(r, r->q.dc))
		return forward_dc(r);
	return dg_serve_read(r, DG_TOPIC_NODES, NULL, nodes_index, nodes_build);
}

/* catalog/services: name -> the union of its instances' tags, first-seen order. The walk goes by
 * node, so names are collected unordered and sorted at the end (Go sorts map keys). Names are
 * grouped exactly as spelled, as Consul's ServiceList does. */
struct services_walk {
	struct dg_req *r;
	dg_catalog *cat;
	json_t *names; /* name -> {"tags":[...], "seen":{tag:true}} */
};

static int add_service_tags(void *arg, const struct dg_cat_service *s)
{
	struct services_walk *w = arg;
	if (w->r->q.nnode_meta) {
		const struct dg_cat_node *n = dg_cat_node_find_locked(w->cat, s->node);
		if (!n || !dg_node_meta_match(n, w->r->q.node_meta, w->r->q.nnode_meta))
			return 0;
	}
	json_t *e = json_object_get(w->names, s->name);
	if (!e) {
		e = json_pack("{s:[], s:{}}", "tags", "seen");
		if (!e || json_object_set_new(w->names, s->name, e) != 0)
			return 0;
	}
	json_t *tags = json_object_get(e, "tags"), *seen = json_object_get(e, "seen"), *t;
	size_t i;
	json_array_foreach(s->tags, i, t)
	{
		const char *tv = json_string_value(t);
		if (tv && !json_object_get(seen, tv)) {
			json_object_set_new(seen, tv, json_true());
			json_array_append(tags, t);
		}
	}
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* With ?node-meta the answer also depends on the nodes' Meta. */
static uint64_t services_index(struct dg_req *r, dg_catalog *cat)
{
	uint64_t index = dg_cat_index_services_locked(cat);
	if (r->q.nnode_meta && dg_cat_index_nodes_locked(cat) > index)
		index = dg_cat_index_nodes_locked(cat);
	return index;
}

static json_t *services_build(struct dg_req *r, dg_catalog *cat)
{
	struct services_walk w = {.r = r, .cat = cat, .names = json_object()};
	if (!w.names)
		return NULL;
	dg_cat_services_all_walk_locked(cat, add_service_tags, &w);
	size_t n = json_object_size(w.names), i = 0;
	const char **keys = calloc(n ? n : 1, sizeof(*keys));
	json_t *out = json_object(), *e;
	const char *k;
	if (!keys || !out) {
		free(keys);
		json_decref(out);
		json_decref(w.names);
		return NULL;
	}
	json_object_foreach(w.names, k, e)
		keys[i++] = k;
	qsort(keys, n, sizeof(*keys), cmp_str);
	for (i = 0; i < n; i++)
		json_object_set(out, keys[i],
				json_object_get(json_object_get(w.names, keys[i]), "tags"));
	free(keys);
	json_decref(w.names);
	return out;
}

static int catalog_services(struct dg_req *r)
{
	if (foreign_dc(r, r->q.dc))
		return forward_dc(r);
	unsigned topics = DG_TOPIC_SERVICES | (r->q.nnode_meta ? DG_TOPIC_NODES : 0);
	return dg_serve_read(r, topics, NULL, services_index, services_build);
}

/* catalog/service/:name: the name's index covers its instances and their nodes */
static int add_service_node(void *arg, const struct dg_cat_service *s)
{
	struct walk *w = arg;
	if (!dg_service_has_tags(s, w->r->q.tags, w->r->q.ntags))
		return 0;
	const struct dg_cat_node *n = dg_cat_node_find_locked(w->cat, s->node);
	if (!n || !dg_node_meta_match(n, w->r->q.node_meta, w->r->q.nnode_meta))
		return 0;
	json_array_append_new(w->out, dg_enc_service_node(n, s, w->dc));
	return 0;
}

static uint64_t service_index(struct dg_req *r, dg_catalog *cat)
{
	return dg_cat_index_service_locked(cat, r->arg);
}

static json_t *service_build(struct dg_req *r, dg_catalog *cat)
{
	struct walk w = {.r = r, .cat = cat, .out = json_array(), .dc = dg_http_dc(r)};
	if (w.out)
		dg_cat_service_walk_locked(cat, r->arg, add_service_node, &w);
	return w.out;
}

static int catalog_service(struct dg_req *r)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing service name", 0);
	if (foreign_dc(r, r->q.dc))
		return forward_dc(r);
	return dg_serve_read(r, DG_TOPIC_SERVICE, r->arg, service_index, service_build);
}

/* catalog/node/:node ({id: NodeService}) and catalog/node-services/:node ([NodeService]). Both
 * depend on the node and its services; the index is the larger of the two tables', so a removed
 * service still moves it. The node's own NODES changes wake them, and every SERVICES change
 * (which carries no key). */
static int add_node_service_map(void *arg, const struct dg_cat_service *s)
{
	json_object_set_new(arg, s->id, dg_enc_node_service(s));
	return 0;
}

static int add_node_service_list(void *arg, const struct dg_cat_service *s)
{
	json_array_append_new(arg, dg_enc_node_service(s));
	return 0;
}

static uint64_t node_index(struct dg_req *r, dg_catalog *cat)
{
	uint64_t index = dg_cat_index_nodes_locked(cat);
	if (dg_cat_index_services_locked(cat) > index)
		index = dg_cat_index_services_locked(cat);
	return index;
}

/* An unknown node is JSON null (200), as Consul answers. */
static json_t *node_build(struct dg_req *r, dg_catalog *cat)
{
	const struct dg_cat_node *n = dg_cat_node_find_locked(cat, r->arg);
	if (!n)
		return json_null();
	json_t *svcs = json_object();
	if (svcs)
		dg_cat_node_services_walk_locked(cat, n->name, add_node_service_map, svcs);
	return json_pack("{s:o, s:o}", "Node", dg_enc_node(n, dg_http_dc(r)), "Services", svcs);
}

/* An unknown node is {"Node":null,"Services":[]}, as Consul answers. */
static json_t *node_services_build(struct dg_req *r, dg_catalog *cat)
{
	const struct dg_cat_node *n = dg_cat_node_find_locked(cat, r->arg);
	json_t *svcs = json_array();
	if (n && svcs)
		dg_cat_node_services_walk_locked(cat, n->name, add_node_service_list, svcs);
	return json_pack("{s:o, s:o}", "Node", n ? dg_enc_node(n, dg_http_dc(r)) : json_null(),
			 "Services", svcs);
}

static int node_read(struct dg_req *r, dg_build_fn build)
{
	if (!*r->arg)
		return dg_reply_text(r, 400, "Missing node name", 0);
	if (foreign_dc(r, r->q.dc))
		return forward_dc(r);
	return dg_serve_read(r, DG_TOPIC_NODES | DG_TOPIC_SERVICES, r->arg, node_index, build);
}

static int catalog_node(struct dg_req *r)
{
	return node_read(r, node_build);
}

static int catalog_node_services(struct dg_req *r)
{
	return node_read(r, node_services_build);
}

const struct dg_route dg_routes_catalog[] = {
    {"/v1/catalog/register", false, DG_PUT, catalog_register},
    {"/v1/catalog/deregister", false, DG_PUT, catalog_deregister},
    {"/v1/catalog/datacenters", false, DG_GET, catalog_datacenters},
    {"/v1/catalog/nodes", false, DG_GET, catalog_nodes},
    {"/v1/catalog/services", false, DG_GET, catalog_services},
    {"/v1/catalog/service/", true, DG_GET, catalog_service},
    {"/v1/catalog/node/", true, DG_GET, catalog_node},
    {"/v1/catalog/node-services/", true, DG_GET, catalog_node_services},
    {"/v1/coordinate/datacenters", false, DG_GET, coordinate_datacenters},
    {NULL, false, 0, NULL},
};
