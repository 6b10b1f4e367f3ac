/* Request bodies: JSON with a depth limit and Consul's error texts, Go-style case-insensitive
 * field lookup with snake_case aliases, and durations as Go strings or nanoseconds. Pure. */
#include "http/internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* jansson has its own depth limit (2048); ours (DG_MAX_JSON_DEPTH) is far lower and checked
 * before parsing, with dg_json_depth_ok. */
json_t *dg_decode_body(const char *body, size_t len, char *err, size_t errlen)
{
	size_t i = 0;
	while (i < len && (body[i] == ' ' || body[i] == '\n' || body[i] == '\r' || body[i] == '\t'))
		i++;
	if (i == len) {
		snprintf(err, errlen, "Request decode failed: EOF");
		return NULL;
	}
	if (!dg_json_depth_ok(body, len, DG_MAX_JSON_DEPTH)) {
		snprintf(err, errlen, "Request decode failed: exceeded max depth");
		return NULL;
	}
	json_error_t jerr;
	json_t *v = json_loadb(body, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (!v) {
		snprintf(err, errlen, "Request decode failed: %s", jerr.text);
		return NULL;
	}
	return v;
}

static json_t *lookup_one(json_t *obj, const char *name)
{
	json_t *v = json_object_get(obj, name);
	if (v)
		return v;
	const char *k;
	json_object_foreach(obj, k, v)
	{
		if (strcasecmp(k, name) == 0)
			return v;
	}
	return NULL;
}

json_t *dg_jget(json_t *obj, const char *name, ...)
{
	if (!json_is_object(obj))
		return NULL;
	json_t *v = lookup_one(obj, name);
	va_list ap;
	va_start(ap, name);
	const char *alias;
	while (!v && (alias = va_arg(ap, const char *)) != NULL)
		v = lookup_one(obj, alias);
	va_end(ap);
	return json_is_null(v) ? NULL : v;
}

int dg_jduration(json_t *v, int64_t *ns)
{
	*ns = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*ns = json_integer_value(v);
		return 0;
	}
	if (json_is_real(v)) {
		double d = json_real_value(v);
		if (!(d > -9.2e18 && d < 9.2e18)) /* also NaN: out of int64 range is no duration */
			return DG_EINVAL;
		*ns = (int64_t)d;
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (!*s)
			return 0;
		return dg_duration_parse(s, ns);
	}
	return DG_EINVAL;
}

const char *dg_jstr(json_t *v)
{
	const char *s = json_string_value(v);
	return s ? s : "";
}

const char *dg_json_kind(json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "object";
	case JSON_ARRAY:
		return "array";
	case JSON_STRING:
		return "string";
	case JSON_INTEGER:
	case JSON_REAL:
		return "number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "bool";
	default:
		return "null";
	}
}
