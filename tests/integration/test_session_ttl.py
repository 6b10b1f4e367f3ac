"""Session TTL expiry (§10): a TTL session is invalidated when not renewed within TTL x 2, and a
renewed one survives. Long (about 30 s), so the runner puts it in the parallel group."""

import unittest

from harness import AgentTestCase, wait_until


class SessionTTLTest(AgentTestCase):
    def test_ttl_expiry_and_renew(self):
        a = self.a
        r = a.put("/v1/session/create", {"TTL": "10s", "Behavior": "delete", "LockDelay": "0s", "Name": "dies"})
        self.assertOK(r)
        dies = r.json()["ID"]
        r = a.put("/v1/session/create", {"TTL": "10s", "LockDelay": "0s", "Name": "lives"})
        self.assertOK(r)
        lives = r.json()["ID"]
        self.assertIs(a.put("/v1/kv/ttl/ephemeral?acquire=" + dies, b"e").json(), True)
        self.assertIs(a.put("/v1/kv/ttl/held?acquire=" + lives, b"h").json(), True)

        def gone():
            r = a.put("/v1/session/renew/" + lives)
            self.assertOK(r, "renewing the live session")
            return a.get("/v1/session/info/" + dies).json() == []

        wait_until(gone, 60, 2.0, "the unrenewed TTL session to expire")
        # Behavior delete removed the key the expired session held.
        wait_until(lambda: a.get("/v1/kv/ttl/ephemeral").status == 404, 10, 0.2, "the ephemeral key to go")
        # The renewed session and its lock are still there.
        self.assertEqual([s["ID"] for s in a.get("/v1/session/info/" + lives).json()], [lives])
        e = a.get("/v1/kv/ttl/held").json()[0]
        self.assertEqual(e["Session"], lives)
        r = a.put("/v1/session/renew/" + dies)
        self.assertErrorText(r, 404, "Session id '%s' not found" % dies)


if __name__ == "__main__":
    unittest.main()
