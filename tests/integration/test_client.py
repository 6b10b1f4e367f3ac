"""Client agents: three servers and five client agents on 127.0.0.x. Every member lists all
eight; a service registered on a client agent is in every server's catalog and health answers;
python-consul against a client agent works as against a server; a client agent killed with -9
is failed and its services leave ?passing, and come back when it is restarted; a deregistration
and a graceful leave reach the servers; a client agent that knows no server says so.

Bounds stated by these tests: a killed client agent's services leave ?passing within 15 s (the
gossip timings of docs/cluster.md give 3-4 s); a registration reaches the servers within 10 s
(anti-entropy pushes each change at once)."""

import json
import os
import time
import unittest

import consul

from harness import ClientAgent, Cluster, wait_members_alive, wait_until

SLOW = os.environ.get("DCGATE_SANITIZED") == "1"
WAIT = 60.0 if SLOW else 20.0
FAILED_WITHIN = 15.0  # the bound this test states for a killed agent's services to leave ?passing


def passing_nodes(agent, service):
    r = agent.get("/v1/health/service/" + service, params={"passing": ""})
    assert r.status == 200, r
    return sorted(e["Node"]["Node"] for e in r.json())


class ClientAgentTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3)
        cls.clients = []
        try:
            cls.cluster.start()
            seed = cls.cluster.servers[0].addr
            for i in range(5):
                cls.clients.append(ClientAgent(seed, node="c%d" % (i + 1)))
            for c in cls.clients:
                c.start(wait=False)
            for c in cls.clients:
                wait_until(lambda: c.get("/v1/status/leader").status == 200, WAIT,
                           what="%s reaching a server" % c.node)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for c in cls.clients:
            c.close()
        cls.cluster.close()

    def everyone(self):
        return self.cluster.servers + self.clients

    def test_members_on_every_agent(self):
        names = {a.node for a in self.everyone()}
        for a in self.everyone():
            # a client agent restarted by another test may be seen failed by some members until
            # it refutes that or the next push-pull (every 30 s) carries it: the bound is that.
            # (a client agent that left in another test stays listed as left, status 3)
            ms = wait_members_alive(a, names, WAIT + 30, skip_left=True)
            self.assertEqual(sorted(n for n, m in ms.items() if m["Tags"]["role"] == "node"),
                             sorted(c.node for c in self.clients))
        # every client agent's node is in the catalog with serfHealth passing
        s = self.cluster.servers[0]
        wait_until(lambda: sorted(e["Node"] for e in s.get("/v1/catalog/nodes").json()) ==
                   sorted(names), WAIT, what="8 nodes in the catalog")

    def test_service_on_client_everywhere(self):
        c = self.clients[0]
        r = c.put("/v1/agent/service/register",
                  body=json.dumps({"Name": "cweb", "ID": "cweb1", "Port": 8081, "Tags": ["v1"],
                                   "Check": {"TTL": "60s"}}).encode())
        self.assertEqual(r.status, 200, r)
        self.assertEqual(c.put("/v1/agent/check/pass/service:cweb1").status, 200)
        # the agent answers from its own state at once
        self.assertIn("cweb1", c.get("/v1/agent/services").json())
        for a in self.everyone():
            wait_until(lambda: passing_nodes(a, "cweb") == [c.node], 10.0,
                       what="cweb passing, read on %s" % a.node)
            r = a.get("/v1/catalog/service/cweb")
            self.assertEqual([(e["Node"], e["ServiceID"], e["ServiceTags"]) for e in r.json()],
                             [(c.node, "cweb1", ["v1"])])
        # a check update reaches the servers too
        self.assertEqual(c.put("/v1/agent/check/fail/service:cweb1").status, 200)
        s = self.cluster.servers[1]
        wait_until(lambda: passing_nodes(s, "cweb") == [], 10.0, what="cweb critical")
        # and a deregistration removes it from the catalog
        self.assertEqual(c.put("/v1/agent/service/deregister/cweb1").status, 200)
        wait_until(lambda: s.get("/v1/catalog/service/cweb").json() == [], 10.0,
                   what="cweb gone from the catalog")

    def test_python_consul_against_client(self):
        a = self.clients[1]
        c = consul.Consul(host=a.addr, port=a.http_port)
        self.assertTrue(c.kv.put("pyc/a", "1"))
        self.assertEqual(c.kv.get("pyc/a")[1]["Value"], b"1")
        c.agent.service.register("pyweb", service_id="pyweb1", port=8080,
                                 check=consul.Check.ttl("30s"))
        c.agent.check.ttl_pass("service:pyweb1")
        wait_until(lambda: [e["Node"]["Node"] for e in c.health.service("pyweb", passing=True)[1]]
                   == [a.node], 10.0, what="pyweb passing")
        sid = c.session.create(ttl=15)
        self.assertEqual(c.session.info(sid)[1]["Node"], a.node)
        self.assertTrue(c.kv.put("pyc/lock", "me", acquire=sid))
        self.assertFalse(c.kv.put("pyc/lock", "other", acquire=c.session.create()))
        c.session.renew(sid)
        self.assertEqual(len(c.status.peers()), 3)
        self.assertIn(c.status.leader(), ["%s:8300" % s.addr for s in self.cluster.servers])
        self.assertFalse(c.agent.self()["Config"]["Server"])
        self.assertEqual(len([m for m in c.agent.members() if m["Status"] == 1]), 8)
        index, nodes = c.catalog.nodes()
        self.assertEqual(len(nodes), 8)
        # a blocking query through the client agent wakes on a change made elsewhere
        idx, _ = c.kv.get("pyc/a")
        self.cluster.servers[2].put("/v1/kv/pyc/a", body=b"2")
        idx2, v = c.kv.get("pyc/a", index=idx, wait="10s")
        self.assertGreater(int(idx2), int(idx))
        self.assertEqual(v["Value"], b"2")
        c.agent.service.deregister("pyweb1")

    def test_killed_client_fails_and_comes_back(self):
        victim = self.clients[4]
        r = victim.put("/v1/agent/service/register",
                       body=json.dumps({"Name": "kweb", "ID": "kweb1", "Port": 1,
                                        "Check": {"TTL": "300s", "Status": "passing"}}).encode())
        self.assertEqual(r.status, 200, r)
        s = self.cluster.servers[0]
        wait_until(lambda: passing_nodes(s, "kweb") == [victim.node], 10.0, what="kweb passing")
        victim.kill9()
        self.addCleanup(lambda: victim.running() or victim.start(wait=False))
        t0 = time.monotonic()
        wait_until(lambda: passing_nodes(s, "kweb") == [], FAILED_WITHIN,
                   what="kweb out of ?passing after kill -9")
        took = time.monotonic() - t0
        checks = {c["CheckID"]: c["Status"] for c in s.get("/v1/health/node/" + victim.node).json()}
        self.assertEqual(checks.get("serfHealth"), "critical", checks)
        # the leader wrote that; s (perhaps a follower) hears of the failure by gossip too
        wait_until(lambda: {m["Name"]: m["Status"] for m in s.get("/v1/agent/members").json()}
                   .get(victim.node) == 4, WAIT, what="%s listed failed on s1" % victim.node)
        print("  killed client agent's service left ?passing after %.1fs" % took)
        victim.start(wait=False)
        wait_until(lambda: passing_nodes(s, "kweb") == [victim.node], WAIT,
                   what="kweb passing again after the restart")
        self.assertIn("kweb1", victim.get("/v1/agent/services").json())

    def test_leave_removes_node(self):
        extra = ClientAgent(self.cluster.servers[1].addr, node="leaver")
        try:
            extra.start(wait=False)
            s = self.cluster.servers[2]
            wait_until(lambda: any(n["Node"] == "leaver" for n in s.get("/v1/catalog/nodes").json()),
                       WAIT, what="leaver in the catalog")
            self.assertEqual(extra.put("/v1/agent/leave").status, 200)
            extra.wait_exit(30)
            wait_until(lambda: not any(n["Node"] == "leaver"
                                       for n in s.get("/v1/catalog/nodes").json()),
                       WAIT, what="leaver deregistered after its leave")
            wait_until(lambda: {m["Name"]: m["Status"] for m in s.get("/v1/agent/members").json()}
                       .get("leaver") in (3, None), WAIT, what="leaver listed as left")
        finally:
            extra.close()


