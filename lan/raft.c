/* The loop thread: libraft with its uv backend, the FSM that applies commands to the catalog, and
 * the queue through which other threads propose writes.
 *
 * Threads: everything raft- or uv-related runs on the loop thread. Other threads push write_req
 * onto the queue under `mu` and wake the loop with uv_async_send. Leader state is published under
 * `mu` (strings) and atomically (is_leader) for HTTP threads. */
#include "lan/internal.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAN "lan"

/* libraft 0.15 takes an open segment whose entry sizes are not multiples of 8 for corrupt at the
 * next start and truncates it, losing committed entries: pad every entry to 8 bytes. JSON ignores
 * the trailing spaces. */
static int encode_entry(json_t *cmd, struct raft_buffer *buf)
{
	char *text = json_dumps(cmd, JSON_COMPACT);
	if (!text)
		return DG_ENOMEM;
	size_t n = strlen(text);
	size_t padded = (n + 7) & ~(size_t)7;
	char *base = raft_malloc(padded);
	if (!base) {
		free(text);
		return DG_ENOMEM;
	}
	memcpy(base, text, n);
	memset(base + n, ' ', padded - n);
	free(text);
	buf->base = base;
	buf->len = padded;
	return 0;
}

/* ---- FSM ---- */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
	dg_lan *l = fsm->data;
	json_t *res = NULL;
	size_t n;
	if (l->unclaimed_result) {
		/* an entry replayed at start, or proposed by an earlier leader: nobody waits */
		json_decref(l->unclaimed_result);
		l->unclaimed_result = NULL;
	}
	uint64_t index = raft_last_applied(&l->raft) + 1;
	dg_cat_wrlock(l->cat);
	int rv = dg_cat_apply(l->cat, index, buf->base, buf->len, &res);
	struct dg_cat_change *ch = dg_cat_take_changes(l->cat, &n);
	dg_cat_unlock(l->cat);
	pthread_mutex_lock(&l->mu);
	l->stats.applied++;
	if (rv != 0)
		l->stats.apply_errors++;
	pthread_mutex_unlock(&l->mu);
	if (n > 0) {
		if (l->hook)
			l->hook(l->hook_arg, ch, n);
		dg__agent_on_changes(l, ch, n);
	}
	dg_cat_changes_free(ch, n);
	l->unclaimed_result = res;
	*result = res;
	return 0; /* a command that fails validation is still applied: as a no-op */
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	dg_lan *l = fsm->data;
	size_t len;
	char *text = dg_cat_snapshot(l->cat, &len);
	if (!text)
		return RAFT_NOMEM;
	struct raft_buffer *b = raft_malloc(sizeof(*b));
	char *base = b ? raft_malloc(len ? len : 1) : NULL;
	if (!b || !base) {
		raft_free(b);
		free(text);
		return RAFT_NOMEM;
	}
	memcpy(base, text, len);
	free(text);
	b->base = base;
	b->len = len;
	*bufs = b;
	*n_bufs = 1;
	pthread_mutex_lock(&l->mu);
	l->stats.snapshots++;
	pthread_mutex_unlock(&l->mu);
	return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
				 unsigned *n_bufs)
{
	for (unsigned i = 0; i < *n_bufs; i++)
		raft_free((*bufs)[i].base);
	raft_free(*bufs);
	*bufs = NULL;
	*n_bufs = 0;
	return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
	dg_lan *l = fsm->data;
	if (dg_cat_restore(l->cat, buf->base, buf->len) != 0)
		return RAFT_MALFORMED;
	raft_free(buf->base); /* the FSM owns the buffer once restore succeeds */
	buf->base = NULL;
	return 0;
}

