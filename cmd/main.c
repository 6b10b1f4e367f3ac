/* dcgate's entry point: `dcgate agent` with Consul's flags and JSON config files, and the CLI
 * subcommands (cmd/cli.c) for everything else. The main thread only parses, wires the parts
 * together and waits for a signal or a leave request. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "catalog/catalog.h"
#include "cmd/cli.h"
#include "cmd/version.h"
#include "common/common.h"
#include "http/http.h"
#include "lan/gossip_msg.h"
#include "lan/lan.h"
#include "tls/tls.h"
#include "cmd/tls_cli.h"
#include "federation/federation.h"
#include "wan/wan.h"

#define MAIN "agent"

/* Everything `dcgate agent` can be told, from config files then flags (flags win). */
struct agent_config {
	json_t *merged; /* Consul-style config keys, files merged in order, then flags */
	bool dev;
};

static void usage_agent(void)
{
	fprintf(stderr,
		"Usage: dcgate agent [options]\n\n"
		"  -dev                    Development mode: one in-memory server on 127.0.0.1\n"
		"  -server                 Run as a server\n"
		"  -bootstrap-expect=N     Servers to wait for before bootstrapping (1 here)\n"
		"  -datacenter=NAME        Datacenter of this agent (dc1)\n"
		"  -node=NAME              Node name (the host name)\n"
		"  -node-id=UUID           Node ID (generated and kept in the data dir)\n"
		"  -bind=ADDR              Address for cluster traffic (raft)\n"
		"  -advertise=ADDR         Address published for this node\n"
		"  -client=ADDR            Address of the HTTP API (127.0.0.1)\n"
		"  -data-dir=PATH          Where the raft log and snapshots live\n"
		"  -http-port=PORT         HTTP API port (8500)\n"
		"  -server-port=PORT       Raft port (8300)\n"
		"  -dns-port=PORT          DNS port (accepted; DNS is not served yet)\n"
		"  -config-file=FILE       A JSON config file (repeatable)\n"
		"  -config-dir=DIR         A directory of *.json config files (repeatable)\n"
		"  -log-level=LEVEL        trace, debug, info, warn, err\n");
}

/* Go's flag package accepts -flag, --flag, -flag=value and -flag value. */
static bool flag_match(const char *arg, const char *name, const char **inline_val)
{
	if (arg[0] != '-')
		return false;
	arg += arg[1] == '-' ? 2 : 1;
	size_t n = strlen(name);
	if (strncmp(arg, name, n) != 0)
		return false;
	if (arg[n] == 0) {
		*inline_val = NULL;
		return true;
	}
	if (arg[n] == '=') {
		*inline_val = arg + n + 1;
		return true;
	}
	return false;
}

/* Merges add into merged: nested objects (ports, tls, ...) key by key, as Consul's config merge
 * does; anything else replaced. */
static void merge_config(json_t *merged, json_t *add)
{
	const char *k;
	json_t *v;
	json_object_foreach(add, k, v)
	{
		json_t *cur = json_object_get(merged, k);
		if (json_is_object(cur) && json_is_object(v))
			json_object_update(cur, v);
		else
			json_object_set(merged, k, v);
	}
}

static int load_config_file(json_t *merged, const char *path)
{
	json_error_t err;
	json_t *j = json_load_file(path, 0, &err);
	if (!json_is_object(j)) {
		fprintf(stderr, "==> Error parsing %s: %s (line %d)\n", path,
			j ? "not a JSON object" : err.text, err.line);
		json_decref(j);
		return DG_EINVAL;
	}
	merge_config(merged, j);
	json_decref(j);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_config_dir(json_t *merged, const char *dir)
{
	DIR *d = opendir(dir);
	char *names[1024];
	size_t n = 0;
	int rv = 0;
	if (!d) {
		fprintf(stderr, "==> Error reading config dir %s: %s\n", dir, strerror(errno));
		return DG_EINVAL;
	}
	struct dirent *e;
	while ((e = readdir(d)) && n < sizeof(names) / sizeof(names[0])) {
		size_t l = strlen(e->d_name);
		if (l > 5 && strcmp(e->d_name + l - 5, ".json") == 0)
			names[n++] = strdup(e->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), name_cmp);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (rv == 0)
			rv = load_config_file(merged, path);
		free(names[i]);
	}
	return rv;
}

static void set_port(json_t *cfg, const char *name, int port)
{
	json_t *ports = json_object_get(cfg, "ports");
	if (!json_is_object(ports)) {
		ports = json_object();
		json_object_set_new(cfg, "ports", ports);
	}
	json_object_set_new(ports, name, json_integer(port));
}

