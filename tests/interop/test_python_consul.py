"""Interop with python-consul 0.7.1 (Debian's python3-consul), run with /usr/bin/python3: every
call goes through the real client library, including its quirks (GET on deregister and TTL
updates, lowercase bodies, X-Consul-Index read on 404)."""

import http.server
import os
import socket
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import consul  # noqa: E402

from harness import AgentTestCase, wait_until  # noqa: E402


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *a):
        pass


class PythonConsulTest(AgentTestCase):
    def setUp(self):
        super().setUp()
        self.c = consul.Consul(host=self.a.addr, port=self.a.http_port)

    def status(self, cid):
        chk = self.c.agent.checks().get(cid)
        return chk and chk["Status"]

    def test_tcp_check(self):
        srv = socket.socket()
        srv.bind((self.a.addr, 0))
        srv.listen(16)
        port = srv.getsockname()[1]
        try:
            ok = self.c.agent.service.register("pytcp", service_id="pytcp1", address=self.a.addr, port=port,
                                               tags=["tcp"],
                                               check=consul.Check.tcp(self.a.addr, port, "1s", "2s", "10m"))
            self.assertIs(ok, True)
            self.assertEqual(self.c.agent.services()["pytcp1"]["Port"], port)
            wait_until(lambda: self.status("service:pytcp1") == "passing", 30, 0.25, "tcp check passing")
        finally:
            srv.close()
        wait_until(lambda: self.status("service:pytcp1") == "critical", 30, 0.25, "tcp check critical")
        self.assertIs(self.c.agent.service.deregister("pytcp1"), True)
        self.assertNotIn("pytcp1", self.c.agent.services())

    def test_http_check(self):
        srv = http.server.ThreadingHTTPServer((self.a.addr, 0), _Quiet)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            url = "http://%s:%d/health" % (self.a.addr, srv.server_address[1])
            ok = self.c.agent.service.register("pyhttp", service_id="pyhttp1", port=srv.server_address[1],
                                               check=consul.Check.http(url, "1s", "2s"))
            self.assertIs(ok, True)
            wait_until(lambda: self.status("service:pyhttp1") == "passing", 30, 0.25, "http check passing")
            chk = self.c.agent.checks()["service:pyhttp1"]
            self.assertEqual(chk["Name"], "Service 'pyhttp' check")
        finally:
            srv.shutdown()
            srv.server_close()
        wait_until(lambda: self.status("service:pyhttp1") == "critical", 30, 0.25, "http check critical")
        self.c.agent.service.deregister("pyhttp1")

    def test_ttl_check(self):
        self.assertIs(self.c.agent.service.register("pyttl", service_id="pyttl1", check=consul.Check.ttl("60s")), True)
        self.assertEqual(self.status("service:pyttl1"), "critical")
        self.assertIs(self.c.agent.check.ttl_pass("service:pyttl1", "all good"), True)
        chk = self.c.agent.checks()["service:pyttl1"]
        self.assertEqual((chk["Status"], chk["Output"]), ("passing", "all good"))
        self.assertIs(self.c.agent.check.ttl_warn("service:pyttl1", "hmm"), True)
        self.assertEqual(self.status("service:pyttl1"), "warning")
        self.assertIs(self.c.agent.check.ttl_fail("service:pyttl1"), True)
        self.assertEqual(self.status("service:pyttl1"), "critical")
        # a standalone check via agent.check.register, bound to the service
        self.assertIs(self.c.agent.check.register("extra", check=consul.Check.ttl("30s"), check_id="pyextra",
                                                  service_id="pyttl1", notes="n"), True)
        self.assertEqual(self.c.agent.checks()["pyextra"]["ServiceID"], "pyttl1")
        self.assertIs(self.c.agent.check.deregister("pyextra"), True)
        self.assertNotIn("pyextra", self.c.agent.checks())
        # unknown check: 404 -> False in CB.bool
        self.assertIs(self.c.agent.check.ttl_pass("no-such-check"), False)

    def test_health_service_passing_and_tag(self):
        for sid, tags, note in (("hw1", ["blue", "v1"], True), ("hw2", ["green", "v1"], True), ("hw3", ["blue"], False)):
            self.c.agent.service.register("pyhealth", service_id=sid, tags=tags, port=80, check=consul.Check.ttl("60s"))
            if note:
                self.c.agent.check.ttl_pass("service:" + sid)
        idx, nodes = self.c.health.service("pyhealth")
        self.assertTrue(int(idx) > 0)
        self.assertEqual(sorted(n["Service"]["ID"] for n in nodes), ["hw1", "hw2", "hw3"])
        _, nodes = self.c.health.service("pyhealth", passing=True)
        self.assertEqual(sorted(n["Service"]["ID"] for n in nodes), ["hw1", "hw2"])
        _, nodes = self.c.health.service("pyhealth", tag="blue")
        self.assertEqual(sorted(n["Service"]["ID"] for n in nodes), ["hw1", "hw3"])
        _, nodes = self.c.health.service("pyhealth", tag="blue", passing=True)
        self.assertEqual([n["Service"]["ID"] for n in nodes], ["hw1"])
        _, checks = self.c.health.state("any")
        self.assertIn("serfHealth", [c["CheckID"] for c in checks])
        _, checks = self.c.health.node(self.a.node)
        self.assertIn("serfHealth", [c["CheckID"] for c in checks])
        _, checks = self.c.health.checks("pyhealth")
        self.assertEqual(len(checks), 3)

    def test_catalog(self):
        self.c.agent.service.register("pycat", service_id="pycat1", tags=["x", "y"], port=81)
        idx, services = self.c.catalog.services()
        self.assertTrue(int(idx) > 0)
        self.assertEqual(services["consul"], [])
        self.assertEqual(sorted(services["pycat"]), ["x", "y"])
        _, nodes = self.c.catalog.service("pycat")
        self.assertEqual([(n["ServiceID"], n["ServicePort"]) for n in nodes], [("pycat1", 81)])
        _, nodes = self.c.catalog.service("pycat", tag="y")
        self.assertEqual(len(nodes), 1)
        _, nodes = self.c.catalog.service("pycat", tag="z")
        self.assertEqual(nodes, [])
        self.assertIs(self.c.catalog.register("pyext", "192.0.2.50", service={"Service": "pyextsvc", "Port": 90},
                                              dc="dc1"), True)
        _, node = self.c.catalog.node("pyext")
        self.assertEqual(node["Services"]["pyextsvc"]["Port"], 90)
        _, node = self.c.catalog.node("no-such-node")
        self.assertIsNone(node)
        _, nodes = self.c.catalog.nodes()
        self.assertIn("pyext", [n["Node"] for n in nodes])
        self.assertIs(self.c.catalog.deregister("pyext", dc="dc1"), True)
        self.assertEqual(self.c.catalog.datacenters(), ["dc1"])

    def test_kv(self):
        kv = self.c.kv
        idx, v = kv.get("pykv/missing")
        self.assertIsNone(v)
        self.assertTrue(int(idx) > 0)
        self.assertIs(kv.put("pykv/a", "1", cas=0), True)
        self.assertIs(kv.put("pykv/a", "again", cas=0), False)
        _, v = kv.get("pykv/a")
        self.assertEqual(v["Value"], b"1")
        self.assertIs(kv.put("pykv/a", "2", cas=v["ModifyIndex"]), True)
        self.assertIs(kv.put("pykv/a", "3", cas=v["ModifyIndex"]), False)
        self.assertIs(kv.put("pykv/b/c", b"\x00\xff", flags=99), True)
        _, v = kv.get("pykv/b/c")
        self.assertEqual((v["Value"], v["Flags"]), (b"\x00\xff", 99))
        self.assertIs(kv.put("pykv/dir/", None), True)
        _, v = kv.get("pykv/dir/")
        self.assertIsNone(v["Value"])
        _, lst = kv.get("pykv/", recurse=True)
        self.assertEqual([e["Key"] for e in lst], ["pykv/a", "pykv/b/c", "pykv/dir/"])
        self.assertEqual(lst[0]["Value"], b"2")
        _, keys = kv.get("pykv/", keys=True)
        self.assertEqual(keys, ["pykv/a", "pykv/b/c", "pykv/dir/"])
        _, keys = kv.get("pykv/", keys=True, separator="/")
        self.assertEqual(keys, ["pykv/a", "pykv/b/", "pykv/dir/"])
        _, none = kv.get("pykv-nothing/", recurse=True)
        self.assertIsNone(none)
        self.assertIs(kv.delete("pykv/a"), True)
        self.assertIsNone(kv.get("pykv/a")[1])
        self.assertIs(kv.delete("pykv/", recurse=True), True)
        self.assertIsNone(kv.get("pykv/", recurse=True)[1])
        _, v = kv.get("pykv/a", consistency="stale")
        self.assertIsNone(v)

    def test_session_lock(self):
        s1 = self.c.session.create(name="py-lock", lock_delay=0, ttl=30)
        s2 = self.c.session.create(name="py-other", lock_delay=0, behavior="delete")
        _, info = self.c.session.info(s1)
        self.assertEqual(info["Name"], "py-lock")
        self.assertEqual(info["TTL"], "30s")
        _, lst = self.c.session.list()
        self.assertTrue({s1, s2} <= {s["ID"] for s in lst})
        _, lst = self.c.session.node(self.a.node)
        self.assertIn(s1, [s["ID"] for s in lst])
        renewed = self.c.session.renew(s1)
        self.assertEqual(renewed["ID"], s1)
        self.assertIs(self.c.kv.put("pylock/leader", "me", acquire=s1), True)
        self.assertIs(self.c.kv.put("pylock/leader", "you", acquire=s2), False)
        _, v = self.c.kv.get("pylock/leader")
        self.assertEqual((v["Session"], v["Value"], v["LockIndex"]), (s1, b"me", 1))
        self.assertIs(self.c.kv.put("pylock/leader", "bye", release=s1), True)
        _, v = self.c.kv.get("pylock/leader")
        self.assertNotIn("Session", v)
        self.assertIs(self.c.kv.put("pylock/leader", "you", acquire=s2), True)
        self.assertIs(self.c.session.destroy(s2), True)
        self.assertIsNone(self.c.kv.get("pylock/leader")[1])  # behavior=delete
        self.assertIs(self.c.session.destroy(s1), True)
        _, info = self.c.session.info(s1)
        self.assertIsNone(info)
        with self.assertRaises(consul.NotFound):
            self.c.session.renew(s1)

    def test_blocking_query_wakes_on_other_client_write(self):
        other = consul.Consul(host=self.a.addr, port=self.a.http_port)
        self.c.kv.put("pyblock/k", "before")
        idx, v = self.c.kv.get("pyblock/k")
        t = threading.Timer(1.0, lambda: other.kv.put("pyblock/k", "after"))
        t.start()
        try:
            idx2, v2 = self.c.kv.get("pyblock/k", index=idx, wait="60s")
        finally:
            t.join(30)
        self.assertEqual(v2["Value"], b"after")
        self.assertGreater(int(idx2), int(idx))
        # and a blocking health query woken by a registration from the other client
        idx, nodes = self.c.health.service("pyblocksvc")
        self.assertEqual(nodes, [])
        t = threading.Timer(1.0, lambda: other.agent.service.register("pyblocksvc"))
        t.start()
        try:
            idx2, nodes = self.c.health.service("pyblocksvc", index=idx, wait="60s")
        finally:
            t.join(30)
        self.assertEqual([n["Service"]["Service"] for n in nodes], ["pyblocksvc"])

    def test_agent_self_members_status(self):
        me = self.c.agent.self()
        self.assertEqual(me["Config"]["Datacenter"], "dc1")
        self.assertEqual(me["Config"]["NodeName"], self.a.node)
        members = self.c.agent.members()
        self.assertIn(self.a.node, [m["Name"] for m in members])
        self.assertEqual(self.c.status.leader(), "%s:8300" % self.a.addr)
        self.assertEqual(self.c.status.peers(), ["%s:8300" % self.a.addr])

    def test_maintenance(self):
        self.c.agent.service.register("pymaint", check=consul.Check.ttl("60s"))
        self.assertIs(self.c.agent.service.maintenance("pymaint", "true", "upgrade"), True)
        self.assertEqual(self.c.agent.checks()["_service_maintenance:pymaint"]["Notes"], "upgrade")
        self.assertIs(self.c.agent.service.maintenance("pymaint", "false"), True)
        self.assertNotIn("_service_maintenance:pymaint", self.c.agent.checks())
        self.assertIs(self.c.agent.maintenance("true", "node work"), True)
        try:
            self.assertEqual(self.c.agent.checks()["_node_maintenance"]["Status"], "critical")
        finally:
            self.assertIs(self.c.agent.maintenance("false"), True)
        self.assertNotIn("_node_maintenance", self.c.agent.checks())


if __name__ == "__main__":
    unittest.main()
