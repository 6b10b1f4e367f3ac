"""A datacenter of three servers: LAN gossip membership, raft bootstrapped by -bootstrap-expect,
writes and default-mode reads on any server, leader failure, a server cut off, a server
restarted, raft membership changes (join, leave, remove-peer, a dead server removed after
reconnect_timeout).

Each test class starts its own three real dcgate servers on 127.0.0.x; the destructive tests
get a cluster of their own. Every wait is bounded.
"""

import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import Cluster, Server, dcgate_bin, quote, unb64, wait_members_alive, wait_until, LEADER_TIMEOUT

SLOW = os.environ.get("DCGATE_SANITIZED") == "1"
WAIT = 60.0 if SLOW else 20.0


def members(agent):
    r = agent.get("/v1/agent/members")
    assert r.status == 200, r
    return {m["Name"]: m for m in r.json()}


def metric(agent, name):
    """A counter or gauge of /v1/agent/metrics (0 when absent)."""
    r = agent.get("/v1/agent/metrics")
    for g in r.json().get("Counters", []) + r.json().get("Gauges", []):
        if g["Name"] == name:
            return max(g.get("Count", 0), g.get("Sum", 0), g.get("Value", 0))
    return 0


def peers(agent):
    r = agent.get("/v1/status/peers")
    assert r.status == 200, r
    return sorted(r.json())


def put(agent, key, value, timeout=30.0):
    return agent.put("/v1/kv/" + quote(key), body=value.encode(), timeout=timeout)


def kv_keys(agent, prefix, stale=True):
    params = {"recurse": "1"}
    if stale:
        params["stale"] = ""
    r = agent.get("/v1/kv/" + quote(prefix), params=params)
    if r.status == 404:
        return {}
    assert r.status == 200, r
    return {e["Key"]: e for e in r.json()}


def cli(agent, *args):
    env = dict(os.environ, DCGATE_HTTP_ADDR="%s:%d" % (agent.addr, agent.http_port))
    return subprocess.run([dcgate_bin()] + list(args), env=env, capture_output=True, text=True,
                          timeout=30)


