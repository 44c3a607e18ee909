#!/usr/bin/env bash
# Play media and recording, side by side in one run: rvoip vs rtpengine 10.5
# (userspace), both driven by the same ng client (rvoip-loadtest's media
# mode: per call an offer and an answer in PCMU, RTP both ways for the hold
# time, delete). Three loads per relay: plain relaying; `play media` of
# prompts/welcome.wav to leg A on a loop once each call is up; `start
# recording` once each call is up (rvoip: a stereo WAV per call;
# rtpengine: its userspace recording, `recording-method = pcap`, one pcap
# per call). For each: the relay's CPU over WINDOW seconds with CALLS calls
# up, as µs of CPU per call-second, minus the plain run's (the service's own
# cost), and the ratio rvoip / rtpengine.
#
# usage: benches/mediaserver/play_record.sh [CALLS] [HOLD_S] [WINDOW_S]
# env: RELAYS="rvoip rtpengine" (default both)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CALLS=${1:-200}
HOLD=${2:-30}
WINDOW=${3:-15}
RELAYS=${RELAYS:-"rvoip rtpengine"}
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
NG=2223
OUT=${OUT:-$ROOT/target/play-record-bench}
mkdir -p "$OUT"
# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
trap stop_pid EXIT
trap 'exit 130' INT TERM

cargo build -q --release --bin rvoip --bin rvoip-loadtest -p rvoip-controlplane -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml" || exit 1
PROMPT="$ROOT/prompts/welcome.wav"
HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
RATE=$(python3 -c "print($CALLS / ($HOLD - $WINDOW - 5))")

run_one() { # relay service
    local relay=$1 service=$2 extra=()
    rm -rf "$OUT/rec-$relay"; mkdir -p "$OUT/rec-$relay"
    wait_udp_free 127.0.0.1:$NG
    case $relay in
        rvoip)
            # shellcheck disable=SC2016
            start_ng_relay rvoip $((HOLD * 2 + 60)) || return 1
            ;;
        rtpengine)
            timeout $((HOLD * 2 + 60)) rtpengine --config-file="$ANCHORS/rtpengine-userspace.conf" --config-section=anchor \
                --pidfile="$OUT/rtpengine.pid" --recording-dir="$OUT/rec-rtpengine" --recording-method=pcap \
                > "$OUT/rtpengine.log" 2>&1 &
            local w=$!; sleep 0.5; PID=$(child_of "$w")
            ;;
    esac
    case $service in
        play) extra=(--play "$PROMPT@0") ;;
        record) extra=(--record) ;;
    esac
    local json="$OUT/$relay-$service.json"
    timeout $((HOLD * 2 + 30)) "$ROOT/target/release/rvoip-loadtest" media --ng 127.0.0.1:$NG \
        --rate "$RATE" --calls "$CALLS" --hold "${HOLD}s" --max-concurrent $((CALLS * 2)) \
        "${extra[@]}" --quiet --json "$json" > "$OUT/$relay-$service.txt" 2>&1 &
    local gen=$!
    sleep "$(python3 -c "print($CALLS / $RATE + 2)")"
    local t0 t1; t0=$(cpu_ticks "$PID")
    sleep "$WINDOW"
    t1=$(cpu_ticks "$PID")
    wait $gen
    stop_pid
    python3 - "$json" "$relay" "$service" "$((t1 - t0))" "$HZ" "$WINDOW" "$CALLS" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, relay, service, ticks, hz, window, calls = sys.argv[1:]
r = json.load(open(path))
rtp = r["rtp"]
expected = rtp["received"] + rtp["lost"]
loss = 100.0 * rtp["lost"] / expected if expected else 100.0
cpu = int(ticks) / int(hz)
per = 1e6 * cpu / (float(window) * int(calls))
svc = r.get("ng_services", {})
print(f"{relay:<10} {service:<7} completed {r['calls']['completed']:>5} loss {loss:6.3f} % "
      f"services ok {svc.get('accepted', 0):>5} refused {svc.get('refused', 0):>4} "
      f"cpu {cpu:6.2f} s  µs/call-s {per:8.1f}")
PY
}

: > "$OUT/summary.txt"
for relay in $RELAYS; do
    for service in plain play record; do
        run_one "$relay" "$service"
    done
done
python3 - "$OUT/summary.txt" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+)\s+(\S+).*µs/call-s\s+([\d.]+)", line)
    if m:
        rows[(m[1], m[2])] = float(m[3])
for svc in ("play", "record"):
    vals = {}
    for relay in ("rvoip", "rtpengine"):
        if (relay, svc) in rows and (relay, "plain") in rows:
            vals[relay] = (rows[(relay, svc)], rows[(relay, svc)] - rows[(relay, "plain")])
    if len(vals) == 2:
        (a, da), (b, db) = vals["rvoip"], vals["rtpengine"]
        print(f"{svc}: whole call rvoip {a:.1f} vs rtpengine {b:.1f} µs/call-s = {a / b:.2f}x; "
              f"the service's own cost {da:.1f} vs {db:.1f} = {da / db if db > 0 else float('nan'):.2f}x")
PY
