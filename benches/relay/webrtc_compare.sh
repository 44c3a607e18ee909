#!/usr/bin/env bash
# WebRTC legs through the relay, rvoip versus rtpengine 10.5 (userspace, the
# anchor's configuration), in one sitting, both driven by rvoip-loadtest's
# media mode with --webrtc: leg A offers what a browser offers
# (UDP/TLS/RTP/SAVPF, ICE, DTLS fingerprint with a=setup:actpass, rtcp-mux),
# the same ng flags ask both relays to bridge it to a plain RTP/AVP leg B
# (transport-protocol RTP/AVP, ICE remove, rtcp-mux demux); leg A checks the
# relay's candidate, answers its checks, runs the DTLS handshake in the role
# the answer leaves and sends SRTP under the exported keys.
#
# Two phases per relay:
#   setups:  SETUP_CALLS calls offered at SETUP_RATE per second, each held
#            1 s: DTLS-SRTP setups per second achieved (legs keyed over the
#            seconds calls were offered), answer-to-keys latency, and the
#            relay's CPU per setup (its whole process tree over the phase,
#            including each call's 1 s of media);
#   packets: CALLS calls at RATE per second held HOLD seconds, RTP both ways
#            (50 pps per leg, SRTP on leg A): the relay's CPU per relayed
#            packet in the window when all calls are up (no setups in it),
#            loss and transit.
# Then the rvoip/rtpengine ratios.
#
# usage: benches/relay/webrtc_compare.sh [CALLS] [RATE] [HOLD_S] [SETUP_CALLS] [SETUP_RATE]
#   e.g. benches/relay/webrtc_compare.sh 500 100 20 2000 200
#   (HOLD_S must exceed CALLS/RATE + 5: the packets window needs every call up)
# env: RELAYS="rvoip rtpengine" (default both)
# Loopback only; each process is bounded in time.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
CALLS=${1:-500}; RATE=${2:-100}; HOLD=${3:-20}
SETUP_CALLS=${4:-2000}; SETUP_RATE=${5:-200}
OUT=${OUT:-$ROOT/target/relay-webrtc}
rm -rf "$OUT"; mkdir -p "$OUT"
cargo build -q --release --bin rvoip -p rvoip-controlplane --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
trap stop_pid EXIT
trap 'exit 130' INT TERM

# run RELAY PHASE CALLS RATE HOLD_S: one load against a freshly started
# relay; leaves $OUT/RELAY-PHASE.json (the load's report), .txt (its
# progress, a line a second) and .cpu: the relay's CPU seconds, over the
# whole load (setups) or, for packets, over the steady window in which
# every call is up and none has ended (from 3 s after the last call is
# offered to 1 s before the first hangs up), then the seconds of that
# window.
run() {
    local relay=$1 phase=$2 calls=$3 rate=$4 hold=$5
    local limit=$((calls / rate + hold + 60))
    wait_udp_free 127.0.0.1:2223
    start_ng_relay "$relay" $((limit + 30)) || { echo "$relay failed to start" >&2; stop_pid; return 1; }
    echo "[$relay $phase] $calls calls at $rate/s, held ${hold}s" >&2
    local c0 c1 t0 from=0 until=0
    c0=$("$ANCHORS/cputree.py" "$PID")
    t0=$(date +%s.%N)
    timeout "$limit" "$ROOT/target/release/rvoip-loadtest" media --webrtc --ng 127.0.0.1:2223 \
        --rate "$rate" --calls "$calls" --hold "${hold}s" --max-concurrent "$calls" \
        --json "$OUT/$relay-$phase.json" 2> "$OUT/$relay-$phase.txt" &
    local load=$!
    if [ "$phase" = packets ]; then
        from=$((calls / rate + 3)); until=$((hold - 1))
        sleep "$(python3 -c "print(max(0, $t0 + $from - $(date +%s.%N)))")"
        c0=$("$ANCHORS/cputree.py" "$PID")
        sleep "$(python3 -c "print(max(0, $t0 + $until - $(date +%s.%N)))")"
        c1=$("$ANCHORS/cputree.py" "$PID")
    fi
    wait "$load"
    [ "$phase" = packets ] || c1=$("$ANCHORS/cputree.py" "$PID")
    echo "$(python3 -c "print($c1 - $c0)") $from $until" > "$OUT/$relay-$phase.cpu"
    stop_pid
    cp "$OUT/$relay.log" "$OUT/$relay-$phase.log" 2>/dev/null
}

