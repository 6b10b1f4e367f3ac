/* /v1/snapshot: GET answers the whole catalog state as an archive (catalog/archive.h), PUT
 * replaces the state with the one in an archive, through raft, so every server of the DC applies
 * the same restore. Format, limits and index rules: docs/snapshot.md.
 *
 * Both run on the thread serving the request, like every handler: the archive is built or
 * checked in memory, bounded by the request body limit and DG_CAT_ARCHIVE_MAX_STATE. */
#include "http/internal.h"

#include <stdio.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>

#include "catalog/archive.h"

#define HTTP "http"

/* Go's content sniffing names a gzip stream so; Consul sets no type of its own on this answer. */
#define SNAPSHOT_CONTENT_TYPE "application/x-gzip"

/* The query headers Consul sets on a snapshot (its QueryMeta), with the archive's index. */
static void meta_headers(struct dg_req *r, struct dg_resp *resp, uint64_t index)
{
	char buf[32];
	dg_lan *lan = dg_http_lan(r);
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)(index ? index : 1));
	r->ops->resp_header(resp, "X-Consul-Index", buf);
	r->ops->resp_header(resp, "X-Consul-KnownLeader",
			    dg_lan_leader_known(lan) ? "true" : "false");
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)dg_lan_last_contact_ms(lan));
	r->ops->resp_header(resp, "X-Consul-LastContact", buf);
}

static int snapshot_save(struct dg_req *r)
{
	size_t len, alen;
	uint64_t index;
	uint8_t *archive = NULL;
	char *state = dg_cat_snapshot_index(dg_http_cat(r), &len, &index);
	if (!state)
		return dg_reply_text(r, 500, "out of memory", 0);
	int rv = dg_cat_archive_encode(state, len, index, dg_http_dc(r), dg_wall_ns() / 1000000,
				       &archive, &alen);
	free(state);
	if (rv == 0 && alen > DG_CAT_ARCHIVE_MAX) {
		free(archive);
		rv = DG_ETOOBIG;
	}
	if (rv == DG_ETOOBIG)
		/* refused here rather than handing out an archive no restore would take */
		return dg_reply_textf(r, 500, 0,
				      "snapshot too large: the state is %zu bytes, the limit is %u "
				      "(%u compressed)",
				      len, DG_CAT_ARCHIVE_MAX_STATE, DG_CAT_ARCHIVE_MAX);
	if (rv != 0)
		return dg_reply_text(r, 500, dg_strerror(rv), 0);
	struct dg_resp *resp = r->ops->resp_new(r, archive, alen, true); /* archive is resp's */
	if (!resp)
		return MHD_NO;
	r->ops->resp_header(resp, "Content-Type", SNAPSHOT_CONTENT_TYPE);
	meta_headers(r, resp, index);
	return dg_reply_resp(r, 200, resp);
}

/* Status of a refused archive: 413 past a size limit, 400 for anything malformed. */
static int refused_status(int rv)
{
	return rv == DG_ETOOBIG ? 413 : rv == DG_ENOMEM ? 500 : 400;
}

/* A restore goes through raft in parts of about this much JSON (dg_cmd_restore_parts): well
 * under the 8 MiB a follower may send the leader, and small enough that no one entry holds the
 * servers' loops for long. */
#define RESTORE_PART_BYTES (512 * 1024)

struct restore_run {
	json_t *parts; /* the commands, sent one after the other */
	size_t next;
	char id[64];
};

static void restore_run_free(void *p)
{
	struct restore_run *run = p;
	json_decref(run->parts);
	free(run);
}

/* The next part, or the answer once the last is applied. A part refused (the leader lost, the
 * restore dropped) ends it: the parts gathered so far are dropped too, and nothing changed. */
