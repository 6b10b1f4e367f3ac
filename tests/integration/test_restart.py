"""Durability across restarts (DESIGN.md "Catalog and consistency"; consul-api.md §1.10: indexes
must survive restart). An agent with -data-dir takes many KV writes whose sizes are not multiples
of 8 bytes (libraft pads entries; a wrong pad loses the open segment on restart), is killed with
SIGKILL in the middle of a write stream, and restarted: every acknowledged write must be there,
and X-Consul-Index must not go below what clients had already seen."""

import hashlib
import threading
import time
import unittest

from harness import Agent, unb64

STREAM_SECONDS = 3.0
WRITERS = 3


def value_for(key, gen):
    """A deterministic value whose length is never a multiple of 8."""
    h = hashlib.sha256(("%s/%d" % (key, gen)).encode()).digest()
    n = (h[0] * 7 + h[1] + gen) % 1500 + 1
    if n % 8 == 0:
        n += 3
    return (h * (n // 32 + 1))[:n]


class RestartTest(unittest.TestCase):
    """The persistent single server: agent -server -bootstrap-expect 1 -data-dir DIR."""
    dev = False

    def setUp(self):
        self.ag = Agent(name="restart", data_dir=True, node="restart-node", dev=self.dev)
        self.ag.start()
        self.acked = {}     # key -> value of the last acknowledged write (None = deleted)
        self.pending = {}   # key -> value of a write in flight when the agent died
        self.max_index = 0
        self.acks = 0
        self.generation = 0

    def tearDown(self):
        if self._outcome_failed():
            print("\n----- restart agent log tail -----\n%s\n-----" % self.ag.log_tail(80))
        self.ag.close()

    def _outcome_failed(self):
        out = getattr(self, "_outcome", None)
        if out is None:
            return False
        if getattr(out, "success", True) is False:
            return True
        r = getattr(out, "result", None)
        return r is not None and any(t is self for t, _ in r.failures + r.errors)

    def put_ok(self, key, value):
        r = self.ag.put("/v1/kv/" + key, value, timeout=10)
        self.assertEqual(r.status, 200, r)
        self.assertIs(r.json(), True)
        self.acked[key] = value

    def observe_index(self):
        r = self.ag.get("/v1/kv/rs/?recurse", timeout=10)
        self.assertIn(r.status, (200, 404))
        idx = int(r.header("X-Consul-Index"))
        self.max_index = max(self.max_index, idx)
        return idx

    def verify_all(self, where):
        r = self.ag.get("/v1/kv/rs/?recurse", timeout=30)
        self.assertEqual(r.status, 200, "%s: %r" % (where, r))
        idx = int(r.header("X-Consul-Index"))
        self.assertGreaterEqual(idx, self.max_index, "%s: X-Consul-Index went backwards" % where)
        got = {e["Key"]: (unb64(e["Value"]) or b"") for e in r.json()}
        missing, wrong = [], []
        for k, v in self.acked.items():
            allowed = [v]
            if k in self.pending:
                allowed.append(self.pending[k])
            if v is None:
                if k in got and got[k] not in allowed:
                    wrong.append(k)
                continue
            if k not in got:
                if None not in allowed:
                    missing.append(k)
            elif got[k] not in allowed:
                wrong.append(k)
        for k, v in self.pending.items():
            if k not in self.acked and k in got and got[k] != v:
                wrong.append(k)
        self.assertEqual(missing, [], "%s: acknowledged writes lost (%d of %d)" % (where, len(missing), len(self.acked)))
        self.assertEqual(wrong, [], "%s: keys with a value never written" % where)
        # Writes that were in flight are now settled one way or the other.
        for k in list(self.pending):
            self.acked[k] = got.get(k)
        self.pending.clear()
        return idx

    def stream(self, stop_at):
        """WRITERS threads write (and sometimes delete) their own keys until the agent dies or stop_at."""
        lock = threading.Lock()

        def writer(w):
            gen = self.generation * 1000000
            for i in range(100000):
                if time.monotonic() >= stop_at:
                    return
                gen += 1
                key = "rs/w%d/k%d" % (w, i % 97)
                delete = i % 13 == 12
                val = None if delete else value_for(key, gen)
                with lock:
                    self.pending[key] = val
                try:
                    if delete:
                        r = self.ag.delete("/v1/kv/" + key, timeout=5)
                    else:
                        r = self.ag.put("/v1/kv/" + key, val, timeout=5)
                except OSError:
                    return  # the agent is gone; this write stays pending
                if r.status != 200 or r.json() is not True:
                    return
                with lock:
                    self.acked[key] = val
                    del self.pending[key]
                    self.acks += 1

        self.generation += 1
        threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
        for t in threads:
            t.start()
        return threads

    def test_kill9_during_writes(self):
        ag = self.ag
        # Phase 1: a batch of acknowledged writes, keys and values of odd sizes.
        for i in range(200):
            key = "rs/batch/" + "k" * (i % 11) + str(i)
            self.put_ok(key, value_for(key, 0))
        r = ag.put("/v1/catalog/register", {"Node": "ext-persist", "Address": "192.0.2.77",
                                            "Service": {"Service": "persisted", "Port": 7777}})
        self.assertEqual(r.status, 200, r)
        self.observe_index()
        # A graceful restart keeps everything.
        ag.restart(hard=False)
        self.verify_all("after SIGTERM restart")
        svc = ag.get("/v1/catalog/service/persisted").json()
        self.assertEqual([s["ServicePort"] for s in svc], [7777])

        # Phase 2 (twice): kill -9 in the middle of a write stream.
        for cycle in range(2):
            acks_before = self.acks
            stop_at = time.monotonic() + STREAM_SECONDS + 5
            threads = self.stream(stop_at)
            deadline = time.monotonic() + STREAM_SECONDS
            while time.monotonic() < deadline:
                self.observe_index()
                time.sleep(0.05)
            ag.kill9()
            for t in threads:
                t.join(15)
            self.assertFalse(any(t.is_alive() for t in threads))
            self.assertGreater(self.acks, acks_before, "no write was acknowledged during the stream")
            ag.start()
            idx = self.verify_all("after kill -9 #%d" % (cycle + 1))
            print("restart: cycle %d: %d writes acknowledged in the stream, index now %d"
                  % (cycle + 1, self.acks - acks_before, idx))
            # New writes continue above the old index.
            self.put_ok("rs/after/%d" % cycle, value_for("after", cycle))
            r = ag.get("/v1/kv/rs/after/%d" % cycle)
            self.assertEqual(r.status, 200)
            self.assertGreater(int(r.header("X-Consul-Index")), idx - 1)
            self.assertGreater(r.json()[0]["ModifyIndex"], self.max_index)
            self.observe_index()
        svc = ag.get("/v1/catalog/service/persisted").json()
        self.assertEqual([s["ServicePort"] for s in svc], [7777])
        self.assertGreater(len(self.acked), 250)


class DevDataDirRestartTest(RestartTest):
    """The same with `agent -dev -data-dir DIR`, the form the integration brief and DESIGN.md
    ("-data-dir persists the raft log and snapshots") describe."""
    dev = True


if __name__ == "__main__":
    unittest.main()
