"""Federation (issue 4, consul-api.md 1.6 and 1.8): three datacenters on loopback, one server each,
linked over mutual TLS on their WAN port 8302, and every forwardable endpoint asked with `?dc=`
from every DC to every other one.

The cluster (FederationTest): dc1, east and west, each one persistent server (-server
-bootstrap-expect 1 -data-dir) on a leased 127.0.0.N with the standard ports, certificates made by
`dcgate tls ca create` and `dcgate tls cert create -server -dc <dc>` from one CA. They are joined
in a chain, each in another way: east has `retry_join_wan: [dc1]` in its config file, west is
told `dcgate join -wan <east>`. Nothing else links west to dc1: the WAN pool must spread
membership (joining one server brings in all of them).

Each DC holds its own data, made before the tests (directly on that DC, never through another):
a catalog node `web-<dc>` with two instances of service `web` tagged with the DC's name (one
passing, one critical) and KV keys `fed/where` = the DC's name and `fed/sub/a`. A forwarded read
is then checked against the same read made directly on the target DC right after: same status,
same JSON, same X-Consul-Index and X-Consul-KnownLeader (a quiescent DC answers the same twice; a
few rounds are allowed in case something moved in between).

Bounds: convergence waits are generous (FED_TIMEOUT, 30 s; three times that under sanitizers) and
never asserted as timing. The only timing assertions are the issue's own: the two federation
error answers (`No path to datacenter`, `Remote DC has no server currently reachable`) come
within one second (ERROR_BOUND), each one timed with time.monotonic.

The east-down test (test_zz_east_*) runs last but one: it kills east with SIGKILL, checks the
errors, the detailed datacenter list and dc1's local reads, then restarts east on its data dir and
waits for ?dc=east to work again with no manual step (east has retry_join_wan in its config).
Then test_zz_west_* does the same to west, which has no join address of its own. setUp restarts
any server found dead, so a failure there does not take the other tests with it.

JoinWaysTest covers the other ways in and out on three small DCs of its own: the -join-wan flag,
start_join_wan in a config file, `dcgate leave` (left, Status 3) and, after a kill -9 (failed,
Status 4), `dcgate force-leave -wan`.

ExampleTest runs examples/federation/run.sh on two leased addresses and checks what it prints.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import Agent, AddressLease, dcgate_bin, unb64, wait_until
from test_tls_matrix import CA, SP_REQ_HEADER, describe, run_dcgate, tls_config, write_json

SANITIZED = os.environ.get("DCGATE_SANITIZED") == "1"
# How long the WAN pool may take to converge, notice a dead server, or take a restarted one back.
FED_TIMEOUT = 90.0 if SANITIZED else 30.0
REJOIN_TIMEOUT = 2 * FED_TIMEOUT
# The issue's own bound on the two federation errors.
ERROR_BOUND = 1.0
WAN_PORT = 8302
DCS = ("dc1", "east", "west")
PAIRS = [(s, d) for s in DCS for d in DCS if s != d]
NO_PATH = "No path to datacenter"
NO_SERVER = "Remote DC has no server currently reachable"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_DIR = os.path.join(ROOT, "tests", "interop", "node")


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s):
    return None if s is None else base64.b64decode(s).decode("utf-8", "replace")


def with_dc(path, dc):
    return path + ("&" if "?" in path else "?") + "dc=" + dc


def body_of(r):
    """The parsed JSON body, or the raw text when it is not JSON (errors are text)."""
    try:
        return r.json()
    except ValueError:
        return r.text


def all_reachable(agent, dcs):
    """The agent's ?detailed datacenter list names exactly dcs, each Reachable."""
    r = agent.get("/v1/catalog/datacenters?detailed", timeout=10)
    if r.status != 200:
        return False
    v = r.json()
    return sorted(e.get("Datacenter") for e in v) == sorted(dcs) and all(e.get("Reachable") is True for e in v)


def wan_members(agent):
    r = agent.get("/v1/agent/members?wan=1", timeout=10)
    if r.status != 200:  # ValueError: wait_until keeps trying
        raise ValueError("GET /v1/agent/members?wan=1 on %s: %r" % (agent.datacenter, r))
    return r.json() or []


