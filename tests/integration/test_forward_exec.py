"""Requests forwarded to another DC and run there in process (federation/exec.c, http/local.c):
what is specific to running them through the HTTP layer without a socket. Two one-server DCs of
their own (fx1, fx2, one CA), fx2 joined to fx1 by retry_join_wan; every request is sent to fx1
with ?dc=fx2 and compared with the same request made on fx2 directly.

- an answer's headers, status and body are those of the same request made directly: a read (index,
  leader, consistency, content type), a 404 with its blocking headers, a 400 on a bad parameter, a
  405 with Allow, a 413 on a body over the limit, HEAD without a body;
- a write with a binary body and query parameters (flags, cas) applies once, with the bytes intact;
- a forwarded blocking query is woken by a write made in fx2 and, with no change, answers when its
  own wait runs out (with the same index);
- 32 threads, each with its own key, write and read back (plain and blocking) through fx1 at once,
  and each gets its own answer;
- fx2 stopped (SIGTERM) while forwarded blocking queries are parked there: each requester gets an
  error at once rather than hanging, and fx2 exits cleanly (exit code 0).

Bounds: waits for the WAN pool are FED_TIMEOUT (shared with test_federation.py); the only timing
assertions are loose upper bounds (a woken query returns long before its 30 s wait; a query with
wait=1s returns within 15 s; requesters get their error within 20 s of the stop)."""

import os
import threading
import time

from harness import wait_until
from test_federation import FED_TIMEOUT, OwnServersTestCase, all_reachable, unb64

# Headers the same request gets whether it is made directly or forwarded (X-Consul-LastContact
# may move between the two).
SAME_HEADERS = ("X-Consul-Index", "X-Consul-KnownLeader", "X-Consul-Effective-Consistency",
                "Content-Type", "X-Consul-Default-ACL-Policy", "Allow")


