/* Unit tests for catalog/: commands applied as raft would apply them, indexes, KV verbs, a txn
 * that rolls back, sessions releasing locks, and a snapshot that restores the same state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "catalog/catalog.h"
#include "catalog/internal.h"

static uint64_t next_index;

static json_t *apply(dg_catalog *c, const char *cmd)
{
	json_t *res = NULL;
	size_t n;
	dg_cat_wrlock(c);
	dg_cat_apply(c, ++next_index, cmd, strlen(cmd), &res);
	struct dg_cat_change *ch = dg_cat_take_changes(c, &n);
	dg_cat_unlock(c);
	dg_cat_changes_free(ch, n);
	return res;
}

static bool apply_ok(dg_catalog *c, const char *cmd)
{
	json_t *res = apply(c, cmd);
	bool ok = json_is_true(json_object_get(res, "Ok"));
	json_decref(res);
	return ok;
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

static void kv_cas_and_indexes(void **state)
{
	dg_catalog *c = *state;
	assert_true(apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"cas\",\"Key\":\"a\",\"Index\":0,\"Value\":\"eA==\"}"));
	/* cas=0 on an existing key fails */
	assert_false(apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"cas\",\"Key\":\"a\",\"Index\":0}"));
	dg_cat_rdlock(c);
	const struct dg_cat_kv *e = dg_cat_kv_find_locked(c, "a");
	assert_non_null(e);
	uint64_t mi = e->modify_index;
	assert_int_equal(e->value_len, 1);
	dg_cat_unlock(c);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "{\"Op\":\"kv\",\"Verb\":\"cas\",\"Key\":\"a\",\"Index\":%llu}",
		 (unsigned long long)mi);
	assert_true(apply_ok(c, cmd));
	assert_false(apply_ok(c, cmd)); /* stale index now */
	assert_true(apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"delete\",\"Key\":\"a\"}"));
	dg_cat_rdlock(c);
	assert_null(dg_cat_kv_find_locked(c, "a"));
	/* the tombstone keeps the key's index moving forward */
	assert_true(dg_cat_index_kv_locked(c, "a", false) == next_index);
	dg_cat_unlock(c);
}

static void txn_rolls_back_as_a_whole(void **state)
{
	dg_catalog *c = *state;
	json_t *res = apply(c, "{\"Op\":\"txn\",\"Ops\":[{\"KV\":{\"Verb\":\"set\",\"Key\":\"t1\"}},"
			       "{\"KV\":{\"Verb\":\"cas\",\"Key\":\"t2\",\"Index\":99}}]}");
	assert_non_null(json_object_get(res, "Errors"));
	assert_int_equal(json_array_size(json_object_get(res, "Errors")), 1);
	json_decref(res);
	dg_cat_rdlock(c);
	assert_null(dg_cat_kv_find_locked(c, "t1"));
	dg_cat_unlock(c);
	res = apply(c, "{\"Op\":\"txn\",\"Ops\":[{\"KV\":{\"Verb\":\"set\",\"Key\":\"t1\"}},"
		       "{\"KV\":{\"Verb\":\"get\",\"Key\":\"t1\"}}]}");
	assert_int_equal(json_array_size(json_object_get(res, "Results")), 2);
	json_decref(res);
}

static const char *reg_web =
	"{\"Op\":\"register\",\"Node\":\"n1\",\"Address\":\"10.0.0.1\",\"Service\":{\"ID\":"
	"\"web1\",\"Service\":\"web\",\"Tags\":[\"v1\"],\"Port\":80},\"Checks\":[{\"CheckID\":"
	"\"c1\",\"Name\":\"c\",\"Status\":\"passing\",\"ServiceID\":\"web1\"}]}";

static void register_and_service_index(void **state)
{
	dg_catalog *c = *state;
	json_decref(apply(c, reg_web));
	dg_cat_rdlock(c);
	uint64_t idx = dg_cat_index_service_locked(c, "WEB"); /* names are case-insensitive */
	assert_true(idx == next_index);
	const struct dg_cat_check *ch = dg_cat_check_find_locked(c, "n1", "c1");
	assert_non_null(ch);
	assert_string_equal(ch->service_name, "web");
	dg_cat_unlock(c);
	/* the same registration again changes nothing, so no index moves */
	json_decref(apply(c, reg_web));
	dg_cat_rdlock(c);
	assert_true(dg_cat_index_service_locked(c, "web") == idx);
	dg_cat_unlock(c);
	/* a check result moves the service's index */
	json_decref(apply(c, "{\"Op\":\"check_update\",\"Node\":\"n1\",\"CheckID\":\"c1\","
			     "\"Status\":\"critical\",\"Output\":\"down\"}"));
	dg_cat_rdlock(c);
	assert_true(dg_cat_index_service_locked(c, "web") == next_index);
	dg_cat_unlock(c);
	json_decref(apply(c, "{\"Op\":\"deregister\",\"Node\":\"n1\",\"ServiceID\":\"web1\"}"));
	dg_cat_rdlock(c);
	assert_null(dg_cat_service_find_locked(c, "n1", "web1"));
	assert_null(dg_cat_check_find_locked(c, "n1", "c1"));
	dg_cat_unlock(c);
}

