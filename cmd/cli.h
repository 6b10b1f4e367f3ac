/* dcgate CLI subcommands other than `agent`: thin clients of a running agent's HTTP API that take
 * Consul's flags and print what Consul's CLI prints. The agent address comes from -http-addr, then
 * DCGATE_HTTP_ADDR, then CONSUL_HTTP_ADDR, then 127.0.0.1:8500. */
#ifndef DG_CMD_CLI_H
#define DG_CMD_CLI_H

#include <stdbool.h>

/* argv[0] is the subcommand ("members", "catalog", "kv", "services", "info", "version", "leave",
 * "reload", "join", "force-leave"); the rest are its arguments. Writes results to stdout and
 * errors to stderr, reads stdin only for `kv put <key> -`. Returns the process exit code.
 * Not thread-safe (it initialises libcurl); call it from main() only. */
int dg_cli_run(int argc, char **argv);

/* True if dg_cli_run handles this subcommand. */
bool dg_cli_known(const char *subcommand);

#endif
