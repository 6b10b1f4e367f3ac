"""A stress for nng 1.5.2's close hang (docs/federation.md, "Closing sockets"); not part of the
integration run (several CPU-heavy minutes). Many WAN connections to dc1 that end abruptly (a reset
right after a request, or a bad message that makes dc1 close the pipe), while east is killed -9 and
restarted so that dc1 marks it failed and replaces its sockets. Each cycle checks that dc1 logs east
alive again (its WAN timer is not stuck); at the end, that dc1 exits within 15 s of SIGTERM. Prints
any "lost an aio" lines dc1 logged (the closer saw nng's reaper stuck).

usage: cd tests/integration && python3 stress_wan_close.py [SECONDS]   (DCGATE_BIN picks the agent)
Exit status 1 when dc1 hung (east never came back, or no exit on SIGTERM). `make soak` runs it."""
import os, random, signal, socket, struct, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Agent, wait_until  # noqa
from test_tls_matrix import CA, SPPeer, client_context, tls_config, write_json  # noqa
from test_wan_badinput import wan_msg, PING, member_status  # noqa

DUR = float(sys.argv[1]) if len(sys.argv) > 1 else 40
tmp = tempfile.mkdtemp(prefix="dcgate-stress-")
ca = CA(os.path.join(tmp, "pki"))
peer_cert = ca.issue("server", "east")
agents = []


def server(dc, extra=None):
    a = Agent(name="stress-" + dc, node="stress-" + dc, datacenter=dc, dev=False)
    cert, key = ca.issue("server", dc)
    cfg = write_json(os.path.join(a.tmpdir, "wan.json"), tls_config(ca.cert, cert, key, extra=extra))
    a.extra_args += ["-config-file", cfg]
    agents.append(a)
    return a.start()


result = {"conns": 0, "errors": 0}
stop = threading.Event()
pause = threading.Event()  # set: hammering pauses (while dc1 is asked to see east come back)


def hammer(dc1):
    ctx = client_context(ca.cert, *peer_cert)
    ping = wan_msg(PING, {"From": "probe.east", "Inc": 1})
    rnd = random.Random()
    while not stop.is_set():
        if pause.is_set():
            time.sleep(0.05)
            continue
        p = SPPeer(dc1.addr, 8302, ctx, server_hostname="server.dc1.consul")
        try:
            v = p.connect(5)
            if not v.accepted:
                result["errors"] += 1
                continue
            s = p.sock
            mode = rnd.randrange(3)
            rid = 0x80000000 | rnd.randrange(1, 1 << 30)
            body = struct.pack(">I", rid) + ping
            frame = struct.pack(">Q", len(body)) + body
            if mode == 0:
                s.sendall(frame * rnd.randrange(1, 4))
            elif mode == 1:
                bad = struct.pack(">I", rid + 1) + b"\x00garbage"
                s.sendall(frame + struct.pack(">Q", len(bad)) + bad)
            else:
                p.request(ping, timeout=5)
                s.sendall(frame)
            time.sleep(rnd.random() * 0.003)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            result["conns"] += 1
        except Exception:
            result["errors"] += 1
            try:
                p.sock and p.sock.close()
            except Exception:
                pass


ok = True
try:
    dc1 = server("dc1")
    east = server("east", extra={"retry_join_wan": [dc1.addr]})
    wait_until(lambda: member_status(dc1, "stress-east.east") == 1, 30, 0.25, "east alive on dc1")
    ths = [threading.Thread(target=hammer, args=(dc1,), daemon=True) for _ in range(3)]
    for t in ths:
        t.start()
    end = time.monotonic() + DUR
    cycles = 0
    while time.monotonic() < end:
        pause.clear()
        east.kill9()
        try:
            wait_until(lambda: member_status(dc1, "stress-east.east") == 4, 30, 0.25, "east failed on dc1")
        except AssertionError as e:
            print("STRESS: %s" % e)
        time.sleep(6)  # at least one recycle of east's sockets on dc1
        pause.set()  # the check below is about dc1's timer, not about dc1 under this load
        east.start()
        def back():
            with open(dc1.log_path, "rb") as f:
                return f.read().count(b"stress-east.east is alive again") > cycles
        try:
            wait_until(back, 30, 0.25, "dc1 to log east alive again")
        except AssertionError as e:
            print("STRESS: east did not come back on dc1: %s" % e)
            ok = False
            break
        cycles += 1
    stop.set()
    for t in ths:
        t.join(10)
    print("STRESS: %d kill/restart cycles, %d abrupt connections, %d errors" % (cycles, result["conns"], result["errors"]))
    t0 = time.monotonic()
    dc1.proc.send_signal(signal.SIGTERM)
    code = dc1.wait_exit(15)
    dt = time.monotonic() - t0
    if code is None:
        print("STRESS: dc1 did not exit within 15 s of SIGTERM")
        ok = False
    else:
        print("STRESS: dc1 exited %s after %.1f s" % (code, dt))
    with open(dc1.log_path, "rb") as f:
        for line in f:
            if b"lost an aio" in line or b"close again" in line:
                print("STRESS log: " + line.decode("utf-8", "replace").rstrip())
finally:
    for a in agents:
        a.close()
print("STRESS RESULT: %s" % ("ok" if ok else "HANG"))
sys.exit(0 if ok else 1)
