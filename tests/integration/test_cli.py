"""The CLI subcommands (`dcgate kv ...`, `catalog services`, `members`, `version`,
`services register/deregister`) run as real processes against a real agent. Contract: docs/cli.md.

Every command gets `-http-addr=<agent>` (or the address through the environment, for the tests of
that) and a copy of the environment without any DCGATE_*/CONSUL_* client settings, so nothing of
the caller's shell reaches it. What the CLI writes is checked over the HTTP API too.
"""

import base64
import json
import os
import subprocess

from harness import AgentTestCase, dcgate_bin

# A sanitizer build starts and runs much slower; a hung CLI still ends the test.
CLI_TIMEOUT = 120.0 if os.environ.get("DCGATE_SANITIZED") == "1" else 30.0

_CLIENT_ENV = ("HTTP_ADDR", "HTTP_TOKEN", "CACERT", "CLIENT_CERT", "CLIENT_KEY", "HTTP_SSL",
               "HTTP_SSL_VERIFY")


def clean_env(**extra):
    env = dict(os.environ)
    for name in _CLIENT_ENV:
        env.pop("DCGATE_" + name, None)
        env.pop("CONSUL_" + name, None)
    env.update(extra)
    return env


class CLIResult:
    def __init__(self, argv, p):
        self.argv, self.code = argv, p.returncode
        self.out = p.stdout.decode("utf-8", "replace")
        self.err = p.stderr.decode("utf-8", "replace")

    def __repr__(self):
        return "<%s: exit %d, stdout %r, stderr %r>" % (" ".join(self.argv), self.code,
                                                        self.out[:500], self.err[:1500])


