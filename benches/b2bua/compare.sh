#!/usr/bin/env bash
# B2BUA/SBC benchmark, side by side in one run: rvoip (config/sbc.toml,
# B2BUA with every call's media anchored on its relay) vs Kamailio 5.6 +
# rtpengine 10.5 userspace (the anchor's kamailio-sbc.cfg: topoh, dispatcher,
# rtpengine offer/answer/delete). Loopback only; every process is bounded in
# time and stopped by PID.
#
# Both SBCs are driven by the same tool, rvoip-loadtest uac -> SBC on
# 127.0.0.1:5060 -> rvoip-loadtest uas on :5070 (SIPp's built-in uac does not
# follow the Record-Route the anchor's Kamailio needs for ACK and BYE).
#
# usage: benches/b2bua/compare.sh signalling [DURATION_S] RATE...
#          calls (INVITE with SDP, 180, 200, ACK, 1 s, BYE) at stepped rates:
#          PASS (< 0.1 % failed, >= 98 % of the rate), achieved CPS, and CPU
#          per call in µs of the SBC's whole process tree (rvoip: dataplane +
#          control plane; anchor: kamailio + rtpengine) over the run.
#        benches/b2bua/compare.sh media HOLD_S CALLS...
#          CALLS concurrent calls, each with G.711 RTP at 50 pps per
#          direction through the SBC's relay, all up together for HOLD_S;
#          PASS = < 0.1 % failed calls and < 0.1 % RTP lost (as the UAC
#          received it); CPU per call over the whole run and per relayed
#          packet (both directions) of the SBC's processes.
# env: SBCS="rvoip kamailio" (default both); PORT_MIN, PORT_MAX: the relays'
#      media ports, the same for both (default 10000-29999: 5000 calls,
#      below the ephemeral range the load tool's sockets use); for rvoip's
#      signalling runs, its CPU per call by part (control plane, SIP workers,
#      ng orders, media workers; benches/threads.py) over the steady middle
#      of the run (from 60 % to 95 % of DURATION_S) is printed after each run
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
WHAT=${1:-signalling}; shift || true
SBCS=${SBCS:-"rvoip kamailio"}
PORT_MIN=${PORT_MIN:-10000}; PORT_MAX=${PORT_MAX:-29999}
OUT=${OUT:-$ROOT/target/b2bua-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
export RESULTS=$OUT/anchor QUIET_WAIT=${QUIET_WAIT:-60}

cargo build -q --release --bin rvoip --bin rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
stop_tree() {  # the SBC and every process under it
    [ -n "$PID" ] || return 0
    local all; all=$(python3 "$ANCHORS/cputree.py" --list "$PID" 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$all" ] && kill -TERM $all 2>/dev/null
    for _ in $(seq 100); do
        # shellcheck disable=SC2086
        kill -0 $all 2>/dev/null || break; sleep 0.1
    done
    # shellcheck disable=SC2086
    [ -n "$all" ] && kill -KILL $all 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=""
}
# The rvoip run's shared-memory rings go with it.
trap 'stop_tree; rm -rf /dev/shm/rvoip-b2bua-bench' EXIT
trap 'exit 130' INT TERM



start_rvoip() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:5062 127.0.0.1:2223
    rm -rf "$OUT/state" "$OUT/cdr.jsonl" /dev/shm/rvoip-b2bua-bench
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    sed -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-b2bua-bench\"#" \
        -e "s#^level = \"info\"#level = \"warn\"#" \
        -e "s#^requests_per_sec = 200#requests_per_sec = 0#" \
        -e "s#^port_min = 30000#port_min = $PORT_MIN#" -e "s#^port_max = 39999#port_max = $PORT_MAX#" \
        "$ROOT/config/sbc.toml" > "$OUT/sbc.toml"
    (cd "$OUT" && exec "$ROOT/target/release/rvoip" run --config "$OUT/sbc.toml" > "$OUT/rvoip-$1.log" 2>&1) &
    PID=$!
    sip_ready 5060
}

start_kamailio() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:2223
    # Probing mode 0: peers are up until a call fails on them (then probed
    # until they answer); mode 1 would take down the load tool's UAS, which
    # does not answer OPTIONS. Failover and media anchoring are unchanged.
    sed -e "s#@DISPATCHER_LIST@#$ANCHORS/dispatcher.list#" \
        -e 's/"ds_probing_mode", 1/"ds_probing_mode", 0/' \
        "$ANCHORS/kamailio-sbc.cfg" > "$OUT/kamailio-sbc.cfg"
    # One parent for both, so the step runner measures their whole tree.
    (
        timeout -s TERM 900 rtpengine --config-file="$ANCHORS/rtpengine-userspace.conf" \
            --config-section=anchor --port-min="$PORT_MIN" --port-max="$PORT_MAX" > "$OUT/rtpengine-$1.log" 2>&1 &
        sleep 0.5
        timeout -s TERM 900 kamailio -f "$OUT/kamailio-sbc.cfg" -x tlsf -DD -E -m 4096 -M 16 \
            > "$OUT/kamailio-$1.log" 2>&1 &
        wait
    ) &
    PID=$!
    sip_ready 5060
}

