/* dcgate CLI subcommands (members, catalog, kv, services, info, join, rtt, ...): clients of a
 * running agent's HTTP API that send what Consul's CLI sends and print what it prints, so scripts
 * written for `consul` keep working. Single-threaded; one libcurl handle per run. */
#include "cmd/cli.h"

#include "catalog/archive.h"
#include "catalog/catalog.h"
#include "cmd/version.h"
#include "common/common.h"
#include "lan/gossip_msg.h"

#include "common/curl_lazy.h"
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <regex.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* The CLI's own input limits. A reply can be big (`kv get -recurse` of a whole store) but must not
 * exhaust memory; local input (a value from stdin or a file, a service file) cannot usefully exceed
 * what the agent accepts as one request body. */
#define CLI_MAX_REPLY	    (256u * 1024 * 1024)
#define CLI_MAX_INPUT	    ((size_t)DG_MAX_BODY)
#define CLI_CONNECT_TIMEOUT 10L /* seconds */
#define CLI_DEFAULT_ADDR    "127.0.0.1:8500"

/* Exit codes as Consul's CLI returns them. */
#define CLI_OK	    0
#define CLI_FAIL    1
#define CLI_NOMATCH 2 /* `members`: nothing matched the filters */

/* Everything one invocation needs. Strings taken from flags point into argv or the environment. */
struct cli {
	FILE *in, *out, *err;
	/* common flags, NULL (or false) when not given */
	const char *http_addr, *token, *ca_file, *client_cert, *client_key, *dc;
	bool stale;
	/* resolved on the first request */
	char *base;	 /* "http://host:port" without a trailing '/'; owned */
	char *unix_path; /* socket path of a unix:// address; owned */
	CURL *curl;	 /* owned */
	char curl_err[CURL_ERROR_SIZE];
};

/* ------------------------------------------------------------------------------------------------
 * Small JSON and string helpers
 */

/* The string at obj[key], or "" when absent or not a string; the result is borrowed from obj. */
static const char *jstr(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	return s ? s : "";
}

static json_int_t jint(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	if (json_is_integer(v))
		return json_integer_value(v);
	if (json_is_real(v))
		return (json_int_t)json_real_value(v);
	return 0;
}

/* Service files come from people and Consul reads their keys case-insensitively; an exact match
 * wins over a case-folded one. Borrowed reference. */
static json_t *jget_ci(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	if (v || !json_is_object(obj))
		return v;
	const char *k;
	json_object_foreach(obj, k, v)
	{
		if (strcasecmp(k, key) == 0)
			return v;
	}
	return NULL;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of obj, sorted; the array is the caller's (free()), the strings are borrowed from obj.
 * Returns NULL on allocation failure or when obj has no keys (*n tells which). */
static const char **sorted_keys(const json_t *obj, size_t *n)
{
	*n = json_object_size(obj);
	if (*n == 0)
		return NULL;
	const char **keys = malloc(*n * sizeof(*keys));
	if (!keys)
		return NULL;
	size_t i = 0;
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		keys[i++] = k;
	}
	qsort(keys, i, sizeof(*keys), str_cmp);
	return keys;
}

/* Empties b but keeps its memory; data stays a valid (empty) string when it has memory. */
static void buf_reset(struct dg_buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = 0;
}

/* Appends v as text: a string as it is, anything else as compact JSON. */
static int buf_append_jvalue(struct dg_buf *b, const json_t *v)
{
	if (json_is_string(v))
		return dg_buf_append(b, json_string_value(v), json_string_length(v));
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!s)
		return DG_ENOMEM;
	int rv = dg_buf_append(b, s, strlen(s));
	free(s);
	return rv;
}

/* Formats a string map as "k1=v1<sep>k2=v2" with sorted keys, as Consul's -detailed outputs do. */
static int buf_append_kv_map(struct dg_buf *b, const json_t *obj, const char *sep)
{
	size_t n;
	const char **keys = sorted_keys(obj, &n);
	if (!keys)
		return n ? DG_ENOMEM : 0;
	int rv = 0;
	for (size_t i = 0; i < n && rv == 0; i++) {
		if (i > 0)
			rv = dg_buf_append(b, sep, strlen(sep));
		if (rv == 0)
			rv = dg_buf_appendf(b, "%s=", keys[i]);
		if (rv == 0)
			rv = buf_append_jvalue(b, json_object_get(obj, keys[i]));
	}
	free(keys);
	return rv;
}

/* Reads all of f into out, failing with DG_ETOOBIG past max bytes or DG_EIO (errno set). */
static int read_stream(FILE *f, size_t max, struct dg_buf *out)
{
	char chunk[16384];
	size_t n;
	int rv;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
		if (out->len + n > max)
			return DG_ETOOBIG;
		if ((rv = dg_buf_append(out, chunk, n)) != 0)
			return rv;
	}
	return ferror(f) ? DG_EIO : 0;
}

static int read_file(const char *path, size_t max, struct dg_buf *out)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return DG_EIO;
	int rv = read_stream(f, max, out);
	int saved = errno;
	fclose(f);
	errno = saved;
	return rv;
}

/* ------------------------------------------------------------------------------------------------
 * Column output, as Consul's columnize (gap 2) and tabwriter (gap 6) print it: every column but the
 * last is padded to its widest cell plus the gap.
 */

struct table {
	size_t ncols, nrows, cap;
	char **cells; /* row-major, each owned */
	int err;      /* first error; later rows are dropped */
};

static void table_init(struct table *t, size_t ncols)
{
	memset(t, 0, sizeof(*t));
	t->ncols = ncols;
}

static void table_fini(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	memset(t, 0, sizeof(*t));
}

/* Adds a row of exactly t->ncols strings (copied; NULL counts as ""). */
static void table_row(struct table *t, ...)
{
	if (t->err)
		return;
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **cells = realloc(t->cells, cap * t->ncols * sizeof(*cells));
		if (!cells) {
			t->err = DG_ENOMEM;
			return;
		}
		t->cells = cells;
		t->cap = cap;
	}
	va_list ap;
	va_start(ap, t);
	char **row = t->cells + t->nrows * t->ncols;
	for (size_t i = 0; i < t->ncols; i++) {
		const char *s = va_arg(ap, const char *);
		row[i] = dg_strdup(s ? s : "");
		if (!row[i]) {
			while (i > 0)
				free(row[--i]);
			t->err = DG_ENOMEM;
			break;
		}
	}
	va_end(ap);
	if (!t->err)
		t->nrows++;
}

static int table_print(const struct table *t, FILE *out, size_t gap)
{
	if (t->err)
		return t->err;
	size_t *width = calloc(t->ncols ? t->ncols : 1, sizeof(*width));
	if (!width)
		return DG_ENOMEM;
	for (size_t r = 0; r < t->nrows; r++) {
		for (size_t i = 0; i < t->ncols; i++) {
			size_t len = strlen(t->cells[r * t->ncols + i]);
			if (len > width[i])
				width[i] = len;
		}
	}
	for (size_t r = 0; r < t->nrows; r++) {
		char **row = t->cells + r * t->ncols;
		/* An empty last cell would leave the padding as trailing blanks; stop before it. */
		size_t last = t->ncols;
		while (last > 1 && row[last - 1][0] == 0)
			last--;
		for (size_t i = 0; i < last; i++) {
			fputs(row[i], out);
			if (i + 1 < last)
				fprintf(out, "%*s", (int)(width[i] - strlen(row[i]) + gap), "");
		}
		fputc('\n', out);
	}
	free(width);
	return 0;
}

/* ------------------------------------------------------------------------------------------------
 * Flags, parsed the way Go's flag package does (-name, --name, -name=value, -name value; booleans
 * take only the -name=value form), with one extension: once a positional argument was seen, known
 * flags are still taken and unknown "-x" words are positional, so `kv delete key -recurse` and
 * `kv put key -1` both do what they say.
 */

enum flag_kind { FLAG_BOOL, FLAG_STR, FLAG_U64, FLAG_LIST };

struct str_list {
	const char **v; /* owned array; the strings point into argv */
	size_t n;
};

struct flag {
	const char *name;
	enum flag_kind kind;
	void *dst; /* bool *, const char **, uint64_t * or struct str_list * */
};

struct args {
	char **v; /* owned array; the strings point into argv */
	size_t n;
};

static void args_fini(struct args *a)
{
	free(a->v);
	a->v = NULL;
	a->n = 0;
}

static void flags_fini(const struct flag *flags)
{
	for (const struct flag *f = flags; f && f->name; f++) {
		if (f->kind == FLAG_LIST) {
			struct str_list *l = f->dst;
			free(l->v);
			l->v = NULL;
			l->n = 0;
		}
	}
}

static const struct flag *flag_find(const struct flag *tab, const char *name, size_t len)
{
	for (const struct flag *f = tab; f && f->name; f++) {
		if (strlen(f->name) == len && strncmp(f->name, name, len) == 0)
			return f;
	}
	return NULL;
}

static int flag_set(struct cli *c, const struct flag *f, const char *val)
{
	switch (f->kind) {
	case FLAG_BOOL:
		if (dg_parse_bool(val, f->dst) != 0) {
			fprintf(c->err, "invalid boolean value \"%s\" for -%s\n", val, f->name);
			return DG_EINVAL;
		}
		return 0;
	case FLAG_STR:
		*(const char **)f->dst = val;
		return 0;
	case FLAG_U64:
		if (dg_parse_u64(val, f->dst) != 0) {
			fprintf(c->err, "invalid value \"%s\" for flag -%s: parse error\n", val,
				f->name);
			return DG_EINVAL;
		}
		return 0;
	case FLAG_LIST: {
		struct str_list *l = f->dst;
		const char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
		if (!v)
			return DG_ENOMEM;
		v[l->n++] = val;
		l->v = v;
		return 0;
	}
	}
	return DG_EINVAL;
}

enum { PARSE_OK, PARSE_HELP, PARSE_ERR };

/* Parses argv (the words after the subcommand) against own, the client flags and, when server is
 * set, the flags of commands the servers answer (-datacenter, -stale). Positionals go to pos (the
 * caller frees with args_fini even on error). Prints the reason for PARSE_ERR. */
static int flags_parse(struct cli *c, const struct flag *own, bool server, int argc, char **argv,
		       struct args *pos)
{
	const struct flag client_flags[] = {
	    {"http-addr", FLAG_STR, &c->http_addr},   {"token", FLAG_STR, &c->token},
	    {"ca-file", FLAG_STR, &c->ca_file},	      {"client-cert", FLAG_STR, &c->client_cert},
	    {"client-key", FLAG_STR, &c->client_key}, {NULL, FLAG_BOOL, NULL},
	};
	const struct flag server_flags[] = {
	    {"datacenter", FLAG_STR, &c->dc},
	    {"stale", FLAG_BOOL, &c->stale},
	    {NULL, FLAG_BOOL, NULL},
	};
	bool done = false;

	pos->n = 0;
	pos->v = calloc((size_t)argc + 1, sizeof(*pos->v));
	if (!pos->v) {
		fprintf(c->err, "Error: %s\n", dg_strerror(DG_ENOMEM));
		return PARSE_ERR;
	}
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!done && strcmp(a, "--") == 0) {
			done = true;
			continue;
		}
		if (done || a[0] != '-' || a[1] == 0) {
			pos->v[pos->n++] = argv[i];
			continue;
		}
		const char *name = a + 1 + (a[1] == '-');
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		if ((len == 1 && name[0] == 'h') || (len == 4 && strncmp(name, "help", 4) == 0))
			return PARSE_HELP;
		const struct flag *f = flag_find(own, name, len);
		if (!f)
			f = flag_find(client_flags, name, len);
		if (!f && server)
			f = flag_find(server_flags, name, len);
		if (!f) {
			if (pos->n > 0) {
				pos->v[pos->n++] = argv[i];
				continue;
			}
			fprintf(c->err, "flag provided but not defined: -%.*s\n", (int)len, name);
			return PARSE_ERR;
		}
		const char *val = eq ? eq + 1 : NULL;
		if (!val && f->kind == FLAG_BOOL)
			val = "true";
		if (!val) {
			if (i + 1 >= argc) {
				fprintf(c->err, "flag needs an argument: -%s\n", f->name);
				return PARSE_ERR;
			}
			val = argv[++i];
		}
		if (flag_set(c, f, val) != 0)
			return PARSE_ERR;
	}
	return PARSE_OK;
}

/* Parses a command's flags and decides what happens next: true to go on, false to return *code
 * (help printed to stdout with 0, or a usage error printed to stderr with 1). */
static bool cli_parse(struct cli *c, const char *usage, const struct flag *own, bool server,
		      int argc, char **argv, struct args *pos, int *code)
{
	switch (flags_parse(c, own, server, argc, argv, pos)) {
	case PARSE_OK:
		return true;
	case PARSE_HELP:
		fputs(usage, c->out);
		*code = CLI_OK;
		return false;
	default:
		fputs(usage, c->err);
		*code = CLI_FAIL;
		return false;
	}
}

