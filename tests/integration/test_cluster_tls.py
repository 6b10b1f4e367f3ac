"""One datacenter with TLS: three servers and client agents whose requests for the servers go over
mutual TLS (issue 5: "TLS on the 8301 RPC with the tls/ engine when configured";
docs/cluster.md, "TLS for the servers' requests").

One CA made by `dcgate tls ca create`; three servers (-bootstrap-expect 3) each with a server
certificate of its own and verify_incoming; three client agents:
- c-tls: a client certificate of the CA (`dcgate tls cert create -client`);
- c-plain: no TLS configuration at all;
- c-other: a client certificate of another CA.

What is asserted:
- every agent lists all six members alive (gossip and push-pulls stay on plain 8301, so even the
  agents without a usable certificate are members), and the servers tell `rpc_tls_port` 8303 in
  their tags, the client agents do not;
- through c-tls and through a follower: KV writes and reads, and a service registered on c-tls
  is in every server's catalog and passing; c-tls holds a TCP connection to a server's 8303, each
  follower one to the leader's 8303, and the servers logged TLS handshakes with client.dc1 and
  server.dc1;
- c-plain's requests for the servers are refused (500 `rpc error making call: ...`), the servers
  log why, and they keep serving;
- c-other's handshakes are rejected by the servers (logged), its requests fail, and the servers
  keep serving.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import LEADER_TIMEOUT, ClientAgent, Cluster, wait_members_alive, wait_until
from test_tls_matrix import CA, tls_config

WAIT = 30.0
RPC_TLS_PORT = 8303


def write_config(agent, config):
    path = os.path.join(agent.tmpdir, "tls.json")
    with open(path, "w") as f:
        json.dump(config, f)
    agent.extra_args += ["-config-file", path]


def connections_to(pid, port):
    """Established TCP connections of process pid to a remote port (ss -tnp)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established"], stdout=subprocess.PIPE,
                         universal_newlines=True, timeout=10).stdout
    found = []
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 5 and f[3].endswith(":%d" % port) and ("pid=%d," % pid) in line:
            found.append(f[3])
    return found


def log_text(agent):
    with open(agent.log_path, "rb") as f:
        return f.read().decode(errors="replace")


class ClusterTLSTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-ctls-")
        cls.cluster = None
        cls.clients = []
        try:
            cls.ca = CA(os.path.join(cls.tmpdir, "pki"))
            other = CA(os.path.join(cls.tmpdir, "other-pki"))
            cls.cluster = Cluster(3)
            for s in cls.cluster.servers:
                cert, key = cls.ca.issue("server", "dc1")
                s.config = tls_config(cls.ca.cert, cert, key)
            cls.cluster.start()
            seed = cls.cluster.servers[0].addr
            cls.c_tls = ClientAgent(seed, node="c-tls")
            write_config(cls.c_tls, tls_config(cls.ca.cert, *cls.ca.issue("client", "dc1"),
                                               verify_incoming=False))
            cls.c_plain = ClientAgent(seed, node="c-plain")
            cls.c_other = ClientAgent(seed, node="c-other")
            write_config(cls.c_other, tls_config(other.cert, *other.issue("client", "dc1"),
                                                 verify_incoming=False))
            cls.clients = [cls.c_tls, cls.c_plain, cls.c_other]
            cls.c_tls.start(timeout=LEADER_TIMEOUT)
            cls.c_plain.start(wait=False)
            cls.c_other.start(wait=False)
            cls.leader = cls.cluster.leader()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for c in cls.clients:
            c.close()
        if cls.cluster:
            cls.cluster.close()
        shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def agents(self):
        return self.cluster.servers + self.clients

    def test_members_everywhere_and_tags(self):
        names = sorted(a.node for a in self.agents())
        for a in self.agents():
            wait_members_alive(a, names, WAIT)
        ms = {m["Name"]: m for m in self.leader.get("/v1/agent/members").json()}
        for s in self.cluster.servers:
            self.assertEqual(ms[s.node]["Tags"].get("rpc_tls_port"), str(RPC_TLS_PORT), ms[s.node])
        for c in self.clients:
            self.assertNotIn("rpc_tls_port", ms[c.node]["Tags"])

    def test_requests_over_tls(self):
        r = self.c_tls.put("/v1/kv/ctls/a", body=b"from-client")
        self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
        follower = next(s for s in self.cluster.servers if s is not self.leader)
        r = follower.put("/v1/kv/ctls/b", body=b"from-follower")
        self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
        for a in self.cluster.servers + [self.c_tls]:
            for key, want in (("a", b"from-client"), ("b", b"from-follower")):
                r = a.get("/v1/kv/ctls/%s?raw" % key)
                self.assertEqual((r.status, r.body), (200, want), "%s: %r" % (a.node, r))
        r = self.c_tls.put("/v1/agent/service/register",
                           body=json.dumps({"Name": "tlsweb", "ID": "tlsweb1", "Port": 80}).encode())
        self.assertEqual(r.status, 200, r)
        for s in self.cluster.servers:
            def listed():
                r = s.get("/v1/health/service/tlsweb?passing&stale")
                return r.status == 200 and [e["Node"]["Node"] for e in r.json()] == ["c-tls"]
            wait_until(listed, WAIT, 0.2, "tlsweb on c-tls passing on %s" % s.node)

        # the requests went over TLS: the connections, and the handshakes the servers logged
        self.assertTrue(connections_to(self.c_tls.proc.pid, RPC_TLS_PORT),
                        "c-tls holds no connection to a server's %d" % RPC_TLS_PORT)
        lead = self.leader.addr
        for s in self.cluster.servers:
            if s is not self.leader:
                self.assertIn("%s:%d" % (lead, RPC_TLS_PORT), connections_to(s.proc.pid, RPC_TLS_PORT),
                              "%s holds no connection to the leader's %d" % (s.node, RPC_TLS_PORT))
        logs = "".join(log_text(s) for s in self.cluster.servers)
        self.assertIn("peer client.dc1)", logs)
        self.assertIn("peer server.dc1)", logs)

    def test_no_certificate_refused(self):
        r = self.c_plain.get("/v1/kv/ctls/a", timeout=30)
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.text.startswith("rpc error making call"), r.text)
        r = self.c_plain.put("/v1/kv/ctls/plain", body=b"x", timeout=30)
        self.assertEqual(r.status, 500, r)
        wait_until(lambda: any("refused on plain port 8301: TLS is required" in log_text(s)
                               for s in self.cluster.servers),
                   WAIT, 0.2, "a server to log the refusal")
        # nothing written, and the servers keep serving
        r = self.leader.get("/v1/kv/ctls/plain")
        self.assertEqual(r.status, 404, r)
        r = self.leader.put("/v1/kv/ctls/after-plain", body=b"ok")
        self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)

    def test_other_ca_rejected(self):
        r = self.c_other.get("/v1/status/leader", timeout=40)
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.text.startswith("rpc error making call"), r.text)
        wait_until(lambda: any("rejected" in log_text(s) for s in self.cluster.servers),
                   WAIT, 0.2, "a server to log a rejected handshake")
        for s in self.cluster.servers:
            r = s.get("/v1/status/leader")
            self.assertEqual((r.status, r.json()), (200, "%s:8300" % self.leader.addr), r)


if __name__ == "__main__":
    unittest.main()
