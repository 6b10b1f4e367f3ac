"""Federation on the emulated WAN (issue 4, "What it must show" bullets 3 and 4): three
datacenters (dc1, east, west), one dcgate server each, each inside its own network namespace of
tests/wan (wanemu), 150 ms each way with 30 ms jitter and 5% loss on every link between DCs, and a
3-second total stall of every link every minute.

SoakTest (bullet 3):
  test_1_soak_no_false_failure: for DCGATE_WAN_SOAK_S seconds (default 80, one stall, so that `make test`
    stays bounded; tests/soak.sh sets 330, which covers five stalls) every ~2 s each DC's
    /v1/agent/members?wan=1 is read and no member may ever be Status 4 (failed), and each DC reads
    a key of every other DC with ?dc=; every pair must succeed in at least 80% of the rounds, and
    after each stall every pair must succeed again before the next one. At the end every server's
    dcgate.wan.failures counter must still be 0 (it also sees a failure that lasted less than a
    poll). The numbers (per pair success and latency, the suspicion and failure counters, probe
    timeouts, the delayer's stall counters) are printed.
  test_2_kill9_marked_failed: west's server is killed with SIGKILL; dc1 and east must both list
    west as Status 4 within 10 s of the kill (time.monotonic from the kill, polled every 0.25 s),
    and ?dc=west must then answer 500 "Remote DC has no server currently reachable" (within the
    issue's one second).

PartitionTest (bullet 4), on a fresh emulator with the same WAN figures (delay, jitter, loss and
  the periodic stalls: the cut and the rejoin must work on the WAN the soak uses, not on a quiet
  one): KV is written in every DC (and one key in east through ?dc=east from dc1), then east is
  cut off from both other DCs (silently: packets dropped, as in a real cut) for 60 s. During the
  cut, local writes and reads in every DC must keep working; ?dc=east from dc1 and west, and ?dc=dc1
  from east, must fail with a 500 (either federation error text or `rpc error making call: ...`)
  within the client's 30 s rather than hang; dc1 and west must come to list east as failed. After
  the heal, with no manual join, within 60 s: ?dc=east works again from dc1 and west (and ?dc=dc1
  from east), every server lists the other two alive, and every key written before and during the
  cut is present in its DC, with its value, also when read from another DC. After the heal each
  check is tried every second (a new attempt while earlier ones wait; reads carry a distinct
  `attempt=N` query so they are not coalesced into one WAN request), the time of each first
  success is printed, and every 5 s the TCP state of dc1's and west's connections to east
  (`ss -tnoi`: retransmission timer and backoff) is kept and printed, to show why a link is slow
  to come back.

Cost: about 5 minutes with the default soak (SoakTest ~175 s, PartitionTest ~135 s, longer when
the rejoin is slow); each class has its own emulator, CA and servers, all removed at the end.

How the HTTP API is reached: each agent binds its HTTP API (-client) to its namespace's address
10.254.<i>.1 (fixed ports are fine: the address exists only inside this test's own namespaces,
named with a per-process prefix by wanemu). Nothing links the namespaces to the caller's, so every
request is a `curl` run inside the DC's namespace (wan.run: `ip netns exec <ns> curl ...`), with
curl's own -m time limit; its status line, headers and body are parsed into harness.Response.
A curl failure (time limit, connection refused) raises CurlError, an OSError.

Skips (unittest skip with the reason) only when wanemu.check() says the kernel lacks NFQUEUE;
no root, a missing tool or a missing delayer binary is a failure.
"""

import base64
import collections
import concurrent.futures
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "wan"))
import wanemu  # noqa: E402

from harness import Response, dcgate_bin  # noqa: E402
from test_tls_matrix import CA, tls_config, write_json  # noqa: E402

SANITIZED = os.environ.get("DCGATE_SANITIZED") == "1"
DCS = ("dc1", "east", "west")
PAIRS = [(s, d) for s in DCS for d in DCS if s != d]
# The issue's WAN: per direction of every link between DCs, plus a total stall every minute.
WAN = dict(delay_ms=150, jitter_ms=30, loss_pct=5, stall_every_s=60, stall_s=3)
SOAK_S = float(os.environ.get("DCGATE_WAN_SOAK_S", "80"))
POLL_S = 2.0              # one soak round: members of every DC and a ?dc= read for every pair
FWD_MIN_RATE = 0.80       # each pair's share of ?dc= reads that must succeed during the soak
AFTER_STALL_MIN_S = 10.0  # a stall is checked for recovery if at least this much soak follows it
FAIL_BOUND = 10.0         # the issue's: a server killed with -9 is marked failed within 10 s
KILL_POLL_S = 0.25
ERROR_BOUND = 1.0         # the issue's: the federation errors come within one second
CUT_S = 60.0              # the issue's: a DC cut off for 60 s
REJOIN_BOUND = 60.0       # after the heal, ?dc= to it must work again within this
CLIENT_TIMEOUT = 30.0     # a ?dc= request must return within this (curl -m)
LOCAL_TIMEOUT = 10.0      # a local request (inside the DC) must return within this
CONVERGE_TIMEOUT = 180.0 if SANITIZED else 90.0
LEADER_TIMEOUT = 60.0 if SANITIZED else 30.0
HTTP_PORT = 8500
STATUS_ALIVE, STATUS_FAILED = 1, 4
NO_SERVER = "Remote DC has no server currently reachable"
NO_PATH = "No path to datacenter"
RPC_ERROR = "rpc error making call:"
WAN_LOG_WORDS = ("suspect", "failed", "alive again", "rejoined", "joined", "closing the link",
                 "refuting", "cannot dial", "left the WAN")


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


