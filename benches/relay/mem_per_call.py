#!/usr/bin/env python3
"""Userspace memory per call of an ng-driven relay: RSS growth while N calls
are set up over ng (offer + answer, RTCP not multiplexed, no media), divided
by N. Uses the anchors' ng client (../shared/anchors/rtp_load.py).

usage: mem_per_call.py RELAY_PID NG_PORT CALLS
"""
import os
import sys

sys.path.insert(0, os.environ.get("ANCHORS", os.path.join(os.path.dirname(__file__), "../../../shared/anchors")))
import rtp_load  # noqa: E402


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    pid, port, calls = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ng = rtp_load.Ng(("127.0.0.1", port))
    before = rss_kb(pid)
    for i in range(calls):
        cid, ft, tt = "mem-%d-%d" % (os.getpid(), i), "ft%d" % i, "tt%d" % i
        ng.cmd({"command": "offer", "call-id": cid, "from-tag": ft, "sdp": rtp_load.sdp(40000 + 2 * (i % 10000), i)})
        ng.cmd({"command": "answer", "call-id": cid, "from-tag": ft, "to-tag": tt, "sdp": rtp_load.sdp(50000 + 2 * (i % 5000), i)})
    after = rss_kb(pid)
    for i in range(calls):
        try:
            ng.cmd({"command": "delete", "call-id": "mem-%d-%d" % (os.getpid(), i), "from-tag": "ft%d" % i}, tries=1)
        except Exception:
            pass
    print("calls=%d rss_before_kb=%d rss_after_kb=%d kb_per_call=%.2f" % (calls, before, after, (after - before) / calls))


if __name__ == "__main__":
    main()
