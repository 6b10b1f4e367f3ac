/* A sorted array map. The catalog's tables are read far more often than written and need ordered
 * walks (Consul returns nodes, keys and IDs sorted), so a sorted array beats a hash table here. */
#include "common/common.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void dg_map_init(struct dg_map *m, bool nocase)
{
	m->v = NULL;
	m->n = m->cap = 0;
	m->nocase = nocase;
}

void dg_map_fini(struct dg_map *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].key);
	free(m->v);
	m->v = NULL;
	m->n = m->cap = 0;
}

static int key_cmp(const struct dg_map *m, const char *a, const char *b)
{
	return m->nocase ? strcasecmp(a, b) : strcmp(a, b);
}

size_t dg_map_lower_bound(const struct dg_map *m, const char *key)
{
	size_t lo = 0, hi = m->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (key_cmp(m, m->v[mid].key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void *dg_map_find(const struct dg_map *m, const char *key)
{
	size_t i = dg_map_lower_bound(m, key);
	if (i < m->n && key_cmp(m, m->v[i].key, key) == 0)
		return m->v[i].value;
	return NULL;
}

int dg_map_put(struct dg_map *m, const char *key, void *value, void **old)
{
	size_t i = dg_map_lower_bound(m, key);
	if (old)
		*old = NULL;
	if (i < m->n && key_cmp(m, m->v[i].key, key) == 0) {
		if (old)
			*old = m->v[i].value;
		m->v[i].value = value;
		return 0;
	}
	if (m->n == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 8;
		struct dg_map_ent *nv = realloc(m->v, cap * sizeof(*nv));
		if (!nv)
			return DG_ENOMEM;
		m->v = nv;
		m->cap = cap;
	}
	char *k = strdup(key);
	if (!k)
		return DG_ENOMEM;
	memmove(&m->v[i + 1], &m->v[i], (m->n - i) * sizeof(*m->v));
	m->v[i].key = k;
	m->v[i].value = value;
	m->n++;
	return 0;
}

void *dg_map_del(struct dg_map *m, const char *key)
{
	size_t i = dg_map_lower_bound(m, key);
	if (i >= m->n || key_cmp(m, m->v[i].key, key) != 0)
		return NULL;
	void *value = m->v[i].value;
	free(m->v[i].key);
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
	m->n--;
	return value;
}

bool dg_map_has_prefix(const struct dg_map *m, const char *key, const char *prefix)
{
	size_t pl = strlen(prefix);
	return m->nocase ? strncasecmp(key, prefix, pl) == 0 : strncmp(key, prefix, pl) == 0;
}
