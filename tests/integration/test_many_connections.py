"""Many client connections ready at the same moment (http/mhd_loop.c).

libmicrohttpd's own epoll thread reads events 128 at a time and, after a full batch of 128, waits
again with its whole timeout: when exactly 128 (or 256, ...) keep-alive connections sent their
requests at once, it slept with all of them unread until another event or the 15 s idle timeout.
dcgate runs the daemon on a loop of its own. These tests send one request on each of N
connections, N around and at those multiples, while the agent is stopped (SIGSTOP), so that all N
are readable at once when it continues (SIGCONT), and need every answer well before MHD's 15 s
connection timeout; the same for N blocking queries that one write wakes at once (each answer
then goes through a resume)."""

import json
import os
import signal
import threading
import unittest

from harness import AgentTestCase, unb64, wait_until
from test_badinput import read_response
from test_events import parked

# Below MHD's 15 s idle timeout, far above what a burst takes when nothing stalls (milliseconds).
ROUND_TIMEOUT_S = 10.0


def request(addr, path):
    return ("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, addr)).encode()


class ManyConnectionsTest(AgentTestCase):
    def burst(self, socks, path, rounds):
        """Sends path on every socket, then reads every answer; rounds times. Returns the bodies
        of the last round."""
        req = request(self.a.addr, path)
        bodies = []
        for rnd in range(rounds):
            os.kill(self.a.proc.pid, signal.SIGSTOP)
            try:
                for s in socks:
                    s.sendall(req)
            finally:
                os.kill(self.a.proc.pid, signal.SIGCONT)
            bodies = []
            for i, s in enumerate(socks):
                status, raw = read_response(s, timeout=ROUND_TIMEOUT_S)
                self.assertEqual(status, 200, "round %d, connection %d of %d: %r"
                                 % (rnd, i, len(socks), raw[:200]))
                bodies.append(raw.partition(b"\r\n\r\n")[2])
        return bodies

    def test_bursts_at_multiples_of_128(self):
        self.assertOK(self.a.put("/v1/kv/many/conn", b"v128"))
        for n in (127, 128, 129, 256):
            socks = [self.a.raw_socket(timeout=ROUND_TIMEOUT_S) for _ in range(n)]
            try:
                bodies = self.burst(socks, "/v1/kv/many/conn", rounds=5)
                for b in bodies:
                    self.assertEqual(unb64(json.loads(b)[0]["Value"]), b"v128")
            finally:
                for s in socks:
                    s.close()

    def test_128_blocked_queries_woken_at_once(self):
        r = self.a.put("/v1/kv/many/watched", b"before")
        self.assertOK(r)
        r = self.a.get("/v1/kv/many/watched")
        index = int(r.headers["X-Consul-Index"])
        n = 128
        socks = [self.a.raw_socket(timeout=ROUND_TIMEOUT_S + 30) for _ in range(n)]
        try:
            req = request(self.a.addr, "/v1/kv/many/watched?index=%d&wait=30s" % index)
            for s in socks:
                s.sendall(req)
            # every query is parked before the write (a query that has not arrived yet would
            # simply see the new index and answer at once, which proves nothing)
            wait_until(lambda: parked(self.a) >= n, timeout=10, what="all %d queries parked" % n)
            results = [None] * n

            def read(i):
                results[i] = read_response(socks[i], timeout=ROUND_TIMEOUT_S)

            threads = [threading.Thread(target=read, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            self.assertOK(self.a.put("/v1/kv/many/watched", b"after"))
            for t in threads:
                t.join(ROUND_TIMEOUT_S + 5)
            for i, (status, raw) in enumerate(results):
                self.assertEqual(status, 200, "query %d: %r" % (i, raw[:200]))
                body = raw.partition(b"\r\n\r\n")[2]
                self.assertEqual(unb64(json.loads(body)[0]["Value"]), b"after", "query %d" % i)
        finally:
            for s in socks:
                s.close()


if __name__ == "__main__":
    unittest.main()
