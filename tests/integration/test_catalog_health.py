"""Catalog (§4), health (§5) and implicit catalog content (§13)."""

import unittest

from harness import AgentTestCase


class CatalogTest(AgentTestCase):
    def reg(self, body):
        r = self.a.put("/v1/catalog/register", body)
        self.assertOK(r)
        self.assertIs(self.assertJSON(r), True)

    def dereg(self, body):
        r = self.a.put("/v1/catalog/deregister", body)
        self.assertOK(r)
        self.assertIs(self.assertJSON(r), True)

    def test_consul_service_present(self):
        r = self.a.get("/v1/catalog/services")
        self.assertOK(r)
        self.assertIndex(r)
        d = self.assertJSON(r)
        self.assertIn("consul", d)
        self.assertEqual(d["consul"], [])
        r = self.a.get("/v1/catalog/service/consul")
        lst = self.assertJSON(r)
        self.assertEqual(len(lst), 1)
        self.assertEqual(lst[0]["ServiceID"], "consul")
        self.assertEqual(lst[0]["ServicePort"], 8300)
        self.assertEqual(lst[0]["Node"], self.a.node)

    def test_own_node_listed(self):
        r = self.a.get("/v1/catalog/nodes")
        self.assertOK(r)
        self.assertIndex(r)
        nodes = self.assertJSON(r)
        me = [n for n in nodes if n["Node"] == self.a.node]
        self.assertEqual(len(me), 1)
        self.assertEqual(me[0]["Address"], self.a.addr)

    def test_register_pascal_full_cycle(self):
        self.reg({"Datacenter": "dc1", "Node": "ext1", "Address": "192.0.2.10", "TaggedAddresses": None,
                  "NodeMeta": {"rack": "r1"},
                  "Service": {"ID": "redis1", "Service": "redis", "Tags": ["primary", "v1"], "Port": 6379,
                              "Meta": {"m": "1"}},
                  "Check": {"CheckID": "redis-alive", "Name": "redis alive", "Status": "passing",
                            "ServiceID": "redis1"}})
        self.reg({"Node": "ext2", "Address": "192.0.2.11",
                  "Service": {"Service": "redis", "Tags": ["replica", "v1"], "Port": 6380}})
        # catalog/services: union of tags
        d = self.assertJSON(self.a.get("/v1/catalog/services"))
        self.assertEqual(sorted(d["redis"]), ["primary", "replica", "v1"])
        self.assertEqual(d["consul"], [])
        # catalog/nodes includes both, sorted by name
        r = self.a.get("/v1/catalog/nodes")
        names = [n["Node"] for n in self.assertJSON(r)]
        self.assertIn("ext1", names)
        self.assertIn("ext2", names)
        self.assertEqual(names, sorted(names))
        # catalog/service with case-insensitive name, tag filter
        r = self.a.get("/v1/catalog/service/REDIS")
        self.assertOK(r)
        self.assertIndex(r)
        lst = self.assertJSON(r)
        self.assertEqual(sorted(x["ServiceID"] for x in lst), ["redis", "redis1"])
        one = [x for x in lst if x["ServiceID"] == "redis1"][0]
        self.assertEqual(one["Node"], "ext1")
        self.assertEqual(one["Address"], "192.0.2.10")
        self.assertEqual(one["ServiceName"], "redis")
        self.assertEqual(one["ServicePort"], 6379)
        self.assertEqual(one["ServiceAddress"], "")
        self.assertEqual(one["NodeMeta"], {"rack": "r1"})
        self.assertEqual(one["ServiceMeta"], {"m": "1"})
        lst = self.assertJSON(self.a.get("/v1/catalog/service/redis?tag=PRIMARY"))
        self.assertEqual([x["ServiceID"] for x in lst], ["redis1"])
        lst = self.assertJSON(self.a.get("/v1/catalog/service/redis?tag=v1&tag=replica"))
        self.assertEqual([x["ServiceID"] for x in lst], ["redis"])
        self.assertEqual(self.assertJSON(self.a.get("/v1/catalog/service/redis?tag=nope")), [])
        # catalog/node
        r = self.a.get("/v1/catalog/node/ext1")
        self.assertOK(r)
        self.assertIndex(r)
        d = self.assertJSON(r)
        self.assertEqual(d["Node"]["Node"], "ext1")
        self.assertEqual(d["Node"]["Address"], "192.0.2.10")
        self.assertEqual(d["Services"]["redis1"]["Service"], "redis")
        self.assertEqual(d["Services"]["redis1"]["Port"], 6379)
        # catalog checks are stored, not run
        hc = self.assertJSON(self.a.get("/v1/health/checks/redis"))
        alive = [c for c in hc if c["CheckID"] == "redis-alive"]
        self.assertEqual(len(alive), 1)
        self.assertEqual(alive[0]["Status"], "passing")
        self.assertEqual(alive[0]["Node"], "ext1")
        # deregister one service, then a whole node
        self.dereg({"Datacenter": "dc1", "Node": "ext1", "ServiceID": "redis1"})
        lst = self.assertJSON(self.a.get("/v1/catalog/service/redis"))
        self.assertEqual([x["ServiceID"] for x in lst], ["redis"])
        self.assertEqual(self.assertJSON(self.a.get("/v1/catalog/node/ext1"))["Services"], {})
        self.dereg({"Node": "ext2"})
        self.assertEqual(self.assertJSON(self.a.get("/v1/catalog/service/redis")), [])
        self.assertNotIn("redis", self.assertJSON(self.a.get("/v1/catalog/services")))
        self.dereg({"Node": "ext1"})
        r = self.a.get("/v1/catalog/node/ext1")
        self.assertOK(r)
        self.assertEqual(r.body.strip(), b"null")

    def test_register_python_lowercase_shape(self):
        self.reg({"node": "pynode", "address": "192.0.2.20", "datacenter": "dc1",
                  "service": {"Service": "pysvc", "ID": "pysvc1", "Tags": ["t"], "Port": 81},
                  "check": {"Node": "pynode", "CheckID": "pychk", "Name": "py check", "Status": "warning",
                            "ServiceID": "pysvc1"}})
        d = self.assertJSON(self.a.get("/v1/catalog/node/pynode"))
        self.assertEqual(d["Services"]["pysvc1"]["Tags"], ["t"])
        hc = self.assertJSON(self.a.get("/v1/health/node/pynode"))
        self.assertEqual([(c["CheckID"], c["Status"]) for c in hc], [("pychk", "warning")])
        self.dereg({"node": "pynode", "checkid": "pychk"})
        self.assertEqual(self.assertJSON(self.a.get("/v1/health/node/pynode")), [])
        self.dereg({"Node": "pynode"})

    def test_unknown_node_null(self):
        r = self.a.get("/v1/catalog/node/no-such-node")
        self.assertOK(r)
        self.assertIndex(r)
        self.assertEqual(r.json(), None)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"))

    def test_unknown_service_empty(self):
        r = self.a.get("/v1/catalog/service/no-such-service")
        self.assertOK(r)
        self.assertIndex(r)
        self.assertEqual(self.assertJSON(r), [])

    def test_missing_names_400(self):
        self.assertErrorText(self.a.get("/v1/catalog/service/"), 400, "Missing service name")
        self.assertErrorText(self.a.get("/v1/catalog/node/"), 400, "Missing node name")

    def test_register_errors(self):
        r = self.a.put("/v1/catalog/register", {"Address": "192.0.2.1"})
        self.assertStatus(r, 500)
        self.assertIn("Must provide node", r.text)
        r = self.a.put("/v1/catalog/register", {"Node": "x-noaddr"})
        self.assertStatus(r, 500)
        self.assertIn("Must provide address", r.text)
        self.assertIsNone(self.a.get("/v1/catalog/node/x-noaddr").json())


