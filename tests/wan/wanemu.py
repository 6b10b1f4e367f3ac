"""wanemu: put datacenters on an emulated WAN, for tests (Python face of tests/wan/wanemu.sh).

    from wanemu import WanEmu
    with WanEmu(dcs=["dc1", "east"], delay_ms=150, jitter_ms=30, loss_pct=5,
                stall_every_s=60, stall_s=3) as wan:
        p = wan.run_in("east", [dcgate, "agent", "-bind", wan.addr("east"), ...])
        wan.partition("dc1", "east", True)   # silent cut, both directions
        wan.partition("dc1", "east", False)
    # every namespace, process and rule is gone here, whatever happened inside

Each DC is a network namespace (its own lo, and wan0 with 10.254.<i>.1, .2, ... for the i-th DC);
packets between DCs are delayed by tests/wan/delayer on the receiving side (each direction gets
delay +- jitter), lost by nft (loss_pct on each direction) and held during the periodic total
stalls (all links stall together). Inside a DC, loopback and the DC's own addresses are not
delayed. Needs root and the delayer binary (`make` builds build/tests/wan/delayer).

Standard library only, so Debian's /usr/bin/python3 runs it. Every wait here is bounded.
"""

import atexit
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "wanemu.sh")
_seq = itertools.count()

# Exit status of `wanemu.sh check` when the kernel has no NFQUEUE: the one reason to skip.
CHECK_UNSUPPORTED = 3


class WanEmuError(RuntimeError):
    pass