static void session_invalidation_releases_locks(void **state)
{
	dg_catalog *c = *state;
	json_decref(apply(c, reg_web));
	json_t *res = apply(c, "{\"Op\":\"session_create\",\"Now\":1000000,\"Session\":{\"ID\":\"s1\","
			       "\"Node\":\"n1\",\"LockDelay\":0,\"Behavior\":\"release\","
			       "\"NodeChecks\":[\"c1\"]}}");
	assert_string_equal(json_string_value(json_object_get(res, "ID")), "s1");
	json_decref(res);
	assert_true(apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"lock\",\"Key\":\"l\",\"Session\":\"s1\"}"));
	dg_cat_rdlock(c);
	assert_string_equal(dg_cat_kv_find_locked(c, "l")->session, "s1");
	assert_int_equal(dg_cat_kv_find_locked(c, "l")->lock_index, 1);
	dg_cat_unlock(c);
	/* the bound check goes critical: the session dies and its lock is released */
	json_decref(apply(c, "{\"Op\":\"check_update\",\"Node\":\"n1\",\"CheckID\":\"c1\","
			     "\"Status\":\"critical\",\"Output\":\"x\"}"));
	dg_cat_rdlock(c);
	assert_null(dg_cat_session_find_locked(c, "s1"));
	assert_null(dg_cat_kv_find_locked(c, "l")->session);
	dg_cat_unlock(c);
}

static void snapshot_restores_same_state(void **state)
{
	dg_catalog *c = *state;
	json_decref(apply(c, reg_web));
	assert_true(apply_ok(c, "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"k\",\"Value\":\"aGk=\",\"Flags\":7}"));
	size_t len, len2;
	char *snap = dg_cat_snapshot(c, &len);
	dg_catalog *c2 = dg_cat_new("dc1");
	assert_int_equal(dg_cat_restore(c2, snap, len), 0);
	char *snap2 = dg_cat_snapshot(c2, &len2);
	assert_int_equal(len, len2);
	assert_memory_equal(snap, snap2, len);
	assert_true(dg_cat_last_index(c2) == dg_cat_last_index(c));
	dg_cat_rdlock(c2);
	assert_true(dg_cat_kv_find_locked(c2, "k")->flags == 7);
	dg_cat_unlock(c2);
	free(snap);
	free(snap2);
	dg_cat_free(c2);
}

/* The keys of a snapshot are written by hand (dg__cat_kv_write): each must read back as the
 * object jansson makes of it (dg__cat_kv_json), for keys that need escaping too. */
static void snapshot_kv_text_matches_jansson(void **state)
{
	dg_catalog *c = *state;
	static const char *const keys[] = {"plain", "quote\\\"q", "tab\\tx", "uni\\u00e9\\u4e2d",
					    "slash/back\\\\"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd),
			 "{\"Op\":\"kv\",\"Verb\":\"set\",\"Key\":\"%s\",\"Value\":\"%s\","
			 "\"Flags\":%s}",
			 keys[i], i % 2 ? "aGk=" : "", i == 3 ? "9223372036854775807" : "3");
		assert_true(apply_ok(c, cmd));
	}
	size_t len;
	char *snap = dg_cat_snapshot(c, &len);
	assert_non_null(snap);
	assert_int_equal(strlen(snap), len);
	json_error_t err;
	json_t *root = json_loads(snap, JSON_REJECT_DUPLICATES, &err);
	assert_non_null(root);
	json_t *kv = json_object_get(root, "KV");
	dg_cat_rdlock(c);
	assert_int_equal(json_array_size(kv), dg_cat_kv_count_locked(c));
	size_t i;
	json_t *e;
	json_array_foreach(kv, i, e)
	{
		const struct dg_cat_kv *k = dg_cat_kv_find_locked(c, json_string_value(json_object_get(e, "Key")));
		assert_non_null(k);
		json_t *want = dg__cat_kv_json(k, true);
		assert_true(json_equal(want, e));
		json_decref(want);
	}
	dg_cat_unlock(c);
	json_decref(root);
	free(snap);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(snapshot_kv_text_matches_jansson, setup, teardown),
		cmocka_unit_test_setup_teardown(kv_cas_and_indexes, setup, teardown),
		cmocka_unit_test_setup_teardown(txn_rolls_back_as_a_whole, setup, teardown),
		cmocka_unit_test_setup_teardown(register_and_service_index, setup, teardown),
		cmocka_unit_test_setup_teardown(session_invalidation_releases_locks, setup, teardown),
		cmocka_unit_test_setup_teardown(snapshot_restores_same_state, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
