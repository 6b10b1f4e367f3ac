/* A sorted map in chunks, for the tables that grow large under writes (the KV store and its
 * tombstones). dg_map's one sorted array moves every entry after the insert point: with a
 * million keys that is 16 MB of memmove for one PUT. Here the entries are kept in sorted chunks
 * of at most OMAP_CHUNK, found by a binary search over the chunks' first keys: an insert moves
 * at most one chunk's entries (4 KiB) and, when that chunk splits, the array of chunk pointers
 * (8 bytes a chunk). Lookups stay O(log n) and walks stay in key order, as the API needs. */
#include "common/common.h"

#include <stdlib.h>
#include <string.h>

#define OMAP_CHUNK 256

struct dg_omap_chunk {
	size_t n;
	struct dg_map_ent e[OMAP_CHUNK];
};

void dg_omap_init(struct dg_omap *m)
{
	memset(m, 0, sizeof(*m));
}

void dg_omap_fini(struct dg_omap *m)
{
	for (size_t c = 0; c < m->nchunks; c++) {
		for (size_t i = 0; i < m->chunks[c]->n; i++)
			free(m->chunks[c]->e[i].key);
		free(m->chunks[c]);
	}
	free(m->chunks);
	memset(m, 0, sizeof(*m));
}

/* The chunk a key belongs in: the last whose first key is <= key, or the first. Only a lone
 * chunk can be empty (the first put's, before its key is in): it is never compared. */
static size_t chunk_for(const struct dg_omap *m, const char *key)
{
	size_t lo = 1, hi = m->nchunks;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(m->chunks[mid]->e[0].key, key) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : 0;
}

/* Position of the first key >= key within chunk ch. */
static size_t pos_in(const struct dg_omap_chunk *ch, const char *key)
{
	size_t lo = 0, hi = ch->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(ch->e[mid].key, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

void *dg_omap_find(const struct dg_omap *m, const char *key)
{
	if (m->nchunks == 0)
		return NULL;
	const struct dg_omap_chunk *ch = m->chunks[chunk_for(m, key)];
	size_t i = pos_in(ch, key);
	return i < ch->n && strcmp(ch->e[i].key, key) == 0 ? ch->e[i].value : NULL;
}

/* Makes room for one more chunk pointer at position at. */
static int chunks_insert(struct dg_omap *m, size_t at, struct dg_omap_chunk *ch)
{
	if (m->nchunks == m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 4;
		struct dg_omap_chunk **nv = realloc(m->chunks, cap * sizeof(*nv));
		if (!nv)
			return DG_ENOMEM;
		m->chunks = nv;
		m->cap = cap;
	}
	memmove(&m->chunks[at + 1], &m->chunks[at], (m->nchunks - at) * sizeof(*m->chunks));
	m->chunks[at] = ch;
	m->nchunks++;
	return 0;
}

static void chunks_remove(struct dg_omap *m, size_t at)
{
	free(m->chunks[at]);
	memmove(&m->chunks[at], &m->chunks[at + 1], (m->nchunks - at - 1) * sizeof(*m->chunks));
	m->nchunks--;
}

int dg_omap_put(struct dg_omap *m, const char *key, void *value, void **old)
{
	if (old)
		*old = NULL;
	if (m->nchunks == 0) {
		struct dg_omap_chunk *first = calloc(1, sizeof(*first));
		if (!first || chunks_insert(m, 0, first) != 0) {
			free(first);
			return DG_ENOMEM;
		}
	}
	size_t c = chunk_for(m, key);
	struct dg_omap_chunk *ch = m->chunks[c];
	size_t i = pos_in(ch, key);
	if (i < ch->n && strcmp(ch->e[i].key, key) == 0) {
		if (old)
			*old = ch->e[i].value;
		ch->e[i].value = value;
		return 0;
	}
	char *k = strdup(key);
	if (!k)
		return DG_ENOMEM;
	if (ch->n == OMAP_CHUNK) {
		/* full: the upper half moves to a new chunk after this one */
		struct dg_omap_chunk *right = malloc(sizeof(*right));
		if (!right || chunks_insert(m, c + 1, right) != 0) {
			free(right);
			free(k);
			return DG_ENOMEM;
		}
		size_t half = OMAP_CHUNK / 2;
		right->n = OMAP_CHUNK - half;
		memcpy(right->e, &ch->e[half], right->n * sizeof(ch->e[0]));
		ch->n = half;
		if (i > half) {
			ch = right;
			i -= half;
		}
	}
	memmove(&ch->e[i + 1], &ch->e[i], (ch->n - i) * sizeof(ch->e[0]));
	ch->e[i].key = k;
	ch->e[i].value = value;
	ch->n++;
	m->n++;
	return 0;
}

void *dg_omap_del(struct dg_omap *m, const char *key)
{
	if (m->nchunks == 0)
		return NULL;
	size_t c = chunk_for(m, key);
	struct dg_omap_chunk *ch = m->chunks[c];
	size_t i = pos_in(ch, key);
	if (i >= ch->n || strcmp(ch->e[i].key, key) != 0)
		return NULL;
	void *value = ch->e[i].value;
	free(ch->e[i].key);
	memmove(&ch->e[i], &ch->e[i + 1], (ch->n - i - 1) * sizeof(ch->e[0]));
	ch->n--;
	m->n--;
	if (ch->n == 0) {
		chunks_remove(m, c);
	} else if (c + 1 < m->nchunks && ch->n + m->chunks[c + 1]->n <= OMAP_CHUNK / 2) {
		/* keep chunks from thinning out after many deletes: merge small neighbours */
		struct dg_omap_chunk *next = m->chunks[c + 1];
		memcpy(&ch->e[ch->n], next->e, next->n * sizeof(ch->e[0]));
		ch->n += next->n;
		chunks_remove(m, c + 1);
	}
	return value;
}

size_t dg_omap_size(const struct dg_omap *m)
{
	return m->n;
}

/* An iterator past the end of its chunk moves to the next chunk's start. */
static void it_settle(struct dg_omap_it *it)
{
	while (it->c < it->m->nchunks && it->i >= it->m->chunks[it->c]->n) {
		it->c++;
		it->i = 0;
	}
}

void dg_omap_first(const struct dg_omap *m, struct dg_omap_it *it)
{
	it->m = m;
	it->c = 0;
	it->i = 0;
	it_settle(it);
}

void dg_omap_seek(const struct dg_omap *m, const char *key, struct dg_omap_it *it)
{
	it->m = m;
	it->c = 0;
	it->i = 0;
	if (m->nchunks) {
		it->c = chunk_for(m, key);
		it->i = pos_in(m->chunks[it->c], key);
	}
	it_settle(it);
}

bool dg_omap_valid(const struct dg_omap_it *it)
{
	return it->c < it->m->nchunks;
}

const char *dg_omap_key(const struct dg_omap_it *it)
{
	return it->m->chunks[it->c]->e[it->i].key;
}

void *dg_omap_value(const struct dg_omap_it *it)
{
	return it->m->chunks[it->c]->e[it->i].value;
}

void dg_omap_next(struct dg_omap_it *it)
{
	it->i++;
	it_settle(it);
}

bool dg_omap_in_prefix(const struct dg_omap_it *it, const char *prefix)
{
	return dg_omap_valid(it) && strncmp(dg_omap_key(it), prefix, strlen(prefix)) == 0;
}