def _sh(prefix, *args, timeout=60, check=True):
    env = dict(os.environ, WANEMU_QUIET="1")
    r = subprocess.run(["bash", SCRIPT, "--prefix", prefix, *args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise WanEmuError("wanemu.sh %s failed (exit %d): %s" % (" ".join(args), r.returncode,
                                                                 (r.stderr or r.stdout).strip()))
    return r


def check():
    """Can this machine run the emulator? Returns (status, message): status "ok", "unsupported"
    (the kernel lacks NFQUEUE: the message says why; a test may skip) or "error" (anything else
    is missing or broken: a test should fail, not skip)."""
    if os.geteuid() != 0:
        return "error", "the WAN emulator needs root (network namespaces, netfilter)"
    prefix = "dgw-p%dn%d-" % (os.getpid(), next(_seq))
    try:
        r = _sh(prefix, "check", timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "error", "wanemu.sh check: %s" % e
    msg = (r.stderr + r.stdout).strip()
    if r.returncode == 0:
        return "ok", msg
    if r.returncode == CHECK_UNSUPPORTED:
        return "unsupported", msg
    return "error", msg


def require():
    """For a test's setUpClass: returns when the emulator can run here; raises unittest.SkipTest
    only when the kernel lacks NFQUEUE, and RuntimeError when anything else is missing or broken
    (a test must fail then, not skip)."""
    import unittest
    status, msg = check()
    if status == "unsupported":
        raise unittest.SkipTest("WAN emulator: the kernel lacks NFQUEUE support: " + msg)
    if status != "ok":
        raise RuntimeError("WAN emulator cannot run here: " + msg)


def remove_stale():
    """Removes emulators left by Python processes that died without tearing down (their
    namespaces are named dgw-p<pid>n<k>-<dc>, and <pid> is gone)."""
    try:
        out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    stale = set()
    for line in out.splitlines():
        m = re.match(r"(dgw-p(\d+)n\d+-)[a-z0-9]+(\s|$)", line)
        if not m:
            continue
        try:
            os.kill(int(m.group(2)), 0)
        except ProcessLookupError:
            stale.add(m.group(1))
        except PermissionError:
            pass
    for prefix in stale:
        _sh(prefix, "down", check=False)


class WanEmu:
    """Namespaces for `dcs` datacenters (an int n gives names a, b, c, ...; or a list of names,
    [a-z0-9]{1,12}) on an emulated WAN. Figures are per direction of each link; `links` maps a
    pair (a, b) to (delay_ms, jitter_ms, loss_pct) to give one link other figures. Use as a
    context manager, or call start() and stop() (stop is idempotent and always safe)."""

    def __init__(self, dcs=2, delay_ms=150, jitter_ms=30, loss_pct=5, stall_every_s=60,
                 stall_s=3, addrs_per_dc=1, links=None, prefix=None):
        if isinstance(dcs, int):
            if not 2 <= dcs <= 16:
                raise ValueError("dcs: 2 to 16")
            dcs = [chr(ord("a") + i) for i in range(dcs)]
        self.dcs = list(dcs)
        self.delay_ms, self.jitter_ms, self.loss_pct = delay_ms, jitter_ms, loss_pct
        self.stall_every_s, self.stall_s = stall_every_s, stall_s
        self.addrs_per_dc = addrs_per_dc
        self.links = dict(links or {})
        self.prefix = prefix or "dgw-p%dn%d-" % (os.getpid(), next(_seq))
        self._procs = []
        self._up = False

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self):
        remove_stale()
        args = ["up", "--dcs", ",".join(self.dcs), "--delay", str(self.delay_ms),
                "--jitter", str(self.jitter_ms), "--loss", str(self.loss_pct),
                "--stall-every", str(self.stall_every_s if self.stall_s else 0),
                "--stall-for", str(self.stall_s if self.stall_every_s else 0),
                "--addrs", str(self.addrs_per_dc)]
        for (a, b), (d, j, l) in self.links.items():
            args += ["--link", "%s:%s:%s:%s:%s" % (a, b, d, j, l)]
        self._up = True
        atexit.register(self.stop)
        try:
            _sh(self.prefix, *args)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        """Stops the processes started with run_in, then removes namespaces, rules and delayers."""
        if not self._up:
            return
        for p in self._procs:
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for p in self._procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    pass
        for p in self._procs:
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        self._procs = []
        # wanemu.sh down also kills anything else still inside the namespaces.
        _sh(self.prefix, "down", timeout=60, check=False)
        self._up = False
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # --- naming --------------------------------------------------------------------------------
    def _index(self, dc):
        try:
            return self.dcs.index(dc) + 1
        except ValueError:
            raise KeyError("unknown DC %r (known: %s)" % (dc, ", ".join(self.dcs))) from None

    def ns(self, dc):
        """The network namespace of DC `dc`."""
        self._index(dc)
        return self.prefix + dc

    def addr(self, dc, k=1):
        """DC's k-th address (k from 1 to addrs_per_dc), reachable from every other DC."""
        if not 1 <= k <= self.addrs_per_dc:
            raise ValueError("k must be 1..%d" % self.addrs_per_dc)
        return "10.254.%d.%d" % (self._index(dc), k)

    def addrs(self, dc):
        return [self.addr(dc, k) for k in range(1, self.addrs_per_dc + 1)]

    def netns_argv(self, dc, argv):
        """The argv that runs `argv` inside DC's namespace (for callers that spawn themselves)."""
        return ["ip", "netns", "exec", self.ns(dc)] + list(argv)

    # --- processes -----------------------------------------------------------------------------
    def run_in(self, dc, argv, **popen_kw):
        """Starts argv inside DC's namespace; returns the Popen. The caller owns it, but stop()
        terminates it (and anything else left in the namespace) if it is still running."""
        p = subprocess.Popen(self.netns_argv(dc, argv), **popen_kw)
        self._procs.append(p)
        return p

    def run(self, dc, argv, timeout=60, **run_kw):
        """Runs argv inside DC's namespace to completion (subprocess.run, bounded by timeout)."""
        return subprocess.run(self.netns_argv(dc, argv), timeout=timeout, **run_kw)

    # --- faults --------------------------------------------------------------------------------
    def partition(self, a, b=None, on=True):
        """Cuts (on=True) or heals the link between a and b, both directions; with b None,
        between a and every other DC. Packets are dropped silently, as in a real cut."""
        args = ["partition", "on" if on else "off", a] + ([b] if b else [])
        _sh(self.prefix, *args)

    def heal_all(self):
        _sh(self.prefix, "partition", "off")

    # --- observation ---------------------------------------------------------------------------
    def status(self):
        """wanemu.sh status: addresses, partitions, nft and delayer counters, as text."""
        return _sh(self.prefix, "status").stdout

    def counters(self):
        """Delayer counters per direction: {(receiver, sender): {name: number}}."""
        out, cur = {}, None
        for line in self.status().splitlines():
            m = re.match(r"(\S+): namespace ", line)
            if m:
                cur = m.group(1)
                continue
            m = re.match(r"\s+from (\S+): (.*)", line)
            if m and cur:
                kv = dict(re.findall(r"(\w+)=([0-9.]+)", m.group(2)))
                out[(cur, m.group(1))] = {k: float(v) for k, v in kv.items()}
        return out

    def echo_server(self, dc, port):
        """Starts a TCP echo server on DC's first address and port; returns its Popen once it
        listens (stop() ends it, or the caller may kill it)."""
        server = self.run_in(dc, [sys.executable, "-c", _ECHO_SERVER, self.addr(dc), str(port)],
                             stdout=subprocess.PIPE, text=True)
        line = _readline(server, 10)
        if line.strip() != "ready":
            server.kill()
            server.wait(timeout=5)
            raise WanEmuError("echo server in %s did not start: %r" % (dc, line))
        return server

    def tcp_rtt(self, src, dst, samples=30, gap_s=0.05, port=7999, timeout=60):
        """Round trips of a 1-byte TCP echo from `src` to `dst` (one connection, TCP_NODELAY,
        gap_s between requests). Returns {"connect_ms": float, "rtt_ms": [float, ...]}.
        TCP, not ping: ICMP echo under-reports delay added at ingress."""
        server = self.echo_server(dst, port)
        try:
            r = self.run(src, [sys.executable, "-c", _ECHO_CLIENT, self.addr(dst), str(port),
                               str(samples), str(gap_s)], timeout=timeout,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise WanEmuError("echo client in %s failed: %s" % (src, r.stderr.strip()))
            return json.loads(r.stdout)
        finally:
            server.kill()
            server.wait(timeout=5)
            server.stdout.close()

    def tcp_connect(self, src, dst, port, timeout_s=2.0):
        """True when a TCP connect from src to dst:port succeeds within timeout_s (something must
        listen there; a refused connect is False too)."""
        code = ("import socket,sys\n"
                "try:\n socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))\n"
                "except OSError: sys.exit(1)\n")
        r = self.run(src, [sys.executable, "-c", code, self.addr(dst), str(port), str(timeout_s)],
                     timeout=timeout_s + 10)
        return r.returncode == 0


def _readline(p, timeout):
    """One line of p.stdout within timeout seconds ("" on timeout or EOF)."""
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if r else ""


_ECHO_SERVER = r"""
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        while True:
            d = c.recv(4096)
            if not d:
                return
            c.sendall(d)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

_ECHO_CLIENT = r"""
import json, socket, sys, time
host, port, n, gap = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t = time.monotonic()
c = socket.create_connection((host, port), timeout=20)
connect_ms = (time.monotonic() - t) * 1000
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for i in range(n):
    t = time.monotonic()
    c.sendall(b"x")
    if not c.recv(16):
        raise SystemExit("connection closed")
    rtts.append((time.monotonic() - t) * 1000)
    time.sleep(gap)
print(json.dumps({"connect_ms": connect_ms, "rtt_ms": rtts}))
"""


def summarize(rtts):
    s = sorted(rtts)
    n = len(s)
    return {"n": n, "min": s[0], "p10": s[n // 10], "median": statistics.median(s),
            "p90": s[min(n - 1, n * 9 // 10)], "max": s[-1]}


def _main(argv):
    """python3 wanemu.py rtt [samples] [delay jitter loss]: measures TCP round trips between two
    DCs on the emulated WAN and prints a summary."""
    if len(argv) < 1 or argv[0] != "rtt":
        print(_main.__doc__, file=sys.stderr)
        return 2
    samples = int(argv[1]) if len(argv) > 1 else 50
    d, j, l = (float(x) for x in argv[2:5]) if len(argv) >= 5 else (150, 30, 5)
    status, msg = check()
    if status != "ok":
        print(msg, file=sys.stderr)
        return 1
    with WanEmu(dcs=2, delay_ms=d, jitter_ms=j, loss_pct=l) as wan:
        r = wan.tcp_rtt("a", "b", samples=samples)
        s = summarize(r["rtt_ms"])
        print("delay %g+-%g ms each way, loss %g%%: connect %.0f ms; rtt n=%d min %.0f p10 %.0f "
              "median %.0f p90 %.0f max %.0f ms" % (d, j, l, r["connect_ms"], s["n"], s["min"],
                                                     s["p10"], s["median"], s["p90"], s["max"]))
        for k, v in sorted(wan.counters().items()):
            print("  delayer %s<-%s: received %d, hold p50 %d ms, p99 %d ms" % (
                k[0], k[1], v["received"], v["hold_ms_p50"], v["hold_ms_p99"]))
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))  # so the context manager tears down
    sys.exit(_main(sys.argv[1:]))