static int parse_agent_flags(int argc, char **argv, struct agent_config *ac)
{
	json_t *flags = json_object();
	json_t *merged = json_object();
	ac->merged = merged;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = NULL;
		/* boolean flags */
		if (flag_match(a, "dev", &v)) {
			ac->dev = true;
			continue;
		}
		if (flag_match(a, "server", &v)) {
			json_object_set_new(flags, "server",
					    json_boolean(!v || strcmp(v, "false") != 0));
			continue;
		}
		if (flag_match(a, "bootstrap", &v)) {
			json_object_set_new(flags, "bootstrap_expect", json_integer(1));
			continue;
		}
		if (flag_match(a, "ui", &v))
			continue;
		static const struct {
			const char *flag;
			const char *key; /* config key, or a port name after "ports." */
			bool integer;
		} valued[] = {
		    {"bootstrap-expect", "bootstrap_expect", true},
		    {"datacenter", "datacenter", false},
		    {"node", "node_name", false},
		    {"node-id", "node_id", false},
		    {"bind", "bind_addr", false},
		    {"advertise", "advertise_addr", false},
		    {"advertise-wan", "advertise_addr_wan", false},
		    {"client", "client_addr", false},
		    {"data-dir", "data_dir", false},
		    {"log-level", "log_level", false},
		    {"domain", "domain", false},
		    {"encrypt", "encrypt", false},
		    {"http-port", "ports.http", true},
		    {"https-port", "ports.https", true},
		    {"dns-port", "ports.dns", true},
		    {"server-port", "ports.server", true},
		    {"serf-lan-port", "ports.serf_lan", true},
		    {"serf-wan-port", "ports.serf_wan", true},
		    {"grpc-port", "ports.grpc", true},
		    {"config-file", "-config-file", false},
		    {"config-dir", "-config-dir", false},
		    {"join", "-join", false},
		    {"retry-join", "-retry-join", false},
		    {"join-wan", "-join-wan", false},
		    {"retry-join-wan", "-retry-join-wan", false},
		};
		bool known = false;
		for (size_t f = 0; f < sizeof(valued) / sizeof(valued[0]); f++) {
			if (!flag_match(a, valued[f].flag, &v))
				continue;
			known = true;
			if (!v) {
				if (i + 1 >= argc) {
					fprintf(stderr, "flag needs an argument: -%s\n",
						valued[f].flag);
					return DG_EINVAL;
				}
				v = argv[++i];
			}
			if (strcmp(valued[f].key, "-config-file") == 0) {
				if (load_config_file(merged, v) != 0)
					return DG_EINVAL;
			} else if (strcmp(valued[f].key, "-config-dir") == 0) {
				if (load_config_dir(merged, v) != 0)
					return DG_EINVAL;
			} else if (valued[f].key[0] == '-') {
				json_t *arr = json_object_get(flags, valued[f].key + 1);
				if (!arr) {
					arr = json_array();
					json_object_set_new(flags, valued[f].key + 1, arr);
				}
				json_array_append_new(arr, json_string(v));
			} else if (valued[f].integer) {
				char *end;
				long n = strtol(v, &end, 10);
				if (*end || end == v) {
					fprintf(stderr, "invalid value \"%s\" for flag -%s\n", v,
						valued[f].flag);
					return DG_EINVAL;
				}
				if (strncmp(valued[f].key, "ports.", 6) == 0)
					set_port(flags, valued[f].key + 6, (int)n);
				else
					json_object_set_new(flags, valued[f].key, json_integer(n));
			} else {
				json_object_set_new(flags, valued[f].key, json_string(v));
			}
			break;
		}
		if (!known) {
			if (strcmp(a, "-h") == 0 || strcmp(a, "-help") == 0 ||
			    strcmp(a, "--help") == 0) {
				usage_agent();
				return DG_EINVAL;
			}
			fprintf(stderr, "flag provided but not defined: %s\n", a);
			usage_agent();
			return DG_EINVAL;
		}
	}
	merge_config(merged, flags); /* flags win over files */
	json_decref(flags);
	return 0;
}

static const char *cfg_str(json_t *cfg, const char *key, const char *def)
{
	const char *s = json_string_value(json_object_get(cfg, key));
	return s && *s ? s : def;
}