class Federation:
    """Three one-server datacenters from one CA, joined in a chain."""

    def __init__(self):
        self.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-fed-")
        self.ca = CA(os.path.join(self.tmpdir, "pki"))
        self.agents = {}

    def make_server(self, dc, retry_join_wan=None):
        a = Agent(name="fed-" + dc, node="fed-" + dc, datacenter=dc, dev=False)
        self.agents[dc] = a
        cert, key = self.ca.issue("server", dc)
        extra = {"retry_join_wan": [retry_join_wan]} if retry_join_wan else None
        cfg = write_json(os.path.join(a.tmpdir, "federation.json"),
                         tls_config(self.ca.cert, cert, key, extra=extra))
        a.extra_args += ["-config-file", cfg]
        a.start()
        return a

    def start(self):
        dc1 = self.make_server("dc1")
        east = self.make_server("east", retry_join_wan=dc1.addr)
        west = self.make_server("west")
        p = run_dcgate(["join", "-wan", "-http-addr", "%s:%d" % (west.addr, west.http_port), east.addr],
                       cwd=west.tmpdir)
        if p.returncode != 0 or "Successfully joined cluster by contacting 1 nodes." not in p.stdout:
            raise AssertionError("dcgate join -wan %s on west: %s" % (east.addr, describe(p)))
        self.wait_converged()
        for dc in DCS:
            self.seed(dc)
        return self

    def alive_names(self, agent):
        return sorted(m.get("Name") for m in wan_members(agent) if m.get("Status") == 1)

    def wait_converged(self, timeout=FED_TIMEOUT):
        """Every server lists the three alive, and calls every DC Reachable. (Right after a join
        a member is listed alive some 100 ms before a link to it is up; until then a forward to
        it answers 500 "Remote DC has no server currently reachable".)"""
        want = sorted("fed-%s.%s" % (dc, dc) for dc in DCS)
        for dc in DCS:
            a = self.agents[dc]
            wait_until(lambda: self.alive_names(a) == want, timeout, 0.25,
                       "%s's WAN members to be %s" % (dc, want))
            wait_until(lambda: all_reachable(a, DCS), timeout, 0.1,
                       "every DC to be Reachable in %s's ?detailed datacenter list" % dc)

    def seed(self, dc):
        """This DC's own data, written directly on it."""
        a = self.agents[dc]
        for i, status in ((1, "passing"), (2, "critical")):
            body = {"Node": "web-" + dc, "Address": "10.%d.0.1" % (DCS.index(dc) + 1),
                    "Service": {"ID": "web%d" % i, "Service": "web", "Tags": [dc], "Port": 8080 + i},
                    "Check": {"CheckID": "web%d-alive" % i, "Name": "web %d alive" % i,
                              "Status": status, "ServiceID": "web%d" % i}}
            r = a.put("/v1/catalog/register", body)
            if r.status != 200:
                raise AssertionError("seeding %s: catalog register: %r" % (dc, r))
        for k, v in (("fed/where", dc), ("fed/sub/a", "a-in-" + dc)):
            r = a.put("/v1/kv/" + k, v)
            if r.status != 200:
                raise AssertionError("seeding %s: PUT /v1/kv/%s: %r" % (dc, k, r))

    def ensure_running(self):
        """Restarts any server that is not running (a failed test may leave one down)."""
        restarted = False
        for dc in DCS:
            a = self.agents[dc]
            if not a.running():
                a.start()
                restarted = True
        if restarted:
            self.wait_converged(REJOIN_TIMEOUT)

    def close(self):
        for a in self.agents.values():
            a.close()
        if not os.environ.get("DCGATE_IT_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)


class FederationTest(unittest.TestCase):
    maxDiff = None
    cluster = None
    _start_error = None

    def setUp(self):
        cls = type(self)
        if cls._start_error is not None:
            raise RuntimeError("the federation failed to start earlier: %s" % cls._start_error)
        if cls.cluster is None:
            try:
                cls.cluster = Federation()
                cls.cluster.start()
            except Exception as e:
                cls._start_error = str(e)
                raise
        else:
            cls.cluster.ensure_running()
        self.ag = cls.cluster.agents

    @classmethod
    def tearDownClass(cls):
        if cls.cluster is not None:
            cls.cluster.close()
            cls.cluster = None

    def log_tails(self, lines=40):
        fed = type(self).cluster
        if fed is None:
            return ""
        return "\n".join("----- %s log tail (%s, %s) -----\n%s" % (dc, a.addr, a.log_path, a.log_tail(lines))
                         for dc, a in fed.agents.items())

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            sys.stderr.write("\n===== logs for %s =====\n%s\n=====\n" % (self.id(), self.log_tails()))
            sys.stderr.flush()
        return out

    # ------------------------------------------------------------------------------ helpers
    def fwd(self, src, dst, method, path, body=None, **kw):
        return self.ag[src].request(method, with_dc(path, dst), body, **kw)

    def same_as_direct(self, src, dst, path, rounds=4):
        """GET path?dc=dst on src, then the same GET directly on dst: same status, JSON, index
        and known-leader header. Returns the forwarded response."""
        last = None
        for _ in range(rounds):
            f = self.fwd(src, dst, "GET", path)
            d = self.ag[dst].get(path)
            same = (f.status == d.status and body_of(f) == body_of(d) and f.index == d.index and
                    f.header("X-Consul-KnownLeader") == d.header("X-Consul-KnownLeader") and
                    f.header("Content-Type") == d.header("Content-Type"))
            if same:
                self.assertIn(f.status, (200, 404), "GET %s?dc=%s from %s: %r" % (path, dst, src, f))
                if f.status == 200 or path.startswith("/v1/kv/"):
                    self.assertIsNotNone(f.index, "X-Consul-Index missing on GET %s?dc=%s from %s: %r"
                                         % (path, dst, src, f))
                    self.assertGreater(f.index, 0)
                return f
            last = (f, d)
            time.sleep(0.2)
        f, d = last
        self.fail("GET %s?dc=%s from %s differs from the same read on %s directly:\n"
                  "forwarded: %d index %s leader %s %r\ndirect:    %d index %s leader %s %r"
                  % (path, dst, src, dst, f.status, f.index, f.header("X-Consul-KnownLeader"), f.body[:800],
                     d.status, d.index, d.header("X-Consul-KnownLeader"), d.body[:800]))

    def timed(self, agent, method, path, body=None, timeout=15.0):
        t0 = time.monotonic()
        r = agent.request(method, path, body, timeout=timeout)
        return r, time.monotonic() - t0

    def assertText(self, r, status, text, what):
        self.assertEqual((r.status, r.text.rstrip("\n")), (status, text), "%s: %r" % (what, r))

    def kv_value(self, agent, key, dc=None):
        path = "/v1/kv/" + key
        r = agent.get(with_dc(path, dc) if dc else path)
        if r.status == 404:
            return None
        self.assertEqual(r.status, 200, r)
        return unb64(r.json()[0]["Value"])

    # ------------------------------------------------------------------------------ membership
    def test_members_wan(self):
        """Every server lists the three, in Consul's WAN Member shape."""
        for dc in DCS:
            with self.subTest(on=dc):
                ms = {m["Name"]: m for m in wan_members(self.ag[dc])}
                self.assertEqual(sorted(ms), sorted("fed-%s.%s" % (d, d) for d in DCS), ms)
                for d in DCS:
                    m = ms["fed-%s.%s" % (d, d)]
                    self.assertEqual(m.get("Status"), 1, m)
                    self.assertEqual(m.get("Port"), WAN_PORT, m)
                    self.assertEqual(m.get("Addr"), self.ag[d].addr, m)
                    tags = m.get("Tags") or {}
                    self.assertEqual(tags.get("role"), "consul", m)
                    self.assertEqual(tags.get("dc"), d, m)

    def test_cli_members_wan_and_datacenters(self):
        for dc in DCS:
            a = self.ag[dc]
            with self.subTest(on=dc):
                p = run_dcgate(["members", "-wan", "-http-addr", "%s:%d" % (a.addr, a.http_port)], cwd=a.tmpdir)
                self.assertEqual(p.returncode, 0, describe(p))
                lines = p.stdout.splitlines()
                self.assertTrue(lines and lines[0].split()[:3] == ["Node", "Address", "Status"], describe(p))
                rows = {l.split()[0]: l.split() for l in lines[1:] if l.strip()}
                for d in DCS:
                    row = rows.get("fed-%s.%s" % (d, d))
                    self.assertIsNotNone(row, "no row for fed-%s.%s: %s" % (d, d, describe(p)))
                    self.assertEqual(row[1], "%s:%d" % (self.ag[d].addr, WAN_PORT), describe(p))
                    self.assertEqual(row[2:4], ["alive", "server"], describe(p))
                    self.assertIn(d, row[4:], describe(p))
                self.assertEqual(len(rows), 3, describe(p))
                p = run_dcgate(["catalog", "datacenters", "-http-addr", "%s:%d" % (a.addr, a.http_port)],
                               cwd=a.tmpdir)
                self.assertEqual(p.returncode, 0, describe(p))
                names = p.stdout.split()
                self.assertEqual(names[:1], [dc], describe(p))
                self.assertEqual(sorted(names), sorted(DCS), describe(p))
        # the CLI reads another DC's catalog through the local agent
        a = self.ag["dc1"]
        p = run_dcgate(["catalog", "services", "-datacenter", "east", "-tags",
                        "-http-addr", "%s:%d" % (a.addr, a.http_port)], cwd=a.tmpdir)
        self.assertEqual(p.returncode, 0, describe(p))
        web = [l.split() for l in p.stdout.splitlines() if l.split()[:1] == ["web"]]
        self.assertEqual(len(web), 1, describe(p))
        self.assertIn("east", web[0][1], describe(p))
        self.assertNotIn("dc1", web[0][1], describe(p))
        p = run_dcgate(["kv", "get", "-datacenter", "west", "-http-addr", "%s:%d" % (a.addr, a.http_port),
                        "fed/where"], cwd=a.tmpdir)
        self.assertEqual((p.returncode, p.stdout.strip()), (0, "west"), describe(p))

    def test_http_join_wan(self):
        """PUT /v1/agent/join/<addr>?wan=1 (west to dc1, already known through east): 200, and
        the pool is the same three; a join to an address where nothing listens is a 500."""
        r = self.ag["west"].put("/v1/agent/join/%s?wan=1" % self.ag["dc1"].addr)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"", r)
        self.fed.wait_converged()
        lease = AddressLease()
        try:
            r = self.ag["west"].put("/v1/agent/join/%s:%d?wan=1" % (lease.addr, WAN_PORT), timeout=60)
        finally:
            lease.release()
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.text.strip(), r)
        self.assertEqual(self.fed.alive_names(self.ag["west"]), sorted("fed-%s.%s" % (d, d) for d in DCS))

    def test_datacenters(self):
        for dc in DCS:
            with self.subTest(on=dc):
                r = self.ag[dc].get("/v1/catalog/datacenters")
                self.assertEqual(r.status, 200, r)
                v = r.json()
                self.assertEqual(v[0], dc, "the local DC first: %r" % v)
                self.assertEqual(sorted(v), sorted(DCS), v)
                # ?dc is ignored here (agent-local): the same list
                self.assertEqual(self.ag[dc].get("/v1/catalog/datacenters?dc=west").json(), v)

    def test_datacenters_detailed(self):
        """Per DC: Reachable, ServersAlive, ServersKnown (eventually consistent with the WAN
        members, which setUp saw all alive)."""
        for dc in DCS:
            with self.subTest(on=dc):
                try:
                    wait_until(lambda: all_reachable(self.ag[dc], DCS), FED_TIMEOUT, 0.25,
                               "every DC Reachable in %s's detailed list" % dc)
                except AssertionError as e:
                    r = self.ag[dc].get("/v1/catalog/datacenters?detailed")
                    self.fail("%s; last answer %r; WAN members %r" % (e, r, wan_members(self.ag[dc])))
                r = self.ag[dc].get("/v1/catalog/datacenters?detailed")
                self.assertEqual(r.status, 200, r)
                v = r.json()
                self.assertEqual([e.get("Datacenter") for e in v][:1], [dc], v)
                self.assertEqual(sorted(e.get("Datacenter") for e in v), sorted(DCS), v)
                for e in v:
                    self.assertIs(e.get("Reachable"), True, e)
                    self.assertEqual(e.get("ServersAlive"), 1, e)
                    self.assertEqual(e.get("ServersKnown"), 1, e)

    # ------------------------------------------------------------------------------ reads and writes
    def test_catalog_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                svcs = self.same_as_direct(src, dst, "/v1/catalog/services").json()
                self.assertEqual(svcs.get("web"), [dst], svcs)
                nodes = {n["Node"] for n in self.same_as_direct(src, dst, "/v1/catalog/nodes").json()}
                self.assertIn("fed-" + dst, nodes)
                self.assertIn("web-" + dst, nodes)
                self.assertNotIn("fed-" + src, nodes)
                web = self.same_as_direct(src, dst, "/v1/catalog/service/web").json()
                self.assertEqual(sorted(s["ServiceID"] for s in web), ["web1", "web2"], web)
                self.assertEqual({s["Node"] for s in web}, {"web-" + dst}, web)
                for s in web:
                    self.assertEqual(s.get("Datacenter", dst), dst, s)
                node = self.same_as_direct(src, dst, "/v1/catalog/node/web-" + dst).json()
                self.assertEqual(sorted(node["Services"]), ["web1", "web2"], node)
                # the source DC's own node is not there
                r = self.fwd(src, dst, "GET", "/v1/catalog/node/web-" + src)
                self.assertEqual((r.status, r.json()), (200, None), r)

    def test_health_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                all_ = self.same_as_direct(src, dst, "/v1/health/service/web").json()
                self.assertEqual(sorted(e["Service"]["ID"] for e in all_), ["web1", "web2"], all_)
                passing = self.same_as_direct(src, dst, "/v1/health/service/web?passing").json()
                self.assertEqual([e["Service"]["ID"] for e in passing], ["web1"], passing)
                self.assertEqual(passing[0]["Node"]["Node"], "web-" + dst)
                self.assertEqual(passing[0]["Service"]["Tags"], [dst])
                self.same_as_direct(src, dst, "/v1/health/checks/web")
                self.same_as_direct(src, dst, "/v1/health/state/critical")

    def test_kv_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                key = "fed/kv/%s-to-%s" % (src, dst)
                r = self.fwd(src, dst, "PUT", "/v1/kv/" + key, "from " + src)
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                self.assertEqual(self.kv_value(self.ag[dst], key), "from " + src, "the write landed in " + dst)
                self.assertIsNone(self.kv_value(self.ag[src], key), "the write must not land in " + src)
                got = self.same_as_direct(src, dst, "/v1/kv/" + key).json()
                self.assertEqual(unb64(got[0]["Value"]), "from " + src)
                where = self.same_as_direct(src, dst, "/v1/kv/fed/where").json()
                self.assertEqual(unb64(where[0]["Value"]), dst)
                rec = self.same_as_direct(src, dst, "/v1/kv/fed/?recurse").json()
                self.assertEqual({e["Key"]: unb64(e["Value"]) for e in rec if e["Key"] in ("fed/where", "fed/sub/a")},
                                 {"fed/where": dst, "fed/sub/a": "a-in-" + dst}, rec)
                keys = self.same_as_direct(src, dst, "/v1/kv/fed/?keys&separator=/").json()
                self.assertIn("fed/where", keys)
                # CAS through the forward
                mi = got[0]["ModifyIndex"]
                r = self.fwd(src, dst, "PUT", "/v1/kv/%s?cas=%d" % (key, mi - 1 if mi > 1 else 1 << 40), "stale")
                self.assertEqual((r.status, r.body.strip()), (200, b"false"), r)
                r = self.fwd(src, dst, "DELETE", "/v1/kv/" + key)
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                self.assertIsNone(self.kv_value(self.ag[dst], key), "the delete reached " + dst)
                # a missing key: 404 with the remote's index
                self.same_as_direct(src, dst, "/v1/kv/" + key)

    def test_session_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                r = self.fwd(src, dst, "PUT", "/v1/session/create",
                             {"Node": "fed-" + dst, "Name": "fed-%s-to-%s" % (src, dst), "Behavior": "delete"})
                self.assertEqual(r.status, 200, r)
                sid = r.json()["ID"]
                direct = self.ag[dst].get("/v1/session/info/" + sid).json() or []
                self.assertEqual([(s["ID"], s["Node"]) for s in direct], [(sid, "fed-" + dst)],
                                 "the session lives in " + dst)
                self.assertEqual(self.ag[src].get("/v1/session/info/" + sid).json() or [], [],
                                 "the session must not exist in " + src)
                info = self.same_as_direct(src, dst, "/v1/session/info/" + sid).json()
                self.assertEqual(info[0]["Name"], "fed-%s-to-%s" % (src, dst))
                lst = self.same_as_direct(src, dst, "/v1/session/list").json()
                self.assertIn(sid, [s["ID"] for s in lst])
                self.same_as_direct(src, dst, "/v1/session/node/fed-" + dst)
                # a lock taken through the forward, on the remote's key
                key = "fed/lock/%s-%s" % (src, dst)
                r = self.fwd(src, dst, "PUT", "/v1/kv/%s?acquire=%s" % (key, sid), "held")
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                self.assertEqual(self.ag[dst].get("/v1/kv/" + key).json()[0].get("Session"), sid)
                r = self.fwd(src, dst, "PUT", "/v1/session/destroy/" + sid)
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                self.assertEqual(self.ag[dst].get("/v1/session/info/" + sid).json() or [], [])
                # Behavior delete: the lock's key went with the session
                wait_until(lambda: self.ag[dst].get("/v1/kv/" + key).status == 404, FED_TIMEOUT, 0.2,
                           "the locked key to go with its session in " + dst)

    def test_txn_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                key = "fed/txn/%s-to-%s" % (src, dst)
                ops = [{"KV": {"Verb": "set", "Key": key, "Value": b64("txn " + src)}},
                       {"KV": {"Verb": "get", "Key": "fed/where"}}]
                r = self.fwd(src, dst, "PUT", "/v1/txn", ops)
                self.assertEqual(r.status, 200, r)
                res = r.json()
                self.assertIsNone(res.get("Errors"), res)
                got = {e["KV"]["Key"]: e["KV"].get("Value") for e in res["Results"]}
                self.assertEqual(unb64(got["fed/where"]), dst, res)
                self.assertEqual(self.kv_value(self.ag[dst], key), "txn " + src)
                self.assertIsNone(self.kv_value(self.ag[src], key))
                # a failing transaction is rolled back there, and its errors come back
                bad = [{"KV": {"Verb": "set", "Key": key + "-no", "Value": b64("x")}},
                       {"KV": {"Verb": "cas", "Key": key, "Index": 1, "Value": b64("y")}}]
                r = self.fwd(src, dst, "PUT", "/v1/txn", bad)
                self.assertEqual(r.status, 409, r)
                self.assertTrue(r.json().get("Errors"), r)
                self.assertIsNone(self.kv_value(self.ag[dst], key + "-no"))

    def test_status_every_pair(self):
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                want = "%s:%d" % (self.ag[dst].addr, self.ag[dst].server_port)
                r = self.fwd(src, dst, "GET", "/v1/status/leader")
                self.assertEqual((r.status, r.json()), (200, want), r)
                self.assertEqual(r.json(), self.ag[dst].get("/v1/status/leader").json())
                r = self.fwd(src, dst, "GET", "/v1/status/peers")
                self.assertEqual((r.status, r.json()), (200, [want]), r)

    def test_register_by_body_datacenter(self):
        """catalog register/deregister take the DC from the body: it lands in that DC only."""
        for src, dst in PAIRS:
            with self.subTest(src=src, dst=dst):
                node = "reg-%s-to-%s" % (src, dst)
                body = {"Datacenter": dst, "Node": node, "Address": "10.9.9.9",
                        "Service": {"ID": "bodyreg1", "Service": "bodyreg", "Port": 9000}}
                r = self.ag[src].put("/v1/catalog/register", body)
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                there = self.ag[dst].get("/v1/catalog/service/bodyreg").json()
                self.assertIn(node, [s["Node"] for s in there], "the register landed in " + dst)
                here = self.ag[src].get("/v1/catalog/service/bodyreg").json()
                self.assertNotIn(node, [s["Node"] for s in here], "the register must not land in " + src)
                self.assertIsNone(self.ag[src].get("/v1/catalog/node/" + node).json())
                r = self.ag[src].put("/v1/catalog/deregister", {"Datacenter": dst, "Node": node})
                self.assertEqual((r.status, r.body.strip()), (200, b"true"), r)
                self.assertIsNone(self.ag[dst].get("/v1/catalog/node/" + node).json(),
                                  "the deregister reached " + dst)

    def test_blocking_query_across_dcs(self):
        """GET ?dc=<remote>&index=<idx>&wait=30s parks until the remote key changes, then returns
        the new value with a higher index (equal to the remote's own)."""
        for src, dst in (("dc1", "east"), ("west", "dc1")):
            with self.subTest(src=src, dst=dst):
                key = "fed/block/%s-%s" % (src, dst)
                self.assertEqual(self.ag[dst].put("/v1/kv/" + key, "v1").status, 200)
                first = self.same_as_direct(src, dst, "/v1/kv/" + key)
                idx = first.index
                out = {}

                def block():
                    try:
                        out["r"] = self.fwd(src, dst, "GET", "/v1/kv/%s?index=%d&wait=30s" % (key, idx),
                                            timeout=60)
                    except Exception as e:  # reported below
                        out["e"] = e

                t = threading.Thread(target=block, daemon=True)
                t.start()
                time.sleep(1.0)  # let the request park (not asserted: a late park still sees v2)
                self.assertTrue(t.is_alive(), "the blocking query returned before the change: %r"
                                % out.get("r", out.get("e")))
                self.assertEqual(self.ag[dst].put("/v1/kv/" + key, "v2").status, 200)
                t.join(60)
                self.assertFalse(t.is_alive(), "the blocking query did not return")
                self.assertNotIn("e", out, out)
                r = out["r"]
                self.assertEqual(r.status, 200, r)
                self.assertEqual(unb64(r.json()[0]["Value"]), "v2", r)
                self.assertGreater(r.index, idx, r)
                self.assertEqual(r.index, self.ag[dst].get("/v1/kv/" + key).index)

    # ------------------------------------------------------------------------------ clients
    def test_python_consul(self):
        import consul
        c = consul.Consul(host=self.ag["dc1"].addr, port=self.ag["dc1"].http_port)
        for dst in ("east", "west"):
            with self.subTest(dst=dst):
                direct = self.ag[dst].get("/v1/health/service/web")
                idx, nodes = c.health.service("web", dc=dst)
                self.assertEqual(nodes, direct.json())
                self.assertEqual(str(idx), str(direct.index))
                idx, nodes = c.health.service("web", passing=True, dc=dst)
                self.assertEqual([(n["Node"]["Node"], n["Service"]["ID"]) for n in nodes], [("web-" + dst, "web1")])
                key = "pyfed/" + dst
                self.assertIs(c.kv.put(key, "py to " + dst, dc=dst), True)
                idx, item = c.kv.get(key, dc=dst)
                self.assertEqual(item["Value"], ("py to " + dst).encode())
                self.assertEqual(str(idx), str(self.ag[dst].get("/v1/kv/" + key).index))
                self.assertEqual(self.kv_value(self.ag[dst], key), "py to " + dst)
                idx, item = c.kv.get(key)  # dc1's own store does not have it
                self.assertIsNone(item)
                idx, svcs = c.catalog.services(dc=dst)
                self.assertEqual(svcs.get("web"), [dst])
                self.assertIs(c.kv.delete(key, dc=dst), True)
                self.assertIsNone(self.kv_value(self.ag[dst], key))

    def test_node_consul(self):
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "consul")):
            p = subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            self.assertEqual(p.returncode, 0, "npm ci failed:\n" + p.stdout.decode("utf-8", "replace"))
        script = r"""
const Consul = require("consul");
const c = new Consul({ host: process.env.FED_HOST, port: Number(process.env.FED_PORT) });
setTimeout(() => { console.log(JSON.stringify({ error: "timed out" })); process.exit(2); }, 45000).unref();
(async () => {
  const out = {};
  out.kv = await c.kv.get({ key: "fed/where", dc: "east" });
  out.health = await c.health.service({ service: "web", dc: "east" });
  out.passing = await c.health.service({ service: "web", dc: "west", passing: true });
  out.set = await c.kv.set({ key: "nodefed/k", value: "from node", dc: "west" });
  out.back = await c.kv.get({ key: "nodefed/k", dc: "west" });
  out.del = await c.kv.del({ key: "nodefed/k", dc: "west" });
  console.log(JSON.stringify(out));
})().catch((e) => { console.log(JSON.stringify({ error: String((e && e.stack) || e) })); process.exit(1); });
"""
        env = dict(os.environ, FED_HOST=self.ag["dc1"].addr, FED_PORT=str(self.ag["dc1"].http_port),
                   NODE_PATH=os.path.join(NODE_DIR, "node_modules"))
        p = subprocess.run(["node", "-e", script], cwd=NODE_DIR, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=90)
        text = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, text)
        out = json.loads(p.stdout.decode().strip().splitlines()[-1])
        self.assertEqual(out["kv"]["Value"], "east", out)
        self.assertEqual(out["health"], self.ag["east"].get("/v1/health/service/web").json())
        self.assertEqual([(e["Node"]["Node"], e["Service"]["ID"]) for e in out["passing"]], [("web-west", "web1")])
        self.assertIs(out["set"], True, out)
        self.assertEqual(out["back"]["Value"], "from node", out)
        self.assertIsNone(self.kv_value(self.ag["west"], "nodefed/k"), "node's delete reached west")

    # ------------------------------------------------------------------------------ errors
    def test_unknown_dc(self):
        """?dc=nowhere: 500 `No path to datacenter`, each answer within one second."""
        reqs = [("GET", "/v1/catalog/services?dc=nowhere", None),
                ("GET", "/v1/catalog/nodes?dc=nowhere", None),
                ("GET", "/v1/health/service/web?dc=nowhere&passing", None),
                ("GET", "/v1/kv/fed/where?dc=nowhere", None),
                ("PUT", "/v1/kv/fed/nowhere?dc=nowhere", "x"),
                ("GET", "/v1/session/list?dc=nowhere", None),
                ("GET", "/v1/status/leader?dc=nowhere", None),
                ("PUT", "/v1/txn?dc=nowhere", [{"KV": {"Verb": "get", "Key": "fed/where"}}]),
                ("GET", "/v1/kv/fed/where?dc=nowhere&index=1&wait=30s", None),
                ("PUT", "/v1/catalog/register", {"Datacenter": "nowhere", "Node": "n", "Address": "10.0.0.1"})]
        for dc in DCS:
            for method, path, body in reqs:
                with self.subTest(on=dc, req="%s %s" % (method, path)):
                    r, dt = self.timed(self.ag[dc], method, path, body)
                    self.assertText(r, 500, NO_PATH, "%s %s on %s" % (method, path, dc))
                    self.assertLess(dt, ERROR_BOUND, "%s %s on %s answered after %.3f s" % (method, path, dc, dt))
        self.assertIsNone(self.kv_value(self.ag["dc1"], "fed/nowhere"), "a write for nowhere landed locally")

    def test_bad_wan_input(self):
        """Garbage, a plaintext SP header and an idle plain-TCP connection on a server's WAN port
        do not disturb federation: ?dc= still works both ways while they are open and after."""
        dc1 = self.ag["dc1"]
        socks = []
        try:
            for payload in (None, b"\xff\xfe\x00garbage" * 512, SP_REQ_HEADER,
                            b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n",
                            b"\x16\x03\x01\x00\x10\x01\x00\x00\x0c" + bytes(range(12))):
                s = socket.create_connection((dc1.addr, WAN_PORT), timeout=5)
                socks.append(s)
                if payload:
                    try:
                        s.sendall(payload)
                    except OSError:
                        pass  # closed by the server: fine
            for dst in ("east", "west"):
                self.same_as_direct("dc1", dst, "/v1/kv/fed/where")
                self.same_as_direct(dst, "dc1", "/v1/kv/fed/where")
        finally:
            for s in socks:
                s.close()
        # a burst of short-lived plain TCP connections
        for _ in range(20):
            s = socket.create_connection((dc1.addr, WAN_PORT), timeout=5)
            s.close()
        for dc in DCS:
            self.assertTrue(self.ag[dc].running(), "%s died" % dc)
        self.assertEqual(self.fed.alive_names(dc1), sorted("fed-%s.%s" % (d, d) for d in DCS))
        for src, dst in PAIRS:
            self.same_as_direct(src, dst, "/v1/catalog/services")

    @property
    def fed(self):
        return type(self).cluster

    # ------------------------------------------------------------------------------ a DC goes down
    def detailed(self, agent):
        r = agent.get("/v1/catalog/datacenters?detailed")
        if r.status != 200:  # ValueError: wait_until keeps trying
            raise ValueError("GET /v1/catalog/datacenters?detailed: %r" % r)
        return {e["Datacenter"]: e for e in r.json()}

    def test_zz_east_killed_and_restarted(self):
        dc1, east, west = self.ag["dc1"], self.ag["east"], self.ag["west"]
        self.same_as_direct("dc1", "east", "/v1/kv/fed/where")
        east.kill9()
        seen = []  # (status, text, seconds) of every ?dc=east answer while waiting

        def unreachable():
            r, dt = self.timed(dc1, "GET", "/v1/kv/fed/where?dc=east", timeout=20)
            seen.append((r.status, r.text.strip()[:120], round(dt, 3)))
            return r.status == 500 and r.text.rstrip("\n") == NO_SERVER
        wait_until(unreachable, FED_TIMEOUT, 0.25, "?dc=east to answer %r once east is killed" % NO_SERVER)
        self.assertNotIn(NO_PATH, [t for _, t, _ in seen],
                         "a known DC that is down was answered as unknown: %r" % seen)
        slow = [s for s in seen if s[1] == NO_SERVER and s[2] >= ERROR_BOUND]
        self.assertEqual(slow, [], "%r answers must come within %.0f s" % (NO_SERVER, ERROR_BOUND))
        # from now on every ?dc=east answer is that error, at once, from both other DCs
        for src in ("dc1", "west"):
            for path in ("/v1/kv/fed/where", "/v1/health/service/web?passing", "/v1/catalog/services",
                         "/v1/kv/fed/where?index=1&wait=30s"):
                with self.subTest(src=src, path=path):
                    r, dt = self.timed(self.ag[src], "GET", with_dc(path, "east"))
                    self.assertText(r, 500, NO_SERVER, "GET %s?dc=east on %s" % (path, src))
                    self.assertLess(dt, ERROR_BOUND, "GET %s?dc=east on %s answered after %.3f s" % (path, src, dt))
        r, dt = self.timed(dc1, "PUT", "/v1/kv/fed/down?dc=east", "x")
        self.assertText(r, 500, NO_SERVER, "PUT ?dc=east on dc1")
        self.assertLess(dt, ERROR_BOUND)
        # the dead server is marked failed, not forgotten
        wait_until(lambda: {m["Name"]: m["Status"] for m in wan_members(dc1)}.get("fed-east.east") == 4,
                   FED_TIMEOUT, 0.25, "fed-east.east to be marked failed (Status 4) on dc1")
        d = self.detailed(dc1)
        self.assertEqual(sorted(d), sorted(DCS), d)
        self.assertIs(d["east"].get("Reachable"), False, d["east"])
        self.assertEqual(d["east"].get("ServersAlive"), 0, d["east"])
        self.assertEqual(d["east"].get("ServersKnown"), 1, d["east"])
        self.assertIs(d["west"].get("Reachable"), True, d["west"])
        self.assertIs(d["dc1"].get("Reachable"), True, d["dc1"])
        self.assertIn("east", dc1.get("/v1/catalog/datacenters").json())
        # dc1's own reads and writes keep working, and so does the link to west
        self.assertEqual(self.kv_value(dc1, "fed/where"), "dc1")
        self.assertEqual(dc1.put("/v1/kv/fed/while-east-down", "yes").status, 200)
        self.assertEqual(self.kv_value(dc1, "fed/while-east-down"), "yes")
        self.assertEqual(self.kv_value(dc1, "fed/where", dc="west"), "west")
        self.assertEqual(self.kv_value(west, "fed/where", dc="dc1"), "dc1")
        # east comes back on its data dir: ?dc=east works again with no manual step
        east.start()

        def back():
            r = dc1.get("/v1/kv/fed/where?dc=east", timeout=20)
            return r.status == 200 and unb64(r.json()[0]["Value"]) == "east"
        wait_until(back, REJOIN_TIMEOUT, 0.5, "?dc=east from dc1 to work again after east's restart")
        def back_from_west():
            r = west.get("/v1/kv/fed/where?dc=east", timeout=20)
            return r.status == 200 and unb64(r.json()[0]["Value"]) == "east"
        wait_until(back_from_west, REJOIN_TIMEOUT, 0.5, "?dc=east from west to work again")
        self.fed.wait_converged(REJOIN_TIMEOUT)
        wait_until(lambda: self.detailed(dc1)["east"].get("Reachable") is True, FED_TIMEOUT, 0.25,
                   "east Reachable again in dc1's detailed list")
        # nothing east stored was lost, and it reads dc1's writes made while it was down
        self.same_as_direct("dc1", "east", "/v1/catalog/service/web")
        self.assertEqual(self.kv_value(east, "fed/while-east-down", dc="dc1"), "yes")

    def test_zz_west_restarted_without_join_config(self):
        """west was joined once by `dcgate join -wan` and has no join address in its config: after
        a kill -9 and a restart on its data dir it is back in the pool with no manual step."""
        dc1, west = self.ag["dc1"], self.ag["west"]
        west.kill9()
        wait_until(lambda: dc1.get("/v1/kv/fed/where?dc=west", timeout=20).status == 500, FED_TIMEOUT, 0.25,
                   "?dc=west to fail once west is killed")
        west.start()

        def back(src):
            r = self.ag[src].get("/v1/kv/fed/where?dc=west", timeout=20)
            return r.status == 200 and unb64(r.json()[0]["Value"]) == "west"
        for src in ("dc1", "east"):
            wait_until(lambda: back(src), REJOIN_TIMEOUT, 0.5, "?dc=west from %s after west's restart" % src)
        self.fed.wait_converged(REJOIN_TIMEOUT)
        self.same_as_direct("west", "east", "/v1/catalog/service/web")


