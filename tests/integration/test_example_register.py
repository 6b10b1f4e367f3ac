"""Runs examples/python-register/register.py (the python-consul registration example) against a
fresh agent: register with a TCP check, read back, check passes, web server stops, check goes
critical, service removed after DeregisterCriticalServiceAfter (raised to 1m). About 90-120 s."""

import os
import subprocess
import unittest

from harness import AgentTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "examples", "python-register", "register.py")


class ExampleRegisterTest(AgentTestCase):
    def test_example(self):
        env = dict(os.environ)
        env.pop("CONSUL_HTTP_ADDR", None)
        p = subprocess.run(["/usr/bin/python3", SCRIPT, "--host", self.a.addr, "--port", str(self.a.http_port),
                            "--deregister-timeout", "150"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300, env=env)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, "register.py failed:\n" + out)
        self.assertIn("OK", out.splitlines()[-1])
        # The agent itself agrees: no service, no check left behind.
        self.assertNotIn("test1", self.a.get("/v1/agent/services").json())
        self.assertNotIn("service:test1", self.a.get("/v1/agent/checks").json())


if __name__ == "__main__":
    unittest.main()