static int cfg_port(json_t *cfg, const char *name, int def)
{
	json_t *v = json_object_get(json_object_get(cfg, "ports"), name);
	return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

/* The main thread waits here for SIGINT/SIGTERM (stop), SIGHUP (reload) or a leave request. */
static sigset_t wait_set;

/* `dcgate leave` (PUT /v1/agent/leave): the WAN pool is told before the agent stops; a plain
 * SIGTERM or SIGINT stops without telling (Consul's defaults for servers). */
static atomic_bool leave_requested;

static void request_leave(void *arg)
{
	atomic_store(&leave_requested, true);
	kill(getpid(), SIGTERM);
}

/* Addresses to join over the WAN: the config's key (an array of strings, or one string) and
 * the flag's values, which parse_agent_flags keeps under the flag's name. */
static void each_wan_addr(json_t *cfg, const char *key, const char *flag, dg_wan *wan,
			  void (*fn)(dg_wan *, const char *))
{
	const char *keys[2] = {key, flag};
	for (int k = 0; k < 2; k++) {
		json_t *v = json_object_get(cfg, keys[k]), *e;
		size_t i;
		if (json_is_string(v))
			fn(wan, json_string_value(v));
		json_array_foreach(v, i, e) if (json_is_string(e)) fn(wan, json_string_value(e));
	}
}

/* The LAN addresses under a config key (a string or an array) and a flag's values, as one
 * NULL-terminated array (free with dg_strv_free). */
static char **lan_addrs(json_t *cfg, const char *key, const char *flag)
{
	const char *keys[2] = {key, flag};
	size_t n = 0;
	char **out = calloc(1, sizeof(*out));
	for (int k = 0; k < 2 && out; k++) {
		json_t *v = json_object_get(cfg, keys[k]), *e;
		json_t *one = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
		size_t i;
		json_array_foreach(one, i, e)
		{
			if (!json_is_string(e))
				continue;
			char **grown = realloc(out, (n + 2) * sizeof(*out));
			if (!grown)
				break;
			out = grown;
			out[n++] = strdup(json_string_value(e));
			out[n] = NULL;
		}
		json_decref(one);
	}
	return out;
}

/* gossip_lan.<key>: a duration ("500ms") into *ms; absent leaves *ms. -1 (said why) when bad. */
static int gossip_lan_ms(json_t *cfg, const char *key, int64_t *ms)
{
	json_t *v = json_object_get(json_object_get(cfg, "gossip_lan"), key);
	int64_t ns;
	if (!v)
		return 0;
	if (!json_is_string(v) || dg_duration_parse(json_string_value(v), &ns) != 0 ||
	    ns < 10 * 1000000LL || ns > 60 * 1000000000LL) {
		fprintf(stderr, "==> gossip_lan.%s must be a duration between 10ms and 60s\n", key);
		return -1;
	}
	*ms = ns / 1000000;
	return 0;
}

static bool has_wan_addr(json_t *cfg)
{
	static const char *keys[] = {"start_join_wan", "join-wan", "retry_join_wan",
				     "retry-join-wan"};
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		json_t *v = json_object_get(cfg, keys[k]);
		if ((json_is_string(v) && json_string_length(v)) || json_array_size(v) > 0)
			return true;
	}
	return false;
}

static void join_logged(void *arg, int err, const char *msg)
{
	/* the WAN pool logs the outcome; -join-wan is one attempt, as Consul's is at start */
}

static void join_once(dg_wan *wan, const char *addr)
{
	if (dg_wan_join(wan, addr, join_logged, NULL) != 0)
		DG_LOGW(MAIN, "cannot join the WAN through \"%s\": bad address", addr);
}

static void request_reload(void *arg)
{
	kill(getpid(), SIGHUP);
}

static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The node ID is kept in the data dir so that a restarted node keeps its identity. */
static char *load_node_id(const char *data_dir, const char *configured)
{
	char path[4096], buf[64] = {0};
	if (configured)
		return strdup(configured);
	if (!data_dir)
		return NULL;
	snprintf(path, sizeof(path), "%s/node-id", data_dir);
	FILE *f = fopen(path, "r");
	if (f) {
		size_t n = fread(buf, 1, 36, f);
		fclose(f);
		buf[n] = 0;
		if (dg_uuid_valid(buf))
			return strdup(buf);
	}
	dg_uuid_new(buf);
	f = fopen(path, "w");
	if (f) {
		fputs(buf, f);
		fclose(f);
	}
	return strdup(buf);
}

/* When the certificate and CA in use expire (wall-clock seconds), for the metrics; set when
 * they are loaded, at start and by a successful reload, under pol_mu. */
static pthread_mutex_t pol_mu = PTHREAD_MUTEX_INITIALIZER;
static double cert_not_after = -1e18, ca_not_after = -1e18;

