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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LAN "lan"

/* libraft waits a random time between this and twice this for a leader before it stands for
 * election: loopback and LAN round trips are well under a millisecond, and a failed leader is
 * replaced within about two of these. */
#define RAFT_ELECTION_MS 500

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

static void read_waiters_check(dg_lan *l, uint64_t applied, bool cancel);
static void answer_write(void *arg, int status, json_t *result, uint64_t index);

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
	if (l->read_waiters)
		read_waiters_check(l, index, false);
	return 0; /* a command that fails validation is still applied: as a no-op */
}

/* Raft snapshots are asynchronous (libraft's fsm version 3): fsm_snapshot, on the loop, only
 * captures the state (dg_cat_snapshot_begin: the small tables as text, the KV entries pinned);
 * fsm_snapshot_async writes the text on libuv's thread pool while the loop goes on applying;
 * fsm_snapshot_finalize, back on the loop, frees it and lets the entries go. Written on the loop,
 * a store of 400,000 keys stalled the leader for most of a second, past the election timeout: a
 * new election in the middle of a write load (bench/raft.sh via a follower at c64). */
static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	dg_lan *l = fsm->data;
	/* a snapshot restore half gathered is not in the state: no raft snapshot until it ends,
	 * so that one taken now cannot leave out parts that a server installing it would miss
	 * (libraft takes RAFT_BUSY as "try again later") */
	if (dg_cat_restore_staged(l->cat, NULL) || l->frozen)
		return RAFT_BUSY;
	struct raft_buffer *b = raft_malloc(sizeof(*b));
	if (!b)
		return RAFT_NOMEM;
	if (!(l->frozen = dg_cat_snapshot_begin(l->cat))) {
		raft_free(b);
		return RAFT_NOMEM;
	}
	b->base = NULL; /* fsm_snapshot_async fills it */
	b->len = 0;
	*bufs = b;
	*n_bufs = 1;
	pthread_mutex_lock(&l->mu);
	l->stats.snapshots++;
	pthread_mutex_unlock(&l->mu);
	return 0;
}

static int fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[], unsigned *n_bufs)
{
	dg_lan *l = fsm->data;
	size_t len;
	char *text = dg_cat_snapshot_text(l->frozen, &len);
	if (!text)
		return RAFT_NOMEM;
	/* handed over without a copy: libraft's default allocator is malloc, and
	 * fsm_snapshot_finalize frees it */
	(*bufs)[0].base = text;
	(*bufs)[0].len = len;
	(void)n_bufs;
	return 0;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
				 unsigned *n_bufs)
{
	dg_lan *l = fsm->data;
	for (unsigned i = 0; *bufs && i < *n_bufs; i++)
		raft_free((*bufs)[i].base);
	raft_free(*bufs);
	*bufs = NULL;
	*n_bufs = 0;
	if (l->frozen) {
		dg_cat_snapshot_end(l->cat, l->frozen);
		l->frozen = NULL;
	}
	return 0;
}

/* io->async_work for libraft's asynchronous snapshots: Debian's libraft 0.15 knows fsm version
 * 3, but its raft_uv io is version 1, without async_work; this gives it one: req->work on
 * libuv's thread pool, req's callback back on the loop. */
struct async_work {
	uv_work_t work;
	struct raft_io_async_work *req;
	raft_io_async_work_cb cb;
	int status;
};

static void async_work_run(uv_work_t *w)
{
	struct async_work *a = w->data;
	a->status = a->req->work(a->req);
}

static void async_work_done(uv_work_t *w, int status)
{
	struct async_work *a = w->data;
	int rv = status == UV_ECANCELED ? RAFT_CANCELED : a->status;
	raft_io_async_work_cb cb = a->cb;
	struct raft_io_async_work *req = a->req;
	free(a);
	cb(req, rv);
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req,
			 raft_io_async_work_cb cb)
{
	dg_lan *l = (dg_lan *)((char *)io - offsetof(dg_lan, io)); /* l->io is ours */
	struct async_work *a = calloc(1, sizeof(*a));
	if (!a)
		return RAFT_NOMEM;
	a->req = req;
	a->cb = cb;
	a->work.data = a;
	if (uv_queue_work(&l->loop, &a->work, async_work_run, async_work_done) != 0) {
		free(a);
		return RAFT_IOERR;
	}
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

static bool answer_forwarded(struct write_req *w, int status, json_t *result, uint64_t index);

/* A write the leader applied (raft status 0) or lost, answered and freed; res is given. */
static void write_applied(struct write_req *w, int status, json_t *res, uint64_t index)
{
	int st = status == 0 ? 0 : DG_ENOLEADER;
	if (answer_forwarded(w, st, res, index))
		;
	else if (w->cb)
		w->cb(w->arg, st, res);
	else
		json_decref(res);
	json_decref(w->cmd);
	free(w);
}

/* The FSM's result of the entry just applied, taken from l->unclaimed_result. */
static json_t *claim_result(dg_lan *l, int status, void *result)
{
	if (status != 0)
		return NULL;
	if (result && result == l->unclaimed_result)
		l->unclaimed_result = NULL;
	return result;
}

/* Progress of the leader's raft_apply calls, for the stall warning in tick_cb. Loop thread. */
static void applies_started(dg_lan *l)
{
	if (l->applies_out++ == 0)
		l->applies_progress_ms = dg_now_ms();
}

static void applies_done(dg_lan *l)
{
	l->applies_out--;
	l->applies_progress_ms = dg_now_ms();
	l->applies_stall_told = false;
}

/* A write proposed and neither committed nor failed for this long is logged with raft's state:
 * every write path answers within DG_LEADER_HOLD_MS otherwise, so this is a stall to explain. */
#define APPLY_STALL_MS 10000

static void applies_check(dg_lan *l, uint64_t now)
{
	if (l->applies_out == 0 || l->applies_stall_told || now < l->applies_progress_ms + APPLY_STALL_MS)
		return;
	l->applies_stall_told = true;
	DG_LOGW(LAN,
		"%zu writes proposed to raft, none committed for %llu ms: state %d, term %llu, last "
		"index %llu, commit index %llu, last applied %llu, %u servers",
		l->applies_out, (unsigned long long)(now - l->applies_progress_ms),
		(int)raft_state(&l->raft), (unsigned long long)l->raft.current_term,
		(unsigned long long)raft_last_index(&l->raft), (unsigned long long)l->raft.commit_index,
		(unsigned long long)raft_last_applied(&l->raft), l->raft.configuration.n);
}

static void apply_cb(struct raft_apply *req, int status, void *result)
{
	struct write_req *w = req->data;
	applies_done(w->lan);
	write_applied(w, status, claim_result(w->lan, status, result), w->apply.index);
}

static void write_fail(dg_lan *l, struct write_req *w, int rv)
{
	pthread_mutex_lock(&l->mu);
	l->stats.writes_rejected++;
	pthread_mutex_unlock(&l->mu);
	if (answer_forwarded(w, rv, NULL, 0))
		;
	else if (w->cb)
		w->cb(w->arg, rv, NULL);
	json_decref(w->cmd);
	free(w);
}

static void hold(dg_lan *l, struct write_req *w);
static void write_done(struct write_req *w);
static void batch_flush(dg_lan *l);
static void apply_alone(dg_lan *l, struct write_req *w);

struct write_batch {
	struct raft_apply apply;
	dg_lan *lan;
	size_t n;
	struct write_req *w[];
};
static int wait_applied(dg_lan *l, struct write_req *w);

/* A forwarded write's answer, back on the loop thread. DG_EBUSY from the leader means it was not
 * the leader and proposed nothing: the write is held and sent again to the next leader. */
static void forward_answer(dg_lan *l, void *arg, bool cancelled)
{
	struct write_req *w = arg;
	if (cancelled) {
		json_decref(w->result);
		w->result = NULL;
		w->status = DG_ESHUTDOWN;
	}
	if (w->status == DG_EBUSY && !cancelled) {
		json_decref(w->result);
		w->result = NULL;
		hold(l, w);
		return;
	}
	/* read-your-writes on this server too: answer once it has applied the write itself */
	if (!cancelled && w->status == 0 && l->raft_started && !w->reply_to && w->wait_local &&
	    w->applied_index > raft_last_applied(&l->raft) && wait_applied(l, w) == 0)
		return;
	write_done(w);
}

static void write_done(struct write_req *w)
{
	if (answer_forwarded(w, w->status, w->result, w->applied_index))
		;
	else if (w->cb)
		w->cb(w->arg, w->status, w->result);
	else
		json_decref(w->result);
	json_decref(w->cmd);
	free(w);
}

/* The leader's answer to one forwarded write ({"Status","Result","Index"}: alone, or one slot
 * of a batch's answer) into w, or err when the call itself failed (nng's thread). */
static void take_answer(struct write_req *w, int err, json_t *one)
{
	json_t *st = json_object_get(one, "Status");
	json_t *res = json_object_get(one, "Result");
	w->status = err != 0 ? err : json_is_integer(st) ? (int)json_integer_value(st) : DG_EIO;
	w->result = NULL;
	if (err == 0 && json_is_integer(st)) {
		w->applied_index = (uint64_t)json_integer_value(json_object_get(one, "Index"));
		if (res && !json_is_null(res))
			w->result = json_incref(res);
	}
}

/* A forwarded write whose answer came after the loop ended: answered here (write callbacks are
 * safe on any thread) and freed. */
static void answer_gone(struct write_req *w)
{
	if (w->cb)
		w->cb(w->arg, DG_ESHUTDOWN, NULL);
	json_decref(w->result);
	json_decref(w->cmd);
	free(w);
}

static void forward_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct write_req *w = arg;
	int status; /* the answer's own Status: take_answer reads it with the rest */
	json_t *ans = err == 0 ? dg__rpc_answer_json(buf, len, &status) : NULL;
	take_answer(w, err, ans);
	json_decref(ans);
	if (dg__lan_post(w->lan, forward_answer, w) != 0)
		answer_gone(w);
}

