"""The HTTP API over HTTPS (ports.https), from the agent's certificate, with verify_incoming: only
clients presenting a certificate of the CA are served; plain HTTP on 8500 keeps working; TLS older
than 1.2 is refused.

The server certificate is made by `dcgate tls cert create -server -dc dc1 -additional-ipaddress
<agent address>`, so the clients here verify the server the ordinary way (the CA, and the
address they dialed in the certificate's SANs) instead of switching hostname checks off.

"Refused" means no HTTP answer at all: the TLS handshake fails, or the connection is closed
before a response. A request that neither gets an answer nor is closed within 30 s fails the test
(the bound is generous on purpose; nothing here measures time).
"""

import http.client
import json
import os
import socket
import ssl
import unittest
import warnings

from harness import Agent, AgentTestCase
from test_tls_matrix import CA, client_context, tls_config, write_json

HTTPS_PORT = 8501
ANSWER_TIMEOUT = 30.0


class HTTPSTest(AgentTestCase):
    pki = None

    @classmethod
    def start_agent(cls):
        a = Agent(name=cls.__name__, datacenter="dc1")
        try:
            root = os.path.join(a.tmpdir, "pki")
            cls.ca = CA(os.path.join(root, "ca"))
            cls.server = cls.ca.issue("server", "dc1", ips=[a.addr])
            cls.client = cls.ca.issue("client", "dc1")
            cls.foreign = CA(os.path.join(root, "foreign"))
            cls.foreign_client = cls.foreign.issue("client", "dc1")
            cfg = write_json(os.path.join(a.tmpdir, "tls.json"),
                             tls_config(cls.ca.cert, *cls.server, https_port=HTTPS_PORT))
            a.extra_args += ["-config-file", cfg]
            a.start()
        except Exception:
            a.close()
            raise
        return a

    # ------------------------------------------------------------------------ helpers
    def https_request(self, ctx, method="GET", path="/v1/status/leader", body=None):
        """(status, body bytes, headers) or (None, the exception) when refused."""
        c = http.client.HTTPSConnection(self.a.addr, HTTPS_PORT, timeout=ANSWER_TIMEOUT,
                                        context=ctx)
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return r.status, r.read(), r.headers
        except TimeoutError:
            self.fail("HTTPS %s %s: neither answered nor closed within %.0fs"
                      % (method, path, ANSWER_TIMEOUT))
        except (ssl.SSLError, ConnectionError, http.client.HTTPException, OSError) as e:
            return None, e, None
        finally:
            c.close()

    def good_ctx(self, **kw):
        return client_context(self.ca.cert, *self.client, **kw)

    def leader(self):
        return "%s:%d" % (self.a.addr, self.a.server_port)

    def assert_refused(self, ctx, what):
        status, detail, _ = self.https_request(ctx)
        self.assertIsNone(status, "%s was served: HTTP %s %r" % (what, status, detail))
        # the agent is fine and serves a good client right after
        self.assertTrue(self.a.running())
        status, body, _ = self.https_request(self.good_ctx())
        self.assertEqual(status, 200, body)
        return detail

    # ------------------------------------------------------------------------ tests
    def test_leader_with_client_certificate(self):
        status, body, headers = self.https_request(self.good_ctx())
        self.assertEqual(status, 200, body)
        self.assertTrue((headers.get("Content-Type") or "").startswith("application/json"), headers)
        self.assertEqual(json.loads(body), self.leader())

    def test_same_api_as_plain_http(self):
        status, body, _ = self.https_request(self.good_ctx(), "PUT", "/v1/kv/https/written",
                                             body=b"over-tls")
        self.assertEqual((status, body.strip()), (200, b"true"))
        r = self.a.get("/v1/kv/https/written?raw")
        self.assertEqual((r.status, r.body), (200, b"over-tls"))
        self.assertEqual(self.a.put("/v1/kv/https/plain", b"over-http").status, 200)
        status, body, _ = self.https_request(self.good_ctx(), path="/v1/kv/https/plain?raw")
        self.assertEqual((status, body), (200, b"over-http"))

    def test_no_client_certificate_refused(self):
        self.assert_refused(client_context(self.ca.cert), "a client without a certificate")

    def test_client_certificate_of_another_ca_refused(self):
        self.assert_refused(client_context(self.ca.cert, *self.foreign_client),
                            "a client certificate of another CA")

    def test_plain_http_still_served(self):
        r = self.a.get("/v1/status/leader")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), self.leader())

    def test_plain_http_on_https_port_not_served(self):
        s = socket.create_connection((self.a.addr, HTTPS_PORT), timeout=ANSWER_TIMEOUT)
        data = b""
        try:
            s.sendall(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n")
            while len(data) < 65536:
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    self.fail("plaintext on the HTTPS port: neither answered nor closed in %.0fs"
                              % ANSWER_TIMEOUT)
                except ConnectionError:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
        self.assertNotIn(self.leader().encode(), data, "the API answered plaintext on the HTTPS "
                         "port: %r" % data[:300])
        self.assertFalse(data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"), data)

    def _old_version_refused(self, version):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx = self.good_ctx(min_version=version, max_version=version,
                                ciphers="DEFAULT@SECLEVEL=0")
        detail = self.assert_refused(ctx, "a %s client" % version.name)
        self.assertIsInstance(detail, (ssl.SSLError, ConnectionError),
                              "%s: the TLS handshake must fail, got %r" % (version.name, detail))

    def test_tls11_refused(self):
        self._old_version_refused(ssl.TLSVersion.TLSv1_1)

    def test_tls10_refused(self):
        self._old_version_refused(ssl.TLSVersion.TLSv1)

    def test_tls12_and_tls13_served(self):
        for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            with self.subTest(v.name):
                status, body, _ = self.https_request(self.good_ctx(min_version=v, max_version=v))
                self.assertEqual(status, 200, "%s: %r" % (v.name, body))
                self.assertEqual(json.loads(body), self.leader())


if __name__ == "__main__":
    unittest.main()
