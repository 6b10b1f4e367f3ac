/* `dcgate tls ca create` and `dcgate tls cert create`: flags parsed the way Go's flag package
 * parses Consul's (flags first, -flag=value or -flag value, --flag, bools without a value), the
 * work done by tls/pki.c, and Consul's output lines. No agent is contacted. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/tls_cli.h"
#include "common/common.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1 };

static const char usage_tls[] =
    "Usage: dcgate tls <subcommand> <subcommand> [options]\n"
    "\n"
    "  This command has subcommands for interacting with dcgate's TLS files: a CA and the\n"
    "  certificates of servers, client agents and the CLI, named as Consul names them.\n"
    "\n"
    "  Create a CA:\n"
    "\n"
    "      $ dcgate tls ca create\n"
    "\n"
    "  Create a server certificate for datacenter east:\n"
    "\n"
    "      $ dcgate tls cert create -server -dc east\n"
    "\n"
    "Subcommands:\n"
    "    ca      Helpers for CAs\n"
    "    cert    Helpers for certificates\n";

static const char usage_ca[] = "Usage: dcgate tls ca <subcommand> [options]\n"
			       "\n"
			       "Subcommands:\n"
			       "    create    Create a new CA\n";

static const char usage_cert[] = "Usage: dcgate tls cert <subcommand> [options]\n"
				 "\n"
				 "Subcommands:\n"
				 "    create    Create a new certificate\n";

static const char usage_ca_create[] =
    "Usage: dcgate tls ca create [options]\n"
    "\n"
    "  Create a new CA:\n"
    "\n"
    "  $ dcgate tls ca create\n"
    "  ==> Saved consul-agent-ca.pem\n"
    "  ==> Saved consul-agent-ca-key.pem\n"
    "\n"
    "Command Options\n"
    "\n"
    "  -additional-name-constraint=<string>\n"
    "     Add name constraints for the CA. Results in rejecting certificates\n"
    "     for other DNS than specified. Can be used multiple times. Only used\n"
    "     in combination with -name-constraint.\n"
    "\n"
    "  -common-name=<string>\n"
    "     Common Name of CA. Defaults to Consul Agent CA <serial>.\n"
    "\n"
    "  -days=<int>\n"
    "     Number of days the CA is valid for. Defaults to 1825 days\n"
    "     (approximately 5 years).\n"
    "\n"
    "  -domain=<string>\n"
    "     The DNS domain of the cluster that agents are configured with.\n"
    "     Defaults to consul. Names the files; also the name constraint.\n"
    "\n"
    "  -name-constraint\n"
    "     Enables X.509 name constraints for the CA. If used, the CA only\n"
    "     signs certificates for localhost and the domains specified by\n"
    "     -domain and -additional-name-constraint. Defaults to false.\n";

static const char usage_cert_create[] =
    "Usage: dcgate tls cert create [options]\n"
    "\n"
    "  Create a new certificate\n"
    "\n"
    "  $ dcgate tls cert create -server -dc east\n"
    "  ==> WARNING: Server Certificates grants authority to become a\n"
    "      server and access all state in the cluster including root keys\n"
    "      and all ACL tokens. Do not distribute them to production hosts\n"
    "      that are not server nodes. Store them as securely as CA keys.\n"
    "  ==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n"
    "  ==> Saved east-server-consul-0.pem\n"
    "  ==> Saved east-server-consul-0-key.pem\n"
    "\n"
    "Command Options\n"
    "\n"
    "  -additional-dnsname=<string>\n"
    "     Provide an additional dnsname for Subject Alternative Names.\n"
    "     localhost is always included. This flag may be provided multiple\n"
    "     times.\n"
    "\n"
    "  -additional-ipaddress=<string>\n"
    "     Provide an additional ipaddress for Subject Alternative Names.\n"
    "     127.0.0.1 is always included. This flag may be provided multiple\n"
    "     times.\n"
    "\n"
    "  -ca=<string>\n"
    "     Provide path to the ca. Defaults to #DOMAIN#-agent-ca.pem.\n"
    "\n"
    "  -cli\n"
    "     Generate cli certificate.\n"
    "\n"
    "  -client\n"
    "     Generate client certificate.\n"
    "\n"
    "  -days=<int>\n"
    "     Provide number of days the certificate is valid for from now on.\n"
    "     Defaults to 1 year.\n"
    "\n"
    "  -dc=<string>\n"
    "     Provide the datacenter. Matters only for -server certificates.\n"
    "     Defaults to dc1.\n"
    "\n"
    "  -domain=<string>\n"
    "     Provide the domain. Matters only for -server certificates.\n"
    "\n"
    "  -key=<string>\n"
    "     Provide path to the key. Defaults to #DOMAIN#-agent-ca-key.pem.\n"
    "\n"
    "  -node=<string>\n"
    "     When generating a server cert and this is set an additional dns\n"
    "     name is included of the form <node>.server.<datacenter>.<domain>.\n"
    "\n"
    "  -server\n"
    "     Generate server certificate.\n";

/* Consul prints this before every server certificate it makes. */
static const char server_warning[] =
    "==> WARNING: Server Certificates grants authority to become a\n"
    "    server and access all state in the cluster including root keys\n"
    "    and all ACL tokens. Do not distribute them to production hosts\n"
    "    that are not server nodes. Store them as securely as CA keys.\n";