/* ---- a follower's writes for the leader ----
 * The writes of one loop turn go to the leader's 8301 together, as one DG_RPC_WRITE_BATCH (one
 * alone as DG_RPC_WRITE): under load this takes one request and one answer through nng for many
 * writes instead of one each (via a follower at concurrency 64, 5,700 puts/s were bound by
 * them). The leader proposes each as it would one forwarded alone and answers each in its slot;
 * each answer is then taken as forward_done takes one (a DG_EBUSY is held and sent again). */

struct fwd_batch {
	dg_lan *lan;
	size_t n;
	struct write_req *w[];
};

static void fwd_batch_answer(dg_lan *l, void *arg, bool cancelled)
{
	struct fwd_batch *b = arg;
	for (size_t i = 0; i < b->n; i++)
		forward_answer(l, b->w[i], cancelled);
	free(b);
}

static void fwd_batch_done(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct fwd_batch *b = arg;
	json_t *ans = NULL, *results = NULL;
	if (err == 0) {
		ans = dg__rpc_answer_json(buf, len, &err);
		results = json_object_get(ans, "Results");
		if (err == 0 && (!json_is_array(results) || json_array_size(results) != b->n))
			err = DG_EIO;
	}
	for (size_t i = 0; i < b->n; i++)
		take_answer(b->w[i], err, err == 0 ? json_array_get(results, i) : NULL);
	json_decref(ans);
	if (dg__lan_post(b->lan, fwd_batch_answer, b) != 0) {
		for (size_t i = 0; i < b->n; i++)
			answer_gone(b->w[i]);
		free(b);
	}
}

/* Sends what fwd_add gathered (loop thread: the check phase, or before a full batch grows). */
static void fwd_flush(dg_lan *l)
{
	size_t n = l->nfwd;
	if (n == 0)
		return;
	l->nfwd = 0;
	l->fwd_bytes = 0;
	struct dg_buf b;
	dg_buf_init(&b);
	uint8_t kind = n == 1 ? DG_RPC_WRITE : DG_RPC_WRITE_BATCH;
	int rv = dg_buf_append(&b, &kind, 1);
	for (size_t i = 0; i < n; i++) {
		if (rv == 0 && n > 1)
			rv = dg_buf_append(&b, i == 0 ? "[" : ",", 1);
		if (rv == 0)
			rv = dg_buf_append(&b, l->fwd_text[i], strlen(l->fwd_text[i]));
		free(l->fwd_text[i]);
	}
	if (rv == 0 && n > 1)
		rv = dg_buf_append(&b, "]", 1);
	struct fwd_batch *fb = NULL;
	if (rv == 0 && !l->leader_rpc[0])
		rv = DG_EOF; /* this server has just been elected: each is held, then proposed here */
	if (rv == 0 && n == 1) {
		rv = dg__rpc_call_leader(l, l->leader_rpc, b.data, b.len, DG_RPC_WRITE_TIMEOUT_MS,
					 forward_done, l->fwd[0]);
	} else if (rv == 0) {
		fb = malloc(sizeof(*fb) + n * sizeof(fb->w[0]));
		if (!fb) {
			rv = DG_ENOMEM;
		} else {
			fb->lan = l;
			fb->n = n;
			memcpy(fb->w, l->fwd, n * sizeof(fb->w[0]));
			rv = dg__rpc_call_leader(l, l->leader_rpc, b.data, b.len,
						 DG_RPC_WRITE_TIMEOUT_MS, fwd_batch_done, fb);
			if (rv == 0) {
				pthread_mutex_lock(&l->mu);
				l->stats.forward_batches++;
				l->stats.forward_batched += n;
				pthread_mutex_unlock(&l->mu);
			}
		}
	}
	dg_buf_fini(&b);
	if (rv == 0)
		return;
	free(fb);
	for (size_t i = 0; i < n; i++) {
		if (rv == DG_EOF) /* the leader's link went (it died, most likely): not sent, wait */
			hold(l, l->fwd[i]);
		else
			write_fail(l, l->fwd[i], rv);
	}
}

/* Gathers a write for the leader, encoded now (so that a batch stays under
 * DG_RPC_BATCH_BYTES); sent by fwd_flush at the end of this loop turn. */
