#!/usr/bin/env python3
"""Load generator efficiency: CPU per call of the calling side, rvoip-loadtest
uac -> rvoip-loadtest uas versus SIPp uac -> SIPp uas, same rates, same box,
one sitting. Scenario for both: INVITE, 100/180/200, ACK, BYE, 200 with no
hold (SIPp's built-in uac; rvoip-loadtest --hold 0s), no media.

usage: [REPEAT=3] benches/loadtest/compare.py [SECONDS] RATE...
   e.g. benches/loadtest/compare.py 15 1000 2000 4000 8000

The figure compared is the UAC process's CPU (user + system, from the
kernel's accounting of the exited child); the UAS's CPU over the same span
(from /proc, read before it is stopped) is printed beside it. Loopback
only; every process is bounded in time.
"""
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LT = os.path.join(ROOT, "target", "release", "rvoip-loadtest")


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_uac(cmd, timeout):
    c0 = child_cpu()
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, text=True)
    return child_cpu() - c0, time.monotonic() - t0, p.returncode, p.stderr


def proc_cpu(pid):
    # utime + stime of a running process, seconds.
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def step(tool, rate, secs):
    calls = rate * secs
    port = free_port()
    if tool == "rvoip-loadtest":
        uas = subprocess.Popen([LT, "uas", "--listen", f"127.0.0.1:{port}", "--quiet", "--duration", f"{secs + 90}s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        uac = [LT, "uac", "--target", f"127.0.0.1:{port}", "--rate", str(rate), "--calls", str(calls),
               "--hold", "0s", "--max-concurrent", str(calls), "--quiet"]
    else:
        uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-nostdin"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/tmp")
        uac = ["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(free_port()), f"127.0.0.1:{port}",
               "-m", str(calls), "-r", str(rate), "-l", str(calls), "-nostdin", "-timeout", f"{secs + 60}s",
               "-trace_stat", "-stf", f"/tmp/lt-compare-{port}.csv"]
    time.sleep(0.5)
    try:
        uas0 = proc_cpu(uas.pid)
        cpu, wall, rc, err = run_uac(uac, secs + 90)
        uas_cpu = proc_cpu(uas.pid) - uas0
    finally:
        uas.terminate()
        try:
            uas.wait(timeout=10)
        except subprocess.TimeoutExpired:
            uas.kill()
    failed = None
    if tool == "rvoip-loadtest":
        for line in err.splitlines():
            if line.startswith("calls:"):
                # calls: attempted N completed N failed N (x %) ...
                f = line.split()
                failed = int(f[6])
    else:
        try:
            rows = open(f"/tmp/lt-compare-{port}.csv").read().splitlines()
            head, last = rows[0].split(";"), rows[-1].split(";")
            failed = int(last[head.index("FailedCall(C)")])
        except (OSError, ValueError, IndexError):
            failed = None
    return cpu, uas_cpu, wall, rc, failed, calls


def main():
    args = sys.argv[1:]
    secs = int(args[0]) if args else 15
    rates = [int(a) for a in args[1:]] or [1000, 2000, 4000]
    # This VM's speed drifts from minute to minute: each rate runs REPEAT
    # times, the two tools in turn, and the medians are compared.
    repeat = int(os.environ.get("REPEAT", "3"))
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "rvoip-loadtest"], cwd=ROOT, check=True)
    print(f"{'rate':>6} {'tool':<15} {'calls':>7} {'failed':>6} {'wall s':>7} {'UAC cpu s':>9} {'us/call':>8}"
          f" {'UAS cpu s':>9} {'UAS us/call':>11}")
    ratios = []
    for rate in rates:
        res = {"rvoip-loadtest": [], "sipp": []}
        uas_res = {"rvoip-loadtest": [], "sipp": []}
        for _ in range(repeat):
            for tool in ("rvoip-loadtest", "sipp"):
                cpu, uas_cpu, wall, rc, failed, calls = step(tool, rate, secs)
                us = 1e6 * cpu / calls
                uas_us = 1e6 * uas_cpu / calls
                res[tool].append(us)
                uas_res[tool].append(uas_us)
                print(f"{rate:>6} {tool:<15} {calls:>7} {str(failed):>6} {wall:>7.1f} {cpu:>9.2f} {us:>8.1f}"
                      f" {uas_cpu:>9.2f} {uas_us:>11.1f}", flush=True)
        ours, theirs = statistics.median(res["rvoip-loadtest"]), statistics.median(res["sipp"])
        ours_uas, theirs_uas = statistics.median(uas_res["rvoip-loadtest"]), statistics.median(uas_res["sipp"])
        ratios.append((rate, ours, theirs, ours_uas, theirs_uas))
    print(f"\n{'rate':>6} {'rvoip-loadtest us/call':>22} {'SIPp us/call':>13}   SIPp / rvoip-loadtest (UAC, medians of {repeat})"
          f"   UAS us/call: rvoip-loadtest, SIPp")
    for rate, ours, theirs, ours_uas, theirs_uas in ratios:
        print(f"{rate:>6} {ours:>22.1f} {theirs:>13.1f}   {theirs / ours:.2f}x"
              f"{'':>42}{ours_uas:.1f}, {theirs_uas:.1f}")


if __name__ == "__main__":
    main()
