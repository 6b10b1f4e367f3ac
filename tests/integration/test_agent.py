"""Agent endpoints: self, service register/deregister, checks and TTL updates, maintenance, leave.
Contract: consul-api.md §3."""

import http.server
import socket
import threading
import unittest

from harness import Agent, AgentTestCase, wait_until


class AgentSelfTest(AgentTestCase):
    agent_kwargs = {"node": "self-node", "datacenter": "dcself"}

    def test_self_config(self):
        r = self.a.get("/v1/agent/self")
        self.assertOK(r)
        d = self.assertJSON(r)
        self.assertIsInstance(d["Config"]["Datacenter"], str)
        self.assertEqual(d["Config"]["Datacenter"], "dcself")
        self.assertEqual(d["Config"]["NodeName"], "self-node")
        self.assertIs(d["Config"]["Server"], True)
        self.assertIn("Member", d)

    def test_datacenters_lists_own(self):
        r = self.a.get("/v1/catalog/datacenters")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r)[0], "dcself")


class AgentServiceTest(AgentTestCase):
    def services(self):
        r = self.a.get("/v1/agent/services")
        self.assertOK(r)
        return self.assertJSON(r)

    def checks(self):
        r = self.a.get("/v1/agent/checks")
        self.assertOK(r)
        return self.assertJSON(r)

    def test_register_lowercase_python_shape(self):
        body = {"name": "pyweb", "id": "pyweb1", "address": "127.0.0.1", "port": 8080, "tags": ["v1", "Blue"],
                "check": {"tcp": "127.0.0.1:1", "interval": "10s", "timeout": "1s",
                          "DeregisterCriticalServiceAfter": "10m"}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        s = self.services()["pyweb1"]
        self.assertEqual(s["ID"], "pyweb1")
        self.assertEqual(s["Service"], "pyweb")
        self.assertEqual(s["Tags"], ["v1", "Blue"])
        self.assertEqual(s["Port"], 8080)
        self.assertEqual(s["Address"], "127.0.0.1")
        c = self.checks()["service:pyweb1"]
        self.assertEqual(c["Name"], "Service 'pyweb' check")
        self.assertEqual(c["ServiceID"], "pyweb1")
        self.assertEqual(c["ServiceName"], "pyweb")
        self.assertIn(c["Status"], ("critical",))  # port 1 refuses; the default is critical too
        self.assertEmpty200(self.a.put("/v1/agent/service/deregister/pyweb1"))
        self.assertNotIn("pyweb1", self.services())
        self.assertNotIn("service:pyweb1", self.checks())

    def test_register_pascalcase_defaults(self):
        body = {"Name": "pascal", "Tags": None, "Check": None, "Checks": None, "Meta": {"k": "v"}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        s = self.services()["pascal"]  # ID defaults to Name
        self.assertEqual(s["Service"], "pascal")
        self.assertEqual(s["Tags"], [])
        self.assertEqual(s["Meta"], {"k": "v"})
        self.assertEqual(s["Port"], 0)
        self.assertEqual(s.get("Datacenter"), "dc1")
        self.assertEqual(s["Weights"], {"Passing": 1, "Warning": 1})

    def test_register_ttl_check_default_critical(self):
        body = {"Name": "ttlsvc", "ID": "ttlsvc1", "Check": {"TTL": "60s"}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        c = self.checks()["service:ttlsvc1"]
        self.assertEqual(c["Status"], "critical")
        self.assertEqual(c["Name"], "Service 'ttlsvc' check")
        self.assertEqual(c["Type"], "ttl")

    def test_register_initial_status(self):
        body = {"Name": "stsvc", "Check": {"TTL": "60s", "Status": "passing"}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        self.assertEqual(self.checks()["service:stsvc"]["Status"], "passing")

    def test_register_multiple_checks_numbered(self):
        body = {"Name": "multi", "ID": "multi1",
                "Checks": [{"TTL": "60s"}, {"TTL": "60s", "Name": "second"}, {"CheckID": "own-id", "TTL": "60s"}]}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        checks = self.checks()
        self.assertIn("service:multi1:1", checks)
        self.assertIn("service:multi1:2", checks)
        self.assertIn("own-id", checks)
        self.assertEqual(checks["service:multi1:1"]["Name"], "Service 'multi' check")
        self.assertEqual(checks["service:multi1:2"]["Name"], "second")
        self.assertNotIn("service:multi1", checks)

    def test_snake_case_aliases(self):
        body = {"name": "snake", "enable_tag_override": True,
                "check": {"ttl": "60s", "deregister_critical_service_after": "90m"}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        self.assertIs(self.services()["snake"]["EnableTagOverride"], True)

    def test_unknown_fields_ignored(self):
        body = {"name": "unk", "script": "/bin/true", "whatever": {"x": [1, 2]}}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        self.assertIn("unk", self.services())

    def test_reregister_replaces(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "rr", "Port": 1, "Tags": ["a"]}))
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "rr", "Port": 2}))
        s = self.services()["rr"]
        self.assertEqual(s["Port"], 2)
        self.assertEqual(s["Tags"], [])

    def test_register_errors(self):
        r = self.a.put("/v1/agent/service/register", {"Port": 80})
        self.assertErrorText(r, 400, "Missing service name")
        r = self.a.put("/v1/agent/service/register", {"Name": "bad", "Check": {"TTL": "10s", "Interval": "10s"}})
        self.assertStatus(r, 400)
        self.assertTrue(r.text.startswith("Invalid check: "), r)
        r = self.a.put("/v1/agent/service/register", {"Name": "bad2", "Check": {"TCP": "127.0.0.1:1"}})
        self.assertStatus(r, 400)
        self.assertTrue(r.text.startswith("Invalid check: "), r)
        r = self.a.put("/v1/agent/service/register", b"")
        self.assertErrorText(r, 400, "Request decode failed: EOF")
        self.assertNotIn("bad", self.services())

    def test_register_validation_texts(self):
        r = self.a.put("/v1/agent/service/register", {"Name": "zero", "Address": "0.0.0.0"})
        self.assertErrorText(r, 400, "Invalid service address")
        r = self.a.put("/v1/agent/service/register", {"Name": "badst", "Check": {"TTL": "10s", "Status": "meh"}})
        self.assertErrorText(r, 400, "Status for checks must 'passing', 'warning', 'critical'")
        self.assertNotIn("zero", self.services())
        self.assertNotIn("badst", self.services())

    def test_replace_existing_checks(self):
        body = {"Name": "rep", "Checks": [{"TTL": "60s"}, {"TTL": "60s"}]}
        self.assertEmpty200(self.a.put("/v1/agent/service/register", body))
        # Without the flag, re-registering keeps checks that are not in the new definition.
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "rep", "Check": {"TTL": "60s"}}))
        ids = {c for c in self.checks() if c.startswith("service:rep")}
        self.assertEqual(ids, {"service:rep", "service:rep:1", "service:rep:2"})
        self.assertEmpty200(self.a.put("/v1/agent/service/register?replace-existing-checks",
                                       {"Name": "rep", "Check": {"TTL": "60s"}}))
        ids = {c for c in self.checks() if c.startswith("service:rep")}
        self.assertEqual(ids, {"service:rep"})

    def test_deregister_unknown_404(self):
        for m in ("PUT", "GET"):
            r = self.a.request(m, "/v1/agent/service/deregister/nosuch")
            self.assertErrorText(r, 404, 'Unknown service ID "nosuch". Ensure that the service ID is passed, '
                                         'not the service name.')

    def test_deregister_with_get_legacy(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "legacy", "Check": {"TTL": "60s"}}))
        self.assertEmpty200(self.a.get("/v1/agent/service/deregister/legacy"))
        self.assertNotIn("legacy", self.services())
        self.assertNotIn("service:legacy", self.checks())

    def test_service_visible_in_catalog(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "cat-vis", "Port": 99}))
        r = self.a.get("/v1/catalog/service/cat-vis")
        self.assertOK(r)
        lst = self.assertJSON(r)
        self.assertEqual(len(lst), 1)
        self.assertEqual(lst[0]["ServicePort"], 99)
        self.assertEqual(lst[0]["Node"], self.a.node)

    def test_get_single_service(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"Name": "single", "Port": 7}))
        r = self.a.get("/v1/agent/service/single")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r)["Port"], 7)
        r = self.a.get("/v1/agent/service/nosuch-single")
        self.assertErrorText(r, 404, "unknown service ID: nosuch-single")