static void fwd_add(dg_lan *l, struct write_req *w)
{
	char *text = json_dumps(w->cmd, JSON_COMPACT);
	if (!text) {
		write_fail(l, w, DG_ENOMEM);
		return;
	}
	size_t len = strlen(text);
	if (l->nfwd == BATCH_MAX || (l->nfwd > 0 && l->fwd_bytes + len > DG_RPC_BATCH_BYTES))
		fwd_flush(l);
	l->fwd[l->nfwd] = w;
	l->fwd_text[l->nfwd++] = text;
	l->fwd_bytes += len + 1;
}

static void hold(dg_lan *l, struct write_req *w)
{
	/* held too long already (it went to a leader that had stepped down): no more */
	if (w->hold_until_ms && dg_now_ms() >= w->hold_until_ms) {
		write_fail(l, w, DG_ENOLEADER);
		return;
	}
	if (!w->hold_until_ms)
		w->hold_until_ms = dg_now_ms() + DG_LEADER_HOLD_MS;
	w->next = NULL;
	if (l->held_tail)
		l->held_tail->next = w;
	else
		l->held = w;
	l->held_tail = w;
}

static void submit(dg_lan *l, struct write_req *w)
{
	if (!w->reply_to && !w->fanin && !w->hold_until_ms)
		dg__agent_before_write(l, w->cmd);
	if (!l->cfg.server) {
		dg__client_apply(l, w);
		return;
	}
	if (!l->raft_started || raft_state(&l->raft) != RAFT_LEADER) {
		if (w->forwarded) {
			/* leadership moved while it travelled: the sender holds and retries */
			write_fail(l, w, DG_EBUSY);
			return;
		}
		if (l->leader_rpc[0])
			fwd_add(l, w);
		else
			hold(l, w);
		return;
	}
	/* a restore part is large: it goes alone, after what was gathered before it */
	const char *op = json_string_value(json_object_get(w->cmd, "Op"));
	if (op && strncmp(op, "restore", 7) == 0) {
		batch_flush(l);
		apply_alone(l, w);
		return;
	}
	if (l->nbatch == BATCH_MAX)
		batch_flush(l);
	l->batch[l->nbatch++] = w;
}

/* One write as its own raft entry (the leader's). */
static void apply_alone(dg_lan *l, struct write_req *w)
{
	struct raft_buffer buf;
	int rv = encode_entry(w->cmd, &buf);
	if (rv != 0) {
		write_fail(l, w, rv);
		return;
	}
	w->apply.data = w;
	if (raft_apply(&l->raft, &w->apply, &buf, 1, apply_cb) != 0) {
		raft_free(buf.base);
		write_fail(l, w, DG_ENOLEADER);
		return;
	}
	applies_started(l);
}

/* The leader's writes gathered in one turn of the loop (HTTP writes, forwarded ones, the
 * agent's) go to raft as one entry, {"Op":"batch","Cmds":[..]}: under load this takes one log
 * append, one message per follower and one fsync for many writes instead of one each. They are
 * applied in order at that entry's index, each answered with its own result. One write alone is
 * sent as it is. Runs from the loop's check phase (after the turn's callbacks) and before
 * anything that must not be overtaken. */
static void batch_apply_cb(struct raft_apply *req, int status, void *result)
{
	struct write_batch *b = req->data;
	applies_done(b->lan);
	json_t *arr = claim_result(b->lan, status, result);
	for (size_t i = 0; i < b->n; i++) {
		json_t *r = json_array_get(arr, i);
		write_applied(b->w[i], status, r && !json_is_null(r) ? json_incref(r) : NULL,
			      b->apply.index);
	}
	json_decref(arr);
	free(b);
}

static void batch_flush(dg_lan *l)
{
	size_t n = l->nbatch;
	struct raft_buffer buf;
	int rv;
	if (n == 0)
		return;
	l->nbatch = 0;
	if (!l->raft_started || raft_state(&l->raft) != RAFT_LEADER) {
		/* the leadership went within the turn: each goes the way of a follower's write */
		for (size_t i = 0; i < n; i++)
			submit(l, l->batch[i]);
		return;
	}
	if (n == 1) {
		apply_alone(l, l->batch[0]);
		return;
	}
	struct write_batch *b = calloc(1, sizeof(*b) + n * sizeof(b->w[0]));
	json_t *cmds = json_array();
	json_t *cmd = NULL;
	rv = DG_ENOMEM;
	if (b && cmds) {
		for (size_t i = 0; i < n; i++)
			json_array_append(cmds, l->batch[i]->cmd);
		cmd = json_pack("{s:s, s:O}", "Op", "batch", "Cmds", cmds);
	}
	json_decref(cmds);
	if (cmd && (rv = encode_entry(cmd, &buf)) == 0) {
		b->lan = l;
		b->n = n;
		memcpy(b->w, l->batch, n * sizeof(b->w[0]));
		b->apply.data = b;
		if (raft_apply(&l->raft, &b->apply, &buf, 1, batch_apply_cb) == 0) {
			applies_started(l);
			json_decref(cmd);
			return;
		}
		raft_free(buf.base);
		rv = DG_ENOLEADER;
	}
	json_decref(cmd);
	free(b);
	for (size_t i = 0; i < n; i++)
		write_fail(l, l->batch[i], rv);
}

static void batch_check_cb(uv_check_t *h)
{
	batch_flush(h->data);
	fwd_flush(h->data);
}

/* Writes held while no leader was known: sent once one is, failed once held too long. */
static void release_held(dg_lan *l, uint64_t now)
{
	struct write_req *w = l->held, *keep = NULL, *keep_tail = NULL;
	bool leader = l->raft_started && raft_state(&l->raft) == RAFT_LEADER;
	l->held = l->held_tail = NULL;
	while (w) {
		struct write_req *next = w->next;
		w->next = NULL;
		if (leader || l->leader_rpc[0]) {
			submit(l, w);
		} else if (now >= w->hold_until_ms) {
			write_fail(l, w, DG_ENOLEADER);
		} else {
			if (keep_tail)
				keep_tail->next = w;
			else
				keep = w;
			keep_tail = w;
		}
		w = next;
	}
	/* submit may have held some again: they go after those kept */
	if (keep) {
		keep_tail->next = l->held;
		l->held = keep;
		if (!l->held_tail)
			l->held_tail = keep_tail;
	}
}

/* ---- requests from other agents on 8301 ---- */

/* The answer to a write another server forwarded: its status, result and the raft index it was
 * applied at, which the sender waits to have applied itself before it answers its client. */

/* The answer to a write another server forwarded: its status, result and the raft index it was
 * applied at, which the sender may wait to have applied itself before it answers its client. */
static void answer_write(void *arg, int status, json_t *result, uint64_t index)
{
	dg__rpc_reply_json(arg, json_pack("{s:i, s:O?, s:I}", "Status", status, "Result", result, "Index",
				   (json_int_t)index));
	json_decref(result);
}

static void serve_raft_change(dg_lan *l, struct rpc_in *in, json_t *req);

/* The writes of one DG_RPC_WRITE_BATCH, answered together once each has its answer. */
struct write_fanin {
	struct rpc_in *in;
	size_t pending;
	json_t *results; /* [{"Status","Result","Index"}..], in the request's order */
};

static void fanin_set(struct write_fanin *f, size_t slot, int status, json_t *result,
		      uint64_t index)
{
	json_array_set_new(f->results, slot,
			   json_pack("{s:i, s:O?, s:I}", "Status", status, "Result", result, "Index",
				     (json_int_t)index));
	json_decref(result);
	if (--f->pending > 0)
		return;
	dg__rpc_reply_json(f->in, json_pack("{s:i, s:o}", "Status", 0, "Results", f->results));
	free(f);
}

