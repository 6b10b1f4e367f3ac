/* /v1/health endpoints. */
#include "http/internal.h"

const struct dg_route dg_routes_health[] = {
	{NULL, false, 0, NULL},
};