static void note_expiry(const struct dg_tls_policy *p)
{
	double cert = -1e18, ca = -1e18, days;
	double now = (double)dg_wall_ns() / 1e9;
	if (p->cert_file && dg_tls_days_left(p->cert_file, &days) == 0)
		cert = now + days * 86400.0;
	if (p->ca_file && dg_tls_days_left(p->ca_file, &days) == 0)
		ca = now + days * 86400.0;
	pthread_mutex_lock(&pol_mu);
	cert_not_after = cert;
	ca_not_after = ca;
	pthread_mutex_unlock(&pol_mu);
}

static void tls_days(void *arg, double *cert_days, double *ca_days)
{
	double now = (double)dg_wall_ns() / 1e9;
	pthread_mutex_lock(&pol_mu);
	*cert_days = cert_not_after > -1e17 ? (cert_not_after - now) / 86400.0 : -1e18;
	*ca_days = ca_not_after > -1e17 ? (ca_not_after - now) / 86400.0 : -1e18;
	pthread_mutex_unlock(&pol_mu);
}

/* SIGHUP and `dcgate reload`: read the config files and flags again and load new certificates
 * and CA for every TLS listener and dialer; live links and connections carry on. The log level
 * follows too. Anything else needs a restart, as it does in Consul for most keys. */
static void reload(int argc, char **argv, const char *dc, const char *domain, bool server,
		   struct dg_tls_policy *pol, dg_http *http)
{
	struct agent_config ac = {0};
	struct dg_tls_policy next;
	char msg[512];
	DG_LOGI(MAIN, "reloading configuration");
	if (parse_agent_flags(argc, argv, &ac) != 0) {
		DG_LOGE(MAIN, "reload: the configuration no longer parses; keeping the old one");
		json_decref(ac.merged);
		return;
	}
	enum dg_log_level level;
	if (dg_log_parse_level(cfg_str(ac.merged, "log_level", "info"), &level) == 0)
		dg_log_set_level(level);
	if (dg_tls_policy_from_config(ac.merged, dc, domain, server, &next, msg, sizeof(msg)) !=
	    0) {
		DG_LOGE(MAIN, "reload: invalid TLS configuration, keeping the old one: %s", msg);
		json_decref(ac.merged);
		return;
	}
	json_decref(ac.merged);
	if (dg_tls_policy_has_identity(&next)) {
		if (dg_tls_check_own(&next, msg, sizeof(msg)) != 0 ||
		    dg_tls_reload(&next, msg, sizeof(msg)) != 0 ||
		    dg_http_reload_tls(http, next.cert_file, next.key_file, next.ca_file, msg,
				       sizeof(msg)) != 0) {
			DG_LOGE(MAIN, "reload: new certificates not used: %s", msg);
			dg_tls_policy_fini(&next);
			return;
		}
		DG_LOGI(MAIN, "reload: new handshakes use %s (CA %s)", next.cert_file,
			next.ca_file ? next.ca_file : "-");
	}
	note_expiry(&next);
	dg_tls_policy_fini(pol);
	*pol = next;
}