/* Reports a usage error: the reason, then the command's usage, on stderr. */
static int cli_usage_error(struct cli *c, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int cli_usage_error(struct cli *c, const char *usage, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(c->err, fmt, ap);
	va_end(ap);
	fputc('\n', c->err);
	fputs(usage, c->err);
	return CLI_FAIL;
}

/* A command's subcommand by name (argv[0]); no name or a flag first: the usage, on stdout for
 * -h/-help/--help (success) and on stderr otherwise (failure), as Consul's CLI does. */
struct subcommand {
	const char *name;
	int (*run)(struct cli *c, int argc, char **argv);
};

static int run_subcommand(struct cli *c, int argc, char **argv, const char *usage,
			  const char *command, const struct subcommand *subs, size_t n)
{
	if (argc < 1 || argv[0][0] == '-') {
		bool help =
		    argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "-help") == 0 ||
				  strcmp(argv[0], "--help") == 0);
		fputs(usage, help ? c->out : c->err);
		return help ? CLI_OK : CLI_FAIL;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(argv[0], subs[i].name) == 0)
			return subs[i].run(c, argc - 1, argv + 1);
	return cli_usage_error(c, usage, "Unknown %s subcommand: %s", command, argv[0]);
}

/* ------------------------------------------------------------------------------------------------
 * Talking to the agent
 */

/* DCGATE_<name>, else CONSUL_<name>; NULL when neither is set to a non-empty value. */
static const char *env_setting(const char *name)
{
	static const char *const prefixes[] = {"DCGATE_", "CONSUL_"};
	char var[64];
	for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
		int n = snprintf(var, sizeof(var), "%s%s", prefixes[i], name);
		if (n < 0 || (size_t)n >= sizeof(var))
			continue;
		const char *v = getenv(var);
		if (v && *v)
			return v;
	}
	return NULL;
}

/* Leaves a reason in c->curl_err for cli_fail. A reason longer than the buffer is cut short,
 * which loses only the end of a message, so the length is not checked. */
static void cli_set_err(struct cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cli_set_err(struct cli *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vsnprintf(c->curl_err, sizeof(c->curl_err), fmt, ap) < 0)
		c->curl_err[0] = 0;
	va_end(ap);
}

/* The address in the words of an error message. */
static const char *cli_addr_text(const struct cli *c)
{
	if (c->unix_path)
		return c->unix_path;
	return c->base ? c->base : "(unset)";
}

/* Resolves the agent address and opens the curl handle, once. On failure leaves the reason in
 * c->curl_err and returns DG_EINVAL or DG_ENOMEM. */
static int cli_connect(struct cli *c)
{
	if (c->curl)
		return 0;
	/* A failed earlier attempt may have got this far; start over. */
	free(c->base);
	free(c->unix_path);
	c->base = c->unix_path = NULL;
	const char *addr = c->http_addr;
	if (!addr || !*addr)
		addr = env_setting("HTTP_ADDR");
	if (!addr)
		addr = CLI_DEFAULT_ADDR;

	struct dg_buf b;
	dg_buf_init(&b);
	int rv;
	if (strncmp(addr, "unix://", 7) == 0) {
		if (!(c->unix_path = dg_strdup(addr + 7)))
			return DG_ENOMEM;
		rv = dg_buf_appendf(&b, "http://localhost");
	} else if (strncmp(addr, "http://", 7) == 0 || strncmp(addr, "https://", 8) == 0) {
		rv = dg_buf_appendf(&b, "%s", addr);
	} else if (strstr(addr, "://")) {
		cli_set_err(
		    c,
		    "unsupported scheme in HTTP address \"%s\" (use http://, https:// or unix://)",
		    addr);
		return DG_EINVAL;
	} else {
		/* As Consul: a bare address is plain HTTP unless CONSUL_HTTP_SSL says otherwise. */
		bool ssl = false;
		const char *s = env_setting("HTTP_SSL");
		if (s && dg_parse_bool(s, &ssl) != 0)
			ssl = false;
		rv = dg_buf_appendf(&b, "%s://%s", ssl ? "https" : "http", addr);
	}
	if (rv != 0) {
		dg_buf_fini(&b);
		return rv;
	}
	while (b.len > 0 && b.data[b.len - 1] == '/')
		b.data[--b.len] = 0;
	c->base = dg_buf_steal(&b, NULL);

	const struct dg_curl *cu = dg_curl();
	if (!cu) {
		cli_set_err(c, "%s", dg_curl_error());
		return DG_EIO;
	}
	if (!(c->curl = cu->easy_init())) {
		cli_set_err(c, "cannot initialise libcurl");
		return DG_ENOMEM;
	}
	CURL *h = c->curl;
	cu->easy_setopt(h, CURLOPT_ERRORBUFFER, c->curl_err);
	cu->easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	cu->easy_setopt(h, CURLOPT_CONNECTTIMEOUT, CLI_CONNECT_TIMEOUT);
	cu->easy_setopt(h, CURLOPT_USERAGENT, "dcgate/" DG_VERSION);
	cu->easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
	if (c->unix_path)
		cu->easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path);

	const char *ca = c->ca_file ? c->ca_file : env_setting("CACERT");
	const char *cert = c->client_cert ? c->client_cert : env_setting("CLIENT_CERT");
	const char *key = c->client_key ? c->client_key : env_setting("CLIENT_KEY");
	const char *verify = env_setting("HTTP_SSL_VERIFY");
	bool v = true;
	if (ca)
		cu->easy_setopt(h, CURLOPT_CAINFO, ca);
	if (cert)
		cu->easy_setopt(h, CURLOPT_SSLCERT, cert);
	if (key)
		cu->easy_setopt(h, CURLOPT_SSLKEY, key);
	if (verify && dg_parse_bool(verify, &v) == 0 && !v) {
		cu->easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
		cu->easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return 0;
}

struct reply {
	long status;	    /* 0 when no response arrived */
	struct dg_buf body; /* data is NULL when the body is empty */
	bool too_big;	    /* the body passed CLI_MAX_REPLY and was cut off */
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
	struct reply *r = ud;
	size_t len = size * nmemb;
	if (r->body.len + len > CLI_MAX_REPLY) {
		r->too_big = true;
		return 0; /* makes curl fail with CURLE_WRITE_ERROR */
	}
	return dg_buf_append(&r->body, data, len) == 0 ? len : 0;
}

/* Sends one request. path includes its query string. r is initialised here and the caller must
 * dg_buf_fini(&r->body) whatever the result. Returns 0 when a response of any status arrived,
 * DG_EIO when the agent was not reached (reason in c->curl_err), DG_ETOOBIG, DG_EINVAL for a bad
 * address, DG_ENOMEM. */
static int cli_request(struct cli *c, const char *method, const char *path, const void *body,
		       size_t body_len, const char *content_type, struct reply *r)
{
	r->status = 0;
	r->too_big = false;
	dg_buf_init(&r->body);
	c->curl_err[0] = 0;
	int rv;
	if ((rv = cli_connect(c)) != 0)
		return rv;

	const struct dg_curl *cu = dg_curl(); /* loaded: cli_connect succeeded */
	struct dg_buf url, tok;
	dg_buf_init(&url);
	dg_buf_init(&tok);
	struct curl_slist *hdrs = NULL, *h;
	const char *token = c->token ? c->token : env_setting("HTTP_TOKEN");
	if ((rv = dg_buf_appendf(&url, "%s%s", c->base, path)) != 0)
		goto out;
	/* The agent (libmicrohttpd) gains nothing from a 100-continue round trip. */
	if (!(h = cu->slist_append(hdrs, "Expect:")))
		goto nomem;
	hdrs = h;
	if (token) {
		if ((rv = dg_buf_appendf(&tok, "X-Consul-Token: %s", token)) != 0)
			goto out;
		if (!(h = cu->slist_append(hdrs, tok.data)))
			goto nomem;
		hdrs = h;
	}
	if (content_type) {
		dg_buf_fini(&tok);
		if ((rv = dg_buf_appendf(&tok, "Content-Type: %s", content_type)) != 0)
			goto out;
		if (!(h = cu->slist_append(hdrs, tok.data)))
			goto nomem;
		hdrs = h;
	}

	CURL *e = c->curl;
	cu->easy_setopt(e, CURLOPT_URL, url.data);
	cu->easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
	cu->easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	cu->easy_setopt(e, CURLOPT_WRITEDATA, r);
	/* HTTPGET resets whatever method and body the previous request on this handle used. */
	cu->easy_setopt(e, CURLOPT_HTTPGET, 1L);
	cu->easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
	if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
		cu->easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
		cu->easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
		cu->easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	} else if (strcmp(method, "GET") != 0) {
		cu->easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	}

	CURLcode cc = cu->easy_perform(e);
	cu->easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
	if (cc == CURLE_WRITE_ERROR) {
		rv = r->too_big ? DG_ETOOBIG : DG_ENOMEM;
	} else if (cc != CURLE_OK) {
		if (!c->curl_err[0])
			cli_set_err(c, "%s", cu->easy_strerror(cc));
		rv = DG_EIO;
	} else {
		cu->easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
		rv = 0;
	}
	goto out;
nomem:
	rv = DG_ENOMEM;
out:
	cu->slist_free_all(hdrs);
	dg_buf_fini(&url);
	dg_buf_fini(&tok);
	return rv;
}

/* Prints "<what>: <why>" to stderr for a failed call (rv from cli_request, or 0 with a non-2xx
 * reply in r) and returns CLI_FAIL. */
static int cli_fail(struct cli *c, int rv, const struct reply *r, const char *what)
{
	switch (rv) {
	case 0: {
		/* The Go client's wording, which scripts and people grep for. */
		const char *b = r->body.data ? r->body.data : "";
		size_t len = r->body.len;
		while (len > 0 && (b[len - 1] == '\n' || b[len - 1] == '\r' || b[len - 1] == ' '))
			len--;
		fprintf(c->err, "%s: Unexpected response code: %ld (%.*s)\n", what, r->status,
			(int)len, b);
		break;
	}
	case DG_EIO:
		fprintf(
		    c->err,
		    "%s: cannot reach the dcgate agent at %s: %s (is it running? the address comes "
		    "from -http-addr, DCGATE_HTTP_ADDR or CONSUL_HTTP_ADDR)\n",
		    what, cli_addr_text(c), c->curl_err);
		break;
	case DG_ETOOBIG:
		fprintf(c->err, "%s: reply from the agent at %s is larger than %u bytes\n", what,
			cli_addr_text(c), CLI_MAX_REPLY);
		break;
	case DG_EINVAL:
		fprintf(c->err, "%s: %s\n", what, c->curl_err[0] ? c->curl_err : dg_strerror(rv));
		break;
	default:
		fprintf(c->err, "%s: %s\n", what, dg_strerror(rv));
		break;
	}
	return CLI_FAIL;
}

/* A request path under construction: escapes what it appends and remembers the first error, so
 * callers check once before sending. */
struct cli_url {
	struct dg_buf b;
	bool has_query;
	int err;
};

static void url_init(struct cli_url *u, const char *path)
{
	dg_buf_init(&u->b);
	u->has_query = false;
	u->err = dg_buf_append(&u->b, path, strlen(path));
}

static void url_fini(struct cli_url *u)
{
	dg_buf_fini(&u->b);
}

/* Percent-encodes all but unreserved characters and those in keep. */
static void url_escape(struct cli_url *u, const char *s, const char *keep)
{
	static const char hex[] = "0123456789ABCDEF";
	for (const unsigned char *p = (const unsigned char *)s; *p && !u->err; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p) || strchr(keep, *p)) {
			u->err = dg_buf_append(&u->b, p, 1);
		} else {
			char e[3] = {'%', hex[*p >> 4], hex[*p & 15]};
			u->err = dg_buf_append(&u->b, e, 3);
		}
	}
}

/* Appends a path segment; a KV key keeps its '/' (it is a path of its own). */
static void url_segment(struct cli_url *u, const char *s, bool keep_slash)
{
	url_escape(u, s, keep_slash ? "/:@" : ":@");
}

/* Appends ?name=value (or &...); a NULL value adds the bare name, which the API reads as "on". */
static void url_param(struct cli_url *u, const char *name, const char *value)
{
	if (!u->err)
		u->err = dg_buf_append(&u->b, u->has_query ? "&" : "?", 1);
	u->has_query = true;
	url_escape(u, name, "");
	if (value) {
		if (!u->err)
			u->err = dg_buf_append(&u->b, "=", 1);
		url_escape(u, value, "");
	}
}

static void url_param_u64(struct cli_url *u, const char *name, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)v);
	if (n < 0 || (size_t)n >= sizeof(num)) {
		u->err = DG_EINVAL;
		return;
	}
	url_param(u, name, num);
}

/* The query parameters of the server flags (-datacenter, -stale). */
static void url_server_params(struct cli *c, struct cli_url *u)
{
	if (c->dc && *c->dc)
		url_param(u, "dc", c->dc);
	if (c->stale)
		url_param(u, "stale", NULL);
}

/* One call that must succeed with a 200: returns 0 with the reply in r (the caller frees r->body),
 * or prints "<what>: <why>" and returns CLI_FAIL (r->body is then already freed). */
static int cli_call(struct cli *c, const char *method, struct cli_url *u, const void *body,
		    size_t body_len, const char *content_type, const char *what, struct reply *r)
{
	int rv = u->err;
	if (rv != 0) {
		dg_buf_init(&r->body);
		return cli_fail(c, rv, r, what);
	}
	rv = cli_request(c, method, u->b.data, body, body_len, content_type, r);
	if (rv != 0 || r->status != 200) {
		cli_fail(c, rv, r, what);
		dg_buf_fini(&r->body);
		return CLI_FAIL;
	}
	return 0;
}

/* Like cli_call, decoding the JSON reply into *out (the caller's reference). With allow_404 a 404
 * gives 0 and *out == NULL, as the Go client reads a missing KV key. */
