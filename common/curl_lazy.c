/* libcurl loaded on first use: common/curl_lazy.h says why. */
#include "common/curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

/* The soname of Debian's libcurl4 (and libcurl3-gnutls's sibling): the ABI curl.h describes. */
#define CURL_SONAME "libcurl.so.4"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static struct dg_curl api;
static const struct dg_curl *loaded;
static char why[256];

static void *sym(void *lib, const char *name, int *missing)
{
	void *p = dlsym(lib, name);
	if (!p && !*missing) {
		snprintf(why, sizeof(why), "%s has no %s", CURL_SONAME, name);
		*missing = 1;
	}
	return p;
}

static void load(void)
{
	void *lib = dlopen(CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(why, sizeof(why), "cannot load %s: %s", CURL_SONAME, dlerror());
		return;
	}
	int missing = 0;
	CURLcode (*global_init)(long) = (CURLcode(*)(long))sym(lib, "curl_global_init", &missing);
	api.easy_init = (CURL * (*)(void)) sym(lib, "curl_easy_init", &missing);
	api.easy_setopt = (CURLcode(*)(CURL *, CURLoption, ...))sym(lib, "curl_easy_setopt", &missing);
	api.easy_perform = (CURLcode(*)(CURL *))sym(lib, "curl_easy_perform", &missing);
	api.easy_getinfo = (CURLcode(*)(CURL *, CURLINFO, ...))sym(lib, "curl_easy_getinfo", &missing);
	api.easy_cleanup = (void (*)(CURL *))sym(lib, "curl_easy_cleanup", &missing);
	api.easy_strerror = (const char *(*)(CURLcode))sym(lib, "curl_easy_strerror", &missing);
	api.slist_append = (struct curl_slist * (*)(struct curl_slist *, const char *))
	    sym(lib, "curl_slist_append", &missing);
	api.slist_free_all = (void (*)(struct curl_slist *))sym(lib, "curl_slist_free_all", &missing);
	if (missing)
		return; /* the library stays loaded: harmless, and never unloaded under a caller */
	/* once, before any handle: curl_global_init is not safe to race with other calls */
	CURLcode rc = global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(why, sizeof(why), "curl_global_init failed (%d)", (int)rc);
		return;
	}
	loaded = &api;
}

const struct dg_curl *dg_curl(void)
{
	pthread_once(&once, load);
	return loaded;
}

const char *dg_curl_error(void)
{
	pthread_once(&once, load);
	return loaded ? "" : why;
}