static int run_agent(int argc, char **argv)
{
	struct agent_config ac = {0};
	char msg[512];
	char host[256] = "dcgate";
	int rv;
	/* Before anything starts a thread (nng's workers start with the TLS engine): every thread
	 * inherits this mask, so SIGHUP and SIGTERM reach the sigwait below and never a worker,
	 * where SIGHUP's default action would end the process. */
	/* No libcurl here: the first HTTP check loads and sets it up (common/curl_lazy.c); an
	 * agent with no HTTP check never maps it nor the score of libraries it brings. */
	sigemptyset(&wait_set);
	sigaddset(&wait_set, SIGINT);
	sigaddset(&wait_set, SIGTERM);
	sigaddset(&wait_set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &wait_set, NULL);
	if (parse_agent_flags(argc, argv, &ac) != 0) {
		json_decref(ac.merged);
		return 1;
	}
	json_t *cfg = ac.merged;
	gethostname(host, sizeof(host) - 1);
	const char *node = cfg_str(cfg, "node_name", host);
	const char *dc = cfg_str(cfg, "datacenter", "dc1");
	const char *bind = cfg_str(cfg, "bind_addr", ac.dev ? "127.0.0.1" : "0.0.0.0");
	const char *client = cfg_str(cfg, "client_addr", "127.0.0.1");
	const char *data_dir = cfg_str(cfg, "data_dir", NULL);
	const char *level_s = cfg_str(cfg, "log_level", "info");
	bool server = ac.dev || json_is_true(json_object_get(cfg, "server"));
	json_int_t expect = json_integer_value(json_object_get(cfg, "bootstrap_expect"));
	enum dg_log_level level;
	if (dg_log_parse_level(level_s, &level) != 0) {
		fprintf(stderr, "==> Invalid log level: %s\n", level_s);
		goto fail;
	}
	dg_log_set_level(level);
	if (!ac.dev && !data_dir) {
		fprintf(stderr, "==> data_dir cannot be empty\n");
		goto fail;
	}
	if (!server && expect > 0) {
		fprintf(stderr, "==> bootstrap_expect is for servers: add -server\n");
		goto fail;
	}
	if (expect < 0 || expect > 64) {
		fprintf(stderr, "==> bootstrap_expect must be between 0 and 64\n");
		goto fail;
	}
	if (ac.dev && expect > 1) {
		fprintf(stderr, "==> Bootstrap cannot be enabled in dev mode with more than one "
				"server\n");
		goto fail;
	}
	uint8_t gossip_key[DG_GOSSIP_KEY_LEN];
	const char *encrypt = cfg_str(cfg, "encrypt", NULL);
	if (encrypt && dg_gossip_key_parse(encrypt, gossip_key, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "==> Invalid encryption key: %s\n", msg);
		goto fail;
	}
	int64_t reconnect_ns = 72LL * 3600 * 1000000000LL;
	const char *reconnect_s = cfg_str(cfg, "reconnect_timeout", NULL);
	if (reconnect_s && (dg_duration_parse(reconnect_s, &reconnect_ns) != 0 ||
			    reconnect_ns < 1000000000LL)) {
		fprintf(stderr, "==> reconnect_timeout: \"%s\" is not a duration of 1s or more\n",
			reconnect_s);
		goto fail;
	}
	if (strcmp(bind, "0.0.0.0") == 0)
		bind = "127.0.0.1"; /* raft needs one address to advertise */
	const char *domain = cfg_str(cfg, "domain", "consul");
	struct dg_tls_policy pol;
	if (dg_tls_policy_from_config(cfg, dc, domain, server, &pol, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "==> Invalid TLS configuration: %s\n", msg);
		goto fail;
	}
	if (dg_tls_policy_has_identity(&pol) && dg_tls_check_own(&pol, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "==> Refusing to start: %s\n", msg);
		dg_tls_policy_fini(&pol);
		goto fail;
	}
	if (has_wan_addr(cfg) && !(server && dg_tls_policy_has_identity(&pol))) {
		fprintf(stderr, "==> %s\n",
			server ? "WAN peers are configured (join_wan/retry_join_wan) but this server "
				 "has no TLS certificates: the WAN (port 8302) is mutual TLS only; set "
				 "tls.defaults.ca_file, cert_file and key_file (dcgate tls cert create "
				 "-server makes them)"
			       : "Must be a server to join WAN cluster");
		dg_tls_policy_fini(&pol);
		goto fail;
	}
	int https_port = cfg_port(cfg, "https", 0);
	if (https_port > 0 && !dg_tls_policy_has_identity(&pol)) {
		fprintf(stderr,
			"==> ports.https is set but no cert_file and key_file are configured\n");
		dg_tls_policy_fini(&pol);
		goto fail;
	}
	/* OpenSSL under every tls+tcp:// link; must precede any nng socket. An agent without
	 * certificates opens no TLS link, and skipping OpenSSL's set-up keeps its memory small. */
	if (dg_tls_policy_has_identity(&pol) && dg_tls_engine_init() != 0) {
		fprintf(stderr, "==> Cannot register the OpenSSL TLS engine with nng\n");
		dg_tls_policy_fini(&pol);
		goto fail;
	}
	const char *advertise = cfg_str(cfg, "advertise_addr", bind);
	/* -dev with -data-dir keeps its data there; -dev alone uses a temporary directory */
	bool temp_dir = ac.dev && !data_dir;
	char *node_id = load_node_id(temp_dir ? NULL : data_dir, cfg_str(cfg, "node_id", NULL));
	raise_fd_limit();
	/* one worker per concurrent TCP/HTTP check probe; libuv reads this once */
	setenv("UV_THREADPOOL_SIZE", "16", 0);


	/* gossip_lan timings (Consul's keys). dcgate probes twice as often as Consul by default,
	 * so that a stopped agent is failed within about 4 s rather than 6-8 s (docs/gossip.md). */
	int64_t probe_interval = 500, probe_timeout = 250, suspicion_mult = 4;
	if (gossip_lan_ms(cfg, "probe_interval", &probe_interval) != 0 ||
	    gossip_lan_ms(cfg, "probe_timeout", &probe_timeout) != 0)
		goto fail;
	json_t *smult = json_object_get(json_object_get(cfg, "gossip_lan"), "suspicion_mult");
	if (smult) {
		if (!json_is_integer(smult) || json_integer_value(smult) < 1 ||
		    json_integer_value(smult) > 100) {
			fprintf(stderr, "==> gossip_lan.suspicion_mult must be an integer 1..100\n");
			goto fail;
		}
		suspicion_mult = json_integer_value(smult);
	}
	if (probe_timeout >= probe_interval) {
		fprintf(stderr, "==> gossip_lan.probe_timeout must be shorter than probe_interval\n");
		goto fail;
	}
	/* raft_snapshot_threshold: Consul's key; dcgate's default is 4 x Consul's 16384, because a
	 * snapshot here pauses writes (docs/cluster.md "Snapshots") where Consul's runs beside them */
	json_int_t snapshot_threshold = 65536;
	json_t *st = json_object_get(cfg, "raft_snapshot_threshold");
	if (st) {
		if (!json_is_integer(st) || json_integer_value(st) < 16 ||
		    json_integer_value(st) > 10000000) {
			fprintf(stderr, "==> raft_snapshot_threshold must be an integer 16..10000000\n");
			goto fail;
		}
		snapshot_threshold = json_integer_value(st);
	}
	char **joins = lan_addrs(cfg, "start_join", "join");
	char **retry_joins = lan_addrs(cfg, "retry_join", "retry-join");
	dg_catalog *cat = dg_cat_new(dc);
	struct dg_lan_config lc = {
	    .node = node,
	    .node_id = node_id,
	    .dc = dc,
	    .bind_addr = bind,
	    .advertise = advertise,
	    .data_dir = temp_dir ? NULL : data_dir,
	    .server_port = cfg_port(cfg, "server", 8300),
	    .dev = temp_dir,
	    .server = server,
	    .check_deregister_min_ns = 60LL * 1000000000LL,
	    .snapshot_threshold = (unsigned)snapshot_threshold,
	    .version = DG_CONSUL_VERSION,
	    .serf_lan_port = cfg_port(cfg, "serf_lan", 8301),
	    /* with a certificate and a CA the servers' requests go over TLS, to a server's
	     * ports.rpc_tls (Consul has them on 8300 with raft; libraft owns 8300 here) */
	    .tls = dg_tls_policy_has_identity(&pol) && (pol.ca_file || pol.ca_path) ? &pol : NULL,
	    .rpc_tls_port = cfg_port(cfg, "rpc_tls", 8303),
	    /* a server has a WAN pool when it has certificates (below) */
	    .serf_wan_port =
		server && dg_tls_policy_has_identity(&pol) ? cfg_port(cfg, "serf_wan", 8302) : 0,
	    .bootstrap_expect = ac.dev ? 1 : (int)expect,
	    .join = (const char *const *)joins,
	    .retry_join = (const char *const *)retry_joins,
	    .encrypt_key = encrypt ? gossip_key : NULL,
	    .reconnect_timeout_ms = (uint64_t)(reconnect_ns / 1000000),
	    .gossip_probe_interval_ms = (uint32_t)probe_interval,
	    .gossip_probe_timeout_ms = (uint32_t)probe_timeout,
	    .gossip_suspicion_mult = (uint32_t)suspicion_mult,
	};
	dg_lan *lan = NULL;
	rv = dg_lan_start(&lc, cat, &lan, msg, sizeof(msg));
	dg_strv_free(joins);
	dg_strv_free(retry_joins);
	if (rv != 0) {
		fprintf(stderr, "==> Error starting agent: %s\n", msg);
		dg_cat_free(cat);
		free(node_id);
		goto fail;
	}
	json_t *self_cfg =
	    json_pack("{s:s, s:s, s:s, s:s, s:b, s:s, s:s}", "Datacenter", dc, "PrimaryDatacenter",
		      dc, "NodeName", node, "NodeID", dg_lan_node_id(lan), "Server", server,
		      "Version", DG_CONSUL_VERSION, "Revision", "dcgate-" DG_VERSION);
	char *self_text = json_dumps(self_cfg, JSON_COMPACT);
	json_decref(self_cfg);
	struct dg_http_config hc = {
	    .bind = client,
	    .port = cfg_port(cfg, "http", 8500),
	    .version = DG_VERSION,
	    .consul_version = DG_CONSUL_VERSION,
	    .domain = "consul.",
	    .config_json = self_text,
	    .on_leave = request_leave,
	    .on_reload = request_reload,
	};
	note_expiry(&pol);
	hc.tls_days = dg_tls_policy_has_identity(&pol) ? tls_days : NULL;
	hc.https_port = https_port;
	hc.https_cert_file = pol.cert_file;
	hc.https_key_file = pol.key_file;
	hc.https_ca_file = pol.ca_file;
	hc.https_verify_incoming = pol.verify_incoming && pol.ca_file;
	hc.https_min_tls13 = pol.min_version >= 0x0304;
	dg_http *http = NULL;
	if ((rv = dg_http_start(&hc, cat, lan, &http, msg, sizeof(msg))) != 0) {
		fprintf(stderr, "==> Error starting HTTP API: %s\n", msg);
		dg_lan_free(lan);
		dg_cat_free(cat);
		free(self_text);
		free(node_id);
		goto fail;
	}
	dg_wan *wan = NULL;
	dg_fed *fed = NULL;
	if (server) {
		/* the WAN pool when this server has certificates; federation in any case, which
		 * also runs the catalog requests of the DC's client agents */
		struct dg_wan_config wc = {
		    .bind = bind,
		    .advertise = cfg_str(cfg, "advertise_addr_wan", advertise),
		    .port = cfg_port(cfg, "serf_wan", 8302),
		    .node = node,
		    .dc = dc,
		    .build = DG_VERSION,
		    .server_port = lc.server_port,
		    .tls = &pol};
		struct dg_fed_config fc = {.dc = dc, .local = &dg_http_local_ops,
					   .local_srv = http, .lan = lan};
		if ((dg_tls_policy_has_identity(&pol) &&
		     dg_wan_start(&wc, &wan, msg, sizeof(msg)) != 0) ||
		    ((fc.wan = wan), dg_fed_start(&fc, &fed, msg, sizeof(msg)) != 0)) {
			fprintf(stderr, "==> Error starting %s: %s\n",
				wan || dg_tls_policy_has_identity(&pol) ? "the WAN pool"
									: "request forwarding",
				msg);
			dg_wan_free(wan);
			dg_http_free(http);
			dg_lan_free(lan);
			dg_cat_free(cat);
			free(self_text);
			free(node_id);
			dg_tls_policy_fini(&pol);
			goto fail;
		}
		dg_http_set_fed(http, fed);
		if (wan) {
			each_wan_addr(cfg, "start_join_wan", "join-wan", wan, join_once);
			each_wan_addr(cfg, "retry_join_wan", "retry-join-wan", wan,
				      dg_wan_retry_join);
		}
	}
	fprintf(stderr,
		"==> dcgate agent running!\n"
		"           Version: 'dcgate v%s (Consul API %s)'\n"
		"           Node ID: '%s'\n"
		"         Node name: '%s'\n"
		"        Datacenter: '%s'\n"
		"            Server: %s (Bootstrap: %s)\n"
		"       Client Addr: [%s] (HTTP: %d)\n"
		"      Cluster Addr: %s (raft: %d)\n"
		"          Data Dir: %s\n",
		DG_VERSION, DG_CONSUL_VERSION, dg_lan_node_id(lan), node, dc,
		server ? "true" : "false", server && (ac.dev || expect == 1) ? "true" : "false", client, dg_http_port(http), advertise, lc.server_port,
		temp_dir ? "(dev: temporary)" : data_dir);
	DG_LOGI(MAIN, "started; HTTP API on %s:%d", client, dg_http_port(http));

	for (;;) {
		int sig = 0;
		if (sigwait(&wait_set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			reload(argc, argv, dc, domain, server, &pol, http);
			continue;
		}
		DG_LOGI(MAIN, "caught signal %d, shutting down", sig);
		break;
	}
	if (wan && atomic_load(&leave_requested))
		dg_wan_leave(wan);
	/* a leave tells the LAN too, so the member shows "left" (not "failed") everywhere and the
	 * leader removes a leaving server from raft */
	if (atomic_load(&leave_requested))
		dg_lan_leave(lan, 5000);
	/* federation, WAN and HTTP first, while the loop still answers writes in flight; then
	 * raft. The order inside federation is dg_fed_stop, dg_wan_free, dg_fed_free (see
	 * federation.h); HTTP lets go of federation before any of it. */
	dg_http_set_fed(http, NULL);
	dg_fed_stop(fed);
	if (!dg_lan_stop_rpc(lan)) {
		/* nng's reaper is stuck (wan/closer.c): its threads may still use the LAN, WAN and
		 * HTTP state, and closing anything more would wait forever. What raft committed is on
		 * disk; the rest is the process's to drop. */
		DG_LOGW(MAIN, "shutdown: sockets stuck in nng, exiting without the rest of the cleanup");
		_exit(0);
	}
	dg_wan_free(wan);
	dg_fed_free(fed);
	dg_http_free(http);
	dg_lan_free(lan);
	dg_cat_free(cat);
	free(self_text);
	free(node_id);
	dg_tls_policy_fini(&pol);
	json_decref(cfg);
	DG_LOGI(MAIN, "shutdown complete");
	return 0;
fail:
	json_decref(ac.merged);
	return 1;
}

/* `dcgate wan ping -address HOST:PORT -dc DC [-config-file F | -config-dir D ...]`: dials a
 * server's WAN port over mutual TLS with the certificates of the given config and prints who
 * answered and who it saw, to check a federation link and its certificates end to end. */
static int run_wan_ping(int argc, char **argv)
{
	const char *address = NULL, *target = NULL;
	char *rest[64];
	int nrest = 0;
	for (int i = 0; i < argc; i++) {
		const char *v = NULL;
		if (flag_match(argv[i], "address", &v) || flag_match(argv[i], "dc", &v)) {
			bool is_addr = flag_match(argv[i], "address", &v);
			if (!v && i + 1 < argc)
				v = argv[++i];
			if (is_addr)
				address = v;
			else
				target = v;
		} else if (nrest < 63) {
			rest[nrest++] = argv[i];
		}
	}
	if (!address || !target) {
		fprintf(stderr,
			"Usage: dcgate wan ping -address HOST:PORT -dc DC -config-file F\n");
		return 1;
	}
	struct agent_config ac = {0};
	if (parse_agent_flags(nrest, rest, &ac) != 0) {
		json_decref(ac.merged);
		return 1;
	}
	const char *dc = cfg_str(ac.merged, "datacenter", "dc1");
	const char *domain = cfg_str(ac.merged, "domain", "consul");
	struct dg_tls_policy pol;
	char msg[512], out[1024];
	int rv = 1;
	if (dg_tls_policy_from_config(ac.merged, dc, domain, true, &pol, msg, sizeof(msg)) != 0) {
		fprintf(stderr, "Invalid TLS configuration: %s\n", msg);
	} else {
		if (dg_tls_engine_init() != 0)
			fprintf(stderr, "Cannot register the OpenSSL TLS engine\n");
		else if (dg_wan_ping(&pol, address, target, out, sizeof(out), msg, sizeof(msg)) !=
			 0)
			fprintf(stderr, "Error: %s\n", msg);
		else {
			printf("%s\n", out);
			rv = 0;
		}
		dg_tls_policy_fini(&pol);
	}
	json_decref(ac.merged);
	return rv;
}

static void usage(void)
{
	fprintf(stderr,
		"Usage: dcgate <command> [args]\n\n"
		"Commands:\n"
		"  agent        Runs an agent (dcgate agent -dev)\n"
		"  members      Lists the members of the cluster\n"
		"  catalog      Lists datacenters, nodes and services\n"
		"  kv           Reads and writes the KV store\n"
		"  services     Registers and deregisters services\n"
		"  info         Shows the agent's details\n"
		"  join         Joins the agent to a cluster\n"
		"  leave        Gracefully leaves and shuts down the agent\n"
		"  force-leave  Marks a member as left (-wan for the WAN pool)\n"
		"  rtt          Shows round trip times (-wan between datacenters)\n"
		"  reload       Reloads the agent's configuration\n"
		"  keygen       Prints a new gossip encryption key\n"
		"  operator     Raft peers of the servers (operator raft list-peers, remove-peer)\n"
		"  snapshot     Saves, restores and inspects snapshots of the catalog\n"
		"  tls          Makes a CA and certificates (tls ca create, tls cert create)\n"
		"  version      Prints the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage();
		return 1;
	}
	if (strcmp(argv[1], "agent") == 0)
		return run_agent(argc - 2, argv + 2);
	if (strcmp(argv[1], "wan") == 0 && argc > 2 && strcmp(argv[2], "ping") == 0)
		return run_wan_ping(argc - 3, argv + 3);
	if (strcmp(argv[1], "tls") == 0)
		return dg_tls_cli_run(argc - 1, argv + 1);
	if (dg_cli_known(argv[1]))
		return dg_cli_run(argc - 1, argv + 1);
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage();
		return 0;
	}
	fprintf(stderr, "Unknown command: %s\n", argv[1]);
	usage();
	return 1;
}
