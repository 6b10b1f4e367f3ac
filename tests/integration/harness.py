"""Integration-test harness: starts real dcgate agents on loopback and talks raw HTTP to them.

Runs with Debian's /usr/bin/python3 and the standard library only (python3-consul is used by the
interop tests, not here). Each agent gets its own loopback address 127.0.0.N, so the standard
ports (8500 HTTP, 8300 server RPC, 8301 LAN, 8600 DNS) never clash between agents; N is reserved
with a lock file for the lifetime of the agent, so tests running in parallel processes (the
runner runs two groups at once) and other people's agents on 127.0.0.x do not collide.

Every loop here is bounded in count and time. Only loopback addresses are ever contacted.
"""

import errno
import fcntl
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HTTP_PORT = 8500
SERVER_PORT = 8300
# Ports the agent may bind on its own address besides the two above (LAN gossip, WAN, DNS).
OTHER_PORTS = (8301, 8302, 8600)
# A sanitizer build (run-integration.sh sets DCGATE_SANITIZED=1) starts and answers slower.
LEADER_TIMEOUT = 60.0 if os.environ.get("DCGATE_SANITIZED") == "1" else 20.0
LOCK_DIR = os.path.join(tempfile.gettempdir(), "dcgate-it-addr")
ADDR_RANGE = range(20, 251)

