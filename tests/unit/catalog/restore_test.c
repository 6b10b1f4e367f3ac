/* Unit tests for the "restore" command and dg_cat_state_check (catalog/snapshot.c): the state
 * comes back whole, every index moves forward (tables, service names, per-key KV floors), even
 * past a state whose indexes ran higher; every blocking topic is woken; a state that does not
 * load changes nothing; and what the check refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "catalog/catalog.h"

static uint64_t next_index;

/* Applies cmd at the next index; returns the result (caller frees) and the changes' topics. */
static json_t *apply(dg_catalog *c, const char *cmd, unsigned *topics, bool *node_checks)
{
	json_t *res = NULL;
	size_t n;
	dg_cat_wrlock(c);
	dg_cat_apply(c, ++next_index, cmd, strlen(cmd), &res);
	struct dg_cat_change *ch = dg_cat_take_changes(c, &n);
	dg_cat_unlock(c);
	if (topics)
		*topics = 0;
	if (node_checks)
		*node_checks = false;
	for (size_t i = 0; i < n; i++) {
		if (topics && !ch[i].key)
			*topics |= ch[i].topic;
		if (node_checks && ch[i].topic == DG_TOPIC_CHECKS && ch[i].key &&
		    strcmp(ch[i].key, "n1") == 0)
			*node_checks = true;
	}
	dg_cat_changes_free(ch, n);
	return res;
}

static void apply_ok(dg_catalog *c, const char *cmd)
{
	json_t *res = apply(c, cmd, NULL, NULL);
	if (json_object_get(res, "Error"))
		fail_msg("%s: %s", cmd, json_string_value(json_object_get(res, "Error")));
	json_decref(res);
}

/* The restore command for a state text, as the HTTP layer builds it. */
static char *restore_cmd(const char *state_text)
{
	json_t *st = json_loads(state_text, 0, NULL);
	assert_non_null(st);
	json_t *cmd = dg_cmd_restore(st);
	json_decref(st);
	char *text = json_dumps(cmd, JSON_COMPACT);
	json_decref(cmd);
	return text;
}

static int setup(void **state)
{
	next_index = 10;
	*state = dg_cat_new("dc1");
	return *state ? 0 : -1;
}

static int teardown(void **state)
{
	dg_cat_free(*state);
	return 0;
}

static const char reg_web[] =
    "{\"Op\":\"register\",\"Node\":\"n1\",\"Address\":\"10.0.0.1\",\"Service\":{\"ID\":\"web1\","
    "\"Service\":\"web\",\"Port\":80},\"Checks\":[{\"CheckID\":\"c1\",\"Name\":\"c\",\"Status\":"
    "\"passing\",\"ServiceID\":\"web1\"}]}";

static uint64_t kv_index(dg_catalog *c, const char *key, bool prefix)
{
	dg_cat_rdlock(c);
	uint64_t v = dg_cat_index_kv_locked(c, key, prefix);
	dg_cat_unlock(c);
	return v;
}

static void restore_brings_state_back(void **state)
{
	dg_catalog *c = *state;
	apply_ok(c, reg_web);
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"app/a\",\"Value\":\"MQ==\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"keep\",\"Value\":\"MQ==\"}");
	size_t len;
	uint64_t saved_at;
	char *saved = dg_cat_snapshot_index(c, &len, &saved_at);
	assert_int_equal(saved_at, dg_cat_last_index(c));
	uint64_t a_mi;
	dg_cat_rdlock(c);
	a_mi = dg_cat_kv_find_locked(c, "app/a")->modify_index;
	dg_cat_unlock(c);

	/* change everything: delete the service, the key, add others */
	apply_ok(c, "{\"Op\":\"deregister\",\"Node\":\"n1\",\"ServiceID\":\"web1\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"delete\",\"Key\":\"app/a\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"app/b\",\"Value\":\"Mg==\"}");
	apply_ok(c, "{\"Op\":\"register\",\"Node\":\"n2\",\"Address\":\"10.0.0.2\"}");
	uint64_t before = dg_cat_last_index(c);
	uint64_t kv_b_before = kv_index(c, "app/b", false);
	uint64_t kv_a_before = kv_index(c, "app/a", false); /* its tombstone */

	char *cmd = restore_cmd(saved);
	unsigned topics;
	bool node_checks;
	json_t *res = apply(c, cmd, &topics, &node_checks);
	assert_null(json_object_get(res, "Error"));
	json_decref(res);
	free(cmd);
	uint64_t at = dg_cat_last_index(c);
	assert_int_equal(at, before + 1);

	/* every blocking topic woken, and the agent's reconcile trigger for each node */
	assert_int_equal(topics, DG_TOPIC_NODES | DG_TOPIC_SERVICES | DG_TOPIC_SERVICE |
				     DG_TOPIC_CHECKS | DG_TOPIC_KV | DG_TOPIC_SESSIONS);
	assert_true(node_checks);

	dg_cat_rdlock(c);
	assert_non_null(dg_cat_service_find_locked(c, "n1", "web1"));
	assert_non_null(dg_cat_check_find_locked(c, "n1", "c1"));
	assert_null(dg_cat_node_find_locked(c, "n2"));
	const struct dg_cat_kv *e = dg_cat_kv_find_locked(c, "app/a");
	assert_non_null(e);
	assert_int_equal(e->modify_index, a_mi); /* as saved: a CAS on it works as before */
	assert_null(dg_cat_kv_find_locked(c, "app/b"));
	/* every index is the restore's, none went backwards */
	assert_int_equal(dg_cat_index_nodes_locked(c), at);
	assert_int_equal(dg_cat_index_services_locked(c), at);
	assert_int_equal(dg_cat_index_checks_locked(c), at);
	assert_int_equal(dg_cat_index_sessions_locked(c), at);
	assert_int_equal(dg_cat_index_service_locked(c, "web"), at);
	assert_int_equal(dg_cat_index_service_locked(c, "nosuch"), at);
	dg_cat_unlock(c);
	assert_int_equal(kv_index(c, "app/a", false), at);
	assert_true(kv_index(c, "app/a", false) > kv_a_before);
	assert_true(kv_index(c, "app/b", false) > kv_b_before);
	assert_int_equal(kv_index(c, "app/", true), at);

	/* a write after the restore moves the key past the floor */
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"app/a\",\"Value\":\"Mw==\"}");
	assert_int_equal(kv_index(c, "app/a", false), at + 1);

	/* the floor survives a raft snapshot and its restore */
	char *snap = dg_cat_snapshot(c, &len);
	dg_catalog *c2 = dg_cat_new("dc1");
	assert_int_equal(dg_cat_restore(c2, snap, len), 0);
	assert_int_equal(kv_index(c2, "app/", true), at + 1);
	assert_int_equal(kv_index(c2, "keep", false), at); /* ModifyIndex below the floor */
	dg_cat_free(c2);
	free(snap);
	free(saved);
}