static int cli_call_json(struct cli *c, const char *method, struct cli_url *u, const void *body,
			 size_t body_len, const char *content_type, const char *what,
			 bool allow_404, json_t **out)
{
	struct reply r;
	*out = NULL;
	int rv = u->err;
	if (rv != 0) {
		dg_buf_init(&r.body);
		return cli_fail(c, rv, &r, what);
	}
	rv = cli_request(c, method, u->b.data, body, body_len, content_type, &r);
	if (rv == 0 && r.status == 404 && allow_404) {
		dg_buf_fini(&r.body);
		return 0;
	}
	if (rv != 0 || r.status != 200) {
		cli_fail(c, rv, &r, what);
		dg_buf_fini(&r.body);
		return CLI_FAIL;
	}
	json_error_t jerr;
	*out = json_loadb(r.body.data ? r.body.data : "", r.body.len, JSON_DECODE_ANY, &jerr);
	dg_buf_fini(&r.body);
	if (!*out) {
		fprintf(c->err, "%s: invalid JSON from the agent at %s: %s\n", what,
			cli_addr_text(c), jerr.text);
		return CLI_FAIL;
	}
	return 0;
}

static int cli_bad_reply(struct cli *c, const char *what)
{
	fprintf(c->err, "%s: unexpected reply from the agent at %s\n", what, cli_addr_text(c));
	return CLI_FAIL;
}

/* ------------------------------------------------------------------------------------------------
 * members
 */

/* The tails of the usage texts: the flags every command takes, and those of commands that the
 * servers answer. */
#define USAGE_CLIENT                                                                               \
	"  -http-addr=<addr>    Agent HTTP address (default: $DCGATE_HTTP_ADDR, "                  \
	"$CONSUL_HTTP_ADDR,\n"                                                                     \
	"                       127.0.0.1:8500); http://, https:// or unix:// may be given.\n"     \
	"  -token=<token>       ACL token (default: $DCGATE_HTTP_TOKEN, $CONSUL_HTTP_TOKEN).\n"    \
	"  -ca-file=<file> -client-cert=<file> -client-key=<file>   TLS to the agent's HTTPS "     \
	"port.\n"
#define USAGE_SERVER                                                                               \
	"  -datacenter=<dc>     Ask this datacenter (default: the agent's own).\n"                 \
	"  -stale               Let any server answer, not only the leader.\n"

static const char usage_members[] =
    "Usage: dcgate members [options]\n"
    "\n"
    "  Outputs the members of a running agent's cluster.\n"
    "\n"
    "  -wan             List the WAN members (the servers of every datacenter).\n"
    "  -detailed        Show every tag instead of the summary columns.\n"
    "  -status=<regex>  Only show members whose status matches.\n"
    "  -segment=<name>  Only show members of this network segment.\n"
    "  -filter=<expr>   Filter expression, as the HTTP API's ?filter.\n" USAGE_CLIENT;

static const char *member_status(json_int_t s)
{
	static const char *const names[] = {"none", "alive", "leaving", "left", "failed"};
	return s >= 0 && s < 5 ? names[s] : "unknown";
}

static bool member_is_server(const json_t *m)
{
	return strcmp(jstr(json_object_get(m, "Tags"), "role"), "consul") == 0;
}

/* Consul's order: servers first, then by segment, partition and name. Every member's "ap" and
 * "segment" tags are filled in before sorting (members_normalise). */
static int member_cmp(const void *a, const void *b)
{
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	const json_t *tx = json_object_get(x, "Tags"), *ty = json_object_get(y, "Tags");
	bool sx = member_is_server(x), sy = member_is_server(y);
	int d;
	if (sx != sy)
		return sx ? -1 : 1;
	bool px = strcmp(jstr(tx, "ap"), "default") == 0,
	     py = strcmp(jstr(ty, "ap"), "default") == 0;
	if (px != py)
		return px ? -1 : 1;
	if ((d = strcmp(jstr(tx, "segment"), jstr(ty, "segment"))) != 0)
		return d;
	if ((d = strcmp(jstr(tx, "ap"), jstr(ty, "ap"))) != 0)
		return d;
	return strcmp(jstr(x, "Name"), jstr(y, "Name"));
}

/* Fills in the tags Consul's members command shows for absent ones (also in -detailed output):
 * partition "default"; segment "<all>" for servers when no -segment was asked for, else
 * "<default>" when empty. */
static int members_normalise(json_t *m, bool all_segments)
{
	json_t *tags = json_object_get(m, "Tags");
	if (!json_is_object(tags)) {
		if (json_object_set_new(m, "Tags", json_object()) != 0)
			return DG_ENOMEM;
		tags = json_object_get(m, "Tags");
	}
	if (!*jstr(tags, "ap") && json_object_set_new(tags, "ap", json_string("default")) != 0)
		return DG_ENOMEM;
	const char *seg = NULL;
	if (all_segments && member_is_server(m))
		seg = "<all>";
	else if (!*jstr(tags, "segment"))
		seg = "<default>";
	if (seg && json_object_set_new(tags, "segment", json_string(seg)) != 0)
		return DG_ENOMEM;
	return 0;
}

static int cmd_members(struct cli *c, int argc, char **argv)
{
	bool wan = false, detailed = false;
	const char *status = ".*", *segment = NULL, *filter = NULL;
	const struct flag flags[] = {
	    {"wan", FLAG_BOOL, &wan},	   {"detailed", FLAG_BOOL, &detailed},
	    {"status", FLAG_STR, &status}, {"segment", FLAG_STR, &segment},
	    {"filter", FLAG_STR, &filter}, {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_members, flags, false, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage_members, "Too many arguments (expected 0, got %zu)",
				       pos.n);
		goto out_args;
	}
	regex_t re;
	if (regcomp(&re, status, REG_EXTENDED | REG_NOSUB) != 0) {
		fprintf(c->err, "Failed to compile status regexp: %s\n", status);
		goto out_args;
	}

	const char *what = "Error retrieving members";
	bool all_segments = !segment || strcmp(segment, "_all") == 0;
	struct cli_url u;
	json_t *list = NULL;
	json_t **members = NULL;
	struct table t;
	struct dg_buf cell;
	table_init(&t, detailed ? 4 : 9);
	dg_buf_init(&cell);
	url_init(&u, "/v1/agent/members");
	if (wan)
		url_param(&u, "wan", "1");
	if (!all_segments)
		url_param(&u, "segment", segment);
	if (filter)
		url_param(&u, "filter", filter);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &list)) != 0)
		goto out;
	if (!json_is_array(list) && !json_is_null(list)) {
		code = cli_bad_reply(c, what);
		goto out;
	}

	size_t n = 0, total = json_array_size(list);
	if (total > 0 && !(members = malloc(total * sizeof(*members)))) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	for (size_t i = 0; i < total; i++) {
		json_t *m = json_array_get(list, i);
		if (!json_is_object(m))
			continue;
		if (members_normalise(m, all_segments) != 0) {
			code = cli_fail(c, DG_ENOMEM, NULL, what);
			goto out;
		}
		if (regexec(&re, member_status(jint(m, "Status")), 0, NULL, 0) == 0)
			members[n++] = m;
	}
	if (n == 0) {
		code = CLI_NOMATCH;
		goto out;
	}
	qsort(members, n, sizeof(*members), member_cmp);

	if (detailed)
		table_row(&t, "Node", "Address", "Status", "Tags");
	else
		table_row(&t, "Node", "Address", "Status", "Type", "Build", "Protocol", "DC",
			  "Partition", "Segment");
	for (size_t i = 0; i < n; i++) {
		json_t *m = members[i], *tags = json_object_get(m, "Tags");
		const char *addr = jstr(m, "Addr");
		char addr_port[320];
		/* IPv6 in brackets, as Go's net.TCPAddr prints it. */
		bool v6 = strchr(addr, ':') != NULL;
		int w = snprintf(addr_port, sizeof(addr_port), "%s%s%s:%lld", v6 ? "[" : "", addr,
				 v6 ? "]" : "", (long long)jint(m, "Port"));
		if (w < 0 || (size_t)w >= sizeof(addr_port)) {
			code = cli_bad_reply(c, what);
			goto out;
		}
		const char *st = member_status(jint(m, "Status"));
		if (detailed) {
			buf_reset(&cell);
			if (buf_append_kv_map(&cell, tags, ",") != 0)
				t.err = DG_ENOMEM;
			table_row(&t, jstr(m, "Name"), addr_port, st, cell.data);
			continue;
		}
		const char *role = jstr(tags, "role"), *type;
		if (strcmp(role, "consul") == 0) {
			type = "server";
		} else if (strcmp(role, "node") == 0) {
			type = "client";
		} else {
			table_row(&t, jstr(m, "Name"), addr_port, st, "unknown", "", "", "", "",
				  "");
			continue;
		}
		/* Build is the version before ":<revision>". */
		const char *build = jstr(tags, "build");
		const char *colon = strchr(build, ':');
		char *build_ver =
		    colon ? dg_strndup(build, (size_t)(colon - build)) : dg_strdup(build);
		if (!build_ver) {
			t.err = DG_ENOMEM;
			break;
		}
		table_row(&t, jstr(m, "Name"), addr_port, st, type, *build ? build_ver : "< 0.3",
			  jstr(tags, "vsn"), jstr(tags, "dc"), jstr(tags, "ap"),
			  jstr(tags, "segment"));
		free(build_ver);
	}
	if (table_print(&t, c->out, 2) != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	code = CLI_OK;
out:
	regfree(&re);
	free(members);
	json_decref(list);
	table_fini(&t);
	dg_buf_fini(&cell);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

/* ------------------------------------------------------------------------------------------------
 * catalog datacenters | nodes | services
 */

static const char usage_catalog[] =
    "Usage: dcgate catalog <subcommand> [options]\n"
    "\n"
    "  Queries the catalog of a datacenter.\n"
    "\n"
    "    datacenters   Lists the known datacenters, nearest first.\n"
    "    nodes         Lists the nodes.\n"
    "    services      Lists the service names.\n";

static const char usage_catalog_dcs[] = "Usage: dcgate catalog datacenters [options]\n"
					"\n"
					"  Lists the known datacenters, nearest first.\n"
					"\n" USAGE_SERVER USAGE_CLIENT;

static const char usage_catalog_nodes[] =
    "Usage: dcgate catalog nodes [options]\n"
    "\n"
    "  Lists the nodes of a datacenter.\n"
    "\n"
    "  -detailed            Show the full ID, tagged addresses and node metadata.\n"
    "  -service=<name>      Only nodes that provide this service.\n"
    "  -near=<node>         Sort by estimated round-trip time from this node ('_agent' for this "
    "one).\n"
    "  -node-meta=<k=v>     Only nodes with this metadata; repeatable.\n"
    "  -filter=<expr>       Filter expression, as the HTTP API's ?filter.\n" USAGE_SERVER
	USAGE_CLIENT;

static const char usage_catalog_services[] =
    "Usage: dcgate catalog services [options]\n"
    "\n"
    "  Lists the service names of a datacenter, sorted.\n"
    "\n"
    "  -tags                Also show each service's tags.\n"
    "  -node=<node>         Only services registered on this node.\n"
    "  -node-meta=<k=v>     Only services on nodes with this metadata; repeatable.\n"
    "  -filter=<expr>       Filter expression, as the HTTP API's ?filter.\n" USAGE_SERVER
	USAGE_CLIENT;

static void url_node_meta(struct cli_url *u, const struct str_list *meta)
{
	for (size_t i = 0; i < meta->n; i++) {
		/* The CLI takes key=value, the API key:value. */
		char *kv = dg_strdup(meta->v[i]);
		if (!kv) {
			u->err = DG_ENOMEM;
			return;
		}
		char *eq = strchr(kv, '=');
		if (eq)
			*eq = ':';
		url_param(u, "node-meta", kv);
		free(kv);
	}
}

static int cmd_catalog_datacenters(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_catalog_dcs, NULL, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage_catalog_dcs,
				       "Too many arguments (expected 0, got %zu)", pos.n);
		goto out_args;
	}
	const char *what = "Error listing datacenters";
	struct cli_url u;
	json_t *dcs = NULL;
	url_init(&u, "/v1/catalog/datacenters");
	url_server_params(c, &u);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &dcs)) != 0)
		goto out;
	if (!json_is_array(dcs) && !json_is_null(dcs)) {
		code = cli_bad_reply(c, what);
		goto out;
	}
	size_t i;
	json_t *dc;
	json_array_foreach(dcs, i, dc)
	{
		if (json_is_string(dc))
			fprintf(c->out, "%s\n", json_string_value(dc));
	}
	code = CLI_OK;
out:
	json_decref(dcs);
	url_fini(&u);
out_args:
	args_fini(&pos);
	return code;
}

