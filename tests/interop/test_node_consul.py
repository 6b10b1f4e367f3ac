"""Interop with node-consul (npm `consul` 2.0.1, node 20): runs node/interop.js once against a
fresh agent and reports each of its cases as one test. Installs the pinned packages with
`npm ci --silent` when node/node_modules is missing (a failure to install fails the tests)."""

import json
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from harness import Agent  # noqa: E402

NODE_DIR = os.path.join(HERE, "node")
CASES = ["tcp_check", "http_check", "ttl_check", "health_service_passing_tag", "catalog_services",
         "catalog_service", "kv_cas_flags", "kv_recurse_keys", "kv_404", "session_lock", "txn",
         "blocking_query", "watch"]


class NodeConsulTest(unittest.TestCase):
    results = None
    error = None
    agent = None
    output = ""

    @classmethod
    def run_node(cls):
        if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "consul")):
            p = subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
            if p.returncode != 0:
                raise RuntimeError("npm ci failed:\n" + p.stdout.decode("utf-8", "replace"))
        cls.agent = Agent(name="nodeconsul", node="node-interop")
        cls.agent.start()
        p = subprocess.run(["node", "interop.js", cls.agent.addr, str(cls.agent.http_port), cls.agent.node],
                           cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
        cls.output = p.stdout.decode("utf-8", "replace") + p.stderr.decode("utf-8", "replace")
        res = {}
        for line in p.stdout.decode("utf-8", "replace").splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue
            res[d["name"]] = d
        return res

    def setUp(self):
        cls = type(self)
        if cls.results is None and cls.error is None:
            try:
                cls.results = cls.run_node()
            except Exception as e:
                cls.error = "%s" % e
                if cls.agent is not None:
                    cls.error += "\n--- agent log tail ---\n" + cls.agent.log_tail()
        if cls.error:
            self.fail(cls.error)

    @classmethod
    def tearDownClass(cls):
        if cls.agent is not None:
            cls.agent.close()
            cls.agent = None

    def check_case(self, name):
        d = type(self).results.get(name)
        if d is None:
            self.fail("interop.js printed no result for %s; output:\n%s" % (name, type(self).output[-3000:]))
        if not d["ok"]:
            self.fail("%s failed:\n%s\n--- agent log tail ---\n%s" % (name, d.get("error"), type(self).agent.log_tail(30)))

    def test_no_global_failure(self):
        for name in ("_global_timeout", "_main"):
            if name in type(self).results:
                self.fail(type(self).results[name].get("error"))


def _make(name):
    def t(self):
        self.check_case(name)
    t.__name__ = "test_" + name
    return t


for _c in CASES:
    setattr(NodeConsulTest, "test_" + _c, _make(_c))


if __name__ == "__main__":
    unittest.main()