/* ---- Go-style flags ---- */

enum flag_kind { FLAG_BOOL, FLAG_STR, FLAG_INT, FLAG_LIST };

struct str_list {
	const char **v; /* owned array; the strings point into argv */
	size_t n;
};

struct flag {
	const char *name;
	enum flag_kind kind;
	void *dst; /* bool *, const char **, int * or struct str_list * */
};

enum { PARSE_OK, PARSE_HELP, PARSE_ERR };

static void flags_fini(const struct flag *tab)
{
	for (const struct flag *f = tab; f->name; f++) {
		if (f->kind == FLAG_LIST) {
			struct str_list *l = f->dst;
			free(l->v);
			l->v = NULL;
			l->n = 0;
		}
	}
}

/* Go's strconv.Atoi range for an int flag; the value checks themselves happen in pki.c. */
static int parse_int(const char *s, int *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 0);
	if (errno != 0 || end == s || *end != 0 || v < INT_MIN || v > INT_MAX)
		return DG_EINVAL;
	*out = (int)v;
	return 0;
}

/* Parses flags the way Go's flag package does for Consul's commands: flags end at the first
 * word that is not one (or after "--"); *first_arg is the index of that word. Errors are
 * printed as Consul prints them ("Failed to parse args: ..."). */
static int flags_parse(const struct flag *tab, int argc, char **argv, int *first_arg)
{
	int i;
	for (i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (a[0] != '-' || a[1] == 0)
			break;
		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		const char *name = a + 1 + (a[1] == '-');
		const char *eq = strchr(name, '=');
		size_t len = eq ? (size_t)(eq - name) : strlen(name);
		if ((len == 1 && name[0] == 'h') || (len == 4 && strncmp(name, "help", 4) == 0))
			return PARSE_HELP;
		const struct flag *f = NULL;
		for (const struct flag *t = tab; t->name; t++) {
			if (strlen(t->name) == len && strncmp(t->name, name, len) == 0) {
				f = t;
				break;
			}
		}
		if (!f) {
			fprintf(stderr,
				"Failed to parse args: flag provided but not defined: -%.*s\n",
				(int)len, name);
			return PARSE_ERR;
		}
		const char *val = eq ? eq + 1 : NULL;
		/* Go: a bool flag takes its value only as -flag=value, never from the next word */
		if (!val && f->kind == FLAG_BOOL)
			val = "true";
		if (!val) {
			if (i + 1 >= argc) {
				fprintf(stderr,
					"Failed to parse args: flag needs an argument: -%s\n",
					f->name);
				return PARSE_ERR;
			}
			val = argv[++i];
		}
		switch (f->kind) {
		case FLAG_BOOL:
			if (dg_parse_bool(val, f->dst) != 0) {
				fprintf(
				    stderr,
				    "Failed to parse args: invalid boolean value \"%s\" for -%s: "
				    "parse error\n",
				    val, f->name);
				return PARSE_ERR;
			}
			break;
		case FLAG_STR:
			*(const char **)f->dst = val;
			break;
		case FLAG_INT:
			if (parse_int(val, f->dst) != 0) {
				fprintf(stderr,
					"Failed to parse args: invalid value \"%s\" for flag -%s: "
					"parse error\n",
					val, f->name);
				return PARSE_ERR;
			}
			break;
		case FLAG_LIST: {
			struct str_list *l = f->dst;
			const char **v = realloc(l->v, (l->n + 1) * sizeof(*v));
			if (!v) {
				fprintf(stderr, "Error: %s\n", dg_strerror(DG_ENOMEM));
				return PARSE_ERR;
			}
			v[l->n++] = val;
			l->v = v;
			break;
		}
		}
	}
	*first_arg = i;
	return PARSE_OK;
}

