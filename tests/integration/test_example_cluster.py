"""examples/cluster/run.sh on four leased loopback addresses: three servers with
-bootstrap-expect=3 and one client agent, all joined through -retry-join to the first server. The
script talks to the client agent only; this test checks what it prints: a leader elected, the four
members alive as the client agent sees them, three voters in raft, the service registered with
the client agent passing in every server's health answer and in python-consul's, the KV value
written through the client agent read back through it and from every server. Afterwards nothing
listens on the four addresses any more (the script's EXIT trap stopped every agent).

Bound: the script gets 300 s (its own waits are at most 30 s each; a run takes a few seconds)."""

import json
import os
import socket
import subprocess
import unittest

from harness import SERVER_PORT, HTTP_PORT, AddressLease, dcgate_bin

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = ("s1", "s2", "s3", "c1")
SERVERS = NAMES[:3]


class ClusterExampleTest(unittest.TestCase):
    SCRIPT = os.path.join(ROOT, "examples", "cluster", "run.sh")

    def test_run_sh(self):
        leases = []
        try:
            for _ in NAMES:
                leases.append(AddressLease(avoid=tuple(l.n for l in leases)))
            addr = {n: l.addr for n, l in zip(NAMES, leases)}
            env = dict(os.environ, DCGATE=dcgate_bin(), S1_ADDR=addr["s1"], S2_ADDR=addr["s2"],
                       S3_ADDR=addr["s3"], C1_ADDR=addr["c1"])
            for k in list(env):
                if k.startswith("CONSUL_") or k.startswith("DCGATE_HTTP") or k == "KEEP":
                    env.pop(k)
            p = subprocess.run(["bash", self.SCRIPT], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
            out = p.stdout.decode("utf-8", "replace")
            err = p.stderr.decode("utf-8", "replace")
            what = "run.sh exit %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, out[-8000:], err[-6000:])
            self.assertEqual(p.returncode, 0, what)
            self.assertEqual(out.rstrip().splitlines()[-1], "OK", what)
            sections = {}
            cur = None
            for line in out.splitlines():
                if line.startswith("==> "):
                    cur = line[4:]
                    self.assertNotIn(cur, sections, what)
                    sections[cur] = []
                elif cur is not None and line.strip():
                    sections[cur].append(line)

            def section(prefix):
                hits = [k for k in sections if k.startswith(prefix)]
                self.assertEqual(len(hits), 1, "one section %r expected in:\n%s" % (prefix, what))
                return sections[hits[0]]

            server_raft = {"%s:%d" % (addr[n], SERVER_PORT) for n in SERVERS}
            # a leader, as the client agent reports it: one of the three servers
            leader = section("the leader")
            self.assertEqual(len(leader), 1, what)
            self.assertIn(json.loads(leader[0]), server_raft, what)

            # dcgate members through the client agent: the four agents, alive, of the right kind
            rows = [l.split() for l in section("dcgate members")]
            self.assertEqual(rows[0][:4], ["Node", "Address", "Status", "Type"], what)
            members = {r[0]: r for r in rows[1:]}
            self.assertEqual(sorted(members), sorted(NAMES), what)
            for n in NAMES:
                self.assertEqual(members[n][1], "%s:8301" % addr[n], what)
                self.assertEqual(members[n][2], "alive", what)
                self.assertEqual(members[n][3], "client" if n == "c1" else "server", what)

            # raft: the three servers, all voters, one leader (the one status/leader named)
            rows = [l.split() for l in section("dcgate operator raft list-peers")]
            self.assertEqual(rows[0], ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"], what)
            peers = {r[0]: r for r in rows[1:]}
            self.assertEqual(sorted(peers), sorted(SERVERS), what)
            for n in SERVERS:
                self.assertEqual(peers[n][2], "%s:%d" % (addr[n], SERVER_PORT), what)
                self.assertEqual(peers[n][4], "true", what)
            states = sorted(r[3] for r in peers.values())
            self.assertEqual(states, ["follower", "follower", "leader"], what)
            self.assertEqual([r[2] for r in peers.values() if r[3] == "leader"],
                             [json.loads(leader[0])], what)

            self.assertEqual(section("registering web with c1"), ["HTTP 200"], what)

            # every server's ?passing answer: web on c1, every check passing
            for n in SERVERS:
                body = "\n".join(section("%s: curl -s 'http://%s:%d/v1/health/service/web?passing'"
                                         % (n, addr[n], HTTP_PORT)))
                health = json.loads(body)
                self.assertEqual(len(health), 1, "%s: %s" % (n, what))
                e = health[0]
                self.assertEqual((e["Node"]["Node"], e["Node"]["Address"]), ("c1", addr["c1"]), what)
                self.assertEqual((e["Service"]["ID"], e["Service"]["Service"], e["Service"]["Port"],
                                  e["Service"]["Tags"]), ("web1", "web", 8080, ["v1"]), what)
                self.assertIn("serfHealth", [c["CheckID"] for c in e["Checks"]], what)
                self.assertTrue(all(c["Status"] == "passing" for c in e["Checks"]), what)

            # python-consul against the client agent
            py = [l.split() for l in section("python-consul")]
            self.assertEqual(py, [["c1", addr["c1"], "web", "8080", "serfHealth=passing"]], what)

            # KV through the client agent, then on every server
            self.assertEqual(section("dcgate kv put app/greeting"),
                             ["Success! Data written to: app/greeting"], what)
            self.assertEqual(section("dcgate kv get app/greeting"), ["hello from c1"], what)
            self.assertEqual(section("app/greeting on every server"),
                             ["%s: hello from c1" % n for n in SERVERS], what)

            # every agent is gone: nothing answers on the four addresses any more
            for n in NAMES:
                for port in (HTTP_PORT, SERVER_PORT, 8301):
                    if n == "c1" and port == SERVER_PORT:
                        continue
                    s = socket.socket()
                    s.settimeout(2)
                    try:
                        self.assertNotEqual(s.connect_ex((addr[n], port)), 0,
                                            "something still listens on %s:%d after run.sh" % (addr[n], port))
                    finally:
                        s.close()
        finally:
            for l in leases:
                l.release()


if __name__ == "__main__":
    unittest.main()
