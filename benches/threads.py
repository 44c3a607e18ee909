#!/usr/bin/env python3
"""CPU by part of rvoip: the appliance's process tree read thread by thread
from /proc, grouped by what each thread does.

usage: threads.py snap ROOT_PID > FILE       one reading (tid, group, ticks)
       threads.py diff BEFORE AFTER CALLS    µs of CPU per call, by group

Groups: "control plane" (the process under the dataplane), "SIP workers"
(sip-N), "ng orders" (ng-orders: the media order service), "media workers"
(media-N), "dataplane other"; "signalling" is control plane + SIP workers.
"""
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")


def stat(path):
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return None
    comm = s[s.index("(") + 1:s.rindex(")")]
    rest = s[s.rindex(")") + 2:].split()
    return comm, int(rest[1]), int(rest[11]) + int(rest[12])


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = stat(f"/proc/{d}/stat")
            if st and st[1] == pid:
                out.append(int(d))
    return out


def group(comm, in_root):
    if not in_root:
        # With RVOIP_THREADS_BY_NAME set, the control plane thread by thread
        # (its shards: the main thread is shard 0, cp-shard-N the others).
        if os.environ.get("RVOIP_THREADS_BY_NAME"):
            return f"control plane {comm}"
        return "control plane"
    for prefix, name in (("sip-", "SIP workers"), ("media-", "media workers"), ("ng-orders", "ng orders")):
        if comm.startswith(prefix):
            return name
    return "dataplane other"


def snap(root):
    for pid in [root] + children(root):
        for tid in os.listdir(f"/proc/{pid}/task"):
            st = stat(f"/proc/{pid}/task/{tid}/stat")
            if st:
                print(f"{pid}.{tid}\t{group(st[0], pid == root)}\t{st[2]}")


def read(path):
    out = {}
    with open(path) as f:
        for line in f:
            key, g, ticks = line.rstrip("\n").split("\t")
            out[key] = (g, int(ticks))
    return out


def diff(before, after, calls):
    b, a = read(before), read(after)
    groups = {}
    for key, (g, ticks) in a.items():
        groups[g] = groups.get(g, 0) + ticks - b.get(key, (g, 0))[1]
    us = {g: 1e6 * t / TICK / max(calls, 1) for g, t in groups.items()}
    threads = sorted(g for g in us if g.startswith("control plane "))
    if threads:
        us["control plane"] = sum(us[g] for g in threads)
    us["signalling"] = us.get("control plane", 0) + us.get("SIP workers", 0)
    order = ["signalling", "control plane", "SIP workers", "ng orders", "media workers", "dataplane other"]
    # Busy threads only (the ops and resolver threads sit idle).
    order += [g for g in threads if us[g] >= 0.5]
    print("  ".join(f"{g}: {us.get(g, 0):.0f}" for g in order))


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap(int(sys.argv[2]))
    else:
        diff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
