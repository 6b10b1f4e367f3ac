"""Bad input (DESIGN.md "Bad input and limits", consul-api.md §1.3, §6, §9): every bad request gets
a clear error or a closed connection; afterwards the agent still answers and earlier KV data is
intact."""

import json
import random
import socket
import unittest

from harness import AgentTestCase, unb64

SENTINELS = {"sentinel/a": b"alpha", "sentinel/b/c": bytes(range(256)), "sentinel/empty": b""}


def read_response(sock, limit=1 << 20, timeout=30.0):
    """Reads what the server sends until it closes or a full response has arrived. Returns
    (status, raw bytes): status is the HTTP status, None when the server closed (or reset) the
    connection without a response, or "timeout" when it neither answered nor closed in time."""
    sock.settimeout(timeout)
    buf = b""
    timed_out = False
    try:
        while len(buf) < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                m = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if m and len(body) >= int(m[0].split(b":", 1)[1]):
                    break
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        timed_out = True
    status = None
    if buf.startswith(b"HTTP/1."):
        try:
            status = int(buf.split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = None
    elif timed_out:
        status = "timeout"
    return status, buf


def rejected(status):
    """A bad request must get a 4xx/5xx answer or a closed connection (not silence)."""
    return status is None or (isinstance(status, int) and status >= 400)


class BadInputTest(AgentTestCase):
    def setUp(self):
        super().setUp()
        for k, v in SENTINELS.items():
            r = self.a.put("/v1/kv/" + k, v)
            self.assertOK(r)

    def assertHealthy(self):
        self.assertTrue(self.a.running(), "agent died\n" + self.a.log_tail())
        r = self.a.get("/v1/status/leader", timeout=10)
        self.assertOK(r)
        self.assertTrue(r.json())
        for k, v in SENTINELS.items():
            r = self.a.get("/v1/kv/" + k, timeout=10)
            self.assertOK(r, k)
            got = unb64(r.json()[0]["Value"])
            self.assertEqual(got if got is not None else b"", v, k)
        r = self.a.put("/v1/agent/service/register", {"Name": "still-alive"}, timeout=10)
        self.assertEmpty200(r)

    def send_raw(self, data, shutdown_write=False):
        s = self.a.raw_socket()
        try:
            try:
                s.sendall(data)
                if shutdown_write:
                    s.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                return None, b""
            return read_response(s)
        finally:
            s.close()

    def test_malformed_json(self):
        for path in ("/v1/agent/service/register", "/v1/agent/check/register", "/v1/catalog/register",
                     "/v1/session/create", "/v1/catalog/deregister"):
            for body in (b"{", b'{"Name": }', b"not json", b'{"Name":"x"', b"\xff\xfe\x00"):
                r = self.a.put(path, body)
                self.assertStatus(r, 400, "%s %r" % (path, body))
                self.assertTrue(r.text.startswith("Request decode failed: "), "%s %r -> %r" % (path, body, r))
        r = self.a.put("/v1/agent/service/register", {"Name": 5})
        self.assertStatus(r, 400)
        r = self.a.put("/v1/agent/service/register", [1, 2])
        self.assertStatus(r, 400)
        self.assertHealthy()

    def test_deep_nesting(self):
        for path in ("/v1/agent/service/register", "/v1/catalog/register", "/v1/txn", "/v1/session/create"):
            for body in (b"[" * 10000, b'{"a":' * 10000, b'{"Name":"deep","Meta":' + b"[" * 10000 + b"]" * 10000 + b"}"):
                r = self.a.put(path, body)
                self.assertStatus(r, 400, "%s depth %d" % (path, len(body)))
        r = self.a.get("/v1/agent/services")
        self.assertNotIn("deep", r.json())
        self.assertHealthy()

    def test_oversized_bodies(self):
        r = self.a.put("/v1/kv/sentinel/a", b"x" * (600 * 1024))
        self.assertStatus(r, 413)
        r = self.a.put("/v1/txn", b"[" + b" " * (2 * 1024 * 1024) + b"]")
        self.assertStatus(r, 413)
        ops = [{"KV": {"Verb": "set", "Key": "big/%d" % i, "Value": "QUFB" * 40000}} for i in range(10)]
        r = self.a.put("/v1/txn", json.dumps(ops).encode())
        self.assertStatus(r, 413)
        self.assertEqual(self.a.get("/v1/kv/big/0").status, 404)
        # A very large JSON body to an agent endpoint: rejected (4xx) or cut off, never stored.
        big = json.dumps({"Name": "huge", "Meta": {"k": "v" * (32 * 1024 * 1024)}}).encode()
        try:
            r = self.a.put("/v1/agent/service/register", big, timeout=60)
            self.assertIn(r.status, (400, 413), r)
        except (ConnectionResetError, BrokenPipeError):
            pass
        self.assertNotIn("huge", self.a.get("/v1/agent/services").json())
        self.assertHealthy()

    def test_huge_header(self):
        req = (b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (100 * 1024) + b"\r\n\r\n")
        status, raw = self.send_raw(req)
        self.assertTrue(status is None or (isinstance(status, int) and 400 <= status < 500),
                        "status %r: %r" % (status, raw[:200]))
        many = b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n" + b"".join(
            b"X-H%d: %s\r\n" % (i, b"b" * 90) for i in range(1200)) + b"\r\n"
        status, raw = self.send_raw(many)
        self.assertTrue(status is None or (isinstance(status, int) and 400 <= status < 500),
                        "status %r: %r" % (status, raw[:200]))
        long_url = b"GET /v1/kv/" + b"k" * (200 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        status, raw = self.send_raw(long_url)
        self.assertTrue(status is None or (isinstance(status, int) and 400 <= status < 500),
                        "status %r: %r" % (status, raw[:200]))
        self.assertHealthy()

    def test_garbage_bytes(self):
        rnd = random.Random(1234)
        for i in range(20):
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 4096)))
            status, raw = self.send_raw(data + b"\r\n\r\n", shutdown_write=True)
            self.assertTrue(rejected(status), "garbage %d (%r...) got %r %r" % (i, data[:16], status, raw[:200]))
        for data in (b"\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
                     b"PUT /v1/kv/sentinel/a HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nzz",
                     b"PUT /v1/kv/sentinel/a HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\nzz",
                     b"PUT /v1/kv/sentinel/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
                     b"GET /v1/kv/\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n"):
            status, raw = self.send_raw(data, shutdown_write=True)
            self.assertTrue(rejected(status), "%r got %r %r" % (data[:60], status, raw[:200]))
        self.assertHealthy()

    def test_partial_request_then_eof(self):
        # An unfinished request line (or a TLS ClientHello sent to the plain HTTP port, or bytes
        # starting with NUL), then the client half-closes: the server must answer or close the
        # connection, not hold it forever. All three wait at once; the deadline is generous
        # (the idle-connection timeout would also do).
        cases = (b"GET /v1/sta", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                 b"\x00\x01\x02garbage\r\n\r\n")
        socks = []
        try:
            for data in cases:
                s = self.a.raw_socket()
                socks.append(s)
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            for data, s in zip(cases, socks):
                status, raw = read_response(s, timeout=90)
                self.assertTrue(rejected(status), "%r got %r %r" % (data[:60], status, raw[:200]))
        finally:
            for s in socks:
                s.close()
        self.assertHealthy()

    def test_truncated_body(self):
        s = self.a.raw_socket()
        try:
            s.sendall(b"PUT /v1/kv/sentinel/a HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly-part")
            s.shutdown(socket.SHUT_WR)
            read_response(s)
        finally:
            s.close()
        self.assertHealthy()

    def test_many_idle_connections(self):
        socks = []
        try:
            for _ in range(100):  # below Consul's http_max_conns_per_client (200)
                try:
                    socks.append(self.a.raw_socket(timeout=5))
                except OSError:
                    break
            for s in socks[::2]:
                try:
                    s.sendall(b"GET /v1/status/le")
                except OSError:
                    pass
            self.assertHealthy()
        finally:
            for s in socks:
                s.close()
        self.assertHealthy()

    def test_bad_query_values(self):
        r = self.a.put("/v1/kv/q/k?flags=-1", b"v")
        self.assertStatus(r, 500)
        r = self.a.put("/v1/kv/q/k?cas=x", b"v")
        self.assertStatus(r, 500)
        r = self.a.get("/v1/kv/q/%ZZ")
        self.assertIn(r.status, (400, 404), r)
        self.assertHealthy()


if __name__ == "__main__":
    unittest.main()