static int restore_next(struct dg_req *r)
{
	struct restore_run *run = r->scratch;
	if (r->write_done) {
		r->write_done = false;
		if (r->write_status != 0 || json_object_get(r->write_result, "Error")) {
			DG_LOGW(HTTP, "snapshot restore %s: part %zu of %zu refused", run->id, run->next,
				json_array_size(run->parts));
			json_t *abort = json_pack("{s:s, s:s}", "Op", "restore_abort", "ID", run->id);
			if (abort)
				dg_lan_write(dg_http_lan(r), abort, NULL, NULL);
			r->write_done = true;
			return dg_reply_write_error(r);
		}
		json_decref(r->write_result);
		r->write_result = NULL;
	}
	if (run->next == json_array_size(run->parts)) {
		DG_LOGI(HTTP, "snapshot restored (%zu parts)", json_array_size(run->parts));
		return dg_reply_empty(r);
	}
	json_t *cmd = json_incref(json_array_get(run->parts, run->next++));
	return dg_req_write(r, cmd);
}

static int snapshot_restore(struct dg_req *r)
{
	if (r->scratch)
		return restore_next(r);
	if (r->q.stale)
		return dg_reply_text(r, 400, "stale not allowed for restore", 0);
	/* everything is checked before anything is proposed: a refused archive changes nothing */
	struct dg_cat_archive_meta meta;
	struct dg_cat_state_info info;
	char why[512], *state;
	size_t len;
	int rv = dg_cat_archive_decode((const uint8_t *)r->body.data, r->body.len, &meta, &state,
				       &len, why, sizeof(why));
	if (rv != 0)
		return dg_reply_text(r, refused_status(rv), why, 0);
	json_error_t jerr;
	json_t *st = json_loadb(state, len, 0, &jerr);
	free(state);
	if (!st)
		return dg_reply_textf(r, 400, 0, "invalid snapshot state: %s (line %d)", jerr.text,
				      jerr.line);
	if ((rv = dg_cat_state_check(st, &info, why, sizeof(why))) != 0) {
		json_decref(st);
		if (rv == DG_EINVAL)
			return dg_reply_textf(r, 400, 0, "invalid snapshot state: %s", why);
		return dg_reply_text(r, 500, dg_strerror(rv), 0);
	}
	struct restore_run *run = calloc(1, sizeof(*run));
	uint8_t rnd[8] = {0};
	if (!run || getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		memcpy(rnd, &run, sizeof(run) < sizeof(rnd) ? sizeof(run) : sizeof(rnd));
	if (run)
		snprintf(run->id, sizeof(run->id), "%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0],
			 rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	json_t *parts = run ? dg_cmd_restore_parts(st, run->id, RESTORE_PART_BYTES) : NULL;
	json_decref(st);
	if (!parts) {
		free(run);
		return dg_reply_text(r, 500, "out of memory", 0);
	}
	run->parts = parts;
	r->scratch = run;
	r->scratch_free = restore_run_free;
	DG_LOGI(HTTP,
		"restoring snapshot %s of %s (index %llu: %zu nodes, %zu services, %zu checks, "
		"%zu keys, %zu sessions) in %zu raft entries as restore %s",
		meta.id, meta.dc[0] ? meta.dc : "an unnamed datacenter",
		(unsigned long long)meta.index, info.nodes, info.services, info.checks, info.kv,
		info.sessions, json_array_size(parts), run->id);
	return restore_next(r);
}

static int snapshot(struct dg_req *r)
{
	dg_lan *lan = dg_http_lan(r);
	/* /v1/snapshot is not in the router's list of paths that honour ?dc= and whose default-mode
	 * reads go to the leader, so both are done here. ?dc= of another DC: the remote answer
	 * (within one WAN message) comes back as it is. */
	if (r->q.dc && strcmp(r->q.dc, dg_http_dc(r)) != 0 && !r->write_done)
		return dg_req_forward(r, r->q.dc);
	/* Consul takes the snapshot on the leader unless ?stale: a follower passes it on over
	 * 8301 (within one LAN RPC message), as the router does with other default-mode reads */
	if (r->method == DG_GET && !r->q.stale && dg_lan_config(lan)->server &&
	    !dg_lan_is_leader(lan))
		return dg_req_forward(r, LEADER);
	return r->method == DG_GET ? snapshot_save(r) : snapshot_restore(r);
}

const struct dg_route dg_routes_snapshot[] = {
    {"/v1/snapshot", false, DG_GET | DG_PUT, snapshot},
    {NULL, false, 0, NULL},
};