/* Runs flags_parse and handles help and errors; true to go on, else *code is the exit code. */
static bool parse_or_exit(const struct flag *tab, const char *usage, int argc, char **argv,
			  int *code)
{
	int first = 0;
	switch (flags_parse(tab, argc, argv, &first)) {
	case PARSE_HELP:
		fputs(usage, stdout);
		*code = EXIT_OK;
		return false;
	case PARSE_ERR:
		fputs(usage, stderr);
		*code = EXIT_FAIL;
		return false;
	}
	/* Consul ignores what follows its flags; a word there is almost always a flag that lost
	 * its dash ("cert create server"), so it is reported instead of silently dropped. */
	if (first < argc) {
		fprintf(stderr, "Too many arguments (expected 0, got %d): %s\n", argc - first,
			argv[first]);
		*code = EXIT_FAIL;
		return false;
	}
	return true;
}

/* ---- commands ---- */

static int ca_create(int argc, char **argv)
{
	struct dg_tls_ca_opts o = {.dir = ".", .domain = "consul", .days = 1825};
	struct str_list extra = {0};
	const struct flag tab[] = {
	    {"days", FLAG_INT, &o.days},
	    {"domain", FLAG_STR, &o.domain},
	    {"name-constraint", FLAG_BOOL, &o.name_constraint},
	    {"additional-name-constraint", FLAG_LIST, &extra},
	    {"common-name", FLAG_STR, &o.common_name},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct dg_tls_written *w = NULL;
	char err[1024];
	int code = EXIT_FAIL;

	if (!parse_or_exit(tab, usage_ca_create, argc, argv, &code))
		goto out;
	if (o.days <= 0) {
		fprintf(stderr, "-days must be at least 1\n");
		goto out;
	}
	o.constraints = extra.v;
	o.nconstraints = extra.n;
	/* the file names are 16 KiB of buffers; heap, not stack */
	if (!(w = malloc(sizeof(*w)))) {
		fprintf(stderr, "%s\n", dg_strerror(DG_ENOMEM));
		goto out;
	}
	if (dg_tls_ca_create_opts(&o, w, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	printf("==> Saved %s\n==> Saved %s\n", w->cert, w->key);
	code = EXIT_OK;
out:
	free(w);
	flags_fini(tab);
	return code;
}

static int cert_create(int argc, char **argv)
{
	bool server = false, client = false, cli = false;
	const char *ca = NULL, *key = NULL;
	struct dg_tls_cert_opts o = {.dir = ".", .dc = "dc1", .domain = "consul", .days = 365};
	struct str_list dns = {0}, ips = {0};
	const struct flag tab[] = {
	    {"server", FLAG_BOOL, &server},
	    {"client", FLAG_BOOL, &client},
	    {"cli", FLAG_BOOL, &cli},
	    {"dc", FLAG_STR, &o.dc},
	    {"domain", FLAG_STR, &o.domain},
	    {"days", FLAG_INT, &o.days},
	    {"ca", FLAG_STR, &ca},
	    {"key", FLAG_STR, &key},
	    {"node", FLAG_STR, &o.node},
	    {"additional-dnsname", FLAG_LIST, &dns},
	    {"additional-ipaddress", FLAG_LIST, &ips},
	    {NULL, FLAG_BOOL, NULL},
	};
	struct dg_tls_written *w = NULL;
	char err[1024];
	int code = EXIT_FAIL;

	if (!parse_or_exit(tab, usage_cert_create, argc, argv, &code))
		goto out;
	/* Consul's checks, in Consul's order, with its texts */
	if (ca && !ca[0]) {
		fprintf(stderr, "Please provide the ca\n");
		goto out;
	}
	if (key && !key[0]) {
		fprintf(stderr, "Please provide the key\n");
		goto out;
	}
	if ((int)server + (int)client + (int)cli != 1) {
		fprintf(stderr, "Please provide either -server, -client, or -cli\n");
		goto out;
	}
	if (o.node && o.node[0] && !server) {
		fprintf(stderr, "-node requires -server\n");
		goto out;
	}
	if (!o.dc || !o.dc[0]) {
		fprintf(stderr, "Please provide the datacenter with -dc\n");
		goto out;
	}
	if (o.days <= 0) {
		fprintf(stderr, "-days must be at least 1\n");
		goto out;
	}
	o.role = server ? DG_TLS_ROLE_SERVER : client ? DG_TLS_ROLE_CLIENT : DG_TLS_ROLE_CLI;
	o.ca_file = ca;
	o.ca_key_file = key;
	o.dns = dns.v;
	o.ndns = dns.n;
	o.ips = ips.v;
	o.nips = ips.n;
	if (!(w = malloc(sizeof(*w)))) {
		fprintf(stderr, "%s\n", dg_strerror(DG_ENOMEM));
		goto out;
	}
	if (dg_tls_cert_create_opts(&o, w, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		goto out;
	}
	/* Consul prints these once the CA is read; pki.c reads, signs and writes in one call, so
	 * they come after it, in the same order on stdout. */
	if (server)
		fputs(server_warning, stdout);
	printf("==> Using %s and %s\n", w->ca, w->ca_key);
	printf("==> Saved %s\n==> Saved %s\n", w->cert, w->key);
	code = EXIT_OK;
out:
	free(w);
	flags_fini(tab);
	return code;
}

/* Help for a command group: -h/--help/-help on stdout with 0, a missing or unknown subcommand
 * on stderr with 1 (as Consul's cli package does). */
static int group_usage(const char *usage, int argc, char **argv)
{
	if (argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "-help") == 0 ||
			  strcmp(argv[0], "--help") == 0)) {
		fputs(usage, stdout);
		return EXIT_OK;
	}
	if (argc >= 1)
		fprintf(stderr, "Unknown subcommand: %s\n\n", argv[0]);
	fputs(usage, stderr);
	return EXIT_FAIL;
}

int dg_tls_cli_run(int argc, char **argv)
{
	int code;
	/* argv[0] is "tls" */
	if (argc >= 2 && strcmp(argv[1], "ca") == 0) {
		if (argc >= 3 && strcmp(argv[2], "create") == 0)
			code = ca_create(argc - 3, argv + 3);
		else
			code = group_usage(usage_ca, argc - 2, argv + 2);
	} else if (argc >= 2 && strcmp(argv[1], "cert") == 0) {
		if (argc >= 3 && strcmp(argv[2], "create") == 0)
			code = cert_create(argc - 3, argv + 3);
		else
			code = group_usage(usage_cert, argc - 2, argv + 2);
	} else {
		code = group_usage(usage_tls, argc - 1, argv + 1);
	}
	fflush(stdout);
	return code;
}