class ClusterTest(unittest.TestCase):
    """One healthy three-server cluster shared by non-destructive tests."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3).start()

    @classmethod
    def tearDownClass(cls):
        cls.cluster.close()

    def test_members_everywhere(self):
        c = self.cluster
        names = {s.node for s in c.servers}
        for s in c.servers:
            ms = wait_members_alive(s, names, WAIT)
            for name, m in ms.items():
                self.assertEqual(m["Tags"]["role"], "consul")
                self.assertEqual(m["Tags"]["dc"], "dc1")
                self.assertEqual(m["Tags"]["port"], "8300")
                self.assertEqual(m["Tags"]["expect"], "3")
                self.assertEqual(m["Port"], 8301)
                self.assertIn("build", m["Tags"])
        out = cli(c.servers[1], "members")
        self.assertEqual(out.returncode, 0, out.stderr)
        for name in names:
            self.assertIn(name, out.stdout)
        self.assertEqual(out.stdout.count("alive"), 3, out.stdout)

    def test_raft_peers_and_configuration(self):
        c = self.cluster
        want = sorted("%s:8300" % s.addr for s in c.servers)
        leader = c.leader()
        for s in c.servers:
            wait_until(lambda: peers(s) == want, WAIT, what="3 voters on %s" % s.node)
            conf = s.get("/v1/operator/raft/configuration").json()
            self.assertEqual(sorted(x["Address"] for x in conf["Servers"]), want)
            self.assertEqual([x["Node"] for x in conf["Servers"] if x["Leader"]], [leader.node])
            self.assertTrue(all(x["Voter"] for x in conf["Servers"]))
            self.assertGreater(conf["Index"], 0)
        out = cli(c.servers[2], "operator", "raft", "list-peers")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.count("follower"), 2, out.stdout)
        self.assertEqual(out.stdout.count("leader"), 1, out.stdout)

    def test_write_anywhere_read_everywhere(self):
        c = self.cluster
        for i, w in enumerate(c.servers):
            key = "rw/%d" % i
            r = put(w, key, "from-%s" % w.node)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.text.strip(), "true")
            # the default mode reads what the leader has: the write is seen at once everywhere
            for s in c.servers:
                g = s.get("/v1/kv/" + key, params={"raw": ""})
                self.assertEqual(g.status, 200, "%s on %s: %r" % (key, s.node, g))
                self.assertEqual(g.text, "from-%s" % w.node)
                self.assertEqual(g.header("X-Consul-KnownLeader"), "true")
                self.assertIsNotNone(g.header("X-Consul-LastContact"))

    def test_service_on_follower_in_every_catalog(self):
        c = self.cluster
        f = c.followers()[0]
        r = f.put("/v1/agent/service/register",
                  body=json.dumps({"Name": "web", "ID": "web-f", "Port": 8080,
                                   "Check": {"TTL": "60s"}}).encode())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(f.put("/v1/agent/check/pass/service:web-f").status, 200)
        for s in c.servers:
            def passing():
                r = s.get("/v1/health/service/web", params={"passing": ""})
                return r.status == 200 and [e["Node"]["Node"] for e in r.json()] == [f.node]
            wait_until(passing, WAIT, what="web passing on %s" % s.node)
        # every server's node is in the catalog with its serfHealth check passing
        for s in c.servers:
            r = s.get("/v1/health/service/consul", params={"passing": ""})
            self.assertEqual(sorted(e["Node"]["Node"] for e in r.json()),
                             sorted(x.node for x in c.servers))

    def test_session_renewed_through_a_follower(self):
        # the leader keeps session TTL timers: renewals sent to a follower must reach it, or the
        # session expires after 2 x TTL
        f = self.cluster.followers()[0]
        r = f.put("/v1/session/create", body=json.dumps({"TTL": "10s", "Name": "f"}).encode())
        self.assertEqual(r.status, 200, r)
        sid = r.json()["ID"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < 26:
            r = f.put("/v1/session/renew/" + sid)
            self.assertEqual(r.status, 200, "renew after %.0fs: %r" % (time.monotonic() - t0, r))
            time.sleep(3)
        r = f.get("/v1/session/info/" + sid)
        self.assertEqual(len(r.json() or []), 1, "the session expired despite renewals")
        r = f.put("/v1/session/renew/00000000-0000-0000-0000-000000000000")
        self.assertEqual(r.status, 404, r)

    def test_concurrent_writes_through_a_follower(self):
        # a follower sends the writes of one loop turn to the leader together: each still gets
        # its own answer (a CAS race on one key has exactly one winner) and lands once
        f = self.cluster.followers()[0]
        lead = self.cluster.leader()
        batches = lambda: metric(f, "dcgate.raft.forward_batches")
        before = batches()
        results, errors = {}, []

        def writer(t):
            try:
                for i in range(15):
                    r = put(f, "fwd/%02d/%02d" % (t, i), "v%d.%d" % (t, i))
                    results[(t, i)] = (r.status, r.text.strip())
                # everyone races to create the same key: one "true", the rest "false"
                r = f.put("/v1/kv/fwd-race", body=b"t%d" % t, params={"cas": "0"})
                results[(t, "race")] = (r.status, r.text.strip())
            except Exception as e:  # reported below: a thread cannot fail the test itself
                errors.append(repr(e))

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(24)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        self.assertEqual(errors, [])
        self.assertEqual({k: v for k, v in results.items() if k[1] != "race" and v != (200, "true")}, {})
        race = [v for k, v in results.items() if k[1] == "race"]
        self.assertEqual(len(race), 24)
        self.assertEqual(sorted(race), [(200, "false")] * 23 + [(200, "true")], race)
        keys = {e["Key"]: unb64(e["Value"]).decode() for e in lead.get("/v1/kv/fwd/", params={"recurse": ""}).json()}
        self.assertEqual(keys, {"fwd/%02d/%02d" % (t, i): "v%d.%d" % (t, i) for t in range(24) for i in range(15)})
        self.assertGreater(batches(), before, "no write went to the leader in a batch")

    def test_join_refused_for_bad_address(self):
        s = self.cluster.servers[0]
        r = s.put("/v1/agent/join/not_an_address")  # neither an address nor a host name
        self.assertEqual(r.status, 500)
        self.assertIn("Failed to join not_an_address", r.text)


class LeaderFailureTest(unittest.TestCase):
    """kill -9 of the leader under a stream of writes from several clients."""

    def setUp(self):
        self.cluster = Cluster(3).start()

    def tearDown(self):
        self.cluster.close()

    def test_leader_killed_during_writes(self):
        c = self.cluster
        old = c.leader()
        acked, lock, stop = [], threading.Lock(), threading.Event()
        indexes = {s.node: 0 for s in c.servers}
        backwards = []

        def writer(w):
            i = 0
            while not stop.is_set() and i < 100000:
                s = c.servers[(w + i) % 3]
                key = "w/%d/%d" % (w, i)
                i += 1
                try:
                    r = put(s, key, "v%d" % i, timeout=20)
                except OSError:
                    continue
                if r.status == 200 and r.text.strip() == "true":
                    with lock:
                        acked.append(key)

        def reader():
            n = 0
            while not stop.is_set() and n < 100000:
                n += 1
                for s in c.servers:
                    if not s.running():
                        continue
                    try:
                        r = s.get("/v1/kv/w", params={"recurse": "", "stale": "", "keys": ""},
                                  timeout=5)
                    except OSError:
                        continue
                    idx = r.index if r.status in (200, 404) else None
                    if idx is not None:
                        if idx < indexes[s.node]:
                            backwards.append((s.node, indexes[s.node], idx))
                        indexes[s.node] = max(indexes[s.node], idx)
                time.sleep(0.05)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
        threads.append(threading.Thread(target=reader))
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(acked) >= 50, WAIT, what="writes before the kill")
            old.kill9()
            survivors = [s for s in c.servers if s is not old]
            new = c.wait_leader(WAIT, among=survivors)
            self.assertIsNot(new, old)
            n = len(acked)
            wait_until(lambda: len(acked) >= n + 50, WAIT, what="writes after the new leader")
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        self.assertEqual(backwards, [], "an index went backwards")
        for s in survivors:
            # the default mode reads what the leader has applied
            keys = kv_keys(s, "w/", stale=False)
            missing = [k for k in acked if k not in keys]
            self.assertEqual(missing, [], "acknowledged writes missing on %s" % s.node)
            # and every server applies them too
            wait_until(lambda: set(acked) <= set(kv_keys(s, "w/")), WAIT,
                       what="every acknowledged write applied on %s" % s.node)
        # the old leader comes back with its data dir and catches up
        old.start(wait=False)
        c.wait_leader(WAIT)
        want = set(acked)
        wait_until(lambda: want <= set(kv_keys(old, "w/")), WAIT,
                   what="the restarted server has every acknowledged write")


class CutOffTest(unittest.TestCase):
    """A server cut off from the other two (they are frozen with SIGSTOP) cannot accept writes;
    a server that missed writes while frozen catches up."""

    def setUp(self):
        self.cluster = Cluster(3).start()

    def tearDown(self):
        for s in self.cluster.servers:
            if s.running():
                s.proc.send_signal(signal.SIGCONT)
        self.cluster.close()

    def test_alone_cannot_write(self):
        c = self.cluster
        lone = c.followers()[0]
        others = [s for s in c.servers if s is not lone]
        for s in others:
            s.proc.send_signal(signal.SIGSTOP)
        try:
            # once it notices (an election timeout), it knows no leader
            try:
                wait_until(lambda: lone.get("/v1/status/leader").json() == "", WAIT,
                           what="the lone server to know no leader")
            except AssertionError as e:
                raise AssertionError("%s\n%s" % (e, lone.log_tail(80)))
            r = put(lone, "alone/x", "1", timeout=30)
            self.assertEqual(r.status, 500, r)
            self.assertEqual(r.text.strip(), "No cluster leader")
            r = lone.get("/v1/kv/alone/x")
            self.assertEqual(r.status, 500, r)
            self.assertEqual(r.text.strip(), "No cluster leader")
            # a stale read is still served, and says no leader is known
            r = lone.get("/v1/kv/alone/x", params={"stale": ""})
            self.assertEqual(r.status, 404, r)
            self.assertEqual(r.header("X-Consul-KnownLeader"), "false")
        finally:
            for s in others:
                s.proc.send_signal(signal.SIGCONT)
        c.wait_leader(WAIT)
        wait_until(lambda: put(lone, "alone/y", "2").status == 200, WAIT, what="writes again")
        self.assertEqual(lone.get("/v1/kv/alone/x").status, 404)

    def test_cut_off_leader_refuses_consistent(self):
        """?consistent confirms leadership with a quorum first (DESIGN.md): a leader whose two
        peers are frozen does not answer it, while ?stale is still served."""
        c = self.cluster
        lead = c.leader()
        self.assertEqual(put(lead, "cons/x", "1").status, 200)
        r = lead.get("/v1/kv/cons/x", params={"consistent": ""})
        self.assertEqual(r.status, 200, r)
        others = [s for s in c.servers if s is not lead]
        for s in others:
            s.proc.send_signal(signal.SIGSTOP)
        try:
            r = lead.get("/v1/kv/cons/x", params={"consistent": ""}, timeout=30)
            self.assertEqual((r.status, r.text.strip()), (500, "No cluster leader"), r)
            r = lead.get("/v1/kv/cons/x", params={"stale": ""})
            self.assertEqual(r.status, 200, r)
        finally:
            for s in others:
                s.proc.send_signal(signal.SIGCONT)
        c.wait_leader(WAIT)
        for s in c.servers:
            wait_until(lambda: s.get("/v1/kv/cons/x", params={"consistent": ""}).status == 200,
                       WAIT, what="?consistent answered again on %s" % s.node)

    def test_frozen_follower_catches_up(self):
        c = self.cluster
        lagging = c.followers()[0]
        writer = [s for s in c.servers if s is not lagging][0]
        lagging.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(30):
                r = put(writer, "catch/%d" % i, str(i))
                self.assertEqual(r.status, 200, r)
        finally:
            lagging.proc.send_signal(signal.SIGCONT)
        want = {"catch/%d" % i for i in range(30)}
        wait_until(lambda: want <= set(kv_keys(lagging, "catch/")), WAIT,
                   what="the frozen server has the writes it missed")


class RaftSnapshotTest(unittest.TestCase):
    """Raft snapshots every raft_snapshot_threshold entries (64 here): a follower that was away
    while the leader's log moved past what it keeps gets the snapshot installed and catches up,
    and a server restarted with its data dir starts from its snapshot."""

    def setUp(self):
        self.cluster = Cluster(3, config={"raft_snapshot_threshold": 64}).start()

    def tearDown(self):
        for s in self.cluster.servers:
            if s.running():
                s.proc.send_signal(signal.SIGCONT)
        self.cluster.close()

    def snapshots(self, s):
        return metric(s, "dcgate.raft.snapshots")

    def test_snapshot_install_and_restart(self):
        c = self.cluster
        lagging = c.followers()[0]
        writer = [s for s in c.servers if s is not lagging][0]
        lagging.proc.send_signal(signal.SIGSTOP)
        try:
            for i in range(300):
                try:
                    r = put(writer, "snap/%03d" % i, str(i))
                except OSError as e:
                    # a write with no answer was seen once in a full run: the servers' logs
                    # (raft's state, the stall warning) are what explains it
                    logs = "\n".join("--- %s (%s)\n%s" % (s.node, "lagging" if s is lagging else
                                                          "writer" if s is writer else "other",
                                                          s.log_tail(40)) for s in c.servers)
                    raise AssertionError("PUT snap/%03d: %s\n%s" % (i, e, logs)) from e
                self.assertEqual(r.status, 200, r)
        finally:
            lagging.proc.send_signal(signal.SIGCONT)
        self.assertGreater(self.snapshots(writer), 0, "no raft snapshot after 300 writes")
        want = {"snap/%03d" % i for i in range(300)}
        wait_until(lambda: want <= set(kv_keys(lagging, "snap/")), WAIT,
                   what="the lagging server catching up (from a snapshot)")
        # a restart starts from the snapshot plus the log after it
        lagging.stop()
        lagging.start(wait=False)
        c.wait_leader(WAIT)
        keys = wait_until(lambda: (lambda k: k if want <= set(k) else None)(kv_keys(lagging, "snap/")),
                          WAIT, what="every key after the restart")
        self.assertEqual(keys["snap/299"]["Value"], "Mjk5")  # base64 of "299"


class MembershipChangeTest(unittest.TestCase):
    """Raft membership follows gossip: a new server that joins becomes a voter, one that leaves
    is removed, remove-peer removes one, and a dead one is removed after reconnect_timeout."""

    def setUp(self):
        self.cluster = Cluster(3, config={"reconnect_timeout": "4s"})
        self.extra = []
        try:
            self.cluster.start()
        except Exception:
            self.cluster.close()
            raise

    def tearDown(self):
        for s in self.extra:
            s.close()
        self.cluster.close()

    def voters(self, s):
        return peers(s)

    def test_join_leave_and_dead_server(self):
        c = self.cluster
        first = c.servers[0]
        # a fourth server without -bootstrap-expect joins through the HTTP API
        s4 = Server(0, node="s4", config={"reconnect_timeout": "4s"})
        self.extra.append(s4)
        s4.start(wait=False)
        wait_until(lambda: s4.get("/v1/agent/self").status == 200, WAIT, what="s4 serving HTTP")
        r = s4.put("/v1/agent/join/" + first.addr)
        self.assertEqual(r.status, 200, r)
        want4 = sorted("%s:8300" % s.addr for s in c.servers + [s4])
        wait_until(lambda: self.voters(first) == want4, WAIT, what="s4 a voter")
        wait_until(lambda: s4.get("/v1/kv/none").status == 404, WAIT, what="s4 serving reads")
        # graceful leave: left in gossip, out of raft
        out = cli(s4, "leave")
        self.assertEqual(out.returncode, 0, out.stderr)
        s4.wait_exit(30)
        want3 = sorted("%s:8300" % s.addr for s in c.servers)
        wait_until(lambda: self.voters(first) == want3, WAIT, what="s4 removed after leave")
        wait_until(lambda: members(first).get("s4", {}).get("Status") in (3, None), WAIT,
                   what="s4 left")
        # a follower killed: failed, then reaped after reconnect_timeout and removed from raft
        dead = c.followers()[0]
        dead.kill9()
        live = [s for s in c.servers if s is not dead]
        wait_until(lambda: members(live[0])[dead.node]["Status"] == 4, WAIT, what="failed")
        wait_until(lambda: {ch["CheckID"]: ch["Status"] for ch in
                            live[0].get("/v1/health/node/" + dead.node).json()}
                   .get("serfHealth") == "critical", WAIT, what="serfHealth critical")
        want2 = sorted("%s:8300" % s.addr for s in live)
        wait_until(lambda: self.voters(live[0]) == want2, WAIT,
                   what="the dead server removed from raft")
        # the two left still take writes
        self.assertEqual(put(live[1], "after/dead", "1").status, 200)

    def test_remove_peer(self):
        c = self.cluster
        victim = c.followers()[0]
        victim.kill9()
        live = [s for s in c.servers if s is not victim]
        out = cli(live[0], "operator", "raft", "remove-peer", "-address", "%s:8300" % victim.addr)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("Removed peer", out.stdout)
        want = sorted("%s:8300" % s.addr for s in live)
        wait_until(lambda: peers(live[1]) == want, WAIT, what="peer removed")
        r = live[0].delete("/v1/operator/raft/peer", params={"address": "127.0.0.1:1"})
        self.assertEqual(r.status, 500)
        self.assertIn("not found in the Raft configuration", r.text)
        r = live[0].delete("/v1/operator/raft/peer")
        self.assertEqual(r.status, 400)


if __name__ == "__main__":
    unittest.main()