static int cmd_catalog_nodes(struct cli *c, int argc, char **argv)
{
	bool detailed = false;
	const char *service = NULL, *near = NULL, *filter = NULL;
	struct str_list meta = {NULL, 0};
	const struct flag flags[] = {
	    {"detailed", FLAG_BOOL, &detailed}, {"service", FLAG_STR, &service},
	    {"near", FLAG_STR, &near},		{"node-meta", FLAG_LIST, &meta},
	    {"filter", FLAG_STR, &filter},	{NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_catalog_nodes, flags, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage_catalog_nodes,
				       "Too many arguments (expected 0, got %zu)", pos.n);
		goto out_args;
	}

	const char *what = service ? "Error listing nodes for service" : "Error listing nodes";
	struct cli_url u;
	json_t *nodes = NULL;
	struct table t;
	struct dg_buf tagged, nmeta;
	table_init(&t, detailed ? 6 : 4);
	dg_buf_init(&tagged);
	dg_buf_init(&nmeta);
	if (service) {
		url_init(&u, "/v1/catalog/service/");
		url_segment(&u, service, false);
	} else {
		url_init(&u, "/v1/catalog/nodes");
	}
	url_server_params(c, &u);
	if (near)
		url_param(&u, "near", near);
	url_node_meta(&u, &meta);
	if (filter)
		url_param(&u, "filter", filter);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &nodes)) != 0)
		goto out;
	if (!json_is_array(nodes) && !json_is_null(nodes)) {
		code = cli_bad_reply(c, what);
		goto out;
	}
	if (json_array_size(nodes) == 0) {
		fprintf(c->err, "No nodes match the given query - try expanding your search.\n");
		code = CLI_OK;
		goto out;
	}

	if (detailed)
		table_row(&t, "Node", "ID", "Address", "DC", "TaggedAddresses", "Meta");
	else
		table_row(&t, "Node", "ID", "Address", "DC");
	size_t i;
	json_t *n;
	json_array_foreach(nodes, i, n)
	{
		/* A catalog/service entry carries the node's fields, its metadata as NodeMeta. */
		const char *id = jstr(n, "ID");
		if (!detailed) {
			/* The first group of the UUID is enough to tell nodes apart. */
			const char *dash = strchr(id, '-');
			char *short_id =
			    dash && dash > id ? dg_strndup(id, (size_t)(dash - id)) : dg_strdup(id);
			if (!short_id)
				t.err = DG_ENOMEM;
			table_row(&t, jstr(n, "Node"), short_id, jstr(n, "Address"),
				  jstr(n, "Datacenter"));
			free(short_id);
			continue;
		}
		buf_reset(&tagged);
		buf_reset(&nmeta);
		json_t *m = json_object_get(n, service ? "NodeMeta" : "Meta");
		if (buf_append_kv_map(&tagged, json_object_get(n, "TaggedAddresses"), ", ") != 0 ||
		    buf_append_kv_map(&nmeta, m, ", ") != 0)
			t.err = DG_ENOMEM;
		table_row(&t, jstr(n, "Node"), id, jstr(n, "Address"), jstr(n, "Datacenter"),
			  tagged.data, nmeta.data);
	}
	if (table_print(&t, c->out, 2) != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	code = CLI_OK;
out:
	json_decref(nodes);
	table_fini(&t);
	dg_buf_fini(&tagged);
	dg_buf_fini(&nmeta);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

/* Appends the string tags in src to the array dst. */
static int tags_merge(json_t *dst, const json_t *src)
{
	size_t i;
	json_t *tag;
	json_array_foreach((json_t *)src, i, tag)
	{
		if (json_is_string(tag) && json_array_append(dst, tag) != 0)
			return DG_ENOMEM;
	}
	return 0;
}

static int cmd_catalog_services(struct cli *c, int argc, char **argv)
{
	bool tags = false;
	const char *node = NULL, *filter = NULL;
	struct str_list meta = {NULL, 0};
	const struct flag flags[] = {
	    {"tags", FLAG_BOOL, &tags},	     {"node", FLAG_STR, &node},
	    {"node-meta", FLAG_LIST, &meta}, {"filter", FLAG_STR, &filter},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_catalog_services, flags, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage_catalog_services,
				       "Too many arguments (expected 0, got %zu)", pos.n);
		goto out_args;
	}

	const char *what = node ? "Error listing services for node" : "Error listing services";
	struct cli_url u;
	json_t *reply = NULL, *services = NULL; /* services: name -> [tags] */
	const char **names = NULL;
	const char **sorted = NULL;
	struct table t;
	struct dg_buf joined;
	table_init(&t, 2);
	dg_buf_init(&joined);
	if (node) {
		url_init(&u, "/v1/catalog/node/");
		url_segment(&u, node, false);
	} else {
		url_init(&u, "/v1/catalog/services");
	}
	url_server_params(c, &u);
	url_node_meta(&u, &meta);
	if (filter)
		url_param(&u, "filter", filter);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &reply)) != 0)
		goto out;
	code = CLI_FAIL;
	if (!node) {
		if (!json_is_object(reply) && !json_is_null(reply)) {
			code = cli_bad_reply(c, what);
			goto out;
		}
		services = json_incref(reply);
	} else {
		/* An unknown node is a null reply; a known one lists its instances by ID. */
		if (!(services = json_object())) {
			code = cli_fail(c, DG_ENOMEM, NULL, what);
			goto out;
		}
		const char *id;
		json_t *inst;
		json_object_foreach(json_object_get(reply, "Services"), id, inst)
		{
			const char *name = jstr(inst, "Service");
			json_t *list = json_object_get(services, name);
			if (!list && (json_object_set_new(services, name, json_array()) != 0 ||
				      !(list = json_object_get(services, name)))) {
				code = cli_fail(c, DG_ENOMEM, NULL, what);
				goto out;
			}
			if (tags_merge(list, json_object_get(inst, "Tags")) != 0) {
				code = cli_fail(c, DG_ENOMEM, NULL, what);
				goto out;
			}
		}
	}
	size_t n;
	if (!(names = sorted_keys(services, &n))) {
		if (n) {
			code = cli_fail(c, DG_ENOMEM, NULL, what);
			goto out;
		}
		fprintf(c->err, "No services match the given query - try expanding your search.\n");
		code = CLI_OK;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!tags) {
			fprintf(c->out, "%s\n", names[i]);
			continue;
		}
		json_t *list = json_object_get(services, names[i]);
		size_t nt = 0, total = json_array_size(list);
		free(sorted);
		sorted = total ? malloc(total * sizeof(*sorted)) : NULL;
		if (total && !sorted) {
			code = cli_fail(c, DG_ENOMEM, NULL, what);
			goto out;
		}
		for (size_t k = 0; k < total; k++) {
			const char *s = json_string_value(json_array_get(list, k));
			if (s)
				sorted[nt++] = s;
		}
		if (nt > 1)
			qsort(sorted, nt, sizeof(*sorted), str_cmp);
		buf_reset(&joined);
		for (size_t k = 0; k < nt; k++) {
			if (dg_buf_appendf(&joined, "%s%s", k ? "," : "", sorted[k]) != 0)
				t.err = DG_ENOMEM;
		}
		table_row(&t, names[i], joined.data);
	}
	if (tags && table_print(&t, c->out, 6) != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	code = CLI_OK;
out:
	free(names);
	free(sorted);
	json_decref(services);
	json_decref(reply);
	table_fini(&t);
	dg_buf_fini(&joined);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_catalog(struct cli *c, int argc, char **argv)
{
	static const struct subcommand subs[] = {
		{"datacenters", cmd_catalog_datacenters},
		{"nodes", cmd_catalog_nodes},
		{"services", cmd_catalog_services},
	};
	return run_subcommand(c, argc, argv, usage_catalog, "catalog", subs, sizeof(subs) / sizeof(subs[0]));
}

/* ------------------------------------------------------------------------------------------------
 * kv get | put | delete
 */

static const char usage_kv[] =
    "Usage: dcgate kv <subcommand> [options] <key> ...\n"
    "\n"
    "  Reads and writes the key/value store.\n"
    "\n"
    "    get      Prints a value (-recurse: a prefix, -keys: key names).\n"
    "    put      Writes a value.\n"
    "    delete   Deletes a key (-recurse: a prefix).\n";

static const char usage_kv_get[] =
    "Usage: dcgate kv get [options] [<key>]\n"
    "\n"
    "  Prints the value stored at <key>, or an error if there is none.\n"
    "\n"
    "  -recurse           Print every key under the prefix as key:value.\n"
    "  -keys              List the key names under the prefix.\n"
    "  -separator=<sep>   With -keys, list only up to the next <sep> (default \"/\").\n"
    "  -detailed          Show the entry's indexes, flags and session too.\n"
    "  -base64            Print values base64-encoded.\n" USAGE_SERVER USAGE_CLIENT;

static const char usage_kv_put[] =
    "Usage: dcgate kv put [options] <key> [<value>]\n"
    "\n"
    "  Writes <value> (empty when absent, stdin when \"-\", a file's content when \"@path\") at "
    "<key>.\n"
    "\n"
    "  -flags=<uint>         Opaque flags stored with the entry.\n"
    "  -cas                  Write only if the entry's ModifyIndex equals -modify-index.\n"
    "  -modify-index=<uint>  The index for -cas (required with it).\n"
    "  -base64               The value is base64-encoded; decode it before writing.\n"
    "  -session=<id>         The session for -acquire and -release.\n"
    "  -acquire              Take the key's lock for -session (and write the value).\n"
    "  -release              Release the key's lock held by -session (and write the "
    "value).\n" USAGE_SERVER USAGE_CLIENT;

static const char usage_kv_delete[] =
    "Usage: dcgate kv delete [options] <key>\n"
    "\n"
    "  Deletes <key>; with -recurse every key that starts with <key>.\n"
    "\n"
    "  -recurse              Delete the whole prefix.\n"
    "  -cas                  Delete only if the entry's ModifyIndex equals -modify-index.\n"
    "  -modify-index=<uint>  The index for -cas.\n" USAGE_SERVER USAGE_CLIENT;

/* Keys never start with '/'; users type one anyway, and Consul's CLI drops it for them. */
static const char *kv_key(const char *key)
{
	return key[0] == '/' ? key + 1 : key;
}

/* Decodes the entry's base64 Value; a null Value is empty. *out is the caller's (free()). */
static int kv_value(const json_t *entry, uint8_t **out, size_t *len)
{
	const json_t *v = json_object_get(entry, "Value");
	*out = NULL;
	*len = 0;
	if (!json_is_string(v))
		return 0;
	return dg_base64_decode(json_string_value(v), json_string_length(v), out, len);
}

/* Prints one value, raw or as the base64 text the API sent. */
static int kv_print_value(struct cli *c, const json_t *entry, bool b64)
{
	if (b64) {
		fputs(jstr(entry, "Value"), c->out);
		return 0;
	}
	uint8_t *v;
	size_t len;
	int rv;
	if ((rv = kv_value(entry, &v, &len)) != 0)
		return rv;
	if (len)
		fwrite(v, 1, len, c->out);
	free(v);
	return 0;
}

/* Consul's prettyKVPair: tabwriter columns with a gap of 6 after the widest label. */
static int kv_print_detailed(struct cli *c, const json_t *e, bool b64)
{
	const int w = (int)strlen("CreateIndex") + 6;
	const char *session = jstr(e, "Session");
	fprintf(c->out, "%-*s%lld\n", w, "CreateIndex", (long long)jint(e, "CreateIndex"));
	fprintf(c->out, "%-*s%lld\n", w, "Flags", (long long)jint(e, "Flags"));
	fprintf(c->out, "%-*s%s\n", w, "Key", jstr(e, "Key"));
	fprintf(c->out, "%-*s%lld\n", w, "LockIndex", (long long)jint(e, "LockIndex"));
	fprintf(c->out, "%-*s%lld\n", w, "ModifyIndex", (long long)jint(e, "ModifyIndex"));
	fprintf(c->out, "%-*s%s\n", w, "Session", *session ? session : "-");
	fprintf(c->out, "%-*s", w, "Value");
	int rv = kv_print_value(c, e, b64);
	fputc('\n', c->out);
	return rv;
}

static int cmd_kv_get(struct cli *c, int argc, char **argv)
{
	bool recurse = false, keys = false, detailed = false, b64 = false;
	const char *sep = "/";
	const struct flag flags[] = {
	    {"recurse", FLAG_BOOL, &recurse}, {"keys", FLAG_BOOL, &keys},
	    {"separator", FLAG_STR, &sep},    {"detailed", FLAG_BOOL, &detailed},
	    {"base64", FLAG_BOOL, &b64},      {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_kv_get, flags, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 1) {
		code = cli_usage_error(c, usage_kv_get, "Too many arguments (expected 1, got %zu)",
				       pos.n);
		goto out_args;
	}
	const char *key = pos.n ? kv_key(pos.v[0]) : "";
	if (!*key && !recurse && !keys) {
		code = cli_usage_error(c, usage_kv_get, "Error! Missing KEY argument");
		goto out_args;
	}

	const char *what = "Error querying Consul agent";
	struct cli_url u;
	json_t *list = NULL;
	url_init(&u, "/v1/kv/");
	url_segment(&u, key, true);
	url_server_params(c, &u);
	if (keys) {
		url_param(&u, "keys", NULL);
		if (sep && *sep)
			url_param(&u, "separator", sep);
	} else if (recurse) {
		url_param(&u, "recurse", NULL);
	}
	/* A missing key is an error only for a single get; an empty prefix just prints nothing. */
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, true, &list)) != 0)
		goto out;
	if (!list && !keys && !recurse) {
		fprintf(c->err, "Error! No key exists at: %s\n", key);
		code = CLI_FAIL;
		goto out;
	}
	if (list && !json_is_array(list) && !json_is_null(list)) {
		code = cli_bad_reply(c, what);
		goto out;
	}
	size_t i;
	json_t *e;
	code = CLI_OK;
	if (keys) {
		json_array_foreach(list, i, e)
		{
			if (json_is_string(e))
				fprintf(c->out, "%s\n", json_string_value(e));
		}
	} else if (recurse) {
		size_t n = json_array_size(list);
		json_array_foreach(list, i, e)
		{
			int rv;
			if (detailed) {
				rv = kv_print_detailed(c, e, b64);
				if (i + 1 < n)
					fputc('\n', c->out);
			} else {
				fprintf(c->out, "%s:", jstr(e, "Key"));
				rv = kv_print_value(c, e, b64);
				fputc('\n', c->out);
			}
			if (rv != 0) {
				fprintf(c->err, "Error! Bad value at %s: %s\n", jstr(e, "Key"),
					dg_strerror(rv));
				code = CLI_FAIL;
			}
		}
	} else {
		e = json_array_get(list, 0);
		int rv = detailed ? kv_print_detailed(c, e, b64) : kv_print_value(c, e, b64);
		if (!detailed)
			fputc('\n', c->out);
		if (rv != 0) {
			fprintf(c->err, "Error! Bad value at %s: %s\n", key, dg_strerror(rv));
			code = CLI_FAIL;
		}
	}
