/* The text of every dcgate error code, from the one X-macro list in common.h. */
#include "common/common.h"

const char *dg_strerror(int err)
{
	switch (err) {
	case 0:
		return "success";
#define DG_ERR_CASE(name, code, text)                                                              \
	case code:                                                                                 \
		return text;
		DG_ERRORS(DG_ERR_CASE)
#undef DG_ERR_CASE
	}
	return "unknown error";
}
