/* /v1/agent: the agent-local API of consul-api.md §3 for a single-server datacenter. Reads come
 * from the catalog rows of this node that were registered through this API (Agent:true); writes
 * are catalog commands ("register", "deregister", "check_update") proposed through raft, and the
 * lan agent runs the TCP/HTTP/TTL checks their Definitions describe.
 *
 * Every handler runs on the MHD thread. Catalog rows are read under the read lock and never
 * outlive it: what a handler needs later is encoded to JSON or copied first. */
#include "http/internal.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

/* Checks accepted in one service registration (Check plus Checks). Consul has no limit; the
 * body cap alone would allow ~100k empty objects, each a catalog row. */

/* The node's liveness check belongs to the servers (consul-api.md §13); an agent check with
 * its ID would replace it. Not a Consul text: Consul's servers simply re-assert it. */
#define SERF_RESERVED "Check ID \"serfHealth\" is reserved for the Consul servers"

#define NODE_MAINT_ID	 "_node_maintenance"
#define SERVICE_MAINT_ID "_service_maintenance:"

/* ---- small helpers ---- */

/* A query parameter's value, NULL when absent (or given without '='). */
static const char *qarg(struct dg_req *r, const char *name)
{
	return dg_req_arg(r, name);
}

/* True if the parameter is present at all; *value is "" when it has no value. */
static bool qarg_present(struct dg_req *r, const char *name, const char **value)
{
	return dg_req_arg_present(r, name, value);
}

/* A copy of s fit for a JSON string: invalid UTF-8 bytes become U+FFFD (as Go's encoder does)
 * and the text is cut at a character boundary to at most max input bytes. Query parameters
 * (note=, reason=) are raw bytes; jansson refuses invalid UTF-8. Caller frees; NULL on OOM. */
static char *utf8_clean(const char *s, size_t max)
{
	struct dg_buf b;
	const unsigned char *p = (const unsigned char *)s;
	size_t len = strlen(s), i = 0;
	dg_buf_init(&b);
	if (dg_buf_append(&b, "", 0) != 0)
		return NULL;
	while (i < len && i < max) {
		size_t n = dg_utf8_seq(p + i, len - i);
		int rv;
		if (n == 0) {
			rv = dg_buf_append(&b, "\xef\xbf\xbd", 3);
			n = 1;
		} else if (i + n > max) {
			break;
		} else {
			rv = dg_buf_append(&b, p + i, n);
		}
		if (rv != 0) {
			dg_buf_fini(&b);
			return NULL;
		}
		i += n;
	}
	return dg_buf_steal(&b, &len);
}

/* Go's %q for the strings that appear in Consul's error texts. Writes into buf (len bytes). */
static const char *go_quote(const char *s, char *buf, size_t len)
{
	size_t o = 0;
	if (len < 3)
		return "";
	buf[o++] = '"';
	for (; *s && o + 7 < len; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c == '\n') {
			buf[o++] = '\\';
			buf[o++] = 'n';
		} else if (c == '\t') {
			buf[o++] = '\\';
			buf[o++] = 't';
		} else if (c < 0x20 || c == 0x7f) {
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", c);
		} else {
			buf[o++] = (char)c;
		}
	}
	buf[o++] = '"';
	buf[o] = 0;
	return buf;
}

/* Encodes body (reference taken) as the answer's text: compact or ?pretty, reals in their
 * shortest usual form (Height 1e-05, not 1.0000000000000001e-05). Caller frees; NULL on OOM. */
static char *dump_json(struct dg_req *r, json_t *body, size_t *len)
{
	size_t flags = (r->q.pretty ? JSON_INDENT(4) : JSON_COMPACT) | JSON_ENCODE_ANY |
		       JSON_REAL_PRECISION(15);
	char *text = body ? json_dumps(body, flags) : strdup("null");
	json_decref(body);
	if (!text)
		return NULL;
	*len = strlen(text);
	if (r->q.pretty) {
		char *t = realloc(text, *len + 2);
		if (!t) {
			free(text);
			return NULL;
		}
		text = t;
		text[(*len)++] = '\n';
		text[*len] = 0;
	}
	return text;
}

/* A JSON answer (takes body) with no blocking headers: agent endpoints send no X-Consul-Index. */
static int reply_json(struct dg_req *r, int status, json_t *body)
{
	size_t len;
	char *text = dump_json(r, body, &len);
	if (!text)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_reply_json_text(r, status, text, len, 0);
}

/* A JSON answer with one extra header (X-Consul-ContentHash), which the dg_reply_* family cannot
 * add. */
static int reply_json_header(struct dg_req *r, json_t *body, const char *name, const char *value)
{
	size_t len;
	char *text = dump_json(r, body, &len);
	if (!text)
		return dg_reply_text(r, 500, "out of memory", 0);
	struct dg_resp *resp = r->ops->resp_new(r, text, len, true);
	if (!resp)
		return MHD_NO;
	r->ops->resp_header(resp, "Content-Type", "application/json");
	r->ops->resp_header(resp, name, value);
	return dg_reply_resp(r, 200, resp);
}

/* The answer of a void write, once raft has applied it. */
static int write_answer(struct dg_req *r)
{
	if (r->write_status != 0 || json_object_get(r->write_result, "Error"))
		return dg_reply_write_error(r);
	return dg_reply_empty(r);
}

/* Proposes cmd (taken) or answers 500 if building it failed. */
static int propose(struct dg_req *r, json_t *cmd)
{
	if (!cmd)
		return dg_reply_text(r, 500, "out of memory", 0);
	return dg_req_write(r, cmd);
}

/* A "register" command for rows of this node that leaves the node's own fields alone. */
static json_t *register_cmd(struct dg_req *r)
{
	dg_lan *lan = dg_http_lan(r);
	return json_pack("{s:s, s:s, s:s, s:s, s:b}", "Op", "register", "Node", dg_http_node(r),
			 "Address", dg_lan_address(lan), "ID", dg_lan_node_id(lan),
			 "SkipNodeUpdate", 1);
}

/* This node's service registered through the agent API, or NULL. Read lock held. */
static const struct dg_cat_service *agent_service_locked(struct dg_req *r, const char *id)
{
	const struct dg_cat_service *s =
	    dg_cat_service_find_locked(dg_http_cat(r), dg_http_node(r), id);
	return s && s->agent ? s : NULL;
}

/* This node's check registered through the agent API (maintenance checks included), or NULL. */
static const struct dg_cat_check *agent_check_locked(struct dg_req *r, const char *id)
{
	const struct dg_cat_check *ch =
	    dg_cat_check_find_locked(dg_http_cat(r), dg_http_node(r), id);
	return ch && ch->agent ? ch : NULL;
}

static json_t *encode_check_locked(struct dg_req *r, const struct dg_cat_check *ch)
{
	const struct dg_cat_service *svc =
	    *ch->service_id
		? dg_cat_service_find_locked(dg_http_cat(r), dg_http_node(r), ch->service_id)
		: NULL;
	return dg_enc_check(ch, svc);
}

/* ---- request bodies: Go encoding/json's rules and texts ---- */

struct dec {
	bool failed;
	char err[512];
};


static void dec_type_error(struct dec *d, json_t *v, const char *field, const char *gotype)
{
	if (d->failed)
		return;
	d->failed = true;
	snprintf(
	    d->err, sizeof(d->err),
	    "Request decode failed: json: cannot unmarshal %s into Go struct field %s of type %s",
	    dg_json_kind(v), field, gotype);
}

/* A string field; "" when absent or null. */
static const char *dec_str(struct dec *d, json_t *v, const char *field)
{
	if (!v)
		return "";
	if (!json_is_string(v)) {
		dec_type_error(d, v, field, "string");
		return "";
	}
	return json_string_value(v);
}

static int64_t dec_int(struct dec *d, json_t *v, const char *field)
{
	if (!v)
		return 0;
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v) && json_real_value(v) == (double)(int64_t)json_real_value(v))
		return (int64_t)json_real_value(v);
	dec_type_error(d, v, field, "int");
	return 0;
}

static bool dec_bool(struct dec *d, json_t *v, const char *field)
{
	if (!v)
		return false;
	if (!json_is_boolean(v)) {
		dec_type_error(d, v, field, "bool");
		return false;
	}
	return json_is_true(v);
}

/* A duration: Go string or nanoseconds (dg_jduration). */
static int64_t dec_duration(struct dec *d, json_t *v, const char *field)
{
	int64_t ns = 0;
	if (!v || dg_jduration(v, &ns) == 0)
		return ns;
	if (!d->failed && json_is_string(v)) {
		d->failed = true;
		snprintf(d->err, sizeof(d->err),
			 "Request decode failed: time: invalid duration \"%s\"",
			 json_string_value(v));
	}
	dec_type_error(d, v, field, "time.Duration");
	return 0;
}

/* [string] as a new array; [] when absent or null. */
static json_t *dec_str_array(struct dec *d, json_t *v, const char *field)
{
	size_t i;
	json_t *e;
	if (!v)
		return json_array();
	if (!json_is_array(v)) {
		dec_type_error(d, v, field, "[]string");
		return json_array();
	}
	json_array_foreach(v, i, e)
	{
		if (!json_is_string(e)) {
			dec_type_error(d, e, field, "string");
			return json_array();
		}
	}
	return json_copy(v);
}

/* {string:string} as a new object; {} when absent or null. */
static json_t *dec_str_map(struct dec *d, json_t *v, const char *field)
{
	const char *k;
	json_t *e;
	if (!v)
		return json_object();
	if (!json_is_object(v)) {
		dec_type_error(d, v, field, "map[string]string");
		return json_object();
	}
	json_object_foreach(v, k, e)
	{
		if (!json_is_string(e)) {
			dec_type_error(d, e, field, "string");
			return json_object();
		}
	}
	return json_copy(v);
}