class OwnServersTestCase(unittest.TestCase):
    """A test with one-server DCs of its own, from a CA of its own; `name` prefixes its temp
    dir and agents."""
    name = "fedown"

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-%s-" % self.name)
        self.ca = CA(os.path.join(self.tmpdir, "pki"))
        self.agents = []

    def tearDown(self):
        for a in self.agents:
            a.close()
        if not os.environ.get("DCGATE_IT_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def server(self, dc, extra_args=(), extra_config=None):
        a = Agent(name="%s-%s" % (self.name, dc), node="s-" + dc, datacenter=dc, dev=False)
        self.agents.append(a)
        cert, key = self.ca.issue("server", dc)
        cfg = write_json(os.path.join(a.tmpdir, "federation.json"),
                         tls_config(self.ca.cert, cert, key, extra=extra_config))
        a.extra_args += ["-config-file", cfg] + list(extra_args)
        return a.start()


class JoinWaysTest(OwnServersTestCase):
    """The other ways in (the -join-wan flag, start_join_wan in a config file) and out (`dcgate
    leave`, `dcgate force-leave -wan`), on three one-server DCs of their own: ja, jb, jc."""
    name = "fedjoin"

    def run(self, result=None):
        """On a failure, the agents' log tails (read before tearDown removes them)."""
        if result is None:
            return super().run(result)
        orig = self.tearDown
        before = len(result.failures) + len(result.errors)

        def tear_down_with_logs():
            if len(result.failures) + len(result.errors) > before or not getattr(self, "_passed", False):
                for a in self.agents:
                    sys.stderr.write("\n----- %s log tail (%s) -----\n%s\n" % (a.datacenter, a.addr, a.log_tail(30)))
            orig()
        self.tearDown = tear_down_with_logs
        return super().run(result)

    def statuses(self, agent):
        return {m["Name"]: m.get("Status") for m in wan_members(agent)}

    def test_join_flag_start_join_wan_leave_force_leave(self):
        ja = self.server("ja")
        jb = self.server("jb", extra_args=["-join-wan", ja.addr])
        jc = self.server("jc", extra_config={"start_join_wan": [ja.addr]})
        want = {"s-ja.ja": 1, "s-jb.jb": 1, "s-jc.jc": 1}
        for a in (ja, jb, jc):
            wait_until(lambda: self.statuses(a) == want, FED_TIMEOUT, 0.25,
                       "%s's WAN members to be %s" % (a.datacenter, want))
            wait_until(lambda: all_reachable(a, ("ja", "jb", "jc")), FED_TIMEOUT, 0.1,
                       "every DC to be Reachable in %s's ?detailed list" % a.datacenter)
        # jb and jc know each other only through ja
        self.assertEqual(ja.put("/v1/kv/where", "ja").status, 200)
        r = jc.get("/v1/kv/where?dc=ja")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(unb64(r.json()[0]["Value"]), "ja")
        self.assertEqual(jb.get("/v1/status/leader?dc=jc").json(), "%s:%d" % (jc.addr, jc.server_port))
        # `dcgate leave` on jc: it exits, and the others see it left (3), not failed
        p = run_dcgate(["leave", "-http-addr", "%s:%d" % (jc.addr, jc.http_port)], cwd=jc.tmpdir)
        self.assertEqual(p.returncode, 0, describe(p))
        self.assertIsNotNone(jc.wait_exit(FED_TIMEOUT), "jc did not exit after dcgate leave")
        for a in (ja, jb):
            wait_until(lambda: self.statuses(a).get("s-jc.jc") == 3, FED_TIMEOUT, 0.25,
                       "s-jc.jc to be left (Status 3) on %s" % a.datacenter)
        # jb killed: failed (4) on ja; force-leave moves it to left (3)
        jb.kill9()
        wait_until(lambda: self.statuses(ja).get("s-jb.jb") == 4, FED_TIMEOUT, 0.25,
                   "s-jb.jb to be failed (Status 4) on ja")
        p = run_dcgate(["force-leave", "-wan", "-http-addr", "%s:%d" % (ja.addr, ja.http_port), "s-jb.jb"],
                       cwd=ja.tmpdir)
        self.assertEqual(p.returncode, 0, describe(p))
        wait_until(lambda: self.statuses(ja).get("s-jb.jb", 3) == 3, FED_TIMEOUT, 0.25,
                   "s-jb.jb to be left (or gone) after force-leave")
        self.assertEqual(self.statuses(ja).get("s-ja.ja"), 1)
        self._passed = True


def counter(agent, name):
    """A counter's Count in the agent's /v1/agent/metrics, or None when it has no such name."""
    m = agent.get("/v1/agent/metrics").json()
    return next((c["Count"] for c in m.get("Counters", []) if c["Name"] == name), None)


class CachedRemoteReadTest(OwnServersTestCase):
    """?cached on a remote read: the first is fetched (X-Cache: MISS), the next answered from
    dc1's copy (HIT, Age 0), the copy follows changes in the remote DC by itself (background
    blocking refresh), and while the remote DC is down the copy is served only when
    Cache-Control: stale-if-error allows it. Two one-server DCs of its own (ca1, ca2)."""
    name = "fedcache"

    def test_cached_copy_follows_and_serves_stale_if_allowed(self):
        c1 = self.server("ca1")
        c2 = self.server("ca2", extra_config={"retry_join_wan": [c1.addr]})
        wait_until(lambda: all_reachable(c1, ["ca1", "ca2"]), FED_TIMEOUT, 0.1, "ca2 reachable from ca1")
        self.assertEqual(c2.put("/v1/kv/cached/k", "v1").status, 200)
        path = "/v1/kv/cached/k?dc=ca2&cached"
        r = c1.get(path)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Cache"), "MISS", r)
        self.assertEqual(unb64(r.json()[0]["Value"]), "v1")
        r = c1.get(path)
        self.assertEqual((r.status, r.header("X-Cache"), r.header("Age")), (200, "HIT", "0"), r)
        self.assertEqual(r.index, c2.get("/v1/kv/cached/k").index, "the remote DC's index")
        # the copy follows the remote DC without a miss
        self.assertEqual(c2.put("/v1/kv/cached/k", "v2").status, 200)
        wait_until(lambda: unb64(c1.get(path).json()[0]["Value"]) == "v2", 30, 0.2,
                   "the cached copy to show v2")
        r = c1.get(path)
        self.assertEqual(r.header("X-Cache"), "HIT", r)
        self.assertGreaterEqual(counter(c1, "dcgate.federation.cache_hits"), 2)
        # the remote DC goes away: no stale answer unless the client allows one
        c2.kill9()
        wait_until(lambda: c1.get(path).status == 500, 30, 0.2, "a plain ?cached read to fail")
        r = c1.get(path)
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.text.rstrip("\n"), "Remote DC has no server currently reachable")
        r = c1.get(path, headers={"Cache-Control": "stale-if-error=600"})
        self.assertEqual((r.status, r.header("X-Cache")), (200, "HIT"), r)
        self.assertEqual(unb64(r.json()[0]["Value"]), "v2")
        self.assertGreaterEqual(int(r.header("Age")), 0)


