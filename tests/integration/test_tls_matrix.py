"""Mutual TLS on the WAN port (DESIGN.md "TLS and identity"): one server of datacenter dc2 listens
on 127.0.0.N:8302, and every bad peer below is refused, with the reason in the agent's log, while a
good peer (a server certificate of datacenter east, from the same CA) keeps getting in after each.

How "refused" is told from "accepted" without guessing: the WAN port speaks nng's SP protocol over
TLS (tls+tcp://). nng's TLS transport sends its 8-byte SP header (00 'S' 'P' 00, the protocol
number 0x31 of rep0, 00 00) as the first thing after the handshake. A peer that is let in reads that
header; a refused one gets a TLS alert, an EOF or a reset instead. With TLS 1.3 a client whose
certificate the server rejects finishes its side of the handshake before the server's verdict
arrives, so "the handshake returned" proves nothing; "the SP header never came" does. Python's ssl
module (Debian's /usr/bin/python3, OpenSSL 3) plays such a peer (SPPeer below), and the good one
goes on to a full request/reply (rep0 framing: 64-bit length, 32-bit request id, body) so the
method is checked against a real answer too.

Certificates: the CA and the ordinary server/client certificates are made by `dcgate tls ca create`
and `dcgate tls cert create`; what dcgate cannot make (expired, not yet valid, serverAuth only) is
made here with python3-cryptography, signed by the same CA's key. "Unknown CA" is a second CA made
by dcgate, so its certificate is well formed in every other respect.

Reasons in the log: each bad peer dials from its own loopback source address (a leased 127.0.0.M),
so the log line about it is found by that address; `openssl s_client` cannot pick its source, so
its cases look for 127.0.0.1. The stalled handshake is bounded by a generous 60 s (behaviour, not
timing: the test only asserts that the server frees the connection at all, and that good peers get
in meanwhile). Stalled handshakes and a peer silent after its handshake each get an agent of their
own (TLSStallTest, TLSSilentPeerTest), and after the server has cut them a *new* link must still be
answered: a link opened earlier keeps working even when the listener has stopped taking new ones,
so only a fresh link shows that.

The other TLS test files import the helpers from this module (PKI, SPPeer, wan_ping, AgentLog).
"""

import datetime
import ipaddress
import json
import os
import random
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
import unittest

from harness import Agent, AgentTestCase, AddressLease, dcgate_bin, wait_until

SANITIZED = os.environ.get("DCGATE_SANITIZED") == "1"
CLI_TIMEOUT = 120.0 if SANITIZED else 30.0
# How long a refused peer may wait for the server's verdict (an alert or a close).
VERDICT_TIMEOUT = 40.0 if SANITIZED else 15.0
# How long the agent may take to write its log line about a refused peer.
LOG_TIMEOUT = 30.0 if SANITIZED else 10.0
# The generous bound for a stalled handshake to be cut by the server.
STALL_BOUND = 60.0
WAN_PORT = 8302

SP_REQ_HEADER = b"\x00SP\x00\x00\x30\x00\x00"  # req0 (0x30), what a dialing peer sends
SP_REP_HEADER = b"\x00SP\x00\x00\x31\x00\x00"  # rep0 (0x31), what the WAN listener sends
SP_MAGIC = b"\x00SP\x00"


# ------------------------------------------------------------------------------------ processes
def run_dcgate(args, cwd, timeout=CLI_TIMEOUT):
    """Runs `dcgate <args>` in cwd; returns the CompletedProcess (stdout/stderr as text)."""
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("CONSUL_") or k.startswith("DCGATE_HTTP"):
            env.pop(k)
    return subprocess.run([dcgate_bin()] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          env=env, universal_newlines=True)


def describe(p):
    return "<%s: exit %s\nstdout: %s\nstderr: %s>" % (" ".join(p.args[1:]), p.returncode,
                                                       p.stdout[-1500:], p.stderr[-3000:])