/* The body as a JSON object; NULL after answering 400 (*rv holds the answer). */
static json_t *decode_object(struct dg_req *r, const char *gotype, int *rv)
{
	char err[512];
	json_t *body = dg_decode_body(r->body.data, r->body.len, err, sizeof(err));
	if (!body) {
		*rv = dg_reply_text(r, 400, err, 0);
		return NULL;
	}
	if (!json_is_object(body)) {
		*rv =
		    dg_reply_textf(r, 400, 0,
				   "Request decode failed: json: cannot unmarshal %s into Go value "
				   "of type %s",
				   json_is_null(body) ? "null" : dg_json_kind(body), gotype);
		json_decref(body);
		return NULL;
	}
	return body;
}

/* ---- check definitions (CheckType, consul-api.md §3.1) ----
 * Strings point into the request body, which outlives the command built from them. */
struct check_def {
	const char *id, *name, *notes, *status;
	const char *http, *method, *body, *tls_server_name;
	const char *tcp, *udp, *grpc, *h2ping;
	const char *docker, *shell, *alias_node, *alias_service, *os_service;
	json_t *header; /* borrowed; object or NULL */
	json_t *args;	/* owned; ScriptArgs, NULL when none */
	bool tls_skip_verify, disable_redirects, grpc_use_tls, h2ping_use_tls;
	int64_t ttl, interval, timeout, dcsa, output_max_size;
	bool empty; /* no field set at all: Consul skips such a "Check" */
};

static void check_def_fini(struct check_def *cd)
{
	json_decref(cd->args);
	cd->args = NULL;
}

/* True when v carries no value: null, "", 0, false, [] or {}. */
static bool json_zero(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_NULL:
	case JSON_FALSE:
		return true;
	case JSON_STRING:
		return json_string_length(v) == 0;
	case JSON_INTEGER:
		return json_integer_value(v) == 0;
	case JSON_REAL:
		return json_real_value(v) == 0;
	case JSON_ARRAY:
		return json_array_size(v) == 0;
	case JSON_OBJECT:
		return json_object_size(v) == 0;
	default:
		return false;
	}
}

static void parse_check(struct dec *d, json_t *o, struct check_def *cd)
{
	memset(cd, 0, sizeof(*cd));
	const char *k;
	json_t *v;
	cd->empty = true;
	json_object_foreach(o, k, v)
	{
		if (!json_zero(v))
			cd->empty = false;
	}
	cd->id = dec_str(d, dg_jget(o, "CheckID", "check_id", "ID", NULL), "CheckType.CheckID");
	cd->name = dec_str(d, dg_jget(o, "Name", NULL), "CheckType.Name");
	cd->notes = dec_str(d, dg_jget(o, "Notes", NULL), "CheckType.Notes");
	cd->status = dec_str(d, dg_jget(o, "Status", NULL), "CheckType.Status");
	cd->http = dec_str(d, dg_jget(o, "HTTP", NULL), "CheckType.HTTP");
	cd->method = dec_str(d, dg_jget(o, "Method", NULL), "CheckType.Method");
	cd->body = dec_str(d, dg_jget(o, "Body", NULL), "CheckType.Body");
	cd->tls_server_name = dec_str(d, dg_jget(o, "TLSServerName", "tls_server_name", NULL),
				      "CheckType.TLSServerName");
	cd->tcp = dec_str(d, dg_jget(o, "TCP", NULL), "CheckType.TCP");
	cd->udp = dec_str(d, dg_jget(o, "UDP", NULL), "CheckType.UDP");
	cd->grpc = dec_str(d, dg_jget(o, "GRPC", NULL), "CheckType.GRPC");
	cd->h2ping = dec_str(d, dg_jget(o, "H2PING", NULL), "CheckType.H2PING");
	cd->docker = dec_str(d, dg_jget(o, "DockerContainerID", "docker_container_id", NULL),
			     "CheckType.DockerContainerID");
	cd->shell = dec_str(d, dg_jget(o, "Shell", NULL), "CheckType.Shell");
	cd->alias_node =
	    dec_str(d, dg_jget(o, "AliasNode", "alias_node", NULL), "CheckType.AliasNode");
	cd->alias_service =
	    dec_str(d, dg_jget(o, "AliasService", "alias_service", NULL), "CheckType.AliasService");
	cd->os_service =
	    dec_str(d, dg_jget(o, "OSService", "os_service", NULL), "CheckType.OSService");
	cd->tls_skip_verify = dec_bool(d, dg_jget(o, "TLSSkipVerify", "tls_skip_verify", NULL),
				       "CheckType.TLSSkipVerify");
	cd->disable_redirects =
	    dec_bool(d, dg_jget(o, "DisableRedirects", "disable_redirects", NULL),
		     "CheckType.DisableRedirects");
	cd->grpc_use_tls =
	    dec_bool(d, dg_jget(o, "GRPCUseTLS", "grpc_use_tls", NULL), "CheckType.GRPCUseTLS");
	cd->h2ping_use_tls = dec_bool(d, dg_jget(o, "H2PingUseTLS", "h2ping_use_tls", NULL),
				      "CheckType.H2PingUseTLS");
	cd->ttl = dec_duration(d, dg_jget(o, "TTL", NULL), "CheckType.TTL");
	cd->interval = dec_duration(d, dg_jget(o, "Interval", NULL), "CheckType.Interval");
	cd->timeout = dec_duration(d, dg_jget(o, "Timeout", NULL), "CheckType.Timeout");
	cd->dcsa = dec_duration(
	    d,
	    dg_jget(o, "DeregisterCriticalServiceAfter", "deregister_critical_service_after", NULL),
	    "CheckType.DeregisterCriticalServiceAfter");
	cd->output_max_size = dec_int(d, dg_jget(o, "OutputMaxSize", "output_max_size", NULL),
				      "CheckType.OutputMaxSize");
	json_t *h = dg_jget(o, "Header", NULL);
	if (h && !json_is_object(h))
		dec_type_error(d, h, "CheckType.Header", "map[string][]string");
	else if (h) {
		json_t *vals;
		json_object_foreach(h, k, vals)
		{
			json_decref(dec_str_array(d, vals, "CheckType.Header"));
		}
		cd->header = h;
	}
	json_t *args = dg_jget(o, "ScriptArgs", "script_args", "Args", NULL);
	if (args) {
		json_t *a = dec_str_array(d, args, "CheckType.ScriptArgs");
		if (json_array_size(a))
			cd->args = a;
		else
			json_decref(a);
	}
	/* the legacy "script" key (removed in Consul 1.1; python-consul's Check.script and
	 * Check.docker still send it), mapped as consul-api.md §1.3 suggests */
	const char *script = dec_str(d, dg_jget(o, "Script", NULL), "CheckType.Script");
	if (*script && !cd->args)
		cd->args = json_pack("[s, s, s]", "sh", "-c", script);
}

/* Consul's CheckType.Validate, with the texts of consul-api.md §3.1. NULL when valid. */
static const char *check_invalid(const struct check_def *cd)
{
	bool interval_check = cd->args || *cd->docker || *cd->http || *cd->tcp || *cd->udp ||
			      *cd->grpc || *cd->h2ping || *cd->os_service;
	bool alias = *cd->alias_service != 0;
	if (cd->interval > 0 && cd->ttl > 0)
		return "Interval and TTL cannot both be specified";
	if (interval_check && cd->interval <= 0)
		return "Interval must be > 0 for Script, HTTP, or TCP checks";
	if (!interval_check && !alias && cd->ttl <= 0)
		return "TTL must be > 0 for TTL checks";
	if (cd->output_max_size < 0)
		return "MaxOutputMaxSize must be positive";
	return NULL;
}

/* HealthCheck.Type, in the order Consul's agent tests a CheckType. Only tcp, http and ttl are
 * run by the lan agent; the others keep the status they were registered with. */
static const char *check_type(const struct check_def *cd)
{
	if (cd->ttl > 0)
		return "ttl";
	if (*cd->http)
		return "http";
	if (*cd->tcp)
		return "tcp";
	if (*cd->udp)
		return "udp";
	if (*cd->docker)
		return "docker";
	if (cd->args)
		return "script";
	if (*cd->grpc)
		return "grpc";
	if (*cd->h2ping)
		return "h2ping";
	if (*cd->alias_service)
		return "alias";
	if (*cd->os_service)
		return "os_service";
	return "";
}

static void set_duration(json_t *o, const char *key, int64_t ns)
{
	char buf[64];
	if (ns > 0 && dg_duration_format(ns, buf, sizeof(buf)) == 0)
		json_object_set_new(o, key, json_string(buf));
}

static void set_str_nz(json_t *o, const char *key, const char *v)
{
	if (*v)
		json_object_set_new(o, key, json_string(v));
}

