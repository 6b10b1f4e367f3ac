/* /v1/session endpoints. */
#include "http/internal.h"

const struct dg_route dg_routes_session[] = {
	{NULL, false, 0, NULL},
};
