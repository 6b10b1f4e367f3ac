"""KV store (§6) and transactions (§9)."""

import base64
import unittest

from harness import AgentTestCase, b64, quote, unb64

MAX_VALUE = 512 * 1024


class KVTest(AgentTestCase):
    def put(self, key, value=b"", query="", expect=True):
        r = self.a.put("/v1/kv/%s%s" % (quote(key), query), value)
        self.assertOK(r)
        self.assertIs(self.assertJSON(r), expect, "PUT %s%s" % (key, query))
        return r

    def get1(self, key, query=""):
        r = self.a.get("/v1/kv/%s%s" % (quote(key), query))
        self.assertOK(r)
        self.assertIndex(r)
        lst = self.assertJSON(r)
        self.assertEqual(len(lst), 1)
        return lst[0]

    def test_put_get_delete(self):
        self.put("app/cfg", b"hello")
        e = self.get1("app/cfg")
        self.assertEqual(e["Key"], "app/cfg")
        self.assertEqual(unb64(e["Value"]), b"hello")
        self.assertEqual(e["Flags"], 0)
        self.assertEqual(e["LockIndex"], 0)
        self.assertGreater(e["CreateIndex"], 0)
        self.assertEqual(e["CreateIndex"], e["ModifyIndex"])
        self.assertNotIn("Session", e)
        self.put("app/cfg", b"world")
        e2 = self.get1("app/cfg")
        self.assertEqual(unb64(e2["Value"]), b"world")
        self.assertEqual(e2["CreateIndex"], e["CreateIndex"])
        self.assertGreater(e2["ModifyIndex"], e["ModifyIndex"])
        r = self.a.delete("/v1/kv/app/cfg")
        self.assertOK(r)
        self.assertIs(self.assertJSON(r), True)
        r = self.a.get("/v1/kv/app/cfg")
        self.assertStatus(r, 404)
        self.assertEqual(r.body, b"")
        self.assertGreaterEqual(self.assertIndex(r), e2["ModifyIndex"])
        # deleting a missing key still returns true
        r = self.a.delete("/v1/kv/app/cfg")
        self.assertOK(r)
        self.assertIs(r.json(), True)

    def test_404_headers(self):
        r = self.a.get("/v1/kv/never/written/key")
        self.assertStatus(r, 404)
        self.assertIndex(r)
        self.assertIsNotNone(r.header("X-Consul-KnownLeader"))
        self.assertIsNotNone(r.header("X-Consul-LastContact"))

    def test_binary_and_empty_values(self):
        blob = bytes(range(256)) * 3 + b"\x00tail"
        self.put("bin/all", blob)
        self.assertEqual(unb64(self.get1("bin/all")["Value"]), blob)
        self.put("bin/empty", b"")
        self.assertIsNone(self.get1("bin/empty")["Value"])
        r = self.a.get("/v1/kv/bin/all?raw")
        self.assertOK(r)
        self.assertEqual(r.body, blob)

    def test_key_encoding(self):
        key = "dir with space/app.json"
        self.put(key, b"{}")
        self.assertEqual(self.get1(key)["Key"], key)
        r = self.a.get("/v1/kv/dir%20with%20space/app.json?raw=1")
        self.assertOK(r)
        self.assertEqual(r.body, b"{}")
        key2 = "colon:key/x%y"
        self.put(key2, b"v")
        self.assertEqual(self.get1(key2)["Key"], key2)

    def test_keys_are_case_sensitive(self):
        self.put("Case/Key", b"upper")
        self.assertStatus(self.a.get("/v1/kv/case/key"), 404)

    def test_flags(self):
        self.put("fl/a", b"x", "?flags=42")
        self.assertEqual(self.get1("fl/a")["Flags"], 42)
        self.put("fl/max", b"x", "?flags=18446744073709551615")
        self.assertEqual(self.get1("fl/max")["Flags"], 18446744073709551615)
        r = self.a.put("/v1/kv/fl/bad?flags=abc", b"x")
        self.assertStatus(r, 500)
        self.assertStatus(self.a.get("/v1/kv/fl/bad"), 404)

    def test_cas(self):
        self.put("cas/k", b"v0", "?cas=0")
        self.put("cas/k", b"v-again", "?cas=0", expect=False)
        e = self.get1("cas/k")
        self.assertEqual(unb64(e["Value"]), b"v0")
        self.put("cas/k", b"v1", "?cas=%d" % (e["ModifyIndex"] + 1000), expect=False)
        self.put("cas/k", b"v1", "?cas=%d" % e["ModifyIndex"])
        e1 = self.get1("cas/k")
        self.assertEqual(unb64(e1["Value"]), b"v1")
        self.put("cas/k", b"v2", "?cas=%d" % e["ModifyIndex"], expect=False)
        # delete-cas
        r = self.a.delete("/v1/kv/cas/k?cas=%d" % e["ModifyIndex"])
        self.assertOK(r)
        self.assertIs(r.json(), False)
        r = self.a.delete("/v1/kv/cas/k?cas=0")
        self.assertIs(r.json(), False)
        r = self.a.delete("/v1/kv/cas/k?cas=%d" % e1["ModifyIndex"])
        self.assertIs(r.json(), True)
        self.assertStatus(self.a.get("/v1/kv/cas/k"), 404)

    def test_recurse(self):
        for k in ("rec/b", "rec/a", "rec/a/x", "rec/c/d/e", "recx"):
            self.put(k, k.encode())
        r = self.a.get("/v1/kv/rec/?recurse")
        self.assertOK(r)
        self.assertIndex(r)
        lst = self.assertJSON(r)
        self.assertEqual([e["Key"] for e in lst], ["rec/a", "rec/a/x", "rec/b", "rec/c/d/e"])
        self.assertEqual([unb64(e["Value"]) for e in lst], [b"rec/a", b"rec/a/x", b"rec/b", b"rec/c/d/e"])
        # plain string prefix, not path aware
        lst = self.assertJSON(self.a.get("/v1/kv/rec?recurse=1"))
        self.assertIn("recx", [e["Key"] for e in lst])
        r = self.a.get("/v1/kv/rec-none/?recurse")
        self.assertStatus(r, 404)
        self.assertIndex(r)
        # raw is ignored with recurse
        lst = self.assertJSON(self.a.get("/v1/kv/rec/?recurse&raw"))
        self.assertEqual(len(lst), 4)
        # recursive delete
        r = self.a.delete("/v1/kv/rec/?recurse")
        self.assertIs(r.json(), True)
        self.assertStatus(self.a.get("/v1/kv/rec/?recurse"), 404)
        self.assertEqual(unb64(self.get1("recx")["Value"]), b"recx")

    def test_keys_separator(self):
        for k in ("ks/a", "ks/b/c", "ks/b/d", "ks/e/f/g", "ks/"):
            self.put(k, b"1")
        r = self.a.get("/v1/kv/ks/?keys")
        self.assertOK(r)
        self.assertIndex(r)
        self.assertEqual(self.assertJSON(r), ["ks/", "ks/a", "ks/b/c", "ks/b/d", "ks/e/f/g"])
        r = self.a.get("/v1/kv/ks/?keys&separator=/")
        self.assertEqual(self.assertJSON(r), ["ks/", "ks/a", "ks/b/", "ks/e/"])
        r = self.a.get("/v1/kv/ks/?keys=true&seperator=/")  # the old misspelling
        self.assertEqual(self.assertJSON(r), ["ks/", "ks/a", "ks/b/", "ks/e/"])
        r = self.a.get("/v1/kv/ks-none/?keys")
        self.assertStatus(r, 404)
        self.assertIndex(r)

    def test_conflicting_flags(self):
        for q in ("?cas=0&acquire=x", "?acquire=x&release=x", "?cas=1&release=y"):
            r = self.a.put("/v1/kv/conf/k" + q, b"v")
            self.assertStatus(r, 400, q)
            self.assertTrue(r.text.startswith("Conflicting flags"), r)
        r = self.a.delete("/v1/kv/conf/?recurse&cas=1")
        self.assertStatus(r, 400)
        self.assertTrue(r.text.startswith("Conflicting flags"), r)
        self.assertStatus(self.a.get("/v1/kv/conf/k"), 404)

    def test_missing_key(self):
        self.assertErrorText(self.a.get("/v1/kv/"), 400, "Missing key name")
        self.assertErrorText(self.a.put("/v1/kv/", b"x"), 400, "Missing key name")

    def test_value_size_limit(self):
        self.put("big/exact", b"z" * MAX_VALUE)
        self.assertEqual(len(unb64(self.get1("big/exact")["Value"])), MAX_VALUE)
        r = self.a.put("/v1/kv/big/over", b"z" * (MAX_VALUE + 1))
        self.assertStatus(r, 413)
        self.assertIn("too large", r.text)
        self.assertStatus(self.a.get("/v1/kv/big/over"), 404)
        r = self.a.put("/v1/kv/big/way-over", b"z" * (4 * MAX_VALUE))
        self.assertStatus(r, 413)
        self.assertStatus(self.a.get("/v1/kv/big/way-over"), 404)
        self.assertEqual(len(unb64(self.get1("big/exact")["Value"])), MAX_VALUE)

    def test_raw_content(self):
        self.put("rawk", b"plain text")
        r = self.a.get("/v1/kv/rawk?raw")
        self.assertOK(r)
        self.assertEqual(r.body, b"plain text")