/* A state whose indexes ran higher than ours (another DC, or a fresh cluster restored from an
 * old one's backup): the restore lands above all of them. */
static void restore_lands_above_state_indexes(void **state)
{
	dg_catalog *c = *state;
	const char *st =
	    "{\"Index\":5000,\"KV\":[{\"Key\":\"k\",\"Value\":\"eA==\",\"CreateIndex\":"
	    "4000,\"ModifyIndex\":4990}],\"Tombstones\":{\"gone\":4999}}";
	char *cmd = restore_cmd(st);
	json_t *res = apply(c, cmd, NULL, NULL);
	assert_null(json_object_get(res, "Error"));
	json_decref(res);
	free(cmd);
	assert_int_equal(dg_cat_last_index(c), 5001);
	assert_int_equal(kv_index(c, "k", false), 5001);
	assert_int_equal(kv_index(c, "gone", false), 5001);
	/* the next raft entry (index 12 here) still gets an index past the restore */
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"k\",\"Value\":\"eQ==\"}");
	assert_int_equal(dg_cat_last_index(c), 5002);
	assert_int_equal(kv_index(c, "k", false), 5002);
}

static void bad_state_changes_nothing(void **state)
{
	dg_catalog *c = *state;
	apply_ok(c, reg_web);
	size_t len1, len2;
	char *before = dg_cat_snapshot(c, &len1);
	/* the second node is a duplicate (names are case-insensitive): refused at apply */
	char *cmd = restore_cmd("{\"Nodes\":[{\"Node\":\"x\"},{\"Node\":\"X\"}]}");
	json_t *res = apply(c, cmd, NULL, NULL);
	const char *err = json_string_value(json_object_get(res, "Error"));
	assert_non_null(err);
	assert_non_null(strstr(err, "invalid snapshot state: node X twice"));
	json_decref(res);
	free(cmd);
	char *after = dg_cat_snapshot(c, &len2);
	/* only the last applied index moved (a refused command is applied as a no-op) */
	json_t *a = json_loads(before, 0, NULL), *b = json_loads(after, 0, NULL);
	json_object_del(a, "Index");
	json_object_del(b, "Index");
	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	free(before);
	free(after);
}

/* A raft snapshot in two steps: what begin captured is what text writes, whatever is applied
 * between them (a key replaced, one deleted, a session's lock released, a whole restore), and
 * the entries it held are freed at its end (the sanitizer build checks for leaks and reuse). */
