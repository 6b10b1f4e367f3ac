#!/usr/bin/python3
"""bench/fed_watch.py: WAN bytes per remote watcher per change, for bench/federation.sh.

N clients (threads, one http.client connection each) block on the federating server (dc1) with
GET /v1/kv/<key>?dc=<remote>&index=<idx>&wait=60s; once all are parked (dc1 has N requests waiting
on the remote DC and the remote DC has the expected blocking queries parked), one PUT of the key
is made directly to the remote DC; every client must return with an X-Consul-Index above idx. The
WAN counters of dc1 (dcgate.wan.bytes_sent + dcgate.wan.bytes_received, /v1/agent/metrics) are
read before the clients start and after the last one returned; the background traffic of the
pool (probes, push-pull), measured as a rate over a quiet window before the rounds, is taken off;
what is left, divided by N, is the figure.

Two modes, in alternating rounds: "shared" (every client sends the identical query, which dcgate
coalesces into one WAN request) and "distinct" (client i adds &w=<i>, a query parameter the
remote server ignores, which makes every request distinct: N WAN requests, the anchor).

Prints `name value` lines on stdout (medians over the rounds, and per-round detail lines that
start with `round`); progress and errors on stderr. Exit status 1 when something broke (a client
got an error or no answer, an answer came before the write, a deadline passed). Stdlib only.
Every wait is bounded; only the two given loopback addresses are contacted.
"""

import argparse
import http.client
import json
import statistics
import sys
import threading
import time


def log(msg):
    print("bench: federation: watch: " + msg, file=sys.stderr, flush=True)


class Broken(Exception):
    pass


def split_hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


def request(addr, method, path, body=None, timeout=10.0):
    host, port = addr
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request(method, path, body=body)
        r = c.getresponse()
        data = r.read()
        return r.status, r.getheader("X-Consul-Index"), data
    finally:
        c.close()


def metrics(addr):
    status, _, data = request(addr, "GET", "/v1/agent/metrics", timeout=5.0)
    if status != 200:
        raise Broken("GET /v1/agent/metrics answered %d: %r" % (status, data[:200]))
    doc = json.loads(data)
    out = {}
    for g in doc.get("Gauges") or []:
        out[g["Name"]] = float(g["Value"])
    for c in doc.get("Counters") or []:
        out[c["Name"]] = float(c["Count"])
    return out


WAN_SENT = "dcgate.wan.bytes_sent"
WAN_RECV = "dcgate.wan.bytes_received"


def wan_bytes(m):
    if WAN_SENT not in m or WAN_RECV not in m:
        raise Broken("no %s / %s in /v1/agent/metrics" % (WAN_SENT, WAN_RECV))
    return m[WAN_SENT] + m[WAN_RECV]


def key_index(remote, key):
    status, idx, data = request(remote, "GET", "/v1/kv/%s" % key)
    if status != 200 or not idx:
        raise Broken("GET /v1/kv/%s on the remote DC answered %d: %r" % (key, status, data[:200]))
    return int(idx)


