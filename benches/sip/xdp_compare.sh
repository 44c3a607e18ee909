#!/usr/bin/env bash
# The stateful SIP proxy on the AF_XDP test topology, side by side in one
# run (as root): rvoip with config/xdp.toml on AF_XDP (`io = "af_xdp"`),
# the same on the kernel's UDP (`io = "io-uring"`), Kamailio 5.6 with the
# anchor's stateful configuration (tm + rr, `-x tlsf`) moved to 10.99.0.1,
# and the no-SIP floor (benches/src/bin/bare_sip_forwarder.rs). The element
# runs in namespace `rvx` on 10.99.0.1:5060; SIPp's built-in uas
# (10.99.0.2:5070) and uac (10.99.0.2:5080) run in `rvxpeer`. The topology
# is made here and removed on exit; every process is bounded in time.
#
# usage: benches/sip/xdp_compare.sh [DURATION_S] RATE...
#   e.g. benches/sip/xdp_compare.sh 15 1000 2000 4000
# env: ELEMENTS="af_xdp io_uring kamailio floor" (default all), WARMUP=s
#      (default 6: longer than the transactions' 5 s linger in Kamailio),
#      REPEAT=n runs per rate with the elements in turn (ratios of medians)
#
# Per step and element: PASS (< 0.1 % failed calls, >= 98 % of the offered
# rate), achieved rate, CPU µs per call of the element's process tree
# (rvoip: the dataplane and its control-plane child) over the measured
# window; then the ratios to Kamailio.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
DUR=${1:-15}; shift || true
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=(1000 2000 4000)
ELEMENTS=${ELEMENTS:-"af_xdp io_uring kamailio floor"}
REPEAT=${REPEAT:-1}
WARMUP=${WARMUP:-6}
OUT=${OUT:-$ROOT/target/sip-xdp-bench}
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, XDP)" >&2; exit 2; }
rm -rf "$OUT"; mkdir -p "$OUT/state"

cargo build -q --release --bin rvoip -p rvoip-controlplane --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-benches --bin bare_sip_forwarder --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
UAS=""
stop_uas() { [ -n "$UAS" ] && kill -TERM "$UAS" 2>/dev/null; wait "$UAS" 2>/dev/null; UAS=""; }
trap 'stop_pid; stop_uas; topology_down; rm -rf /dev/shm/rvoip-sip-xdp-bench' EXIT
trap 'exit 130' INT TERM
topology_up

for io in af_xdp io_uring; do
    sed -e "s|ring_dir = \"/dev/shm/rvoip-xdp\"|ring_dir = \"/dev/shm/rvoip-sip-xdp-bench\"|" \
        -e "s|io = \"af_xdp\"|io = \"${io/io_uring/io-uring}\"|" -e "s|state_dir = \"../state\"|state_dir = \"$OUT/state\"|" \
        -e "s|users_file = \"users.toml\"|users_file = \"$ROOT/config/users.toml\"|" \
        "$ROOT/config/xdp.toml" > "$OUT/rvoip-$io.toml"
done
sed -e "s/127.0.0.1:5060/10.99.0.1:5060/g" -e "s/127.0.0.1:5070/10.99.0.2:5070/g" \
    "$ANCHORS/kamailio-stateful.cfg" > "$OUT/kamailio.cfg"

# rvoip answers OPTIONS from rvxpeer on 10.99.0.1:5060 once it is up.
sip_ready_peer() { NETNS=rvxpeer sip_ready 5060 10.99.0.1; }

# Whether something in rvx holds UDP 10.99.0.1:5060 (up to 20 s).
port_bound() {
    for _ in $(seq 100); do
        ip netns exec rvx ss -Hlun "( src 10.99.0.1:5060 )" | grep -q . && { sleep 1; return 0; }
        sleep 0.2
    done
    return 1
}

LIMIT=$((WARMUP + DUR + 90))
UAC="-sn uac -i 10.99.0.2 -p 5080 10.99.0.1:5060 -s 1000 -nostdin -buff_size 1048576 -rp 1000"

