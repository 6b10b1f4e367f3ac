/* /v1/txn: an array of at most 64 operations, checked here (size, base64 values, value limits) and
 * rewritten into canonical KV ops, then applied atomically by the FSM in one raft entry. Only KV
 * operations are supported; Node, Service and Check operations are refused with a 409. */
#include "http/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Kept across the suspension of the write: which request op each canonical op came from, so the
 * OpIndex of an FSM error names the client's op even when empty ops were skipped. */
struct txn_scratch {
	size_t n;
	size_t op_index[DG_MAX_TXN_OPS];
};


/* Position of the first byte that is not standard base64, for Go's error text. */
static size_t base64_bad_byte(const char *s)
{
	size_t i = 0;
	for (; s[i]; i++) {
		char c = s[i];
		bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			  (c >= '0' && c <= '9') || c == '+' || c == '/';
		if (!ok)
			return i;
	}
	return i;
}

/* What an invalid request answers: a status and a text. */
struct txn_err {
	int status;
	char text[512];
};

static int fail(struct txn_err *e, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct txn_err *e, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->text, sizeof(e->text), fmt, ap);
	va_end(ap);
	e->status = status;
	return DG_EINVAL;
}

static int kv_str(json_t *kv, const char *field, const char **out, struct txn_err *e)
{
	json_t *v = dg_jget(kv, field, NULL);
	*out = "";
	if (!v)
		return 0;
	if (!json_is_string(v))
		return fail(e, 400,
			    "Failed to parse body: json: cannot unmarshal %s into Go struct field "
			    "KVTxnOp.KV.%s of type string",
			    dg_json_kind(v), field);
	*out = json_string_value(v);
	return 0;
}