def one_round(a, mode, value, seq):
    n = a.watchers
    idx = key_index(a.remote, a.key)
    results = [None] * n  # (status, index, t_done) or an exception text
    m0 = metrics(a.dc1)
    b0, t0 = wan_bytes(m0), time.monotonic()

    def client(i):
        q = "/v1/kv/%s?dc=%s&index=%d&wait=60s" % (a.key, a.dc, idx)
        if mode == "distinct":
            q += "&w=%d" % i
        try:
            status, ix, _ = request(a.dc1, "GET", q, timeout=a.timeout)
            results[i] = (status, int(ix) if ix else None, time.monotonic())
        except Exception as e:  # noqa: BLE001 -- recorded and reported as broken
            results[i] = "%s: %s" % (type(e).__name__, e)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()

    # Parked: dc1 holds n requests waiting on the remote DC, the WAN carries 1 (shared) or n
    # (distinct), and the remote DC has that many blocking queries parked. Bounded.
    want_wan = 1 if mode == "shared" else n
    inflight_max = 0
    deadline = time.monotonic() + a.park_timeout
    parked_since = None
    while True:
        m1, mr = metrics(a.dc1), metrics(a.remote)
        inflight = m1.get("dcgate.federation.in_flight", -1)
        inflight_max = max(inflight_max, inflight)
        waiting = m1.get("dcgate.http.forwards_waiting", -1)
        remote_parked = mr.get("dcgate.http.waiters", -1)
        early = [r for r in results if r is not None]
        if early:
            raise Broken("%s round: %d answers came back before the write (first: %r)"
                         % (mode, len(early), early[0]))
        ok = waiting >= n and inflight >= want_wan and remote_parked >= want_wan
        now = time.monotonic()
        if ok:
            parked_since = parked_since or now
            if now - parked_since >= a.settle:
                break
        else:
            parked_since = None
        if now > deadline:
            raise Broken("%s round: not all parked after %.0f s (dc1 waiting %d of %d, "
                         "WAN in flight %d of %d, parked in the remote DC %d)"
                         % (mode, a.park_timeout, waiting, n, inflight, want_wan, remote_parked))
        time.sleep(0.05)

    # One change in the remote DC, made there directly (not over the WAN).
    # the same size, the last bytes before the value's closing `"}` (or its end) replaced
    tail = 2 if value.endswith(b'"}') else 0
    body = value[:len(value) - tail - len(seq)] + seq.encode() + value[len(value) - tail:]
    t_put = time.monotonic()
    status, _, data = request(a.remote, "PUT", "/v1/kv/%s" % a.key, body=body)
    if status != 200 or data.strip() != b"true":
        raise Broken("PUT /v1/kv/%s on the remote DC answered %d: %r" % (a.key, status, data[:200]))

    deadline = time.monotonic() + a.timeout + 5
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
        # in_flight is only sampled while parked; after the write it can only go down
    if any(t.is_alive() for t in threads):
        left = sum(1 for t in threads if t.is_alive())
        raise Broken("%s round: %d of %d clients had no answer %.0f s after the write"
                     % (mode, left, n, a.timeout + 5))
    bad = [r for r in results if not isinstance(r, tuple) or r[0] != 200 or not r[1] or r[1] <= idx]
    if bad:
        raise Broken("%s round: %d of %d answers were not a 200 with an index above %d (first: %r)"
                     % (mode, len(bad), n, idx, bad[0]))
    last = max(r[2] for r in results) - t_put
    m2 = metrics(a.dc1)
    b2, t2 = wan_bytes(m2), time.monotonic()
    return {
        "delta": b2 - b0,
        "secs": t2 - t0,
        "inflight_max": inflight_max,
        "coalesced": m2.get("dcgate.federation.coalesced", 0) - m0.get("dcgate.federation.coalesced", 0),
        "forwards": m2.get("dcgate.federation.forwards", 0) - m0.get("dcgate.federation.forwards", 0),
        "wake_ms": last * 1000.0,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dc1", required=True, help="host:port of the federating server's HTTP API")
    p.add_argument("--remote", required=True, help="host:port of the remote DC's HTTP API")
    p.add_argument("--dc", default="east", help="the remote DC's name")
    p.add_argument("--key", default="bench/watch")
    p.add_argument("--value-file", required=True, help="the key's value (written first)")
    p.add_argument("--watchers", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3, help="rounds of each mode, alternating")
    p.add_argument("--baseline", type=float, default=10.0, help="seconds of quiet to measure")
    p.add_argument("--settle", type=float, default=0.5, help="seconds all must stay parked")
    p.add_argument("--park-timeout", type=float, default=30.0)
    p.add_argument("--timeout", type=float, default=90.0, help="per client request")
    a = p.parse_args()
    a.dc1 = split_hostport(a.dc1)
    a.remote = split_hostport(a.remote)
    if not 1 <= a.watchers <= 5000 or not 1 <= a.rounds <= 20:
        print("fed_watch: --watchers 1..5000, --rounds 1..20", file=sys.stderr)
        return 2
    value = open(a.value_file, "rb").read()
    if len(value) < 16:
        print("fed_watch: the value must be at least 16 bytes", file=sys.stderr)
        return 2
    try:
        status, _, data = request(a.remote, "PUT", "/v1/kv/%s" % a.key, body=value)
        if status != 200:
            raise Broken("PUT /v1/kv/%s on the remote DC answered %d: %r" % (a.key, status, data[:200]))
        # the remote read through dc1 must work before anything is measured
        status, _, data = request(a.dc1, "GET", "/v1/kv/%s?dc=%s&raw" % (a.key, a.dc))
        if status != 200 or data != value:
            raise Broken("GET /v1/kv/%s?dc=%s&raw through dc1 answered %d: %r"
                         % (a.key, a.dc, status, data[:200]))

        log("background WAN traffic: %.0f s of quiet" % a.baseline)
        m0, t0 = metrics(a.dc1), time.monotonic()
        time.sleep(a.baseline)
        m1, t1 = metrics(a.dc1), time.monotonic()
        rate = (wan_bytes(m1) - wan_bytes(m0)) / (t1 - t0)
        print("background_bytes_per_s %.1f" % rate)

        per = {"shared": [], "distinct": []}
        inflight_shared = 0
        seq = 0
        for r in range(a.rounds):
            for mode in ("shared", "distinct"):
                seq += 1
                res = one_round(a, mode, value, "%08d" % seq)
                net = res["delta"] - rate * res["secs"]
                pw = net / a.watchers
                per[mode].append(pw)
                if mode == "shared":
                    inflight_shared = max(inflight_shared, res["inflight_max"])
                print("round %s %d watchers %d wan_bytes %.0f background %.0f secs %.2f "
                      "per_watcher %.1f inflight_max %.0f coalesced %.0f forwards %.0f wake_ms %.1f"
                      % (mode, r + 1, a.watchers, res["delta"], rate * res["secs"], res["secs"],
                         pw, res["inflight_max"], res["coalesced"], res["forwards"],
                         res["wake_ms"]), flush=True)
        print("shared_bytes_per_watcher %.2f" % statistics.median(per["shared"]))
        print("distinct_bytes_per_watcher %.2f" % statistics.median(per["distinct"]))
        print("shared_inflight_max %.0f" % inflight_shared)
    except Broken as e:
        log("BROKEN: %s" % e)
        return 1
    except (OSError, http.client.HTTPException, ValueError) as e:
        log("BROKEN: %s: %s" % (type(e).__name__, e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