class LoneClientTest(unittest.TestCase):
    def test_no_server_known(self):
        c = ClientAgent(None, node="lone")
        try:
            c.start(wait=False)
            wait_until(lambda: c.get("/v1/agent/self").status == 200, WAIT, what="lone up")
            r = c.get("/v1/catalog/nodes")
            self.assertEqual(r.status, 500, r)
            self.assertEqual(r.text.strip(), "No known Consul servers")
            # its own state still works
            r = c.put("/v1/agent/service/register", body=b'{"Name":"alone"}')
            self.assertEqual(r.status, 200, r)
            self.assertIn("alone", c.get("/v1/agent/services").json())
        finally:
            c.close()


class NamedClient(ClientAgent):
    """A client agent whose /etc/hosts is its own (a mount namespace: unshare -m and a bind
    mount), so that a host name stands for a server's 127.0.0.x address as DNS would."""

    def __init__(self, join, hosts, **kw):
        super().__init__(join, **kw)
        self.hosts = hosts

    def argv(self):
        path = os.path.join(self.tmpdir, "hosts")
        with open(path, "w") as f:
            f.write("127.0.0.1 localhost\n")
            for name, addr in self.hosts.items():
                f.write("%s %s\n" % (addr, name))
        return ["unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"',
                path] + super().argv()


class HostNameJoinTest(unittest.TestCase):
    """-retry-join and PUT /v1/agent/join take host names as Consul does (looked up off the
    loop thread); a name that does not resolve is refused with the reason and nothing joins."""

    def test_join_by_host_name(self):
        cluster = Cluster(1)
        c = None
        try:
            cluster.start()
            first = cluster.servers[0]
            c = NamedClient("dcgate-first.test", {"dcgate-first.test": first.addr}, node="named")
            c.start(wait=False)
            wait_until(lambda: c.get("/v1/status/leader").status == 200, WAIT,
                       what="the client reaching the server it joined by name")
            wait_until(lambda: {m["Name"] for m in first.get("/v1/agent/members").json()}
                       >= {"named", first.node}, WAIT, what="the server listing the client")
            # name:port through the API: the same server, looked up again
            r = c.put("/v1/agent/join/dcgate-first.test:8301")
            self.assertEqual(r.status, 200, r)
            r = c.put("/v1/agent/join/no-such-server.invalid")
            self.assertEqual(r.status, 500, r)
            self.assertIn("cannot resolve no-such-server.invalid", r.text)
            r = c.put("/v1/agent/join/bad_name!")
            self.assertEqual(r.status, 500, r)
            self.assertEqual(len(first.get("/v1/agent/members").json()), 2)
            self.assertTrue(c.running())
        finally:
            if c:
                c.close()
            cluster.close()


if __name__ == "__main__":
    unittest.main()