class TxnTest(AgentTestCase):
    def get(self, key):
        r = self.a.get("/v1/kv/" + key)
        if r.status == 404:
            return None
        return r.json()[0]

    def test_success(self):
        ops = [{"KV": {"Verb": "set", "Key": "tx/a", "Value": b64("1")}},
               {"KV": {"Verb": "set", "Key": "tx/b", "Value": b64("2"), "Flags": 7}},
               {"KV": {"Verb": "get", "Key": "tx/a"}}]
        r = self.a.put("/v1/txn", ops)
        self.assertOK(r)
        d = self.assertJSON(r)
        self.assertIsNone(d["Errors"])
        self.assertEqual(len(d["Results"]), 3)
        self.assertEqual(d["Results"][0]["KV"]["Key"], "tx/a")
        self.assertEqual(unb64(d["Results"][2]["KV"]["Value"]), b"1")
        self.assertEqual(self.get("tx/b")["Flags"], 7)
        self.assertEqual(unb64(self.get("tx/b")["Value"]), b"2")
        idx = self.get("tx/a")["ModifyIndex"]
        ops = [{"KV": {"Verb": "cas", "Key": "tx/a", "Value": b64("3"), "Index": idx}},
               {"KV": {"Verb": "delete", "Key": "tx/b"}},
               {"KV": {"Verb": "get-tree", "Key": "tx/"}}]
        r = self.a.put("/v1/txn", ops)
        self.assertOK(r)
        self.assertIsNone(self.get("tx/b"))
        self.assertEqual(unb64(self.get("tx/a")["Value"]), b"3")

    def test_rollback_409(self):
        self.a.put("/v1/kv/txr/existing", b"orig")
        ops = [{"KV": {"Verb": "set", "Key": "txr/new", "Value": b64("n")}},
               {"KV": {"Verb": "set", "Key": "txr/existing", "Value": b64("changed")}},
               {"KV": {"Verb": "cas", "Key": "txr/existing", "Value": b64("x"), "Index": 999999999}}]
        r = self.a.put("/v1/txn", ops)
        self.assertStatus(r, 409)
        d = self.assertJSON(r)
        self.assertIsNone(d["Results"])
        self.assertEqual(len(d["Errors"]), 1)
        self.assertEqual(d["Errors"][0]["OpIndex"], 2)
        self.assertIsInstance(d["Errors"][0]["What"], str)
        self.assertIsNone(self.get("txr/new"))
        self.assertEqual(unb64(self.get("txr/existing")["Value"]), b"orig")
        r = self.a.put("/v1/txn", [{"KV": {"Verb": "check-not-exists", "Key": "txr/existing"}}])
        self.assertStatus(r, 409)

    def test_too_many_ops_413(self):
        ops = [{"KV": {"Verb": "set", "Key": "txm/%d" % i, "Value": b64("v")}} for i in range(65)]
        r = self.a.put("/v1/txn", ops)
        self.assertStatus(r, 413)
        self.assertIn("Transaction contains too many operations (65 > 64)", r.text)
        self.assertIsNone(self.get("txm/0"))
        r = self.a.put("/v1/txn", ops[:64])
        self.assertOK(r)
        self.assertIsNotNone(self.get("txm/63"))

    def test_bad_json(self):
        r = self.a.put("/v1/txn", b"[{")
        self.assertStatus(r, 400)
        self.assertTrue(r.text.startswith("Failed to parse body"), r)


if __name__ == "__main__":
    unittest.main()
