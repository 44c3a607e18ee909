#!/usr/bin/env bash
# The media relay driven by rvoip-loadtest's media-only mode, rvoip versus
# rtpengine 10.5 (userspace, the anchor's configuration), in one sitting:
# per relay, N calls set up over ng at RATE per second, each with RTP both
# ways (50 pps per leg) through the relay for HOLD seconds, then deleted.
# Prints the relay's CPU per relayed packet (whole process tree over the
# run), loss, and transit percentiles from the load generator's report.
#
# usage: benches/relay/loadtest_compare.sh [CALLS] [RATE] [HOLD_S]
#   e.g. benches/relay/loadtest_compare.sh 500 50 20
# env: LOADTEST_ARGS="--srtp AES_CM_128_HMAC_SHA1_80" (SRTP on both legs,
#      transcrypted by the relay), RELAYS="rvoip rtpengine" (default both)
# Loopback only; each process is bounded in time.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
CALLS=${1:-500}; RATE=${2:-50}; HOLD=${3:-20}
OUT=${OUT:-$ROOT/target/relay-loadtest}
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build -q --release --bin rvoip -p rvoip-controlplane --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"
LIMIT=$((CALLS / RATE + HOLD + 60))

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"

printf "%-10s %7s %10s %10s %8s %11s %11s %10s\n" relay calls rtp_sent rtp_recv lost transit_p50 transit_p99 us_per_pkt | tee "$OUT/summary.txt"
for relay in ${RELAYS:-rvoip rtpengine}; do
    wait_udp_free 127.0.0.1:2223
    if [ "$relay" = rvoip ]; then
        timeout $((LIMIT + 30)) "$ROOT/target/release/rvoip" run --config "$ROOT/config/rvoip.toml" > "$OUT/rvoip.log" 2>&1 &
    else
        timeout $((LIMIT + 30)) rtpengine --config-file="$ANCHORS/rtpengine-userspace.conf" --config-section=anchor > "$OUT/rtpengine.log" 2>&1 &
    fi
    wrapper=$!
    sleep 2
    pid=$(child_of "$wrapper")
    c0=$("$ANCHORS/cputree.py" "$pid")
    timeout "$LIMIT" "$ROOT/target/release/rvoip-loadtest" media --ng 127.0.0.1:2223 \
        --rate "$RATE" --calls "$CALLS" --hold "${HOLD}s" --max-concurrent "$CALLS" --quiet ${LOADTEST_ARGS:-} \
        --json "$OUT/$relay.json" 2> "$OUT/$relay-loadtest.txt"
    c1=$("$ANCHORS/cputree.py" "$pid")
    kill -TERM "$wrapper" "$pid" 2>/dev/null
    wait "$wrapper" 2>/dev/null
    python3 - "$relay" "$OUT/$relay.json" "$c0" "$c1" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
relay, path, c0, c1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"{relay:<10} ERROR (see the logs)")
    sys.exit()
rtp = r["rtp"]
relayed = max(rtp["received"], 1)
t = r["latency_ms"]["rtp_transit"]
print(f"{relay:<10} {r['calls']['completed']:>7} {rtp['sent']:>10} {rtp['received']:>10} {rtp['lost']:>8} "
      f"{t['p50']:>11.3f} {t['p99']:>11.3f} {1e6 * (c1 - c0) / relayed:>10.2f}")
PY
done
