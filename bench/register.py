#!/usr/bin/python3
"""bench/register.py: register many catalog entries quickly, for bench/run.sh.

Sends PUT /v1/catalog/register over a few keep-alive HTTP/1.1 connections at once (each connection
has one request in flight, so the agent sees --concurrency writes in flight). Every body carries a
node, one service and one passing check, as a Consul user's registration would. Loopback only; the
whole run is bounded by --timeout. Prints "registered N bytes B seconds S"; exits 1 if any request
fails or the deadline passes.

  --kind web:  instances 1..N of service "web": node n<i>, address 127.0.0.<1+i>, ID web<i>, tag v1.
  --kind bulk: N service instances over 1,000 service names (svc0..svc999) on N/10 nodes (b<j>),
               ten instances a node, each with its own passing check.
"""
import argparse
import asyncio
import ipaddress
import json
import sys
import time

MAX_RESPONSE = 1 << 20


def body(kind, i):
    if kind == "web":
        return {"Node": f"n{i}", "Address": f"127.0.0.{1 + i}",
                "Service": {"ID": f"web{i}", "Service": "web", "Port": 80, "Tags": ["v1"]},
                "Check": {"CheckID": f"c{i}", "Name": "c", "Status": "passing",
                          "ServiceID": f"web{i}"}}
    node = (i - 1) // 10
    return {"Node": f"b{node}", "Address": f"127.1.{node // 256}.{node % 256}",
            "Service": {"ID": f"s{i}", "Service": f"svc{i % 1000}", "Port": 8000 + i % 1000,
                        "Tags": ["v1"]},
            "Check": {"CheckID": f"sc{i}", "Name": "c", "Status": "passing",
                      "ServiceID": f"s{i}"}}


async def read_response(reader):
    """Returns (status, body bytes) of one HTTP/1.1 response."""
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed by the agent")
    parts = line.split(None, 2)
    status = int(parts[1])
    length, chunked = None, False
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, _, value = h.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        data = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return status, data
            if len(data) + size > MAX_RESPONSE:
                raise ValueError("response too large")
            data += await reader.readexactly(size)
            await reader.readline()
    if length is None:
        return status, await reader.read(MAX_RESPONSE)
    if length > MAX_RESPONSE:
        raise ValueError("response too large")
    return status, await reader.readexactly(length)


async def worker(host, port, todo, kind, stats):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while todo:
            i = todo.pop()
            payload = json.dumps(body(kind, i), separators=(",", ":")).encode()
            writer.write(b"PUT /v1/catalog/register HTTP/1.1\r\nHost: %s:%d\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % (host.encode(), port, len(payload)) + payload)
            status, data = await read_response(reader)
            if status != 200 or data.strip() != b"true":
                raise RuntimeError(f"register #{i}: HTTP {status}: {data[:200]!r}")
            stats["n"] += 1
            stats["bytes"] += len(payload)
    finally:
        writer.close()


async def run(args):
    todo = list(range(args.count, 0, -1))
    stats = {"n": 0, "bytes": 0}
    tasks = [asyncio.create_task(worker(args.host, args.port, todo, args.kind, stats))
             for _ in range(min(args.concurrency, args.count))]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.timeout)
    except asyncio.TimeoutError:
        raise RuntimeError(f"deadline of {args.timeout}s passed after {stats['n']} of "
                           f"{args.count} registrations")
    return stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--kind", choices=("web", "bulk"), default="bulk")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    if not ipaddress.ip_address(args.host) in ipaddress.ip_network("127.0.0.0/8"):
        sys.exit("register: only loopback (127.0.0.0/8) addresses")
    if not 1 <= args.count <= 1_000_000 or not 1 <= args.concurrency <= 1024:
        sys.exit("register: count or concurrency out of range")
    if args.kind == "web" and args.count > 250:
        sys.exit("register: --kind web addresses stop at 127.0.0.251")
    t0 = time.monotonic()
    try:
        stats = asyncio.run(run(args))
    except Exception as e:  # one line for run.sh, not a traceback
        sys.exit(f"register: {e}")
    print(f"registered {stats['n']} bytes {stats['bytes']} seconds {time.monotonic() - t0:.2f}")


if __name__ == "__main__":
    main()
