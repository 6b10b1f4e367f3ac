/* /v1/catalog endpoints. */
#include "http/internal.h"

const struct dg_route dg_routes_catalog[] = {
	{NULL, false, 0, NULL},
};
