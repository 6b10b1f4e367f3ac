"""10,000 blocking queries parked at once on one agent: all are answered when the key changes,
and all are answered when their wait runs out with no change. No thread is held per waiter, so
this is about the agent, not the client: one asyncio loop holds every socket.

Bounded: 10,000 sockets, each phase has a deadline; loopback only. Timing is not asserted, only
that every query gets its answer (with a deadline generous enough for a sanitizer build)."""

import asyncio
import resource
import unittest

import harness

WAITERS = 10000


async def park_all(addr, port, path, count, deadline):
    """Opens count connections, sends the blocking GET on each and returns the (status, index)
    answers as they arrive, once all have arrived or deadline seconds passed."""
    # spread clients over several loopback sources so no source port range runs dry
    sources = ["127.0.0.%d" % (2 + i % 8) for i in range(count)]
    conns = []
    for i in range(count):
        r, w = await asyncio.open_connection(addr, port, local_addr=(sources[i], 0))
        conns.append((r, w))
    req = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode()
    for _, w in conns:
        w.write(req)
    await asyncio.gather(*(w.drain() for _, w in conns))

    async def answer(r):
        head = await r.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = dict(l.split(": ", 1) for l in lines[1:] if ": " in l)
        n = int(hdrs.get("Content-Length", "0"))
        if n:
            await r.readexactly(n)
        return status, int(hdrs.get("X-Consul-Index", "0"))

    return conns, [asyncio.ensure_future(answer(r)) for r, _ in conns]


class ManyWaitersTest(harness.AgentTestCase):
    @classmethod
    def setUpClass(cls):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
        super().setUpClass()

    def test_ten_thousand_waiters(self):
        if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < WAITERS + 500:
            self.fail("the file descriptor limit is below %d; this test needs it" % (WAITERS + 500))
        a = self.a
        self.assertEqual(a.put("/v1/kv/many/key", b"v0").status, 200)
        index = a.get("/v1/kv/many/key").index

        async def scenario():
            # 1. every waiter answered by one write
            conns, futs = await park_all(a.addr, a.http_port,
                                         "/v1/kv/many/key?index=%d&wait=120s" % index, WAITERS, 120)
            await asyncio.sleep(2.0)
            early = sum(1 for f in futs if f.done())
            loop = asyncio.get_running_loop()
            put = await loop.run_in_executor(None, lambda: a.put("/v1/kv/many/key", b"v1", timeout=120))
            done, pending = await asyncio.wait(futs, timeout=120)
            woken = [f.result() for f in done if not f.exception()]
            for _, w in conns:
                w.close()
            # 2. every waiter answered at the end of its wait, with nothing written
            index2 = (await loop.run_in_executor(None, lambda: a.get("/v1/kv/many/key"))).index
            conns2, futs2 = await park_all(a.addr, a.http_port,
                                           "/v1/kv/many/key?index=%d&wait=3s" % index2, WAITERS, 120)
            done2, pending2 = await asyncio.wait(futs2, timeout=120)
            timed_out = [f.result() for f in done2 if not f.exception()]
            for _, w in conns2:
                w.close()
            return early, put.status, woken, len(pending), timed_out, len(pending2), index2

        early, put_status, woken, pending, timed_out, pending2, index2 = asyncio.run(scenario())
        self.assertEqual(early, 0, "blocking queries answered before anything changed")
        self.assertEqual(put_status, 200)
        self.assertEqual(pending, 0, "waiters never answered after the write")
        self.assertEqual(len(woken), WAITERS)
        self.assertTrue(all(s == 200 and i > index for s, i in woken),
                        "a woken waiter got an error or an old index")
        self.assertEqual(pending2, 0, "waiters never answered at the end of their wait")
        self.assertEqual(len(timed_out), WAITERS)
        self.assertTrue(all(s == 200 and i == index2 for s, i in timed_out),
                        "a waiter whose wait ran out got an error or a new index")


if __name__ == "__main__":
    unittest.main()