/* HealthCheck.Definition: what the lan agent runs, Go-formatted durations, empties omitted. */
static json_t *check_definition(const struct check_def *cd)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	set_str_nz(o, "HTTP", cd->http);
	set_str_nz(o, "TLSServerName", cd->tls_server_name);
	if (cd->tls_skip_verify)
		json_object_set_new(o, "TLSSkipVerify", json_true());
	if (cd->header && json_object_size(cd->header))
		json_object_set_new(o, "Header", json_deep_copy(cd->header));
	set_str_nz(o, "Method", cd->method);
	set_str_nz(o, "Body", cd->body);
	if (cd->disable_redirects)
		json_object_set_new(o, "DisableRedirects", json_true());
	set_str_nz(o, "TCP", cd->tcp);
	set_str_nz(o, "UDP", cd->udp);
	set_str_nz(o, "H2PING", cd->h2ping);
	if (cd->h2ping_use_tls)
		json_object_set_new(o, "H2PingUseTLS", json_true());
	set_duration(o, "Interval", cd->interval);
	if (cd->output_max_size > 0)
		json_object_set_new(o, "OutputMaxSize", json_integer(cd->output_max_size));
	set_duration(o, "Timeout", cd->timeout);
	set_duration(o, "DeregisterCriticalServiceAfter", cd->dcsa);
	if (cd->args)
		json_object_set(o, "ScriptArgs", cd->args);
	set_str_nz(o, "DockerContainerID", cd->docker);
	set_str_nz(o, "Shell", cd->shell);
	set_str_nz(o, "GRPC", cd->grpc);
	if (cd->grpc_use_tls)
		json_object_set_new(o, "GRPCUseTLS", json_true());
	set_str_nz(o, "AliasNode", cd->alias_node);
	set_str_nz(o, "AliasService", cd->alias_service);
	set_str_nz(o, "OSService", cd->os_service);
	set_duration(o, "TTL", cd->ttl);
	return o;
}

/* One element of a register command's Checks. keep_status: a re-registration with the same
 * definition keeps the last result (service registrations; see check_upsert). */
static json_t *check_cmd(const struct check_def *cd, const char *id, const char *name,
			 const char *service_id, bool keep_status)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b}", "CheckID", id,
			 "Name", name, "Status", *cd->status ? cd->status : "critical", "Notes",
			 cd->notes, "Output", "", "ServiceID", service_id, "Type", check_type(cd),
			 "Definition", check_definition(cd), "Agent", 1, "KeepStatus", keep_status);
}

static bool valid_status(const char *s)
{
	return strcmp(s, "passing") == 0 || strcmp(s, "warning") == 0 || strcmp(s, "critical") == 0;
}

/* Go's net.ParseIP(addr).IsUnspecified(): 0.0.0.0 or ::. */
static bool unspecified_ip(const char *addr)
{
	unsigned char b[16] = {0}, zero[16] = {0};
	if (inet_pton(AF_INET, addr, b) == 1)
		return memcmp(b, zero, 4) == 0;
	if (inet_pton(AF_INET6, addr, b) == 1)
		return memcmp(b, zero, 16) == 0;
	return false;
}

/* ---- GET /v1/agent/self, /v1/agent/members ---- */

/* The serf Member of this server; wan: the WAN pool form "<node>.<dc>" on port 8302. */
static json_t *member_json(struct dg_req *r, bool wan)
{
	dg_lan *lan = dg_http_lan(r);
	if (!wan) {
		/* this agent as LAN gossip shows it: its own tags (role node or consul, expect...) */
		json_t *list = dg_lan_members(lan), *m, *self = NULL;
		size_t i;
		json_array_foreach(list, i, m) if (!self && strcmp(json_string_value(json_object_get(
								       m, "Name")) ?: "",
							   dg_http_node(r)) == 0) self = json_incref(m);
		json_decref(list);
		if (self)
			return self;
	}
	const struct dg_http_config *cfg = dg_http_cfg(r);
	char name[512], port[16], build[128];
	snprintf(name, sizeof(name), "%s%s%s", dg_http_node(r), wan ? "." : "",
		 wan ? dg_http_dc(r) : "");
	snprintf(port, sizeof(port), "%d", dg_lan_config(lan)->server_port);
	snprintf(build, sizeof(build), "%s:dcgate", cfg->consul_version);
	json_t *tags =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "role",
		      "consul", "dc", dg_http_dc(r), "port", port, "id", dg_lan_node_id(lan), "vsn",
		      "2", "vsn_min", "2", "vsn_max", "3", "raft_vsn", "3", "build", build,
		      "bootstrap", "1", "ft_fs", "1", "ft_si", "1");
	if (tags && !wan) {
		json_object_set_new(tags, "segment", json_string(""));
		char wan_port[16];
		snprintf(wan_port, sizeof(wan_port), "%d", dg_lan_config(lan)->serf_wan_port);
		if (dg_lan_config(lan)->serf_wan_port > 0)
			json_object_set_new(tags, "wan_join_port", json_string(wan_port));
	}
	return json_pack("{s:s, s:s, s:i, s:o, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "Name", name,
			 "Addr", dg_lan_address(lan), "Port", wan ? 8302 : 8301, "Tags", tags,
			 "Status", 1, "ProtocolMin", 1, "ProtocolMax", 5, "ProtocolCur", 2,
			 "DelegateMin", 2, "DelegateMax", 5, "DelegateCur", 4);
}

static int agent_members(struct dg_req *r)
{
	/* ?segment and ?filter are accepted and ignored: one server, one (default) segment */
	if (!r->q.wan) {
		json_t *list = dg_lan_members(dg_http_lan(r));
		if (!list)
			return dg_reply_text(r, 500, "out of memory", 0);
		return reply_json(r, 200, list);
	}
	/* the WAN pool as federation sees it; an agent without WAN is in no pool (Consul's
	 * client agents answer null; [] reads the same to every client) */
	dg_fed *f = dg_http_fed_acquire(r);
	json_t *list = f ? dg_fed_members(f) : json_array();
	dg_http_fed_release(r);
	if (!list)
		return dg_reply_text(r, 500, "out of memory", 0);
	return reply_json(r, 200, list);
}

static json_t *strf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static json_t *strf(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return json_string(buf);
}

struct self_counts {
	unsigned services, checks, ttls, monitors;
};

static int count_service(void *arg, const struct dg_cat_service *s)
{
	struct self_counts *c = arg;
	c->services += s->agent;
	return 0;
}

static int count_check(void *arg, const struct dg_cat_check *ch)
{
	struct self_counts *c = arg;
	if (!ch->agent)
		return 0;
	c->checks++;
	c->ttls += strcmp(ch->type, "ttl") == 0;
	c->monitors += strcmp(ch->type, "script") == 0;
	return 0;
}

/* GOARCH spelling of this machine, as a new JSON string. */
static json_t *go_arch(void)
{
	struct utsname u;
	static const struct {
		const char *uname, *go;
	} map[] = {{"x86_64", "amd64"}, {"aarch64", "arm64"}, {"i686", "386"}, {"armv7l", "arm"}};
	if (uname(&u) != 0)
		return json_string("unknown");
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strcmp(u.machine, map[i].uname) == 0)
			return json_string(map[i].go);
	return json_string(u.machine);
}

static json_t *serf_stats(void)
{
	return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "members",
			 "1", "failed", "0", "left", "0", "health_score", "0", "member_time", "1",
			 "event_time", "1", "query_time", "1", "intent_queue", "0", "event_queue",
			 "0", "query_queue", "0", "encrypted", "false", "coordinate_resets", "0");
}