out:
	json_decref(list);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

/* Reads the value argument of kv put into out: literal, "-" for stdin, "@path" for a file. */
static int kv_read_value(struct cli *c, const char *arg, bool b64, struct dg_buf *out)
{
	int rv = 0;
	if (!arg)
		return 0;
	if (strcmp(arg, "-") == 0) {
		if ((rv = read_stream(c->in, CLI_MAX_INPUT, out)) != 0) {
			fprintf(c->err, "Error! Failed to read stdin: %s\n",
				rv == DG_EIO ? strerror(errno) : dg_strerror(rv));
			return rv;
		}
	} else if (arg[0] == '@') {
		if ((rv = read_file(arg + 1, CLI_MAX_INPUT, out)) != 0) {
			fprintf(c->err, "Error! Failed to read file: %s: %s\n", arg + 1,
				rv == DG_EIO ? strerror(errno) : dg_strerror(rv));
			return rv;
		}
	} else if ((rv = dg_buf_append(out, arg, strlen(arg))) != 0) {
		fprintf(c->err, "Error! %s\n", dg_strerror(rv));
		return rv;
	}
	if (!b64)
		return 0;
	uint8_t *raw;
	size_t len;
	if ((rv = dg_base64_decode(out->data ? out->data : "", out->len, &raw, &len)) != 0) {
		fprintf(c->err, "Error! Cannot base 64 decode data: %s\n", dg_strerror(rv));
		return rv;
	}
	buf_reset(out);
	rv = dg_buf_append(out, raw, len);
	free(raw);
	if (rv != 0)
		fprintf(c->err, "Error! %s\n", dg_strerror(rv));
	return rv;
}

