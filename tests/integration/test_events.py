"""Coordinates (§8) and user events (§11): coordinate nodes/node/update, event fire and list with
the index XOR rule, blocking list, filters, and the limits. Event calls also go through
python-consul 0.7.1 (Debian's python3-consul), as real clients do."""

import threading
import unittest
import urllib.parse

from harness import AgentTestCase, b64, wait_until

try:
    import consul
except ImportError:  # the raw-HTTP tests still run
    consul = None

UUID_RE = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
ZERO_COORD = {"Vec": [0, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 1e-05}


def id_index(event_id):
    """Consul's uuidToUint64: the first 16 hex digits XOR the last 16; never 0."""
    h = event_id.replace("-", "")
    v = int(h[:16], 16) ^ int(h[16:], 16)
    return v or 1


def in_thread(fn):
    """Runs fn in a thread; returns (thread, result dict with 'value' or 'error')."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except Exception as e:  # reported by the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def metric(agent, kind, name, field):
    r = agent.get("/v1/agent/metrics")
    for m in r.json()[kind]:
        if m["Name"] == name:
            return m[field]
    return 0  # a counter not counted yet


def parked(agent):
    """Blocking queries the agent holds parked right now."""
    return metric(agent, "Gauges", "dcgate.http.waiters", "Value")


def woken(agent):
    """Parked queries woken by a change so far."""
    return metric(agent, "Counters", "dcgate.http.waiters_woken", "Count")


def wait_parked(agent, t):
    """Waits until the query of thread t is parked (or t is already done), so that the change
    made next really wakes a parked query. Bounded; a state, not a timing, is awaited."""
    wait_until(lambda: not t.is_alive() or parked(agent) >= 1, 20, 0.05, "the blocking query to park")


class CoordinateTest(AgentTestCase):
    def test_nodes_shape_and_index(self):
        r = self.a.get("/v1/coordinate/nodes")
        self.assertOK(r)
        self.assertIndex(r)
        lst = self.assertJSON(r)
        mine = [e for e in lst if e["Node"] == self.a.node]
        self.assertEqual(mine, [{"Node": self.a.node, "Segment": "", "Coord": ZERO_COORD}])
        self.assertIn(b'"Height":1e-', r.body)  # not 1.0000000000000001e-05

    def test_nodes_lists_every_catalog_node(self):
        r = self.a.put("/v1/catalog/register", {"Node": "coord-ext1", "Address": "10.9.0.1"})
        self.assertOK(r)
        r = self.a.get("/v1/coordinate/nodes")
        names = [e["Node"] for e in self.assertJSON(r)]
        self.assertIn("coord-ext1", names)
        self.assertIn(self.a.node, names)
        self.assertEqual(names, sorted(names))
        self.assertOK(self.a.put("/v1/catalog/deregister", {"Node": "coord-ext1"}))

    def test_nodes_blocking_returns_after_node_change(self):
        r = self.a.get("/v1/coordinate/nodes")
        idx = self.assertIndex(r)
        t, out = in_thread(lambda: self.a.get("/v1/coordinate/nodes?index=%d&wait=20s" % idx, timeout=40))
        wait_parked(self.a, t)
        self.assertOK(self.a.put("/v1/catalog/register", {"Node": "coord-block1", "Address": "10.9.0.2"}))
        t.join(40)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", out)
        r = out["value"]
        self.assertOK(r)
        self.assertGreater(self.assertIndex(r), idx)
        self.assertIn("coord-block1", [e["Node"] for e in r.json()])
        self.assertOK(self.a.put("/v1/catalog/deregister", {"Node": "coord-block1"}))

    def test_node_one_element(self):
        r = self.a.get("/v1/coordinate/node/" + self.a.node)
        self.assertOK(r)
        self.assertIndex(r)
        self.assertEqual(self.assertJSON(r), [{"Node": self.a.node, "Segment": "", "Coord": ZERO_COORD}])

    def test_node_unknown_404(self):
        r = self.a.get("/v1/coordinate/node/no-such-node")
        self.assertStatus(r, 404)
        self.assertEqual(r.body, b"")
        self.assertIndex(r)  # python-consul reads it on every 404

    def test_update(self):
        body = {"Node": self.a.node, "Segment": "", "Coord": {"Vec": [0.001, 0, 0, 0, 0, 0, 0, 0],
                                                               "Error": 0.2, "Adjustment": 0, "Height": 1e-05}}
        self.assertEmpty200(self.a.put("/v1/coordinate/update", body))
        # accepted and dropped: the node keeps the zero coordinate
        r = self.a.get("/v1/coordinate/node/" + self.a.node)
        self.assertEqual(r.json()[0]["Coord"], ZERO_COORD)
        r = self.a.put("/v1/coordinate/update", b'{"Node": ')
        self.assertStatus(r, 400)
        self.assertTrue(r.text.startswith("Request decode failed"), r)
        self.assertErrorText(self.a.put("/v1/coordinate/update", b""), 400, "Request decode failed: EOF")
        r = self.a.put("/v1/coordinate/update", {"Coord": {"Vec": "x"}})
        self.assertStatus(r, 400)
        self.assertStatus(self.a.get("/v1/coordinate/update"), 405)

    @unittest.skipIf(consul is None, "python3-consul not installed")
    def test_python_consul_nodes(self):
        c = consul.Consul(host=self.a.addr, port=self.a.http_port)
        index, nodes = c.coordinate.nodes()
        self.assertGreater(int(index), 0)
        self.assertIn(self.a.node, [n["Node"] for n in nodes])


class EventTest(AgentTestCase):
    def setUp(self):
        super().setUp()
        self.c = consul.Consul(host=self.a.addr, port=self.a.http_port) if consul else None

    def fire(self, name, body=b"", query=""):
        r = self.a.put("/v1/event/fire/" + name + query, body)
        self.assertOK(r)
        return self.assertJSON(r)

    def listing(self, name=None):
        r = self.a.get("/v1/event/list" + ("?name=" + name if name is not None else ""))
        self.assertOK(r)
        return self.assertIndex(r), self.assertJSON(r)

    def test_fire_shape(self):
        ev = self.fire("shape-ev", b"hello", "?node=.&service=web&tag=v1")
        self.assertRegex(ev["ID"], UUID_RE)
        self.assertEqual(ev["Name"], "shape-ev")
        self.assertEqual(ev["Payload"], b64("hello"))
        self.assertEqual((ev["NodeFilter"], ev["ServiceFilter"], ev["TagFilter"]), (".", "web", "v1"))
        self.assertEqual((ev["Version"], ev["LTime"]), (1, 0))
        empty = self.fire("shape-empty")
        self.assertIsNone(empty["Payload"])
        self.assertEqual((empty["NodeFilter"], empty["ServiceFilter"], empty["TagFilter"]), ("", "", ""))

    def test_list_by_exact_name_oldest_first(self):
        first = self.fire("order-a", b"1")
        self.fire("order-ab", b"x")
        second = self.fire("order-a", b"2")
        idx, lst = self.listing("order-a")
        self.assertEqual([e["ID"] for e in lst], [first["ID"], second["ID"]])
        self.assertEqual([e["Payload"] for e in lst], [b64("1"), b64("2")])
        self.assertEqual(idx, id_index(second["ID"]))
        # the recorded copy carries the Lamport time, increasing
        self.assertGreater(lst[0]["LTime"], 0)
        self.assertGreater(lst[1]["LTime"], lst[0]["LTime"])
        # no name: every event, the newest last, and the index is the newest one's
        idx_all, everything = self.listing()
        self.assertEqual(everything[-1]["ID"], second["ID"])
        self.assertEqual(idx_all, id_index(second["ID"]))

    def test_empty_list_index_is_1(self):
        idx, lst = self.listing("never-fired")
        self.assertEqual((idx, lst), (1, []))

    def test_missing_name(self):
        self.assertErrorText(self.a.put("/v1/event/fire/", b"x"), 400, "Missing name")
        self.assertStatus(self.a.get("/v1/event/fire/x"), 405)

    def test_payload_too_large(self):
        r = self.a.put("/v1/event/fire/too-big", b"x" * 600)
        self.assertStatus(r, 400)
        self.assertIn("exceeds configured limit of 512 bytes", r.text)
        # a payload just under the limit once encoded is refused too; a small one is fine
        self.assertStatus(self.a.put("/v1/event/fire/too-big", b"x" * 480), 400)
        self.fire("too-big", b"x" * 100)
        self.assertEqual(len(self.listing("too-big")[1]), 1)

    def test_bad_filters(self):
        r = self.a.put("/v1/event/fire/bad-filter?node=(", b"")
        self.assertStatus(r, 500)
        self.assertTrue(r.text.startswith("Invalid node filter: "), r)
        self.assertErrorText(self.a.put("/v1/event/fire/bad-filter?tag=x", b""), 500,
                             "Cannot provide tag filter without service filter")
        # nested repetitions that glibc's regcomp would expand into gigabytes; Go refuses them too
        # (common/regex.c's limits; fuzz_regex found what glibc compounds besides copies)
        for pattern, why in (("((a{1,100}){1,100}){1,100}", "expression too large"),
                             ("(" * 20 + "a" + ")+" * 20, "expression nests too deeply"),
                             ("a+*", "invalid nested repetition operator"),
                             ("a)", "unexpected )")):
            r = self.a.put("/v1/event/fire/bad-filter?" + urllib.parse.urlencode({"service": pattern}), b"")
            self.assertErrorText(r, 500, "Invalid service filter: error parsing regexp: " + why)
        r = self.a.put("/v1/event/fire/bad-filter?" + urllib.parse.urlencode({"node": "(a)\\1"}), b"")
        self.assertStatus(r, 500)  # no back-references in Go's regexp
        self.assertEqual(self.listing("bad-filter")[1], [])

    def test_filters(self):
        self.assertOK(self.a.put("/v1/agent/service/register",
                                 {"Name": "evweb", "ID": "evweb1", "Tags": ["blue", "v2"], "Port": 80}))
        try:
            cases = [
                ({"node": "no-such-node-xyz"}, False),
                ({"node": "^%s$" % self.a.node}, True),  # node names need no escaping
                ({"service": "^evweb$"}, True),
                ({"service": "^evweb1$"}, True),  # Consul matches the service ID
                ({"service": "^nosuchsvc$"}, False),
                ({"service": "evweb", "tag": "^v2$"}, True),
                ({"service": "evweb", "tag": "^red$"}, False),
                ({"node": ".", "service": "nosuchsvc"}, False),
            ]
            for i, (query, kept) in enumerate(cases):
                name = "filt-%d" % i
                ev = self.fire(name, b"p", "?" + urllib.parse.urlencode(query))
                _, lst = self.listing(name)
                self.assertEqual([e["ID"] for e in lst], [ev["ID"]] if kept else [], query)
        finally:
            self.a.put("/v1/agent/service/deregister/evweb1")

    def test_blocking_list_returns_after_fire(self):
        self.fire("blk-ev", b"0")
        idx, lst = self.listing("blk-ev")
        t, out = in_thread(lambda: self.a.get("/v1/event/list?name=blk-ev&index=%d&wait=20s" % idx,
                                              timeout=40))
        wait_parked(self.a, t)
        new = self.fire("blk-ev", b"1")
        t.join(40)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", out)
        r = out["value"]
        self.assertOK(r)
        self.assertEqual(self.assertIndex(r), id_index(new["ID"]))
        self.assertEqual(r.json()[-1]["ID"], new["ID"])

    def test_blocking_list_ignores_other_names(self):
        self.fire("blk-mine", b"0")
        idx, _ = self.listing("blk-mine")
        t, out = in_thread(lambda: self.a.get("/v1/event/list?name=blk-mine&index=%d&wait=20s" % idx,
                                              timeout=40))
        wait_parked(self.a, t)
        before = woken(self.a)
        self.fire("blk-other", b"x")  # wakes the query, which sees the same index and parks again
        wait_until(lambda: woken(self.a) > before, 20, 0.05, "the other event to wake the query")
        wait_parked(self.a, t)
        new = self.fire("blk-mine", b"1")
        t.join(40)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", out)
        r = out["value"]
        self.assertOK(r)
        self.assertEqual(r.index, id_index(new["ID"]))
        self.assertEqual([e["Name"] for e in r.json()], ["blk-mine", "blk-mine"])
        self.assertEqual(r.json()[-1]["ID"], new["ID"])

    def test_index_differs_returns_current(self):
        ev = self.fire("diff-ev", b"")
        other = id_index(ev["ID"]) ^ 0x5a5a  # any value but the current one
        r = self.a.get("/v1/event/list?name=diff-ev&index=%d&wait=20s" % other, timeout=40)
        self.assertOK(r)
        self.assertEqual(r.index, id_index(ev["ID"]))
        self.assertEqual([e["ID"] for e in r.json()], [ev["ID"]])

    def test_buffer_keeps_256(self):
        ids = [self.fire("ring-%d" % i)["ID"] for i in range(260)]
        _, everything = self.listing()
        self.assertEqual([e["ID"] for e in everything], ids[4:])
        self.assertEqual(self.listing("ring-3")[1], [])

    @unittest.skipIf(consul is None, "python3-consul not installed")
    def test_python_consul_fire_and_list(self):
        ev = self.c.event.fire("py-ev", "payload-1")
        self.assertEqual(ev["Name"], "py-ev")
        self.assertRegex(ev["ID"], UUID_RE)
        index, events = self.c.event.list(name="py-ev")
        self.assertEqual(int(index), id_index(ev["ID"]))
        self.assertEqual([e["ID"] for e in events], [ev["ID"]])
        self.assertEqual(events[0]["Payload"], b"payload-1")  # decoded from base64 by the client
        ev2 = self.c.event.fire("py-ev")  # python-consul's default body ""
        index2, events2 = self.c.event.list(name="py-ev")
        self.assertEqual(int(index2), id_index(ev2["ID"]))
        self.assertIsNone(events2[-1]["Payload"])
        # python-consul blocking list
        t, out = in_thread(lambda: self.c.event.list(name="py-ev", index=index2, wait="20s"))
        wait_parked(self.a, t)
        ev3 = self.c.event.fire("py-ev", "3")
        t.join(40)
        self.assertFalse(t.is_alive())
        self.assertNotIn("error", out)
        index3, events3 = out["value"]
        self.assertEqual(int(index3), id_index(ev3["ID"]))
        self.assertEqual(events3[-1]["Payload"], b"3")

    @unittest.skipIf(consul is None, "python3-consul not installed")
    def test_python_consul_errors(self):
        with self.assertRaises(consul.base.BadRequest):
            self.c.event.fire("py-big", "x" * 600)
        self.assertEqual(self.c.event.list(name="py-none")[1], [])


if __name__ == "__main__":
    unittest.main()