static int agent_self(struct dg_req *r)
{
	const struct dg_http_config *cfg = dg_http_cfg(r);
	dg_catalog *cat = dg_http_cat(r);
	dg_lan *lan = dg_http_lan(r);
	const char *node = dg_http_node(r);
	struct self_counts counts = {0};
	json_t *meta = NULL;

	json_t *config = cfg->config_json ? json_loads(cfg->config_json, 0, NULL) : NULL;
	if (!json_is_object(config)) {
		json_decref(config);
		config = json_object();
	}
	/* what clients read must be there whatever the config text held */
	if (!json_object_get(config, "Datacenter"))
		json_object_set_new(config, "Datacenter", json_string(dg_http_dc(r)));
	if (!json_object_get(config, "PrimaryDatacenter"))
		json_object_set_new(config, "PrimaryDatacenter", json_string(dg_http_dc(r)));
	if (!json_object_get(config, "NodeName"))
		json_object_set_new(config, "NodeName", json_string(node));
	if (!json_object_get(config, "NodeID"))
		json_object_set_new(config, "NodeID", json_string(dg_lan_node_id(lan)));
	if (!json_object_get(config, "Server"))
		json_object_set_new(config, "Server", json_true());
	if (!json_object_get(config, "Version"))
		json_object_set_new(config, "Version", json_string(cfg->consul_version));
	if (!json_object_get(config, "Domain") && cfg->domain)
		json_object_set_new(config, "Domain", json_string(cfg->domain));

	dg_cat_rdlock(cat);
	uint64_t last = dg_cat_last_index(cat);
	dg_cat_node_services_walk_locked(cat, node, count_service, &counts);
	dg_cat_node_checks_walk_locked(cat, node, count_check, &counts);
	const struct dg_cat_node *n = dg_cat_node_find_locked(cat, node);
	if (n)
		meta = json_deep_copy(n->meta);
	dg_cat_unlock(cat);
	if (!meta)
		meta = json_object();

	bool leader = dg_lan_is_leader(lan);
	char leader_addr[128], contact[64] = "0";
	dg_lan_leader(lan, leader_addr, sizeof(leader_addr));
	uint64_t contact_ms = dg_lan_last_contact_ms(lan);
	if (!leader && contact_ms)
		dg_duration_format((int64_t)contact_ms * 1000000, contact, sizeof(contact));
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

	json_t *agent =
	    json_pack("{s:o, s:o, s:o, s:o}", "check_monitors", strf("%u", counts.monitors),
		      "check_ttls", strf("%u", counts.ttls), "checks", strf("%u", counts.checks),
		      "services", strf("%u", counts.services));
	dg_fed *f = dg_http_fed_acquire(r);
	json_t *dcs = f ? dg_fed_datacenters(f) : NULL;
	dg_http_fed_release(r);
	size_t ndcs = json_array_size(dcs) ? json_array_size(dcs) : 1;
	json_decref(dcs);
	json_t *consul =
	    json_pack("{s:s, s:s, s:o, s:s, s:s, s:s}", "acl", "disabled", "bootstrap", "true",
		      "known_datacenters", strf("%zu", ndcs), "leader", leader ? "true" : "false",
		      "leader_addr", leader_addr, "server", "true");
	json_t *raft = json_pack(
	    "{s:o, s:o, s:s, s:s, s:o, s:s, s:s, s:s, s:s, s:s, s:s}", "applied_index",
	    strf("%llu", (unsigned long long)last), "commit_index",
	    strf("%llu", (unsigned long long)last), "fsm_pending", "0", "last_contact", contact,
	    "last_log_index", strf("%llu", (unsigned long long)last), "num_peers", "0",
	    "protocol_version", "3", "protocol_version_max", "3", "protocol_version_min", "0",
	    "state", leader ? "Leader" : "Follower", "latest_configuration_index", "0");
	json_t *runtime = json_pack("{s:s, s:o, s:o, s:o, s:s, s:o}", "os", "linux", "arch",
				    go_arch(), "version", strf("dcgate %s", cfg->version),
				    "cpu_count", strf("%ld", ncpu > 0 ? ncpu : 1), "goroutines",
				    "0", "max_procs", strf("%ld", ncpu > 0 ? ncpu : 1));
	json_t *build =
	    json_pack("{s:s, s:o, s:s, s:s}", "version", cfg->consul_version, "revision",
		      strf("dcgate-%s", cfg->version), "prerelease", "", "version_metadata", "");
	json_t *stats = json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "agent", agent, "consul",
				  consul, "raft", raft, "serf_lan", serf_stats(), "serf_wan",
				  serf_stats(), "runtime", runtime, "build", build);
	/* a fresh server's network coordinate, as Consul reports before any RTT sample */
	json_t *coord = json_pack("{s:[i,i,i,i,i,i,i,i], s:f, s:i, s:f}", "Vec", 0, 0, 0, 0, 0, 0,
				  0, 0, "Error", 1.5, "Adjustment", 0, "Height", 1e-5);
	json_t *self =
	    json_pack("{s:o, s:{}, s:o, s:o, s:o, s:o}", "Config", config, "DebugConfig", "Coord",
		      coord, "Member", member_json(r, false), "Stats", stats, "Meta", meta);
	if (!self)
		return dg_reply_text(r, 500, "out of memory", 0);
	return reply_json(r, 200, self);
}

/* ---- GET /v1/agent/services, /v1/agent/service/:id, /v1/agent/checks ---- */

struct collect {
	struct dg_req *r;
	json_t *out;
};

static int add_agent_service(void *arg, const struct dg_cat_service *s)
{
	struct collect *c = arg;
	if (s->agent)
		json_object_set_new(c->out, s->id, dg_enc_agent_service(s, dg_http_dc(c->r)));
	return 0;
}

static int agent_services(struct dg_req *r)
{
	/* ?filter (go-bexpr) is not evaluated: every local service is returned */
	dg_catalog *cat = dg_http_cat(r);
	struct collect c = {r, json_object()};
	dg_cat_rdlock(cat);
	dg_cat_node_services_walk_locked(cat, dg_http_node(r), add_agent_service, &c);
	dg_cat_unlock(cat);
	return reply_json(r, 200, c.out);
}

static int add_agent_check(void *arg, const struct dg_cat_check *ch)
{
	struct collect *c = arg;
	if (ch->agent)
		json_object_set_new(c->out, ch->id, encode_check_locked(c->r, ch));
	return 0;
}

static int agent_checks(struct dg_req *r)
{
	/* ?filter (go-bexpr) is not evaluated: every local check is returned */
	dg_catalog *cat = dg_http_cat(r);
	struct collect c = {r, json_object()};
	dg_cat_rdlock(cat);
	dg_cat_node_checks_walk_locked(cat, dg_http_node(r), add_agent_check, &c);
	dg_cat_unlock(cat);
	return reply_json(r, 200, c.out);
}

/* X-Consul-ContentHash: FNV-1a 64 of the canonical (sorted-key) encoding. Consul hashes its Go
 * struct instead; clients only compare the value with the one they got before. */
static void content_hash(json_t *o, char out[17])
{
	char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
	uint64_t h = 0xcbf29ce484222325ULL;
	for (const char *p = text ? text : ""; *p; p++) {
		h ^= (unsigned char)*p;
		h *= 0x100000001b3ULL;
	}
	free(text);
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* ?hash blocking: same timing rules as ?index (wait capped at 10 min, 5 min default, jitter). */
static bool hash_should_block(struct dg_req *r)
{
	uint64_t now = dg_now_ms();
	if (r->deadline_ms == 0) {
		uint32_t rnd = 0;
		if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != sizeof(rnd))
			rnd = (uint32_t)now;
		r->deadline_ms = now + dg_query_block_ms(r->q.wait_ns, rnd);
	}
	return now < r->deadline_ms;
}

static int agent_service_get(struct dg_req *r)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *id = r->arg;
	dg_cat_rdlock(cat);
	uint64_t seen = dg_cat_last_index(cat);
	const struct dg_cat_service *s = agent_service_locked(r, id);
	json_t *o = s ? dg_enc_agent_service(s, dg_http_dc(r)) : NULL;
	dg_cat_unlock(cat);
	if (!s)
		return dg_reply_textf(r, 404, 0, "unknown service ID: %s", id);
	if (!o)
		return dg_reply_text(r, 500, "out of memory", 0);
	char hash[17];
	content_hash(o, hash);
	const char *want = qarg(r, "hash");
	if (want && strcmp(want, hash) == 0 && hash_should_block(r)) {
		/* any service change on any node wakes us; the hash decides whether to answer */
		json_decref(o);
		return dg_req_block(r, DG_TOPIC_SERVICES, NULL, false, seen);
	}
	json_object_set_new(o, "ContentHash", json_string(hash));
	return reply_json_header(r, o, "X-Consul-ContentHash", hash);
}

/* ---- PUT /v1/agent/service/register ---- */

/* TaggedAddresses {name:{Address,Port}} normalised to Consul's field names; NULL after a
 * decode error or an unspecified address (text in d). */
static json_t *dec_tagged(struct dec *d, json_t *v, char *bad, size_t badlen)
{
	json_t *out = json_object();
	const char *k;
	json_t *e;
	if (!v)
		return out;
	if (!json_is_object(v)) {
		dec_type_error(d, v, "ServiceDefinition.TaggedAddresses",
			       "map[string]structs.ServiceAddress");
		return out;
	}
	json_object_foreach(v, k, e)
	{
		if (!json_is_object(e)) {
			dec_type_error(d, e, "ServiceDefinition.TaggedAddresses",
				       "structs.ServiceAddress");
			break;
		}
		const char *addr =
		    dec_str(d, dg_jget(e, "Address", NULL), "ServiceAddress.Address");
		int64_t port = dec_int(d, dg_jget(e, "Port", NULL), "ServiceAddress.Port");
		if (unspecified_ip(addr) && !*bad)
			go_quote(k, bad, badlen);
		json_object_set_new(
		    out, k, json_pack("{s:s, s:I}", "Address", addr, "Port", (json_int_t)port));
	}
	return out;
}

/* Consul's structs.ValidateServiceMetadata (agent registrations: no "consul-" keys). */
static bool meta_invalid(json_t *meta, char *err, size_t len)
{
	const char *k;
	json_t *v;
	if (json_object_size(meta) > 64) {
		snprintf(
		    err, len,
		    "Invalid Service Meta: Node metadata cannot contain more than 64 key/value "
		    "pairs");
		return true;
	}
	json_object_foreach(meta, k, v)
	{
		const char *why = NULL;
		bool format_ok = *k != 0;
		for (const char *p = k; *p; p++)
			if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
				format_ok = false;
		if (!*k)
			why = "Key cannot be blank";
		else if (!format_ok)
			why = "Key contains invalid characters";
		else if (strlen(k) > 128)
			why = "Key is too long (limit: 128 characters)";
		else if (strncmp(k, "consul-", 7) == 0)
			why = "Key prefix 'consul-' is reserved for internal use";
		else if (json_string_length(v) > 512)
			why = "Value is too long (limit: 512 characters)";
		if (why) {
			snprintf(
			    err, len,
			    "Invalid Service Meta: Couldn't load metadata pair ('%s', '%s'): %s", k,
			    json_string_value(v), why);
			return true;
		}
	}
	return false;
}

