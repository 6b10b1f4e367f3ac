#!/usr/bin/python3
"""bench/gossip_watch.py: polls GET /v1/agent/members on many agents at once for bench/gossip.sh
(stdlib only). One thread, non-blocking keep-alive sockets and a selector: 50 agents every 50 ms
is 1,000 requests a second, which threads or a curl per request would pay for in CPU taken from
the agents being measured.

  converge --agents A,B,.. --count N [--timeout S]
      polls every 250 ms until every agent lists N members, all alive (Status 1). Prints
      "converged <s> median=<s> last=<agent>" (the last agent to get there, and the median
      agent's time) or "notconverged <agent>:<alive>/<listed> ..." (exit 1).
  watch --agents A,B,.. --node X --pre P --want W [--health ADDR --health-pre HP --health-want HW]
      1. polls every 200 ms until every agent lists X with Status P (0: not listed), and the
         health answer of ADDR for X is HP; prints "ready <members listed by the first agent>"
         (or "notready ..." and exit 1 after --ready-timeout).
      2. waits for a line "go <t0>" on stdin, t0 being the wall-clock time (bash's
         $EPOCHREALTIME) taken just before the caller acts; then polls every --interval-ms,
         each agent until it lists X with Status W, ADDR until its answer is HW, at most
         --timeout s. Prints one line of key=value: first_ms all_ms reached health_ms polls
         errors cpu_s missing, then "agent <name> <ms>" per agent.
  Statuses are serf's: 1 alive, 2 leaving, 3 left, 4 failed. A health state is critical or
  passing (the serfHealth check of GET /v1/health/node/X) or absent (no checks: not in the
  catalog). Times are taken when an answer arrives: a figure is at most one interval late.

Agents are given as addresses (HTTP on port 8500); names come from --names in the same order.
"""

import argparse
import json
import os
import re
import selectors
import socket
import sys
import time

STATUS_RE = re.compile(rb'"Status":(\d+)')
REQ_TIMEOUT = 2.0  # s; a request not answered by then is dropped and counted as an error
MAX_BODY = 8 << 20


