/* /v1/txn endpoints. */
#include "http/internal.h"

const struct dg_route dg_routes_txn[] = {
	{NULL, false, 0, NULL},
};