static int service_register(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	int rv = 0;
	json_t *body = decode_object(r, "structs.ServiceDefinition", &rv);
	if (!body)
		return rv;
	struct dec d = {0};
	struct check_def cds[DG_MAX_SERVICE_CHECKS];
	size_t ncd = 0;
	json_t *tags = NULL, *meta = NULL, *tagged = NULL, *cmd = NULL, *checks = NULL;
	char bad_tagged[300] = "", err[1024];
	memset(cds, 0, sizeof(cds));

	const char *name = dec_str(&d, dg_jget(body, "Name", NULL), "ServiceDefinition.Name");
	const char *id = dec_str(&d, dg_jget(body, "ID", NULL), "ServiceDefinition.ID");
	const char *address =
	    dec_str(&d, dg_jget(body, "Address", NULL), "ServiceDefinition.Address");
	const char *kind = dec_str(&d, dg_jget(body, "Kind", NULL), "ServiceDefinition.Kind");
	int64_t port = dec_int(&d, dg_jget(body, "Port", NULL), "ServiceDefinition.Port");
	bool eto = dec_bool(&d, dg_jget(body, "EnableTagOverride", "enable_tag_override", NULL),
			    "ServiceDefinition.EnableTagOverride");
	tags = dec_str_array(&d, dg_jget(body, "Tags", NULL), "ServiceDefinition.Tags");
	meta = dec_str_map(&d, dg_jget(body, "Meta", NULL), "ServiceDefinition.Meta");
	tagged = dec_tagged(&d, dg_jget(body, "TaggedAddresses", "tagged_addresses", NULL),
			    bad_tagged, sizeof(bad_tagged));
	int64_t w_pass = 1, w_warn = 1;
	json_t *weights = dg_jget(body, "Weights", NULL);
	if (weights && !json_is_object(weights)) {
		dec_type_error(&d, weights, "ServiceDefinition.Weights", "structs.Weights");
	} else if (weights) {
		w_pass = dec_int(&d, dg_jget(weights, "Passing", NULL), "Weights.Passing");
		w_warn = dec_int(&d, dg_jget(weights, "Warning", NULL), "Weights.Warning");
	}
	json_t *check = dg_jget(body, "Check", NULL);
	json_t *check_list = dg_jget(body, "Checks", NULL);
	if (check && !json_is_object(check))
		dec_type_error(&d, check, "ServiceDefinition.Check", "structs.CheckType");
	if (check_list && !json_is_array(check_list))
		dec_type_error(&d, check_list, "ServiceDefinition.Checks", "structs.CheckTypes");
	if (!d.failed && check) {
		parse_check(&d, check, &cds[ncd]);
		if (cds[ncd].empty)
			check_def_fini(&cds[ncd]); /* Consul ignores an all-zero Check */
		else
			ncd++;
	}
	size_t i;
	json_t *e;
	json_array_foreach(d.failed ? NULL : check_list, i, e)
	{
		if (!json_is_object(e)) {
			dec_type_error(&d, e, "ServiceDefinition.Checks", "structs.CheckType");
			break;
		}
		if (ncd == DG_MAX_SERVICE_CHECKS) {
			rv = dg_reply_textf(r, 400, 0, "Too many checks (limit: %d)",
					    DG_MAX_SERVICE_CHECKS);
			goto out;
		}
		parse_check(&d, e, &cds[ncd++]);
	}

	/* the checks of consul's AgentRegisterService, in its order */
	if (d.failed) {
		rv = dg_reply_text(r, 400, d.err, 0);
		goto out;
	}
	if (!*name) {
		rv = dg_reply_text(r, 400, "Missing service name", 0);
		goto out;
	}
	if (!*id)
		id = name;
	if (strlen(id) > DG_MAX_KEY_LEN || strlen(name) > DG_MAX_KEY_LEN) {
		rv = dg_reply_textf(r, 400, 0, "Service name or ID too long (limit: %d bytes)",
				    DG_MAX_KEY_LEN);
		goto out;
	}
	if (strcmp(id, "consul") == 0) {
		/* would replace the servers' own "consul" service row (consul-api.md §13) */
		rv = dg_reply_text(r, 400,
				   "Service ID \"consul\" is reserved for the Consul servers", 0);
		goto out;
	}
	if (unspecified_ip(address)) {
		rv = dg_reply_text(r, 400, "Invalid service address", 0);
		goto out;
	}
	if (*bad_tagged) {
		rv = dg_reply_textf(r, 400, 0, "Invalid %s tagged address", bad_tagged);
		goto out;
	}
	if (weights) {
		const char *why = w_pass < 1   ? "Passing must be greater than 0"
				  : w_warn < 0 ? "Warning must be greater or equal than 0"
				  : w_pass > 65535 || w_warn > 65535
				      ? "Weight values cannot exceed 65535"
				      : NULL;
		if (why) {
			rv = dg_reply_textf(r, 400, 0, "Invalid Weights: %s", why);
			goto out;
		}
	}
	if (meta_invalid(meta, err, sizeof(err))) {
		rv = dg_reply_text(r, 400, err, 0);
		goto out;
	}
	for (i = 0; i < ncd; i++) {
		const char *why = check_invalid(&cds[i]);
		if (why) {
			rv = dg_reply_textf(r, 400, 0, "Invalid check: %s", why);
			goto out;
		}
	}
	for (i = 0; i < ncd; i++) {
		if (strcmp(cds[i].id, "serfHealth") == 0) {
			rv = dg_reply_text(r, 400, SERF_RESERVED, 0);
			goto out;
		}
		if (*cds[i].status && !valid_status(cds[i].status)) {
			rv = dg_reply_text(
			    r, 400, "Status for checks must 'passing', 'warning', 'critical'", 0);
			goto out;
		}
	}
	if (port < 0 || port > 65535) {
		rv = dg_reply_textf(r, 400, 0, "Invalid service port %lld", (long long)port);
		goto out;
	}

	/* generated IDs and names fit their buffers: id and name are <= DG_MAX_KEY_LEN (above) */
	checks = json_array();
	for (i = 0; i < ncd && checks; i++) {
		char gen_id[DG_MAX_KEY_LEN + 64], gen_name[DG_MAX_KEY_LEN + 32];
		const char *cid = cds[i].id, *cname = cds[i].name;
		if (!*cid) {
			if (ncd > 1)
				snprintf(gen_id, sizeof(gen_id), "service:%s:%zu", id, i + 1);
			else
				snprintf(gen_id, sizeof(gen_id), "service:%s", id);
			cid = gen_id;
		}
		if (!*cname) {
			snprintf(gen_name, sizeof(gen_name), "Service '%s' check", name);
			cname = gen_name;
		}
		if (json_array_append_new(checks, check_cmd(&cds[i], cid, cname, id, true)) != 0) {
			json_decref(checks);
			checks = NULL;
		}
	}
	cmd = register_cmd(r);
	if (!cmd || !checks) {
		rv = dg_reply_text(r, 500, "out of memory", 0);
		goto out;
	}
	json_t *svc = json_pack(
	    "{s:s, s:s, s:O, s:s, s:O, s:I, s:{s:I, s:I}, s:b, s:O, s:s, s:b}", "ID", id, "Service",
	    name, "Tags", tags, "Address", address, "Meta", meta, "Port", (json_int_t)port,
	    "Weights", "Passing", (json_int_t)w_pass, "Warning", (json_int_t)w_warn,
	    "EnableTagOverride", eto, "TaggedAddresses", tagged, "Kind", kind, "Agent", 1);
	json_object_set_new(cmd, "Service", svc);
	json_object_set_new(cmd, "Checks", checks);
	checks = NULL;
	if (qarg_present(r, "replace-existing-checks", NULL))
		json_object_set_new(cmd, "ReplaceServiceChecks", json_true());
	if (!svc) {
		rv = dg_reply_text(r, 500, "out of memory", 0);
		goto out;
	}
	rv = dg_req_write(r, cmd);
	cmd = NULL;
out:
	for (i = 0; i < ncd; i++)
		check_def_fini(&cds[i]);
	json_decref(cmd);
	json_decref(checks);
	json_decref(tags);
	json_decref(meta);
	json_decref(tagged);
	json_decref(body);
	return rv;
}

/* ---- PUT|GET /v1/agent/service/deregister/:id ---- */

static int service_deregister(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	dg_catalog *cat = dg_http_cat(r);
	const char *id = r->arg;
	dg_cat_rdlock(cat);
	bool found = agent_service_locked(r, id) != NULL;
	dg_cat_unlock(cat);
	if (!found)
		return dg_reply_textf(r, 404, 0,
				      "Unknown service ID \"%s\". Ensure that the service ID is "
				      "passed, not the service name.",
				      id);
	return propose(r, json_pack("{s:s, s:s, s:s}", "Op", "deregister", "Node", dg_http_node(r),
				    "ServiceID", id));
}

/* ---- maintenance: PUT /v1/agent/maintenance, /v1/agent/service/maintenance/:id ---- */

/* ?enable, required, a Go bool. False after answering 400 (*rv holds the answer). */
static bool enable_param(struct dg_req *r, bool *enable, int *rv)
{
	const char *raw;
	char q[128];
	if (!qarg_present(r, "enable", &raw)) {
		*rv = dg_reply_text(r, 400, "Missing value for enable", 0);
		return false;
	}
	if (dg_parse_bool(raw, enable) != 0) {
		*rv = dg_reply_textf(r, 400, 0, "Invalid value for enable: %s",
				     go_quote(raw, q, sizeof(q)));
		return false;
	}
	return true;
}

/* Enables (adds the critical check) or disables (removes it); both are no-ops when already
 * in that state. service_id is "" for the node. */
static int maintenance(struct dg_req *r, const char *check_id, const char *service_id, bool enable,
		       bool exists, const char *what)
{
	if (enable == exists)
		return dg_reply_empty(r);
	if (!enable)
		return propose(r, json_pack("{s:s, s:s, s:s}", "Op", "deregister", "Node",
					    dg_http_node(r), "CheckID", check_id));
	const char *reason = qarg(r, "reason");
	char *notes;
	if (reason && *reason)
		notes = utf8_clean(reason, DG_MAX_OUTPUT);
	else if (asprintf(&notes,
			  "Maintenance mode is enabled for this %s, but no reason was provided. "
			  "This is a default message.",
			  what) < 0)
		notes = NULL;
	json_t *cmd = register_cmd(r);
	json_t *ch =
	    notes ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:{}, s:b}", "CheckID", check_id,
			      "Name",
			      *service_id ? "Service Maintenance Mode" : "Node Maintenance Mode",
			      "Status", "critical", "Notes", notes, "Output", "", "ServiceID",
			      service_id, "Type", "", "Definition", "Agent", 1)
		  : NULL;
	free(notes);
	if (!cmd || !ch) {
		json_decref(cmd);
		json_decref(ch);
		return dg_reply_text(r, 500, "out of memory", 0);
	}
	json_object_set_new(cmd, "Checks", json_pack("[o]", ch));
	return propose(r, cmd);
}

