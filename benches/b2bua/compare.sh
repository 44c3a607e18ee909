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
#        SBCS="off metrics hep" benches/b2bua/compare.sh signalling 20 3000 3000 ...
#          the cost of operations: rvoip on config/sbc.toml with neither
#          metrics nor HEP capture (off, as the "rvoip" runs), with its
#          Prometheus endpoint scraped every second by curl (metrics), and
#          with HEP capture of every message to a UDP sink (hep) or over
#          TCP (heptcp, hep_transport = "tcp"); scraper
#          and sink are outside the measured tree. Repeat a rate to
#          alternate the three; the means per rate and their ratios to the
#          first are printed.
#        SBCS="literal dns" benches/b2bua/compare.sh signalling ...
#          the cost of RFC 3263 routing: rvoip on config/dns.toml with its
#          core trunk as the DNS name sip:trunk.rvoip.test (NAPTR -> SRV -> A
#          from dnsmasq on 127.0.0.1:5353, TTL 300 s, cache warm after the
#          first call) against the same file with the trunk as the literal
#          127.0.0.1:5070; prints the resolutions each run made.
#        SBCS="rvoip shards" benches/b2bua/compare.sh signalling 20 1000 2000 3000
#          rvoip on one control-plane shard and on SHARDS (default 2), the
#          control plane's CPU per call thread by thread for the shards.
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
    if [ -n "$HELPER" ]; then kill -TERM "$HELPER" 2>/dev/null; wait "$HELPER" 2>/dev/null; HELPER=""; fi
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
trap 'stop_tree; [ -z "$DNSPID" ] || kill -TERM "$DNSPID" 2>/dev/null; rm -rf /dev/shm/rvoip-b2bua-bench' EXIT
trap 'exit 130' INT TERM



# rvoip on config/sbc.toml; $2 keeps its metrics endpoint (metrics) or HEP
# capture (hep), both off otherwise.
HELPER=""
start_sbc() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:5062 127.0.0.1:2223
    rm -rf "$OUT/state" "$OUT/cdr.jsonl" /dev/shm/rvoip-b2bua-bench
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    local keep=()
    [ "${2:-}" = metrics ] || keep+=(-e '/^\[metrics\]$/,/^listen = /d')
    case ${2:-} in
        hep) ;;
        heptcp) keep+=(-e 's/^hep = \(.*\)/hep = \1\nhep_transport = "tcp"/') ;;
        *) keep+=(-e '/^hep = /d') ;;
    esac
    [ "${2:-}" = shards ] && keep+=(-e "s#^\\[controlplane\\]#[controlplane]\\nshards = ${SHARDS:-2}#")
    sed "${keep[@]}" -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-b2bua-bench\"#" \
        -e "s#^level = \"info\"#level = \"warn\"#" \
        -e "s#^requests_per_sec = 200#requests_per_sec = 0#" \
        -e "s#^port_min = 30000#port_min = $PORT_MIN#" -e "s#^port_max = 39999#port_max = $PORT_MAX#" \
        "$ROOT/config/sbc.toml" > "$OUT/sbc.toml"
    case ${2:-} in
        metrics)  # Prometheus's part: a scrape every second.
            timeout -s TERM 900 bash -c 'while :; do curl -s -o /dev/null http://127.0.0.1:9464/metrics; sleep 1; done' &
            HELPER=$! ;;
        hep)  # The collector: takes every packet, keeps none.
            timeout -s TERM 900 python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", 9060))
while True:
    s.recv(65536)' &
            HELPER=$! ;;
        heptcp)  # The collector over TCP: reads every stream, keeps nothing.
            timeout -s TERM 900 python3 -c 'import socket, threading
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 9060)); l.listen(16)
def drain(c):
    while c.recv(1 << 20):
        pass
while True:
    c, _ = l.accept()
    threading.Thread(target=drain, args=(c,), daemon=True).start()' &
            HELPER=$!; sleep 0.3 ;;
    esac
    (cd "$OUT" && exec "$ROOT/target/release/rvoip" run --config "$OUT/sbc.toml" > "$OUT/rvoip-$1.log" 2>&1) &
    PID=$!
    sip_ready 5060
}
start_rvoip() { start_sbc "$1" off; }
start_shards() { start_sbc "shards-$1" shards; }
start_off() { start_sbc "off-$1" off; }
start_metrics() { start_sbc "metrics-$1" metrics; }
start_hep() { start_sbc "hep-$1" hep; }
start_heptcp() { start_sbc "heptcp-$1" heptcp; }

