"""The README's examples keep working: the shell lines of its "One datacenter" section (after the
agent start, which the harness does) run against a real agent, and their effects are checked; the
TLS walkthrough and the federation walkthrough (two DCs by hand, then the python-consul snippet)
run as written, on loopback addresses of their own."""

import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme_commands():
    """The commands of the first ```sh block under "## One datacenter", joined across '\\'."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## One datacenter", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    joined = re.sub(r"\\\n\s*", " ", block)
    return [l.strip() for l in joined.splitlines() if l.strip()]


class ReadmeTest(harness.AgentTestCase):
    def test_one_datacenter_block(self):
        cmds = readme_commands()
        self.assertTrue(cmds[0].startswith("./build/dcgate agent -dev"), cmds[0])
        env = dict(os.environ, DCGATE_HTTP_ADDR="%s:%d" % (self.a.addr, self.a.http_port))
        outputs = []
        for c in cmds[1:]:
            c = c.replace("http://127.0.0.1:8500", self.a.url())
            c = c.replace("./build/dcgate", harness.dcgate_bin())
            p = subprocess.run(["bash", "-c", c], env=env, capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, "%s: %s %s" % (c, p.stdout, p.stderr))
            outputs.append(p.stdout.decode())
        # the registered service is there, the KV value reads back through the CLI
        self.assertIn("web", self.a.get("/v1/agent/services").json())
        self.assertEqual(outputs[-1].strip(), "hello")
        health = self.a.get("/v1/health/service/web").json()
        self.assertEqual(len(health), 1)
        self.assertEqual(health[0]["Service"]["Port"], 8080)


def tls_block():
    """The ```sh block of the README's "## TLS" section, as one script."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## TLS", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


class ReadmeTLSTest(unittest.TestCase):
    """Runs the TLS walkthrough on a loopback address of its own: the agent, the WAN ping over
    mutual TLS and the HTTPS read must all work as written."""

    def test_tls_block(self):
        lease = harness.AddressLease()
        work = tempfile.mkdtemp(prefix="dcgate-readme-tls-")
        addr = lease.addr
        script = tls_block()
        script = script.replace("cd /tmp && mkdir -p dcgate-pki && cd dcgate-pki", "cd %s" % work)
        script = script.replace("dcgate agent -dev -node s1 -config-file dc1.json &",
                                "dcgate agent -dev -node s1 -bind %s -client %s -config-file dc1.json "
                                ">agent.log 2>&1 & echo $! > agent.pid\n"
                                "for i in $(seq 1 100); do curl -sf http://%s:8500/v1/status/leader | "
                                "grep -q 8300 && break; sleep 0.2; done" % (addr, addr, addr))
        script = script.replace("127.0.0.1:8302", "%s:8302" % addr)
        script = script.replace("https://localhost:8501", "--resolve localhost:8501:%s https://localhost:8501" % addr)
        bindir = os.path.join(work, "bin")
        os.makedirs(bindir)
        os.symlink(harness.dcgate_bin(), os.path.join(bindir, "dcgate"))
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"])
        try:
            p = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, timeout=90)
            out = p.stdout.decode()
            self.assertEqual(p.returncode, 0, "%s\n%s\n%s" % (out, p.stderr.decode(),
                             open(os.path.join(work, "agent.log")).read()[-3000:]))
            self.assertIn('"PeerRole":"server"', out)
            self.assertIn('"%s:8300"' % addr, out)
        finally:
            pidf = os.path.join(work, "agent.pid")
            if os.path.exists(pidf):
                try:
                    os.kill(int(open(pidf).read()), 15)
                except (OSError, ValueError):
                    pass
                time.sleep(1)
            shutil.rmtree(work, ignore_errors=True)
            lease.release()


def federation_blocks():
    """The ```sh block and the ```python block of the README's "## Two federated datacenters"
    section after its first (one-command) block: the by-hand walkthrough."""
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Two federated datacenters", 1)[1].split("\n## ", 1)[0]
    sh = [b.split("```", 1)[0] for b in section.split("```sh")[1:]]
    py = [b.split("```", 1)[0] for b in section.split("```python")[1:]]
    return sh, py


class ReadmeFederationTest(unittest.TestCase):
    """Runs the federation walkthrough by hand as written, on two loopback addresses of its own
    (127.0.0.1 and 127.0.0.2 in the README become leased ones), with bounded waits inserted where
    a person would wait (leaders, the WAN join, the registration), then the python-consul
    snippet against it. examples/federation/run.sh itself is run by test_federation.py."""

    def test_federation_walkthrough(self):
        sh, py = federation_blocks()
        self.assertEqual(len(sh), 2, "the federation section has the one-command block and the walkthrough")
        self.assertIn("examples/federation/run.sh", sh[0])
        self.assertEqual(len(py), 1)
        script, snippet = sh[1], py[0]
        l1 = harness.AddressLease()
        l2 = harness.AddressLease(avoid=(l1.n,))
        work = tempfile.mkdtemp(prefix="dcgate-readme-fed-")
        a1, a2 = l1.addr, l2.addr

        def wait(cond, what, tries=300):
            return ("ok=0; for i in $(seq 1 %d); do if %s; then ok=1; break; fi; sleep 0.2; done; "
                    "[ $ok = 1 ] || { echo \"gave up waiting for %s\" >&2; exit 1; }" % (tries, cond, what))

        def leader(addr):
            return "curl -sf --max-time 2 http://%s:8500/v1/status/leader | grep -q 8300" % addr

        def replace(text, old, new):
            self.assertIn(old, text, "the README walkthrough changed: %r not found" % old)
            return text.replace(old, new)
        script = replace(script, "mkdir -p /tmp/dcgate-fed && cd /tmp/dcgate-fed", "cd %s" % work)
        script = replace(script, "dcgate agent -config-file dc1.json > dc1.log 2>&1 &",
                         "dcgate agent -config-file dc1.json > dc1.log 2>&1 &\necho $! >> pids")
        script = replace(script, "dcgate agent -config-file east.json > east.log 2>&1 &",
                         "dcgate agent -config-file east.json > east.log 2>&1 &\necho $! >> pids")
        script = replace(script, "dcgate members -wan\n",
                         "%s\n%s\n%s\ndcgate members -wan\n"
                         % (wait(leader("127.0.0.1"), "the leader of dc1"), wait(leader("127.0.0.2"), "the leader of east"),
                            wait("[ \"$(dcgate members -wan 2>/dev/null | grep -c ' alive ')\" = 2 ]",
                                 "east to join dc1")))
        script = replace(script, "curl -s 'http://127.0.0.1:8500/v1/health/service/web?dc=east'",
                         "%s\necho\ncurl -s 'http://127.0.0.1:8500/v1/health/service/web?dc=east'\necho"
                         % wait("curl -sf 'http://127.0.0.1:8500/v1/health/service/web?dc=east' | grep -q web",
                                "web to be seen from dc1"))
        # one pass, so that a leased address is never rewritten again
        script = re.sub(r"127\.0\.0\.([12])(?![0-9])", lambda m: a1 if m.group(1) == "1" else a2, script)
        snippet = re.sub(r"127\.0\.0\.1(?![0-9])", a1, snippet)
        bindir = os.path.join(work, "bin")
        os.makedirs(bindir)
        os.symlink(harness.dcgate_bin(), os.path.join(bindir, "dcgate"))
        script += "\n/usr/bin/python3 - <<'PY'\n%s\nPY\n" % snippet
        env = dict(os.environ, PATH=bindir + ":" + os.environ["PATH"], DCGATE_HTTP_ADDR="%s:8500" % a1)
        env.pop("CONSUL_HTTP_ADDR", None)
        try:
            p = subprocess.run(["bash", "-e", "-c", script], env=env, capture_output=True, timeout=180)
            out = p.stdout.decode("utf-8", "replace")

            def logs():
                t = ""
                for n in ("dc1.log", "east.log"):
                    try:
                        t += "\n--- %s\n%s" % (n, open(os.path.join(work, n)).read()[-3000:])
                    except OSError:
                        pass
                return t
            what = "%s\n%s%s" % (out, p.stderr.decode("utf-8", "replace"), logs())
            self.assertEqual(p.returncode, 0, what)
            rows = [l.split() for l in out.splitlines()]
            alive = sorted(r[0] for r in rows if len(r) > 2 and r[2] == "alive")
            self.assertEqual(alive, ["dc1-server.dc1", "east-server.east"], what)
            health = [l for l in out.splitlines() if l.startswith("[{")]
            self.assertEqual(len(health), 1, what)
            import json
            h = json.loads(health[0])
            self.assertEqual([(e["Node"]["Node"], e["Service"]["Service"]) for e in h], [("east-server", "web")], what)
            self.assertIn(["web"], rows, "dcgate catalog services -datacenter east: " + what)
            self.assertEqual(out.rstrip().splitlines()[-1], "[('east-server', 8080)]", what)
        finally:
            pidf = os.path.join(work, "pids")
            pids = []
            if os.path.exists(pidf):
                pids = [int(x) for x in open(pidf).read().split() if x.strip().isdigit()]
            for pid in pids:
                try:
                    os.kill(pid, 15)
                except OSError:
                    pass
            for pid in pids:  # bounded wait for each to go, then SIGKILL
                for _ in range(100):
                    try:
                        os.kill(pid, 0)
                    except OSError:
                        break
                    time.sleep(0.1)
                else:
                    try:
                        os.kill(pid, 9)
                    except OSError:
                        pass
            shutil.rmtree(work, ignore_errors=True)
            l1.release()
            l2.release()


if __name__ == "__main__":
    unittest.main()