/* ---- writes ---- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
	struct write_req *w = req->data;
	dg_lan *l = w->lan;
	json_t *res = NULL;
	if (status == 0) {
		res = result;
		if (res && res == l->unclaimed_result)
			l->unclaimed_result = NULL;
	}
	if (w->cb)
		w->cb(w->arg, status == 0 ? 0 : DG_ENOLEADER, res);
	else
		json_decref(res);
	json_decref(w->cmd);
	free(w);
}

static void submit(dg_lan *l, struct write_req *w)
{
	struct raft_buffer buf;
	int rv;
	if (raft_state(&l->raft) != RAFT_LEADER) {
		rv = DG_ENOLEADER;
		goto fail;
	}
	dg__agent_before_write(l, w->cmd);
	if ((rv = encode_entry(w->cmd, &buf)) != 0)
		goto fail;
	w->apply.data = w;
	if (raft_apply(&l->raft, &w->apply, &buf, 1, apply_cb) != 0) {
		raft_free(buf.base);
		rv = DG_ENOLEADER;
		goto fail;
	}
	return;
fail:
	pthread_mutex_lock(&l->mu);
	l->stats.writes_rejected++;
	pthread_mutex_unlock(&l->mu);
	if (w->cb)
		w->cb(w->arg, rv, NULL);
	json_decref(w->cmd);
	free(w);
}

int dg_lan_write(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg)
{
	struct write_req *w = calloc(1, sizeof(*w));
	if (!w) {
		json_decref(cmd);
		return DG_ENOMEM;
	}
	json_object_set_new(cmd, "Now", json_integer(dg_wall_ns()));
	w->lan = l;
	w->cmd = cmd;
	w->cb = cb;
	w->arg = arg;
	pthread_mutex_lock(&l->mu);
	if (l->stopping) {
		pthread_mutex_unlock(&l->mu);
		json_decref(cmd);
		free(w);
		return DG_ESHUTDOWN;
	}
	if (l->q_tail)
		l->q_tail->next = w;
	else
		l->q_head = w;
	l->q_tail = w;
	pthread_mutex_unlock(&l->mu);
	uv_async_send(&l->wake);
	return 0;
}

void dg__lan_write_local(dg_lan *l, json_t *cmd)
{
	struct write_req *w = calloc(1, sizeof(*w));
	if (!w) {
		json_decref(cmd);
		return;
	}
	json_object_set_new(cmd, "Now", json_integer(dg_wall_ns()));
	w->lan = l;
	w->cmd = cmd;
	submit(l, w);
}

/* ---- loop ---- */

static void close_handles(dg_lan *l)
{
	uv_close((uv_handle_t *)&l->wake, NULL);
	uv_close((uv_handle_t *)&l->tick, NULL);
}

static void on_raft_closed(struct raft *r)
{
	dg_lan *l = r->data;
	raft_uv_close(&l->io);
	raft_uv_tcp_close(&l->transport);
	close_handles(l);
}

static void begin_stop(dg_lan *l)
{
	struct write_req *w;
	pthread_mutex_lock(&l->mu);
	w = l->q_head;
	l->q_head = l->q_tail = NULL;
	pthread_mutex_unlock(&l->mu);
	while (w) {
		struct write_req *next = w->next;
		if (w->cb)
			w->cb(w->arg, DG_ESHUTDOWN, NULL);
		json_decref(w->cmd);
		free(w);
		w = next;
	}
	uv_timer_stop(&l->tick);
	dg__agent_free(l);
	if (l->raft_started)
		raft_close(&l->raft, on_raft_closed);
	else
		close_handles(l);
}

static void wake_cb(uv_async_t *h)
{
	dg_lan *l = h->data;
	bool stopping;
	struct write_req *w;
	pthread_mutex_lock(&l->mu);
	stopping = l->stopping;
	w = stopping ? NULL : l->q_head;
	if (!stopping)
		l->q_head = l->q_tail = NULL;
	pthread_mutex_unlock(&l->mu);
	if (stopping) {
		if (!uv_is_closing((uv_handle_t *)&l->wake))
			begin_stop(l);
		return;
	}
	while (w) {
		struct write_req *next = w->next;
		w->next = NULL;
		submit(l, w);
		w = next;
	}
}

static void tick_cb(uv_timer_t *t)
{
	dg_lan *l = t->data;
	raft_id id;
	const char *addr = NULL;
	bool leader = raft_state(&l->raft) == RAFT_LEADER;
	raft_leader(&l->raft, &id, &addr);
	pthread_mutex_lock(&l->mu);
	l->leader_known = addr != NULL;
	snprintf(l->leader, sizeof(l->leader), "%s", addr ? addr : "");
	if (addr)
		l->last_contact_ms = 0;
	pthread_mutex_unlock(&l->mu);
	__atomic_store_n(&l->is_leader, leader, __ATOMIC_RELEASE);
	if (leader && !l->was_leader) {
		DG_LOGI(LAN, "cluster leadership acquired at index %llu",
			(unsigned long long)raft_last_applied(&l->raft));
		dg__agent_on_leader(l);
	} else if (!leader && l->was_leader) {
		DG_LOGW(LAN, "cluster leadership lost");
	}
	l->was_leader = leader;
	dg__agent_tick(l);
}

