/* Internal state of the lan runtime, shared by lan/ files only. Everything here belongs to the
 * loop thread except the fields under `mu`. */
#ifndef DG_LAN_INTERNAL_H
#define DG_LAN_INTERNAL_H

#include <limits.h>
#include <pthread.h>
#include <raft.h>
#include <raft/uv.h>
#include <semaphore.h>
#include <uv.h>

#include "lan/lan.h"

struct write_req {
	struct raft_apply apply;
	dg_lan *lan;
	json_t *cmd;
	dg_lan_write_cb cb;
	void *arg;
	struct write_req *next;
};

struct dg__agent;

struct dg_lan {
	struct dg_lan_config cfg; /* strings owned (strdup'd) */
	char *node_id;
	char *address;
	dg_catalog *cat;
	pthread_t thread;
	sem_t started;
	int start_rv;
	char start_msg[256];

	uv_loop_t loop;
	uv_async_t wake;
	uv_timer_t tick;
	struct raft raft;
	struct raft_io io;
	struct raft_uv_transport transport;
	struct raft_fsm fsm;
	bool raft_started;
	char dir[PATH_MAX];
	bool tmpdir;
	json_t *unclaimed_result; /* last FSM result not taken by an apply callback */
	bool was_leader;

	pthread_mutex_t mu; /* guards everything below */
	struct write_req *q_head, *q_tail;
	bool stopping;
	char leader[128];
	bool leader_known;
	uint64_t last_contact_ms;
	struct dg_lan_stats stats;

	bool is_leader; /* atomic */
	dg_lan_change_hook hook;
	void *hook_arg;
	struct dg__agent *agent;
};

/* agent.c, all on the loop thread */
int dg__agent_new(dg_lan *l);
void dg__agent_free(dg_lan *l);
void dg__agent_on_leader(dg_lan *l);
void dg__agent_on_changes(dg_lan *l, const struct dg_cat_change *v, size_t n);
void dg__agent_tick(dg_lan *l);
void dg__agent_before_write(dg_lan *l, json_t *cmd);
/* Proposes a command from the loop thread itself, result ignored. */
void dg__lan_write_local(dg_lan *l, json_t *cmd);

#endif