for relay in ${RELAYS:-rvoip rtpengine}; do
    run "$relay" setups "$SETUP_CALLS" "$SETUP_RATE" 1
    run "$relay" packets "$CALLS" "$RATE" "$HOLD"
done

python3 - "$OUT" "$SETUP_CALLS" "$SETUP_RATE" ${RELAYS:-rvoip rtpengine} <<'PY' | tee "$OUT/summary.txt"
import json, sys
out, setup_calls, setup_rate, relays = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
import re
def load(relay, phase):
    """The report, the relay's CPU seconds, and for packets the packets the
    load received in the CPU's window (from its per-second progress)."""
    try:
        r = json.load(open(f"{out}/{relay}-{phase}.json"))
        cpu, start, end = open(f"{out}/{relay}-{phase}.cpu").read().split()
        progress = open(f"{out}/{relay}-{phase}.txt").read()
    except (OSError, ValueError):
        return None, None, 0
    window = 0
    for t, pps in re.findall(r"\[\s*([0-9.]+)s\].*?rtp ([0-9]+) pps rx", progress):
        if float(start) < float(t) <= float(end):
            window += int(pps)
    return r, float(cpu), window
offered_s = setup_calls / setup_rate
print(f"setups: {setup_calls} WebRTC calls offered at {setup_rate:.0f}/s ({offered_s:.0f} s), each held 1 s;")
print("setups/s/core: the rate one core of the relay's CPU per setup would carry")
print(f"{'relay':<10} {'keyed':>6} {'failed':>6} {'setups/s':>9} {'keys_p50_ms':>12} {'keys_p99_ms':>12} {'cpu_ms/setup':>13} {'setups/s/core':>14}")
setup = {}
for relay in relays:
    r, cpu, _ = load(relay, "setups")
    if r is None:
        print(f"{relay:<10} ERROR (see {out}/{relay}-setups.txt)")
        continue
    w = r["webrtc"]
    keyed = w["keyed"]
    per = 1e3 * cpu / max(keyed, 1)
    setup[relay] = per
    print(f"{relay:<10} {keyed:>6} {r['calls']['failed']:>6} {keyed / offered_s:>9.1f} "
          f"{w['answer_to_keys_ms']['p50']:>12.2f} {w['answer_to_keys_ms']['p99']:>12.2f} {per:>13.3f} {1e3 / max(per, 1e-9):>14.0f}")
print()
print("packets: WebRTC (SRTP, ICE, DTLS) <-> plain RTP/AVP; us/pkt: the relay's CPU over the steady window / packets relayed in it")
print(f"{'relay':<10} {'calls':>6} {'keyed':>6} {'rtp_sent':>9} {'rtp_recv':>9} {'lost':>6} {'transit_p50':>11} {'transit_p99':>11} {'us/pkt':>8}")
pkt = {}
for relay in relays:
    r, cpu, window = load(relay, "packets")
    if r is None:
        print(f"{relay:<10} ERROR (see {out}/{relay}-packets.txt)")
        continue
    rtp, t = r["rtp"], r["latency_ms"]["rtp_transit"]
    per = 1e6 * cpu / max(window, 1)
    pkt[relay] = per
    print(f"{relay:<10} {r['calls']['completed']:>6} {r['webrtc']['keyed']:>6} {rtp['sent']:>9} {rtp['received']:>9} "
          f"{rtp['lost']:>6} {t['p50']:>11.3f} {t['p99']:>11.3f} {per:>8.2f}")
print()
if "rvoip" in setup and setup.get("rtpengine"):
    print(f"CPU per DTLS-SRTP setup, rvoip/rtpengine: {setup['rvoip'] / setup['rtpengine']:.2f}x")
if "rvoip" in pkt and pkt.get("rtpengine"):
    print(f"CPU per relayed packet (WebRTC<->RTP), rvoip/rtpengine: {pkt['rvoip'] / pkt['rtpengine']:.2f}x")
PY
