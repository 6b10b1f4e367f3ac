"""Runs unittest files and writes 'passed failed skipped' counts to a summary file.

usage: /usr/bin/python3 runner.py SUMMARY_FILE test_file.py[::Class[.method]] ...

A bare file runs all its tests; `file.py::Class` or `file.py::Class.method` runs only those (the
same file may be named several times; it is imported once). A selector that names nothing is a
failure, so a renamed test cannot silently drop out of a subset.

Counting is per test method: a test that fails in several ways counts once; an error outside a
test (a module that does not import, a tearDownClass error) counts as one failure of its own, so
nothing can disappear from the count. A module that cannot be imported is a failure, never a skip.
"""

import importlib.util
import os
import sys
import time
import traceback
import unittest


class CountingResult(unittest.TextTestResult):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.outcome = {}  # test id -> "pass" | "fail" | "skip"

    def _mark(self, test, what):
        tid = test.id()
        if what == "fail" or tid not in self.outcome:
            self.outcome[tid] = what

    def startTest(self, test):
        self._t0 = time.monotonic()
        super().startTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._mark(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._mark(test, "fail")

    def addError(self, test, err):
        super().addError(test, err)
        self._mark(test, "fail")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._mark(test, "skip")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._mark(test, "pass")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._mark(test, "fail")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._mark(test, "fail")


_modules = {}


def load(path):
    if path in _modules:
        return _modules[path]
    name = os.path.splitext(os.path.basename(path))[0]
    d = os.path.dirname(os.path.abspath(path))
    for p in (d, os.path.join(os.path.dirname(d), "integration")):
        if p not in sys.path:
            sys.path.insert(0, p)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _modules[path] = mod
    return mod


def load_tests(arg):
    """The tests of one argument: file.py, file.py::Class or file.py::Class.method."""
    path, _, sel = arg.partition("::")
    mod = load(path)
    if not sel:
        return unittest.defaultTestLoader.loadTestsFromModule(mod)
    suite = unittest.defaultTestLoader.loadTestsFromName(sel, mod)
    if suite.countTestCases() == 0:
        raise LookupError("%s names no test" % arg)
    return suite


def main():
    summary = sys.argv[1]
    suite = unittest.TestSuite()
    counts = {"pass": 0, "fail": 0, "skip": 0}
    for arg in sys.argv[2:]:
        try:
            suite.addTests(load_tests(arg))
        except Exception:
            sys.stderr.write("ERROR: cannot load %s\n%s" % (arg, traceback.format_exc()))
            counts["fail"] += 1
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=CountingResult)
    result = runner.run(suite)
    for what in result.outcome.values():
        counts[what] += 1
    # Errors not tied to a test method (class or module fixtures) count as failures too.
    for test, _ in result.errors + result.failures:
        if test.id() not in result.outcome:
            counts["fail"] += 1
    with open(summary, "w") as f:
        f.write("%d %d %d\n" % (counts["pass"], counts["fail"], counts["skip"]))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
