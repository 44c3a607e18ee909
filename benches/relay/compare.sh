#!/usr/bin/env bash
# Media relay benchmark, side by side in one run: rvoip (its configured
# driver) vs rtpengine 10.5 in userspace mode vs a bare recvmmsg/sendmmsg
# forwarder (the floor), all driven by the same ng client and RTP generator
# (../shared/anchors/rtp_load.py: 172-byte packets, 50 pps per stream, both
# directions). Loopback only; every process is bounded in time.
#
# usage: benches/relay/compare.sh [DURATION_S] CALLS...
#   e.g. benches/relay/compare.sh 20 200 500 800
# env: RELAYS="rvoip rtpengine bare" (default all three)
#
# Per step and relay it prints: loss %, relay CPU µs per relayed packet (CPU of
# the relay's whole process over the measured window / packets relayed), and
# memory per call (peak RSS during the step minus idle RSS, over CALLS).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
DUR=${1:-20}; shift || true
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=(200 500 800)
RELAYS=${RELAYS:-"rvoip rtpengine bare"}
NG=2223
OUT=${OUT:-$ROOT/target/relay-bench}
mkdir -p "$OUT"

cargo build -q --release --bin rvoip --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-benches --bin bare_forwarder --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
stop_relay() { stop_pid; }
trap stop_pid EXIT
trap 'exit 130' INT TERM

rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

start_relay() { start_ng_relay "$1" $((DUR + 120)); }

printf "%-10s %6s %9s %14s %12s %14s\n" relay calls loss_pct cpu_us_per_pkt mem_kb_call pps_relayed | tee "$OUT/summary.txt"
for calls in "${STEPS[@]}"; do
    for relay in $RELAYS; do
        start_relay "$relay" || { echo "$relay failed to start" >&2; stop_relay; continue; }
        idle=$(rss_kb "$PID")
        peak=$idle
        python3 "$ANCHORS/rtp_load.py" --calls "$calls" --duration "$DUR" --relay-pid "$PID" > "$OUT/$relay-$calls.txt" 2>&1 &
        gen=$!
        while kill -0 $gen 2>/dev/null; do
            r=$(rss_kb "$PID"); [ "${r:-0}" -gt "$peak" ] && peak=$r
            sleep 0.5
        done
        wait $gen
        line=$(tail -1 "$OUT/$relay-$calls.txt")
        get() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1==k {print $2}'; }
        loss=$(get loss_pct); cpu=$(get relay_cpu_s_per_Mpkt); recv=$(get received)
        mem=$(( (peak - idle) / calls ))
        printf "%-10s %6s %9s %14s %12s %14s\n" "$relay" "$calls" "${loss:-?}" "${cpu:-?}" "$mem" "$(( ${recv:-0} / DUR ))" | tee -a "$OUT/summary.txt"
        stop_relay
        sleep 1
    done
done

# Ratios per step, from the table above.
echo
awk 'NR > 1 { cpu[$1, $2] = $4; steps[$2] = 1 }
     END {
       printf "%6s %18s %14s\n", "calls", "rvoip/rtpengine", "rvoip/bare";
       for (s in steps)
         if (cpu["rvoip", s] != "" && cpu["rtpengine", s] > 0 && cpu["bare", s] > 0)
           printf "%6s %17.2fx %13.2fx\n", s, cpu["rvoip", s] / cpu["rtpengine", s], cpu["rvoip", s] / cpu["bare", s];
     }' "$OUT/summary.txt" | sort -n | tee -a "$OUT/summary.txt"