class ForwardExecTest(OwnServersTestCase):
    name = "fedexec"

    def setUp(self):
        super().setUp()
        self.fx1 = self.server("fx1")
        self.fx2 = self.server("fx2", extra_config={"retry_join_wan": [self.fx1.addr]})
        wait_until(lambda: all_reachable(self.fx1, ["fx1", "fx2"]), FED_TIMEOUT, 0.1,
                   "fx2 reachable from fx1")

    def waiters(self, agent):
        m = agent.get("/v1/agent/metrics").json()
        return next((g["Value"] for g in m.get("Gauges", []) if g["Name"] == "dcgate.http.waiters"), 0)

    def fwd(self, method, path, body=None, **kw):
        return self.fx1.request(method, path + ("&" if "?" in path else "?") + "dc=fx2", body, **kw)

    def assertSameAnswer(self, method, path, body=None, headers=None):
        """The request forwarded and made directly: same status, body and headers."""
        last = None
        for _ in range(4):  # a quiescent DC answers the same twice; allow for a move in between
            f = self.fwd(method, path, body, headers=headers)
            d = self.fx2.request(method, path, body, headers=headers)
            got = (f.status, f.body, [(h, f.header(h)) for h in SAME_HEADERS])
            want = (d.status, d.body, [(h, d.header(h)) for h in SAME_HEADERS])
            if got == want:
                if d.header("X-Consul-LastContact") is not None:
                    self.assertIsNotNone(f.header("X-Consul-LastContact"), f)
                return f
            last = (got, want)
            time.sleep(0.2)
        self.assertEqual(last[0], last[1], "%s %s: forwarded (first) and direct (second) differ"
                         % (method, path))

    def test_answers_as_direct(self):
        self.assertEqual(self.fx2.put("/v1/kv/exec/a", "va").status, 200)
        r = self.assertSameAnswer("GET", "/v1/kv/exec/a")
        self.assertEqual(r.status, 200)
        self.assertEqual(unb64(r.json()[0]["Value"]), "va")
        self.assertSameAnswer("GET", "/v1/kv/exec/?recurse&stale")
        self.assertSameAnswer("GET", "/v1/kv/exec/?keys&separator=/")
        self.assertSameAnswer("GET", "/v1/kv/exec/a?raw")
        self.assertSameAnswer("GET", "/v1/kv/exec/none")  # 404 with X-Consul-Index
        self.assertSameAnswer("GET", "/v1/kv/exec/a?index=x")  # 400 Invalid index
        self.assertSameAnswer("GET", "/v1/kv/exec/a%20b?pretty")
        self.assertSameAnswer("GET", "/v1/catalog/services?consistent")
        self.assertSameAnswer("GET", "/v1/health/service/consul?passing")
        r = self.assertSameAnswer("POST", "/v1/status/leader")  # 405 with Allow
        self.assertEqual(r.status, 405)
        # HEAD: status and headers, no body
        f = self.fwd("HEAD", "/v1/kv/exec/a")
        self.assertEqual((f.status, f.body), (200, b""), f)
        self.assertIsNotNone(f.index, f)
        # a body over the KV limit is refused there, with fx2's text
        big = b"x" * (512 * 1024 + 1)
        r = self.assertSameAnswer("PUT", "/v1/kv/exec/big", big)
        self.assertEqual(r.status, 413, r)
        self.assertEqual(self.fx2.get("/v1/kv/exec/big").status, 404)

    def test_write_with_binary_body_applies_once(self):
        body = bytes(range(256)) * 8
        r = self.fwd("PUT", "/v1/kv/exec/bin?flags=42", body)
        self.assertEqual((r.status, r.text.strip()), (200, "true"), r)
        d = self.fx2.get("/v1/kv/exec/bin")
        self.assertEqual(d.status, 200, d)
        e = d.json()[0]
        self.assertEqual(e["Flags"], 42)
        self.assertEqual(e["CreateIndex"], e["ModifyIndex"], "written once: %r" % e)
        raw = self.fx2.get("/v1/kv/exec/bin?raw")
        self.assertEqual(raw.body, body)
        # check-and-set through the forward: the stale index loses, the current one wins, once
        stale = self.fwd("PUT", "/v1/kv/exec/bin?cas=1", b"no")
        self.assertEqual((stale.status, stale.text.strip()), (200, "false"), stale)
        ok = self.fwd("PUT", "/v1/kv/exec/bin?cas=%d" % e["ModifyIndex"], b"yes")
        self.assertEqual((ok.status, ok.text.strip()), (200, "true"), ok)
        again = self.fwd("PUT", "/v1/kv/exec/bin?cas=%d" % e["ModifyIndex"], b"twice")
        self.assertEqual((again.status, again.text.strip()), (200, "false"), again)
        self.assertEqual(self.fx2.get("/v1/kv/exec/bin?raw").body, b"yes")

    def test_blocking_query_woken_and_timed_out(self):
        self.assertEqual(self.fx2.put("/v1/kv/exec/w", "1").status, 200)
        idx = self.fx2.get("/v1/kv/exec/w").index
        out = {}

        def block():
            t0 = time.monotonic()
            out["r"] = self.fwd("GET", "/v1/kv/exec/w?index=%d&wait=30s" % idx, timeout=60)
            out["t"] = time.monotonic() - t0

        t = threading.Thread(target=block, daemon=True)
        t.start()
        time.sleep(1.0)  # let it park in fx2 (not asserted: a late park still sees the change)
        self.assertEqual(self.fx2.put("/v1/kv/exec/w", "2").status, 200)
        t.join(60)
        self.assertFalse(t.is_alive(), "the forwarded blocking query did not return")
        r = out["r"]
        self.assertEqual(r.status, 200, r)
        self.assertEqual(unb64(r.json()[0]["Value"]), "2")
        self.assertGreater(r.index, idx)
        self.assertLess(out["t"], 25.0, "woken by the write, not by its wait")
        # no change: it answers when its own wait (1 s plus at most 1/16) runs out, same index
        idx2 = r.index
        t0 = time.monotonic()
        r = self.fwd("GET", "/v1/kv/exec/w?index=%d&wait=1s" % idx2, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual((r.status, r.index), (200, idx2), r)
        self.assertGreaterEqual(took, 0.9)
        self.assertLess(took, 15.0)

    def test_many_concurrent_each_gets_its_own_answer(self):
        n = 32
        errors = []
        barrier = threading.Barrier(n)

        def worker(i):
            try:
                key = "exec/many/%d" % i
                val = ("value-%d-" % i) * (i + 1)
                barrier.wait(30)
                r = self.fwd("PUT", "/v1/kv/" + key, val)
                if (r.status, r.text.strip()) != (200, "true"):
                    errors.append("PUT %s: %r" % (key, r))
                    return
                r = self.fwd("GET", "/v1/kv/" + key)
                if r.status != 200 or unb64(r.json()[0]["Value"]) != val or r.json()[0]["Key"] != key:
                    errors.append("GET %s: %r" % (key, r))
                    return
                # a blocking read that returns at once (index behind) with its own key
                r2 = self.fwd("GET", "/v1/kv/%s?index=1&wait=5s" % key)
                if r2.status != 200 or r2.json()[0]["Key"] != key:
                    errors.append("GET %s?index=1: %r" % (key, r2))
            except Exception as e:  # reported below
                errors.append("%d: %r" % (i, e))

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "some workers hang")
        self.assertEqual(errors, [])
        keys = self.fx2.get("/v1/kv/exec/many/?keys").json()
        self.assertEqual(sorted(keys), sorted("exec/many/%d" % i for i in range(n)))

    def test_remote_stopped_with_parked_queries(self):
        self.assertEqual(self.fx2.put("/v1/kv/exec/park", "1").status, 200)
        idx = self.fx2.get("/v1/kv/exec/park").index
        n = 6
        out = [None] * n

        def block(i):
            # distinct waits, so fx1 does not share one WAN request between them
            try:
                out[i] = self.fwd("GET", "/v1/kv/exec/park?index=%d&wait=%ds" % (idx, 60 + i),
                                  timeout=90)
            except Exception as e:  # reported below
                out[i] = e

        threads = [threading.Thread(target=block, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        wait_until(lambda: self.waiters(self.fx2) >= n, 30, 0.1,
                   "the forwarded queries to park in fx2")
        t0 = time.monotonic()
        code = self.fx2.stop()
        self.assertEqual(code, 0, "fx2's exit code\n%s" % self.fx2.log_tail(30))
        for t in threads:
            t.join(30)
        took = time.monotonic() - t0
        self.assertFalse(any(t.is_alive() for t in threads), "requesters still waiting")
        self.assertLess(took, 20.0)
        for i, r in enumerate(out):
            self.assertNotIsInstance(r, Exception, "requester %d: %r" % (i, r))
            self.assertEqual(r.status, 500, "requester %d: %r" % (i, r))
        # fx1 keeps serving, and says fx2 cannot be reached
        self.assertEqual(self.fx1.get("/v1/kv/exec/park").status, 404)
        r = self.fwd("GET", "/v1/kv/exec/park")
        self.assertEqual(r.status, 500, r)