static int cmd_kv_put(struct cli *c, int argc, char **argv)
{
	bool cas = false, b64 = false, acquire = false, release = false;
	uint64_t modify_index = 0, kv_flags = 0;
	const char *session = NULL;
	const struct flag flags[] = {
	    {"cas", FLAG_BOOL, &cas},	      {"modify-index", FLAG_U64, &modify_index},
	    {"flags", FLAG_U64, &kv_flags},   {"base64", FLAG_BOOL, &b64},
	    {"session", FLAG_STR, &session},  {"acquire", FLAG_BOOL, &acquire},
	    {"release", FLAG_BOOL, &release}, {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_kv_put, flags, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n == 0 || pos.n > 2) {
		if (pos.n == 0)
			code = cli_usage_error(c, usage_kv_put, "Error! Missing KEY argument");
		else
			code = cli_usage_error(
			    c, usage_kv_put, "Error! Too many arguments (expected 1 or 2, got %zu)",
			    pos.n);
		goto out_args;
	}
	const char *bad = NULL;
	if ((acquire || release) && (!session || !*session))
		bad = "Error! Missing -session (required with -acquire and -release)";
	else if (cas && modify_index == 0)
		bad = "Must specify -modify-index with -cas!";
	if (bad) {
		fprintf(c->err, "%s\n", bad);
		goto out_args;
	}
	const char *key = pos.v[0];

	struct dg_buf value, what;
	struct cli_url u;
	struct reply r;
	json_t *ok = NULL;
	dg_buf_init(&value);
	dg_buf_init(&what);
	dg_buf_init(&r.body);
	url_init(&u, "/v1/kv/");
	if (kv_read_value(c, pos.n > 1 ? pos.v[1] : NULL, b64, &value) != 0)
		goto out;
	url_segment(&u, key, true);
	url_server_params(c, &u);
	if (kv_flags)
		url_param_u64(&u, "flags", kv_flags);
	/* The same precedence as Consul: -cas, then -acquire, then -release, else a plain write. */
	if (cas) {
		url_param_u64(&u, "cas", modify_index);
		code = dg_buf_appendf(&what, "Error! Did not write to %s", key);
	} else if (acquire) {
		url_param(&u, "acquire", session);
		code = dg_buf_appendf(&what, "Error! Failed writing data");
	} else if (release) {
		url_param(&u, "release", session);
		code = dg_buf_appendf(&what, "Error! Failed writing data");
	} else {
		code = dg_buf_appendf(&what, "Error! Failed writing data");
	}
	if (code != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, "Error!");
		goto out;
	}
	const void *data = value.data ? value.data : "";
	const char *ctype = "application/octet-stream";
	if (!cas && !acquire && !release) {
		/* A plain write always succeeds when the agent answers 200; the body is not read.
		 */
		if ((code = cli_call(c, "PUT", &u, data, value.len, ctype, what.data, &r)) != 0)
			goto out;
	} else {
		if ((code = cli_call_json(c, "PUT", &u, data, value.len, ctype, what.data, false,
					  &ok)) != 0)
			goto out;
		if (!json_is_boolean(ok)) {
			code = cli_bad_reply(c, what.data);
			goto out;
		}
		if (!json_is_true(ok)) {
			if (cas)
				fprintf(c->err, "Error! Did not write to %s: CAS failed\n", key);
			else
				fprintf(c->err, "Error! Did not %s lock\n",
					acquire ? "acquire" : "release");
			code = CLI_FAIL;
			goto out;
		}
	}
	if (acquire && !cas)
		fprintf(c->out, "Success! Lock acquired on: %s\n", key);
	else if (release && !cas)
		fprintf(c->out, "Success! Lock released on: %s\n", key);
	else
		fprintf(c->out, "Success! Data written to: %s\n", key);
	code = CLI_OK;
out:
	json_decref(ok);
	dg_buf_fini(&r.body);
	dg_buf_fini(&value);
	dg_buf_fini(&what);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_kv_delete(struct cli *c, int argc, char **argv)
{
	bool recurse = false, cas = false;
	uint64_t modify_index = 0;
	const struct flag flags[] = {
	    {"recurse", FLAG_BOOL, &recurse},
	    {"cas", FLAG_BOOL, &cas},
	    {"modify-index", FLAG_U64, &modify_index},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_kv_delete, flags, true, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 1) {
		code = cli_usage_error(c, usage_kv_delete,
				       "Too many arguments (expected 1, got %zu)", pos.n);
		goto out_args;
	}
	const char *key = pos.n ? kv_key(pos.v[0]) : "";
	if (!*key && !recurse) {
		code = cli_usage_error(c, usage_kv_delete, "Error! Missing KEY argument");
		goto out_args;
	}
	const char *bad = NULL;
	if (cas && modify_index == 0)
		bad =
		    "Cannot delete a key that does not exist. Provide a -modify-index greater than "
		    "than 0.";
	else if (modify_index != 0 && !cas)
		bad = "Cannot specify -modify-index without -cas!";
	else if (recurse && cas)
		bad = "Cannot specify both -cas and -recurse!";
	if (bad) {
		fprintf(c->err, "%s\n", bad);
		goto out_args;
	}

	struct dg_buf what;
	struct cli_url u;
	struct reply r;
	json_t *ok = NULL;
	dg_buf_init(&what);
	dg_buf_init(&r.body);
	url_init(&u, "/v1/kv/");
	url_segment(&u, key, true);
	url_server_params(c, &u);
	if (recurse)
		url_param(&u, "recurse", NULL);
	if (cas)
		url_param_u64(&u, "cas", modify_index);
	if (recurse)
		code = dg_buf_appendf(&what, "Error! Did not delete prefix %s", key);
	else if (cas)
		code = dg_buf_appendf(&what, "Error! Did not delete key %s", key);
	else
		code = dg_buf_appendf(&what, "Error deleting key %s", key);
	if (code != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, "Error!");
		goto out;
	}
	if (!cas) {
		/* Deleting what is not there succeeds too, so only the status matters. */
		if ((code = cli_call(c, "DELETE", &u, NULL, 0, NULL, what.data, &r)) != 0)
			goto out;
	} else {
		if ((code = cli_call_json(c, "DELETE", &u, NULL, 0, NULL, what.data, false, &ok)) !=
		    0)
			goto out;
		if (!json_is_boolean(ok)) {
			code = cli_bad_reply(c, what.data);
			goto out;
		}
		if (!json_is_true(ok)) {
			fprintf(c->err, "Error! Did not delete key %s: CAS failed\n", key);
			code = CLI_FAIL;
			goto out;
		}
	}
	if (recurse)
		fprintf(c->out, "Success! Deleted keys with prefix: %s\n", key);
	else
		fprintf(c->out, "Success! Deleted key: %s\n", key);
	code = CLI_OK;
out:
	json_decref(ok);
	dg_buf_fini(&r.body);
	dg_buf_fini(&what);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_kv(struct cli *c, int argc, char **argv)
{
	static const struct subcommand subs[] = {
		{"get", cmd_kv_get},
		{"put", cmd_kv_put},
		{"delete", cmd_kv_delete},
	};
	return run_subcommand(c, argc, argv, usage_kv, "kv", subs, sizeof(subs) / sizeof(subs[0]));
}

/* ------------------------------------------------------------------------------------------------
 * services register | deregister
 */

static const char usage_services[] =
    "Usage: dcgate services <subcommand> [options]\n"
    "\n"
    "  Registers and deregisters services with the local agent.\n"
    "\n"
    "    register     Registers a service from flags or definition files.\n"
    "    deregister   Deregisters a service by ID or definition files.\n";

static const char usage_services_register[] =
    "Usage: dcgate services register [options] [FILE.json ...]\n"
    "\n"
    "  Registers services with the local agent, from flags or from JSON files that hold\n"
    "  {\"Service\": {...}} and/or {\"Services\": [{...}, ...]} (Consul's service definition).\n"
    "  With files, the flags other than -name fill in what a definition leaves out, and -tag\n"
    "  and -meta add to it.\n"
    "\n"
    "  -name=<name>        Service name (required without a file).\n"
    "  -id=<id>            Service ID (default: the name).\n"
    "  -address=<addr>     Service address (default: the node's).\n"
    "  -port=<port>        Service port.\n"
    "  -socket=<path>      Unix socket of the service (instead of address and port).\n"
    "  -kind=<kind>        Service kind.\n"
    "  -tag=<tag>          A tag; repeatable.\n"
    "  -meta=<key=value>   Metadata; repeatable.\n" USAGE_CLIENT;

static const char usage_services_deregister[] =
    "Usage: dcgate services deregister [options] [FILE.json ...]\n"
    "\n"
    "  Deregisters services from the local agent, by -id or by the services in definition\n"
    "  files (their ID, or their name when they have none).\n"
    "\n"
    "  -id=<id>   The service ID.\n" USAGE_CLIENT;

/* Loads the service definitions of one file and appends them to defs (which takes references).
 * Prints the reason and returns nonzero on failure. */
static int services_load(struct cli *c, const char *path, json_t *defs)
{
	struct dg_buf text;
	dg_buf_init(&text);
	int rv = read_file(path, CLI_MAX_INPUT, &text);
	if (rv != 0) {
		fprintf(c->err, "Error: reading %s: %s\n", path,
			rv == DG_EIO ? strerror(errno) : dg_strerror(rv));
		dg_buf_fini(&text);
		return rv;
	}
	json_error_t jerr;
	json_t *doc = json_loadb(text.data ? text.data : "", text.len, 0, &jerr);
	dg_buf_fini(&text);
	if (!doc) {
		fprintf(c->err, "Error: parsing %s: line %d: %s\n", path, jerr.line, jerr.text);
		return DG_EINVAL;
	}
	json_t *one = jget_ci(doc, "Service"), *many = jget_ci(doc, "Services");
	size_t before = json_array_size(defs);
	rv = 0;
	if (one && !json_is_object(one))
		rv = DG_EINVAL;
	else if (one && json_array_append(defs, one) != 0)
		rv = DG_ENOMEM;
	if (rv == 0 && many && !json_is_array(many))
		rv = DG_EINVAL;
	size_t i;
	json_t *svc;
	json_array_foreach(many, i, svc)
	{
		if (rv != 0)
			break;
		if (!json_is_object(svc))
			rv = DG_EINVAL;
		else if (json_array_append(defs, svc) != 0)
			rv = DG_ENOMEM;
	}
	if (rv == 0 && json_array_size(defs) == before)
		rv = DG_EINVAL;
	if (rv != 0)
		fprintf(
		    c->err,
		    "Error: %s: expected {\"Service\": {...}} or {\"Services\": [{...}, ...]}\n",
		    path);
	json_decref(doc);
	return rv;
}

/* What the register flags say about a service. */
struct svc_flags {
	const char *name, *id, *address, *kind, *socket;
	uint64_t port;
	struct str_list tags, meta;
};

/* Builds a service definition from the flags that were given; NULL on a bad value (printed).
 * The result is the caller's reference. */
static json_t *services_from_flags(struct cli *c, const struct svc_flags *f)
{
	json_t *svc = json_object(), *t = json_array(), *m = json_object();
	bool ok = svc && t && m;
	if (ok && f->port > 65535) {
		fprintf(c->err, "Error! Invalid port %llu\n", (unsigned long long)f->port);
		ok = false;
	}
	/* json_string returns NULL for text that is not UTF-8, which makes the set fail. */
	if (ok && f->name)
		ok = json_object_set_new(svc, "Name", json_string(f->name)) == 0;
	if (ok && f->id)
		ok = json_object_set_new(svc, "ID", json_string(f->id)) == 0;
	if (ok && f->address)
		ok = json_object_set_new(svc, "Address", json_string(f->address)) == 0;
	if (ok && f->port)
		ok = json_object_set_new(svc, "Port", json_integer((json_int_t)f->port)) == 0;
	if (ok && f->kind)
		ok = json_object_set_new(svc, "Kind", json_string(f->kind)) == 0;
	if (ok && f->socket)
		ok = json_object_set_new(svc, "SocketPath", json_string(f->socket)) == 0;
	for (size_t i = 0; ok && i < f->tags.n; i++)
		ok = json_array_append_new(t, json_string(f->tags.v[i])) == 0;
	for (size_t i = 0; ok && i < f->meta.n; i++) {
		const char *kv = f->meta.v[i], *eq = strchr(kv, '=');
		if (!eq) {
			fprintf(c->err, "Error! -meta must be key=value, got \"%s\"\n", kv);
			json_decref(svc);
			json_decref(t);
			json_decref(m);
			return NULL;
		}
		char *k = dg_strndup(kv, (size_t)(eq - kv));
		ok = k && json_object_set_new(m, k, json_string(eq + 1)) == 0;
		free(k);
	}
	if (ok && f->tags.n)
		ok = json_object_set(svc, "Tags", t) == 0;
	if (ok && f->meta.n)
		ok = json_object_set(svc, "Meta", m) == 0;
	json_decref(t);
	json_decref(m);
	if (!ok) {
		fprintf(c->err, "Error! Invalid service definition (is every value UTF-8?)\n");
		json_decref(svc);
		return NULL;
	}
	return svc;
}

/* The key of obj that matches key case-insensitively (exact match first), or NULL; borrowed. */
static const char *jkey_ci(json_t *obj, const char *key)
{
	if (json_object_get(obj, key))
		return key;
	const char *k;
	json_t *v;
	json_object_foreach(obj, k, v)
	{
		if (strcasecmp(k, key) == 0)
			return k;
	}
	return NULL;
}

/* Consul's CombineArgs: a flag value fills a field the file left empty; -meta entries are merged
 * into the file's Meta and -tag values appended to its Tags. A file may spell keys in any case,
 * so an existing key is updated under its own spelling rather than added twice. */
static int services_combine(json_t *file, json_t *flags)
{
	static const char *const fill[] = {"ID", "Address", "Port", "Kind", "SocketPath"};
	for (size_t i = 0; i < sizeof(fill) / sizeof(fill[0]); i++) {
		json_t *fv = json_object_get(flags, fill[i]);
		if (!fv)
			continue;
		const char *k = jkey_ci(file, fill[i]);
		json_t *cur = k ? json_object_get(file, k) : NULL;
		bool empty = !cur || json_is_null(cur) ||
			     (json_is_string(cur) && json_string_length(cur) == 0) ||
			     (json_is_integer(cur) && json_integer_value(cur) == 0);
		if (empty && json_object_set(file, k ? k : fill[i], fv) != 0)
			return DG_ENOMEM;
	}
	json_t *fm = json_object_get(flags, "Meta"), *ft = json_object_get(flags, "Tags");
	if (fm) {
		const char *k = jkey_ci(file, "Meta");
		json_t *cur = k ? json_object_get(file, k) : NULL;
		if (json_is_object(cur)) {
			if (json_object_update(cur, fm) != 0)
				return DG_ENOMEM;
		} else if (json_object_set(file, k ? k : "Meta", fm) != 0) {
			return DG_ENOMEM;
		}
	}
	if (ft) {
		const char *k = jkey_ci(file, "Tags");
		json_t *cur = k ? json_object_get(file, k) : NULL;
		if (json_is_array(cur)) {
			if (json_array_extend(cur, ft) != 0)
				return DG_ENOMEM;
		} else if (json_object_set(file, k ? k : "Tags", ft) != 0) {
			return DG_ENOMEM;
		}
	}
	return 0;
}

static int cmd_services_register(struct cli *c, int argc, char **argv)
{
	struct svc_flags f;
	memset(&f, 0, sizeof(f));
	const struct flag flags[] = {
	    {"name", FLAG_STR, &f.name},       {"id", FLAG_STR, &f.id},
	    {"address", FLAG_STR, &f.address}, {"port", FLAG_U64, &f.port},
	    {"kind", FLAG_STR, &f.kind},       {"socket", FLAG_STR, &f.socket},
	    {"tag", FLAG_LIST, &f.tags},       {"meta", FLAG_LIST, &f.meta},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	json_t *defs = NULL, *from_flags = NULL;
	/* -datacenter is accepted as Consul does, but agent endpoints are local to the agent. */
	if (!cli_parse(c, usage_services_register, flags, true, argc, argv, &pos, &code))
		goto out;
	if (pos.n == 0 && !f.name) {
		code = cli_usage_error(
		    c, usage_services_register,
		    "Service registration requires at least one argument or flags.");
		goto out;
	}
	if (pos.n > 0 && f.name) {
		fprintf(c->err, "Service registration requires arguments or -id, not both.\n");
		goto out;
	}
	if (!(from_flags = services_from_flags(c, &f)))
		goto out;
	if (!(defs = json_array())) {
		code = cli_fail(c, DG_ENOMEM, NULL, "Error");
		goto out;
	}
	if (pos.n == 0 && json_array_append(defs, from_flags) != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, "Error");
		goto out;
	}
	for (size_t i = 0; i < pos.n; i++) {
		size_t first = json_array_size(defs);
		if (services_load(c, pos.v[i], defs) != 0)
			goto out;
		for (size_t k = first; k < json_array_size(defs); k++) {
			if (services_combine(json_array_get(defs, k), from_flags) != 0) {
				code = cli_fail(c, DG_ENOMEM, NULL, "Error");
				goto out;
			}
		}
	}

	size_t i;
	json_t *svc;
	json_array_foreach(defs, i, svc)
	{
		json_t *n = jget_ci(svc, "Name");
		const char *sname = json_is_string(n) ? json_string_value(n) : "";
		char *body = json_dumps(svc, JSON_COMPACT);
		struct dg_buf what;
		struct cli_url u;
		struct reply r;
		dg_buf_init(&what);
		url_init(&u, "/v1/agent/service/register");
		int rv = dg_buf_appendf(&what, "Error registering service \"%s\"", sname);
		if (!body || rv != 0) {
			code = cli_fail(c, DG_ENOMEM, NULL, "Error registering service");
		} else if ((code = cli_call(c, "PUT", &u, body, strlen(body), "application/json",
					    what.data, &r)) == 0) {
			dg_buf_fini(&r.body);
			fprintf(c->out, "Registered service: %s\n", sname);
		}
		free(body);
		dg_buf_fini(&what);
		url_fini(&u);
		if (code != 0)
			goto out;
	}
	code = CLI_OK;
out:
	json_decref(from_flags);
	json_decref(defs);
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_services_deregister(struct cli *c, int argc, char **argv)
{
	const char *id = NULL;
	const struct flag flags[] = {
	    {"id", FLAG_STR, &id},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	json_t *defs = NULL;
	if (!cli_parse(c, usage_services_deregister, flags, true, argc, argv, &pos, &code))
		goto out;
	if (pos.n == 0 && !id) {
		code = cli_usage_error(
		    c, usage_services_deregister,
		    "Service deregistration requires at least one argument or -id.");
		goto out;
	}
	if (pos.n > 0 && id) {
		fprintf(c->err, "Service deregistration requires arguments or -id, not both.\n");
		goto out;
	}
	if (!(defs = json_array())) {
		code = cli_fail(c, DG_ENOMEM, NULL, "Error");
		goto out;
	}
	for (size_t i = 0; i < pos.n; i++) {
		if (services_load(c, pos.v[i], defs) != 0)
			goto out;
	}
	/* A file's service is known to the agent by its ID, or by its name when it has none. */
	size_t count = id ? 1 : json_array_size(defs);
	for (size_t i = 0; i < count; i++) {
		const char *sid = id;
		if (!sid) {
			json_t *svc = json_array_get(defs, i), *v = jget_ci(svc, "ID");
			if (!json_is_string(v) || !*json_string_value(v))
				v = jget_ci(svc, "Name");
			sid = json_is_string(v) ? json_string_value(v) : "";
		}
		if (!*sid)
			continue;
		struct dg_buf what;
		struct cli_url u;
		struct reply r;
		dg_buf_init(&what);
		url_init(&u, "/v1/agent/service/deregister/");
		url_segment(&u, sid, false);
		if (dg_buf_appendf(&what, "Error deregistering service \"%s\"", sid) != 0) {
			code = cli_fail(c, DG_ENOMEM, NULL, "Error deregistering service");
		} else if ((code = cli_call(c, "PUT", &u, NULL, 0, NULL, what.data, &r)) == 0) {
			dg_buf_fini(&r.body);
			fprintf(c->out, "Deregistered service: %s\n", sid);
		}
		dg_buf_fini(&what);
		url_fini(&u);
		if (code != 0)
			goto out;
	}
	code = CLI_OK;
out:
	json_decref(defs);
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_services(struct cli *c, int argc, char **argv)
{
	static const struct subcommand subs[] = {
		{"register", cmd_services_register},
		{"deregister", cmd_services_deregister},
	};
	return run_subcommand(c, argc, argv, usage_services, "services", subs, sizeof(subs) / sizeof(subs[0]));
}

/* ------------------------------------------------------------------------------------------------
 * info, version, leave, reload, join, force-leave
 */

static const char usage_info[] = "Usage: dcgate info [options]\n"
				 "\n"
				 "  Prints the agent's statistics by section, for debugging.\n"
				 "\n" USAGE_CLIENT;

static int cmd_info(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_info, NULL, false, argc, argv, &pos, &code))
		goto out_args;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage_info, "Too many arguments (expected 0, got %zu)",
				       pos.n);
		goto out_args;
	}
	const char *what = "Error querying agent";
	struct cli_url u;
	json_t *self = NULL;
	const char **sections = NULL, **keys = NULL;
	struct dg_buf val;
	dg_buf_init(&val);
	url_init(&u, "/v1/agent/self");
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &self)) != 0)
		goto out;
	json_t *stats = json_object_get(self, "Stats");
	if (!json_is_object(stats)) {
		fprintf(c->err, "Agent response did not contain 'Stats' key\n");
		code = CLI_FAIL;
		goto out;
	}
	size_t ns, nk;
	code = CLI_OK;
	sections = sorted_keys(stats, &ns);
	if (!sections && ns) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	for (size_t i = 0; i < ns; i++) {
		json_t *sec = json_object_get(stats, sections[i]);
		fprintf(c->out, "%s:\n", sections[i]);
		free(keys);
		keys = sorted_keys(sec, &nk);
		if (!keys && nk) {
			code = cli_fail(c, DG_ENOMEM, NULL, what);
			goto out;
		}
		for (size_t k = 0; k < nk; k++) {
			buf_reset(&val);
			if (buf_append_jvalue(&val, json_object_get(sec, keys[k])) != 0) {
				code = cli_fail(c, DG_ENOMEM, NULL, what);
				goto out;
			}
			fprintf(c->out, "\t%s = %s\n", keys[k], val.data ? val.data : "");
		}
	}
out:
	free(sections);
	free(keys);
	json_decref(self);
	dg_buf_fini(&val);
	url_fini(&u);
out_args:
	args_fini(&pos);
	return code;
}

static int cmd_version(struct cli *c, int argc, char **argv)
{
	fprintf(c->out, "dcgate v%s\nConsul API compatible: %s\n", DG_VERSION, DG_CONSUL_VERSION);
	return CLI_OK;
}

static const char usage_keygen[] =
    "Usage: dcgate keygen\n"
    "\n"
    "  Prints a new gossip encryption key (32 random bytes, base64), the form the -encrypt\n"
    "  option takes. Needs no agent.\n";

static int cmd_keygen(struct cli *c, int argc, char **argv)
{
	if (argc > 0) {
		if (strcmp(argv[0], "-h") && strcmp(argv[0], "-help") && strcmp(argv[0], "--help"))
			fprintf(c->err, "This command takes no arguments\n");
		fputs(usage_keygen, c->err);
		return CLI_FAIL;
	}
	char key[64];
	if (dg_gossip_key_generate(key, sizeof(key)) != 0) {
		fprintf(c->err, "Error generating key: no randomness available\n");
		return CLI_FAIL;
	}
	fprintf(c->out, "%s\n", key);
	return CLI_OK;
}

static const char usage_leave[] = "Usage: dcgate leave [options]\n"
				  "\n"
				  "  Makes the agent leave the cluster gracefully and shut down.\n"
				  "\n" USAGE_CLIENT;

static const char usage_reload[] =
    "Usage: dcgate reload [options]\n"
    "\n"
    "  Makes the agent reload its configuration files (as SIGHUP does).\n"
    "\n" USAGE_CLIENT;

/* leave and reload: one PUT with no arguments and a fixed message on success. */
static int simple_put(struct cli *c, int argc, char **argv, const char *usage, const char *path,
		      const char *what, const char *done)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage, NULL, false, argc, argv, &pos, &code))
		goto out;
	if (pos.n > 0) {
		code = cli_usage_error(c, usage, "Error found unexpected args: %s%s", pos.v[0],
				       pos.n > 1 ? " ..." : "");
		goto out;
	}
	struct cli_url u;
	struct reply r;
	url_init(&u, path);
	if ((code = cli_call(c, "PUT", &u, NULL, 0, NULL, what, &r)) == 0) {
		dg_buf_fini(&r.body);
		fprintf(c->out, "%s\n", done);
	}
	url_fini(&u);