class Poller:
    """One keep-alive connection to one agent's HTTP API, one request in flight at a time."""

    def __init__(self, name, addr, path, port=8500):
        self.name, self.addr, self.port = name, addr, port
        self.req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: dcgate-bench\r\n\r\n"
                    % (path, addr, port)).encode()
        self.sock = None
        self.buf = bytearray()
        self.sent_at = None  # set while a request is in flight
        self.next_at = 0.0
        self.done_at = None
        self.errors = 0
        self.last = None  # the last answer's value, for the report of those not done
        self.lat = []  # seconds from each request to its answer

    def close(self, sel):
        if self.sock is not None:
            try:
                sel.unregister(self.sock)
            except (KeyError, ValueError):
                pass
            self.sock.close()
            self.sock = None
        self.buf.clear()
        self.sent_at = None

    def send(self, sel, now):
        if self.sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(0.5)
            try:
                s.connect((self.addr, self.port))  # loopback: at once, or refused
            except OSError:
                s.close()
                self.errors += 1
                return False
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock = s
            sel.register(s, selectors.EVENT_READ, self)
        try:
            self.sock.send(self.req)  # a few dozen bytes into an empty socket buffer
        except OSError:
            self.errors += 1
            self.close(sel)
            return False
        self.sent_at = now
        return True

    def read(self, sel):
        """Returns (status code, body) once a whole answer is in, else None."""
        try:
            chunk = self.sock.recv(262144)
        except BlockingIOError:
            return None
        except OSError:
            chunk = b""
        if not chunk:
            self.errors += 1
            self.close(sel)
            return None
        self.buf += chunk
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        length = None
        for line in head[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        if length is None or length > MAX_BODY:
            self.errors += 1  # dcgate always sends Content-Length
            self.close(sel)
            return None
        if len(self.buf) < end + 4 + length:
            return None
        code = int(head[0].split()[1])
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        self.lat.append(time.time() - self.sent_at)
        self.sent_at = None
        return code, body


def poll(pollers, interval, deadline, on_answer):
    """Polls each poller every interval s (spread evenly over the interval) until every one is
    done (on_answer(p, code, body, t) returned True) or the deadline; returns the answers."""
    sel = selectors.DefaultSelector()
    now = time.time()
    live = [p for p in pollers if p.done_at is None]
    for i, p in enumerate(live):
        p.next_at = now + interval * i / max(1, len(live))
    answers = 0
    try:
        while live and now < deadline:
            for p in live:
                if p.sent_at is not None and now - p.sent_at > REQ_TIMEOUT:
                    p.errors += 1
                    p.close(sel)
                    p.next_at = now
                if p.sent_at is None and now >= p.next_at:
                    p.next_at = max(p.next_at + interval, now)
                    p.send(sel, now)
            wake = min([p.next_at for p in live if p.sent_at is None] + [now + 0.05, deadline])
            events = sel.select(max(0.0, wake - time.time())) if len(sel.get_map()) else None
            if not events and not len(sel.get_map()):
                time.sleep(max(0.0, wake - time.time()))
            for key, _ in events or ():
                p = key.data
                if p.sock is None:
                    continue
                got = p.read(sel)
                if got is None:
                    continue
                answers += 1
                t = time.time()
                if on_answer(p, got[0], got[1], t):
                    p.done_at = t
                    p.close(sel)
            live = [p for p in live if p.done_at is None]
            now = time.time()
    finally:
        for p in pollers:
            p.close(sel)
        sel.close()
    return answers


def member_status(body, name):
    """Status of member name in a /v1/agent/members body, 0 when not listed. The object's keys
    come in a fixed order (Name, Addr, Port, Tags, Status, ...), so a search is enough; it
    falls back to parsing if the layout ever changes."""
    key = b'"Name":' + json.dumps(name).encode()
    i = body.find(key)
    while i >= 0 and body[i + len(key):i + len(key) + 1] not in (b",", b"}"):
        i = body.find(key, i + 1)
    if i < 0:
        return 0
    m = STATUS_RE.search(body, i)
    nxt = body.find(b'"Name":', i + len(key))
    if m and (nxt < 0 or m.start() < nxt):
        return int(m.group(1))
    for e in json.loads(body):
        if e.get("Name") == name:
            return int(e.get("Status", 0))
    return 0


def health_state(body):
    """critical / passing / other from the serfHealth check of /v1/health/node/X; absent when
    the node has no checks (it is not in the catalog)."""
    checks = json.loads(body)
    if not checks:
        return "absent"
    for c in checks:
        if c.get("CheckID") == "serfHealth":
            return c.get("Status", "?")
    return "no-serfHealth"


def cmd_converge(a, pollers):
    t0 = time.time()

    def on_answer(p, code, body, t):
        if code != 200:
            p.last = "http%d" % code
            return False
        ms = json.loads(body)
        alive = sum(1 for m in ms if m.get("Status") == 1)
        p.last = "%d/%d" % (alive, len(ms))
        return alive == a.count and len(ms) == a.count

    poll(pollers, 0.25, t0 + a.timeout, on_answer)
    left = [p for p in pollers if p.done_at is None]
    if left:
        print("notconverged " + " ".join("%s:%s" % (p.name, p.last or "no-answer") for p in left))
        return 1
    last = max(pollers, key=lambda p: p.done_at)
    times = sorted(p.done_at - t0 for p in pollers)
    print("converged %.2f median=%.2f last=%s" % (last.done_at - t0, times[len(times) // 2], last.name))
    return 0


def cmd_watch(a, pollers):
    health = None
    if a.health:
        health = Poller("health", a.health, "/v1/health/node/" + a.node)
    everyone = pollers + ([health] if health else [])
    listed = [None]

    def ready_answer(p, code, body, t):
        if code != 200:
            p.last = "http%d" % code
            return False
        if p is health:
            p.last = health_state(body)
            return p.last == a.health_pre
        if p is pollers[0]:
            listed[0] = len(json.loads(body))
        st = member_status(body, a.node)
        p.last = "status%d" % st
        return st == a.pre

    poll(everyone, 0.2, time.time() + a.ready_timeout, ready_answer)
    left = [p for p in everyone if p.done_at is None]
    if left:
        print("notready " + " ".join("%s:%s" % (p.name, p.last or "no-answer") for p in left),
              flush=True)
        return 1
    print("ready %s" % listed[0], flush=True)

    line = sys.stdin.readline()  # the caller bounds this wait (timeout behind this script)
    parts = line.split()
    if len(parts) != 2 or parts[0] != "go":
        print("error: expected 'go <t0>' on stdin, got %r" % line[:80], flush=True)
        return 1
    t0 = float(parts[1])
    for p in everyone:
        p.done_at = None
        p.last = None
        p.errors = 0
        p.lat = []
    cpu0 = os.times()

    def go_answer(p, code, body, t):
        if code != 200:
            p.last = "http%d" % code
            return False
        if p is health:
            p.last = health_state(body)
            return p.last == a.health_want
        st = member_status(body, a.node)
        p.last = "status%d" % st
        return st == a.want

    answers = poll(everyone, a.interval_ms / 1000.0, t0 + a.timeout, go_answer)
    cpu1 = os.times()
    lat = sorted(x for p in pollers for x in p.lat)
    done = [p.done_at for p in pollers if p.done_at is not None]
    fields = {
        "first_ms": "%.0f" % ((min(done) - t0) * 1000) if done else "-",
        "all_ms": "%.0f" % ((max(done) - t0) * 1000) if len(done) == len(pollers) else "-",
        "reached": "%d/%d" % (len(done), len(pollers)),
        "health_ms": ("%.0f" % ((health.done_at - t0) * 1000)
                      if health and health.done_at is not None else "-"),
        "polls": answers,
        "lat_p50_ms": "%.1f" % (lat[len(lat) // 2] * 1000) if lat else "-",
        "lat_p99_ms": "%.1f" % (lat[min(len(lat) - 1, len(lat) * 99 // 100)] * 1000) if lat else "-",
        "errors": sum(p.errors for p in everyone),
        "cpu_s": "%.2f" % (cpu1.user + cpu1.system - cpu0.user - cpu0.system),
        "missing": ",".join("%s:%s" % (p.name, p.last or "no-answer")
                            for p in everyone if p.done_at is None) or "-",
    }
    print(" ".join("%s=%s" % kv for kv in fields.items()))
    for p in pollers:
        print("agent %s %s" % (p.name, "%.0f" % ((p.done_at - t0) * 1000)
                               if p.done_at is not None else "-"))
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("converge", "watch"))
    ap.add_argument("--agents", required=True, help="comma-separated HTTP addresses (port 8500)")
    ap.add_argument("--names", required=True, help="comma-separated node names, same order")
    ap.add_argument("--count", type=int, default=0, help="converge: members every agent lists")
    ap.add_argument("--node", help="watch: the member watched")
    ap.add_argument("--pre", type=int, default=1, help="watch: its status before (0: absent)")
    ap.add_argument("--want", type=int, default=4, help="watch: its status after")
    ap.add_argument("--health", help="watch: a server's address for /v1/health/node/<node>")
    ap.add_argument("--health-pre", default="passing")
    ap.add_argument("--health-want", default="critical")
    ap.add_argument("--interval-ms", type=float, default=50)
    ap.add_argument("--ready-timeout", type=float, default=30)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    agents, names = a.agents.split(","), a.names.split(",")
    if len(agents) != len(names) or not agents:
        ap.error("--agents and --names must name as many agents")
    if not 10 <= a.interval_ms <= 1000 or not 0 < a.timeout <= 600 or not 0 < a.ready_timeout <= 600:
        ap.error("--interval-ms 10..1000, --timeout and --ready-timeout 0..600 s")
    pollers = [Poller(n, ad, "/v1/agent/members") for n, ad in zip(names, agents)]
    if a.mode == "converge":
        if a.count < 1:
            ap.error("converge needs --count")
        return cmd_converge(a, pollers)
    if not a.node:
        ap.error("watch needs --node")
    return cmd_watch(a, pollers)


if __name__ == "__main__":
    sys.exit(main())
