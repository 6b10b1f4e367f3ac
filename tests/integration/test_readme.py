"""The README's examples keep working: the shell lines of its "One datacenter" section (after the
agent start, which the harness does) run against a real agent, and their effects are checked."""

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


if __name__ == "__main__":
    unittest.main()