# ------------------------------------------------------------------------------------ PKI
class CA:
    """A CA made by `dcgate tls ca create` in its own directory, and certificates from it.

    Certificates are made by `dcgate tls cert create` (names found by what appears in the
    directory, so the -0/-1 numbering is not assumed) or, for what dcgate refuses to make, with
    python3-cryptography signed by this CA's key."""

    def __init__(self, directory, days=None):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        args = ["tls", "ca", "create"]
        if days is not None:
            args += ["-days", str(days)]
        p = run_dcgate(args, cwd=directory)
        if p.returncode != 0:
            raise RuntimeError("dcgate tls ca create failed: %s" % describe(p))
        self.cert = os.path.join(directory, "consul-agent-ca.pem")
        self.key = os.path.join(directory, "consul-agent-ca-key.pem")
        for f in (self.cert, self.key):
            if not os.path.isfile(f):
                raise RuntimeError("dcgate tls ca create did not write %s: %s" % (f, describe(p)))

    def issue(self, role, dc, days=None, dns=(), ips=()):
        """`dcgate tls cert create -server|-client -dc dc`; returns (cert, key) paths."""
        before = set(os.listdir(self.dir))
        args = ["tls", "cert", "create", "-" + role, "-dc", dc]
        if days is not None:
            args += ["-days", str(days)]
        for d in dns:
            args += ["-additional-dnsname", d]
        for ip in ips:
            args += ["-additional-ipaddress", ip]
        p = run_dcgate(args, cwd=self.dir)
        if p.returncode != 0:
            raise RuntimeError("dcgate tls cert create failed: %s" % describe(p))
        new = sorted(set(os.listdir(self.dir)) - before)
        keys = [f for f in new if f.endswith("-key.pem")]
        certs = [f for f in new if f.endswith(".pem") and not f.endswith("-key.pem")]
        prefix = "%s-%s-consul-" % (dc, role)
        if len(keys) != 1 or len(certs) != 1 or not certs[0].startswith(prefix):
            raise RuntimeError("expected one %s*.pem and its -key.pem, got %r: %s"
                               % (prefix, new, describe(p)))
        return os.path.join(self.dir, certs[0]), os.path.join(self.dir, keys[0])

    def forge(self, name, dns, not_before, not_after, usages=("server", "client")):
        """A certificate made here (python3-cryptography), signed by this CA's key, with SANs dns +
        127.0.0.1 and the given validity (naive UTC datetimes) and extended key usages."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        with open(self.cert, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
        with open(self.key, "rb") as f:
            ca_key = serialization.load_pem_private_key(f.read(), password=None)
        key = ec.generate_private_key(ec.SECP256R1())
        eku = {"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}
        sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0])]))
                .issuer_name(ca_cert.subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(not_before)
                .not_valid_after(not_after)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False,
                                             crl_sign=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([eku[u] for u in usages]), critical=False)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path = os.path.join(self.dir, "forged-%s.pem" % name)
        key_path = os.path.join(self.dir, "forged-%s-key.pem" % name)
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(key_path, 0o600)
        return cert_path, key_path


def utcnow():
    return datetime.datetime.utcnow().replace(microsecond=0)


def tls_config(ca, cert, key, datacenter=None, verify_incoming=True, https_port=None,
               extra=None):
    """An agent (or `wan ping`) config in Consul's keys."""
    c = {"tls": {"defaults": {"ca_file": ca, "cert_file": cert, "key_file": key,
                              "verify_incoming": verify_incoming, "verify_outgoing": True},
                 "internal_rpc": {"verify_server_hostname": True}},
         "ports": {"serf_wan": WAN_PORT}}
    if datacenter:
        c["datacenter"] = datacenter
    if https_port:
        c["ports"]["https"] = https_port
    if extra:
        c.update(extra)
    return c


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
    return path


def wan_ping(addr, dc, config_path, cwd, port=WAN_PORT):
    """`dcgate wan ping -address addr:8302 -dc dc -config-file config_path`."""
    return run_dcgate(["wan", "ping", "-address", "%s:%d" % (addr, port), "-dc", dc,
                       "-config-file", config_path], cwd=cwd)