class WanWithoutCertificatesTest(unittest.TestCase):
    """The WAN is mutual TLS only: a server told to join the WAN but given no certificates
    refuses to start, and says what to set; a WAN join asked of such a running server is
    refused with a text that says why."""

    def refused(self, make_args, must):
        a = Agent(name="nowancert", datacenter="dc1")
        try:
            a.extra_args += make_args(a)
            try:
                a.start()
            except RuntimeError:
                pass
            else:
                self.fail("the server started with WAN peers and no certificates:\n%s" % a.log_tail())
            self.assertNotEqual(a.proc.returncode, 0, a.log_tail())
            self.assertIn(must, a.log_tail(200))
        finally:
            a.close()

    def test_retry_join_wan_flag(self):
        self.refused(lambda a: ["-retry-join-wan", "127.0.0.1"], "no TLS certificates")

    def test_join_wan_config_key(self):
        def args(a):
            cfg = write_json(os.path.join(a.tmpdir, "wan.json"), {"retry_join_wan": ["127.0.0.1"]})
            return ["-config-file", cfg]
        self.refused(args, "tls.defaults.ca_file, cert_file and key_file")

    def test_join_api_on_server_without_certificates(self):
        a = Agent(name="nowancert-api", datacenter="dc1")
        try:
            a.start()
            r = a.put("/v1/agent/join/127.0.0.1?wan=1")
            self.assertEqual(r.status, 500, r)
            self.assertIn("no TLS certificates", r.text)
            self.assertEqual(a.get("/v1/agent/members?wan=1").json(), [])
            self.assertEqual(a.get("/v1/catalog/datacenters").json(), ["dc1"])
        finally:
            a.close()