cpu_ticks() {  # CPU seconds of a process tree
    python3 "$ANCHORS/cputree.py" "$1" 2>/dev/null | awk '{print $1}'
}

# One load run through the running SBC ($PID): prints its CPU seconds and
# leaves the report in $OUT/uac-$1.json.  args: name rate calls hold media?
load() {
    local name=$1 rate=$2 calls=$3 hold=$4 media=$5
    wait_udp_free 127.0.0.1:5070 127.0.0.1:5080
    timeout -s TERM $((hold + calls / rate + 150)) "$ROOT/target/release/rvoip-loadtest" uas \
        --listen 127.0.0.1:5070 $media --quiet > "$OUT/uas-$name.log" 2>&1 &
    local uas=$!
    sleep 0.5
    local t0; t0=$(cpu_ticks "$PID")
    # shellcheck disable=SC2086
    timeout -s TERM $((hold + calls / rate + 120)) "$ROOT/target/release/rvoip-loadtest" uac \
        --target 127.0.0.1:5060 --listen 127.0.0.1:5080 --rate "$rate" --calls "$calls" \
        --max-concurrent $((calls + 1)) --hold "${hold}s" $media --quiet \
        --json "$OUT/uac-$name.json" > "$OUT/uac-$name.log" 2>&1
    local t1; t1=$(cpu_ticks "$PID")
    kill -TERM "$uas" 2>/dev/null; wait "$uas" 2>/dev/null
    python3 -c "import sys; print(float(sys.argv[2] or 0) - float(sys.argv[1] or 0))" "$t0" "$t1"
}