static int node_maintenance(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	bool enable;
	int rv;
	if (!enable_param(r, &enable, &rv))
		return rv;
	dg_catalog *cat = dg_http_cat(r);
	dg_cat_rdlock(cat);
	bool exists = agent_check_locked(r, NODE_MAINT_ID) != NULL;
	dg_cat_unlock(cat);
	return maintenance(r, NODE_MAINT_ID, "", enable, exists, "node");
}

static int service_maintenance(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	const char *id = r->arg;
	bool enable;
	int rv;
	char q[DG_MAX_KEY_LEN + 16];
	if (!*id)
		return dg_reply_text(r, 400, "Missing service ID", 0);
	if (!enable_param(r, &enable, &rv))
		return rv;
	char *check_id = NULL;
	if (asprintf(&check_id, "%s%s", SERVICE_MAINT_ID, id) < 0)
		return dg_reply_text(r, 500, "out of memory", 0);
	dg_catalog *cat = dg_http_cat(r);
	dg_cat_rdlock(cat);
	bool found = agent_service_locked(r, id) != NULL;
	bool exists = agent_check_locked(r, check_id) != NULL;
	dg_cat_unlock(cat);
	if (!found)
		rv = dg_reply_textf(r, 404, 0, "No service registered with ID %s",
				    go_quote(id, q, sizeof(q)));
	else
		rv = maintenance(r, check_id, id, enable, exists, "service");
	free(check_id);
	return rv;
}

/* ---- checks: register, deregister, TTL updates ---- */

static int check_register(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	int rv = 0;
	json_t *body = decode_object(r, "structs.CheckDefinition", &rv);
	if (!body)
		return rv;
	struct dec d = {0};
	struct check_def cd;
	char q[DG_MAX_KEY_LEN + 16];
	parse_check(&d, body, &cd);
	const char *sid = dec_str(&d, dg_jget(body, "ServiceID", "service_id", NULL),
				  "CheckDefinition.ServiceID");
	const char *why;
	if (d.failed) {
		rv = dg_reply_text(r, 400, d.err, 0);
	} else if (!*cd.name) {
		rv = dg_reply_text(r, 400, "Missing check name", 0);
	} else if (*cd.status && !valid_status(cd.status)) {
		rv = dg_reply_text(r, 400, "Bad check status", 0);
	} else if ((why = check_invalid(&cd)) != NULL) {
		rv = dg_reply_textf(r, 400, 0, "Invalid check: %s", why);
	} else if (strcmp(*cd.id ? cd.id : cd.name, "serfHealth") == 0) {
		rv = dg_reply_text(r, 400, SERF_RESERVED, 0);
	} else {
		const char *id = *cd.id ? cd.id : cd.name;
		bool found = true;
		if (*sid) {
			dg_catalog *cat = dg_http_cat(r);
			dg_cat_rdlock(cat);
			found = agent_service_locked(r, sid) != NULL;
			dg_cat_unlock(cat);
		}
		if (!found) {
			rv = dg_reply_textf(r, 404, 0, "ServiceID %s does not exist",
					    go_quote(sid, q, sizeof(q)));
		} else {
			json_t *cmd = register_cmd(r);
			json_t *ch = check_cmd(&cd, id, cd.name, sid, false);
			if (cmd && ch) {
				json_object_set_new(cmd, "Checks", json_pack("[o]", ch));
				rv = dg_req_write(r, cmd);
			} else {
				json_decref(cmd);
				json_decref(ch);
				rv = dg_reply_text(r, 500, "out of memory", 0);
			}
		}
	}
	check_def_fini(&cd);
	json_decref(body);
	return rv;
}

static int unknown_check(struct dg_req *r, const char *id)
{
	return dg_reply_textf(r, 404, 0,
			      "Unknown check ID \"%s\". Ensure that the check ID is passed, not "
			      "the check name.",
			      id);
}

static int check_deregister(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	dg_catalog *cat = dg_http_cat(r);
	const char *id = r->arg;
	dg_cat_rdlock(cat);
	bool found = agent_check_locked(r, id) != NULL;
	dg_cat_unlock(cat);
	if (!found)
		return unknown_check(r, id);
	return propose(r, json_pack("{s:s, s:s, s:s}", "Op", "deregister", "Node", dg_http_node(r),
				    "CheckID", id));
}

/* Sets a TTL check's status and output and resets its timer (TTLReset, see lan/agent.c). */
static int ttl_update(struct dg_req *r, const char *status, const char *output)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *id = r->arg;
	dg_cat_rdlock(cat);
	const struct dg_cat_check *ch = agent_check_locked(r, id);
	bool found = ch != NULL, ttl = ch && strcmp(ch->type, "ttl") == 0;
	dg_cat_unlock(cat);
	if (!found)
		return unknown_check(r, id);
	if (!ttl)
		return dg_reply_textf(r, 500, 0, "CheckID \"%s\" does not have associated TTL", id);
	char *out = utf8_clean(output ? output : "", DG_MAX_OUTPUT);
	json_t *cmd = out ? json_pack("{s:s, s:s, s:s, s:s, s:s, s:b}", "Op", "check_update",
				      "Node", dg_http_node(r), "CheckID", id, "Status", status,
				      "Output", out, "TTLReset", 1)
			  : NULL;
	free(out);
	return propose(r, cmd);
}

static int check_pass(struct dg_req *r)
{
	return r->write_done ? write_answer(r) : ttl_update(r, "passing", qarg(r, "note"));
}

static int check_warn(struct dg_req *r)
{
	return r->write_done ? write_answer(r) : ttl_update(r, "warning", qarg(r, "note"));
}

static int check_fail(struct dg_req *r)
{
	return r->write_done ? write_answer(r) : ttl_update(r, "critical", qarg(r, "note"));
}

static int check_update(struct dg_req *r)
{
	if (r->write_done)
		return write_answer(r);
	int rv = 0;
	json_t *body = decode_object(r, "agent.checkUpdate", &rv);
	if (!body)
		return rv;
	struct dec d = {0};
	const char *status = dec_str(&d, dg_jget(body, "Status", NULL), "checkUpdate.Status");
	const char *output = dec_str(&d, dg_jget(body, "Output", NULL), "checkUpdate.Output");
	if (d.failed)
		rv = dg_reply_text(r, 400, d.err, 0);
	else if (!valid_status(status))
		rv = dg_reply_textf(r, 400, 0, "Invalid check status: '%s'", status);
	else
		rv = ttl_update(r, status, output);
	json_decref(body);
	return rv;
}

/* ---- cluster membership: join, force-leave, leave, reload ---- */

/* PUT /v1/agent/join/<addr>?wan=1 (value-based, as Consul reads it): federation dials addr and
 * swaps member lists; the request stays suspended until that is over. */
static int wan_join(struct dg_req *r)
{
	bool server = dg_lan_config(dg_http_lan(r))->server;
	if (!r->fed_done)
		return dg_req_wan_join(r, r->arg);
	if (r->fed_err == 0)
		return dg_reply_empty(r);
	if (r->fed_err == DG_EINVAL && !r->fed_msg)
		/* refused at once: no federation, or one without a WAN pool */
		return dg_reply_text(r, 500,
				     server ? "WAN is not enabled: this server has no TLS "
					      "certificates (cert_file, key_file, ca_file)"
					    : "Must be a server to join WAN cluster",
				     0);
	if (r->fed_msg)
		return dg_reply_text(r, 500, r->fed_msg, 0);
	return dg_reply_textf(r, 500, 0, "Failed to join %s: %s", r->arg, dg_strerror(r->fed_err));
}

static int lan_join_start(dg_lan *l, const char *addr, const char *unused, dg_lan_done_fn cb,
			  void *arg)
{
	return dg_lan_join(l, addr, cb, arg);
}

static int agent_join(struct dg_req *r)
{
	if (r->q.wan)
		return wan_join(r);
	if (!r->fed_done)
		return dg_req_lan_op(r, lan_join_start, r->arg, NULL);
	if (r->fed_err == 0)
		return dg_reply_empty(r);
	/* short: node-consul shows a text/plain error body only below 80 characters */
	return dg_reply_textf(r, 500, 0, "Failed to join %s: %s", r->arg,
			      r->fed_msg ? r->fed_msg : dg_strerror(r->fed_err));
}

static int lan_force_leave_start(dg_lan *l, const char *name, const char *unused,
				 dg_lan_done_fn cb, void *arg)
{
	return dg_lan_force_leave(l, name, cb, arg);
}

