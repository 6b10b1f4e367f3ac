/* /v1/agent endpoints. */
#include "http/internal.h"

const struct dg_route dg_routes_agent[] = {
	{NULL, false, 0, NULL},
};