static int make_dir(const char *path)
{
	char tmp[PATH_MAX];
	int n = snprintf(tmp, sizeof(tmp), "%s", path);
	if (n < 0 || (size_t)n >= sizeof(tmp))
		return DG_EINVAL;
	for (char *p = tmp + 1; *p; p++) {
		if (*p == '/') {
			*p = 0;
			if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
				return DG_EIO;
			*p = '/';
		}
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return DG_EIO;
	return 0;
}

static int start_raft(dg_lan *l)
{
	char addr[160];
	int rv;
	int n = snprintf(addr, sizeof(addr), "%s:%d", l->cfg.bind_addr, l->cfg.server_port);
	if (n < 0 || (size_t)n >= sizeof(addr))
		return DG_EINVAL;
	if (l->cfg.dev || !l->cfg.data_dir) {
		snprintf(l->dir, sizeof(l->dir), "/tmp/dcgate-dev-XXXXXX");
		if (!mkdtemp(l->dir)) {
			snprintf(l->start_msg, sizeof(l->start_msg), "cannot create temp dir: %s",
				 strerror(errno));
			return DG_EIO;
		}
		l->tmpdir = true;
	} else {
		n = snprintf(l->dir, sizeof(l->dir), "%s/raft", l->cfg.data_dir);
		if (n < 0 || (size_t)n >= sizeof(l->dir) || make_dir(l->dir) != 0) {
			snprintf(l->start_msg, sizeof(l->start_msg),
				 "cannot create data dir %s: %s", l->cfg.data_dir, strerror(errno));
			return DG_EIO;
		}
	}
	if ((rv = raft_uv_tcp_init(&l->transport, &l->loop)) != 0)
		goto raft_fail;
	if ((rv = raft_uv_init(&l->io, &l->loop, l->dir, &l->transport)) != 0)
		goto raft_fail;
	l->fsm.version = 2;
	l->fsm.data = l;
	l->fsm.apply = fsm_apply;
	l->fsm.snapshot = fsm_snapshot;
	l->fsm.snapshot_finalize = fsm_snapshot_finalize;
	l->fsm.restore = fsm_restore;
	if ((rv = raft_init(&l->raft, &l->io, &l->fsm, 1, addr)) != 0)
		goto raft_fail;
	l->raft.data = l;
	struct raft_configuration conf;
	raft_configuration_init(&conf);
	raft_configuration_add(&conf, 1, addr, RAFT_VOTER);
	rv = raft_bootstrap(&l->raft, &conf);
	raft_configuration_close(&conf);
	if (rv != 0 && rv != RAFT_CANTBOOTSTRAP)
		goto raft_fail;
	raft_set_snapshot_threshold(&l->raft, l->cfg.snapshot_threshold);
	raft_set_snapshot_trailing(&l->raft, l->cfg.snapshot_threshold / 4 + 1);
	raft_set_election_timeout(&l->raft, 300);
	raft_set_heartbeat_timeout(&l->raft, 100);
	if ((rv = raft_start(&l->raft)) != 0)
		goto raft_fail;
	l->raft_started = true;
	return 0;
raft_fail:
	snprintf(l->start_msg, sizeof(l->start_msg), "raft on %s (%s): %s", addr, l->dir,
		 l->raft.errmsg[0] ? l->raft.errmsg : raft_strerror(rv));
	return DG_EIO;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void *loop_main(void *arg)
{
	dg_lan *l = arg;
	int rv;
	uv_loop_init(&l->loop);
	uv_async_init(&l->loop, &l->wake, wake_cb);
	l->wake.data = l;
	uv_timer_init(&l->loop, &l->tick);
	l->tick.data = l;
	if ((rv = dg__agent_new(l)) != 0) {
		snprintf(l->start_msg, sizeof(l->start_msg), "agent: %s", dg_strerror(rv));
	} else {
		rv = start_raft(l);
	}
	l->start_rv = rv;
	if (rv == 0)
		uv_timer_start(&l->tick, tick_cb, 20, 100);
	else {
		pthread_mutex_lock(&l->mu);
		l->stopping = true;
		pthread_mutex_unlock(&l->mu);
		begin_stop(l);
	}
	sem_post(&l->started);
	uv_run(&l->loop, UV_RUN_DEFAULT);
	uv_loop_close(&l->loop);
	json_decref(l->unclaimed_result);
	l->unclaimed_result = NULL;
	if (l->tmpdir)
		nftw(l->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	return NULL;
}

int dg_lan_start(const struct dg_lan_config *cfg, dg_catalog *cat, dg_lan **out, char *msg,
		 size_t len)
{
	dg_lan *l = calloc(1, sizeof(*l));
	char idbuf[37];
	if (!l)
		return DG_ENOMEM;
	/* followers die on a write to a closed peer socket unless SIGPIPE is ignored */
	signal(SIGPIPE, SIG_IGN);
	l->cfg = *cfg;
	l->cfg.node = dg_strdup(cfg->node);
	l->cfg.dc = dg_strdup(cfg->dc);
	l->cfg.bind_addr = dg_strdup(cfg->bind_addr);
	l->cfg.advertise = dg_strdup(cfg->advertise ? cfg->advertise : cfg->bind_addr);
	l->cfg.data_dir = dg_strdup(cfg->data_dir);
	l->cfg.version = dg_strdup(cfg->version ? cfg->version : "");
	if (!cfg->node_id)
		dg_uuid_new(idbuf);
	l->node_id = strdup(cfg->node_id ? cfg->node_id : idbuf);
	l->cfg.node_id = l->node_id;
	l->address = strdup(l->cfg.advertise);
	if (!l->cfg.snapshot_threshold)
		l->cfg.snapshot_threshold = 16384;
	l->cat = cat;
	pthread_mutex_init(&l->mu, NULL);
	sem_init(&l->started, 0, 0);
	if (pthread_create(&l->thread, NULL, loop_main, l) != 0) {
		snprintf(msg, len, "cannot start the loop thread");
		dg_lan_free(l);
		return DG_ENOMEM;
	}
	sem_wait(&l->started);
	if (l->start_rv != 0) {
		snprintf(msg, len, "%s", l->start_msg);
		int rv = l->start_rv;
		pthread_join(l->thread, NULL);
		l->thread = 0;
		dg_lan_free(l);
		return rv;
	}
	*out = l;
	return 0;
}

void dg_lan_request_stop(dg_lan *l)
{
	pthread_mutex_lock(&l->mu);
	l->stopping = true;
	pthread_mutex_unlock(&l->mu);
	uv_async_send(&l->wake);
}

void dg_lan_free(dg_lan *l)
{
	if (!l)
		return;
	if (l->thread) {
		dg_lan_request_stop(l);
		pthread_join(l->thread, NULL);
	}
	sem_destroy(&l->started);
	pthread_mutex_destroy(&l->mu);
	free((char *)l->cfg.node);
	free((char *)l->cfg.dc);
	free((char *)l->cfg.bind_addr);
	free((char *)l->cfg.advertise);
	free((char *)l->cfg.data_dir);
	free((char *)l->cfg.version);
	free(l->node_id);
	free(l->address);
	free(l);
}

bool dg_lan_is_leader(dg_lan *l)
{
	return __atomic_load_n(&l->is_leader, __ATOMIC_ACQUIRE);
}

void dg_lan_leader(dg_lan *l, char *buf, size_t len)
{
	pthread_mutex_lock(&l->mu);
	snprintf(buf, len, "%s", l->leader);
	pthread_mutex_unlock(&l->mu);
}

uint64_t dg_lan_last_contact_ms(dg_lan *l)
{
	pthread_mutex_lock(&l->mu);
	uint64_t v = l->last_contact_ms;
	pthread_mutex_unlock(&l->mu);
	return v;
}

const char *dg_lan_node(dg_lan *l)
{
	return l->cfg.node;
}

const char *dg_lan_node_id(dg_lan *l)
{
	return l->node_id;
}

const char *dg_lan_address(dg_lan *l)
{
	return l->address;
}

const struct dg_lan_config *dg_lan_config(dg_lan *l)
{
	return &l->cfg;
}

void dg_lan_set_change_hook(dg_lan *l, dg_lan_change_hook hook, void *arg)
{
	l->hook = hook;
	l->hook_arg = arg;
}

void dg_lan_stats(dg_lan *l, struct dg_lan_stats *out)
{
	pthread_mutex_lock(&l->mu);
	*out = l->stats;
	pthread_mutex_unlock(&l->mu);
}