out:
	args_fini(&pos);
	return code;
}

static int cmd_leave(struct cli *c, int argc, char **argv)
{
	return simple_put(c, argc, argv, usage_leave, "/v1/agent/leave", "Error leaving",
			  "Graceful leave complete");
}

static int cmd_reload(struct cli *c, int argc, char **argv)
{
	return simple_put(c, argc, argv, usage_reload, "/v1/agent/reload", "Error reloading",
			  "Configuration reload triggered");
}

static const char usage_join[] =
    "Usage: dcgate join [options] <address> ...\n"
    "\n"
    "  Tells the agent to join a cluster by contacting the agents at the given addresses.\n"
    "\n"
    "  -wan   Join the WAN pool (servers only), federating datacenters.\n" USAGE_CLIENT;

static int cmd_join(struct cli *c, int argc, char **argv)
{
	bool wan = false;
	const struct flag flags[] = {
	    {"wan", FLAG_BOOL, &wan},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_join, flags, false, argc, argv, &pos, &code))
		goto out;
	if (pos.n == 0) {
		code = cli_usage_error(c, usage_join,
				       "At least one address to join must be specified.\n");
		goto out;
	}
	/* As Consul: try every address, report each failure, succeed if any join worked. */
	size_t joined = 0;
	for (size_t i = 0; i < pos.n; i++) {
		struct dg_buf what;
		struct cli_url u;
		struct reply r;
		dg_buf_init(&what);
		url_init(&u, "/v1/agent/join/");
		url_segment(&u, pos.v[i], false);
		if (wan)
			url_param(&u, "wan", "1");
		if (dg_buf_appendf(&what, "Error joining address '%s'", pos.v[i]) != 0)
			cli_fail(c, DG_ENOMEM, NULL, "Error joining");
		else if (cli_call(c, "PUT", &u, NULL, 0, NULL, what.data, &r) == 0) {
			dg_buf_fini(&r.body);
			joined++;
		}
		dg_buf_fini(&what);
		url_fini(&u);
	}
	if (joined == 0) {
		fprintf(c->err, "Failed to join any nodes.\n");
		code = CLI_FAIL;
		goto out;
	}
	fprintf(c->out, "Successfully joined cluster by contacting %zu nodes.\n", joined);
	code = CLI_OK;
out:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static const char usage_force_leave[] =
    "Usage: dcgate force-leave [options] <node>\n"
    "\n"
    "  Moves a failed member to the left state (so it is no longer retried).\n"
    "\n"
    "  -prune   Also remove it from the member list at once.\n"
    "  -wan     The node is a member of the WAN pool (name \"<node>.<dc>\").\n" USAGE_CLIENT;

static int cmd_force_leave(struct cli *c, int argc, char **argv)
{
	bool prune = false, wan = false;
	const struct flag flags[] = {
	    {"prune", FLAG_BOOL, &prune},
	    {"wan", FLAG_BOOL, &wan},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_force_leave, flags, true, argc, argv, &pos, &code))
		goto out;
	if (pos.n != 1) {
		code = cli_usage_error(c, usage_force_leave,
				       "A single node name must be specified to force leave.\n");
		goto out;
	}
	struct cli_url u;
	struct reply r;
	url_init(&u, "/v1/agent/force-leave/");
	url_segment(&u, pos.v[0], false);
	if (prune)
		url_param(&u, "prune", "1");
	if (wan)
		url_param(&u, "wan", "1");
	if ((code = cli_call(c, "PUT", &u, NULL, 0, NULL, "Error force leaving", &r)) == 0)
		dg_buf_fini(&r.body);
	url_fini(&u);
out:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

/* ------------------------------------------------------------------------------------------------
 * rtt -wan
 */

static const char usage_rtt[] =
    "Usage: dcgate rtt -wan [options] [<datacenter>]\n"
    "\n"
    "  Prints the round-trip time from the agent's server to each datacenter (or to one): the\n"
    "  median of the RTTs measured on the WAN links to that DC's alive servers, with how many\n"
    "  servers are alive and known and when one last answered. dcgate measures RTTs per link\n"
    "  instead of keeping network coordinates, so only -wan is supported.\n"
    "\n"
    "  -wan   Datacenters of the WAN pool (required).\n" USAGE_CLIENT;

/* A DC's median RTT as the rtt command prints it; "-" when none was measured. */
static void rtt_text(const json_t *dc, char *buf, size_t len)
{
	const json_t *v = json_object_get(dc, "MedianRTTMs");
	double ms = json_number_value(v);
	if (!json_is_number(v) || ms < 0 || !json_is_true(json_object_get(dc, "Reachable")))
		snprintf(buf, len, "-");
	else
		snprintf(buf, len, "%.3f ms", ms);
}

static void last_contact_text(const json_t *dc, char *buf, size_t len)
{
	const json_t *v = json_object_get(dc, "LastContactMs");
	if (!json_is_number(v) || json_number_value(v) < 0)
		snprintf(buf, len, "never");
	else
		snprintf(buf, len, "%.0f ms ago", json_number_value(v));
}

static int cmd_rtt(struct cli *c, int argc, char **argv)
{
	bool wan = false;
	const struct flag flags[] = {
	    {"wan", FLAG_BOOL, &wan},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_rtt, flags, false, argc, argv, &pos, &code))
		goto out_args;
	if (!wan) {
		code = cli_usage_error(c, usage_rtt,
				       "Error: dcgate keeps no LAN coordinates; only -wan is "
				       "supported");
		goto out_args;
	}
	if (pos.n > 1) {
		code = cli_usage_error(c, usage_rtt,
				       "Too many arguments (expected 0 or 1, got %zu)", pos.n);
		goto out_args;
	}
	const char *what = "Error getting datacenters";
	const char *want = pos.n ? pos.v[0] : NULL;
	struct cli_url u;
	json_t *dcs = NULL;
	struct table t;
	table_init(&t, 5);
	url_init(&u, "/v1/catalog/datacenters");
	url_param(&u, "detailed", NULL);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &dcs)) != 0)
		goto out;
	code = CLI_FAIL;
	if (!json_is_array(dcs)) {
		code = cli_bad_reply(c, what);
		goto out;
	}
	table_row(&t, "Datacenter", "RTT", "Servers", "Reachable", "Last contact");
	size_t i;
	json_t *dc;
	bool found = false;
	json_array_foreach(dcs, i, dc)
	{
		const char *name = jstr(dc, "Datacenter");
		char rtt[64], servers[64], contact[64];
		if (!*name || (want && strcmp(name, want) != 0))
			continue;
		found = true;
		rtt_text(dc, rtt, sizeof(rtt));
		last_contact_text(dc, contact, sizeof(contact));
		bool reachable = json_is_true(json_object_get(dc, "Reachable"));
		snprintf(servers, sizeof(servers), "%lld/%lld alive",
			 (long long)jint(dc, "ServersAlive"), (long long)jint(dc, "ServersKnown"));
		if (want) {
			if (!reachable) {
				fprintf(
				    c->err,
				    "Error: datacenter %s has no server currently reachable (%s, "
				    "last contact %s)\n",
				    name, servers, contact);
				goto out;
			}
			fprintf(
			    c->out,
			    "Estimated median rtt to datacenter %s: %s (%s, measured on the WAN "
			    "links)\n",
			    name, rtt, servers);
			code = CLI_OK;
			goto out;
		}
		table_row(&t, name, rtt, servers, reachable ? "yes" : "no", contact);
	}
	if (want && !found) {
		fprintf(c->err, "Error: no path to datacenter %s (not in the WAN pool)\n", want);
		goto out;
	}
	if (table_print(&t, c->out, 2) != 0) {
		code = cli_fail(c, DG_ENOMEM, NULL, what);
		goto out;
	}
	code = CLI_OK;
out:
	json_decref(dcs);
	table_fini(&t);
	url_fini(&u);
out_args:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

/* ------------------------------------------------------------------------------------------------
 * operator raft list-peers | remove-peer
 */

static const char usage_operator[] =
    "Usage: dcgate operator raft <subcommand> [options]\n"
    "\n"
    "  Inspects and changes the raft configuration of the datacenter's servers.\n"
    "\n"
    "    list-peers    Lists the servers in the raft configuration.\n"
    "    remove-peer   Removes a server from it (-id=<node id> or -address=<ip:port>).\n";

static const char usage_list_peers[] = "Usage: dcgate operator raft list-peers [options]\n"
				       "\n"
				       "  Lists the servers in the raft configuration.\n"
				       "\n" USAGE_SERVER USAGE_CLIENT;

static const char usage_remove_peer[] =
    "Usage: dcgate operator raft remove-peer [options]\n"
    "\n"
    "  Removes a server from the raft configuration (for one that is gone for good).\n"
    "\n"
    "  -id=<node id>          The server's ID, as list-peers shows it.\n"
    "  -address=<ip:port>     Or its raft address.\n" USAGE_CLIENT;

static int cmd_list_peers(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	const char *what = "Error getting peers";
	struct cli_url u;
	struct table t;
	json_t *conf = NULL, *srv;
	size_t i;
	if (!cli_parse(c, usage_list_peers, NULL, true, argc, argv, &pos, &code))
		goto out_args;
	url_init(&u, "/v1/operator/raft/configuration");
	url_server_params(c, &u);
	table_init(&t, 6);
	if ((code = cli_call_json(c, "GET", &u, NULL, 0, NULL, what, false, &conf)) != 0)
		goto out;
	if (!json_is_array(json_object_get(conf, "Servers"))) {
		code = cli_bad_reply(c, what);
		goto out;
	}
	table_row(&t, "Node", "ID", "Address", "State", "Voter", "RaftProtocol");
	json_array_foreach(json_object_get(conf, "Servers"), i, srv)
	{
		bool leader = json_is_true(json_object_get(srv, "Leader"));
		table_row(&t, json_string_value(json_object_get(srv, "Node")),
			  json_string_value(json_object_get(srv, "ID")),
			  json_string_value(json_object_get(srv, "Address")),
			  leader ? "leader" : "follower",
			  json_is_true(json_object_get(srv, "Voter")) ? "true" : "false",
			  json_string_value(json_object_get(srv, "ProtocolVersion")));
	}
	code = table_print(&t, c->out, 2) == 0 ? CLI_OK : cli_fail(c, DG_ENOMEM, NULL, what);
out:
	json_decref(conf);
	table_fini(&t);
	url_fini(&u);
out_args:
	args_fini(&pos);
	return code;
}

static int cmd_remove_peer(struct cli *c, int argc, char **argv)
{
	const char *id = NULL, *address = NULL;
	const struct flag flags[] = {
	    {"id", FLAG_STR, &id},
	    {"address", FLAG_STR, &address},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_remove_peer, flags, false, argc, argv, &pos, &code))
		goto out;
	if ((!id || !*id) == (!address || !*address)) {
		code = cli_usage_error(c, usage_remove_peer,
				       "Exactly one of -id and -address must be given.\n");
		goto out;
	}
	struct cli_url u;
	struct reply r;
	url_init(&u, "/v1/operator/raft/peer");
	url_param(&u, id ? "id" : "address", id ? id : address);
	if (cli_call(c, "DELETE", &u, NULL, 0, NULL, "Error removing peer", &r) == 0) {
		dg_buf_fini(&r.body);
		fprintf(c->out, "Removed peer with %s \"%s\"\n", id ? "id" : "address",
			id ? id : address);
		code = CLI_OK;
	}
	url_fini(&u);
out:
	args_fini(&pos);
	flags_fini(flags);
	return code;
}

static int cmd_operator(struct cli *c, int argc, char **argv)
{
	if (argc < 1 || argv[0][0] == '-' || strcmp(argv[0], "raft") != 0) {
		bool help =
		    argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "-help") == 0 ||
				  strcmp(argv[0], "--help") == 0);
		if (argc >= 1 && !help && argv[0][0] != '-')
			return cli_usage_error(c, usage_operator, "Unknown operator subcommand: %s",
					       argv[0]);
		fputs(usage_operator, help ? c->out : c->err);
		return help ? CLI_OK : CLI_FAIL;
	}
	if (argc >= 2 && strcmp(argv[1], "list-peers") == 0)
		return cmd_list_peers(c, argc - 2, argv + 2);
	if (argc >= 2 && strcmp(argv[1], "remove-peer") == 0)
		return cmd_remove_peer(c, argc - 2, argv + 2);
	return cli_usage_error(c, usage_operator, "Unknown operator raft subcommand: %s",
			       argc >= 2 ? argv[1] : "(none)");
}

/* ------------------------------------------------------------------------------------------------
 * snapshot save | restore | inspect (docs/snapshot.md)
 */

static const char usage_snapshot[] =
    "Usage: dcgate snapshot <subcommand> [options] FILE\n"
    "\n"
    "  Saves, restores and inspects snapshots of the datacenter's catalog: nodes, services,\n"
    "  checks, the KV store and sessions.\n"
    "\n"
    "    save      Saves a snapshot of the catalog to FILE.\n"
    "    restore   Replaces the whole catalog with the snapshot in FILE.\n"
    "    inspect   Prints what the snapshot in FILE holds (needs no agent).\n";

