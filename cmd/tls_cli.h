/* `dcgate tls ca create` and `dcgate tls cert create`: Consul's `consul tls` commands, same flags,
 * same file names, same output, so scripts written for consul make dcgate's certificates. */
#ifndef DG_CMD_TLS_CLI_H
#define DG_CMD_TLS_CLI_H

#include "tls/tls.h"


/* argv[0] is "tls"; the rest are its words ("ca create -days 30", "cert create -server ...").
 * Files are written to the current directory. Prints what Consul prints on stdout, errors on
 * stderr; returns the process exit code (0 or 1). Call from main() only. */
int dg_tls_cli_run(int argc, char **argv);

#endif
