"""Slow clients (DESIGN.md "Bad input and limits"): clients that send one byte per second must not
hold up anyone else; the agent keeps answering other clients meanwhile, and when the slow
request finally completes it gets a proper answer (or the agent closed it on a timeout)."""

import socket
import threading
import time
import unittest

from harness import AgentTestCase, unb64
from test_badinput import read_response

SLOW_SECONDS = 6


class SlowClientTest(AgentTestCase):
    def test_one_byte_per_second(self):
        a = self.a
        self.assertOK(a.put("/v1/kv/slow/base", b"base"))
        body = b"slow-value"
        req = (b"PUT /v1/kv/slow/written HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
               % (a.addr.encode(), len(body), body))
        results = {"sent": 0, "closed_early": False}

        def slow(sock, data, n):
            """Sends the first n bytes one per second, then the rest at once."""
            try:
                for i in range(min(n, len(data))):
                    sock.sendall(data[i:i + 1])
                    results["sent"] += 1
                    time.sleep(1.0)
                sock.sendall(data[n:])
            except (BrokenPipeError, ConnectionResetError):
                results["closed_early"] = True

        # Several slow clients at once: one in the request line, one in the headers, one in the body.
        socks = [a.raw_socket(timeout=30) for _ in range(3)]
        header_end = req.index(b"\r\n\r\n") + 4
        starts = [0, header_end - SLOW_SECONDS - 2, header_end]
        threads = []
        for s, start in zip(socks, starts):
            s.sendall(req[:start])
            t = threading.Thread(target=slow, args=(s, req[start:], SLOW_SECONDS), daemon=True)
            t.start()
            threads.append(t)
        try:
            served = 0
            deadline = time.monotonic() + SLOW_SECONDS
            for i in range(200):
                if time.monotonic() >= deadline:
                    break
                r = a.get("/v1/kv/slow/base", timeout=10)
                self.assertOK(r, "while slow clients are sending")
                self.assertEqual(unb64(r.json()[0]["Value"]), b"base")
                r = a.put("/v1/kv/slow/fast-%d" % i, b"f", timeout=10)
                self.assertOK(r, "write while slow clients are sending")
                served += 1
                time.sleep(0.1)
            self.assertGreater(served, 3)
            for t in threads:
                t.join(SLOW_SECONDS + 20)
            statuses = []
            for s in socks:
                status, raw = read_response(s, timeout=20)
                statuses.append(status)
                self.assertIn(status, (200, 408, None), raw[:300])
        finally:
            for s in socks:
                s.close()
        if 200 in statuses:
            r = a.get("/v1/kv/slow/written")
            self.assertOK(r)
            self.assertEqual(unb64(r.json()[0]["Value"]), body)
        r = a.get("/v1/kv/slow/fast-0")
        self.assertOK(r)
        self.assertTrue(a.running())

    def test_slowloris_many(self):
        a = self.a
        socks = []
        try:
            for _ in range(50):
                s = a.raw_socket(timeout=10)
                s.sendall(b"GET /v1/status/leader HTTP/1.1\r\n")
                socks.append(s)
            for sec in range(SLOW_SECONDS):
                for s in socks:
                    try:
                        s.sendall(b"X-a: b\r\n")
                    except OSError:
                        pass
                r = a.get("/v1/status/leader", timeout=10)
                self.assertOK(r)
                time.sleep(1.0)
        finally:
            for s in socks:
                s.close()
        self.assertOK(a.get("/v1/agent/self"))


if __name__ == "__main__":
    unittest.main()