static void two_step_snapshot_keeps_what_it_captured(void **state)
{
	dg_catalog *c = *state;
	apply_ok(c, reg_web);
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"a\",\"Value\":\"MQ==\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"b\",\"Value\":\"Mg==\"}");
	json_decref(apply(c, "{\"Op\":\"session_create\",\"Now\":1000000,\"Session\":{\"ID\":"
			     "\"s1\",\"Node\":\"n1\",\"LockDelay\":0,\"Behavior\":\"release\","
			     "\"NodeChecks\":[\"c1\"]}}",
			  NULL, NULL));
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"lock\",\"Key\":\"l\",\"Session\":\"s1\"}");
	size_t len1, len2;
	char *before = dg_cat_snapshot(c, &len1);
	struct dg_cat_frozen *f = dg_cat_snapshot_begin(c);
	assert_non_null(f);
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"a\",\"Value\":\"OQ==\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"delete\",\"Key\":\"b\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"new\",\"Value\":\"MQ==\"}");
	/* the session's check goes critical: its lock on l is released (l is replaced, not changed) */
	json_decref(apply(c, "{\"Op\":\"check_update\",\"Node\":\"n1\",\"CheckID\":\"c1\","
			     "\"Status\":\"critical\",\"Output\":\"x\"}",
			  NULL, NULL));
	dg_cat_rdlock(c);
	assert_null(dg_cat_kv_find_locked(c, "l")->session);
	assert_null(dg_cat_kv_find_locked(c, "b"));
	dg_cat_unlock(c);
	char *text = dg_cat_snapshot_text(f, &len2);
	assert_non_null(text);
	assert_int_equal(len1, len2);
	assert_string_equal(text, before);
	/* a restore swaps every table while f holds entries of the old ones */
	char *cmd = restore_cmd(before);
	apply_ok(c, cmd);
	free(cmd);
	dg_cat_snapshot_end(c, f);
	char *again = dg_cat_snapshot(c, &len2);
	assert_non_null(strstr(again, "\"Key\":\"b\""));
	assert_null(strstr(again, "\"Key\":\"new\""));
	free(again);
	free(text);
	free(before);
}

static void check_refuses(const char *text, const char *want)
{
	json_t *st = json_loads(text, 0, NULL);
	char why[256] = "";
	assert_non_null(st);
	assert_int_equal(dg_cat_state_check(st, NULL, why, sizeof(why)), DG_EINVAL);
	if (!strstr(why, want))
		fail_msg("%s: reason \"%s\" lacks \"%s\"", text, why, want);
	json_decref(st);
}

static void state_check(void **state)
{
	dg_catalog *c = *state;
	apply_ok(c, reg_web);
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"k\",\"Value\":\"eA==\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"k2\",\"Value\":\"eA==\"}");
	apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"delete\",\"Key\":\"k2\"}");
	size_t len;
	char *text = dg_cat_snapshot(c, &len);
	json_t *st = json_loadb(text, len, 0, NULL);
	struct dg_cat_state_info info;
	assert_int_equal(dg_cat_state_check(st, &info, NULL, 0), 0);
	assert_int_equal(info.index, dg_cat_last_index(c));
	assert_int_equal(info.nodes, 1);
	assert_int_equal(info.services, 1);
	assert_int_equal(info.checks, 1);
	assert_int_equal(info.kv, 1);
	assert_int_equal(info.tombstones, 1);
	assert_int_equal(info.sessions, 0);
	json_decref(st);
	free(text);

	check_refuses("[]", "not a JSON object");
	check_refuses("{\"Nodes\":{}}", "Nodes has the wrong type");
	check_refuses("{\"Nodes\":[1]}", "a node is not an object");
	check_refuses("{\"Nodes\":[{\"Address\":\"a\"}]}", "a node without Node");
	check_refuses("{\"Nodes\":[{\"Node\":\"n\",\"Services\":[{\"ID\":\"a\"}]}]}",
		      "a service without Service");
	check_refuses("{\"Nodes\":[{\"Node\":\"n\",\"Services\":[{\"Service\":\"a\"},"
		      "{\"Service\":\"a\"}]}]}",
		      "node n: service a twice");
	check_refuses("{\"Nodes\":[{\"Node\":\"n\",\"Checks\":[{\"CheckID\":\"c\"},"
		      "{\"CheckID\":\"c\"}]}]}",
		      "node n: check c twice");
	check_refuses("{\"KV\":[{\"Key\":\"a\"},{\"Key\":\"a\"}]}", "KV a twice");
	check_refuses("{\"KV\":[{\"Key\":\"a\",\"Value\":\"!!\"}]}", "not base64");
	check_refuses("{\"KV\":[{\"Value\":\"eA==\"}]}", "without Key");
	check_refuses("{\"KV\":[{\"Key\":\"a\",\"ModifyIndex\":-3}]}", "ModifyIndex is negative");
	check_refuses("{\"Index\":4611686018427387904}", "out of range");
	check_refuses("{\"Tombstones\":{\"a\":\"x\"}}", "not an index");
	check_refuses("{\"Sessions\":[{\"ID\":\"s\"},{\"ID\":\"s\"}]}", "session s twice");
	check_refuses("{\"LockDelay\":{\"a\":true}}", "not a number");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(restore_brings_state_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(restore_lands_above_state_indexes, setup, teardown),
	    cmocka_unit_test_setup_teardown(bad_state_changes_nothing, setup, teardown),
	    cmocka_unit_test_setup_teardown(state_check, setup, teardown),
	    cmocka_unit_test_setup_teardown(two_step_snapshot_keeps_what_it_captured, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