# The proxies of the environment must never see loopback traffic (python-consul uses requests,
# which honours them).
for _v in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    os.environ.pop(_v, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.0/8,localhost"


def dcgate_bin():
    """Returns the agent binary: env DCGATE_BIN, else build/dcgate of this checkout."""
    b = os.environ.get("DCGATE_BIN")
    if b:
        return b
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(root, "build", "dcgate")


def _port_free(addr, port, kind):
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


class AddressLease:
    """An exclusive claim on 127.0.0.N, held by an flock until release()."""

    def __init__(self, avoid=()):
        os.makedirs(LOCK_DIR, exist_ok=True)
        candidates = [n for n in ADDR_RANGE if n not in avoid]
        random.shuffle(candidates)
        for n in candidates:
            path = os.path.join(LOCK_DIR, "%d.lock" % n)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            addr = "127.0.0.%d" % n
            ports = (HTTP_PORT, SERVER_PORT) + OTHER_PORTS
            if all(_port_free(addr, p, socket.SOCK_STREAM) for p in ports) and \
                    _port_free(addr, 8301, socket.SOCK_DGRAM) and _port_free(addr, 8600, socket.SOCK_DGRAM):
                self.n, self.addr, self._fd = n, addr, fd
                return
            os.close(fd)
        raise RuntimeError("no free loopback address in 127.0.0.%d-%d" % (ADDR_RANGE[0], ADDR_RANGE[-1]))

    def release(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage (case-insensitive get)
        self.body = body        # bytes

    def header(self, name):
        return self.headers.get(name)

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    @property
    def index(self):
        v = self.headers.get("X-Consul-Index")
        return None if v is None else int(v)

    def __repr__(self):
        b = self.body[:300]
        return "<Response %d %r %r>" % (self.status, dict(self.headers.items()), b)


def http_request(addr, port, method, path, body=None, headers=None, timeout=30.0, params=None):
    """One HTTP request on a fresh connection. body may be bytes, str or a JSON-able object."""
    if params:
        path = path + ("&" if "?" in path else "?") + urllib.parse.urlencode(params, doseq=True)
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = body.encode("utf-8") if isinstance(body, str) else json.dumps(body).encode("utf-8")
    conn = http.client.HTTPConnection(addr, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, r.reason, r.headers, data)
    finally:
        conn.close()


class Agent:
    """One dcgate agent process on its own loopback address: -dev by default, or with dev=False a
    persistent single server (-server -bootstrap-expect 1 -data-dir).

    start() returns once /v1/status/leader names a leader (bounded by LEADER_TIMEOUT), stop()
    terminates it (SIGTERM, then SIGKILL), kill9() kills it hard, restart() starts it again with
    the same arguments and -data-dir. stderr goes to a log file under the agent's temp dir; a
    restart appends to the same file.
    """

    def __init__(self, node=None, datacenter=None, data_dir=False, extra_args=(), name="agent", dev=True):
        self.lease = AddressLease()
        self.addr = self.lease.addr
        self.http_port = HTTP_PORT
        self.server_port = SERVER_PORT
        self.node = node or "node-%d" % self.lease.n
        self.datacenter = datacenter
        self.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-%s-" % name)
        self.dev = dev
        # Without -dev the agent is a single persistent server and needs a data dir.
        self.data_dir = os.path.join(self.tmpdir, "data") if (data_dir or not dev) else None
        if self.data_dir:
            os.makedirs(self.data_dir)
        self.extra_args = list(extra_args)
        self.log_path = os.path.join(self.tmpdir, "agent.log")
        self.proc = None
        self._log = None
        self.starts = 0

    # ---------------------------------------------------------------- process control
    def argv(self):
        mode = ["-dev"] if self.dev else ["-server", "-bootstrap-expect", "1"]
        a = [dcgate_bin(), "agent"] + mode + ["-node", self.node, "-bind", self.addr, "-client", self.addr,
             "-http-port", str(self.http_port), "-server-port", str(self.server_port), "-log-level", "debug"]
        if self.data_dir:
            a += ["-data-dir", self.data_dir]
        if self.datacenter:
            a += ["-datacenter", self.datacenter]
        return a + self.extra_args

    def start(self, timeout=LEADER_TIMEOUT, wait=True):
        """Starts the process; with wait, returns once a leader is known (see wait_leader)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("agent already running")
        self._log = open(self.log_path, "ab")
        self.starts += 1
        self._log.write(("\n===== start #%d: %s\n" % (self.starts, " ".join(self.argv()))).encode())
        self._log.flush()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=self._log, cwd=self.tmpdir)
        if not wait:
            return self
        try:
            self.wait_leader(timeout)
        except Exception:
            self._terminate(hard=True)
            raise
        return self

    def wait_leader(self, timeout=LEADER_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("agent exited with code %s before electing a leader\n%s"
                                   % (self.proc.returncode, self.log_tail()))
            try:
                r = self.get("/v1/status/leader", timeout=2)
                last = r
                if r.status == 200:
                    v = r.json()
                    # The new leader registers its own node with a write of its own just after
                    # the election (as Consul's leader does), so "ready" is a leader plus this
                    # agent's node in the catalog; a test reading the catalog at once would race.
                    if isinstance(v, str) and v and self._own_node_listed():
                        return v
            except (OSError, ValueError, http.client.HTTPException) as e:
                last = e
            time.sleep(0.1)
        raise RuntimeError("agent had no leader after %.0fs (last: %r)\n%s" % (timeout, last, self.log_tail()))

    def _own_node_listed(self):
        r = self.get("/v1/catalog/node/%s?stale" % self.node, timeout=2)
        return r.status == 200 and r.json() is not None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def _terminate(self, hard=False, grace=10.0):
        p = self.proc
        if p is None:
            return None
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        if self._log:
            self._log.close()
            self._log = None
        return p.returncode

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s. Returns the exit code."""
        return self._terminate(hard=False)

    def kill9(self):
        return self._terminate(hard=True)

    def restart(self, hard=False, timeout=LEADER_TIMEOUT, wait=True):
        self._terminate(hard=hard)
        return self.start(timeout, wait=wait)

    def wait_exit(self, timeout):
        """Waits up to timeout for the process to exit by itself; returns the code or None."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        """Teardown: stops the agent, frees the address; keeps the temp dir only if asked."""
        self.stop()
        self.lease.release()
        if not os.environ.get("DCGATE_IT_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 64 * 1024))
                data = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join(data[-lines:])
        except OSError as e:
            return "(no log: %s)" % e

    # ---------------------------------------------------------------- HTTP
    def request(self, method, path, body=None, headers=None, timeout=30.0, params=None):
        return http_request(self.addr, self.http_port, method, path, body, headers, timeout, params)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def raw_socket(self, timeout=10.0):
        return socket.create_connection((self.addr, self.http_port), timeout=timeout)

    def url(self):
        return "http://%s:%d" % (self.addr, self.http_port)


class Server(Agent):
    """A server of a multi-server datacenter: -server -bootstrap-expect N -retry-join <seed>,
    with a data dir. config (a dict) is written to a JSON config file and passed with
    -config-file."""

    def __init__(self, expect, join=None, config=None, **kw):
        kw.setdefault("dev", False)
        kw.setdefault("name", "server")
        super().__init__(**kw)
        self.expect = expect
        self.join = join
        self.config = config

    def argv(self):
        a = [dcgate_bin(), "agent", "-server", "-node", self.node, "-bind", self.addr, "-client",
             self.addr, "-data-dir", self.data_dir, "-log-level", "debug"]
        if self.expect:
            a += ["-bootstrap-expect", str(self.expect)]
        if self.join:
            a += ["-retry-join", self.join]
        if self.datacenter:
            a += ["-datacenter", self.datacenter]
        if self.config:
            path = os.path.join(self.tmpdir, "config.json")
            with open(path, "w") as f:
                json.dump(self.config, f)
            a += ["-config-file", path]
        return a + self.extra_args


class ClientAgent(Agent):
    """A client agent (no -server): keeps its own services and checks, sends everything else to
    the servers it finds through -retry-join. start() waits until it answers /v1/agent/self and,
    with wait, until it can read /v1/status/leader through a server."""

    def __init__(self, join, **kw):
        kw.setdefault("dev", False)
        kw.setdefault("name", "client")
        super().__init__(**kw)
        self.join = join

    def argv(self):
        a = [dcgate_bin(), "agent", "-node", self.node, "-bind", self.addr, "-client", self.addr,
             "-data-dir", self.data_dir, "-log-level", "debug"]
        if self.join:
            a += ["-retry-join", self.join]
        if self.datacenter:
            a += ["-datacenter", self.datacenter]
        return a + self.extra_args


class Cluster:
    """n servers of one datacenter that find each other through -retry-join to the first and
    bootstrap raft together (-bootstrap-expect n). start() returns once every server names the
    same leader."""

    def __init__(self, n=3, datacenter=None, config=None, extra_args=()):
        self.servers = []
        try:
            for i in range(n):
                seed = self.servers[0].addr if self.servers else None
                s = Server(n, node="s%d" % (i + 1), datacenter=datacenter, config=config,
                           extra_args=extra_args)
                if seed is None:
                    seed = s.addr
                s.join = seed
                self.servers.append(s)
        except Exception:
            self.close()
            raise

    def start(self, timeout=LEADER_TIMEOUT):
        """Starts every server and waits for one leader; on any failure the servers are stopped
        (so a setUp can be `self.cluster = Cluster(3).start()`)."""
        try:
            for s in self.servers:
                s.start(wait=False)
            self.wait_leader(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def running(self):
        return [s for s in self.servers if s.running()]

    def wait_leader(self, timeout=LEADER_TIMEOUT, among=None):
        """Waits until every running server (or those in among) names the same leader, one of
        them; returns that server."""
        among = among or self.running()
        found = {}

        def agreed():
            names = set()
            for s in among:
                try:
                    r = s.get("/v1/status/leader", timeout=2)
                    names.add(r.json() if r.status == 200 else "")
                except (OSError, ValueError, http.client.HTTPException):
                    names.add("")
            if len(names) == 1 and "" not in names:
                addr = names.pop().rsplit(":", 1)[0]
                for s in among:
                    if s.addr == addr:
                        found["leader"] = s
                        return True
            return False

        wait_until(agreed, timeout, interval=0.1, what="one leader named by every server")
        return found["leader"]

    def leader(self):
        return self.wait_leader()

    def followers(self):
        lead = self.leader()
        return [s for s in self.running() if s is not lead]

    def close(self):
        for s in self.servers:
            s.close()


def wait_members_alive(agent, names, timeout, skip_left=False):
    """Waits until agent's /v1/agent/members lists exactly names, all alive (status 1); with
    skip_left, members that left (status 3) are not counted. Returns {name: member}."""
    names = set(names)

    def alive():
        r = agent.get("/v1/agent/members", timeout=5)
        ms = {m["Name"]: m for m in (r.json() if r.status == 200 else [])
              if not (skip_left and m["Status"] == 3)}
        return ms if set(ms) == names and all(m["Status"] == 1 for m in ms.values()) else None

    return wait_until(alive, timeout, 0.2, "%s to list %s alive" % (agent.node, sorted(names)))


def wait_until(fn, timeout, interval=0.2, what="condition"):
    """Calls fn until it returns a truthy value (returned) or timeout passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    last = None
    n = 0
    while True:
        n += 1
        try:
            last = fn()
            if last:
                return last
        except (OSError, http.client.HTTPException, ValueError, KeyError) as e:
            last = e
        if time.monotonic() >= deadline or n > 100000:
            raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


class AgentTestCase(unittest.TestCase):
    """A test class sharing one agent among its tests.

    The agent starts lazily in the first setUp (so a start failure fails every test of the class
    instead of hiding them behind a setUpClass error) and stops in tearDownClass. Tests must use
    names (keys, services) of their own. On a failure the agent's log tail is printed.
    """

    maxDiff = None
    agent_kwargs = {}
    agent = None
    _start_error = None

    @classmethod
    def start_agent(cls):
        return Agent(name=cls.__name__, **cls.agent_kwargs).start()

    def setUp(self):
        cls = type(self)
        if cls._start_error is not None:
            raise RuntimeError("agent failed to start earlier: %s" % cls._start_error)
        if cls.agent is None or not cls.agent.running():
            if cls.agent is not None:
                cls.agent.close()
                cls.agent = None
            try:
                cls.agent = cls.start_agent()
            except Exception as e:
                cls._start_error = str(e)
                raise
        self.a = cls.agent

    @classmethod
    def tearDownClass(cls):
        if cls.agent is not None:
            cls.agent.close()
            cls.agent = None

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            ag = type(self).agent
            if ag is not None:
                sys.stderr.write("\n----- agent log tail (%s, %s) for %s -----\n%s\n-----\n"
                                 % (ag.addr, ag.log_path, self.id(), ag.log_tail()))
                sys.stderr.flush()
        return out

    # ------------------------------------------------------------ assertion helpers
    def assertStatus(self, r, status, msg=None):
        if r.status != status:
            self.fail("%sexpected HTTP %d, got %d: %r" % (msg + ": " if msg else "", status, r.status, r))

    def assertJSON(self, r):
        ct = r.header("Content-Type") or ""
        self.assertTrue(ct.startswith("application/json"), "Content-Type %r on %r" % (ct, r))
        return r.json()

    def assertOK(self, r, msg=None):
        self.assertStatus(r, 200, msg)
        return r

    def assertEmpty200(self, r, msg=None):
        self.assertStatus(r, 200, msg)
        self.assertEqual(r.body, b"", "void call must return an empty body: %r" % r)
        cl = r.header("Content-Length")
        if cl is not None:
            self.assertEqual(cl.strip(), "0")

    def assertErrorText(self, r, status, text):
        """Status plus exact text body (trailing newline allowed)."""
        self.assertStatus(r, status)
        self.assertEqual(r.text.rstrip("\n"), text, "error body of %r" % r)

    def assertIndex(self, r):
        v = r.header("X-Consul-Index")
        self.assertIsNotNone(v, "X-Consul-Index missing on %r" % r)
        self.assertRegex(v, r"^[0-9]+$")
        self.assertGreater(int(v), 0, "X-Consul-Index must never be 0")
        return int(v)


def b64(s):
    import base64
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def unb64(s):
    import base64
    return None if s is None else base64.b64decode(s)


def quote(key):
    return urllib.parse.quote(key, safe="/")