class AgentCheckTest(AgentTestCase):
    def check(self, cid):
        r = self.a.get("/v1/agent/checks")
        self.assertOK(r)
        return self.assertJSON(r).get(cid)

    def test_check_register_and_ttl_updates_put_and_get(self):
        body = {"Name": "hb", "ID": "hb1", "TTL": "60s", "Notes": "n"}
        self.assertEmpty200(self.a.put("/v1/agent/check/register", body))
        c = self.check("hb1")
        self.assertEqual(c["Status"], "critical")
        self.assertEqual(c["Name"], "hb")
        self.assertEqual(c["Notes"], "n")
        self.assertEqual(c["ServiceID"], "")
        for method in ("PUT", "GET"):
            for verb, status in (("pass", "passing"), ("warn", "warning"), ("fail", "critical")):
                note = "%s-%s" % (verb, method)
                r = self.a.request(method, "/v1/agent/check/%s/hb1?note=%s" % (verb, note))
                self.assertEmpty200(r, "%s %s" % (method, verb))
                c = self.check("hb1")
                self.assertEqual(c["Status"], status)
                self.assertEqual(c["Output"], note)

    def test_check_update(self):
        self.assertEmpty200(self.a.put("/v1/agent/check/register", {"Name": "upd", "TTL": "60s"}))
        r = self.a.put("/v1/agent/check/update/upd", {"Status": "warning", "Output": "half"})
        self.assertEmpty200(r)
        c = self.check("upd")
        self.assertEqual((c["Status"], c["Output"]), ("warning", "half"))
        r = self.a.put("/v1/agent/check/update/upd", {"Status": "passing", "Output": "ok"})
        self.assertEmpty200(r)
        self.assertEqual(self.check("upd")["Status"], "passing")
        r = self.a.put("/v1/agent/check/update/upd", {"Status": "bogus"})
        self.assertErrorText(r, 400, "Invalid check status: 'bogus'")

    def test_lowercase_check_register_bound_to_service(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register", {"name": "owner"}))
        body = {"name": "extra", "id": "extra1", "serviceid": "owner", "ttl": "60s", "notes": "x"}
        self.assertEmpty200(self.a.put("/v1/agent/check/register", body))
        c = self.check("extra1")
        self.assertEqual(c["ServiceID"], "owner")
        self.assertEqual(c["ServiceName"], "owner")
        # Deregistering the service removes its bound checks.
        self.assertEmpty200(self.a.put("/v1/agent/service/deregister/owner"))
        self.assertIsNone(self.check("extra1"))

    def test_check_register_unknown_service(self):
        r = self.a.put("/v1/agent/check/register", {"Name": "orphan", "ServiceID": "ghost", "TTL": "10s"})
        self.assertErrorText(r, 404, 'ServiceID "ghost" does not exist')
        r = self.a.put("/v1/agent/check/register", {"TTL": "10s"})
        self.assertErrorText(r, 400, "Missing check name")

    def test_unknown_check_404(self):
        text = 'Unknown check ID "nosuch". Ensure that the check ID is passed, not the check name.'
        for m in ("PUT", "GET"):
            for verb in ("pass", "warn", "fail", "deregister"):
                self.assertErrorText(self.a.request(m, "/v1/agent/check/%s/nosuch" % verb), 404, text)

    def test_pass_on_non_ttl_check_500(self):
        body = {"Name": "tcpchk", "TCP": "127.0.0.1:1", "Interval": "30s"}
        self.assertEmpty200(self.a.put("/v1/agent/check/register", body))
        r = self.a.put("/v1/agent/check/pass/tcpchk")
        self.assertErrorText(r, 500, 'CheckID "tcpchk" does not have associated TTL')

    def test_check_deregister(self):
        self.assertEmpty200(self.a.put("/v1/agent/check/register", {"Name": "gone", "TTL": "60s"}))
        self.assertEmpty200(self.a.get("/v1/agent/check/deregister/gone"))
        self.assertIsNone(self.check("gone"))

    def test_ttl_expires(self):
        self.assertEmpty200(self.a.put("/v1/agent/check/register", {"Name": "shortttl", "TTL": "2s"}))
        self.assertEmpty200(self.a.put("/v1/agent/check/pass/shortttl?note=alive"))
        self.assertEqual(self.check("shortttl")["Status"], "passing")
        c = wait_until(lambda: (lambda c: c if c["Status"] == "critical" else None)(self.check("shortttl")),
                       30, 0.25, "TTL check to expire")
        self.assertIn("TTL expired", c["Output"])

    def test_tcp_check_passes(self):
        srv = socket.socket()
        srv.bind((self.a.addr, 0))
        srv.listen(16)
        try:
            port = srv.getsockname()[1]
            body = {"Name": "tcpok", "TCP": "%s:%d" % (self.a.addr, port), "Interval": "1s", "Timeout": "2s"}
            self.assertEmpty200(self.a.put("/v1/agent/check/register", body))
            c = wait_until(lambda: (lambda c: c if c["Status"] == "passing" else None)(self.check("tcpok")),
                           30, 0.25, "tcp check to pass")
            self.assertEqual(c["Type"], "tcp")
            self.assertIn("Success", c["Output"])
        finally:
            srv.close()
        wait_until(lambda: self.check("tcpok")["Status"] == "critical", 30, 0.25, "tcp check to go critical")

    def test_http_check_statuses(self):
        state = {"code": 200}

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = b"body-%d" % state["code"]
                self.send_response(state["code"])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer((self.a.addr, 0), H)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            url = "http://%s:%d/health" % (self.a.addr, srv.server_address[1])
            body = {"Name": "httpchk", "HTTP": url, "Interval": "1s", "Timeout": "2s"}
            self.assertEmpty200(self.a.put("/v1/agent/check/register", body))
            for code, status in ((200, "passing"), (429, "warning"), (503, "critical"), (204, "passing")):
                state["code"] = code
                c = wait_until(lambda: (lambda c: c if c["Status"] == status else None)(self.check("httpchk")),
                               30, 0.25, "http check %s after HTTP %d" % (status, code))
                self.assertEqual(c["Type"], "http")
                self.assertTrue(c["Output"].startswith("HTTP GET %s: %d" % (url, code)), c["Output"])
                if code != 204:
                    self.assertIn("body-%d" % code, c["Output"])
        finally:
            srv.shutdown()
            srv.server_close()


class MaintenanceTest(AgentTestCase):
    def checks(self):
        r = self.a.get("/v1/agent/checks")
        self.assertOK(r)
        return self.assertJSON(r)

    def test_node_maintenance(self):
        try:
            self.assertEmpty200(self.a.put("/v1/agent/maintenance?enable=true&reason=deploying"))
            c = self.checks()["_node_maintenance"]
            self.assertEqual(c["Status"], "critical")
            self.assertEqual(c["Name"], "Node Maintenance Mode")
            self.assertEqual(c["Notes"], "deploying")
            # Repeating an enable is a no-op.
            self.assertEmpty200(self.a.put("/v1/agent/maintenance?enable=true&reason=other"))
            self.assertEqual(self.checks()["_node_maintenance"]["Notes"], "deploying")
            r = self.a.get("/v1/health/state/any")
            self.assertIn("_node_maintenance", [c["CheckID"] for c in self.assertJSON(r)])
            self.assertEmpty200(self.a.put("/v1/agent/maintenance?enable=false"))
            self.assertNotIn("_node_maintenance", self.checks())
            self.assertEmpty200(self.a.put("/v1/agent/maintenance?enable=1"))
            self.assertEqual(self.checks()["_node_maintenance"]["Notes"],
                             "Maintenance mode is enabled for this node, but no reason was provided. "
                             "This is a default message.")
        finally:
            self.a.put("/v1/agent/maintenance?enable=false")
        self.assertNotIn("_node_maintenance", self.checks())

    def test_service_maintenance(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register",
                                       {"Name": "mweb", "ID": "mweb1", "Check": {"TTL": "60s", "Status": "passing"}}))
        r = self.a.get("/v1/health/service/mweb?passing")
        self.assertEqual(len(self.assertJSON(r)), 1)
        self.assertEmpty200(self.a.put("/v1/agent/service/maintenance/mweb1?enable=true&reason=drain"))
        c = self.checks()["_service_maintenance:mweb1"]
        self.assertEqual(c["Status"], "critical")
        self.assertEqual(c["Name"], "Service Maintenance Mode")
        self.assertEqual(c["Notes"], "drain")
        self.assertEqual(c["ServiceID"], "mweb1")
        r = self.a.get("/v1/health/service/mweb?passing")
        self.assertEqual(self.assertJSON(r), [])
        self.assertEmpty200(self.a.put("/v1/agent/service/maintenance/mweb1?enable=false"))
        self.assertNotIn("_service_maintenance:mweb1", self.checks())
        self.assertEqual(len(self.assertJSON(self.a.get("/v1/health/service/mweb?passing"))), 1)
        self.assertEmpty200(self.a.put("/v1/agent/service/maintenance/mweb1?enable=True"))
        self.assertEqual(self.checks()["_service_maintenance:mweb1"]["Notes"],
                         "Maintenance mode is enabled for this service, but no reason was provided. "
                         "This is a default message.")
        self.assertEmpty200(self.a.put("/v1/agent/service/maintenance/mweb1?enable=false"))

    def test_maintenance_errors(self):
        self.assertErrorText(self.a.put("/v1/agent/maintenance"), 400, "Missing value for enable")
        self.assertErrorText(self.a.put("/v1/agent/maintenance?enable=maybe"), 400,
                             'Invalid value for enable: "maybe"')
        self.assertErrorText(self.a.put("/v1/agent/service/maintenance/ghost?enable=true"), 404,
                             'No service registered with ID "ghost"')
        self.assertErrorText(self.a.put("/v1/agent/service/maintenance/ghost"), 400, "Missing value for enable")
        self.assertNotIn("_node_maintenance", self.checks())


class AgentLeaveTest(unittest.TestCase):
    def test_leave_stops_agent(self):
        ag = Agent(name="leave", datacenter="dcleave")
        try:
            ag.start()
            r = ag.put("/v1/agent/leave")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.body, b"")
            code = ag.wait_exit(30)
            self.assertIsNotNone(code, "agent still running 30 s after /v1/agent/leave\n" + ag.log_tail())
        finally:
            ag.close()


if __name__ == "__main__":
    unittest.main()