printf "%-10s %6s %-5s %9s %9s %12s\n" element rate pass achieved fail_pct cpu_us_call | tee "$OUT/summary.txt"
for rate in "${STEPS[@]}"; do
  for rep in $(seq "$REPEAT"); do
    for element in $ELEMENTS; do
        case $element in
            af_xdp|io_uring)
                rm -rf /dev/shm/rvoip-sip-xdp-bench
                ip netns exec rvx timeout $LIMIT "$ROOT/target/release/rvoip" run --config "$OUT/rvoip-$element.toml" > "$OUT/$element-$rate.log" 2>&1 & ;;
            kamailio)
                ip netns exec rvx timeout $LIMIT kamailio -f "$OUT/kamailio.cfg" -x tlsf -DD -E -m 4096 -M 16 > "$OUT/kamailio-$rate.log" 2>&1 & ;;
            floor)
                ip netns exec rvx timeout $LIMIT "$ROOT/target/release/bare_sip_forwarder" 5060 5070 5080 10.99.0.1 10.99.0.2 > "$OUT/floor-$rate.log" 2>&1 & ;;
        esac
        wrapper=$!
        sleep 1.5
        # ip netns exec execs the timeout wrapper; the element is its child.
        PID=$(child_of "$wrapper")
        ip netns exec rvxpeer timeout $LIMIT sipp -sn uas -i 10.99.0.2 -p 5070 -nostdin -buff_size 1048576 \
            > /dev/null 2>&1 &
        UAS=$!
        sleep 0.5
        # rvoip answers OPTIONS itself; the others forward it to SIPp's uas,
        # which does not answer it: for them, their socket bound will do.
        case $element in
            af_xdp|io_uring) ready=sip_ready_peer ;;
            *) ready=port_bound ;;
        esac
        if ! $ready > /dev/null 2>&1; then
            echo "$element did not answer (see $OUT/$element-$rate.log)" >&2
            stop_pid; stop_uas; kill -TERM "$wrapper" 2>/dev/null; wait "$wrapper" 2>/dev/null; continue
        fi
        if [ "$WARMUP" -gt 0 ]; then
            ( cd "$OUT" && ip netns exec rvxpeer timeout $((WARMUP + 40)) sipp $UAC -r "$rate" -l $((rate * 4)) \
                -m $((rate * WARMUP)) -timeout $((WARMUP + 30))s > /dev/null 2>&1 )
        fi
        stf="$OUT/uac-$element-$rate-$rep.csv"
        c0=$("$ANCHORS/cputree.py" "$PID")
        t0=$(date +%s.%N)
        ( cd "$OUT" && ip netns exec rvxpeer timeout $((DUR + 60)) sipp $UAC -r "$rate" -l $((rate * 4)) \
            -m $((rate * DUR)) -timeout $((DUR + 45))s -trace_stat -fd 1 -stf "$stf" > /dev/null 2>&1 )
        t1=$(date +%s.%N)
        c1=$("$ANCHORS/cputree.py" "$PID")
        stop_pid; stop_uas
        kill -TERM "$wrapper" 2>/dev/null; wait "$wrapper" 2>/dev/null
        python3 - "$element" "$rate" "$DUR" "$stf" "$c0" "$c1" "$t0" "$t1" <<'PY' | tee -a "$OUT/summary.txt"
import csv, sys
element, rate, dur, stf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c0, c1, t0, t1 = map(float, sys.argv[5:9])
try:
    rows = list(csv.DictReader(open(stf), delimiter=";"))
    last = rows[-1]
    ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
except (OSError, IndexError, KeyError, ValueError):
    print(f"{element:<10} {rate:>6} ERROR")
    sys.exit()
offered = rate * dur
achieved = ok / max(t1 - t0 - 1.0, 1.0) if ok < offered else rate
fail_pct = 100.0 * (offered - ok) / offered
passed = fail_pct < 0.1 and achieved >= 0.98 * rate
print(f"{element:<10} {rate:>6} {'PASS' if passed else 'FAIL':<5} {achieved:>9.0f} {fail_pct:>9.4f} "
      f"{1e6 * (c1 - c0) / max(ok, 1):>12.1f}")
PY
        sleep 1
    done
  done
done

echo
python3 - "$OUT/summary.txt" <<'PY' | tee -a "$OUT/summary.txt"
import statistics, sys
cpu, order = {}, []
for line in open(sys.argv[1]).read().splitlines()[1:]:
    f = line.split()
    if len(f) != 6:
        continue
    element, rate = f[0], int(f[1])
    if rate not in order:
        order.append(rate)
    cpu.setdefault((element, rate), []).append(float(f[5]))
med = lambda e, r: statistics.median(cpu[(e, r)]) if (e, r) in cpu else None
print(f"{'rate':>6} {'af_xdp/kamailio':>16} {'io_uring/kamailio':>18} {'floor/kamailio':>15} {'af_xdp/io_uring':>16}")
for r in order:
    cells = []
    for a, b in (("af_xdp", "kamailio"), ("io_uring", "kamailio"), ("floor", "kamailio"), ("af_xdp", "io_uring")):
        x, y = med(a, r), med(b, r)
        cells.append(f"{x / y:.2f}x" if x is not None and y else "-")
    print(f"{r:>6} {cells[0]:>16} {cells[1]:>18} {cells[2]:>15} {cells[3]:>16}")
PY