# rvoip on config/dns.toml with the core trunk's targets line replaced by
# $2; dnsmasq (outside the measured tree) publishes trunk.rvoip.test.
DNSPID=""
start_dnsconf() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:5062 127.0.0.1:2223 127.0.0.1:5353
    rm -rf "$OUT/state" "$OUT/cdr.jsonl" /dev/shm/rvoip-b2bua-bench
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    if [ -z "$DNSPID" ]; then
        printf '%s\n' port=5353 listen-address=127.0.0.1 bind-interfaces no-resolv no-hosts \
            local=/rvoip.test/ local-ttl=300 \
            naptr-record=trunk.rvoip.test,10,10,S,SIP+D2U,,_sip._udp.trunk.rvoip.test \
            srv-host=_sip._udp.trunk.rvoip.test,core.trunk.rvoip.test,5070,10,1 \
            host-record=core.trunk.rvoip.test,127.0.0.1 > "$OUT/dnsmasq.conf"
        timeout -s TERM 3600 dnsmasq --keep-in-foreground --conf-file="$OUT/dnsmasq.conf" --pid-file= \
            > "$OUT/dnsmasq.log" 2>&1 &
        DNSPID=$!
        sleep 0.3
    fi
    sed -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-b2bua-bench\"#" \
        -e "s#^requests_per_sec = 200#requests_per_sec = 0#" \
        -e "s#^port_min = 30000#port_min = $PORT_MIN#" -e "s#^port_max = 39999#port_max = $PORT_MAX#" \
        -e "s#^targets = .*#$2#" \
        "$ROOT/config/dns.toml" > "$OUT/dns-$1.toml"
    (cd "$OUT" && exec "$ROOT/target/release/rvoip" run --config "$OUT/dns-$1.toml" > "$OUT/rvoip-$1.log" 2>&1) &
    PID=$!
    sip_ready 5060
}
start_literal() { start_dnsconf "literal-$1" 'targets = ["127.0.0.1:5070"]'; }
start_dns() { start_dnsconf "dns-$1" 'targets = [{ uri = "sip:trunk.rvoip.test" }]'; }

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
            if [ "$sbc" = rvoip ] || [ "$sbc" = shards ]; then
                # Per part (the control plane thread by thread with
                # shards), over the steady middle of the run.
                by_name=""; [ "$sbc" = shards ] && by_name=1
                ( sleep $((2 + dur * 60 / 100))
                  RVOIP_THREADS_BY_NAME=$by_name python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-a"
                  sleep $((dur * 35 / 100))
                  RVOIP_THREADS_BY_NAME=$by_name python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-b" ) &
                local sampler=$!
            fi
            cpu=$(load "$sbc-$rate" "$rate" $((rate * dur)) 1 "")
            if [ "$sbc" = rvoip ] || [ "$sbc" = shards ]; then
                wait "$sampler" 2>/dev/null
                echo "$sbc $rate cps, µs of CPU per call by part: $(python3 "$ROOT/benches/threads.py" diff "$OUT/threads-a" "$OUT/threads-b" $((rate * (dur * 35 / 100))))" | tee -a "$OUT/parts.txt" >&2
            fi
            stop_tree
            if [ "$sbc" = dns ] || [ "$sbc" = literal ]; then
                # Resolutions made over the run (the first call's, then one
                # per TTL) and cache hits, as rvoip logged them at exit.
                grep -ho 'queries=[0-9]* hits=[0-9]*' "$OUT/rvoip-$sbc-$rate.log" | sed "s/^/$sbc $rate cps: /" >&2
            fi
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
    if [ "$(echo "$SBCS" | wc -w)" -gt 2 ]; then
        # Each SBC's mean over the repeats of a rate, and its ratio to the
        # first's.
        awk -v LIST="$SBCS" 'NR > 1 && $6 != "" { sum[$1, $2] += $6; n[$1, $2]++; if (!($2 in seen)) { order[k++] = $2; seen[$2] = 1 } }
             END {
               m = split(LIST, s, " ");
               for (i = 0; i < k; i++) {
                 r = order[i]; base = sum[s[1], r] / n[s[1], r];
                 for (j = 1; j <= m; j++) if (n[s[j], r]) {
                   mean = sum[s[j], r] / n[s[j], r];
                   printf "%6s cps %-8s %3d runs, mean %7.1f µs CPU/call, %.3fx of %s\n", r, s[j], n[s[j], r], mean, mean / base, s[1];
                 }
               }
             }' "$OUT/summary.txt" | tee -a "$OUT/summary.txt"
        return
    fi
    # The first SBC against the last: rvoip/(kamailio+rtpengine), dns/literal.
    local a=${SBCS%% *} b=${SBCS##* }
    awk -v A="$a" -v B="$b" 'NR > 1 && $6 != "" { cpu[$1, $2] = $6; if (!($2 in steps)) order[n++] = $2; steps[$2] = 1; if ($3 == "PASS" && $2 > best[$1]) best[$1] = $2 }
         END {
           printf "%6s %26s\n", "rate", "CPU/call " A "/" B;
           for (i = 0; i < n; i++) {
             s = order[i];
             r = (cpu[A, s] != "" && cpu[B, s] > 0) ? sprintf("%.2fx", cpu[A, s] / cpu[B, s]) : "-";
             printf "%6s %26s\n", s, r;
           }
           printf "max passing rate: %s %d cps, %s %d cps\n", A, best[A], B, best[B];
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
