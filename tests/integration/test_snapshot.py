"""Snapshots (docs/snapshot.md): `dcgate snapshot save|restore|inspect` and GET/PUT /v1/snapshot
against a persistent single server (-server -bootstrap-expect 1 -data-dir).

Contract checked here: an archive is a gzip'd tar of meta.json, state.bin and SHA256SUMS (read
with Python's own tarfile/hashlib, not dcgate's code); a restore brings back KV, services and
nodes exactly as saved, wakes blocking queries at once, and never moves X-Consul-Index backwards;
the restored state survives a restart; a garbage, truncated, bit-flipped, foreign or inconsistent
archive is refused with 400 and a reason, and nothing changes; `?dc=` saves and restores another
DC's catalog over the WAN; in a three-server DC a follower's snapshot holds what the leader had,
a restore sent to a follower is applied by every server, and a client agent sends both to a
server. python-consul has no snapshot API, so the CLI and raw HTTP are used.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
import threading
import time
import unittest

from harness import (LEADER_TIMEOUT, AgentTestCase, ClientAgent, Cluster, dcgate_bin, unb64,
                     wait_until)
from test_federation import FED_TIMEOUT, OwnServersTestCase, all_reachable

CLI_TIMEOUT = 120.0 if os.environ.get("DCGATE_SANITIZED") == "1" else 30.0
_CLIENT_ENV = ("HTTP_ADDR", "HTTP_TOKEN", "CACERT", "CLIENT_CERT", "CLIENT_KEY", "HTTP_SSL",
               "HTTP_SSL_VERIFY")

# Reads whose X-Consul-Index must never go backwards across a restore.
WATCHED = ("/v1/kv/snap/?recurse", "/v1/kv/snap/a", "/v1/kv/snap/never", "/v1/catalog/services",
           "/v1/catalog/nodes", "/v1/catalog/service/snap-web", "/v1/health/service/snap-web",
           "/v1/health/state/any", "/v1/session/list")


def clean_env():
    env = dict(os.environ)
    for name in _CLIENT_ENV:
        env.pop("DCGATE_" + name, None)
        env.pop("CONSUL_" + name, None)
    return env


def archive_files(data):
    """The files of an archive, read with the standard library: {name: bytes}, in order."""
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as t:
        for m in t.getmembers():
            out[m.name] = t.extractfile(m).read()
    return out


def make_archive(files, compress=True):
    """A tar (gzip'd unless told) of (name, bytes) pairs, as someone else's tool would make it."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o600
            t.addfile(ti, io.BytesIO(data))
    return gzip.compress(b.getvalue()) if compress else b.getvalue()


def sums(files):
    return "".join("%s  %s\n" % (hashlib.sha256(d).hexdigest(), n) for n, d in files).encode()


class SnapshotTest(AgentTestCase):
    agent_kwargs = {"dev": False, "data_dir": True, "node": "snap-node"}

    # ------------------------------------------------------------------------------ helpers
    def cli(self, *args):
        argv = [dcgate_bin()] + list(args) + ["-http-addr=%s:%d" % (self.a.addr, self.a.http_port)]
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=subprocess.DEVNULL, env=clean_env(), timeout=CLI_TIMEOUT,
                           cwd=self.a.tmpdir)
        return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")

    def cli_ok(self, *args):
        code, out, err = self.cli(*args)
        self.assertEqual(code, 0, "dcgate %s: exit %d\nstdout %r\nstderr %r" % (args, code, out, err))
        return out

    def path(self, name):
        return os.path.join(self.a.tmpdir, name)

    def indexes(self):
        """X-Consul-Index of every watched read."""
        out = {}
        for p in WATCHED:
            r = self.a.get(p)
            self.assertIn(r.status, (200, 404), "%s: %r" % (p, r))
            out[p] = self.assertIndex(r)
        return out

    def assertForward(self, before, after, where):
        for p in WATCHED:
            self.assertGreater(after[p], before[p], "%s: X-Consul-Index of %s went from %d to %d"
                               % (where, p, before[p], after[p]))

    def kv_tree(self, prefix="snap/"):
        r = self.a.get("/v1/kv/" + prefix + "?recurse")
        if r.status == 404:
            return {}
        self.assertOK(r)
        return {e["Key"]: unb64(e["Value"]) for e in r.json()}

    def state(self):
        """What a restore must bring back: KV under snap/, service names, nodes, this node's
        services as the agent API lists them."""
        nodes = sorted((n["Node"], n["Address"]) for n in self.a.get("/v1/catalog/nodes").json())
        return {
            "kv": self.kv_tree(),
            "services": self.a.get("/v1/catalog/services").json(),
            "nodes": nodes,
            "agent": sorted(self.a.get("/v1/agent/services").json()),
        }

    def put_ok(self, path, body=None):
        r = self.a.put(path, body)
        self.assertOK(r, path)
        return r

    def populate(self, tag):
        self.put_ok("/v1/kv/snap/a", "one-" + tag)
        self.put_ok("/v1/kv/snap/b", b"\x00\x01binary\xff")
        self.put_ok("/v1/agent/service/register",
                    {"Name": "snap-web", "ID": "snap-web-1", "Port": 8080, "Tags": ["v1"]})
        self.put_ok("/v1/catalog/register",
                    {"Node": "snap-ext", "Address": "10.9.9.9",
                     "Service": {"Service": "snap-db", "Port": 5432}})

    def mutate(self):
        self.put_ok("/v1/kv/snap/a", "changed")
        self.assertOK(self.a.delete("/v1/kv/snap/b"))
        self.put_ok("/v1/kv/snap/c", "new")
        self.put_ok("/v1/agent/service/deregister/snap-web-1")
        self.put_ok("/v1/catalog/deregister", {"Node": "snap-ext"})
        self.put_ok("/v1/agent/service/register", {"Name": "snap-new", "Port": 1})

    # -------------------------------------------------------------------------------- tests
    def test_cli_save_inspect_restore(self):
        self.populate("cli")
        saved = self.state()
        self.assertIn("snap-db", saved["services"])
        file = self.path("backup.snap")

        out = self.cli_ok("snapshot", "save", file)
        self.assertRegex(out, r"^Saved and verified snapshot to index [0-9]+\n$")
        index = int(out.split()[-1])
        self.assertFalse(os.path.exists(file + ".unverified"))
        self.assertEqual(stat.S_IMODE(os.stat(file).st_mode), 0o600)

        # The layout, read with the standard library: Consul's three files, in Consul's order.
        with open(file, "rb") as f:
            data = f.read()
        files = archive_files(data)
        self.assertEqual(list(files), ["meta.json", "state.bin", "SHA256SUMS"])
        meta = json.loads(files["meta.json"])
        self.assertEqual(meta["Format"], "dcgate-catalog")
        self.assertEqual(meta["Version"], 1)
        self.assertEqual(meta["Index"], index)
        self.assertEqual(meta["Size"], len(files["state.bin"]))
        self.assertEqual(meta["Datacenter"], "dc1")
        self.assertEqual(files["SHA256SUMS"],
                         sums([("meta.json", files["meta.json"]), ("state.bin", files["state.bin"])]))
        st = json.loads(files["state.bin"])
        self.assertIn("snap/a", [e["Key"] for e in st["KV"]])

        out = self.cli_ok("snapshot", "inspect", file)
        self.assertIn("ID           %s\n" % meta["ID"], out)
        self.assertIn("Index        %d\n" % index, out)
        self.assertIn("Size         %d\n" % meta["Size"], out)
        self.assertRegex(out, r"\n Services +%d +" % sum(len(n["Services"]) for n in st["Nodes"]))
        self.assertRegex(out, r"\n KV +%d +" % len(st["KV"]))

        self.mutate()
        self.assertNotEqual(self.state(), saved)
        before = self.indexes()

        # A blocking query on a key the restore changes must return at once, not at its wait.
        kv_index = before["/v1/kv/snap/a"]
        woke = {}

        def block():
            t0 = time.monotonic()
            r = self.a.get("/v1/kv/snap/a?index=%d&wait=60s" % kv_index, timeout=90)
            woke["after"] = time.monotonic() - t0
            woke["r"] = r

        th = threading.Thread(target=block)
        th.start()
        time.sleep(0.5)
        self.assertEqual(self.cli_ok("snapshot", "restore", file), "Restored snapshot\n")
        th.join(90)
        self.assertFalse(th.is_alive())
        self.assertLess(woke["after"], 20.0, "the blocking query waited for its timeout")
        self.assertOK(woke["r"])
        self.assertGreater(woke["r"].index, kv_index)
        self.assertEqual(unb64(woke["r"].json()[0]["Value"]), b"one-cli")

        self.assertEqual(self.state(), saved)
        self.assertEqual(self.kv_tree()["snap/b"], b"\x00\x01binary\xff")
        self.assertEqual(self.a.get("/v1/kv/snap/c").status, 404)
        after = self.indexes()
        self.assertForward(before, after, "after the restore")

        # Writes go on from there, past the restore's index.
        r = self.put_ok("/v1/kv/snap/after", "x")
        r = self.a.get("/v1/kv/snap/after")
        self.assertGreater(r.index, after["/v1/kv/snap/?recurse"])

    def test_http_get_headers(self):
        self.put_ok("/v1/kv/snap/h", "h")
        kv = self.a.get("/v1/kv/snap/h")
        r = self.a.get("/v1/snapshot")
        self.assertOK(r)
        self.assertEqual(r.header("Content-Type"), "application/x-gzip")
        self.assertEqual(r.header("X-Consul-KnownLeader"), "true")
        self.assertIsNotNone(r.header("X-Consul-LastContact"))
        index = self.assertIndex(r)
        self.assertGreaterEqual(index, kv.index)
        self.assertEqual(json.loads(archive_files(r.body)["meta.json"])["Index"], index)
        self.assertOK(self.a.get("/v1/snapshot?stale"))
        r = self.a.get("/v1/snapshot?dc=nosuchdc")
        self.assertErrorText(r, 500, "No path to datacenter")
        r = self.a.request("DELETE", "/v1/snapshot")
        self.assertStatus(r, 405)
        self.assertEqual(r.header("Allow"), "OPTIONS,GET,PUT")

    def test_bad_archives_change_nothing(self):
        self.put_ok("/v1/kv/snap/keep", "kept")
        good = self.a.get("/v1/snapshot").body
        files = archive_files(good)
        meta, st = files["meta.json"], files["state.bin"]
        before_state = self.state()
        before = self.indexes()

        flipped = bytearray(good)
        flipped[len(flipped) // 2] ^= 0x20
        tampered = st.replace(b"snap/keep", b"snap/KEEP")
        self.assertNotEqual(tampered, st)
        consul_meta = json.dumps({"Version": 1, "ID": "2-11-1602262512378", "Index": 11, "Term": 2,
                                  "Peers": "", "Size": len(st)}).encode()
        dup = json.loads(st)
        dup["Nodes"].append(dict(dup["Nodes"][0]))
        dup = json.dumps(dup).encode()
        dup_meta = json.dumps(dict(json.loads(meta), Size=len(dup))).encode()
        cases = [
            ("garbage", b"this is not a snapshot", "failed to decompress snapshot: gzip: invalid header"),
            ("empty", b"", "failed to decompress snapshot: gzip: invalid header"),
            ("truncated", good[:len(good) * 2 // 3], "failed to decompress snapshot: unexpected EOF"),
            ("bit-flipped", bytes(flipped), "failed to decompress snapshot"),
            ("trailing data", good + b"\x00junk", "after the end of the gzip stream"),
            ("plain tar", make_archive([("meta.json", meta), ("state.bin", st),
                                        ("SHA256SUMS", sums([("meta.json", meta), ("state.bin", st)]))],
                                       compress=False),
             "gzip: invalid header"),
            ("state changed after the sums", make_archive(
                [("meta.json", meta), ("state.bin", tampered),
                 ("SHA256SUMS", sums([("meta.json", meta), ("state.bin", st)]))]),
             'hash check failed for "state.bin"'),
            ("extra file", make_archive(
                [("meta.json", meta), ("state.bin", st),
                 ("SHA256SUMS", sums([("meta.json", meta), ("state.bin", st)])), ("x.sh", b"#!")]),
             'unexpected file "x.sh" in snapshot'),
            ("no sums", make_archive([("meta.json", meta), ("state.bin", st)]),
             'file missing for "SHA256SUMS"'),
            ("consul's meta", make_archive(
                [("meta.json", consul_meta), ("state.bin", st),
                 ("SHA256SUMS", sums([("meta.json", consul_meta), ("state.bin", st)]))]),
             "not a dcgate snapshot"),
            ("duplicate node", make_archive(
                [("meta.json", dup_meta), ("state.bin", dup),
                 ("SHA256SUMS", sums([("meta.json", dup_meta), ("state.bin", dup)]))]),
             "invalid snapshot state: node snap-node twice"),
        ]
        for name, body, want in cases:
            with self.subTest(name):
                r = self.a.put("/v1/snapshot", body)
                self.assertStatus(r, 400, name)
                self.assertTrue((r.header("Content-Type") or "").startswith("text/plain"), r)
                self.assertIn(want, r.text, name)
        # the same through the CLI: exit 1 and the agent's reason
        bad = self.path("bad.snap")
        with open(bad, "wb") as f:
            f.write(good[:100])
        code, out, err = self.cli("snapshot", "restore", bad)
        self.assertEqual(code, 1, err)
        self.assertEqual(out, "")
        self.assertIn("Error restoring snapshot: Unexpected response code: 400 (failed to decompress "
                      "snapshot: unexpected EOF)", err)
        code, out, err = self.cli("snapshot", "inspect", bad)
        self.assertEqual(code, 1, err)
        self.assertIn("Error verifying snapshot: failed to decompress snapshot", err)

        r = self.a.put("/v1/snapshot?stale", good)
        self.assertErrorText(r, 400, "stale not allowed for restore")
        # past the archive limit (64 MiB): 413, whatever the body limit of the day is
        r = self.a.put("/v1/snapshot", b"\x1f\x8b" + b"\x00" * (64 * 1024 * 1024 + 16), timeout=120)
        self.assertStatus(r, 413)

        self.assertEqual(self.state(), before_state)
        self.assertEqual(self.indexes(), before, "a refused archive moved an index")
        # and the good one still restores
        self.assertOK(self.a.put("/v1/snapshot", good))

    def test_restore_survives_restart(self):
        self.populate("restart")
        good = self.a.get("/v1/snapshot").body
        saved = self.state()
        self.mutate()
        self.assertOK(self.a.put("/v1/snapshot", good))
        self.assertEqual(self.state(), saved)
        after = self.indexes()
        # a write after the restore, then a restart: the raft log replays the restore entry and
        # that write, and neither the state nor an index goes back
        self.put_ok("/v1/kv/snap/post", "post")
        saved["kv"]["snap/post"] = b"post"
        seen = self.indexes()
        self.a.restart()
        self.assertEqual(self.state(), saved)
        for p in WATCHED:
            r = self.a.get(p)
            self.assertGreaterEqual(self.assertIndex(r), seen[p], "%s went back after restart" % p)
            self.assertGreaterEqual(self.assertIndex(r), after[p])
        # a snapshot saved now restores to the same state again
        code, out, err = self.cli("snapshot", "save", self.path("after-restart.snap"))
        self.assertEqual(code, 0, err)


class SnapshotCLIUsageTest(AgentTestCase):
    """Usage errors need an agent only for the address; inspect needs none."""

    def test_usage(self):
        env = clean_env()

        def run(*args):
            p = subprocess.run([dcgate_bin()] + list(args), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
                               timeout=CLI_TIMEOUT, cwd=self.a.tmpdir)
            return p.returncode, p.stdout.decode(), p.stderr.decode()

        code, out, err = run("snapshot")
        self.assertEqual(code, 1)
        self.assertIn("Usage: dcgate snapshot <subcommand>", err)
        code, out, err = run("snapshot", "-h")
        self.assertEqual(code, 0)
        self.assertIn("inspect", out)
        code, out, err = run("snapshot", "save")
        self.assertEqual(code, 1)
        self.assertIn("Missing FILE argument", err)
        code, out, err = run("snapshot", "restore", "a", "b")
        self.assertEqual(code, 1)
        self.assertIn("Too many arguments (expected 1, got 2)", err)
        code, out, err = run("snapshot", "frobnicate")
        self.assertEqual(code, 1)
        self.assertIn("Unknown snapshot subcommand: frobnicate", err)
        code, out, err = run("snapshot", "inspect", os.path.join(self.a.tmpdir, "missing.snap"))
        self.assertEqual(code, 1)
        self.assertIn("Error opening snapshot file", err)
        # a save from an agent over the environment's address, then inspect with no agent at all
        env["DCGATE_HTTP_ADDR"] = "%s:%d" % (self.a.addr, self.a.http_port)
        file = os.path.join(self.a.tmpdir, "env.snap")
        code, out, err = run("snapshot", "save", file)
        self.assertEqual(code, 0, err)
        env["DCGATE_HTTP_ADDR"] = "127.0.0.1:1"
        code, out, err = run("snapshot", "inspect", file)
        self.assertEqual(code, 0, err)
        self.assertIn("Datacenter   dc1", out)


class SnapshotForwardTest(OwnServersTestCase):
    """Two one-server DCs (sn1, sn2) of one CA: ?dc=sn2 sent to sn1 saves and restores sn2's
    catalog, and sn1's stays as it was."""
    name = "fedsnap"

    def test_save_and_restore_another_dc(self):
        sn1 = self.server("sn1")
        sn2 = self.server("sn2", extra_config={"retry_join_wan": [sn1.addr]})
        wait_until(lambda: all_reachable(sn1, ["sn1", "sn2"]), FED_TIMEOUT, 0.1,
                   "sn2 reachable from sn1")
        self.assertEqual(sn1.put("/v1/kv/where", "one").status, 200)
        self.assertEqual(sn2.put("/v1/kv/where", "two").status, 200)

        r = sn1.get("/v1/snapshot?dc=sn2")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "application/x-gzip")
        files = archive_files(r.body)
        self.assertEqual(json.loads(files["meta.json"])["Datacenter"], "sn2")
        self.assertEqual(json.loads(files["meta.json"])["Index"], r.index)
        self.assertIn(b'"Key":"where"', files["state.bin"])

        self.assertEqual(sn2.put("/v1/kv/where", "changed").status, 200)
        r = sn1.put("/v1/snapshot?dc=sn2", r.body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(sn2.get("/v1/kv/where?raw").body, b"two")
        self.assertEqual(sn1.get("/v1/kv/where?raw").body, b"one")
        # a refusal comes back from sn2 as it is
        r = sn1.put("/v1/snapshot?dc=sn2", b"garbage")
        self.assertEqual(r.status, 400, r)
        self.assertEqual(r.text, "failed to decompress snapshot: gzip: invalid header")


class SnapshotClusterTest(unittest.TestCase):
    """Three servers of one DC (-bootstrap-expect 3) and a client agent."""

    @classmethod
    def setUpClass(cls):
        cls.cluster = Cluster(3)
        cls.client = None
        try:
            # three servers electing while the other groups of the run load both cores: the
            # harness's 20 s was seen to run out once
            cls.cluster.start(timeout=3 * LEADER_TIMEOUT)
            cls.client = ClientAgent(cls.cluster.servers[0].addr, node="snap-client")
            cls.client.start(wait=False)
            wait_until(lambda: cls.client.get("/v1/status/leader").status == 200, 60,
                       what="the client agent reaching a server")
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.client:
            cls.client.close()
        cls.cluster.close()

    def test_through_a_client_agent(self):
        """A client agent sends both to a server, as it does every catalog request."""
        leader = self.cluster.leader()
        self.assertEqual(leader.put("/v1/kv/cl/x", b"saved").status, 200)
        r = self.client.get("/v1/snapshot")
        self.assertEqual(r.status, 200, r)
        st = json.loads(archive_files(r.body)["state.bin"])
        self.assertIn("cl/x", [e["Key"] for e in st["KV"]])
        self.assertEqual(leader.put("/v1/kv/cl/x", b"changed").status, 200)
        r = self.client.put("/v1/snapshot", r.body)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(leader.get("/v1/kv/cl/x?raw").body, b"saved")
        r = self.client.put("/v1/snapshot", b"nope")
        self.assertEqual(r.status, 400, r)

    def kv(self, server, stale=True):
        r = server.get("/v1/kv/cs/?recurse" + ("&stale" if stale else ""))
        if r.status == 404:
            return {}, r.index
        self.assertEqual(r.status, 200, r)
        return {e["Key"]: unb64(e["Value"]) for e in r.json()}, r.index

    def test_large_restore_through_a_follower(self):
        """A state of about 16 MB (an archive over 8 MiB, past the request body limit of other
        endpoints and past what one 8301 message carries) restored through a follower: it goes
        to the leader in parts (docs/snapshot.md) and every server has all of it."""
        c = self.cluster
        leader = c.leader()
        n, per_txn = 32000, 64
        # the other tests of the class read snapshots through one 8 MiB message: leave none of it
        self.addCleanup(lambda: c.leader().delete("/v1/kv/big/?recurse", timeout=60))
        for start in range(0, n, per_txn):
            ops = [{"KV": {"Verb": "set", "Key": "big/%05d" % i,
                           "Value": base64.b64encode(os.urandom(300)).decode()}}
                   for i in range(start, min(n, start + per_txn))]
            r = leader.put("/v1/txn", json.dumps(ops).encode(), timeout=30)
            self.assertEqual(r.status, 200, r)
        r = leader.get("/v1/snapshot", timeout=120)
        self.assertEqual(r.status, 200, r)
        archive = r.body
        self.assertGreater(len(archive), 8 * 1024 * 1024, "the archive is too small to test this")
        want = leader.get("/v1/kv/big/00007?raw").body
        # changed after the save: the restore puts it back, and removes what came later
        self.assertEqual(leader.put("/v1/kv/big/00007", b"changed").status, 200)
        self.assertEqual(leader.put("/v1/kv/big/later", b"x").status, 200)

        follower = c.followers()[0]
        r = follower.put("/v1/snapshot", archive, timeout=300)
        self.assertEqual(r.status, 200, r)
        for s in c.servers:
            def restored():
                r = s.get("/v1/kv/big/?keys&stale", timeout=30)
                return r.status == 200 and len(r.json()) == n and "big/later" not in r.json()
            wait_until(restored, 60, 0.5, "all %d keys restored on %s" % (n, s.node))
            self.assertEqual(s.get("/v1/kv/big/00007?raw&stale").body, want)
        # the cluster goes on: one leader, writes through a follower
        c.wait_leader(LEADER_TIMEOUT)
        self.assertEqual(follower.put("/v1/kv/big/after", b"1").status, 200)

    def test_follower_save_and_restore_everywhere(self):
        c = self.cluster
        leader = c.leader()
        f1, f2 = c.followers()[:2]
        # a write through one follower is in a snapshot taken at once through the other
        self.assertEqual(f1.put("/v1/kv/cs/a", b"1").status, 200)
        r = f2.get("/v1/snapshot")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("X-Consul-KnownLeader"), "true")
        st = json.loads(archive_files(r.body)["state.bin"])
        self.assertIn("cs/a", [e["Key"] for e in st["KV"]])
        good = r.body

        self.assertEqual(leader.put("/v1/kv/cs/a", b"changed").status, 200)
        self.assertEqual(f2.put("/v1/kv/cs/b", b"2").status, 200)
        seen = {s.node: self.kv(s, stale=False)[1] for s in c.servers}

        # restored through a follower: it goes to the leader as one raft entry, every server
        # applies it
        r = f1.put("/v1/snapshot", good)
        self.assertEqual(r.status, 200, r)
        for s in c.servers:
            got = wait_until(lambda: (lambda kv: kv if kv[0] == {"cs/a": b"1"} else None)(self.kv(s)),
                             30, what="the restored KV on %s" % s.node)
            self.assertGreater(got[1], seen[s.node], "X-Consul-Index went back on %s" % s.node)
        # the default mode on a follower reads it at once too
        self.assertEqual(f2.get("/v1/kv/cs/a?raw").body, b"1")
        # a bad archive through a follower is refused there, before anything is forwarded
        r = f2.put("/v1/snapshot", good[:50])
        self.assertEqual(r.status, 400, r)
        self.assertEqual(self.kv(leader, stale=False)[0], {"cs/a": b"1"})