class CurlError(OSError):
    """curl inside a namespace did not get a response (its exit code says why: 28 time limit,
    7 connection refused, 52 empty reply, 56 receive error)."""

    def __init__(self, code, stderr, elapsed):
        super().__init__("curl exit %d after %.2fs: %s" % (code, elapsed, stderr.strip()[-300:]))
        self.code, self.elapsed = code, elapsed


def parse_curl_i(out):
    """curl -i output (status line, headers, blank line, body) into a harness.Response."""
    head, sep, body = out.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("no header end in curl output: %r" % out[:300])
    line, _, rest = head.partition(b"\r\n")
    parts = line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line from curl: %r" % line)
    headers = http.client.parse_headers(io.BytesIO(rest + b"\r\n\r\n"))
    return Response(int(parts[1]), parts[2] if len(parts) > 2 else "", headers, body)


def percentile(xs, p):
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def wan_epoch(prefix):
    """The emulator's stall epoch (wall clock seconds), from wanemu.sh's state file; None if it
    cannot be read."""
    base = os.environ.get("WANEMU_STATE", "/run/dgw-wanemu")
    try:
        with open(os.path.join(base, prefix.rstrip("-"), "config")) as f:
            for line in f:
                if line.startswith("EPOCH="):
                    return float(line.split("=", 1)[1].strip().strip("'\""))
    except (OSError, ValueError):
        pass
    return None


