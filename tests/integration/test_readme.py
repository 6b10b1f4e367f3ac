"""The README's examples keep working: the shell lines of its "One datacenter" section (after the
agent start, which the harness does) run against a real agent, and their effects are checked."""

import os
import re
import subprocess
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


if __name__ == "__main__":
    unittest.main()