static const char usage_snapshot_save[] =
    "Usage: dcgate snapshot save [options] FILE\n"
    "\n"
    "  Saves an atomic, point-in-time snapshot of the datacenter's catalog to FILE. It is\n"
    "  written to FILE.unverified, read back and verified, then renamed to FILE.\n"
    "\n" USAGE_CLIENT USAGE_SERVER;

static const char usage_snapshot_restore[] =
    "Usage: dcgate snapshot restore [options] FILE\n"
    "\n"
    "  Replaces the whole catalog of the datacenter with the snapshot in FILE. The agent\n"
    "  verifies the archive first; one that does not verify changes nothing.\n"
    "\n" USAGE_CLIENT "  -datacenter=<dc>     Restore into this datacenter (default: the agent's own).\n";

static const char usage_snapshot_inspect[] =
    "Usage: dcgate snapshot inspect FILE\n"
    "\n"
    "  Verifies the snapshot in FILE and prints its metadata and what it holds. Needs no\n"
    "  agent.\n";

/* The single FILE argument of a snapshot subcommand, or a usage error (CLI_FAIL in *code). */
static const char *snapshot_file_arg(struct cli *c, const char *usage, const struct args *pos,
				     int *code)
{
	if (pos->n == 1)
		return pos->v[0];
	if (pos->n == 0)
		*code = cli_usage_error(c, usage, "Missing FILE argument");
	else
		*code = cli_usage_error(c, usage, "Too many arguments (expected 1, got %zu)",
					pos->n);
	return NULL;
}

/* Reads a snapshot file into out (bounded by what an agent accepts). Prints "<what>: <why>". */
static int snapshot_read(struct cli *c, const char *path, struct dg_buf *out, const char *what)
{
	dg_buf_init(out);
	int rv = read_file(path, DG_CAT_ARCHIVE_MAX, out);
	if (rv == DG_ETOOBIG)
		fprintf(c->err, "%s: %s is larger than %u bytes\n", what, path, DG_CAT_ARCHIVE_MAX);
	else if (rv == DG_EIO)
		fprintf(c->err, "%s: %s: %s\n", what, path, strerror(errno));
	else if (rv != 0)
		fprintf(c->err, "%s: %s\n", what, dg_strerror(rv));
	if (rv != 0)
		dg_buf_fini(out);
	return rv == 0 ? 0 : CLI_FAIL;
}

/* Verifies an archive as the agent would before a restore: the archive, then the state in it.
 * On success *state_out (if not NULL) is the parsed state, the caller's reference. */
static int snapshot_verify(struct cli *c, const struct dg_buf *b, const char *what,
			   struct dg_cat_archive_meta *meta, struct dg_cat_state_info *info,
			   json_t **state_out)
{
	char why[512], *text;
	size_t len;
	int rv = dg_cat_archive_decode((const uint8_t *)(b->data ? b->data : ""), b->len, meta,
				       &text, &len, why, sizeof(why));
	if (rv != 0) {
		fprintf(c->err, "%s: %s\n", what, why);
		return CLI_FAIL;
	}
	json_error_t jerr;
	json_t *st = json_loadb(text, len, 0, &jerr);
	free(text);
	if (!st) {
		fprintf(c->err, "%s: invalid snapshot state: %s (line %d)\n", what, jerr.text,
			jerr.line);
		return CLI_FAIL;
	}
	if ((rv = dg_cat_state_check(st, info, why, sizeof(why))) != 0) {
		fprintf(c->err, "%s: invalid snapshot state: %s\n", what,
			rv == DG_EINVAL ? why : dg_strerror(rv));
		json_decref(st);
		return CLI_FAIL;
	}
	if (state_out)
		*state_out = st;
	else
		json_decref(st);
	return 0;
}

/* Writes len bytes to path (created 0600, truncated) and syncs them. 0, or -1 with errno. */
static int write_whole_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			int saved = n < 0 ? errno : EIO;
			close(fd);
			errno = saved;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	if (fsync(fd) != 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return close(fd);
}

static int cmd_snapshot_save(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_snapshot_save, NULL, true, argc, argv, &pos, &code))
		goto out_args;
	const char *file = snapshot_file_arg(c, usage_snapshot_save, &pos, &code);
	if (!file)
		goto out_args;
	struct cli_url u;
	struct reply r;
	struct dg_buf back, tmp;
	struct dg_cat_archive_meta meta;
	dg_buf_init(&back);
	dg_buf_init(&tmp);
	url_init(&u, "/v1/snapshot");
	url_server_params(c, &u);
	if ((code = cli_call(c, "GET", &u, NULL, 0, NULL, "Error saving snapshot", &r)) != 0)
		goto out;
	code = CLI_FAIL;
	/* as Consul's CLI: FILE.unverified first, read back and verified, then renamed */
	if (dg_buf_appendf(&tmp, "%s.unverified", file) != 0) {
		fprintf(c->err, "Error saving snapshot: %s\n", dg_strerror(DG_ENOMEM));
		goto out_body;
	}
	if (write_whole_file(tmp.data, r.body.data ? r.body.data : "", r.body.len) != 0) {
		fprintf(c->err, "Error writing unverified snapshot file: %s: %s\n", tmp.data,
			strerror(errno));
		unlink(tmp.data);
		goto out_body;
	}
	if (snapshot_read(c, tmp.data, &back, "Error opening snapshot file for verify") != 0 ||
	    snapshot_verify(c, &back, "Error verifying snapshot file", &meta, NULL, NULL) != 0) {
		unlink(tmp.data);
		goto out_body;
	}
	if (rename(tmp.data, file) != 0) {
		fprintf(c->err, "Error renaming \"%s\" to \"%s\": %s\n", tmp.data, file,
			strerror(errno));
		unlink(tmp.data);
		goto out_body;
	}
	fprintf(c->out, "Saved and verified snapshot to index %llu\n",
		(unsigned long long)meta.index);
	code = CLI_OK;
out_body:
	dg_buf_fini(&r.body);
out:
	dg_buf_fini(&back);
	dg_buf_fini(&tmp);
	url_fini(&u);
out_args:
	args_fini(&pos);
	return code;
}

static int cmd_snapshot_restore(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_snapshot_restore, NULL, true, argc, argv, &pos, &code))
		goto out_args;
	const char *file = snapshot_file_arg(c, usage_snapshot_restore, &pos, &code);
	if (!file)
		goto out_args;
	struct dg_buf b;
	if ((code = snapshot_read(c, file, &b, "Error opening snapshot file")) != 0)
		goto out_args;
	/* not verified here: the agent does, and its reason is the one to print */
	struct cli_url u;
	struct reply r;
	url_init(&u, "/v1/snapshot");
	url_server_params(c, &u);
	if ((code = cli_call(c, "PUT", &u, b.data ? b.data : "", b.len, "application/octet-stream",
			     "Error restoring snapshot", &r)) == 0) {
		dg_buf_fini(&r.body);
		fprintf(c->out, "Restored snapshot\n");
	}
	url_fini(&u);
	dg_buf_fini(&b);
out_args:
	args_fini(&pos);
	return code;
}

/* A byte count as Consul's inspect prints sizes: 313B, 1.6KB, 2.0MB. */
static void size_text(size_t n, char *buf, size_t len)
{
	if (n < 1024)
		snprintf(buf, len, "%zuB", n);
	else if (n < 1024 * 1024)
		snprintf(buf, len, "%.1fKB", (double)n / 1024);
	else
		snprintf(buf, len, "%.1fMB", (double)n / (1024 * 1024));
}

/* Bytes of v as compact JSON, less those of the members named in drop (NULL-terminated). */
static size_t json_size(json_t *v, const char *const *drop)
{
	json_t *copy = NULL;
	if (drop && json_is_object(v)) {
		copy = json_copy(v);
		for (; copy && *drop; drop++)
			json_object_del(copy, *drop);
		v = copy ? copy : v;
	}
	char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	size_t n = text ? strlen(text) : 0;
	free(text);
	json_decref(copy);
	return n;
}

static int cmd_snapshot_inspect(struct cli *c, int argc, char **argv)
{
	struct args pos;
	int code = CLI_FAIL;
	if (!cli_parse(c, usage_snapshot_inspect, NULL, false, argc, argv, &pos, &code))
		goto out_args;
	const char *file = snapshot_file_arg(c, usage_snapshot_inspect, &pos, &code);
	if (!file)
		goto out_args;
	struct dg_buf b;
	struct dg_cat_archive_meta meta;
	struct dg_cat_state_info info;
	json_t *st = NULL;
	if ((code = snapshot_read(c, file, &b, "Error opening snapshot file")) != 0)
		goto out_args;
	if ((code = snapshot_verify(c, &b, "Error verifying snapshot", &meta, &info, &st)) != 0)
		goto out;
	/* the metadata, then the records by type, as `consul snapshot inspect` prints them (a
	 * dcgate snapshot is not a raft snapshot, so it has no Term) */
	fprintf(c->out, "%-13s%s\n%-13s%llu\n%-13s%llu\n%-13s%u\n", "ID", meta.id, "Size",
		(unsigned long long)meta.size, "Index", (unsigned long long)meta.index, "Version",
		meta.version);
	if (meta.dc[0])
		fprintf(c->out, "%-13s%s\n", "Datacenter", meta.dc);
	if (meta.created[0])
		fprintf(c->out, "%-13s%s\n", "Created", meta.created);
	static const char *const node_only[] = {"Services", "Checks", NULL};
	size_t sz[6] = {0};
	size_t i, j;
	json_t *v, *w;
	const char *k;
	json_array_foreach(json_object_get(st, "Nodes"), i, v)
	{
		sz[0] += json_size(v, node_only);
		json_array_foreach(json_object_get(v, "Services"), j, w)
		{
			sz[1] += json_size(w, NULL);
		}
		json_array_foreach(json_object_get(v, "Checks"), j, w)
		{
			sz[2] += json_size(w, NULL);
		}
	}
	json_array_foreach(json_object_get(st, "KV"), i, v)
	{
		sz[3] += json_size(v, NULL);
	}
	json_object_foreach(json_object_get(st, "Tombstones"), k, v)
	{
		sz[4] += strlen(k) + json_size(v, NULL) + 4; /* "key":index, */
	}
	json_array_foreach(json_object_get(st, "Sessions"), i, v)
	{
		sz[5] += json_size(v, NULL);
	}
	const struct {
		const char *type;
		size_t count;
	} rows[6] = {{"Nodes", info.nodes}, {"Services", info.services}, {"Checks", info.checks},
		     {"KV", info.kv},	    {"Tombstones", info.tombstones},
		     {"Sessions", info.sessions}};
	char text[32];
	size_t total = 0;
	fprintf(c->out, "\n\n %-14s%-11s%s\n %-14s%-11s%s\n", "Type", "Count", "Size", "----",
		"----", "----");
	for (size_t r = 0; r < 6; r++) {
		char count[24];
		snprintf(count, sizeof(count), "%zu", rows[r].count);
		size_text(sz[r], text, sizeof(text));
		fprintf(c->out, " %-14s%-11s%s\n", rows[r].type, count, text);
		total += sz[r];
	}
	size_text(total, text, sizeof(text));
	fprintf(c->out, " %-14s%-11s%s\n %-14s%-11s%s\n", "----", "----", "----", "Total", "",
		text);
	code = CLI_OK;
out:
	json_decref(st);
	dg_buf_fini(&b);
out_args:
	args_fini(&pos);
	return code;
}

static int cmd_snapshot(struct cli *c, int argc, char **argv)
{
	static const struct subcommand subs[] = {
		{"save", cmd_snapshot_save},
		{"restore", cmd_snapshot_restore},
		{"inspect", cmd_snapshot_inspect},
	};
	return run_subcommand(c, argc, argv, usage_snapshot, "snapshot", subs, sizeof(subs) / sizeof(subs[0]));
}

/* ------------------------------------------------------------------------------------------------
 * Entry points
 */

static const struct command {
	const char *name;
	int (*run)(struct cli *c, int argc, char **argv);
} commands[] = {
    {"members", cmd_members}, {"catalog", cmd_catalog},
    {"kv", cmd_kv},	      {"services", cmd_services},
    {"info", cmd_info},	      {"version", cmd_version},
    {"leave", cmd_leave},     {"reload", cmd_reload},
    {"join", cmd_join},	      {"force-leave", cmd_force_leave},
    {"rtt", cmd_rtt},	      {"keygen", cmd_keygen},
    {"operator", cmd_operator}, {"snapshot", cmd_snapshot},
};

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	}
	return NULL;
}

bool dg_cli_known(const char *subcommand)
{
	return command_find(subcommand) != NULL;
}

/* dg_cli_run with its streams as parameters, so tests can capture them. */
static int cli_run_io(int argc, char **argv, FILE *in, FILE *out, FILE *err)
{
	const struct command *cmd = argc > 0 ? command_find(argv[0]) : NULL;
	if (!cmd) {
		fprintf(err, "Unknown command: %s\n", argc > 0 && argv[0] ? argv[0] : "(none)");
		return CLI_FAIL;
	}
	struct cli c;
	memset(&c, 0, sizeof(c));
	c.in = in;
	c.out = out;
	c.err = err;
	int code = cmd->run(&c, argc - 1, argv + 1);
	if (c.curl)
		dg_curl()->easy_cleanup(c.curl);
	free(c.base);
	free(c.unix_path);
	fflush(out);
	return code;
}

int dg_cli_run(int argc, char **argv)
{
	/* libcurl is loaded and set up by the first request (common/curl_lazy.c) */
	return cli_run_io(argc, argv, stdin, stdout, stderr);
}
