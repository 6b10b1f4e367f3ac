#!/usr/bin/python3
"""The python-consul registration example, run against a dcgate (or Consul) agent.

1. starts `python3 -m http.server 8001` on the agent's address,
2. registers it as service test1 with a TCP check (python-consul's own example:
   consul.Check().tcp(host, 8001, "10s", "30s", "30s")),
3. reads it back with c.agent.services() and waits for the check to pass,
4. stops the web server, sees the check go critical, and waits for the agent to remove the
   service after DeregisterCriticalServiceAfter (30s, raised to the 1m minimum, plus the reaper).

Exits 0 when every step happened, 1 otherwise. Every wait is bounded.
Uses Debian's python3-consul (0.7.1): run it with /usr/bin/python3.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import consul


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def wait_for(what, fn, timeout, interval=1.0):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise SystemExit("FAILED: %s did not happen within %.0f s" % (what, timeout))
        time.sleep(interval)


def port_open(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1", help="agent HTTP address, also used for the web server")
    ap.add_argument("--port", type=int, default=8500, help="agent HTTP port")
    ap.add_argument("--web-port", type=int, default=8001, help="port of the http.server being registered")
    ap.add_argument("--deregister-timeout", type=float, default=150,
                    help="seconds to wait for the critical service to be removed")
    args = ap.parse_args()
    host = args.host

    webroot = tempfile.mkdtemp(prefix="register-example-")
    with open(os.path.join(webroot, "index.html"), "w") as f:
        f.write("hello from test1\n")
    web = subprocess.Popen([sys.executable, "-m", "http.server", str(args.web_port), "--bind", host],
                           cwd=webroot, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("http.server listening on %s:%d" % (host, args.web_port),
                 lambda: port_open(host, args.web_port), 15, 0.2)
        log("http.server is up on %s:%d" % (host, args.web_port))

        c = consul.Consul(host=host, port=args.port)
        ok = c.agent.service.register('test1', service_id='test1', address=host, port=args.web_port,
                                      check=consul.Check().tcp(host, args.web_port, "10s", "30s", "30s"))
        if ok is not True:
            raise SystemExit("FAILED: register returned %r" % (ok,))
        log("registered test1")

        services = c.agent.services()
        log("c.agent.services() -> %r" % (services,))
        svc = services.get('test1')
        if not svc or svc.get('Service') != 'test1' or svc.get('Port') != args.web_port \
                or svc.get('Address') != host:
            raise SystemExit("FAILED: test1 not listed as registered: %r" % (services,))

        def check_status():
            chk = c.agent.checks().get('service:test1')
            return chk and chk.get('Status')

        wait_for("check service:test1 passing", lambda: check_status() == 'passing', 40)
        log("check service:test1 is passing: %r" % (c.agent.checks()['service:test1'].get('Output'),))
        _, nodes = c.health.service('test1', passing=True)
        if len(nodes) != 1:
            raise SystemExit("FAILED: health.service(test1, passing) gave %r" % (nodes,))

        web.terminate()
        web.wait(10)
        log("stopped http.server")
        wait_for("check service:test1 critical", lambda: check_status() == 'critical', 40)
        t_critical = time.monotonic()
        log("check service:test1 is critical: %r" % (c.agent.checks()['service:test1'].get('Output'),))

        wait_for("test1 to be deregistered", lambda: 'test1' not in c.agent.services(),
                 args.deregister_timeout, 2.0)
        log("test1 was removed %.0f s after going critical" % (time.monotonic() - t_critical))
        if 'service:test1' in c.agent.checks():
            raise SystemExit("FAILED: the check of test1 outlived its service")
        wait_for("test1 to leave the catalog", lambda: not c.catalog.service('test1')[1], 15)
        log("OK")
        return 0
    finally:
        if web.poll() is None:
            web.kill()
            web.wait(10)
        shutil.rmtree(webroot, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