class HealthTest(AgentTestCase):
    def register(self, sid, name, tags, status):
        body = {"Name": name, "ID": sid, "Tags": tags, "Port": 80,
                "Check": {"TTL": "300s", "Status": status}}
        r = self.a.put("/v1/agent/service/register", body)
        self.assertEmpty200(r)

    def health(self, name, query=""):
        r = self.a.get("/v1/health/service/%s%s" % (name, query))
        self.assertOK(r)
        self.assertIndex(r)
        return self.assertJSON(r)

    def test_serf_health_in_state_any(self):
        r = self.a.get("/v1/health/state/any")
        self.assertOK(r)
        self.assertIndex(r)
        checks = self.assertJSON(r)
        serf = [c for c in checks if c["CheckID"] == "serfHealth" and c["Node"] == self.a.node]
        self.assertEqual(len(serf), 1)
        self.assertEqual(serf[0]["Name"], "Serf Health Status")
        self.assertEqual(serf[0]["Status"], "passing")
        self.assertEqual(serf[0]["ServiceID"], "")
        self.assertEqual(serf[0]["ServiceTags"], [])
        self.assertIn("Agent alive", serf[0]["Output"])

    def test_state_filters(self):
        self.register("st-crit", "stsvc", [], "critical")
        self.register("st-pass", "stsvc", [], "passing")
        crit = [c["CheckID"] for c in self.assertJSON(self.a.get("/v1/health/state/critical"))]
        self.assertIn("service:st-crit", crit)
        self.assertNotIn("service:st-pass", crit)
        passing = [c["CheckID"] for c in self.assertJSON(self.a.get("/v1/health/state/passing"))]
        self.assertIn("service:st-pass", passing)
        self.assertIn("serfHealth", passing)
        self.assertNotIn("service:st-crit", passing)
        r = self.a.get("/v1/health/state/nonsense")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r), [])

    def test_node(self):
        r = self.a.get("/v1/health/node/%s" % self.a.node)
        self.assertOK(r)
        self.assertIndex(r)
        ids = [c["CheckID"] for c in self.assertJSON(r)]
        self.assertIn("serfHealth", ids)
        r = self.a.get("/v1/health/node/unknown-node-xyz")
        self.assertOK(r)
        self.assertEqual(self.assertJSON(r), [])

    def test_checks_for_service(self):
        self.register("hc1", "hcsvc", [], "warning")
        r = self.a.get("/v1/health/checks/hcsvc")
        self.assertOK(r)
        self.assertIndex(r)
        checks = self.assertJSON(r)
        self.assertEqual([(c["CheckID"], c["Status"], c["ServiceName"]) for c in checks],
                         [("service:hc1", "warning", "hcsvc")])
        self.assertEqual(self.assertJSON(self.a.get("/v1/health/checks/no-such-svc")), [])

    def test_service_passing_and_tags(self):
        self.register("web-a", "web", ["v1", "Blue"], "passing")
        self.register("web-b", "web", ["v1"], "critical")
        self.register("web-c", "web", ["v2", "blue"], "warning")
        all_ = self.health("web")
        self.assertEqual(sorted(e["Service"]["ID"] for e in all_), ["web-a", "web-b", "web-c"])
        e = [x for x in all_ if x["Service"]["ID"] == "web-a"][0]
        self.assertEqual(e["Node"]["Node"], self.a.node)
        self.assertEqual(e["Service"]["Tags"], ["v1", "Blue"])
        ids = sorted(c["CheckID"] for c in e["Checks"])
        self.assertEqual(ids, ["serfHealth", "service:web-a"])
        for q in ("?passing", "?passing=", "?passing=1", "?passing=true"):
            self.assertEqual([x["Service"]["ID"] for x in self.health("web", q)], ["web-a"], q)
        for q in ("?passing=0", "?passing=false"):
            self.assertEqual(len(self.health("web", q)), 3, q)
        r = self.a.get("/v1/health/service/web?passing=maybe")
        self.assertErrorText(r, 400, "Invalid value for ?passing")
        # tags: case-insensitive, repeated tags are ANDed
        self.assertEqual(sorted(x["Service"]["ID"] for x in self.health("web", "?tag=blue")), ["web-a", "web-c"])
        self.assertEqual(sorted(x["Service"]["ID"] for x in self.health("web", "?tag=V1")), ["web-a", "web-b"])
        self.assertEqual([x["Service"]["ID"] for x in self.health("web", "?tag=v1&tag=BLUE")], ["web-a"])
        self.assertEqual(self.health("web", "?tag=v1&tag=v2"), [])
        self.assertEqual([x["Service"]["ID"] for x in self.health("web", "?tag=blue&passing=1")], ["web-a"])
        # case-insensitive service name
        self.assertEqual(len(self.health("WEB")), 3)
        self.assertEqual(self.health("no-such"), [])

    def test_ttl_update_reflected(self):
        self.register("flip", "flipsvc", [], "critical")
        self.assertEqual(self.health("flipsvc", "?passing"), [])
        self.assertEmpty200(self.a.put("/v1/agent/check/pass/service:flip"))
        self.assertEqual(len(self.health("flipsvc", "?passing")), 1)

    def test_missing_args_400(self):
        self.assertErrorText(self.a.get("/v1/health/service/"), 400, "Missing service name")
        self.assertErrorText(self.a.get("/v1/health/node/"), 400, "Missing node name")
        self.assertErrorText(self.a.get("/v1/health/state/"), 400, "Missing check state")


if __name__ == "__main__":
    unittest.main()
