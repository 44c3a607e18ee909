#!/usr/bin/env bash
# Transcoding benchmark, side by side in one run: rvoip vs rtpengine 10.5
# (userspace), both driven by the same ng client and RTP generator
# (rvoip-loadtest's media mode: per call an ng offer with
# `codec: {transcode: [<B codec>]}`, an answer in the B codec, a tone each
# way for the hold time, delete), the same Opus setting asked of both
# (`opus/48000/1/<bitrate>`; complexity is libopus's default, 10, on both).
# Loopback only; every process is bounded in time.
#
# usage: benches/transcode/compare.sh [CALLS] [HOLD_S] [WINDOW_S]
#   CALLS concurrent transcoded calls, held HOLD_S each, measured over
#   WINDOW_S once all are up.
# env: RELAYS="rvoip rtpengine" (default both); PAIRS="PCMU:opus PCMA:G722
#   PCMU:G729" (default; G729 builds rvoip with the g729 feature);
#   OPUS_BITRATE (default 24000)
#
# Per pair and relay it prints: loss %, relay CPU seconds over the window,
# transcoded calls per CPU-second (calls up × window / CPU), the audio
# verdict (streams judged / clear), the floor (the codec work alone, both
# directions, as calls per core: `codec_floor`), and the ratios.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CALLS=${1:-200}
HOLD=${2:-20}
WINDOW=${3:-10}
RELAYS=${RELAYS:-"rvoip rtpengine"}
PAIRS=${PAIRS:-"PCMU:opus PCMA:G722 PCMU:G729"}
OPUS_BITRATE=${OPUS_BITRATE:-24000}
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
NG=2223
OUT=${OUT:-$ROOT/target/transcode-bench}
mkdir -p "$OUT"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
trap stop_pid EXIT
trap 'exit 130' INT TERM

cargo build -q --release --features g729 --bin rvoip --bin rvoip-loadtest -p rvoip-controlplane -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml" || exit 1
cargo build -q --release --features g729 -p rvoip-benches --bin codec_floor --manifest-path "$ROOT/Cargo.toml" || exit 1

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

start_relay() { start_ng_relay "$1" $((HOLD * 3 + WINDOW + 60)); }

# Calls start at CALLS/HOLD a second and each is held HOLD: CALLS are up
# from HOLD s on, for as long as calls keep starting (WINDOW + 2 s more).
RATE=$(python3 -c "print($CALLS / $HOLD)")
TOTAL=$(python3 -c "print(int($CALLS * ($HOLD + $WINDOW + 2) / $HOLD))")

printf "%-10s %-11s %8s %9s %12s %9s\n" relay pair loss_pct cpu_s calls_per_cpu_s audio | tee "$OUT/summary.txt"
for pair in $PAIRS; do
    a=${pair%%:*}; b=${pair##*:}
    for relay in $RELAYS; do
        wait_udp_free 127.0.0.1:$NG
        start_relay "$relay" || { echo "$relay failed to start" >&2; stop_pid; continue; }
        json="$OUT/$relay-$a-$b.json"
        timeout $((HOLD * 3 + WINDOW + 30)) "$ROOT/target/release/rvoip-loadtest" media --ng 127.0.0.1:$NG \
            --rate "$RATE" --calls "$TOTAL" --hold "${HOLD}s" --max-concurrent $((CALLS * 2)) \
            --codec "$a" --answer-codec "$b" --transcode --opus-bitrate "$OPUS_BITRATE" \
            --audio-check 8 --quiet --json "$json" > "$OUT/$relay-$a-$b.txt" 2>&1 &
        gen=$!
        sleep "$((HOLD + 1))"
        t0=$(cpu_ticks "$PID")
        sleep "$WINDOW"
        t1=$(cpu_ticks "$PID")
        wait $gen
        cpu=$(python3 -c "print(($t1 - $t0) / $HZ)")
        python3 - "$json" "$relay" "$a:$b" "$cpu" "$CALLS" "$WINDOW" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, relay, pair, cpu, calls, window = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{relay:<10} {pair:<11} no report ({e})"); sys.exit(0)
rtp = r["rtp"]
expected = rtp["received"] + rtp["lost"]
loss = 100.0 * rtp["lost"] / expected if expected else 100.0
cpu = float(cpu)
per = int(calls) * int(window) / cpu if cpu > 0 else 0
a = r["audio"]
print(f"{relay:<10} {pair:<11} {loss:8.3f} {cpu:9.2f} {per:12.0f} {a['streams_clear']:>4}/{a['streams_judged']}")
PY
        stop_pid
        sleep 1
    done
done

echo
echo "floor: the codec work alone (decode, resample, encode per 20 ms frame, both directions; each call from its start for HOLD s)"
"$ROOT/target/release/codec_floor" --calls 20 --seconds "$HOLD" $PAIRS | tee "$OUT/floor.txt"

echo
awk 'NR > 1 && NF >= 6 { per[$1, $2] = $5; pairs[$2] = 1 }
     FILENAME ~ /floor/ { floor[$1] = $2 }
     END {
       printf "%-11s %18s %16s\n", "pair", "rvoip/rtpengine", "rvoip/floor";
       for (p in pairs)
         if (per["rvoip", p] > 0 && per["rtpengine", p] > 0)
           printf "%-11s %17.2fx %15.2fx\n", p, per["rvoip", p] / per["rtpengine", p], (floor[p] > 0 ? per["rvoip", p] / floor[p] : 0);
     }' "$OUT/summary.txt" "$OUT/floor.txt" | tee -a "$OUT/summary.txt"