/* A write that came from another server, answered there (alone or in its batch's slot);
 * result is consumed. False for a write of this server's own. */
static bool answer_forwarded(struct write_req *w, int status, json_t *result, uint64_t index)
{
	if (w->reply_to)
		answer_write(w->reply_to, status, result, index);
	else if (w->fanin)
		fanin_set(w->fanin, w->fanin_slot, status, result, index);
	else
		return false;
	return true;
}

static void serve_write_batch(dg_lan *l, struct rpc_in *in, json_t *cmds)
{
	size_t n = json_array_size(cmds);
	struct write_fanin *f = calloc(1, sizeof(*f));
	if (!f || !(f->results = json_array())) {
		free(f);
		json_decref(cmds);
		dg__rpc_reply(in, NULL, 0);
		return;
	}
	f->in = in;
	f->pending = n;
	for (size_t i = 0; i < n; i++)
		json_array_append_new(f->results, json_null());
	for (size_t i = 0; i < n; i++) {
		struct write_req *w = calloc(1, sizeof(*w));
		if (!w) {
			fanin_set(f, i, DG_ENOMEM, NULL, 0);
			continue;
		}
		w->lan = l;
		w->cmd = json_incref(json_array_get(cmds, i));
		w->fanin = f;
		w->fanin_slot = i;
		w->forwarded = true; /* a server's: for the leader only */
		submit(l, w);
	}
	json_decref(cmds);
}

/* A batch's commands: 1 to 4 * BATCH_MAX objects (a sender gathers at most BATCH_MAX). */
static bool valid_batch(json_t *cmds)
{
	size_t i, n = json_array_size(cmds);
	json_t *c;
	if (!json_is_array(cmds) || n == 0 || n > 4 * BATCH_MAX)
		return false;
	json_array_foreach(cmds, i, c)
	{
		if (!json_is_object(c))
			return false;
	}
	return true;
}

static void handle_rpc(dg_lan *l, void *arg, bool cancelled)
{
	struct rpc_in *in = arg;
	size_t len;
	const uint8_t *buf = dg__rpc_request(in, &len);
	if (cancelled || len == 0) {
		dg__rpc_reply(in, NULL, 0);
		return;
	}
	if (buf[0] == DG_GOSSIP_MAGIC || buf[0] == DG_GOSSIP_SEALED) {
		dg__members_stream(l, in, buf, len);
		return;
	}
	json_t *req = NULL;
	if ((buf[0] == DG_RPC_WRITE || buf[0] == DG_RPC_WRITE_RELAY || buf[0] == DG_RPC_RAFT ||
	     buf[0] == DG_RPC_WRITE_BATCH) &&
	    l->cfg.server)
		req = json_loadb((const char *)buf + 1, len - 1, JSON_REJECT_DUPLICATES, NULL);
	if (buf[0] == DG_RPC_WRITE_BATCH && valid_batch(req)) {
		serve_write_batch(l, in, req);
		return;
	}
	if (!json_is_object(req)) {
		json_decref(req);
		dg__rpc_reply(in, NULL, 0);
		return;
	}
	if (buf[0] == DG_RPC_RAFT) {
		serve_raft_change(l, in, req);
		return;
	}
	struct write_req *w = calloc(1, sizeof(*w));
	if (!w) {
		json_decref(req);
		answer_write(in, DG_ENOMEM, NULL, 0);
		return;
	}
	w->lan = l;
	w->cmd = req;
	w->reply_to = in;
	/* a server's write is for the leader only; a client agent's may be passed on once */
	w->forwarded = buf[0] == DG_RPC_WRITE;
	submit(l, w);
}

int dg__lan_post(dg_lan *l, void (*fn)(dg_lan *l, void *arg, bool cancelled), void *arg)
{
	struct loop_task *t = calloc(1, sizeof(*t));
	if (!t)
		return DG_ENOMEM;
	t->fn = fn;
	t->arg = arg;
	pthread_mutex_lock(&l->mu);
	if (l->stopping || !l->loop_running) {
		pthread_mutex_unlock(&l->mu);
		free(t);
		return DG_ESHUTDOWN;
	}
	if (l->tasks_tail)
		l->tasks_tail->next = t;
	else
		l->tasks = t;
	l->tasks_tail = t;
	pthread_mutex_unlock(&l->mu);
	uv_async_send(&l->wake);
	return 0;
}

int dg__lan_post_rpc(dg_lan *l, struct rpc_in *in)
{
	return dg__lan_post(l, handle_rpc, in);
}

static void run_tasks(dg_lan *l, bool cancelled)
{
	pthread_mutex_lock(&l->mu);
	struct loop_task *t = l->tasks;
	l->tasks = l->tasks_tail = NULL;
	pthread_mutex_unlock(&l->mu);
	while (t) {
		struct loop_task *next = t->next;
		t->fn(l, t->arg, cancelled);
		free(t);
		t = next;
	}
}

static int lan_write(dg_lan *l, json_t *cmd, bool wait_local, dg_lan_write_cb cb, void *arg);

int dg_lan_write(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg)
{
	return lan_write(l, cmd, false, cb, arg);
}

/* ---- ?consistent: confirming leadership ---- */

struct verify_waiter {
	struct verify_waiter *next;
	dg_lan_done_fn cb;
	void *arg;
};

static void verify_answer(struct verify_waiter *w, int err)
{
	while (w) {
		struct verify_waiter *next = w->next;
		w->cb(w->arg, err, NULL);
		free(w);
		w = next;
	}
}

static void verify_kick(dg_lan *l);

static void verify_cb(struct raft_barrier *req, int status)
{
	dg_lan *l = req->data;
	struct verify_waiter *w = l->verify_now;
	l->verify_now = NULL;
	l->verify_busy = false;
	verify_answer(w, status == 0 ? 0 : DG_ENOLEADER);
	verify_kick(l);
}

/* One barrier for everyone waiting: a quorum committing it proves this server still leads, and
 * every read that asked before it was proposed may then be answered. */
static void verify_kick(dg_lan *l)
{
	if (l->verify_busy || !l->verify_next)
		return;
	l->verify_now = l->verify_next;
	l->verify_next = NULL;
	bool leader = l->raft_started && raft_state(&l->raft) == RAFT_LEADER;
	l->verify_req.data = l;
	if (leader && raft_barrier(&l->raft, &l->verify_req, verify_cb) == 0) {
		l->verify_busy = true;
		return;
	}
	struct verify_waiter *w = l->verify_now;
	l->verify_now = NULL;
	verify_answer(w, DG_ENOLEADER);
}

static void verify_run(dg_lan *l, void *arg, bool cancelled)
{
	struct verify_waiter *w = arg;
	if (cancelled) {
		verify_answer(w, DG_ESHUTDOWN);
		return;
	}
	w->next = l->verify_next;
	l->verify_next = w;
	verify_kick(l);
}

