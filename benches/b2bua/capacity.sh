#!/usr/bin/env bash
# Capacity of config/sbc.toml as shipped, on this host, with the load tool on
# the same cores: rvoip-loadtest uac at RATE calls/s, each held HOLD_S with
# G.711 media both ways, for DURATION_S of new calls, through the SBC to
# rvoip-loadtest uas on the core trunk; once with admission by load
# ([overload], on by default) and once with it off. Prints per run: calls
# attempted/completed, failures by reason (503 = shed by admission), RTP
# loss and transit p99 of the completed calls, and the SBC's own counters.
# Loopback only; every process is bounded in time and stopped by PID.
#
# usage: benches/b2bua/capacity.sh [RATE] [HOLD_S] [DURATION_S] [MODES]
#        MODES: "on off" (default), admission by load on / off
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RATE=${1:-50}; HOLD=${2:-40}; DURATION=${3:-60}; MODES=${4:-"on off"}
OUT=${OUT:-$ROOT/target/b2bua-capacity}
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build -q --release --bin rvoip --bin rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release
# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
UAS=""
cleanup() {
    stop_pid
    [ -n "$UAS" ] && kill -TERM "$UAS" 2>/dev/null && wait "$UAS" 2>/dev/null
    rm -rf /dev/shm/rvoip-capacity
}
trap cleanup EXIT
trap 'exit 130' INT TERM

printf '%-4s %6s %9s %9s %s\n' mode calls completed failed "details"
for mode in $MODES; do
    dir=$OUT/$mode; mkdir -p "$dir"
    cp "$ROOT/config/users.toml" "$dir/"
    enabled=true; [ "$mode" = off ] && enabled=false
    sed -e "s|ring_dir = \"/dev/shm/rvoip\"|ring_dir = \"/dev/shm/rvoip-capacity\"|" \
        -e "s|state_dir = \"../state\"|state_dir = \"state\"|" \
        -e "s|^enabled = true|enabled = $enabled|" \
        "$ROOT/config/sbc.toml" > "$dir/sbc.toml"
    wait_udp_free 127.0.0.1:5060 127.0.0.1:5070
    (cd "$dir" && RVOIP_LOG=info,rvoip=debug exec "$BIN/rvoip" run --config sbc.toml 2> rvoip.log) &
    PID=$!
    sip_ready 5060 || { echo "SBC did not start"; cat "$dir/rvoip.log"; exit 1; }
    timeout $((DURATION + HOLD + 90)) "$BIN/rvoip-loadtest" uas --listen 127.0.0.1:5070 --media --quiet \
        > /dev/null 2>&1 &
    UAS=$!
    sleep 0.5
    timeout $((DURATION + HOLD + 60)) "$BIN/rvoip-loadtest" uac --target 127.0.0.1:5060 \
        --listen 127.0.0.2:0 --rate "$RATE" --duration "${DURATION}s" --hold "${HOLD}s" \
        --media --max-fail-pct 100 --quiet --json "$dir/uac.json" --plot "$dir/uac.html" \
        > "$dir/uac.txt" 2>&1
    stop_pid
    kill -TERM "$UAS" 2>/dev/null; wait "$UAS" 2>/dev/null; UAS=""
    python3 - "$mode" "$dir" <<'PY'
import json, re, sys
mode, d = sys.argv[1], sys.argv[2]
r = json.load(open(f"{d}/uac.json"))
c = r["calls"]; rtp = r["rtp"]
exp = rtp["received"] + rtp["lost"]
loss = 100.0 * rtp["lost"] / exp if exp else 0.0
log = open(f"{d}/rvoip.log").read()
busy = sorted(int(b) for b in re.findall(r"media load busy_pct=(\d+)", log))
pps = sorted(int(b) for b in re.findall(r"packets_per_sec=(\d+)", log))
def counter(name):
    m = re.findall(rf"{name}=(\d+)", log)
    return m[-1] if m else "?"
print(f"{mode:<4} {c['attempted']:>6} {c['completed']:>9} {c['failed']:>9} "
      f"by reason {r['failures_by_reason']}; RTP lost {loss:.2f} %, "
      f"transit p99 {r['latency_ms']['rtp_transit']['p99']} ms, MOS {r['mos']:.2f}; "
      f"SBC: overload_refused={counter('overload_refused')} retransmissions={counter('retransmissions')}, "
      f"media worker demand p50/max {busy[len(busy)//2] if busy else '?'}/{busy[-1] if busy else '?'} %, "
      f"relayed max {pps[-1] if pps else '?'} pkt/s")
PY
done