signalling() {
    local dur=${1:-20}; shift || true
    local steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(500 1000 2000)
    printf "%-10s %6s %-5s %9s %9s %12s %10s\n" sbc rate pass achieved fail_pct cpu_us_call inv200_p99 | tee "$OUT/summary.txt"
    for rate in "${steps[@]}"; do
        for sbc in $SBCS; do
            "start_$sbc" "$rate" || { echo "$sbc failed to start" >&2; stop_tree; continue; }
            if [ "$sbc" = rvoip ]; then
                # Per part, over the steady middle of the run.
                ( sleep $((2 + dur * 60 / 100))
                  python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-a"
                  sleep $((dur * 35 / 100))
                  python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-b" ) &
                local sampler=$!
            fi
            cpu=$(load "$sbc-$rate" "$rate" $((rate * dur)) 1 "")
            if [ "$sbc" = rvoip ]; then
                wait "$sampler" 2>/dev/null
                echo "rvoip $rate cps, µs of CPU per call by part: $(python3 "$ROOT/benches/threads.py" diff "$OUT/threads-a" "$OUT/threads-b" $((rate * (dur * 35 / 100))))" | tee -a "$OUT/parts.txt" >&2
            fi
            stop_tree
            python3 - "$sbc" "$rate" "$cpu" "$OUT/uac-$sbc-$rate.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
sbc, rate, cpu, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"{sbc:<10} {rate:>6} {'ERROR':<5}"); sys.exit()
c = r["calls"]; n = c["attempted"]
fail = 100.0 * c["failed"] / max(n, 1)
ok = fail < 0.1 and r["cps_achieved"] >= 0.98 * rate and c["completed"] + c["failed"] >= n
p99 = r["latency_ms"]["invite_to_200"]["p99"]
print(f"{sbc:<10} {rate:>6} {'PASS' if ok else 'FAIL':<5} {r['cps_achieved']:>9.0f} {fail:>9.4f} {1e6 * cpu / max(c['completed'], 1):>12.1f} {p99:>10.2f}")
PY
            sleep 2
        done
    done
    echo
    awk 'NR > 1 && $6 != "" { cpu[$1, $2] = $6; if (!($2 in steps)) order[n++] = $2; steps[$2] = 1; if ($3 == "PASS" && $2 > best[$1]) best[$1] = $2 }
         END {
           printf "%6s %26s\n", "rate", "CPU/call rvoip/(kam+rtpe)";
           for (i = 0; i < n; i++) {
             s = order[i];
             a = (cpu["rvoip", s] != "" && cpu["kamailio", s] > 0) ? sprintf("%.2fx", cpu["rvoip", s] / cpu["kamailio", s]) : "-";
             printf "%6s %26s\n", s, a;
           }
           printf "max passing rate: rvoip %d cps, kamailio+rtpengine %d cps\n", best["rvoip"], best["kamailio"];
         }' "$OUT/summary.txt" | tee -a "$OUT/summary.txt"
}

media() {
    local hold=${1:-20}; shift || true
    local steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(500 1000 2000)
    printf "%-10s %6s %-5s %9s %9s %9s %11s %11s\n" sbc calls pass failed rtp_sent lost_pct cpu_ms_call cpu_us_pkt | tee "$OUT/media.txt"
    for calls in "${steps[@]}"; do
        for sbc in $SBCS; do
            "start_$sbc" "m$calls" || { echo "$sbc failed to start" >&2; stop_tree; continue; }
            # Calls are placed over 10 s and each holds HOLD_S beyond that,
            # so all of them are up together for HOLD_S.
            local rate=$(( calls / 10 )); [ "$rate" -ge 20 ] || rate=20
            cpu=$(load "$sbc-m$calls" "$rate" "$calls" $((hold + calls / rate)) --media)
            stop_tree
            python3 - "$sbc" "$calls" "$cpu" "$OUT/uac-$sbc-m$calls.json" <<'PY' | tee -a "$OUT/media.txt"
import json, sys
sbc, calls, cpu, path = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
try:
    r = json.load(open(path))
except (OSError, ValueError):
    print(f"{sbc:<10} {calls:>6} {'ERROR':<5}"); sys.exit()
failed = r["calls"]["failed"]; sent = r["rtp"]["sent"]; lost = r["rtp"]["lost"]
lost_pct = 100.0 * lost / max(sent, 1)
ok = failed <= calls * 0.001 and lost_pct < 0.1 and r["calls"]["completed"] + failed >= calls
# The UAC's packets and as many from the UAS each cross the relay once.
print(f"{sbc:<10} {calls:>6} {'PASS' if ok else 'FAIL':<5} {failed:>9} {sent:>9} {lost_pct:>9.4f} {1000*cpu/calls:>11.2f} {1e6*cpu/max(2*sent,1):>11.2f}")
PY
            sleep 2
        done
    done
}

case $WHAT in
    signalling) signalling "$@" ;;
    media) media "$@" ;;
    *) echo "usage: $0 signalling [DURATION_S] RATE... | media HOLD_S CALLS..." >&2; exit 1 ;;
esac
