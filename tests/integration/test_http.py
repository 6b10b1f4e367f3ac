"""Global HTTP conventions (§1), status (§7), blocking queries (§1.10) and metrics."""

import re
import threading
import time
import unittest

from harness import AgentTestCase, unb64

BLOCKING_READS = ["/v1/catalog/nodes", "/v1/catalog/services", "/v1/catalog/service/consul",
                  "/v1/catalog/node/%(node)s", "/v1/health/node/%(node)s", "/v1/health/checks/consul",
                  "/v1/health/service/consul", "/v1/health/state/any", "/v1/session/list",
                  "/v1/session/node/%(node)s", "/v1/kv/?recurse", "/v1/kv/no-such-key-at-all"]


class ConventionsTest(AgentTestCase):
    def test_status_leader_peers(self):
        r = self.a.get("/v1/status/leader")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r), "%s:8300" % self.a.addr)
        r = self.a.get("/v1/status/peers")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r), ["%s:8300" % self.a.addr])

    def test_index_header_on_blocking_reads(self):
        for p in BLOCKING_READS:
            r = self.a.get(p % {"node": self.a.node})
            self.assertIn(r.status, (200, 404), p)
            self.assertIndex(r)
            self.assertEqual(r.header("X-Consul-KnownLeader"), "true", p)
            self.assertRegex(r.header("X-Consul-LastContact") or "", r"^[0-9]+$", p)
            if r.status == 200:
                self.assertJSON(r)

    def test_json_content_type(self):
        for p in ("/v1/agent/self", "/v1/agent/services", "/v1/agent/checks", "/v1/agent/members",
                  "/v1/catalog/datacenters", "/v1/status/leader", "/v1/status/peers"):
            r = self.a.get(p)
            self.assertOK(r, p)
            self.assertJSON(r)
        r = self.a.put("/v1/kv/ct/k", b"v")
        self.assertJSON(r)
        r = self.a.put("/v1/session/create")
        self.assertJSON(r)

    def test_errors_are_text_plain(self):
        r = self.a.get("/v1/kv/ct/x?index=abc")
        self.assertStatus(r, 400)
        self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)

    def test_void_calls_empty_200(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "void"}))
        self.assertEmpty200(self.a.put("/v1/agent/check/register", {"Name": "voidc", "TTL": "60s"}))
        self.assertEmpty200(self.a.put("/v1/agent/check/pass/voidc"))
        self.assertEmpty200(self.a.put("/v1/agent/check/deregister/voidc"))
        self.assertEmpty200(self.a.put("/v1/agent/service/deregister/void"))

    def test_method_not_allowed(self):
        cases = [("POST", "/v1/kv/m/k", ("GET", "PUT", "DELETE")),
                 ("DELETE", "/v1/status/leader", ("GET",)),
                 ("GET", "/v1/agent/service/register", ("PUT",)),
                 ("GET", "/v1/session/create", ("PUT",)),
                 ("PUT", "/v1/catalog/services", ("GET",)),
                 ("POST", "/v1/health/state/any", ("GET",)),
                 ("GET", "/v1/txn", ("PUT",))]
        for method, path, allowed in cases:
            r = self.a.request(method, path, b"" if method in ("POST", "PUT") else None)
            self.assertStatus(r, 405, "%s %s" % (method, path))
            allow = r.header("Allow")
            self.assertIsNotNone(allow, "no Allow header on 405 for %s %s" % (method, path))
            got = {m.strip() for m in allow.split(",")}
            for m in allowed:
                self.assertIn(m, got, "%s %s: Allow %r" % (method, path, allow))
            self.assertNotIn(method, got)
            self.assertEqual(r.text.rstrip("\n"), "method %s not allowed" % method)
        self.assertStatus(self.a.get("/v1/kv/m/k"), 404)

    def test_options(self):
        r = self.a.request("OPTIONS", "/v1/kv/anything")
        self.assertOK(r)
        allow = {m.strip() for m in (r.header("Allow") or "").split(",")}
        self.assertTrue({"OPTIONS", "GET", "PUT", "DELETE"} <= allow, r)

    def test_unknown_path(self):
        for p in ("/v1/nonsense", "/v1/agent/nonsense", "/v1/catalog/bogus/x"):
            r = self.a.get(p)
            self.assertErrorText(r, 404, "Invalid URL path: not a recognized HTTP API endpoint")

    def test_root(self):
        r = self.a.get("/")
        self.assertIn(r.status, (200, 301), r)

    def test_unknown_datacenter(self):
        # §1.8: forwardable endpoints with an unknown ?dc answer 500 "No path to datacenter"
        # (and a write must not land in the local DC); agent endpoints ignore ?dc.
        node = self.a.node
        cases = [("GET", "/v1/catalog/nodes", None), ("GET", "/v1/catalog/services", None),
                 ("GET", "/v1/catalog/service/consul", None), ("GET", "/v1/catalog/node/" + node, None),
                 ("GET", "/v1/health/service/consul", None), ("GET", "/v1/health/state/any", None),
                 ("GET", "/v1/health/node/" + node, None), ("GET", "/v1/health/checks/consul", None),
                 ("GET", "/v1/kv/dcx/k", None), ("GET", "/v1/kv/dcx/?recurse", None),
                 ("PUT", "/v1/kv/dcx/k", b"remote"), ("DELETE", "/v1/kv/dcx/keep", None),
                 ("GET", "/v1/session/list", None), ("GET", "/v1/session/node/" + node, None),
                 ("GET", "/v1/session/info/00000000-0000-0000-0000-000000000000", None),
                 ("PUT", "/v1/session/create", None),
                 ("PUT", "/v1/txn", [{"KV": {"Verb": "set", "Key": "dcx/t", "Value": "dg=="}}]),
                 ("GET", "/v1/status/leader", None), ("GET", "/v1/status/peers", None)]
        self.assertOK(self.a.put("/v1/kv/dcx/keep", b"local"))
        wrong = []
        for method, path, body in cases:
            sep = "&" if "?" in path else "?"
            url = path + sep + "dc=nowhere"
            r = self.a.request(method, url, body)
            if r.status != 500 or "No path to datacenter" not in r.text:
                wrong.append("%s %s -> %d %r" % (method, url, r.status, r.body[:60]))
        if self.a.get("/v1/kv/dcx/k").status != 404:
            wrong.append("PUT /v1/kv/dcx/k?dc=nowhere wrote the key in the local DC")
        if self.a.get("/v1/kv/dcx/t").status != 404:
            wrong.append("PUT /v1/txn?dc=nowhere wrote the key in the local DC")
        if self.a.get("/v1/kv/dcx/keep").status != 200:
            wrong.append("DELETE /v1/kv/dcx/keep?dc=nowhere deleted the local key")
        self.assertEqual(wrong, [], "expected 500 'No path to datacenter' and no local effect")
        self.assertOK(self.a.get("/v1/catalog/nodes?dc=dc1"))
        self.assertOK(self.a.get("/v1/agent/self?dc=nowhere"))
        self.assertOK(self.a.get("/v1/agent/services?dc=nowhere"))

    def test_pretty(self):
        r = self.a.get("/v1/agent/self?pretty")
        self.assertOK(r)
        self.assertTrue(r.body.endswith(b"\n"))
        self.assertIn(b'\n    "', r.body)
        compact = self.a.get("/v1/catalog/datacenters")
        self.assertNotIn(b"\n ", compact.body)

    def test_stale_consistent_conflict(self):
        r = self.a.get("/v1/catalog/nodes?stale&consistent")
        self.assertErrorText(r, 400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        for q in ("?stale", "?stale=", "?stale=1", "?consistent", "?consistent=1"):
            r = self.a.get("/v1/catalog/nodes" + q)
            self.assertOK(r, q)

    def test_metrics_prometheus(self):
        r = self.a.get("/v1/agent/metrics?format=prometheus")
        self.assertOK(r)
        ct = r.header("Content-Type") or ""
        self.assertTrue(ct.startswith("text/plain"), ct)
        lines = r.text.splitlines()
        self.assertTrue(any(l.startswith("# TYPE ") for l in lines), r.text[:500])
        sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? '
                            r'(-?[0-9.eE+-]+|NaN|[+-]Inf)( -?[0-9]+)?$')
        samples = 0
        for l in lines:
            if not l or l.startswith("#"):
                if l.startswith("# TYPE "):
                    self.assertRegex(l, r"^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped)$")
                continue
            self.assertRegex(l, sample)
            samples += 1
        self.assertGreater(samples, 0)

    def test_index_monotonic(self):
        last = 0
        for i in range(20):
            r = self.a.put("/v1/kv/mono/k", ("v%d" % i).encode())
            self.assertOK(r)
            g = self.a.get("/v1/kv/mono/k")
            idx = self.assertIndex(g)
            self.assertGreater(idx, last)
            self.assertEqual(g.json()[0]["ModifyIndex"], idx)
            last = idx