static int agent_force_leave(struct dg_req *r)
{
	/* ?wan is presence-based here (Consul reads Query()["wan"]), unlike members and join */
	if (!qarg_present(r, "wan", NULL)) {
		if (!r->fed_done)
			return dg_req_lan_op(r, lan_force_leave_start, r->arg, NULL);
		/* a member that is not failed is left alone, with 200, as serf does */
		if (r->fed_err == 0 || r->fed_err == DG_EINVAL)
			return dg_reply_empty(r);
		if (r->fed_err == DG_ENOTFOUND)
			return dg_reply_textf(r, 500, 0, "agent: No node found with name '%s'",
					      r->arg);
		return dg_reply_text(r, 500, dg_strerror(r->fed_err), 0);
	}
	dg_fed *f = dg_http_fed_acquire(r);
	int rv = f ? dg_fed_force_leave(f, r->arg) : DG_ENOTFOUND;
	dg_http_fed_release(r);
	if (rv == DG_ENOTFOUND)
		return dg_reply_textf(r, 500, 0, "agent: No node found with name '%s'", r->arg);
	if (rv != 0)
		return dg_reply_text(r, 500, dg_strerror(rv), 0);
	return dg_reply_empty(r);
}

static int agent_leave(struct dg_req *r)
{
	const struct dg_http_config *cfg = dg_http_cfg(r);
	int rv = dg_reply_empty(r);
	/* after queueing: the answer is sent while the main thread begins the shutdown */
	if (cfg->on_leave)
		cfg->on_leave(cfg->cb_arg);
	return rv;
}

static int agent_reload(struct dg_req *r)
{
	const struct dg_http_config *cfg = dg_http_cfg(r);
	if (cfg->on_reload)
		cfg->on_reload(cfg->cb_arg);
	return dg_reply_empty(r);
}

/* ---- GET /v1/agent/metrics ---- */

struct metric {
	const char *name;
	const char *help;
	bool counter;
	double value;
};

/* Seconds since this process started (Linux /proc), at least 1; counters are cumulative since
 * start, so their Rate is over that span. */
static double process_uptime_s(void)
{
	double up = 0, start_ticks = 0;
	FILE *f = fopen("/proc/uptime", "r");
	if (f) {
		if (fscanf(f, "%lf", &up) != 1)
			up = 0;
		fclose(f);
	}
	f = fopen("/proc/self/stat", "r");
	if (f) {
		char buf[1024];
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		/* field 22 (starttime) counted after the ")" that ends field 2 */
		char *p = strrchr(buf, ')');
		for (int field = 2; p && field < 22; field++)
			p = strchr(p + 1, ' ');
		if (p)
			start_ticks = strtod(p + 1, NULL);
	}
	long hz = sysconf(_SC_CLK_TCK);
	double s = up - (hz > 0 ? start_ticks / (double)hz : 0);
	return s >= 1 ? s : 1;
}

static void prom_name(const char *name, char *out, size_t len)
{
	size_t i = 0;
	for (; name[i] && i + 1 < len; i++)
		out[i] = name[i] == '.' || name[i] == '-' ? '_' : name[i];
	out[i] = 0;
}

/* A number as Go's encoder prints a float64: integral values without a fraction. */
static json_t *json_number(double v)
{
	if (v == (double)(json_int_t)v && v > -9e15 && v < 9e15)
		return json_integer((json_int_t)v);
	return json_real(v);
}

static int agent_metrics(struct dg_req *r)
{
	struct dg_http_stats hs;
	struct dg_lan_stats ls;
	dg_http_stats(r, &hs);
	dg_lan_stats(dg_http_lan(r), &ls);
	size_t waiters = dg_http_waiters(r);
	double uptime = process_uptime_s();
	const struct metric base[] = {
	    {"dcgate.http.waiters", "Blocking queries parked right now.", false, (double)waiters},
	    {"dcgate.checks.running", "Health checks this agent runs.", false,
	     (double)ls.checks_running},
	    {"consul.server.isLeader", "1 while this server is the raft leader.", false,
	     dg_lan_is_leader(dg_http_lan(r)) ? 1 : 0},
	    {"dcgate.raft.applied_index", "Highest raft index applied to the catalog.", false,
	     (double)dg_cat_last_index(dg_http_cat(r))},
	    {"dcgate.uptime_seconds", "Seconds since the agent started.", false, uptime},
	    {"dcgate.http.requests", "HTTP requests received.", true, (double)hs.requests},
	    {"dcgate.http.errors_4xx", "HTTP answers with a 4xx status.", true,
	     (double)hs.errors_4xx},
	    {"dcgate.http.errors_5xx", "HTTP answers with a 5xx status.", true,
	     (double)hs.errors_5xx},
	    {"dcgate.http.waiters_parked", "Blocking queries parked.", true,
	     (double)hs.waiters_parked},
	    {"dcgate.http.waiters_woken", "Blocking queries woken by a change.", true,
	     (double)hs.waiters_woken},
	    {"dcgate.http.waiters_timed_out", "Blocking queries answered at their deadline.", true,
	     (double)hs.waiters_timed_out},
	    {"consul.raft.apply", "Raft entries applied to the catalog.", true, (double)ls.applied},
	    {"dcgate.raft.apply_errors", "Applied commands that failed.", true,
	     (double)ls.apply_errors},
	    {"dcgate.raft.writes_rejected", "Writes refused before raft (no leader, shutdown).",
	     true, (double)ls.writes_rejected},
	    {"dcgate.raft.snapshots", "Raft snapshots taken.", true, (double)ls.snapshots},
	    {"dcgate.raft.forward_batches", "Requests that took several writes to the leader.",
	     true, (double)ls.forward_batches},
	    {"dcgate.raft.forward_batched", "Writes sent to the leader in those requests.", true,
	     (double)ls.forward_batched},
	    {"dcgate.checks.runs", "TCP and HTTP check probes started.", true,
	     (double)ls.check_runs},
	};
	const struct metric *m = base;
	size_t n = sizeof(base) / sizeof(base[0]);
	const char *format = qarg(r, "format");
	/* days to expiry of the loaded certificate and CA, read from the files in use now */
	/* room for every metric added below (22 at most); the check after them keeps it honest */
	struct metric all[sizeof(base) / sizeof(base[0]) + 22];
	memcpy(all, base, sizeof(base));
	/* federation: zeros without WAN, so dashboards and tests find the names on every agent.
	 * forwards_waiting counts local requests parked on a forward; in_flight counts WAN
	 * requests, so coalesced blocking queries show as many waiting and one in flight. */
	struct dg_fed_stats fs = {0};
	dg_fed *f = dg_http_fed_acquire(r);
	if (f)
		dg_fed_stats(f, &fs);
	dg_http_fed_release(r);
	all[n++] = (struct metric){"dcgate.federation.in_flight",
				   "Requests to other datacenters on the WAN right now.", false,
				   (double)fs.in_flight};
	all[n++] = (struct metric){"dcgate.http.forwards_waiting",
				   "HTTP requests waiting for another datacenter (or a WAN join).",
				   false, (double)dg_http_forwards(r)};
	all[n++] =
	    (struct metric){"dcgate.federation.forwards",
			    "Requests forwarded to another datacenter.", true, (double)fs.forwards};
	all[n++] = (struct metric){"dcgate.federation.forward_errors",
				   "Forwarded requests that got no answer from the remote DC.",
				   true, (double)fs.forward_errors};
	all[n++] = (struct metric){"dcgate.federation.served",
				   "Requests from other datacenters answered here.", true,
				   (double)fs.served};
	all[n++] = (struct metric){"dcgate.federation.coalesced",
				   "Remote reads that shared an identical one already on the WAN.",
				   true, (double)fs.coalesced};
	all[n++] = (struct metric){"dcgate.federation.cache_hits",
				   "?cached remote reads answered from this server's copy.", true,
				   (double)fs.cache_hits};
	all[n++] = (struct metric){"dcgate.federation.cache_misses",
				   "?cached remote reads that were fetched from the remote DC.", true,
				   (double)fs.cache_misses};
	all[n++] = (struct metric){"dcgate.wan.bytes_sent",
				   "Bytes of WAN messages sent (before TLS).", true,
				   (double)fs.wan_bytes_sent};
	all[n++] = (struct metric){"dcgate.wan.bytes_received",
				   "Bytes of WAN messages received (before TLS).", true,
				   (double)fs.wan_bytes_received};
	all[n++] = (struct metric){"dcgate.wan.probes", "Probes sent to WAN members.", true,
				   (double)fs.wan_probes};
	all[n++] = (struct metric){"dcgate.wan.probe_timeouts",
				   "Probes of WAN members that got no answer in time.", true,
				   (double)fs.wan_probe_timeouts};
	all[n++] = (struct metric){"dcgate.wan.suspicions",
				   "WAN members suspected (direct and indirect probes failed).",
				   true, (double)fs.wan_suspicions};
	all[n++] = (struct metric){"dcgate.wan.failures",
				   "WAN members declared failed.", true, (double)fs.wan_failures};
	all[n++] = (struct metric){"dcgate.wan.bad_messages",
				   "WAN links closed for bad or misattributed messages.", true,
				   (double)fs.wan_bad_messages};
	all[n++] = (struct metric){"dcgate.wan.batches_sent",
				   "BATCH messages of forwarded reads sent to other DCs.", true,
				   (double)fs.wan_batches};
	all[n++] = (struct metric){"dcgate.wan.batched_requests",
				   "Forwarded reads that travelled inside a BATCH message.", true,
				   (double)fs.wan_batched};
	all[n++] = (struct metric){"dcgate.wan.batch_resends",
				   "Batched reads asked again alone: their answer did not fit.",
				   true, (double)fs.wan_batch_resends};
	all[n++] = (struct metric){"dcgate.wan.batches_served",
				   "BATCH messages from other DCs answered here.", true,
				   (double)fs.wan_batches_served};
	all[n++] = (struct metric){"dcgate.federation.cache_entries",
				   "Remote answers kept for ?cached and refreshed in the background.",
				   false, (double)fs.cache_entries};
	const struct dg_http_config *hcfg = dg_http_cfg(r);
	if (hcfg->tls_days) {
		double cert_days, ca_days;
		hcfg->tls_days(hcfg->cb_arg, &cert_days, &ca_days);
		if (cert_days > -1e9)
			all[n++] = (struct metric){"dcgate.tls.cert.days_to_expiry",
						   "Days until this agent's certificate expires.",
						   false, cert_days};
		if (ca_days > -1e9)
			all[n++] = (struct metric){"dcgate.tls.ca.days_to_expiry",
						   "Days until the CA certificate expires.", false,
						   ca_days};
	}
	if (n > sizeof(all) / sizeof(all[0]))
		abort(); /* all[] overran: a metric was added above without room for it */
	m = all;

	if (format && strcmp(format, "prometheus") == 0) {
		struct dg_buf b;
		char pn[128];
		int err = 0;
		dg_buf_init(&b);
		for (size_t i = 0; i < n; i++) {
			prom_name(m[i].name, pn, sizeof(pn));
			err |= dg_buf_appendf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %.15g\n", pn,
					      m[i].help, pn, m[i].counter ? "counter" : "gauge", pn,
					      m[i].value);
		}
		if (err || !b.data) {
			dg_buf_fini(&b);
			return dg_reply_text(r, 500, "out of memory", 0);
		}
		int rv = dg_reply_raw(r, 200, b.data, b.len,
				      "text/plain; version=0.0.4; charset=utf-8", 0);
		dg_buf_fini(&b);
		return rv;
	}

	/* Consul's in-memory sink shape: the current 10 s interval's start as Go prints a time */
	char ts[64];
	time_t now = time(NULL);
	struct tm tm;
	now -= now % 10;
	gmtime_r(&now, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S +0000 UTC", &tm);
	json_t *gauges = json_array(), *counters = json_array();
	for (size_t i = 0; i < n; i++) {
		if (!m[i].counter) {
			json_array_append_new(gauges, json_pack("{s:s, s:o, s:{}}", "Name",
								m[i].name, "Value",
								json_number(m[i].value), "Labels"));
			continue;
		}
		/* each increment is 1, so min = max = mean = 1 once anything was counted */
		double one = m[i].value > 0 ? 1 : 0;
		json_array_append_new(counters,
				      json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:o, s:i, s:{}}",
						"Name", m[i].name, "Count", (json_int_t)m[i].value,
						"Rate", json_number(m[i].value / uptime), "Sum",
						json_number(m[i].value), "Min", json_number(one),
						"Max", json_number(one), "Mean", json_number(one),
						"Stddev", 0, "Labels"));
	}
	json_t *out = json_pack("{s:s, s:o, s:[], s:o, s:[]}", "Timestamp", ts, "Gauges", gauges,
				"Points", "Counters", counters, "Samples");
	if (!out)
		return dg_reply_text(r, 500, "out of memory", 0);
	return reply_json(r, 200, out);
}