class Server:
    """One dcgate server (-server -bootstrap-expect 1 -data-dir) inside its DC's namespace."""

    def __init__(self, fed, dc, join=()):
        self.fed, self.dc, self.wan = fed, dc, fed.wan
        self.addr = self.wan.addr(dc)
        self.node = "wan-" + dc
        self.name = "%s.%s" % (self.node, dc)
        self.dir = os.path.join(fed.tmpdir, dc)
        self.data_dir = os.path.join(self.dir, "data")
        os.makedirs(self.data_dir)
        self.log_path = os.path.join(self.dir, "agent.log")
        cert, key = fed.ca.issue("server", dc)
        extra = {"retry_join_wan": list(join)} if join else None
        self.cfg = write_json(os.path.join(self.dir, "wan.json"),
                              tls_config(fed.ca.cert, cert, key, extra=extra))
        self.proc = None
        self._log = None

    def argv(self):
        return [dcgate_bin(), "agent", "-server", "-bootstrap-expect", "1", "-node", self.node,
                "-datacenter", self.dc, "-bind", self.addr, "-client", self.addr,
                "-http-port", str(HTTP_PORT), "-data-dir", self.data_dir, "-log-level", "debug",
                "-config-file", self.cfg]

    def start(self):
        self._log = open(self.log_path, "ab")
        self._log.write(("\n===== start: %s\n" % " ".join(self.argv())).encode())
        self._log.flush()
        # `ip netns exec` execs the command: the Popen's pid is dcgate's own.
        self.proc = self.wan.run_in(self.dc, self.argv(), stdin=subprocess.DEVNULL,
                                    stdout=self._log, stderr=self._log, cwd=self.dir)
        deadline = time.monotonic() + LEADER_TIMEOUT
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("dcgate in %s exited with %s before electing a leader\n%s"
                                   % (self.dc, self.proc.returncode, self.log_tail()))
            try:
                r = self.fed.request(self.dc, "GET", "/v1/status/leader", timeout=2)
                last = r
                if r.status == 200 and r.json():
                    return self
            except (OSError, ValueError) as e:
                last = e
            time.sleep(0.2)
        raise RuntimeError("dcgate in %s had no leader after %.0fs (last: %r)\n%s"
                           % (self.dc, LEADER_TIMEOUT, last, self.log_tail()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.kill()
        self.proc.wait(10)
        self._close_log()

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def log_lines(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace").splitlines()
        except OSError as e:
            return ["(no log: %s)" % e]

    def log_tail(self, n=40):
        return "\n".join(self.log_lines()[-n:])

    def wan_events(self, n=60):
        """The last n log lines about WAN membership (suspicion, failure, joins, links)."""
        lines = [l for l in self.log_lines() if any(w in l for w in WAN_LOG_WORDS)]
        return "\n".join(lines[-n:])


class Federation:
    """Three one-server DCs on an emulated WAN: east and west have retry_join_wan [dc1], so
    west learns east (and east west) only through the pool."""

    def __init__(self, **wan_kw):
        self.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-wanemu-")
        self.wan = wanemu.WanEmu(dcs=list(DCS), **wan_kw)
        self.servers = {}
        self.epoch_mono = None

    def start(self):
        self.ca = CA(os.path.join(self.tmpdir, "pki"))
        t_wall, t_mono = time.time(), time.monotonic()
        self.wan.start()
        epoch = wan_epoch(self.wan.prefix)
        # stalls happen at epoch + k * stall_every_s (k >= 1); in this process's monotonic clock:
        self.epoch_mono = t_mono + ((epoch - t_wall) if epoch is not None else 0.0)
        dc1 = self.wan.addr("dc1")
        for dc in DCS:
            self.servers[dc] = Server(self, dc, join=[] if dc == "dc1" else [dc1]).start()
        self.wait_converged()
        return self

    def close(self):
        for s in self.servers.values():
            s._close_log()
        self.wan.stop()  # terminates the servers, then removes namespaces, rules and delayers
        for s in self.servers.values():
            s._close_log()
        if not os.environ.get("DCGATE_IT_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    # ------------------------------------------------------------------ HTTP inside a namespace
    def request(self, dc, method, path, body=None, timeout=LOCAL_TIMEOUT, dc_param=None):
        """One HTTP request to dc's server, made by curl inside dc's namespace. dc_param adds
        ?dc=<dc_param>. Returns a harness.Response; raises CurlError when curl got no response
        (timeout is curl's -m)."""
        if dc_param:
            path += ("&" if "?" in path else "?") + "dc=" + dc_param
        url = "http://%s:%d%s" % (self.wan.addr(dc), HTTP_PORT, path)
        argv = ["curl", "-sS", "-i", "--noproxy", "*", "-m", "%g" % timeout, "-X", method,
                "-H", "Expect:"]
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            argv += ["-H", "Content-Type: application/octet-stream", "--data-binary", "@-"]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        t0 = time.monotonic()
        try:
            p = self.wan.run(dc, argv + [url], timeout=timeout + 15, input=data,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        except subprocess.TimeoutExpired:
            raise CurlError(-1, "curl did not exit", time.monotonic() - t0) from None
        if p.returncode != 0:
            raise CurlError(p.returncode, p.stderr.decode("utf-8", "replace"),
                            time.monotonic() - t0)
        return parse_curl_i(p.stdout)

    def members(self, dc, timeout=LOCAL_TIMEOUT):
        """{name: Status} of dc's /v1/agent/members?wan=1."""
        r = self.request(dc, "GET", "/v1/agent/members?wan=1", timeout=timeout)
        if r.status != 200:
            raise ValueError("members?wan=1 on %s: %r" % (dc, r))
        return {m.get("Name"): m.get("Status") for m in (r.json() or [])}

    def counters(self, dc):
        """Counters of dc's /v1/agent/metrics, {name: Count}."""
        r = self.request(dc, "GET", "/v1/agent/metrics")
        if r.status != 200:
            raise ValueError("metrics on %s: %r" % (dc, r))
        return {c["Name"]: c["Count"] for c in r.json().get("Counters", [])}

    def kv_put(self, dc, key, value, via=None, timeout=LOCAL_TIMEOUT):
        """PUT /v1/kv/key on dc's server (via: the DC whose server is asked, with ?dc=dc)."""
        if via and via != dc:
            r = self.request(via, "PUT", "/v1/kv/" + key, value, timeout=timeout, dc_param=dc)
        else:
            r = self.request(dc, "PUT", "/v1/kv/" + key, value, timeout=timeout)
        return r.status == 200 and r.text.strip() == "true", r

    def kv_get(self, dc, key, via=None, timeout=LOCAL_TIMEOUT):
        """(Response, value or None) of GET /v1/kv/key in dc (asked through `via` with ?dc=)."""
        if via and via != dc:
            r = self.request(via, "GET", "/v1/kv/" + key, timeout=timeout, dc_param=dc)
        else:
            r = self.request(dc, "GET", "/v1/kv/" + key, timeout=timeout)
        if r.status != 200:
            return r, None
        return r, base64.b64decode(r.json()[0]["Value"] or "").decode()

    def kv_tree(self, dc, prefix, via=None, timeout=LOCAL_TIMEOUT):
        """{key: value} under prefix in dc, or raises. Read through another DC, a 500 (a link
        that dropped on the lossy WAN) is tried again, up to three times."""
        path = "/v1/kv/%s?recurse" % prefix
        for _ in range(3):
            if via and via != dc:
                r = self.request(via, "GET", path, timeout=timeout, dc_param=dc)
            else:
                r = self.request(dc, "GET", path, timeout=timeout)
            if r.status != 500 or not via or via == dc:
                break
            time.sleep(1)
        if r.status == 404:
            return {}
        if r.status != 200:
            raise ValueError("GET %s in %s (via %s): %r" % (path, dc, via, r))
        return {e["Key"]: base64.b64decode(e.get("Value") or "").decode() for e in r.json()}

    # ------------------------------------------------------------------ pool state
    def alive_view(self, dc):
        ms = self.members(dc)
        return sorted(n for n, st in ms.items() if st == STATUS_ALIVE)

    def wait_converged(self, timeout=CONVERGE_TIMEOUT):
        """Every server lists the three alive and reads a key of every other DC."""
        want = sorted(s.name for s in self.servers.values())
        deadline = time.monotonic() + timeout
        pending = set(DCS)
        last = {}
        while pending and time.monotonic() < deadline:
            for dc in sorted(pending):
                try:
                    alive = self.alive_view(dc)
                    last[dc] = alive
                    if alive != want:
                        continue
                    ok = True
                    for other in DCS:
                        if other == dc:
                            continue
                        r = self.request(dc, "GET", "/v1/status/leader", timeout=CLIENT_TIMEOUT,
                                         dc_param=other)
                        ok = ok and r.status == 200
                        last[dc] = (alive, other, r.status, r.text[:100])
                    if ok:
                        pending.discard(dc)
                except (OSError, ValueError) as e:
                    last[dc] = e
            if pending:
                time.sleep(0.5)
        if pending:
            raise AssertionError("the WAN pool did not converge within %.0fs: %s\n%s"
                                 % (timeout, last, self.describe_logs()))

    def stalls_between(self, t0, t1):
        """[(start, end)] of the emulator's total stalls overlapping [t0, t1] (monotonic)."""
        every, length = self.wan.stall_every_s, self.wan.stall_s
        if not every or not length:
            return []
        out = []
        k = max(1, int((t0 - self.epoch_mono) // every))
        while True:
            s = self.epoch_mono + k * every
            if s > t1:
                return out
            if s + length >= t0:
                out.append((s, s + length))
            k += 1

    def describe_logs(self, events=40, tail=25):
        out = []
        for dc, s in self.servers.items():
            out.append("----- %s (%s, %s): WAN events -----\n%s\n----- %s: log tail -----\n%s"
                       % (dc, s.addr, s.log_path, s.wan_events(events), dc, s.log_tail(tail)))
        return "\n".join(out)


class WanEmulatedBase(unittest.TestCase):
    maxDiff = None
    fed = None
    wan_kw = WAN

    @classmethod
    def setUpClass(cls):
        wanemu.require()
        fed = Federation(**cls.wan_kw)
        try:
            t0 = time.monotonic()
            fed.start()
            log("\n  [%s] three DCs on the emulated WAN (%s), converged in %.1fs (prefix %s)"
                % (cls.__name__, ", ".join("%s=%s" % kv for kv in sorted(cls.wan_kw.items())),
                   time.monotonic() - t0, fed.wan.prefix))
        except BaseException:
            fed.close()
            raise
        cls.fed = fed

    @classmethod
    def tearDownClass(cls):
        if cls.fed is not None:
            cls.fed.close()
            cls.fed = None

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        fed = type(self).fed
        if len(result.failures) + len(result.errors) > before and fed is not None:
            log("\n===== logs for %s =====\n%s\n=====" % (self.id(), fed.describe_logs()))
        return out


class SoakTest(WanEmulatedBase):
    """Bullet 3: no false failure on a slow, lossy, stalling WAN; a killed server failed in 10 s."""

    def setUp(self):
        self.f = type(self).fed
        # every DC's own key, read from the others during the soak
        for dc in DCS:
            ok, r = self.f.kv_put(dc, "wan/where", dc)
            self.assertTrue(ok, "PUT wan/where in %s: %r" % (dc, r))

    def _members_round(self, dc):
        t = time.monotonic()
        try:
            return dc, t, self.f.members(dc), None
        except (OSError, ValueError) as e:
            return dc, t, None, e

    def _forward(self, src, dst, timeout=CLIENT_TIMEOUT):
        t = time.monotonic()
        try:
            r, v = self.f.kv_get(dst, "wan/where", via=src, timeout=timeout)
            ok = r.status == 200 and v == dst
            what = "200" if ok else "%d %s" % (r.status, r.text.strip()[:80])
        except (OSError, ValueError) as e:
            ok, what = False, "client: %s" % str(e)[:120]
        return src, dst, t, time.monotonic() - t, ok, what

    def test_1_soak_no_false_failure(self):
        f = self.f
        names = {dc: f.servers[dc].name for dc in DCS}
        start = time.monotonic()
        end = start + SOAK_S
        c0 = {dc: f.counters(dc) for dc in DCS}
        failed_seen = []            # (t, observer, member, status)
        odd_status = collections.Counter()   # (observer, member, status) not alive, not failed
        missing = collections.Counter()      # (observer, member) not listed at all
        local_errors = []           # (t, dc, error)
        fwd = collections.defaultdict(list)  # (src, dst) -> [(t, elapsed, ok, what)]
        rounds = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(DCS) + len(PAIRS)) as ex:
            while time.monotonic() < end:
                t_round = time.monotonic()
                rounds += 1
                mf = [ex.submit(self._members_round, dc) for dc in DCS]
                ff = [ex.submit(self._forward, s, d) for s, d in PAIRS]
                for fu in mf:
                    dc, t, ms, err = fu.result()
                    if err is not None:
                        local_errors.append((t - start, dc, str(err)[:200]))
                        continue
                    for other in DCS:
                        st = ms.get(names[other])
                        if st is None:
                            missing[(dc, names[other])] += 1
                        elif st == STATUS_FAILED:
                            failed_seen.append((t - start, dc, names[other], st))
                            log("  !! %.1fs: %s lists %s as failed (Status 4): %s"
                                % (t - start, dc, names[other], ms))
                        elif st != STATUS_ALIVE:
                            odd_status[(dc, names[other], st)] += 1
                for fu in ff:
                    src, dst, t, el, ok, what = fu.result()
                    fwd[(src, dst)].append((t, el, ok, what))
                time.sleep(max(0.0, t_round + POLL_S - time.monotonic()))
        soak_end = time.monotonic()
        c1 = {dc: f.counters(dc) for dc in DCS}

        # ---- report
        stalls = f.stalls_between(start, soak_end)
        delayer = f.wan.counters()
        stall_held = sum(v.get("stall_held", 0) for v in delayer.values())
        log("\n  soak: %.0fs, %d rounds every %.0fs, %d total stalls of %ss inside it (at %s s), "
            "delayer: %d packets held by stalls"
            % (soak_end - start, rounds, POLL_S, len(stalls), f.wan.stall_s,
               ", ".join("%.0f" % (s - start) for s, _ in stalls), stall_held))
        log("  %-6s %8s %8s %10s %10s %10s   (counters over the soak; total since start)"
            % ("server", "probes", "timeouts", "suspicions", "failures", "forwards"))
        for dc in DCS:
            d = lambda k: c1[dc].get(k, 0) - c0[dc].get(k, 0)  # noqa: E731
            log("  %-6s %8d %8d %10d %10d %10d   (suspicions %d, failures %d)"
                % (dc, d("dcgate.wan.probes"), d("dcgate.wan.probe_timeouts"),
                   d("dcgate.wan.suspicions"), d("dcgate.wan.failures"),
                   d("dcgate.federation.forwards"), c1[dc].get("dcgate.wan.suspicions", 0),
                   c1[dc].get("dcgate.wan.failures", 0)))
        log("  ?dc= reads   ok/total   rate   p50     p90     max (s)  failures")
        for (s, d), rs in sorted(fwd.items()):
            oks = sum(1 for r in rs if r[2])
            els = [r[1] for r in rs]
            bad = collections.Counter(r[3] for r in rs if not r[2])
            log("  %-11s %4d/%-4d  %5.1f%%  %.3f   %.3f   %.3f   %s"
                % ("%s->%s" % (s, d), oks, len(rs), 100.0 * oks / max(1, len(rs)),
                   statistics.median(els), percentile(els, 0.9), max(els),
                   dict(bad) if bad else "-"))
        if odd_status or missing:
            log("  members neither alive nor failed: %s; not listed: %s"
                % (dict(odd_status), dict(missing)))

        # ---- assertions
        problems = []
        if failed_seen:
            problems.append("members listed as failed (Status 4) during the soak: %s" % failed_seen)
        for dc in DCS:
            n = c1[dc].get("dcgate.wan.failures", 0)
            if n:
                problems.append("%s's dcgate.wan.failures is %d (a member was declared failed)"
                                % (dc, n))
        if missing:
            problems.append("members missing from a members?wan=1 list: %s" % dict(missing))
        if local_errors:
            problems.append("local members?wan=1 requests failed: %s" % local_errors[:10])
        for pair, rs in sorted(fwd.items()):
            rate = sum(1 for r in rs if r[2]) / max(1, len(rs))
            if rate < FWD_MIN_RATE:
                problems.append("%s->%s: only %.1f%% of ?dc= reads succeeded (at least %.0f%% "
                                "required): %s" % (pair[0], pair[1], 100 * rate,
                                                   100 * FWD_MIN_RATE,
                                                   [r[3] for r in rs if not r[2]][:10]))
        checked = 0
        for i, (s0, s1) in enumerate(stalls):
            until = stalls[i + 1][0] if i + 1 < len(stalls) else soak_end
            if until - s1 < AFTER_STALL_MIN_S:
                continue
            checked += 1
            for pair, rs in sorted(fwd.items()):
                if not any(r[2] and s1 <= r[0] < until for r in rs):
                    problems.append("%s->%s: no ?dc= read succeeded between the end of the stall "
                                    "at %.0fs and %.0fs" % (pair[0], pair[1], s0 - start,
                                                            until - start))
        log("  every pair answered again after each of %d stalls checked: %s"
            % (checked, "no" if any("stall" in p for p in problems) else "yes"))
        if SOAK_S >= 2 * f.wan.stall_every_s and not stalls:
            problems.append("no stall fell inside a %.0fs soak (emulator epoch wrong?)" % SOAK_S)
        if stalls and stall_held == 0:
            problems.append("the delayers held no packet for a stall")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_2_kill9_marked_failed(self):
        f = self.f
        west = f.servers["west"]
        self.assertTrue(west.running(), "west's server is not running")
        for dc in ("dc1", "east"):
            ms = f.members(dc)
            self.assertEqual(ms.get(west.name), STATUS_ALIVE,
                             "%s does not list west alive before the kill: %s" % (dc, ms))
        c0 = {dc: f.counters(dc) for dc in ("dc1", "east")}
        t0 = time.monotonic()
        west.kill9()
        t_killed = time.monotonic() - t0
        marked = {}       # observer -> seconds from the kill to the first reply saying Status 4
        first_no_server = {}
        polls = 0
        deadline = t0 + 3 * FAIL_BOUND  # keep watching past the bound to report the real time

        def poll(dc):
            try:
                return dc, f.members(dc, timeout=2).get(west.name), time.monotonic() - t0
            except (OSError, ValueError) as e:
                return dc, e, time.monotonic() - t0

        def probe_fwd(dc):
            try:
                r = f.request(dc, "GET", "/v1/status/leader", timeout=5, dc_param="west")
                return dc, r.status, r.text.strip(), time.monotonic() - t0
            except (OSError, ValueError) as e:
                return dc, None, str(e), time.monotonic() - t0

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as ex:
            while time.monotonic() < deadline and len(marked) < 2:
                tick = time.monotonic()
                polls += 1
                futs = [ex.submit(poll, dc) for dc in ("dc1", "east") if dc not in marked]
                futs2 = [ex.submit(probe_fwd, dc) for dc in ("dc1", "east")
                         if dc not in first_no_server]
                for fu in futs:
                    dc, st, t = fu.result()
                    if st == STATUS_FAILED and dc not in marked:
                        marked[dc] = t
                for fu in futs2:
                    dc, status, text, t = fu.result()
                    if status == 500 and text == NO_SERVER and dc not in first_no_server:
                        first_no_server[dc] = t
                time.sleep(max(0.0, tick + KILL_POLL_S - time.monotonic()))
        c1 = {dc: f.counters(dc) for dc in ("dc1", "east")}
        log("\n  kill -9 west (%.2fs to reap): marked failed (Status 4) after %s; "
            "?dc=west first answered 500 %r after %s; %d polls every %.2fs"
            % (t_killed, {dc: "%.2fs" % t for dc, t in sorted(marked.items())}, NO_SERVER,
               {dc: "%.2fs" % t for dc, t in sorted(first_no_server.items())}, polls,
               KILL_POLL_S))
        for dc in ("dc1", "east"):
            log("  %s: suspicions +%d, failures +%d (total suspicions %d, failures %d)"
                % (dc, c1[dc].get("dcgate.wan.suspicions", 0) - c0[dc].get("dcgate.wan.suspicions", 0),
                   c1[dc].get("dcgate.wan.failures", 0) - c0[dc].get("dcgate.wan.failures", 0),
                   c1[dc].get("dcgate.wan.suspicions", 0), c1[dc].get("dcgate.wan.failures", 0)))
        for dc in ("dc1", "east"):
            self.assertIn(dc, marked, "%s never listed west as failed within %.0fs of the kill"
                          % (dc, 3 * FAIL_BOUND))
            self.assertLessEqual(marked[dc], FAIL_BOUND,
                                 "%s listed west as failed only %.2fs after the kill -9 (bound "
                                 "%.0fs)" % (dc, marked[dc], FAIL_BOUND))
        # now that west is failed everywhere: the error, at once
        for dc in ("dc1", "east"):
            for path in ("/v1/kv/wan/where", "/v1/catalog/services"):
                t = time.monotonic()
                r = f.request(dc, "GET", path, timeout=CLIENT_TIMEOUT, dc_param="west")
                el = time.monotonic() - t
                self.assertEqual((r.status, r.text.rstrip("\n")), (500, NO_SERVER),
                                 "GET %s?dc=west from %s after west failed: %r" % (path, dc, r))
                self.assertLess(el, ERROR_BOUND, "GET %s?dc=west from %s took %.2fs"
                                % (path, dc, el))
        # the survivors still reach each other
        for s, d in (("dc1", "east"), ("east", "dc1")):
            r, v = f.kv_get(d, "wan/where", via=s, timeout=CLIENT_TIMEOUT)
            self.assertEqual((r.status, v), (200, d), "?dc=%s from %s with west dead: %r"
                             % (d, s, r))


class PartitionTest(WanEmulatedBase):
    """Bullet 4: a DC cut off for 60 s and healed rejoins with no manual step, local queries keep
    working during the cut, nothing stored is lost. Same WAN figures as the soak (loss and the
    periodic total stall included)."""

    def wait_back(self, checks, t0, deadline, interval=1.0):
        """Runs every check fn(attempt) -> (ok, detail) every `interval` seconds, a new attempt
        even while earlier ones are still waiting (a forward on a link that is not back waits up
        to its 15 s), until each one succeeded once or the deadline passed. Meanwhile, every 5 s,
        the TCP state of dc1's and west's links to east (ss -tnoi) is kept, to show why a link
        is slow to come back. Returns ({name: seconds from t0 to the first success},
        {name: last detail}, [tcp snapshots])."""
        f = type(self).fed
        back, last, tcp_log = {}, {}, []
        lock = threading.Lock()
        east = f.wan.addr("east")

        def attempt(name, n):
            try:
                ok, detail = checks[name](n)
            except (OSError, ValueError, KeyError, IndexError) as e:
                ok, detail = False, str(e)[:150]
            t = time.monotonic() - t0
            with lock:
                if ok and name not in back:
                    back[name] = t
                last[name] = detail

        with concurrent.futures.ThreadPoolExecutor(max_workers=4 * len(checks)) as ex:
            n, futs, next_ss = 0, [], time.monotonic()
            while time.monotonic() < deadline:
                with lock:
                    todo = [c for c in checks if c not in back]
                if not todo:
                    break
                if time.monotonic() >= next_ss:
                    next_ss += 5
                    for dc in ("dc1", "west"):
                        try:
                            out = f.wan.run(dc, ["ss", "-tnoi", "dst", east], timeout=10,
                                            stdout=subprocess.PIPE, text=True).stdout
                            tcp_log.append("%.1fs %s -> east:\n%s" % (time.monotonic() - t0, dc,
                                                                       out.strip()))
                        except (OSError, subprocess.SubprocessError) as e:
                            tcp_log.append("%s: ss: %s" % (dc, e))
                n += 1
                futs = [fu for fu in futs if not fu.done()]
                if len(futs) < 3 * len(checks):
                    futs += [ex.submit(attempt, c, n) for c in todo]
                time.sleep(interval)
        return back, last, tcp_log

    def test_cut_east_60s_and_heal(self):
        f = type(self).fed
        wan = f.wan
        written = {dc: {} for dc in DCS}  # dc -> {key: value} acknowledged by that DC

        def put(dc, key, value, via=None, tries=1):
            last = None
            for _ in range(tries):
                try:
                    ok, r = f.kv_put(dc, key, value, via=via,
                                     timeout=CLIENT_TIMEOUT if via else LOCAL_TIMEOUT)
                    last = r
                    if ok:
                        written[dc][key] = value
                        return True, r
                except (OSError, ValueError) as e:
                    last = e
                time.sleep(0.5)
            return False, last

        # ---- before the cut: local keys in every DC, one forwarded write into east
        for dc in DCS:
            for i in range(5):
                ok, r = put(dc, "part/%s/before-%d" % (dc, i), "%s-before-%d" % (dc, i))
                self.assertTrue(ok, "local PUT in %s before the cut: %r" % (dc, r))
        ok, r = put("east", "part/east/from-dc1", "written-in-east-by-dc1", via="dc1", tries=5)
        self.assertTrue(ok, "PUT ?dc=east from dc1 before the cut: %r" % (r,))
        ok, r = put("dc1", "part/dc1/from-east", "written-in-dc1-by-east", via="east", tries=5)
        self.assertTrue(ok, "PUT ?dc=dc1 from east before the cut: %r" % (r,))

        # ---- the cut
        c0 = {dc: f.counters(dc) for dc in DCS}
        wan.partition("east", None, True)
        t_cut = time.monotonic()
        cut_end = t_cut + CUT_S
        local_fail = []                     # (t, dc, what)
        local_ok = collections.Counter()
        remote = collections.defaultdict(list)   # (src, dst) -> [(t, elapsed, status, text)]
        east_failed_at = {}                 # observer -> first time east listed failed
        stop = threading.Event()
        lock = threading.Lock()

        def local_loop(dc):
            n = 0
            while not stop.is_set() and time.monotonic() < cut_end:
                t = time.monotonic()
                n += 1
                key, val = "part/%s/during-%d" % (dc, n), "%s-during-%d" % (dc, n)
                try:
                    ok, r = put(dc, key, val)
                    if not ok:
                        raise ValueError("PUT %s: %r" % (key, r))
                    r, v = f.kv_get(dc, key)
                    if v != val:
                        raise ValueError("GET %s just written: %r" % (key, r))
                    r, v = f.kv_get(dc, "part/%s/before-0" % dc)
                    if v != "%s-before-0" % dc:
                        raise ValueError("GET before-0: %r" % r)
                    r = f.request(dc, "GET", "/v1/catalog/services")
                    if r.status != 200:
                        raise ValueError("GET /v1/catalog/services: %r" % r)
                    with lock:
                        local_ok[dc] += 1
                except (OSError, ValueError) as e:
                    with lock:
                        local_fail.append((round(t - t_cut, 1), dc, str(e)[:200]))
                stop.wait(max(0.0, t + 2.0 - time.monotonic()))

        def remote_loop(src, dst):
            while not stop.is_set() and time.monotonic() < cut_end:
                t = time.monotonic()
                try:
                    r = f.request(src, "GET", "/v1/kv/part/%s/before-0" % dst,
                                  timeout=CLIENT_TIMEOUT, dc_param=dst)
                    res = (r.status, r.text.strip()[:100])
                except (OSError, ValueError) as e:
                    res = (None, "client: %s" % str(e)[:150])
                with lock:
                    remote[(src, dst)].append((t - t_cut, time.monotonic() - t) + res)
                stop.wait(max(0.0, t + 2.0 - time.monotonic()))

        def members_loop(dc):
            while not stop.is_set() and time.monotonic() < cut_end:
                t = time.monotonic()
                try:
                    st = f.members(dc).get(f.servers["east"].name)
                    if st == STATUS_FAILED and dc not in east_failed_at:
                        with lock:
                            east_failed_at[dc] = t - t_cut
                except (OSError, ValueError):
                    pass
                stop.wait(max(0.0, t + 1.0 - time.monotonic()))

        threads = [threading.Thread(target=local_loop, args=(dc,)) for dc in DCS]
        threads += [threading.Thread(target=remote_loop, args=p)
                    for p in (("dc1", "east"), ("west", "east"), ("east", "dc1"))]
        threads += [threading.Thread(target=members_loop, args=(dc,)) for dc in ("dc1", "west")]
        for th in threads:
            th.start()
        try:
            for th in threads:
                # every request inside is bounded by CLIENT_TIMEOUT (+15 s for curl to exit)
                th.join(CUT_S + CLIENT_TIMEOUT + 30)
        finally:
            stop.set()
        hung = [th.name for th in threads if th.is_alive()]
        self.assertEqual(hung, [], "request loops still running after the cut")

        # ---- heal, then wait (bounded) for the pool to take east back with no manual step
        wan.heal_all()
        t_heal = time.monotonic()
        log("\n  cut east off for %.1fs" % (t_heal - t_cut))
        want = sorted(s.name for s in f.servers.values())

        def fwd_check(src, dst):
            def fn(n):
                # a distinct query per attempt, so attempts are not coalesced into one WAN
                # request (identical reads share one) and each one says how the WAN is now
                r, v = f.kv_get(dst, "part/%s/before-0?attempt=%d" % (dst, n), via=src,
                                timeout=CLIENT_TIMEOUT)
                return v == "%s-before-0" % dst, "%d %s" % (r.status, r.text.strip()[:80])
            return fn

        def alive_check(dc):
            def fn(n):
                alive = f.alive_view(dc)
                return alive == want, alive
            return fn

        checks = {"?dc=east from dc1": fwd_check("dc1", "east"),
                  "?dc=east from west": fwd_check("west", "east"),
                  "?dc=dc1 from east": fwd_check("east", "dc1")}
        for dc in DCS:
            checks["%s lists all alive" % dc] = alive_check(dc)
        back, last, tcp_log = self.wait_back(checks, t_heal, t_heal + REJOIN_BOUND)
        c1 = {dc: f.counters(dc) for dc in DCS}

        # ---- report
        log("  during the cut: local rounds ok %s, failed %d; east listed failed by %s"
            % (dict(local_ok), len(local_fail),
               {dc: "%.1fs" % t for dc, t in sorted(east_failed_at.items())}))
        for (s, d), rs in sorted(remote.items()):
            texts = collections.Counter("%s %s" % (r[2], r[3][:60]) for r in rs)
            els = [r[1] for r in rs]
            log("  ?dc=%s from %s during the cut: %d requests, slowest %.2fs, after 15 s all "
                "within %.2fs; answers %s" % (d, s, len(rs), max(els) if els else 0,
                                             max([r[1] for r in rs if r[0] > 15] or [0]),
                                             dict(texts)))
        log("  after the heal (s): %s" % {k: round(v, 1) for k, v in sorted(back.items())})
        for dc in DCS:
            log("  %s: suspicions +%d, failures +%d"
                % (dc, c1[dc].get("dcgate.wan.suspicions", 0) - c0[dc].get("dcgate.wan.suspicions", 0),
                   c1[dc].get("dcgate.wan.failures", 0) - c0[dc].get("dcgate.wan.failures", 0)))

        # ---- assertions: during the cut
        self.assertEqual(local_fail, [], "local requests failed during the cut")
        for dc in DCS:
            self.assertGreaterEqual(local_ok[dc], int(CUT_S / 2.0) // 2,
                                    "too few local rounds in %s during the cut" % dc)
        for (s, d), rs in sorted(remote.items()):
            self.assertTrue(rs, "no ?dc=%s request from %s during the cut" % (d, s))
            for t, el, status, text in rs:
                what = "?dc=%s from %s, %.1fs into the cut (%.2fs)" % (d, s, t, el)
                self.assertIsNotNone(status, "%s got no answer within %.0fs: %s"
                                     % (what, CLIENT_TIMEOUT, text))
                if status == 200 and t < 1.0:
                    continue  # sent before the first dropped packet could matter
                self.assertEqual(status, 500, "%s: %s %s" % (what, status, text))
                self.assertTrue(text in (NO_SERVER, NO_PATH) or text.startswith(RPC_ERROR),
                                "%s: %r" % (what, text))
        for dc in ("dc1", "west"):
            self.assertIn(dc, east_failed_at, "%s never listed east as failed during the %.0fs "
                          "cut" % (dc, CUT_S))

        # ---- after the heal
        # an attempt still in flight at the deadline is waited for and its success recorded,
        # but a success later than the bound does not count
        missing = sorted(c for c in checks if back.get(c, REJOIN_BOUND + 1) > REJOIN_BOUND)
        if tcp_log and not missing:
            log("  TCP links to east at the heal (ss -tnoi):\n%s" % "\n".join(tcp_log[:2]))
        if missing:
            log("  TCP links to east after the heal (ss -tnoi in dc1 and west):\n%s"
                % "\n".join(tcp_log))
        self.assertEqual(missing, [], "not back within %.0fs of the heal: %s (first success "
                         "after %s; last answer: %s)"
                         % (REJOIN_BOUND, missing, {k: back.get(k) for k in missing},
                            {k: last.get(k) for k in missing}))
        for dc in DCS:
            self.assertTrue(len(written[dc]) >= 6, written[dc])
            got = f.kv_tree(dc, "part/%s/" % dc)
            self.assertEqual(got, written[dc], "KV of %s read locally after the heal" % dc)
            for via in DCS:
                if via == dc:
                    continue
                got = f.kv_tree(dc, "part/%s/" % dc, via=via, timeout=CLIENT_TIMEOUT)
                self.assertEqual(got, written[dc], "KV of %s read from %s after the heal"
                                 % (dc, via))
        log("  KV after the heal: %s keys, all present with their values, read in each DC and "
            "from both others" % {dc: len(written[dc]) for dc in DCS})


if __name__ == "__main__":
    unittest.main()
