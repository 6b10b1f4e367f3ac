"""`dcgate tls ca create` and `dcgate tls cert create` run as real processes in a temporary
directory: the files Consul's `consul tls` would write (names, modes), certificates that
`openssl verify` accepts with the names Consul puts in them, and Consul's error texts.
Contract: docs/tls.md. No agent is started; nothing touches the network.
"""

import os
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import dcgate_bin

# A sanitizer build runs much slower; a hung command still ends the test.
TIMEOUT = 120.0 if os.environ.get("DCGATE_SANITIZED") == "1" else 30.0

SERVER_WARNING = "==> WARNING: Server Certificates grants authority to become a\n"


class Result:
    def __init__(self, argv, p):
        self.argv, self.code = argv, p.returncode
        self.out = p.stdout.decode("utf-8", "replace")
        self.err = p.stderr.decode("utf-8", "replace")

    def __repr__(self):
        return "<%s: exit %d, stdout %r, stderr %r>" % (" ".join(self.argv), self.code,
                                                        self.out[:800], self.err[:800])


class TLSCLITest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="dcgate-tls-cli-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def tls(self, *args):
        argv = [dcgate_bin(), "tls"] + list(args)
        p = subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=TIMEOUT)
        return Result(argv, p)

    def ok(self, *args):
        r = self.tls(*args)
        self.assertEqual(r.code, 0, r)
        return r

    def fails(self, *args):
        r = self.tls(*args)
        self.assertEqual(r.code, 1, r)
        return r

    def path(self, name):
        return os.path.join(self.dir, name)

    def mode(self, name):
        return stat.S_IMODE(os.stat(self.path(name)).st_mode)

    def openssl(self, *args):
        p = subprocess.run(["openssl"] + list(args), cwd=self.dir, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=TIMEOUT)
        return p.returncode, p.stdout.decode("utf-8", "replace")

    def verify(self, cert, ca="consul-agent-ca.pem"):
        code, out = self.openssl("verify", "-CAfile", ca, cert)
        self.assertEqual(code, 0, out)
        self.assertIn("%s: OK" % cert, out)

    def ext(self, cert, name):
        code, out = self.openssl("x509", "-in", cert, "-noout", "-ext", name)
        self.assertEqual(code, 0, out)
        return out

    # ---- the CA ----

    def test_ca_create(self):
        r = self.ok("ca", "create")
        self.assertEqual(r.out, "==> Saved consul-agent-ca.pem\n==> Saved consul-agent-ca-key.pem\n")
        self.assertEqual(sorted(os.listdir(self.dir)),
                         ["consul-agent-ca-key.pem", "consul-agent-ca.pem"])
        self.assertEqual(self.mode("consul-agent-ca-key.pem"), 0o600)
        with open(self.path("consul-agent-ca-key.pem")) as f:
            self.assertEqual(f.readline(), "-----BEGIN EC PRIVATE KEY-----\n")
        code, out = self.openssl("x509", "-in", "consul-agent-ca.pem", "-noout", "-subject",
                                 "-ext", "basicConstraints,keyUsage")
        self.assertEqual(code, 0, out)
        self.assertIn("CN = Consul Agent CA ", out)
        self.assertIn("critical", out)
        self.assertIn("CA:TRUE", out)
        self.assertIn("Certificate Sign", out)
        self.assertIn("CRL Sign", out)
        # a self-signed CA verifies against itself
        self.verify("consul-agent-ca.pem")

        # never overwrites, with Consul's text
        r = self.fails("ca", "create")
        self.assertIn("consul-agent-ca.pem already exists.", r.err)
        self.assertEqual(r.out, "")

    def test_ca_options(self):
        r = self.ok("ca", "create", "-domain", "mesh", "-days=30", "-name-constraint",
                    "-additional-name-constraint", "example.org", "-common-name", "Test CA")
        self.assertIn("==> Saved mesh-agent-ca.pem", r.out)
        self.assertEqual(self.mode("mesh-agent-ca-key.pem"), 0o600)
        code, out = self.openssl("x509", "-in", "mesh-agent-ca.pem", "-noout", "-subject")
        self.assertIn("CN = Test CA", out)
        out = self.ext("mesh-agent-ca.pem", "nameConstraints")
        for name in ("DNS:example.org", "DNS:mesh", "DNS:localhost"):
            self.assertIn(name, out)
        # the constraint lets the domain's names through and stops the others
        self.ok("cert", "create", "-server", "-dc", "east", "-domain", "mesh")
        self.verify("east-server-mesh-0.pem", ca="mesh-agent-ca.pem")
        r = self.fails("cert", "create", "-server", "-dc", "east", "-domain", "mesh",
                       "-additional-dnsname", "www.example.com")
        self.assertIn("subtree", r.err)
        self.assertFalse(os.path.exists(self.path("east-server-mesh-1.pem")))

    # ---- certificates ----

    def test_server_cert(self):
        self.ok("ca", "create")
        r = self.ok("cert", "create", "-server", "-dc", "east")
        self.assertTrue(r.out.startswith(SERVER_WARNING), r)
        self.assertIn("==> Using consul-agent-ca.pem and consul-agent-ca-key.pem\n", r.out)
        self.assertTrue(r.out.endswith("==> Saved east-server-consul-0.pem\n"
                                       "==> Saved east-server-consul-0-key.pem\n"), r)
        self.assertEqual(self.mode("east-server-consul-0-key.pem"), 0o600)
        self.verify("east-server-consul-0.pem")
        san = self.ext("east-server-consul-0.pem", "subjectAltName")
        self.assertIn("DNS:server.east.consul, DNS:localhost, IP Address:127.0.0.1", san)
        eku = self.ext("east-server-consul-0.pem", "extendedKeyUsage")
        self.assertIn("TLS Web Server Authentication", eku)
        self.assertIn("TLS Web Client Authentication", eku)
        ku = self.ext("east-server-consul-0.pem", "keyUsage")
        self.assertIn("critical", ku)
        self.assertIn("Digital Signature, Key Encipherment", ku)

        # the number counts up; extra names and the node name go in too
        r = self.ok("cert", "create", "-server", "-dc", "east", "-node", "n1",
                    "-additional-dnsname", "east.example", "-additional-ipaddress", "10.0.0.7")
        self.assertIn("==> Saved east-server-consul-1.pem\n", r.out)
        self.assertEqual(self.mode("east-server-consul-1-key.pem"), 0o600)
        self.verify("east-server-consul-1.pem")
        san = self.ext("east-server-consul-1.pem", "subjectAltName")
        self.assertIn("DNS:east.example, DNS:n1.server.east.consul, DNS:server.east.consul, "
                      "DNS:localhost, IP Address:10.0.0.7, IP Address:127.0.0.1", san)

    def test_client_and_cli_certs(self):
        self.ok("ca", "create")
        r = self.ok("cert", "create", "-client", "-dc", "east")
        self.assertNotIn("WARNING", r.out)
        self.assertIn("==> Saved east-client-consul-0.pem\n", r.out)
        self.verify("east-client-consul-0.pem")
        san = self.ext("east-client-consul-0.pem", "subjectAltName")
        self.assertIn("DNS:client.east.consul, DNS:localhost, IP Address:127.0.0.1", san)
        self.assertIn("TLS Web Client Authentication", self.ext("east-client-consul-0.pem",
                                                                "extendedKeyUsage"))
        # -dc defaults to dc1, as in Consul
        r = self.ok("cert", "create", "-cli")
        self.assertIn("==> Saved dc1-cli-consul-0.pem\n==> Saved dc1-cli-consul-0-key.pem\n",
                      r.out)
        self.assertEqual(self.mode("dc1-cli-consul-0-key.pem"), 0o600)
        self.verify("dc1-cli-consul-0.pem")
        self.assertIn("DNS:cli.dc1.consul, DNS:localhost",
                      self.ext("dc1-cli-consul-0.pem", "subjectAltName"))

    def test_explicit_ca_files(self):
        os.mkdir(self.path("ca"))
        r = subprocess.run([dcgate_bin(), "tls", "ca", "create"], cwd=self.path("ca"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.ok("cert", "create", "-server", "-dc", "west", "-ca", "ca/consul-agent-ca.pem",
                    "-key", "ca/consul-agent-ca-key.pem")
        self.assertIn("==> Using ca/consul-agent-ca.pem and ca/consul-agent-ca-key.pem\n", r.out)
        self.verify("west-server-consul-0.pem", ca="ca/consul-agent-ca.pem")

    # ---- errors ----

    def test_cert_errors(self):
        r = self.fails("cert", "create")
        self.assertIn("Please provide either -server, -client, or -cli", r.err)
        r = self.fails("cert", "create", "-server", "-client", "-dc", "east")
        self.assertIn("Please provide either -server, -client, or -cli", r.err)
        r = self.fails("cert", "create", "-client", "-node", "n1")
        self.assertIn("-node requires -server", r.err)
        r = self.fails("cert", "create", "-server", "-ca=")
        self.assertIn("Please provide the ca", r.err)
        r = self.fails("cert", "create", "-server", "-key=")
        self.assertIn("Please provide the key", r.err)
        r = self.fails("cert", "create", "-server", "-dc", "east")
        self.assertIn("Error reading CA: open consul-agent-ca.pem: no such file or directory",
                      r.err)
        r = self.fails("cert", "create", "-server", "-nope")
        self.assertIn("Failed to parse args: flag provided but not defined: -nope", r.err)
        r = self.fails("cert", "create", "-server", "-days", "soon")
        self.assertIn('invalid value "soon" for flag -days', r.err)
        self.ok("ca", "create")
        r = self.fails("cert", "create", "-server", "-additional-ipaddress", "10.0.0")
        self.assertIn('invalid IP address "10.0.0"', r.err)
        os.remove(self.path("consul-agent-ca-key.pem"))
        r = self.fails("cert", "create", "-server")
        self.assertIn("Error reading CA key: open consul-agent-ca-key.pem: no such file or "
                      "directory", r.err)
        # nothing half made by any of the failures
        self.assertEqual(sorted(os.listdir(self.dir)), ["consul-agent-ca.pem"])

    def test_help_and_unknown(self):
        r = self.ok("cert", "create", "-h")
        self.assertIn("Usage: dcgate tls cert create", r.out)
        r = self.ok("ca", "create", "-help")
        self.assertIn("Usage: dcgate tls ca create", r.out)
        r = self.fails()
        self.assertIn("Usage: dcgate tls", r.err)
        r = self.fails("bogus")
        self.assertIn("Unknown subcommand: bogus", r.err)
        self.assertEqual(os.listdir(self.dir), [])


if __name__ == "__main__":
    unittest.main()