class CLITest(AgentTestCase):
    def cli(self, *args, stdin=None, addr=True, env=None):
        argv = [dcgate_bin()] + list(args)
        if addr:
            argv.append("-http-addr=%s:%d" % (self.a.addr, self.a.http_port))
        p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           stdin=None if stdin is not None else subprocess.DEVNULL,
                           env=env or clean_env(), timeout=CLI_TIMEOUT, cwd=self.a.tmpdir)
        return CLIResult(argv[1:], p)

    def ok(self, *args, **kw):
        r = self.cli(*args, **kw)
        self.assertEqual(r.code, 0, r)
        return r

    def fails(self, code, *args, **kw):
        r = self.cli(*args, **kw)
        self.assertEqual(r.code, code, r)
        self.assertEqual(r.out, "", r)
        return r

    def kv_http(self, key):
        """The raw value over HTTP, or None on 404."""
        r = self.a.get("/v1/kv/" + key + "?raw")
        if r.status == 404:
            return None
        self.assertOK(r)
        return r.body

    # ------------------------------------------------------------------------------- version
    def test_version(self):
        r = self.ok("version", addr=False)
        self.assertEqual(r.err, "", r)
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 2, r)
        self.assertRegex(lines[0], r"^dcgate v[0-9]+\.[0-9]+\.[0-9]+\S*$")
        self.assertRegex(lines[1], r"^Consul API compatible: [0-9]+\.[0-9]+\.[0-9]+\S*$")
        # The Consul level printed is the one the agent announces (the members' Build column).
        consul_ver = lines[1].split(": ", 1)[1]
        members = self.a.get("/v1/agent/members").json()
        self.assertEqual(members[0]["Tags"]["build"].split(":")[0], consul_ver)

    def test_version_needs_no_agent(self):
        r = self.cli("version", "-http-addr=127.0.0.1:1", addr=False)
        self.assertEqual(r.code, 0, r)
        self.assertTrue(r.out.startswith("dcgate v"), r)

    def test_keygen(self):
        keys = set()
        for _ in range(3):
            r = self.ok("keygen", addr=False)
            self.assertEqual(r.err, "", r)
            self.assertRegex(r.out, r"^[A-Za-z0-9+/]{43}=\n$")
            self.assertEqual(len(base64.b64decode(r.out.strip(), validate=True)), 32)
            keys.add(r.out)
        self.assertEqual(len(keys), 3, "three runs gave the same key")
        r = self.cli("keygen", "extra", addr=False)
        self.assertEqual(r.code, 1, r)
        self.assertIn("Usage: dcgate keygen", r.err)

    # ------------------------------------------------------------------------------------ kv
    def test_kv_put_get_delete(self):
        r = self.ok("kv", "put", "cli/kv/a", "hello world")
        self.assertEqual(r.out, "Success! Data written to: cli/kv/a\n")
        self.assertEqual(self.kv_http("cli/kv/a"), b"hello world")

        r = self.ok("kv", "get", "cli/kv/a")
        self.assertEqual(r.out, "hello world\n")

        # A value written over HTTP reads back through the CLI.
        self.assertOK(self.a.put("/v1/kv/cli/kv/b", b"from http"))
        self.assertEqual(self.ok("kv", "get", "cli/kv/b").out, "from http\n")

        r = self.ok("kv", "delete", "cli/kv/a")
        self.assertEqual(r.out, "Success! Deleted key: cli/kv/a\n")
        self.assertIsNone(self.kv_http("cli/kv/a"))
        self.assertEqual(self.kv_http("cli/kv/b"), b"from http")

        r = self.fails(1, "kv", "get", "cli/kv/a")
        self.assertEqual(r.err, "Error! No key exists at: cli/kv/a\n")

    def test_kv_put_stdin_and_file(self):
        r = self.ok("kv", "put", "cli/in/stdin", "-", stdin=b"piped value")
        self.assertEqual(r.out, "Success! Data written to: cli/in/stdin\n")
        self.assertEqual(self.kv_http("cli/in/stdin"), b"piped value")

        path = os.path.join(self.a.tmpdir, "cli-value.txt")
        with open(path, "wb") as f:
            f.write(b"line one\nline two")
        r = self.ok("kv", "put", "cli/in/file", "@" + path)
        self.assertEqual(r.out, "Success! Data written to: cli/in/file\n")
        self.assertEqual(self.kv_http("cli/in/file"), b"line one\nline two")

    def test_kv_recurse_keys_and_delete_prefix(self):
        for k, v in (("cli/tree/x", "1"), ("cli/tree/y/z", "2"), ("cli/treeish", "3")):
            self.ok("kv", "put", k, v)
        r = self.ok("kv", "get", "-recurse", "cli/tree/")
        self.assertEqual(r.out, "cli/tree/x:1\ncli/tree/y/z:2\n")
        r = self.ok("kv", "get", "-keys", "cli/tree/")
        self.assertEqual(r.out, "cli/tree/x\ncli/tree/y/\n")

        # Flags may follow the positional argument (docs/cli.md).
        r = self.ok("kv", "delete", "cli/tree/", "-recurse")
        self.assertEqual(r.out, "Success! Deleted keys with prefix: cli/tree/\n")
        self.assertIsNone(self.kv_http("cli/tree/x"))
        self.assertIsNone(self.kv_http("cli/tree/y/z"))
        self.assertEqual(self.kv_http("cli/treeish"), b"3")

    def test_kv_cas(self):
        self.ok("kv", "put", "cli/cas", "v1")
        idx = self.a.get("/v1/kv/cli/cas").json()[0]["ModifyIndex"]
        r = self.fails(1, "kv", "put", "-cas", "-modify-index=%d" % (idx + 1000), "cli/cas", "v2")
        self.assertEqual(r.err, "Error! Did not write to cli/cas: CAS failed\n")
        self.assertEqual(self.kv_http("cli/cas"), b"v1")
        r = self.ok("kv", "put", "-cas", "-modify-index=%d" % idx, "cli/cas", "v2")
        self.assertEqual(r.out, "Success! Data written to: cli/cas\n")
        self.assertEqual(self.kv_http("cli/cas"), b"v2")

    # ------------------------------------------------------------------------------- catalog
    def test_catalog_services(self):
        self.assertEmpty200(self.a.put("/v1/agent/service/register",
                                       {"Name": "cli-zeta", "ID": "cli-zeta-1", "Tags": ["b", "a"]}))
        self.assertEmpty200(self.a.put("/v1/agent/service/register",
                                       {"Name": "cli-alpha", "ID": "cli-alpha-1"}))
        try:
            r = self.ok("catalog", "services")
            names = r.out.splitlines()
            self.assertEqual(names, sorted(names), r)
            for n in ("consul", "cli-alpha", "cli-zeta"):
                self.assertIn(n, names, r)

            r = self.ok("catalog", "services", "-tags")
            rows = {}
            for line in r.out.splitlines():
                parts = line.split()
                rows[parts[0]] = parts[1] if len(parts) > 1 else ""
            self.assertEqual(rows.get("cli-zeta"), "a,b", r)
            self.assertEqual(rows.get("cli-alpha"), "", r)
        finally:
            self.a.put("/v1/agent/service/deregister/cli-zeta-1")
            self.a.put("/v1/agent/service/deregister/cli-alpha-1")

    # ------------------------------------------------------------------------------- members
    def test_members(self):
        r = self.ok("members")
        lines = r.out.splitlines()
        self.assertEqual(len(lines), 2, r)
        self.assertEqual(lines[0].split(), ["Node", "Address", "Status", "Type", "Build", "Protocol",
                                            "DC", "Partition", "Segment"])
        row = lines[1].split()
        self.assertEqual(row[:4], [self.a.node, "%s:8301" % self.a.addr, "alive", "server"], r)
        self.assertEqual(row[6], "dc1", r)

        r = self.ok("members", "-detailed")
        lines = r.out.splitlines()
        self.assertEqual(lines[0].split(), ["Node", "Address", "Status", "Tags"])
        row = lines[1].split()
        self.assertEqual(row[:3], [self.a.node, "%s:8301" % self.a.addr, "alive"], r)
        self.assertIn("role=consul", row[3].split(","), r)

        # Nothing matches: exit 2, nothing printed.
        self.fails(2, "members", "-status=left")

    # ------------------------------------------------------------------------------ services
    def test_services_register_deregister_flags(self):
        r = self.ok("services", "register", "-name=cli-web", "-id=cli-web-1", "-port=8080",
                    "-address=127.0.0.9", "-tag=v1", "-tag=blue", "-meta", "team=core")
        self.assertEqual(r.out, "Registered service: cli-web\n")
        r = self.a.get("/v1/agent/service/cli-web-1")
        self.assertOK(r)
        s = r.json()
        self.assertEqual(s["Service"], "cli-web")
        self.assertEqual(s["Port"], 8080)
        self.assertEqual(s["Address"], "127.0.0.9")
        self.assertEqual(sorted(s["Tags"]), ["blue", "v1"])
        self.assertEqual(s["Meta"], {"team": "core"})
        self.assertIn("cli-web", self.a.get("/v1/catalog/services").json())

        r = self.ok("services", "deregister", "-id=cli-web-1")
        self.assertEqual(r.out, "Deregistered service: cli-web-1\n")
        self.assertStatus(self.a.get("/v1/agent/service/cli-web-1"), 404)
        self.assertNotIn("cli-web", self.a.get("/v1/catalog/services").json())

    def test_services_register_deregister_file(self):
        path = os.path.join(self.a.tmpdir, "cli-svc.json")
        with open(path, "w") as f:
            json.dump({"Service": {"Name": "cli-file", "ID": "cli-file-1", "Port": 9000}}, f)
        r = self.ok("services", "register", path)
        self.assertEqual(r.out, "Registered service: cli-file\n")
        r = self.a.get("/v1/agent/service/cli-file-1")
        self.assertOK(r)
        self.assertEqual(r.json()["Port"], 9000)

        r = self.ok("services", "deregister", path)
        self.assertEqual(r.out, "Deregistered service: cli-file-1\n")
        self.assertStatus(self.a.get("/v1/agent/service/cli-file-1"), 404)

    def test_services_deregister_unknown(self):
        r = self.fails(1, "services", "deregister", "-id=cli-nope")
        self.assertIn("Unexpected response code: 404", r.err, r)
        self.assertIn("cli-nope", r.err, r)

    # -------------------------------------------------------------------- address and errors
    def test_address_from_environment(self):
        hostport = "%s:%d" % (self.a.addr, self.a.http_port)
        self.assertOK(self.a.put("/v1/kv/cli/env", b"via env"))
        for env in (clean_env(DCGATE_HTTP_ADDR=hostport), clean_env(CONSUL_HTTP_ADDR=hostport),
                    clean_env(DCGATE_HTTP_ADDR="http://" + hostport)):
            r = self.cli("kv", "get", "cli/env", addr=False, env=env)
            self.assertEqual((r.code, r.out), (0, "via env\n"), r)
        # The flag wins over the environment.
        r = self.cli("kv", "get", "cli/env", env=clean_env(DCGATE_HTTP_ADDR="127.0.0.1:1"))
        self.assertEqual((r.code, r.out), (0, "via env\n"), r)

    def test_unreachable_agent(self):
        r = self.fails(1, "kv", "get", "-http-addr=127.0.0.1:1", "cli/x", addr=False)
        self.assertIn("cannot reach the dcgate agent at", r.err, r)

    def test_bad_usage(self):
        r = self.fails(1, "kv", "get")
        self.assertIn("Usage:", r.err, r)
        r = self.fails(1, "services", "deregister")
        self.assertIn("Usage:", r.err, r)