class ExampleTest(unittest.TestCase):
    """examples/federation/run.sh on two leased addresses: it makes certificates, starts dc1 and
    east, registers web in east and reads it from dc1 three ways, then stops both agents."""

    SCRIPT = os.path.join(ROOT, "examples", "federation", "run.sh")

    def test_run_sh(self):
        l1, l2 = AddressLease(), None
        try:
            l2 = AddressLease(avoid=(l1.n,))
            env = dict(os.environ, DC1_ADDR=l1.addr, EAST_ADDR=l2.addr, DCGATE=dcgate_bin())
            for k in list(env):
                if k.startswith("CONSUL_") or k.startswith("DCGATE_HTTP"):
                    env.pop(k)
            p = subprocess.run(["bash", self.SCRIPT], env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
            out = p.stdout.decode("utf-8", "replace")
            err = p.stderr.decode("utf-8", "replace")
            what = "run.sh exit %d\nstdout:\n%s\nstderr:\n%s" % (p.returncode, out[-6000:], err[-6000:])
            self.assertEqual(p.returncode, 0, what)
            sections = {}
            cur = None
            for line in out.splitlines():
                if line.startswith("==> "):
                    cur = line[4:]
                    sections[cur] = []
                elif cur is not None:
                    sections[cur].append(line)

            def section(prefix):
                hits = [k for k in sections if k.startswith(prefix)]
                self.assertEqual(len(hits), 1, "one section %r expected in:\n%s" % (prefix, what))
                return sections[hits[0]]
            # the WAN members as dc1 sees them: both servers alive
            rows = [l.split() for l in section("dcgate members -wan") if l.strip()]
            alive = {r[0]: r for r in rows[1:] if len(r) > 2 and r[2] == "alive"}
            self.assertEqual(sorted(alive), ["dc1-server.dc1", "east-server.east"], what)
            self.assertEqual(alive["east-server.east"][1], "%s:%d" % (l2.addr, WAN_PORT), what)
            # curl: the JSON of health/service/web?dc=east
            body = "\n".join(section("curl")).strip()
            health = json.loads(body)
            self.assertEqual(len(health), 1, what)
            self.assertEqual(health[0]["Service"]["Service"], "web", what)
            self.assertEqual(health[0]["Node"]["Node"], "east-server", what)
            self.assertEqual(health[0]["Node"].get("Datacenter", "east"), "east", what)
            # python-consul
            py = [l.split() for l in section("python-consul") if l.strip()]
            self.assertIn(["east-server", "east", "web", "8080"], py, what)
            # the CLI
            svcs = [l.strip() for l in section("dcgate catalog services -datacenter east") if l.strip()]
            self.assertIn("web", svcs, what)
            self.assertEqual(out.rstrip().splitlines()[-1], "OK", what)
            # both agents are gone: nothing answers on the two addresses any more
            for addr in (l1.addr, l2.addr):
                for port in (8500, WAN_PORT):
                    s = socket.socket()
                    s.settimeout(2)
                    try:
                        self.assertNotEqual(s.connect_ex((addr, port)), 0,
                                            "something still listens on %s:%d after run.sh" % (addr, port))
                    finally:
                        s.close()
        finally:
            l1.release()
            if l2 is not None:
                l2.release()



class BatchedForwardTest(OwnServersTestCase):
    """Forwarded non-blocking reads to one server share WAN messages (BATCH, wan/wan.c): many
    concurrent distinct reads each get their own answer (value and X-Consul-Index as the remote
    DC gives them), answers too large to share a batch's reply (2 MiB) are asked again alone and
    arrive whole, and a blocking query and writes in the middle of it all keep their own
    messages. Two one-server DCs of its own (bt1, bt2)."""
    name = "fedbatch"
    THREADS = 32

    def concurrently(self, fns):
        """Runs every fn at the same moment (one thread each); returns their results in order,
        or raises the first exception."""
        barrier = threading.Barrier(len(fns))
        out = [None] * len(fns)

        def run(i):
            try:
                barrier.wait(30)
                out[i] = ("ok", fns[i]())
            except Exception as e:  # reported below, in the test's thread
                out[i] = ("error", e)
        ts = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        for i, r in enumerate(out):
            if r is None:
                self.fail("thread %d did not finish" % i)
            if r[0] == "error":
                raise r[1]
        return [r[1] for r in out]

    def test_concurrent_reads_small_and_large(self):
        b1 = self.server("bt1")
        b2 = self.server("bt2", extra_config={"retry_join_wan": [b1.addr]})
        wait_until(lambda: all_reachable(b1, ["bt1", "bt2"]), FED_TIMEOUT, 0.1, "bt2 reachable from bt1")
        # distinct keys with distinct values, written in bt2; the index each read must show is
        # the one bt2 gives for it directly (nothing is written in bt2 while they are compared)
        keys = ["batch/k%02d" % i for i in range(self.THREADS)]
        want = {}
        for i, k in enumerate(keys):
            v = "value-%d-%s" % (i, "x" * i)
            self.assertEqual(b2.put("/v1/kv/" + k, v).status, 200)
            want[k] = v
        direct = {k: b2.get("/v1/kv/" + k).index for k in keys}

        def read(k):
            r = b1.get("/v1/kv/%s?dc=bt2" % k, timeout=60)
            return k, r

        batched_before = counter(b1, "dcgate.wan.batched_requests")
        self.assertIsNotNone(batched_before, "no dcgate.wan.batched_requests in bt1's metrics")
        for rnd in range(5):
            for k, r in self.concurrently([lambda k=k: read(k) for k in keys]):
                self.assertEqual(r.status, 200, "round %d, %s: %r" % (rnd, k, r))
                self.assertEqual(unb64(r.json()[0]["Value"]), want[k], "round %d, %s" % (rnd, k))
                self.assertEqual(r.json()[0]["Key"], k)
                self.assertEqual(r.index, direct[k], "round %d, %s: X-Consul-Index" % (rnd, k))
                self.assertEqual(r.header("X-Consul-KnownLeader"), "true", r)
        # 160 reads, 32 at a time, to one server: some must have shared a message
        self.assertGreater(counter(b1, "dcgate.wan.batched_requests"), batched_before,
                           "no forwarded read travelled in a batch")
        self.assertGreater(counter(b1, "dcgate.wan.batches_sent"), 0)
        self.assertGreater(counter(b2, "dcgate.wan.batches_served"), 0)
        # a missing key among them: 404 for that one, the others unaffected
        rs = self.concurrently([lambda: read("batch/missing")] + [lambda k=k: read(k) for k in keys[:15]])
        self.assertEqual(rs[0][1].status, 404, rs[0][1])
        for k, r in rs[1:]:
            self.assertEqual((r.status, unb64(r.json()[0]["Value"])), (200, want[k]), r)

        # large values: 400 KiB each, 8 of them read at once (raw) are more than one batch's reply
        # may hold; each must still arrive whole
        big = {}
        for i in range(8):
            v = bytes([65 + i]) * (400 * 1024 - i)
            k = "batch/big%d" % i
            self.assertEqual(b2.put("/v1/kv/" + k, v).status, 200)
            big[k] = v

        def read_raw(k):
            return k, b1.get("/v1/kv/%s?dc=bt2&raw" % k, timeout=60)

        for rnd in range(4):
            fns = [lambda k=k: read_raw(k) for k in big] + [lambda k=k: read(k) for k in keys[:8]]
            for k, r in self.concurrently(fns):
                self.assertEqual(r.status, 200, "round %d, %s: %r" % (rnd, k, r))
                if k in big:
                    self.assertEqual(len(r.body), len(big[k]), "round %d, %s: length" % (rnd, k))
                    self.assertTrue(r.body == big[k], "round %d, %s: body differs" % (rnd, k))
                else:
                    self.assertEqual(unb64(r.json()[0]["Value"]), want[k])

        # a blocking query in the middle of batched reads: it waits for its change, the reads
        # around it do not wait with it, and a write goes through once
        idx = b2.get("/v1/kv/batch/k00").index
        blocked = {}

        def block():
            blocked["r"] = b1.get("/v1/kv/batch/k00?dc=bt2&index=%d&wait=20s" % idx, timeout=60)
        t = threading.Thread(target=block)
        t.start()
        time.sleep(0.3)
        start = time.monotonic()
        for k, r in self.concurrently([lambda k=k: read(k) for k in keys[1:]]):
            self.assertEqual((r.status, unb64(r.json()[0]["Value"])), (200, want[k]), r)
        self.assertTrue(t.is_alive(), "the blocking query returned before anything changed")
        self.assertLess(time.monotonic() - start, 15, "reads waited behind the blocking query")
        self.assertEqual(b1.put("/v1/kv/batch/k00?dc=bt2", "changed").status, 200)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertEqual(blocked["r"].status, 200, blocked["r"])
        self.assertEqual(unb64(blocked["r"].json()[0]["Value"]), "changed")
        self.assertGreater(blocked["r"].index, idx)
        r = b2.get("/v1/kv/batch/k00")
        self.assertEqual((unb64(r.json()[0]["Value"]), r.json()[0]["ModifyIndex"]),
                         ("changed", blocked["r"].index), "the write applied once")


if __name__ == "__main__":
    unittest.main()
