"""Sessions and locks (§10, §6 acquire/release)."""

import re
import unittest

from harness import AgentTestCase, unb64

UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class SessionTest(AgentTestCase):
    def create(self, body=None):
        r = self.a.put("/v1/session/create", body)
        self.assertOK(r)
        sid = self.assertJSON(r)["ID"]
        self.assertRegex(sid, UUID_RE)
        return sid

    def info(self, sid):
        r = self.a.get("/v1/session/info/" + sid)
        self.assertOK(r)
        self.assertIndex(r)
        return self.assertJSON(r)

    def destroy(self, sid):
        r = self.a.put("/v1/session/destroy/" + sid)
        self.assertOK(r)
        self.assertIs(self.assertJSON(r), True)

    def kv(self, key):
        r = self.a.get("/v1/kv/" + key)
        if r.status == 404:
            return None
        self.assertOK(r)
        return r.json()[0]

    def acquire(self, key, sid, value=b"v", op="acquire"):
        r = self.a.put("/v1/kv/%s?%s=%s" % (key, op, sid), value)
        self.assertOK(r)
        return self.assertJSON(r)

    def test_create_defaults_and_info(self):
        sid = self.create()
        lst = self.info(sid)
        self.assertEqual(len(lst), 1)
        s = lst[0]
        self.assertEqual(s["ID"], sid)
        self.assertEqual(s["Node"], self.a.node)
        self.assertEqual(s["LockDelay"], 15 * 10**9)
        self.assertEqual(s["Behavior"], "release")
        self.assertIn("serfHealth", s["Checks"])
        self.assertIn("serfHealth", s["NodeChecks"])
        self.assertGreater(s["CreateIndex"], 0)
        self.destroy(sid)
        self.assertEqual(self.info(sid), [])

    def test_create_pascal_and_lowercase(self):
        sid = self.create({"Name": "pascal", "LockDelay": "5s", "Behavior": "delete", "TTL": "30s"})
        s = self.info(sid)[0]
        self.assertEqual(s["Name"], "pascal")
        self.assertEqual(s["LockDelay"], 5 * 10**9)
        self.assertEqual(s["Behavior"], "delete")
        self.assertEqual(s["TTL"], "30s")
        sid2 = self.create({"name": "lower", "lockdelay": "7s", "behavior": "delete", "ttl": "20s"})
        s2 = self.info(sid2)[0]
        self.assertEqual((s2["Name"], s2["LockDelay"], s2["Behavior"], s2["TTL"]),
                         ("lower", 7 * 10**9, "delete", "20s"))
        # LockDelay as a number below 1000 means seconds, otherwise nanoseconds
        sid3 = self.create({"LockDelay": 3})
        self.assertEqual(self.info(sid3)[0]["LockDelay"], 3 * 10**9)
        sid4 = self.create({"LockDelay": 2000000000})
        self.assertEqual(self.info(sid4)[0]["LockDelay"], 2 * 10**9)
        for x in (sid, sid2, sid3, sid4):
            self.destroy(x)

    def test_list_node_renew(self):
        sid = self.create({"Name": "listed", "TTL": "60s"})
        r = self.a.get("/v1/session/list")
        self.assertOK(r)
        self.assertIndex(r)
        self.assertIn(sid, [s["ID"] for s in self.assertJSON(r)])
        r = self.a.get("/v1/session/node/" + self.a.node)
        self.assertOK(r)
        self.assertIndex(r)
        self.assertIn(sid, [s["ID"] for s in self.assertJSON(r)])
        r = self.a.get("/v1/session/node/ghost-node")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r), [])
        r = self.a.put("/v1/session/renew/" + sid)
        self.assertOK(r)
        lst = self.assertJSON(r)
        self.assertEqual(lst[0]["ID"], sid)
        self.assertEqual(lst[0]["TTL"], "60s")
        self.destroy(sid)
        self.assertNotIn(sid, [s["ID"] for s in self.a.get("/v1/session/list").json()])

    def test_renew_unknown_404(self):
        bogus = "00000000-0000-0000-0000-000000000001"
        r = self.a.put("/v1/session/renew/" + bogus)
        self.assertErrorText(r, 404, "Session id '%s' not found" % bogus)
        self.assertEqual(self.info(bogus), [])

    def test_bad_ttl_and_missing(self):
        r = self.a.put("/v1/session/create", {"TTL": "1s"})
        self.assertStatus(r, 400)
        r = self.a.put("/v1/session/destroy/")
        self.assertErrorText(r, 400, "Missing session")

    def test_acquire_release(self):
        s1 = self.create({"LockDelay": "0s"})
        s2 = self.create({"LockDelay": "0s"})
        self.assertIs(self.acquire("lock/a", s1, b"held-by-1"), True)
        e = self.kv("lock/a")
        self.assertEqual(e["Session"], s1)
        self.assertEqual(e["LockIndex"], 1)
        self.assertEqual(unb64(e["Value"]), b"held-by-1")
        # re-acquire by the holder updates the value, LockIndex unchanged
        self.assertIs(self.acquire("lock/a", s1, b"again"), True)
        e = self.kv("lock/a")
        self.assertEqual((e["LockIndex"], unb64(e["Value"])), (1, b"again"))
        self.assertIs(self.acquire("lock/a", s2, b"stolen"), False)
        self.assertIs(self.acquire("lock/a", s2, b"x", op="release"), False)
        self.assertEqual(unb64(self.kv("lock/a")["Value"]), b"again")
        self.assertIs(self.acquire("lock/a", s1, b"released", op="release"), True)
        e = self.kv("lock/a")
        self.assertNotIn("Session", e)
        self.assertEqual(unb64(e["Value"]), b"released")
        self.assertIs(self.acquire("lock/a", s2, b"two"), True)
        e = self.kv("lock/a")
        self.assertEqual((e["Session"], e["LockIndex"]), (s2, 2))
        # unknown session cannot acquire
        r = self.a.put("/v1/kv/lock/b?acquire=00000000-0000-0000-0000-00000000beef", b"x")
        self.assertIn(r.status, (200, 500))
        if r.status == 200:
            self.assertIs(r.json(), False)
        self.assertIsNone(self.kv("lock/b"))
        self.destroy(s1)
        self.destroy(s2)
        self.assertNotIn("Session", self.kv("lock/a"))

    def test_destroy_release_behavior_and_lock_delay(self):
        s1 = self.create()  # default lock-delay 15 s
        self.assertIs(self.acquire("lockd/k", s1, b"val"), True)
        self.destroy(s1)
        e = self.kv("lockd/k")
        self.assertIsNotNone(e)
        self.assertNotIn("Session", e)
        self.assertEqual(e["LockIndex"], 1)
        self.assertEqual(unb64(e["Value"]), b"val")
        s2 = self.create()
        # inside the lock-delay window of the invalidated session
        self.assertIs(self.acquire("lockd/k", s2, b"too-soon"), False)
        self.assertEqual(unb64(self.kv("lockd/k")["Value"]), b"val")
        self.destroy(s2)

    def test_invalidated_when_check_goes_critical(self):
        r = self.a.put("/v1/agent/check/register", {"Name": "sesschk", "TTL": "300s", "Status": "passing"})
        self.assertEmpty200(r)
        sid = self.create({"Checks": ["serfHealth", "sesschk"], "LockDelay": "0s"})
        self.assertIn("sesschk", self.info(sid)[0]["Checks"])
        self.assertIs(self.acquire("sesschk/lock", sid, b"v"), True)
        self.assertEmpty200(self.a.put("/v1/agent/check/fail/sesschk"))
        self.assertEqual(self.info(sid), [])
        e = self.kv("sesschk/lock")
        self.assertNotIn("Session", e)
        self.assertEqual(unb64(e["Value"]), b"v")

    def test_create_with_critical_check_refused(self):
        r = self.a.put("/v1/agent/check/register", {"Name": "critchk", "TTL": "300s"})
        self.assertEmpty200(r)
        r = self.a.put("/v1/session/create", {"Checks": ["serfHealth", "critchk"]})
        self.assertStatus(r, 500)
        self.assertIn("critical", r.text)

    def test_behavior_delete(self):
        s = self.create({"Behavior": "delete", "LockDelay": "0s"})
        self.assertIs(self.acquire("eph/node1", s, b"here"), True)
        self.assertIsNotNone(self.kv("eph/node1"))
        self.destroy(s)
        self.assertIsNone(self.kv("eph/node1"))


if __name__ == "__main__":
    unittest.main()
