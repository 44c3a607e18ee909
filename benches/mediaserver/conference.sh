#!/usr/bin/env bash
# Conference capacity: participants per core of the media server, rooms of
# 10. rvoip runs `config/mediaserver.toml` with ONE media worker pinned to
# core 1; rvoip-loadtest (pinned to core 0) places PARTICIPANTS calls to
# conf-<n/10>, each sending a tone in CODEC (or silence, for all but the
# first TALKERS of each room) and receiving its room's mix for HOLD
# seconds. Over WINDOW seconds with every participant in, it measures the
# media worker thread's CPU; participants per core = participants up ×
# window / worker CPU seconds. Loss is what the callers did not receive.
# Loopback only; every process is bounded in time.
#
# usage: benches/mediaserver/conference.sh [PARTICIPANTS] [CODEC] [TALKERS] [HOLD_S] [WINDOW_S]
#   defaults: 1000 PCMU 0 (all talk) 40 10
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
N=${1:-1000}
CODEC=${2:-PCMU}
TALKERS=${3:-0}
HOLD=${4:-40}
WINDOW=${5:-10}
OUT=${OUT:-$ROOT/target/mediaserver-bench}
mkdir -p "$OUT"
# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
trap 'stop_pid; rm -rf /dev/shm/rvoip-bench-conf' EXIT
trap 'exit 130' INT TERM

cargo build -q --release --bin rvoip --bin rvoip-loadtest -p rvoip-controlplane -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml" || exit 1

rm -rf "$OUT/state"
sed -e 's/cores = "all"/cores = [1]/' \
    -e 's/port_min = 30000/port_min = 10000/; s/port_max = 39999/port_max = 29999/' \
    -e "s|prompt_dir = \"../prompts\"|prompt_dir = \"$ROOT/prompts\"|" \
    -e "s|dir = \"../recordings\"|dir = \"$OUT/recordings\"|" \
    -e 's|state_dir = "../state"|state_dir = "state"|' \
    -e 's|cdr_file = "cdr.jsonl"|cdr_file = "cdr.jsonl"|' \
    -e 's|ring_dir = "/dev/shm/rvoip"|ring_dir = "/dev/shm/rvoip-bench-conf"|' \
    -e 's/calls_per_source = 0/calls_per_source = 0/' \
    -e 's/requests_per_sec = 200/requests_per_sec = 100000/' \
    "$ROOT/config/mediaserver.toml" > "$OUT/mediaserver.toml"
cp "$ROOT/config/users.toml" "$OUT/"
wait_udp_free 127.0.0.1:5060
( cd "$OUT" && exec timeout $((HOLD * 2 + 60)) "$ROOT/target/release/rvoip" run --config "$OUT/mediaserver.toml" ) > "$OUT/rvoip.log" 2>&1 &
wrapper=$!
sleep 1
PID=$(child_of "$wrapper")
sip_ready 5060 || { echo "rvoip did not start" >&2; cat "$OUT/rvoip.log" >&2; exit 1; }
worker_tid() { grep -l '^media-0$' /proc/"$PID"/task/*/comm 2>/dev/null | head -1 | cut -d/ -f5; }
TID=$(worker_tid)
HZ=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$PID/task/$TID/stat" 2>/dev/null || echo 0; }
ptick() { awk '{print $14 + $15}' "/proc/$PID/stat" 2>/dev/null || echo 0; }

RATE=$(python3 -c "print(max(1, $N / ($HOLD - $WINDOW - 5)))")
json="$OUT/conf-$N-$CODEC-$TALKERS.json"
talk=(); [ "$TALKERS" -gt 0 ] && talk=(--talkers "$TALKERS")
timeout $((HOLD * 2 + 30)) taskset -c 0 "$ROOT/target/release/rvoip-loadtest" uac --target 127.0.0.1:5060 \
    --listen 127.0.0.2:0 --service conf- --rooms-of 10 "${talk[@]}" --calls "$N" --rate "$RATE" \
    --hold "${HOLD}s" --max-concurrent $((N * 2)) --media --codec "$CODEC" --audio-check 0 \
    --quiet --json "$json" > "$OUT/conf-$N-$CODEC-$TALKERS.txt" 2>&1 &
gen=$!
# Everyone is in after N / RATE seconds (+1 s); the window follows.
sleep "$(python3 -c "print($N / $RATE + 2)")"
t0=$(ticks); p0=$(ptick)
sleep "$WINDOW"
t1=$(ticks); p1=$(ptick)
wait $gen
python3 - "$json" "$N" "$CODEC" "$TALKERS" "$(( t1 - t0 ))" "$(( p1 - p0 ))" "$HZ" "$WINDOW" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
path, n, codec, talkers, wt, pt, hz, window = sys.argv[1:]
n, wt, pt, hz, window = int(n), int(wt), int(pt), int(hz), float(window)
r = json.load(open(path))
rtp = r["rtp"]
expected = rtp["received"] + rtp["lost"]
loss = 100.0 * rtp["lost"] / expected if expected else 100.0
worker = wt / hz
proc = pt / hz
per_core = n * window / worker if worker else float("inf")
print(f"participants {n} codec {codec} talkers/room {talkers or 10}: completed {r['calls']['completed']}, "
      f"loss {loss:.3f} %, media worker CPU {worker:.2f} s of {window:.0f} s ({100*worker/window:.0f} %), "
      f"whole rvoip {proc:.2f} s; participants per core (media worker): {per_core:,.0f}; "
      f"µs of worker CPU per participant-second: {1e6 * worker / (n * window):.1f}")
PY