int dg_lan_verify_leader(dg_lan *l, dg_lan_done_fn cb, void *arg)
{
	struct verify_waiter *w = calloc(1, sizeof(*w));
	if (!w)
		return DG_ENOMEM;
	w->cb = cb;
	w->arg = arg;
	int rv = dg__lan_post(l, verify_run, w);
	if (rv != 0)
		free(w);
	return rv;
}

int dg_lan_write_then_read(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg)
{
	return lan_write(l, cmd, true, cb, arg);
}

static int lan_write(dg_lan *l, json_t *cmd, bool wait_local, dg_lan_write_cb cb, void *arg)
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
	w->wait_local = wait_local;
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

void dg__lan_write_loop(dg_lan *l, json_t *cmd, dg_lan_write_cb cb, void *arg)
{
	struct write_req *w = calloc(1, sizeof(*w));
	if (!w) {
		json_decref(cmd);
		if (cb)
			cb(arg, DG_ENOMEM, NULL);
		return;
	}
	json_object_set_new(cmd, "Now", json_integer(dg_wall_ns()));
	w->lan = l;
	w->cmd = cmd;
	w->cb = cb;
	w->arg = arg;
	submit(l, w);
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

/* ---- writes waiting to be applied here ---- */

/* A write forwarded to the leader through an agent endpoint, answered once this server has
 * applied it too (the agent endpoints read this server's copy). */
struct read_waiter {
	uint64_t index;
	struct write_req *w;
	struct read_waiter *next;
};

static int wait_applied(dg_lan *l, struct write_req *w)
{
	struct read_waiter *rw = calloc(1, sizeof(*rw));
	if (!rw)
		return DG_ENOMEM;
	rw->index = w->applied_index;
	rw->w = w;
	rw->next = l->read_waiters;
	l->read_waiters = rw;
	return 0;
}

static void read_waiters_check(dg_lan *l, uint64_t applied, bool cancel)
{
	struct read_waiter **pp = &l->read_waiters;
	while (*pp) {
		struct read_waiter *w = *pp;
		if (!cancel && w->index > applied) {
			pp = &w->next;
			continue;
		}
		*pp = w->next;
		write_done(w->w); /* applied on the leader: it succeeded, whatever happens here */
		free(w);
	}
}

/* ---- loop ---- */

static void close_handles(dg_lan *l)
{
	uv_close((uv_handle_t *)&l->wake, NULL);
	uv_close((uv_handle_t *)&l->tick, NULL);
	uv_close((uv_handle_t *)&l->batch_check, NULL);
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
	w = l->held;
	l->held = l->held_tail = NULL;
	while (w) {
		struct write_req *next = w->next;
		write_fail(l, w, DG_ESHUTDOWN);
		w = next;
	}
	for (size_t i = 0; i < l->nbatch; i++)
		write_fail(l, l->batch[i], DG_ESHUTDOWN);
	l->nbatch = 0;
	for (size_t i = 0; i < l->nfwd; i++) {
		free(l->fwd_text[i]);
		write_fail(l, l->fwd[i], DG_ESHUTDOWN);
	}
	l->nfwd = l->fwd_bytes = 0;
	run_tasks(l, true);
	read_waiters_check(l, 0, true);
	uv_timer_stop(&l->tick);
	dg__client_stop(l);
	dg__members_stop(l);
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
	run_tasks(l, false);
	while (w) {
		struct write_req *next = w->next;
		w->next = NULL;
		submit(l, w);
		w = next;
	}
}

/* ---- raft membership ---- */

uint64_t dg__raft_id_of(const char *node_id)
{
	uint64_t id = 0;
	int digits = 0;
	for (const char *p = node_id; *p && digits < 16; p++) {
		int v = *p >= '0' && *p <= '9'	 ? *p - '0'
			: *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
			: *p >= 'A' && *p <= 'F' ? *p - 'A' + 10
						 : -1;
		if (v < 0)
			continue;
		id = id << 4 | (uint64_t)v;
		digits++;
	}
	return id ? id : 1;
}

static void change_cb(struct raft_change *req, int status)
{
	dg_lan *l = req->data;
	if (status != 0)
		DG_LOGW(LAN, "raft configuration change failed: %s", raft_strerror(status));
	l->change_busy = false;
	l->next_conf_ms = 0;
}

static const struct raft_server *conf_find(dg_lan *l, raft_id id)
{
	for (unsigned i = 0; i < l->raft.configuration.n; i++)
		if (l->raft.configuration.servers[i].id == id)
			return &l->raft.configuration.servers[i];
	return NULL;
}

/* The leader keeps raft's configuration in line with gossip, one change at a time: an alive
 * server of this DC that raft lacks is added (then made a voter once it has caught up); a
 * server that left, or was failed long enough to be reaped, is removed. */
static void leader_conf(dg_lan *l, uint64_t now)
{
	struct dg__server srv[64];
	if (l->change_busy || now < l->next_conf_ms)
		return;
	l->next_conf_ms = now + 500;
	size_t n = dg__members_servers(l, srv, 64);
	l->change.data = l;
	for (size_t i = 0; i < n; i++) {
		const struct raft_server *cs = conf_find(l, srv[i].raft_id);
		int rv = 0;
		const char *what = NULL;
		if (srv[i].status == DG_GOSSIP_ALIVE_ST && !cs) {
			what = "adding";
			rv = raft_add(&l->raft, &l->change, srv[i].raft_id, srv[i].raft_addr,
				      change_cb);
		} else if (srv[i].status == DG_GOSSIP_ALIVE_ST && cs->role != RAFT_VOTER) {
			what = "promoting to voter";
			rv = raft_assign(&l->raft, &l->change, srv[i].raft_id, RAFT_VOTER,
					 change_cb);
		} else if (srv[i].status == DG_GOSSIP_LEFT && cs && cs->id != l->raft_id) {
			what = "removing (left)";
			rv = raft_remove(&l->raft, &l->change, srv[i].raft_id, change_cb);
		} else {
			continue;
		}
		if (rv == 0) {
			l->change_busy = true;
			DG_LOGI(LAN, "raft: %s server %s (%s)", what, srv[i].name, srv[i].raft_addr);
		} else {
			DG_LOGW(LAN, "raft: %s server %s: %s", what, srv[i].name, raft_strerror(rv));
		}
		return;
	}
	for (unsigned i = 0; i < l->raft.configuration.n; i++) {
		const struct raft_server *cs = &l->raft.configuration.servers[i];
		if (cs->id == l->raft_id || !dg__members_server_reaped(l, cs->address))
			continue;
		char addr[96];
		snprintf(addr, sizeof(addr), "%s", cs->address);
		if (raft_remove(&l->raft, &l->change, cs->id, change_cb) == 0) {
			l->change_busy = true;
			DG_LOGI(LAN, "raft: removing server %s (failed, reaped)", addr);
			dg__members_server_forget(l, addr);
		}
		return;
	}
}

static int bootstrap_and_start(dg_lan *l, const struct dg__server *srv, size_t n);

/* Before raft starts with -bootstrap-expect N: once N servers of this DC expecting N are alive
 * in gossip, each of them bootstraps the same configuration, those N servers; one that is first
 * to see all N may already have done so ("raft_state": "bootstrapped"), which the others follow,
 * since libraft's servers vote only once they are voters in a configuration of their own. A
 * server that finds a cluster in use ("in-use": its log has more than the bootstrap entry) joins
 * it instead, empty, and its leader adds it: a server that comes with a new data dir into a
 * running cluster must not bootstrap a second history. */
static void try_bootstrap(dg_lan *l)
{
	struct dg__server srv[64], pick[64];
	size_t n = dg__members_servers(l, srv, 64), k = 0;
	int rv;
	for (size_t i = 0; i < n; i++) {
		if (srv[i].status != DG_GOSSIP_ALIVE_ST)
			continue;
		if (srv[i].raft_in_use) {
			DG_LOGI(LAN, "raft: server %s is in a cluster in use; waiting to be added to "
				     "it instead of bootstrapping",
				srv[i].name);
			l->bootstrap_pending = false;
			if ((rv = raft_start(&l->raft)) != 0)
				DG_LOGE(LAN, "raft: cannot start: %s", raft_strerror(rv));
			else
				l->raft_started = true;
			return;
		}
		if (srv[i].expect == l->cfg.bootstrap_expect)
			pick[k++] = srv[i];
	}
	if (k < (size_t)l->cfg.bootstrap_expect)
		return;
	l->bootstrap_pending = false;
	if (bootstrap_and_start(l, pick, k) != 0)
		DG_LOGE(LAN, "raft: bootstrap failed: %s", l->start_msg);
}

static void publish_raft(dg_lan *l, const char *leader_addr)
{
	json_t *servers = json_array();
	for (unsigned i = 0; l->raft_started && i < l->raft.configuration.n; i++) {
		const struct raft_server *cs = &l->raft.configuration.servers[i];
		const char *name = dg__members_name_of(l, cs->address);
		char id[40];
		struct dg__server srv[64];
		size_t n = dg__members_servers(l, srv, 64);
		snprintf(id, sizeof(id), "%016llx", (unsigned long long)cs->id);
		for (size_t k = 0; k < n; k++)
			if (srv[k].raft_id == cs->id)
				snprintf(id, sizeof(id), "%s", srv[k].id);
		if (cs->id == l->raft_id) {
			snprintf(id, sizeof(id), "%s", l->node_id);
			name = l->cfg.node;
		}
		json_array_append_new(
			servers,
			json_pack("{s:s, s:s, s:s, s:b, s:b, s:s}", "ID", id, "Node",
				  name ? name : cs->address, "Address", cs->address, "Leader",
				  leader_addr && strcmp(leader_addr, cs->address) == 0, "Voter",
				  cs->role == RAFT_VOTER, "ProtocolVersion", "3"));
	}
	json_t *conf = json_pack("{s:o, s:I}", "Servers", servers, "Index",
				 (json_int_t)(l->raft_started ? l->raft.configuration_index : 0));
	pthread_mutex_lock(&l->mu);
	json_t *old = l->raft_json;
	l->raft_json = conf;
	pthread_mutex_unlock(&l->mu);
	json_decref(old);
}

/* A snapshot restore sent in parts whose sender went away (its HTTP request was cut, or the
 * server that ran it died) would keep raft snapshots off: the leader drops one that has not
 * grown for RESTORE_IDLE_MS. */
#define RESTORE_IDLE_MS 60000
static void abandoned_restore(dg_lan *l, uint64_t now)
{
	uint64_t since = 0;
	if (now < l->next_restore_check_ms || !dg_cat_restore_staged(l->cat, &since))
		return;
	l->next_restore_check_ms = now + RESTORE_IDLE_MS / 4;
	if (now - since < RESTORE_IDLE_MS)
		return;
	DG_LOGW(LAN, "a snapshot restore sent in parts has had no part for %d s; dropping it",
		RESTORE_IDLE_MS / 1000);
	dg__lan_write_local(l, json_pack("{s:s}", "Op", "restore_abort"));
}

/* libraft's TCP transport leaves Nagle on. A follower's answers to the leader are small and
 * follow each other: with Nagle the second waits for the leader's ACK of the first, which a
 * leader waiting for that very answer delays up to 40 ms (delayed ACK). Seen with batched
 * writes: c16 PUTs stalled 40 ms at p75, 2,000 puts/s instead of 5,000+. The transport has no
 * option for it, so every TCP handle of this loop (all libraft's: gossip is UDP, the 8301
 * requests run on nng's threads) gets TCP_NODELAY, new ones within a tick. */
static void nodelay_cb(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (h->type == UV_TCP && !uv_is_closing(h))
		uv_tcp_nodelay((uv_tcp_t *)h, 1);
}

static void tick_cb(uv_timer_t *t)
{
	dg_lan *l = t->data;
	if (l->raft_started)
		uv_walk(&l->loop, nodelay_cb, NULL);
	raft_id id;
	const char *addr = NULL;
	uint64_t now = dg_now_ms();
	if (!l->cfg.server) {
		/* a client agent: no raft; its catalog reads go to the servers */
		dg__client_tick(l, now);
		dg__agent_tick(l);
		return;
	}
	if (l->bootstrap_pending)
		try_bootstrap(l);
	bool leader = l->raft_started && raft_state(&l->raft) == RAFT_LEADER;
	if (l->raft_started)
		raft_leader(&l->raft, &id, &addr);
	uint64_t contact = 0;
	if (!leader && l->raft_started) {
		raft_time rnow = l->raft.io->time(l->raft.io);
		contact = rnow > l->raft.election_timer_start ? rnow - l->raft.election_timer_start
							      : 0;
		/* libraft keeps naming the last leader while it has no configuration yet (a server
		 * waiting for its first entries never stands for election): a leader not heard from
		 * for two election timeouts is not known */
		if (contact > 2 * RAFT_ELECTION_MS)
			addr = NULL;
	}	/* a follower forwards to the leader's 8301, which gossip tells */
	char rpc[sizeof(l->leader_rpc)] = "";
	if (addr && !dg__members_rpc_of(l, addr, rpc, sizeof(rpc)))
		rpc[0] = 0;
	snprintf(l->leader_rpc, sizeof(l->leader_rpc), "%s", leader ? "" : rpc);

	pthread_mutex_lock(&l->mu);
	/* this server's own when it leads: a read held while it was a follower is sent to itself
	 * once it has won the election (lan/rpc.c) */
	snprintf(l->leader_rpc_pub, sizeof(l->leader_rpc_pub), "%s", rpc);
	l->leader_known = addr != NULL;
	snprintf(l->leader, sizeof(l->leader), "%s", addr ? addr : "");
	l->last_contact_ms = contact;
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
	if (l->raft_started && l->raft.configuration.n > 0)
		dg__members_set_raft_state(l, raft_last_index(&l->raft) > 1);
	if (leader) {
		leader_conf(l, now);
		abandoned_restore(l, now);
	}
	applies_check(l, now);
	if (l->held)
		release_held(l, now);
	dg__rpc_tick(l, now);
	if (l->read_waiters)
		read_waiters_check(l, raft_last_applied(&l->raft), false);
	publish_raft(l, addr);
	dg__agent_tick(l);
}

/* ---- operator raft remove-peer ---- */

struct peer_change {
	dg_lan *lan;
	char id[64];
	char address[96];
	dg_lan_done_fn cb;
	void *arg;
	struct rpc_in *in; /* when another server asked */
	struct raft_change change;
	int err;
	char msg[160];
};

static void peer_change_finish(dg_lan *l, struct peer_change *pc)
{
	(void)l;
	if (pc->in) {
		dg__rpc_reply_json(pc->in, json_pack("{s:i, s:s}", "Status", pc->err, "Error", pc->msg));
	} else if (pc->cb) {
		pc->cb(pc->arg, pc->err, pc->err ? pc->msg : NULL);
	}
	free(pc);
}

static void remove_done(struct raft_change *req, int status)
{
	struct peer_change *pc = req->data;
	dg_lan *l = pc->lan;
	l->change_busy = false;
	if (status != 0) {
		pc->err = DG_EIO;
		snprintf(pc->msg, sizeof(pc->msg), "raft: %s", raft_strerror(status));
	}
	peer_change_finish(l, pc);
}

static void peer_remove_forwarded(void *arg, int err, const uint8_t *buf, size_t len);

static void peer_remove_run(dg_lan *l, struct peer_change *pc)
{
	raft_id target = 0;
	for (unsigned i = 0; l->raft_started && i < l->raft.configuration.n; i++) {
		const struct raft_server *cs = &l->raft.configuration.servers[i];
		if ((*pc->address && strcmp(cs->address, pc->address) == 0) ||
		    (*pc->id && (dg__raft_id_of(pc->id) == cs->id)))
			target = cs->id;
	}
	bool leader = l->raft_started && raft_state(&l->raft) == RAFT_LEADER;
	if (!leader && !pc->in && l->leader_rpc[0]) {
		json_t *req = json_pack("{s:s, s:s, s:s}", "Op", "remove_peer", "ID", pc->id,
					"Address", pc->address);
		int rv = dg__rpc_call_json(l, l->leader_rpc, DG_RPC_RAFT, req,
					   DG_RPC_WRITE_TIMEOUT_MS, peer_remove_forwarded, pc);
		json_decref(req);
		if (rv == 0)
			return;
		pc->err = rv;
		snprintf(pc->msg, sizeof(pc->msg), "%s", dg_strerror(rv));
	} else if (!leader) {
		pc->err = DG_ENOLEADER;
		snprintf(pc->msg, sizeof(pc->msg), "No cluster leader");
	} else if (!target) {
		pc->err = DG_ENOTFOUND;
		if (*pc->address)
			snprintf(pc->msg, sizeof(pc->msg), "address \"%s\" was not found in the Raft "
				 "configuration", pc->address);
		else
			snprintf(pc->msg, sizeof(pc->msg), "id \"%s\" was not found in the Raft "
				 "configuration", pc->id);
	} else if (l->change_busy) {
		pc->err = DG_EBUSY;
		snprintf(pc->msg, sizeof(pc->msg), "a raft configuration change is in progress");
	} else {
		pc->change.data = pc;
		int rv = raft_remove(&l->raft, &pc->change, target, remove_done);
		if (rv == 0) {
			l->change_busy = true;
			DG_LOGI(LAN, "raft: removing peer %016llx on request",
				(unsigned long long)target);
			return;
		}
		pc->err = DG_EIO;
		snprintf(pc->msg, sizeof(pc->msg), "raft: %s", raft_strerror(rv));
	}
	peer_change_finish(l, pc);
}

static void peer_remove_answer(dg_lan *l, void *arg, bool cancelled)
{
	struct peer_change *pc = arg;
	if (cancelled) {
		pc->err = DG_ESHUTDOWN;
		snprintf(pc->msg, sizeof(pc->msg), "shutting down");
	}
	peer_change_finish(l, pc);
}

static void peer_remove_forwarded(void *arg, int err, const uint8_t *buf, size_t len)
{
	struct peer_change *pc = arg;
	pc->err = err;
	if (err == 0) {
		json_t *ans = dg__rpc_answer_json(buf, len, &pc->err);
		const char *m = json_string_value(json_object_get(ans, "Error"));
		snprintf(pc->msg, sizeof(pc->msg), "%s", m ? m : dg_strerror(pc->err));
		json_decref(ans);
	} else {
		snprintf(pc->msg, sizeof(pc->msg), "%s", dg_strerror(err));
	}
	if (dg__lan_post(pc->lan, peer_remove_answer, pc) != 0) {
		if (pc->cb)
			pc->cb(pc->arg, DG_ESHUTDOWN, "shutting down");
		free(pc);
	}
}

static void serve_raft_change(dg_lan *l, struct rpc_in *in, json_t *req)
{
	struct peer_change *pc = calloc(1, sizeof(*pc));
	const char *op = json_string_value(json_object_get(req, "Op"));
	if (!pc || !op || strcmp(op, "remove_peer") != 0) {
		free(pc);
		json_decref(req);
		dg__rpc_reply(in, NULL, 0);
		return;
	}
	pc->lan = l;
	pc->in = in;
	const char *id = json_string_value(json_object_get(req, "ID"));
	const char *addr = json_string_value(json_object_get(req, "Address"));
	snprintf(pc->id, sizeof(pc->id), "%s", id ? id : "");
	snprintf(pc->address, sizeof(pc->address), "%s", addr ? addr : "");
	json_decref(req);
	peer_remove_run(l, pc);
}

static void peer_remove_task(dg_lan *l, void *arg, bool cancelled)
{
	struct peer_change *pc = arg;
	if (cancelled) {
		pc->err = DG_ESHUTDOWN;
		snprintf(pc->msg, sizeof(pc->msg), "shutting down");
		peer_change_finish(l, pc);
		return;
	}
	peer_remove_run(l, pc);
}

int dg_lan_remove_peer(dg_lan *l, const char *id, const char *address, dg_lan_done_fn cb,
		       void *arg)
{
	struct peer_change *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return DG_ENOMEM;
	pc->lan = l;
	snprintf(pc->id, sizeof(pc->id), "%s", id ? id : "");
	snprintf(pc->address, sizeof(pc->address), "%s", address ? address : "");
	pc->cb = cb;
	pc->arg = arg;
	int rv = dg__lan_post(l, peer_remove_task, pc);
	if (rv != 0)
		free(pc);
	return rv;
}

int dg__make_dir(const char *path)
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

/* Whether libraft has written anything in dir (its metadata files): then it starts from there
 * and must not be bootstrapped again. */
static bool has_raft_state(const char *dir)
{
	char path[PATH_MAX + 16];
	struct stat st;
	for (int i = 1; i <= 2; i++) {
		snprintf(path, sizeof(path), "%s/metadata%d", dir, i);
		if (stat(path, &st) == 0 && st.st_size > 0)
			return true;
	}
	return false;
}

/* This server's raft ID: derived from its node ID (as other servers derive it from the "id" tag
 * gossip carries), and kept in <data-dir>/raft-id. A data dir whose raft state predates that
 * file was written with ID 1 (single servers only), and keeps it. */
static uint64_t raft_id_for(dg_lan *l)
{
	char path[PATH_MAX + 16];
	uint64_t id = dg__raft_id_of(l->node_id);
	if (l->tmpdir || !l->cfg.data_dir)
		return id;
	snprintf(path, sizeof(path), "%s/raft-id", l->cfg.data_dir);
	FILE *f = fopen(path, "r");
	if (f) {
		unsigned long long v = 0;
		int ok = fscanf(f, "%llx", &v);
		fclose(f);
		if (ok == 1 && v)
			return v;
	}
	if (has_raft_state(l->dir))
		id = 1;
	f = fopen(path, "w");
	if (f) {
		fprintf(f, "%016llx\n", (unsigned long long)id);
		fclose(f);
	}
	return id;
}

static int bootstrap_and_start(dg_lan *l, const struct dg__server *srv, size_t n)
{
	struct raft_configuration conf;
	int rv = 0;
	raft_configuration_init(&conf);
	for (size_t i = 0; i < n && rv == 0; i++)
		rv = raft_configuration_add(&conf, srv[i].raft_id, srv[i].raft_addr, RAFT_VOTER);
	if (rv == 0)
		rv = raft_bootstrap(&l->raft, &conf);
	raft_configuration_close(&conf);
	if (rv != 0 && rv != RAFT_CANTBOOTSTRAP)
		goto fail;
	if (n > 1)
		DG_LOGI(LAN, "raft: bootstrapped with %zu servers", n);
	if ((rv = raft_start(&l->raft)) != 0)
		goto fail;
	l->raft_started = true;
	return 0;
fail:
	snprintf(l->start_msg, sizeof(l->start_msg), "raft (%s): %s", l->dir,
		 l->raft.errmsg[0] ? l->raft.errmsg : raft_strerror(rv));
	return DG_EIO;
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
		if (n < 0 || (size_t)n >= sizeof(l->dir) || dg__make_dir(l->dir) != 0) {
			snprintf(l->start_msg, sizeof(l->start_msg),
				 "cannot create data dir %s: %s", l->cfg.data_dir, strerror(errno));
			return DG_EIO;
		}
	}
	if ((rv = raft_uv_tcp_init(&l->transport, &l->loop)) != 0)
		goto raft_fail;
	if ((rv = raft_uv_init(&l->io, &l->loop, l->dir, &l->transport)) != 0)
		goto raft_fail;
	l->io.version = 2; /* with io_async_work, for the asynchronous snapshots */
	l->io.async_work = io_async_work;
	l->fsm.version = 3;
	l->fsm.data = l;
	l->fsm.apply = fsm_apply;
	l->fsm.snapshot = fsm_snapshot;
	l->fsm.snapshot_finalize = fsm_snapshot_finalize;
	l->fsm.snapshot_async = fsm_snapshot_async;
	l->fsm.restore = fsm_restore;
	l->raft_id = raft_id_for(l);
	if ((rv = raft_init(&l->raft, &l->io, &l->fsm, l->raft_id, addr)) != 0)
		goto raft_fail;
	l->raft.data = l;
	raft_set_snapshot_threshold(&l->raft, l->cfg.snapshot_threshold);
	raft_set_snapshot_trailing(&l->raft, l->cfg.snapshot_threshold / 4 + 1);
	raft_set_election_timeout(&l->raft, RAFT_ELECTION_MS);
	raft_set_heartbeat_timeout(&l->raft, 100);
	/* a server cut off from the others must not depose the leader when it comes back */
	raft_set_pre_vote(&l->raft, true);
	if (has_raft_state(l->dir)) {
		rv = raft_start(&l->raft);
		if (rv != 0)
			goto raft_fail;
		l->raft_started = true;
		return 0;
	}
	if (l->cfg.bootstrap_expect > 1) {
		/* bootstrapped once enough servers are known (try_bootstrap) */
		l->bootstrap_pending = true;
		return 0;
	}
	if (l->cfg.bootstrap_expect == 1) {
		struct dg__server self = {.raft_id = l->raft_id};
		snprintf(self.raft_addr, sizeof(self.raft_addr), "%s", addr);
		return bootstrap_and_start(l, &self, 1);
	}
	/* no -bootstrap-expect: a new server of an existing cluster, which its leader adds once
	 * gossip shows it (as Consul's servers without bootstrap_expect) */
	DG_LOGI(LAN, "raft: no bootstrap_expect: waiting to be added to a cluster by its leader "
		     "(-bootstrap-expect=1 makes a single server)");
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
	uv_check_init(&l->loop, &l->batch_check);
	l->batch_check.data = l;
	uv_check_start(&l->batch_check, batch_check_cb);
	pthread_mutex_lock(&l->mu);
	l->loop_running = true;
	pthread_mutex_unlock(&l->mu);
	if ((rv = dg__agent_new(l)) != 0)
		snprintf(l->start_msg, sizeof(l->start_msg), "agent: %s", dg_strerror(rv));
	else if ((rv = dg__rpc_listen(l, l->cfg.bind_addr, l->cfg.serf_lan_port, l->start_msg,
				      sizeof(l->start_msg))) != 0)
		;
	else if ((rv = dg__members_start(l, l->start_msg, sizeof(l->start_msg))) != 0)
		;
	else if (l->cfg.server)
		rv = start_raft(l);
	else
		rv = dg__client_start(l, l->start_msg, sizeof(l->start_msg));
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
	pthread_mutex_lock(&l->mu);
	l->loop_running = false;
	pthread_mutex_unlock(&l->mu);
	run_tasks(l, true);
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
	l->cfg.join = NULL;
	l->cfg.retry_join = NULL;
	l->cfg.encrypt_key = NULL;
	if (cfg->encrypt_key) {
		memcpy(l->encrypt_key, cfg->encrypt_key, sizeof(l->encrypt_key));
		l->cfg.encrypt_key = l->encrypt_key;
	}
	l->cfg.join = (const char *const *)dg_strv_dup(cfg->join);
	l->cfg.retry_join = (const char *const *)dg_strv_dup(cfg->retry_join);
	if (!l->cfg.serf_lan_port)
		l->cfg.serf_lan_port = 8301;
	if (!l->cfg.reconnect_timeout_ms)
		l->cfg.reconnect_timeout_ms = 72ULL * 3600 * 1000;
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
	sem_init(&l->left, 0, 0);
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
	/* after the loop: nng's callbacks find it gone and answer or drop by themselves */
	dg__rpc_close(l);
	run_tasks(l, true);
	dg__members_free(l);
	dg__client_free(l);
	json_decref(l->members_json);
	json_decref(l->raft_json);
	dg_strv_free(l->server_rpc);
	sem_destroy(&l->started);
	sem_destroy(&l->left);
	pthread_mutex_destroy(&l->mu);
	free((char *)l->cfg.node);
	free((char *)l->cfg.dc);
	free((char *)l->cfg.bind_addr);
	free((char *)l->cfg.advertise);
	free((char *)l->cfg.data_dir);
	free((char *)l->cfg.version);
	dg_strv_free((char **)l->cfg.join);
	dg_strv_free((char **)l->cfg.retry_join);
	free(l->node_id);
	free(l->address);
	free(l);
}

bool dg_lan_leader_known(dg_lan *l)
{
	pthread_mutex_lock(&l->mu);
	bool known = l->leader_known;
	pthread_mutex_unlock(&l->mu);
	return known;
}

json_t *dg_lan_raft_configuration(dg_lan *l)
{
	pthread_mutex_lock(&l->mu);
	json_t *conf = l->raft_json ? json_deep_copy(l->raft_json)
				    : json_pack("{s:[], s:i}", "Servers", "Index", 0);
	pthread_mutex_unlock(&l->mu);
	return conf;
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
