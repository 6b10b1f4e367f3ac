/* Internal helpers shared by the files of tls/ only. */
#ifndef DG_TLS_INTERNAL_H
#define DG_TLS_INTERNAL_H

#include <stddef.h>

/* Formats an error into err; a message cut short is still the right message, so truncation is
 * accepted, and only an encoding failure falls back to the fixed text. Returns DG_EINVAL so that
 * callers can `return dg__tls_err(...)`. */
int dg__tls_err(char *err, size_t errlen, const char *fallback, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
