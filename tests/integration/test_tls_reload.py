"""Certificate rotation by SIGHUP (DESIGN.md "TLS and identity": "SIGHUP reloads certificates
without dropping live links").

A dc2 server starts with CA1's files: its configuration names three fixed paths (live/ca.pem,
live/cert.pem, live/key.pem) that hold copies of CA1's CA and dc2 server certificate. The rotation
replaces those files on disk with CA2's (each by rename, as a deploy tool would) and sends SIGHUP.

The "old established link" is a real WAN link opened before the reload: a req0 peer speaking nng's
wire format over a python ssl socket (SPPeer of test_tls_matrix, with CA1's east server
certificate). Unlike a `dcgate wan ping`, which dials afresh each time, this socket stays open
across the reload, so "it still works" is shown by a request answered on the very same TCP
connection afterwards, with the identity the listener verified at its handshake (PeerDatacenter
east) still attached. A dropped link would show as EOF or a reset on that socket; a reconnect is
impossible because nothing here reconnects. New handshakes after the reload must use CA2 only:
CA2's east gets in, CA1's east no longer does.

The same is checked for the HTTPS API: a keep-alive HTTPS connection made with CA1 answers after
the reload (http.client with auto_open off, so it cannot silently reconnect), while new HTTPS
connections see CA2's certificate.

A reload with broken files (a new certificate with the old key) must leave the agent running on its
old certificates and log an error; fixing the files and reloading through `PUT /v1/agent/reload`
(what `dcgate reload` calls) then rotates. That part goes beyond the interface as briefed and
follows Consul, which keeps its TLS configuration when a reload fails. After such a failed reload
the days-to-expiry gauge must still describe the certificate in use, not the refused file on disk
(its own test, so a failure there does not hide the recovery checks).

Every wait is bounded (wait_until); nothing asserts how long a step takes.
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import sys
import unittest

from harness import LEADER_TIMEOUT, Agent, wait_until
from test_tls_matrix import (CA, SANITIZED, WAN_PORT, AgentLog, SPPeer, client_context, days_gauges,
                             describe, tls_config, wan_ping, write_json)

HTTPS_PORT = 8501
RELOAD_TIMEOUT = 60.0 if SANITIZED else 20.0


class RotationBase(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        a = self.agent = Agent(name=type(self).__name__, datacenter="dc2")
        self.addCleanup(self._close_agent)
        self.log = AgentLog(a)
        root = os.path.join(a.tmpdir, "pki")
        # CA1's certificates for 200 days, CA2's for 30, so the days-to-expiry gauge tells them apart.
        self.ca1 = CA(os.path.join(root, "ca1"))
        self.ca1_dc2 = self.ca1.issue("server", "dc2", days=200, ips=[a.addr])
        self.ca1_east = self.ca1.issue("server", "east", days=200)
        self.ca1_client = self.ca1.issue("client", "dc2", days=200)
        self.ca2 = CA(os.path.join(root, "ca2"))
        self.ca2_dc2 = self.ca2.issue("server", "dc2", days=30, ips=[a.addr])
        self.ca2_east = self.ca2.issue("server", "east", days=30)
        self.ca2_client = self.ca2.issue("client", "dc2", days=30)
        self.live = os.path.join(root, "live")
        os.makedirs(self.live)
        self.live_ca, self.live_cert, self.live_key = (os.path.join(self.live, n) for n in
                                                       ("ca.pem", "cert.pem", "key.pem"))
        self.install(self.ca1.cert, self.ca1_dc2[0], self.ca1_dc2[1])
        cfg = write_json(os.path.join(a.tmpdir, "tls.json"),
                         tls_config(self.live_ca, self.live_cert, self.live_key,
                                    https_port=HTTPS_PORT))
        self.ping1 = write_json(os.path.join(root, "ping-ca1.json"),
                                tls_config(self.ca1.cert, *self.ca1_east, datacenter="east"))
        self.ping2 = write_json(os.path.join(root, "ping-ca2.json"),
                                tls_config(self.ca2.cert, *self.ca2_east, datacenter="east"))
        a.extra_args += ["-config-file", cfg]
        a.start()

    def _close_agent(self):
        # cleanups run before the result is reported; unittest's _Outcome knows if the test failed
        if not getattr(getattr(self, "_outcome", None), "success", True):
            sys.stderr.write("\n----- agent log tail (%s) for %s -----\n%s\n-----\n"
                             % (self.agent.log_path, self.id(), self.agent.log_tail(80)))
        self.agent.close()

    # ------------------------------------------------------------------------ helpers
    def install(self, ca, cert, key):
        """Replaces the live files, each by rename (a reader never sees half a file)."""
        for src, dst in ((ca, self.live_ca), (cert, self.live_cert), (key, self.live_key)):
            tmp = dst + ".new"
            shutil.copyfile(src, tmp)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dst)

    def sighup(self):
        self.assertTrue(self.agent.running(), self.agent.log_tail())
        mark = self.log.mark()
        self.agent.proc.send_signal(signal.SIGHUP)
        return mark

    def ping(self, cfg):
        return wan_ping(self.agent.addr, "dc2", cfg, cwd=self.agent.tmpdir)

    def assert_ping_ok(self, cfg, what):
        p = self.ping(cfg)
        self.assertEqual(p.returncode, 0, "%s: %s" % (what, describe(p)))
        v = json.loads(p.stdout)
        self.assertEqual((v.get("Datacenter"), v.get("PeerRole"), v.get("PeerDatacenter")),
                         ("dc2", "server", "east"), v)

    def assert_ping_refused(self, cfg, what):
        p = self.ping(cfg)
        self.assertEqual(p.returncode, 1, "%s must be refused: %s" % (what, describe(p)))
        self.assertEqual(p.stdout.strip(), "", describe(p))

    def wait_ping_ok(self, cfg, what):
        wait_until(lambda: self.ping(cfg).returncode == 0, RELOAD_TIMEOUT, interval=0.3, what=what)
        self.assert_ping_ok(cfg, what)

    def wait_reloaded(self, mark):
        """The agent's log says the reloaded certificates are in use: a line of module tls after
        the SIGHUP that mentions the reload and is not a warning or an error."""
        def found():
            for l in self.log.tls_lines(mark):
                if "[ERROR]" not in l and "[WARN]" not in l and \
                        any(w in l.lower() for w in ("reload", "loaded", "in use", "rotat")):
                    return l
            return None
        try:
            return wait_until(found, RELOAD_TIMEOUT, interval=0.1, what="a tls line about the reload")
        except AssertionError:
            self.fail("no tls line saying the reloaded certificates are in use; lines since the "
                      "SIGHUP:\n%s" % "\n".join(self.log.since(mark)[-30:]))

    def link(self, ca, cert_key):
        ctx = client_context(ca, *cert_key)
        p = SPPeer(self.agent.addr, WAN_PORT, ctx)
        self.addCleanup(p.close)
        v = p.connect()
        return p, v

    def https(self, ca, cert_key):
        """A keep-alive HTTPS connection that never reconnects by itself (auto_open off), with
        the server's name (its IP, in its certificate's SANs) checked."""
        ctx = client_context(ca, *cert_key) if cert_key else client_context(ca)
        c = http.client.HTTPSConnection(self.agent.addr, HTTPS_PORT, timeout=15, context=ctx)
        c.connect()
        c.auto_open = 0
        self.addCleanup(c.close)
        return c

    def https_get(self, c, path="/v1/status/leader"):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, body, r.getheader("Connection")


class WanRotationTest(RotationBase):
    def test_rotation_keeps_live_link_and_uses_new_ca(self):
        a = self.agent
        self.assert_ping_ok(self.ping1, "CA1's east before the reload")
        self.assert_ping_refused(self.ping2, "CA2's east before the reload")
        js, prom = days_gauges(a)
        self.assertTrue(js and prom, "no days-to-expiry metric: %r %r" % (js, prom))
        self.assertGreater(min(js.values()), 100, "CA1's certificates are good for 200 days: %r" % js)

        # the long-lived link, made with CA1 before the reload
        link, v = self.link(self.ca1.cert, self.ca1_east)
        self.assertTrue(v.accepted, v)
        before = json.loads(link.request(b"ping"))
        self.assertEqual(before.get("PeerDatacenter"), "east", before)

        self.install(self.ca2.cert, *self.ca2_dc2)
        mark = self.sighup()
        line = self.wait_reloaded(mark)
        self.wait_ping_ok(self.ping2, "CA2's east after the reload")
        self.assertTrue(a.running(), a.log_tail())
        print("\nreload logged as: %s" % line)

        # the old link carries on, on the same connection, with the identity verified at its start
        after = json.loads(link.request(b"ping"))
        self.assertEqual(after, before, "the established link answers as before the reload")

        # new handshakes use CA2 only: CA1's east is refused now (by both sides: the listener no
        # longer trusts CA1 and shows a certificate CA1's peer cannot verify)
        self.assert_ping_refused(self.ping1, "CA1's east after the reload")
        p2, v2 = self.link(self.ca2.cert, self.ca2_east)
        self.assertTrue(v2.accepted, "a new CA2 peer: %r" % v2)
        self.assertEqual(json.loads(p2.request(b"ping")).get("PeerDatacenter"), "east")
        p2.close()
        # a CA1 peer that trusts CA2 for the listener (so only its own certificate is at stake)
        mark = self.log.mark()
        p3, v3 = self.link(self.ca2.cert, self.ca1_east)
        self.assertFalse(v3.accepted, "a CA1 certificate after the rotation: %r" % v3)
        self.log.wait_tls(mark, "127.0.0.1", r"unknown ca|issuer|verify|untrusted|chain",
                          what="the reason for the CA1 certificate")

        js, prom = days_gauges(a)
        self.assertTrue(any(0 < x <= 31 for x in js.values()),
                        "after the reload the gauge shows CA2's 30-day certificate: %r" % js)
        self.assertTrue(any(0 < x <= 31 for x in prom.values()), prom)

        # and the old link still answers after all those new handshakes
        self.assertEqual(json.loads(link.request(b"ping")), before)
        self.assertTrue(a.running())


class HttpsRotationTest(RotationBase):
    def test_https_rotation_keeps_live_connection(self):
        a = self.agent
        old = self.https(self.ca1.cert, self.ca1_client)
        status, body, _ = self.https_get(old)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body), "%s:%d" % (a.addr, a.server_port))

        self.install(self.ca2.cert, *self.ca2_dc2)
        status, body, conn_hdr = self.https_get(old)  # fresh activity just before the reload
        self.assertEqual(status, 200, body)
        mark = self.sighup()
        self.wait_reloaded(mark)

        def new_ca2_ok():
            try:
                c = self.https(self.ca2.cert, self.ca2_client)
                return self.https_get(c)[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        wait_until(new_ca2_ok, RELOAD_TIMEOUT, interval=0.3, what="HTTPS with CA2 after the reload")

        # the connection made before the reload answers, on the same socket
        sock = old.sock
        status, body, _ = self.https_get(old)
        self.assertEqual(status, 200, body)
        self.assertIs(old.sock, sock, "the pre-reload HTTPS connection was replaced")
        self.assertEqual(json.loads(body), "%s:%d" % (a.addr, a.server_port))

        # new connections see CA2's certificate: a client trusting only CA1 cannot verify it
        with self.assertRaises(ssl.SSLCertVerificationError):
            self.https(self.ca1.cert, self.ca1_client)
        # and a CA1 client certificate no longer gets an answer
        try:
            c = self.https(self.ca2.cert, self.ca1_client)
            got = self.https_get(c)
        except (OSError, http.client.HTTPException):
            got = None
        self.assertIsNone(got, "a CA1 client certificate was served after the rotation")
        self.assertTrue(a.running())


class FailedReloadTest(RotationBase):
    def break_files(self):
        """CA2's CA and certificate, but the old (CA1) key: the certificate and key do not match."""
        self.install(self.ca2.cert, self.ca2_dc2[0], self.ca1_dc2[1])
        return self.sighup()

    def test_expiry_gauge_shows_loaded_certificate_after_failed_reload(self):
        """The days-to-expiry gauge describes the certificates in use (CA1's, 200 days), not the
        refused files now on disk (CA2's, 30 days): an operator alerting on it must see what is
        served. (The brief: "the days to expiry of each loaded certificate".)"""
        a = self.agent
        self.assertGreater(min(days_gauges(a)[0].values()), 100)
        mark = self.break_files()
        wait_until(lambda: any("[ERROR]" in l or "[WARN]" in l for l in self.log.since(mark)),
                   RELOAD_TIMEOUT, interval=0.1, what="the failed reload's error")
        self.assert_ping_ok(self.ping1, "CA1's east after a failed reload")  # still CA1 in use
        js, prom = days_gauges(a)
        self.assertTrue(js and prom, "no days-to-expiry gauge")
        self.assertGreater(min(js.values()), 100,
                           "after a failed reload the gauge must still show the loaded 200-day "
                           "certificate, not the files that were refused: %r" % js)
        self.assertGreater(min(prom.values()), 100, prom)

    def test_broken_files_keep_the_old_certificates(self):
        a = self.agent
        mark = self.break_files()

        def error_logged():
            for l in self.log.since(mark):
                if ("[ERROR]" in l or "[WARN]" in l) and \
                        any(w in l.lower() for w in ("reload", "certificate", "key")):
                    return l
            return None
        try:
            line = wait_until(error_logged, RELOAD_TIMEOUT, interval=0.1,
                              what="an error about the failed reload")
        except AssertionError:
            self.fail("no warning or error after reloading a certificate with the wrong key:\n%s"
                      % "\n".join(self.log.since(mark)[-30:]))
        print("\nfailed reload logged as: %s" % line)
        self.assertTrue(a.running(), "a failed reload must not stop the agent:\n" + a.log_tail())
        # all old, nothing half-new: CA1's peer still gets in, CA2's does not
        self.assert_ping_ok(self.ping1, "CA1's east after a failed reload")
        self.assert_ping_refused(self.ping2, "CA2's east after a failed reload")
        c = self.https(self.ca1.cert, self.ca1_client)
        self.assertEqual(self.https_get(c)[0], 200)

        # fixed files, reloaded through the HTTP API (what `dcgate reload` does)
        self.install(self.ca2.cert, *self.ca2_dc2)
        mark = self.log.mark()
        r = a.put("/v1/agent/reload")
        self.assertEqual(r.status, 200, r)
        self.wait_reloaded(mark)
        self.wait_ping_ok(self.ping2, "CA2's east after the fixed reload")
        self.assert_ping_refused(self.ping1, "CA1's east after the fixed reload")
        wait_until(lambda: a.get("/v1/status/leader").status == 200, LEADER_TIMEOUT,
                   what="the HTTP API after the reloads")


if __name__ == "__main__":
    unittest.main()
