"""Self-test of the WAN emulator (tests/wan): DCs in network namespaces, delayed by the NFQUEUE
delayer, lost and partitioned by nft rules. The federation tests build on it, so this checks the
tool itself: TCP round trips carry the configured delay (sparse TCP echo, not ping), traffic
inside a DC is not delayed, a partition blocks exactly the pair it names and heals, the periodic
stall holds everything, and teardown leaves nothing behind.

Skips (saying why) only when the kernel lacks NFQUEUE support; a missing tool, a missing delayer
binary or no root is a failure. The bounds are deliberately loose: they tell "delayed about as
configured" from "not delayed" or "delayed twice", not milliseconds.
"""

import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "wan"))
import wanemu  # noqa: E402


def namespaces(prefix):
    out = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, text=True,
                         timeout=10).stdout
    return [l.split()[0] for l in out.splitlines() if l.startswith(prefix)]


class WanEmuTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        wanemu.require()

    def test_delay_loss_partition_three_dcs(self):
        with wanemu.WanEmu(dcs=3, delay_ms=150, jitter_ms=30, loss_pct=5, stall_every_s=60,
                           stall_s=3) as wan:
            self.assertEqual(len(namespaces(wan.prefix)), 4)  # a, b, c and the hub
            r = wan.tcp_rtt("a", "b", samples=20)
            s = wanemu.summarize(r["rtt_ms"])
            print("\n  a->b TCP echo: connect %.0f ms, rtt min %.0f median %.0f p90 %.0f max %.0f ms"
                  % (r["connect_ms"], s["min"], s["median"], s["p90"], s["max"]), file=sys.stderr)
            # 150 +- 30 each way: no round trip below 240 ms, the median near 300 (5% loss adds
            # retransmission outliers, which the median ignores).
            self.assertGreaterEqual(s["min"], 230)
            self.assertGreaterEqual(s["median"], 250)
            self.assertLessEqual(s["median"], 450)
            local = wanemu.summarize(wan.tcp_rtt("a", "a", samples=10, gap_s=0.01)["rtt_ms"])
            self.assertLess(local["median"], 50, "traffic inside a DC must not be delayed")
            c = wan.counters()
            self.assertGreater(c[("b", "a")]["accepted"], 0)
            self.assertEqual(c[("b", "a")]["verdict_errors"], 0)

            for dc in ("a", "b", "c"):
                wan.echo_server(dc, 7001)
            self.assertTrue(wan.tcp_connect("a", "c", 7001, timeout_s=5))
            wan.partition("a", "c", True)
            self.assertFalse(wan.tcp_connect("a", "c", 7001, timeout_s=2))
            self.assertFalse(wan.tcp_connect("c", "a", 7001, timeout_s=2))
            self.assertTrue(wan.tcp_connect("a", "b", 7001, timeout_s=5), "only a-c is cut")
            self.assertTrue(wan.tcp_connect("b", "c", 7001, timeout_s=5), "only a-c is cut")
            self.assertIn("10.254.3.0/24", wan.status())
            wan.partition("a", "c", False)
            self.assertTrue(wan.tcp_connect("a", "c", 7001, timeout_s=5), "healed")

            wan.partition("c", None, True)  # c alone against everyone
            self.assertFalse(wan.tcp_connect("a", "c", 7001, timeout_s=2))
            self.assertFalse(wan.tcp_connect("b", "c", 7001, timeout_s=2))
            self.assertTrue(wan.tcp_connect("a", "b", 7001, timeout_s=5))
            wan.heal_all()
            self.assertTrue(wan.tcp_connect("b", "c", 7001, timeout_s=5), "healed")
            prefix = wan.prefix
        self.assertEqual(namespaces(prefix), [], "teardown left namespaces")

    def test_stall_holds_everything(self):
        # 20 ms each way, a 1.5 s total stall every 3 s: requests sent during a stall wait for
        # its end; between stalls round trips stay near 40 ms.
        with wanemu.WanEmu(dcs=2, delay_ms=20, jitter_ms=0, loss_pct=0, stall_every_s=3,
                           stall_s=1.5) as wan:
            r = wan.tcp_rtt("a", "b", samples=40, gap_s=0.1)
            s = wanemu.summarize(r["rtt_ms"])
            print("\n  stall: rtt min %.0f median %.0f max %.0f ms" % (s["min"], s["median"],
                                                                       s["max"]), file=sys.stderr)
            self.assertGreaterEqual(s["min"], 35)
            self.assertGreaterEqual(s["max"], 700, "no round trip was held by a stall")
            self.assertGreater(sum(v["stall_held"] for v in wan.counters().values()), 0)

    def test_teardown_after_failure(self):
        wan = wanemu.WanEmu(dcs=2, delay_ms=10, jitter_ms=0, loss_pct=0, stall_s=0)
        with self.assertRaises(ZeroDivisionError):
            with wan:
                wan.run_in("a", ["sleep", "600"])
                1 / 0
        self.assertEqual(namespaces(wan.prefix), [])
        wan.stop()  # idempotent

    def test_bad_arguments_leave_nothing(self):
        wan = wanemu.WanEmu(dcs=["x", "BAD"], delay_ms=10)
        with self.assertRaises(wanemu.WanEmuError):
            wan.start()
        self.assertEqual(namespaces(wan.prefix), [])


if __name__ == "__main__":
    unittest.main()