static int kv_u64(json_t *kv, const char *field, uint64_t *out, struct txn_err *e)
{
	json_t *v = dg_jget(kv, field, NULL);
	*out = 0;
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return fail(e, 400,
			    "Failed to parse body: json: cannot unmarshal %s into Go struct field "
			    "KVTxnOp.KV.%s of type uint64",
			    json_is_number(v) ? "number" : dg_json_kind(v), field);
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

/* One {"KV":{...}} with any field-name case into the FSM's canonical op. Returns a new
 * reference, or NULL with e filled. */
static json_t *canonical_kv(json_t *kv, struct txn_err *e)
{
	const char *verb, *key, *value, *session;
	uint64_t flags, index;
	if (!json_is_object(kv)) {
		fail(e, 400,
		     "Failed to parse body: json: cannot unmarshal %s into Go struct field "
		     "TxnOp.KV of type api.KVTxnOp",
		     dg_json_kind(kv));
		return NULL;
	}
	if (kv_str(kv, "Verb", &verb, e) != 0 || kv_str(kv, "Key", &key, e) != 0 ||
	    kv_str(kv, "Value", &value, e) != 0 || kv_str(kv, "Session", &session, e) != 0 ||
	    kv_u64(kv, "Flags", &flags, e) != 0 || kv_u64(kv, "Index", &index, e) != 0)
		return NULL;
	if (strlen(key) > DG_MAX_KEY_LEN) {
		fail(e, 400, "Key too long (%zu > %d bytes)", strlen(key), DG_MAX_KEY_LEN);
		return NULL;
	}
	if (*value) {
		uint8_t *raw = NULL;
		size_t len = 0;
		if (dg_base64_decode(value, strlen(value), &raw, &len) != 0) {
			fail(e, 400, "Failed to parse body: illegal base64 data at input byte %zu",
			     base64_bad_byte(value));
			return NULL;
		}
		free(raw);
		if (len > DG_MAX_KV_VALUE) {
			fail(e, 413, "Value for key \"%s\" is too large (%zu > %d bytes)", key, len,
			     DG_MAX_KV_VALUE);
			return NULL;
		}
	}
	json_t *op = json_pack("{s:{s:s, s:s, s:I, s:I, s:s}}", "KV", "Verb", verb, "Key", key,
			       "Flags", (json_int_t)flags, "Index", (json_int_t)index, "Session",
			       session);
	if (op && *value)
		json_object_set_new(json_object_get(op, "KV"), "Value", json_string(value));
	if (!op)
		fail(e, 500, "out of memory");
	return op;
}

/* Turns the body into the txn command. Ops of other kinds are not proposed: they are listed in
 * *refused as Consul-style Errors entries. An op with no known kind is skipped, as Consul's
 * decoder does. Returns the command (new reference), or NULL with e filled. */
static json_t *txn_cmd(struct dg_req *r, struct txn_scratch *sc, json_t **refused,
		       struct txn_err *e)
{
	char err[256];
	json_t *body = dg_decode_body(r->body.data ? r->body.data : "", r->body.len, err,
				      sizeof(err));
	json_t *ops = NULL, *cmd = NULL;
	const char *prefix = "Request decode failed: ";
	size_t i;
	json_t *op;

	*refused = NULL;
	if (!body) {
		const char *why = strncmp(err, prefix, strlen(prefix)) == 0 ? err + strlen(prefix)
									  : err;
		fail(e, 400, "Failed to parse body: %s", why);
		return NULL;
	}
	if (!json_is_array(body) && !json_is_null(body)) {
		fail(e, 400,
		     "Failed to parse body: json: cannot unmarshal %s into Go value of type "
		     "api.TxnOps",
		     dg_json_kind(body));
		goto out;
	}
	if (json_array_size(body) > DG_MAX_TXN_OPS) {
		fail(e, 413, "Transaction contains too many operations (%zu > %d)",
		     json_array_size(body), DG_MAX_TXN_OPS);
		goto out;
	}
	if (!(ops = json_array()) || !(*refused = json_array())) {
		fail(e, 500, "out of memory");
		goto out;
	}
	sc->n = 0;
	json_array_foreach(body, i, op)
	{
		if (json_is_null(op))
			continue;
		if (!json_is_object(op)) {
			fail(e, 400,
			     "Failed to parse body: json: cannot unmarshal %s into Go value of type "
			     "api.TxnOp",
			     dg_json_kind(op));
			goto out;
		}
		json_t *kv = dg_jget(op, "KV", NULL);
		if (kv) {
			json_t *c = canonical_kv(kv, e);
			if (!c)
				goto out;
			json_array_append_new(ops, c);
			sc->op_index[sc->n++] = i;
			continue;
		}
		static const char *const other[] = {"Node", "Service", "Check"};
		for (size_t k = 0; k < sizeof(other) / sizeof(other[0]); k++) {
			if (!dg_jget(op, other[k], NULL))
				continue;
			char what[128];
			snprintf(what, sizeof(what),
				 "%s operations are not supported: only KV operations are supported",
				 other[k]);
			json_array_append_new(*refused, json_pack("{s:I, s:s}", "OpIndex",
								  (json_int_t)i, "What", what));
			break;
		}
	}
	cmd = json_pack("{s:s, s:O}", "Op", "txn", "Ops", ops);
	if (!cmd)
		fail(e, 500, "out of memory");
out:
	if (!cmd) {
		json_decref(*refused);
		*refused = NULL;
	}
	json_decref(ops);
	json_decref(body);
	return cmd;
}

/* Answers from the FSM's {"Results":[...],"Errors":null} or {"Results":null,"Errors":[...]},
 * with each OpIndex mapped back to the client's numbering. */
static int txn_reply(struct dg_req *r)
{
	json_t *res = r->write_result;
	struct txn_scratch *sc = r->scratch;
	if (r->write_status != 0 || json_object_get(res, "Error"))
		return dg_reply_write_error(r);
	json_t *errors = json_object_get(res, "Errors");
	if (json_is_array(errors) && json_array_size(errors) > 0) {
		json_t *out = json_deep_copy(errors);
		size_t i;
		json_t *e;
		json_array_foreach(out, i, e)
		{
			json_int_t k = json_integer_value(json_object_get(e, "OpIndex"));
			if (sc && k >= 0 && (size_t)k < sc->n)
				json_object_set_new(e, "OpIndex",
						    json_integer((json_int_t)sc->op_index[k]));
		}
		return dg_reply_json(r, 409, json_pack("{s:n, s:o}", "Results", "Errors", out), 0);
	}
	json_t *results = json_object_get(res, "Results");
	results = json_is_array(results) ? json_incref(results) : json_array();
	return dg_reply_json(r, 200, json_pack("{s:o, s:n}", "Results", results, "Errors"), 0);
}

static int txn(struct dg_req *r)
{
	if (r->write_done)
		return txn_reply(r);
	struct txn_scratch *sc = calloc(1, sizeof(*sc));
	struct txn_err e = {0};
	json_t *refused = NULL;
	if (!sc)
		return dg_reply_text(r, 500, "out of memory", 0);
	json_t *cmd = txn_cmd(r, sc, &refused, &e);
	if (!cmd) {
		free(sc);
		return dg_reply_text(r, e.status, e.text, 0);
	}
	if (json_array_size(refused) > 0) {
		json_decref(cmd);
		free(sc);
		return dg_reply_json(r, 409, json_pack("{s:n, s:o}", "Results", "Errors", refused),
				     0);
	}
	json_decref(refused);
	if (sc->n == 0) {
		/* nothing to apply: no raft round trip for an empty transaction */
		json_decref(cmd);
		free(sc);
		return dg_reply_json(r, 200, json_pack("{s:[], s:n}", "Results", "Errors"), 0);
	}
	r->scratch = sc;
	r->scratch_free = free;
	return dg_req_write(r, cmd);
}

const struct dg_route dg_routes_txn[] = {
	{"/v1/txn", false, DG_PUT, txn},
	{NULL, false, 0, NULL},
};