class BlockingTest(AgentTestCase):
    def later(self, delay, fn):
        """Runs fn in a thread after delay seconds; returns the thread (joined by the caller)."""
        box = {}

        def run():
            time.sleep(delay)
            try:
                box["result"] = fn()
            except Exception as e:  # reported by the caller
                box["error"] = e

        t = threading.Thread(target=run, daemon=True)
        t.box = box
        t.start()
        return t

    def test_kv_returns_on_change(self):
        self.a.put("/v1/kv/blk/a", b"old")
        r = self.a.get("/v1/kv/blk/a")
        idx = self.assertIndex(r)
        t = self.later(1.0, lambda: self.a.put("/v1/kv/blk/a", b"new"))
        r = self.a.get("/v1/kv/blk/a?index=%d&wait=60s" % idx, timeout=90)
        t.join(30)
        self.assertNotIn("error", t.box)
        self.assertOK(r)
        self.assertGreater(self.assertIndex(r), idx)
        self.assertEqual(unb64(r.json()[0]["Value"]), b"new")

    def test_kv_returns_after_wait_without_change(self):
        self.a.put("/v1/kv/blk/still", b"same")
        r = self.a.get("/v1/kv/blk/still")
        idx = self.assertIndex(r)
        t0 = time.monotonic()
        r = self.a.get("/v1/kv/blk/still?index=%d&wait=2s" % idx, timeout=60)
        elapsed = time.monotonic() - t0
        self.assertOK(r)
        self.assertEqual(self.assertIndex(r), idx)
        self.assertEqual(unb64(r.json()[0]["Value"]), b"same")
        # It blocked rather than answering at once (a lower bound only: the wait is behaviour).
        self.assertGreaterEqual(elapsed, 1.5)

    def test_unrelated_write_does_not_wake_with_new_index(self):
        self.a.put("/v1/kv/blk/mine", b"m")
        idx = self.assertIndex(self.a.get("/v1/kv/blk/mine"))
        t = self.later(0.5, lambda: self.a.put("/v1/kv/other/unrelated", b"u"))
        r = self.a.get("/v1/kv/blk/mine?index=%d&wait=3s" % idx, timeout=60)
        t.join(30)
        self.assertOK(r)
        self.assertEqual(unb64(r.json()[0]["Value"]), b"m")
        self.assertEqual(self.assertIndex(r), idx)

    def test_missing_key_wakes_on_create(self):
        r = self.a.get("/v1/kv/blk/not-yet")
        self.assertStatus(r, 404)
        idx = self.assertIndex(r)
        t = self.later(1.0, lambda: self.a.put("/v1/kv/blk/not-yet", b"born"))
        r = self.a.get("/v1/kv/blk/not-yet?index=%d&wait=60s" % idx, timeout=90)
        t.join(30)
        self.assertOK(r)
        self.assertEqual(unb64(r.json()[0]["Value"]), b"born")

    def test_recurse_wakes_on_delete(self):
        self.a.put("/v1/kv/blkdel/x", b"1")
        self.a.put("/v1/kv/blkdel/y", b"2")
        r = self.a.get("/v1/kv/blkdel/?recurse")
        idx = self.assertIndex(r)
        t = self.later(1.0, lambda: self.a.delete("/v1/kv/blkdel/x"))
        r = self.a.get("/v1/kv/blkdel/?recurse&index=%d&wait=60s" % idx, timeout=90)
        t.join(30)
        self.assertOK(r)
        self.assertGreater(self.assertIndex(r), idx)
        self.assertEqual([e["Key"] for e in r.json()], ["blkdel/y"])

    def test_catalog_services_wakes_on_register(self):
        r = self.a.get("/v1/catalog/services")
        idx = self.assertIndex(r)
        t = self.later(1.0, lambda: self.a.put("/v1/agent/service/register", {"Name": "blk-new-svc"}))
        r = self.a.get("/v1/catalog/services?index=%d&wait=30000ms" % idx, timeout=90)
        t.join(30)
        self.assertOK(r)
        self.assertGreater(self.assertIndex(r), idx)
        self.assertIn("blk-new-svc", r.json())

    def test_health_service_wakes_on_check_change(self):
        self.a.put("/v1/agent/service/register", {"Name": "blk-h", "Check": {"TTL": "300s"}})
        r = self.a.get("/v1/health/service/blk-h?passing")
        self.assertEqual(r.json(), [])
        idx = self.assertIndex(r)
        t = self.later(1.0, lambda: self.a.put("/v1/agent/check/pass/service:blk-h"))
        r = self.a.get("/v1/health/service/blk-h?passing&index=%d&wait=1m" % idx, timeout=120)
        t.join(30)
        self.assertOK(r)
        self.assertGreater(self.assertIndex(r), idx)
        self.assertEqual(len(r.json()), 1)

    def test_future_index_times_out(self):
        r = self.a.get("/v1/kv/blk/future-missing")
        idx = self.assertIndex(r)
        r = self.a.get("/v1/kv/blk/future-missing?index=%d&wait=1s" % (idx + 1000000), timeout=60)
        self.assertStatus(r, 404)
        self.assertIndex(r)

    def test_bad_index_and_wait(self):
        for q in ("index=abc", "index=-1", "index=1.5", "index=18446744073709551616"):
            r = self.a.get("/v1/kv/blk/a?" + q)
            self.assertErrorText(r, 400, "Invalid index")
        for q in ("index=1&wait=10", "index=1&wait=abc", "index=1&wait=5x"):
            r = self.a.get("/v1/kv/blk/a?" + q)
            self.assertErrorText(r, 400, "Invalid wait time")
        for q in ("index=1&wait=300ms", "index=1&wait=1s", "index=1&wait=0"):
            r = self.a.get("/v1/catalog/nodes?" + q, timeout=60)
            self.assertOK(r, q)


if __name__ == "__main__":
    unittest.main()