/* ---- GET /v1/agent/health/service/id/:id and /name/:name ---- */

/* Accept: text/plain, or ?format=text (Consul's returnTextPlain). */
static bool want_text(struct dg_req *r)
{
	const char *accept = dg_req_header(r, "Accept");
	const char *format = qarg(r, "format");
	if (accept && strncmp(accept, "text/plain", 10) == 0)
		return true;
	return format && strcmp(format, "text") == 0;
}

/* 200 passing, 429 warning, 503 critical or maintenance. */
static int health_code(const char *status)
{
	if (strcmp(status, "passing") == 0)
		return 200;
	if (strcmp(status, "warning") == 0)
		return 429;
	return 503;
}

struct svc_checks {
	struct dg_req *r;
	const char *service_id;
	json_t *out;
};

/* The service's checks plus the agent's node-level checks (node maintenance), as Consul's
 * ChecksForService(id, includeNodeChecks=true). */
static int add_service_check(void *arg, const struct dg_cat_check *ch)
{
	struct svc_checks *c = arg;
	if (strcmp(ch->service_id, c->service_id) == 0 || (!*ch->service_id && ch->agent))
		json_array_append_new(c->out, encode_check_locked(c->r, ch));
	return 0;
}

/* AgentServiceChecksInfo of one local service; *code gets the HTTP status. Read lock held. */
static json_t *service_health_locked(struct dg_req *r, const struct dg_cat_service *s, int *code)
{
	struct svc_checks c = {r, s->id, json_array()};
	dg_cat_node_checks_walk_locked(dg_http_cat(r), dg_http_node(r), add_service_check, &c);
	const char *status = dg_cat_aggregate_status(c.out);
	*code = health_code(status);
	return json_pack("{s:s, s:o, s:o}", "AggregatedStatus", status, "Service",
			 dg_enc_agent_service(s, dg_http_dc(r)), "Checks", c.out);
}

static int health_by_id(struct dg_req *r)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *id = r->arg;
	int code = 404;
	if (!*id)
		return dg_reply_text(r, 400, "Missing serviceID", 0);
	dg_cat_rdlock(cat);
	const struct dg_cat_service *s = agent_service_locked(r, id);
	json_t *info = s ? service_health_locked(r, s, &code) : NULL;
	dg_cat_unlock(cat);
	if (!s) {
		if (want_text(r))
			return dg_reply_textf(r, 404, 0, "ServiceId %s not found", id);
		return reply_json(r, 404,
				  json_pack("{s:s, s:n, s:n}", "AggregatedStatus", "critical",
					    "Service", "Checks"));
	}
	if (!info)
		return dg_reply_text(r, 500, "out of memory", 0);
	if (want_text(r)) {
		const char *st = json_string_value(json_object_get(info, "AggregatedStatus"));
		int rv = dg_reply_raw(r, code, st, strlen(st), "text/plain", 0);
		json_decref(info);
		return rv;
	}
	return reply_json(r, code, info);
}

struct by_name {
	struct dg_req *r;
	const char *name;
	json_t *out;
	int code;
	const char *status;
};

static int add_named_health(void *arg, const struct dg_cat_service *s)
{
	struct by_name *b = arg;
	int code;
	if (!s->agent || strcasecmp(s->name, b->name) != 0)
		return 0;
	json_t *info = service_health_locked(b->r, s, &code);
	if (!info)
		return 0;
	/* the worst status wins: 200 < 429 < 503 */
	if (b->code == 404 || code > b->code) {
		b->code = code;
		b->status = code == 200 ? "passing" : code == 429 ? "warning" : NULL;
		if (!b->status)
			b->status =
			    strcmp(json_string_value(json_object_get(info, "AggregatedStatus")),
				   "maintenance") == 0
				? "maintenance"
				: "critical";
	}
	json_array_append_new(b->out, info);
	return 0;
}

static int health_by_name(struct dg_req *r)
{
	dg_catalog *cat = dg_http_cat(r);
	const char *name = r->arg;
	if (!*name)
		return dg_reply_text(r, 400, "Missing service Name", 0);
	struct by_name b = {r, name, json_array(), 404, NULL};
	dg_cat_rdlock(cat);
	dg_cat_node_services_walk_locked(cat, dg_http_node(r), add_named_health, &b);
	dg_cat_unlock(cat);
	if (want_text(r)) {
		int rv;
		json_decref(b.out);
		if (b.code == 404)
			rv = dg_reply_textf(r, 404, 0, "ServiceName %s Not Found", name);
		else
			rv = dg_reply_raw(r, b.code, b.status, strlen(b.status), "text/plain", 0);
		return rv;
	}
	return reply_json(r, b.code, b.out);
}

/* First match wins (server.c): exact paths, then longer prefixes before shorter ones. The
 * seven routes python-consul 0.7.1 calls with GET accept GET as well (consul-api.md §1.7). */
const struct dg_route dg_routes_agent[] = {
    {"/v1/agent/self", false, DG_GET, agent_self},
    {"/v1/agent/members", false, DG_GET, agent_members},
    {"/v1/agent/services", false, DG_GET, agent_services},
    {"/v1/agent/checks", false, DG_GET, agent_checks},
    {"/v1/agent/service/register", false, DG_PUT, service_register},
    {"/v1/agent/check/register", false, DG_PUT, check_register},
    {"/v1/agent/maintenance", false, DG_PUT, node_maintenance},
    {"/v1/agent/leave", false, DG_PUT, agent_leave},
    {"/v1/agent/reload", false, DG_PUT, agent_reload},
    {"/v1/agent/metrics", false, DG_GET, agent_metrics},
    {"/v1/agent/service/deregister/", true, DG_GET | DG_PUT, service_deregister},
    {"/v1/agent/service/maintenance/", true, DG_PUT, service_maintenance},
    {"/v1/agent/service/", true, DG_GET, agent_service_get},
    {"/v1/agent/check/deregister/", true, DG_GET | DG_PUT, check_deregister},
    {"/v1/agent/check/pass/", true, DG_GET | DG_PUT, check_pass},
    {"/v1/agent/check/warn/", true, DG_GET | DG_PUT, check_warn},
    {"/v1/agent/check/fail/", true, DG_GET | DG_PUT, check_fail},
    {"/v1/agent/check/update/", true, DG_PUT, check_update},
    {"/v1/agent/join/", true, DG_GET | DG_PUT, agent_join},
    {"/v1/agent/force-leave/", true, DG_GET | DG_PUT, agent_force_leave},
    {"/v1/agent/health/service/id/", true, DG_GET, health_by_id},
    {"/v1/agent/health/service/name/", true, DG_GET, health_by_name},
    {NULL, false, 0, NULL},
};
