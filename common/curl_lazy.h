/* common/curl_lazy.h: libcurl, loaded on first use (dlopen) rather than linked.
 *
 * Why: linked, libcurl brings a score of libraries into every agent (Kerberos, LDAP, SASL, SSH,
 * RTMP, HTTP/2, ...), about 1.4 MiB of RSS for the relocations and set-up of code that an agent
 * with no HTTP check never runs (bench/run.sh measures the idle agent against 10 MiB). Only HTTP
 * checks (lan/agent.c) and the CLI (cmd/cli.c) use it; they call through this table. */
#ifndef DG_CURL_LAZY_H
#define DG_CURL_LAZY_H

#define CURL_DISABLE_TYPECHECK /* the calls go through pointers, not curl.h's macros */
#include <curl/curl.h>

struct dg_curl {
	CURL *(*easy_init)(void);
	CURLcode (*easy_setopt)(CURL *h, CURLoption opt, ...);
	CURLcode (*easy_perform)(CURL *h);
	CURLcode (*easy_getinfo)(CURL *h, CURLINFO info, ...);
	void (*easy_cleanup)(CURL *h);
	const char *(*easy_strerror)(CURLcode rc);
	struct curl_slist *(*slist_append)(struct curl_slist *list, const char *s);
	void (*slist_free_all)(struct curl_slist *list);
};

/* The table, libcurl loaded and set up (curl_global_init) by the first call; NULL if it cannot
 * be (then dg_curl_error() says why). Any thread. */
const struct dg_curl *dg_curl(void);
const char *dg_curl_error(void);

#endif