# ------------------------------------------------------------------------------------ TLS peers
def client_context(ca=None, cert=None, key=None, min_version=None, max_version=None,
                   ciphers=None, verify=True):
    """A client SSLContext: trusts ca (and checks the server's name) when verify, presents
    cert/key when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    if verify:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


class Verdict:
    """What became of one connection attempt: accepted (the SP header arrived) or refused, and
    how (detail)."""

    def __init__(self, accepted, detail, src):
        self.accepted, self.detail, self.src = accepted, detail, src

    def __repr__(self):
        return "<%s from %s: %s>" % ("accepted" if self.accepted else "refused",
                                      "%s:%d" % self.src, self.detail)


def _recv_exact(sock, n, deadline):
    buf = b""
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("read %d of %d bytes before the deadline" % (len(buf), n))
        sock.settimeout(left)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("closed by the server after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


class SPPeer:
    """A req0 peer over TLS to a WAN listener, written against nng's wire format so a connection
    can be held open and used at will (for the reload test's "established link").

    connect() returns a Verdict; when accepted, request(payload) sends one rep0 request and returns
    the reply body."""

    def __init__(self, addr, port, ctx, server_hostname="server.dc2.consul", src=None):
        self.addr, self.port, self.ctx, self.hostname, self.src = addr, port, ctx, server_hostname, src
        self.sock = None
        self.req_id = 0x80000000 | random.Random().randrange(1, 1 << 20)

    def connect(self, timeout=VERDICT_TIMEOUT):
        deadline = time.monotonic() + timeout
        raw = socket.create_connection((self.addr, self.port), timeout=timeout,
                                       source_address=(self.src, 0) if self.src else None)
        src = raw.getsockname()
        try:
            try:
                s = self.ctx.wrap_socket(raw, server_hostname=self.hostname)
            except TimeoutError:
                raise AssertionError("TLS handshake with %s:%d neither finished nor failed in %.0fs"
                                     % (self.addr, self.port, timeout))
            except (ssl.SSLError, OSError) as e:
                return Verdict(False, "handshake failed: %s" % e, src)
            self.sock = s
            try:
                s.sendall(SP_REQ_HEADER)
                got = _recv_exact(s, len(SP_REP_HEADER), deadline)
            except TimeoutError:
                raise AssertionError("after the handshake the server neither sent the SP header "
                                     "nor closed the connection in %.0fs" % timeout)
            except EOFError as e:
                return Verdict(False, str(e), src)
            except (ssl.SSLError, ConnectionError) as e:
                return Verdict(False, "%s: %s" % (type(e).__name__, e), src)
            if got != SP_REP_HEADER:
                raise AssertionError("unexpected first bytes after the handshake: %r" % got)
            raw = None
            return Verdict(True, "SP header %r" % got, src)
        finally:
            if raw is not None:
                self.close()
                raw.close()

    def request(self, payload=b"ping", timeout=VERDICT_TIMEOUT):
        """One request/reply on the open connection; returns the reply body (without the id)."""
        self.req_id = 0x80000000 | ((self.req_id + 1) & 0x7FFFFFFF)
        body = struct.pack(">I", self.req_id) + payload
        self.sock.settimeout(timeout)
        self.sock.sendall(struct.pack(">Q", len(body)) + body)
        deadline = time.monotonic() + timeout
        n = struct.unpack(">Q", _recv_exact(self.sock, 8, deadline))[0]
        if n > 1 << 20:
            raise AssertionError("reply of %d bytes" % n)
        reply = _recv_exact(self.sock, n, deadline)
        if reply[:4] != struct.pack(">I", self.req_id):
            raise AssertionError("reply for request id %r, sent %08x" % (reply[:4], self.req_id))
        return reply[4:]

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def wait_closed(sock, timeout):
    """Reads (and drops) whatever the server sends until it closes; returns (closed, data)."""
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline and len(data) < 1 << 20:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionError:
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


def client_hello():
    """The bytes of a real TLS ClientHello (Python's default client), made in memory."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="server.dc2.consul")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello


def s_client(addr, port, ca, extra, timeout=VERDICT_TIMEOUT + 15):
    """`openssl s_client` against addr:port, stdin at EOF, kept reading until the server closes.
    Returns (returncode, stdout bytes, stderr text)."""
    argv = ["openssl", "s_client", "-connect", "%s:%d" % (addr, port), "-servername",
            "server.dc2.consul", "-CAfile", ca, "-ign_eof"] + list(extra)
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("openssl s_client %s: the server kept the connection open for %.0fs "
                             "(output %r)" % (" ".join(extra), timeout, (e.stdout or b"")[-500:]))
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


# ------------------------------------------------------------------------------------ the log
class AgentLog:
    """Reads an agent's log from a mark on, for the lines one case caused."""

    LINE_TLS = re.compile(r"\]\s+tls:\s")

    def __init__(self, agent):
        self.agent = agent

    def mark(self):
        try:
            return os.path.getsize(self.agent.log_path)
        except OSError:
            return 0

    def since(self, offset):
        with open(self.agent.log_path, "rb") as f:
            f.seek(offset)
            return f.read(4 << 20).decode("utf-8", "replace").splitlines()

    def tls_lines(self, offset, mentioning=None):
        out = [l for l in self.since(offset) if self.LINE_TLS.search(l)]
        if mentioning:
            pat = re.compile(re.escape(mentioning) + r"(?![0-9])")
            out = [l for l in out if pat.search(l)]
        return out

    def wait_tls(self, offset, mentioning, reason_re=None, timeout=LOG_TIMEOUT, what="a tls line"):
        """Waits for a tls line mentioning the address (and matching reason_re); returns it."""
        rx = re.compile(reason_re, re.I) if reason_re else None

        def found():
            for l in self.tls_lines(offset, mentioning):
                if rx is None or rx.search(l):
                    return l
            return None
        try:
            return wait_until(found, timeout, interval=0.1, what=what)
        except AssertionError:
            raise AssertionError("no log line of module tls mentioning %s%s within %.0fs; the tls "
                                 "lines since the case began:\n%s"
                                 % (mentioning, " and matching /%s/" % reason_re if reason_re else "",
                                    timeout, "\n".join(self.tls_lines(offset)[-20:]) or "(none)"))


def days_gauges(agent):
    """{name+labels: value} of the metrics whose name contains "days", from the JSON and the
    Prometheus forms of /v1/agent/metrics."""
    r = agent.get("/v1/agent/metrics")
    if r.status != 200:
        raise AssertionError("GET /v1/agent/metrics: %r" % r)
    js = {}
    for g in r.json().get("Gauges") or []:
        if "days" in g.get("Name", "").lower():
            js["%s%s" % (g["Name"], json.dumps(g.get("Labels") or {}, sort_keys=True))] = g["Value"]
    r = agent.get("/v1/agent/metrics?format=prometheus")
    if r.status != 200:
        raise AssertionError("GET /v1/agent/metrics?format=prometheus: %r" % r)
    prom = {}
    for line in r.text.splitlines():
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m and "days" in m.group(1).lower():
            prom[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return js, prom


# ------------------------------------------------------------------------------------ fixture
class WanPKI:
    """Everything the WAN tests need, made once in one directory:
    ca (the federation's CA) with dc2's server certificate (the listener), east's server and
    client certificates, dc1's server certificate; foreign (another CA) with an east server
    certificate; forged expired / not-yet-valid / serverAuth-only east certificates of ca."""

    def __init__(self, root):
        self.root = root
        self.ca = CA(os.path.join(root, "ca"))
        self.dc2 = self.ca.issue("server", "dc2")
        self.east = self.ca.issue("server", "east")
        self.east_client = self.ca.issue("client", "east")
        self.foreign = CA(os.path.join(root, "foreign"))
        self.foreign_east = self.foreign.issue("server", "east")
        now = utcnow()
        names = ["server.east.consul", "localhost"]
        self.expired = self.ca.forge("expired", names, now - datetime.timedelta(days=30),
                                     now - datetime.timedelta(days=1))
        self.not_yet = self.ca.forge("notyet", names, now + datetime.timedelta(days=2),
                                     now + datetime.timedelta(days=30))
        self.server_only = self.ca.forge("serveronly", names, now - datetime.timedelta(hours=1),
                                         now + datetime.timedelta(days=30), usages=("server",))
        self.good_ping_cfg = write_json(os.path.join(root, "ping-east.json"),
                                        tls_config(self.ca.cert, *self.east, datacenter="east"))


class WanListenerCase(AgentTestCase):
    """One dc2 server with a WAN listener (shared by the tests of a subclass) and the helpers the
    cases use; no tests of its own."""

    pki = None
    src_lease = None

    @classmethod
    def start_agent(cls):
        a = Agent(name=cls.__name__, datacenter="dc2")
        try:
            cls.pki = WanPKI(os.path.join(a.tmpdir, "pki"))
            cfg = write_json(os.path.join(a.tmpdir, "tls.json"),
                             tls_config(cls.pki.ca.cert, *cls.pki.dc2))
            a.extra_args += ["-config-file", cfg]
            a.start()
        except Exception:
            a.close()
            raise
        if cls.src_lease is None:
            cls.src_lease = AddressLease(avoid=(a.lease.n,))
        return a

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        if cls.src_lease is not None:
            cls.src_lease.release()
            cls.src_lease = None

    def setUp(self):
        super().setUp()
        self.log = AgentLog(self.a)
        self.src = type(self).src_lease.addr

    # --------------------------------------------------------------------------- helpers
    def good_ping(self):
        p = wan_ping(self.a.addr, "dc2", self.pki.good_ping_cfg, cwd=self.a.tmpdir)
        self.assertEqual(p.returncode, 0, "the good peer (east's server certificate) must get in: %s"
                         % describe(p))
        try:
            v = json.loads(p.stdout)
        except ValueError:
            self.fail("wan ping printed no JSON: %s" % describe(p))
        self.assertEqual(v.get("Node"), self.a.node, v)
        self.assertEqual(v.get("Datacenter"), "dc2", v)
        self.assertEqual(v.get("PeerRole"), "server", v)
        self.assertEqual(v.get("PeerDatacenter"), "east", v)
        return v

    def assert_serves_new_links(self, after):
        """A new good peer gets an answer (wan ping, and a python peer's request on a fresh
        link): the listener still hands new connections to the socket."""
        p = wan_ping(self.a.addr, "dc2", self.pki.good_ping_cfg, cwd=self.a.tmpdir)
        self.assertEqual(p.returncode, 0, "after %s, a good peer no longer gets an answer: %s"
                         % (after, describe(p)))
        peer = self.peer(self.pki.east)
        try:
            v = peer.connect()
            self.assertTrue(v.accepted, v)
            try:
                reply = peer.request(b"ping", timeout=10)
            except (TimeoutError, EOFError, OSError) as e:
                self.fail("after %s, a new link gets the SP header but no answer to a request "
                          "(%r): the listener no longer hands new connections to the socket"
                          % (after, e))
            self.assertEqual(json.loads(reply).get("PeerDatacenter"), "east")
        finally:
            peer.close()

    def peer(self, cert_key, verify_server=True, **ctx_kw):
        cert, key = cert_key if cert_key else (None, None)
        ctx = client_context(self.pki.ca.cert, cert, key, verify=verify_server, **ctx_kw)
        return SPPeer(self.a.addr, WAN_PORT, ctx, src=self.src)

    def assert_refused(self, cert_key, reason_re, what, **ctx_kw):
        """A python TLS peer with cert_key is refused, and the agent logs why (reason_re)."""
        mark = self.log.mark()
        p = self.peer(cert_key, **ctx_kw)
        try:
            v = p.connect()
        finally:
            p.close()
        self.assertFalse(v.accepted, "%s must be refused on the WAN port: %r" % (what, v))
        line = self.log.wait_tls(mark, self.src, reason_re, what="the reason for " + what)
        self.assertTrue(self.a.running(), "the agent died on " + what)
        self.good_ping()
        return v, line



class TLSMatrixTest(WanListenerCase):
    """Each test is one kind of bad peer, then the good one, against one shared listener."""

    def test_00_good_peers_get_in(self):
        """Positive controls: `wan ping` from east, and the python peer with the same certificate
        gets the SP header and a real answer naming what the listener verified."""
        self.good_ping()
        p = self.peer(self.pki.east)
        try:
            v = p.connect()
            self.assertTrue(v.accepted, v)
            reply = json.loads(p.request(b"ping").decode("utf-8"))
            self.assertEqual(reply.get("Datacenter"), "dc2", reply)
            self.assertEqual(reply.get("PeerRole"), "server", reply)
            self.assertEqual(reply.get("PeerDatacenter"), "east", reply)
            # and a second request on the same link
            reply = json.loads(p.request(b"ping").decode("utf-8"))
            self.assertEqual(reply.get("PeerDatacenter"), "east", reply)
        finally:
            p.close()
        # the listener's own certificate carries server.dc2.consul (checked by the python peer's
        # hostname check above); a dialer expecting dc2 gets in with a dc1 server certificate too
        dc1 = self.pki.ca.issue("server", "dc1")
        cfg = write_json(os.path.join(self.pki.root, "ping-dc1.json"),
                         tls_config(self.pki.ca.cert, *dc1, datacenter="dc1"))
        p = wan_ping(self.a.addr, "dc2", cfg, cwd=self.a.tmpdir)
        self.assertEqual(p.returncode, 0, describe(p))
        self.assertEqual(json.loads(p.stdout).get("PeerDatacenter"), "dc1", describe(p))

    def test_unknown_ca(self):
        self.assert_refused(self.pki.foreign_east,
                            r"unknown ca|issuer|self.signed|untrusted|verify|chain",
                            "a server certificate of another CA")

    def test_expired(self):
        self.assert_refused(self.pki.expired, r"expired", "an expired server certificate")

    def test_not_yet_valid(self):
        self.assert_refused(self.pki.not_yet, r"not yet valid|not.yet|before",
                            "a server certificate not valid yet")

    def test_client_certificate_on_wan(self):
        _, line = self.assert_refused(self.pki.east_client, r"client\.east\.consul",
                                      "a client agent's certificate (client.east.consul)")
        # the line names the expected name as well as what the certificate carries
        self.assertRegex(line, r"server\.(\*|<[^>]*>|[a-z0-9*-]+)\.consul|server\.\*",
                         "the log line must name the expected name: %s" % line)

    def test_server_auth_only_certificate(self):
        """A certificate with SAN server.east.consul whose extended key usage is serverAuth only
        cannot authenticate a dialing client (dcgate's server certificates carry both)."""
        self.assert_refused(self.pki.server_only, r"purpose|usage|clientauth|client auth",
                            "a serverAuth-only certificate")

    def test_wrong_dc_refused_by_dialer(self):
        """`wan ping -dc dc1` against the dc2 server: the dialer expects server.dc1.consul, the
        listener shows server.dc2.consul, so the dialer refuses and says so."""
        p = wan_ping(self.a.addr, "dc1", self.pki.good_ping_cfg, cwd=self.a.tmpdir)
        self.assertEqual(p.returncode, 1, describe(p))
        self.assertEqual(p.stdout.strip(), "", describe(p))
        self.assertIn("server.dc1.consul", p.stderr,
                      "the dialer's error must name the name it expected: %s" % describe(p))
        self.assertTrue(self.a.running())
        self.good_ping()

    def test_no_certificate(self):
        """openssl s_client without -cert: the server asks for a certificate and gets none."""
        mark = self.log.mark()
        rc, out, err = s_client(self.a.addr, WAN_PORT, self.pki.ca.cert, [])
        self.assertNotIn(SP_MAGIC, out, "a peer without a certificate got the SP header: rc %d\n%s"
                         % (rc, err))
        # the server's verdict reached s_client (an alert), or it closed the connection
        self.assertRegex(err + out.decode("utf-8", "replace"), r"(?i)alert|error|closed",
                         "s_client saw no refusal: rc %d %s" % (rc, err))
        self.log.wait_tls(mark, "127.0.0.1",
                          r"(no|missing|without|required|did not return|none)\b.*certificate|"
                          r"certificate.*(required|missing|none|not (sent|presented|provided))",
                          what="the reason for a peer without a certificate")
        self.assertTrue(self.a.running())
        self.good_ping()

    def _old_tls_version(self, flag):
        mark = self.log.mark()
        rc, out, err = s_client(self.a.addr, WAN_PORT, self.pki.ca.cert,
                                [flag, "-cipher", "DEFAULT@SECLEVEL=0", "-cert", self.pki.east[0],
                                 "-key", self.pki.east[1]])
        text = out.decode("utf-8", "replace")
        self.assertNotIn(SP_MAGIC, out, "%s: SP header received" % flag)
        self.assertIsNone(re.search(r"Cipher is (?!\(NONE\))", text),
                          "%s: a TLS session was established (rc %d):\n%s\n%s" % (flag, rc, text, err))
        if re.search(r"no protocols available|unsupported protocol|ssl/tls alert protocol version|"
                     r"wrong version|alert protocol version", err, re.I) is None:
            self.fail("%s: neither the server nor the client gave a version error (rc %d): %s"
                      % (flag, rc, err))
        if "no protocols available" not in err:
            # the ClientHello went out, so the server saw it and says why it refused
            self.log.wait_tls(mark, "127.0.0.1", r"version|protocol",
                              what="the reason for a %s client" % flag)
        self.assertTrue(self.a.running())
        self.good_ping()

    def test_tls10_client(self):
        self._old_tls_version("-tls1")

    def test_tls11_client(self):
        self._old_tls_version("-tls1_1")

    def test_plaintext(self):
        """A plaintext nng dialer (tcp:// instead of tls+tcp://) sends its SP header in clear."""
        mark = self.log.mark()
        s = socket.create_connection((self.a.addr, WAN_PORT), timeout=5,
                                     source_address=(self.src, 0))
        try:
            s.sendall(SP_REQ_HEADER)
            closed, data = wait_closed(s, VERDICT_TIMEOUT)
        finally:
            s.close()
        self.assertTrue(closed, "the server kept a plaintext connection open for %.0fs"
                        % VERDICT_TIMEOUT)
        self.assertNotIn(SP_MAGIC, data, "plaintext crossed 8302: %r" % data[:64])
        self.log.wait_tls(mark, self.src, what="the reason for a plaintext peer")
        self.assertTrue(self.a.running())
        self.good_ping()

    def test_garbage(self):
        rnd = random.Random(8302)
        cases = [
            ("binary junk", b"\xff\xfe" + bytes(rnd.getrandbits(8) for _ in range(4094))),
            ("HTTP request", b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n"),
            ("oversized TLS record", b"\x16\x03\x01\xff\xff" + bytes(rnd.getrandbits(8) for _ in range(512))),
            # a complete handshake record whose ClientHello is 12 bytes of nonsense
            ("malformed ClientHello", b"\x16\x03\x01\x00\x10\x01\x00\x00\x0c" + bytes(range(12))),
        ]
        for name, payload in cases:
            with self.subTest(name):
                mark = self.log.mark()
                s = socket.create_connection((self.a.addr, WAN_PORT), timeout=5,
                                             source_address=(self.src, 0))
                try:
                    try:
                        s.sendall(payload)
                    except ConnectionError:
                        pass  # closed while we were still writing: refused
                    closed, data = wait_closed(s, VERDICT_TIMEOUT)
                finally:
                    s.close()
                self.assertTrue(closed, "%s: connection still open after %.0fs" % (name, VERDICT_TIMEOUT))
                self.assertNotIn(SP_MAGIC, data)
                self.log.wait_tls(mark, self.src, what="the reason for " + name)
                self.assertTrue(self.a.running())
                self.good_ping()

    def test_metrics_days_to_expiry(self):
        js, prom = days_gauges(self.a)
        self.assertTrue(js, "no gauge with 'days' in its name in /v1/agent/metrics")
        self.assertTrue(prom, "no metric with 'days' in its name in ?format=prometheus")
        for name, v in list(js.items()) + list(prom.items()):
            self.assertIsInstance(v, (int, float), name)
            self.assertGreater(v, 0, "%s = %r for a fresh certificate" % (name, v))
            self.assertLess(v, 20 * 366, "%s = %r" % (name, v))


class TLSStallTest(WanListenerCase):
    """Stalled handshakes, on an agent of their own: what they do to the listener must not be
    mistaken for the effect of another case."""

    def test_stalled_handshakes(self):
        """32 connections that send the first 60 bytes of a ClientHello and then nothing: the
        server must close each of them (bound: 60 s), good peers get in while they hang, and the
        listener still serves good peers after it has cut them."""
        mark = self.log.mark()
        part = client_hello()[:60]
        socks = []
        pings_during = 0
        try:
            for _ in range(32):
                s = socket.create_connection((self.a.addr, WAN_PORT), timeout=5,
                                             source_address=(self.src, 0))
                s.sendall(part)
                socks.append(s)
            t0 = time.monotonic()
            open_ = list(socks)
            while open_ and time.monotonic() - t0 < STALL_BOUND:
                ready, _, _ = select.select(open_, [], [], 1.0)
                for s in ready:
                    try:
                        chunk = s.recv(65536)
                    except ConnectionError:
                        chunk = b""
                    if not chunk:
                        open_.remove(s)
                if len(open_) == len(socks):
                    self.good_ping()  # a good peer gets in while all the stalled ones hang
                    pings_during += 1
            self.assertEqual(open_, [], "%d of 32 stalled handshakes still open after %.0fs"
                             % (len(open_), STALL_BOUND))
        finally:
            for s in socks:
                s.close()
        self.assertGreater(pings_during, 0, "no good ping ran while the stalled handshakes hung")
        line = self.log.wait_tls(mark, self.src, what="the reason for a stalled handshake")
        self.assertTrue(self.a.running())
        self.assert_serves_new_links("the server cut the stalled handshakes (%s)" % line)
        self.good_ping()


class TLSSilentPeerTest(WanListenerCase):
    """A peer that finishes the TLS handshake and then says nothing, on an agent of its own."""

    def test_silent_after_handshake(self):
        """A peer with a good certificate completes the handshake and never sends the SP header.
        The server closes it (nng's own negotiation limit is 10 s; bound here: 60 s), a good peer
        gets in while it hangs, and new links are still served afterwards."""
        mark = self.log.mark()
        raw = socket.create_connection((self.a.addr, WAN_PORT), timeout=STALL_BOUND,
                                       source_address=(self.src, 0))
        s = client_context(self.pki.ca.cert, *self.pki.east).wrap_socket(
            raw, server_hostname="server.dc2.consul")
        try:
            self.good_ping()
            closed, _ = wait_closed(s, STALL_BOUND)
        finally:
            s.close()
        self.assertTrue(closed, "a silent peer was kept for more than %.0fs" % STALL_BOUND)
        lines = self.log.tls_lines(mark, self.src)
        self.assertTrue(self.a.running())
        self.assert_serves_new_links("a silent peer was closed (%s)"
                                     % (lines[-1] if lines else "no tls line about it"))
        self.good_ping()


class StartupRefusalTest(unittest.TestCase):
    """A server whose own certificate does not carry server.<its dc>.consul (or is not valid)
    refuses to start and says what is missing."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.mkdtemp(prefix="dcgate-it-refusal-pki-")
        cls.pki_dir = os.path.join(cls.tmpdir, "pki")
        cls.ca = CA(cls.pki_dir)
        cls.east = cls.ca.issue("server", "east")
        cls.west_client = cls.ca.issue("client", "west")
        now = utcnow()
        cls.west_expired = cls.ca.forge("west-expired", ["server.west.consul", "localhost"],
                                        now - datetime.timedelta(days=30),
                                        now - datetime.timedelta(days=1))

    @classmethod
    def tearDownClass(cls):
        if not os.environ.get("DCGATE_IT_KEEP"):
            shutil.rmtree(cls.tmpdir, ignore_errors=True)

    def refused(self, cert_key, must_name):
        a = Agent(name="refusal", datacenter="west")
        try:
            cfg = write_json(os.path.join(a.tmpdir, "tls.json"), tls_config(self.ca.cert, *cert_key))
            a.extra_args += ["-config-file", cfg]
            try:
                a.start()
            except RuntimeError:
                pass
            else:
                self.fail("the server started with a certificate lacking %s:\n%s"
                          % (must_name, a.log_tail()))
            self.assertIsNotNone(a.proc.returncode)
            self.assertNotEqual(a.proc.returncode, 0, a.log_tail())
            log = a.log_tail(200)
            for name in must_name if isinstance(must_name, (list, tuple)) else [must_name]:
                self.assertRegex(log, name, "the refusal must name %r:\n%s" % (name, log))
        finally:
            a.close()

    def test_certificate_of_another_dc(self):
        # names what is missing, and what the certificate carries
        self.refused(self.east, [r"server\.west\.consul", r"server\.east\.consul"])

    def test_client_certificate_for_a_server(self):
        self.refused(self.west_client, [r"server\.west\.consul"])

    def test_expired_own_certificate(self):
        self.refused(self.west_expired, [r"(?i)expired|not valid|notafter|validity"])


if __name__ == "__main__":
    unittest.main()
