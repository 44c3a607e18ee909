#!/usr/bin/env bash
# SIP over TLS, side by side in one run: rvoip (config/proxy.toml with a TLS
# listener on 127.0.0.1:5061: transaction-stateful, record-routing, to
# 127.0.0.1:5070) vs Kamailio 5.6 with the tls module
# (benches/sip/kamailio-tls.cfg: tm + rr, the same routing), both serving
# the same certificate (config/tls/, ECDSA P-256) and both driven by the same
# TLS client (benches/src/bin/tls_sip_load.rs, rustls) with rvoip-loadtest's
# UAS on 127.0.0.1:5070 over UDP. Two phases per proxy:
#   handshakes: CLIENTS clients for HS_SECONDS, each in a loop: new TCP
#               connection, full TLS handshake (no resumption), OPTIONS, 200,
#               close. Full handshakes per second achieved and the proxy's
#               CPU per handshake.
#   calls:      CONNS long-lived TLS connections carrying RATE calls per
#               second, CALLS in all, INVITE…200…ACK…BYE…200 each (no hold):
#               the proxy's CPU per call (whole process tree: for rvoip the
#               dataplane and its control plane child).
# Then the rvoip/Kamailio ratios. Loopback only; every process is bounded.
#
# usage: benches/sip/tls_compare.sh [RATE] [CALLS] [CONNS] [HS_SECONDS] [CLIENTS]
#   e.g. benches/sip/tls_compare.sh 1000 20000 16 10 4
# env: PROXIES="rvoip kamailio" (default both), REPEAT=n (runs per proxy,
#      the proxies in turn; the ratios are of the medians)
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
RATE=${1:-1000}; CALLS=${2:-20000}; CONNS=${3:-16}; HS=${4:-10}; CLIENTS=${5:-4}
PROXIES=${PROXIES:-"rvoip kamailio"}
REPEAT=${REPEAT:-1}
OUT=${OUT:-$ROOT/target/sip-tls-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
CRT=$ROOT/config/tls/localhost-test-only.crt
KEY=$ROOT/config/tls/localhost-test-only.key

cargo build -q --release --bin rvoip -p rvoip-controlplane --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-benches --bin tls_sip_load --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
UAS=""
cleanup() {
    stop_pid
    [ -n "$UAS" ] && kill -TERM "$UAS" 2>/dev/null
    rm -rf /dev/shm/rvoip-tls-bench
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_tcp_free() {
    for _ in $(seq 150); do
        ss -Hltn "( sport = :$1 )" | grep -q . || return 0
        sleep 0.2
    done
}
wait_tcp() {
    for _ in $(seq 100); do
        ss -Hltn "( sport = :$1 )" | grep -q . && return 0
        sleep 0.2
    done
    return 1
}

start_rvoip() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:2223; wait_tcp_free 5061
    rm -rf "$OUT/state" /dev/shm/rvoip-tls-bench
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    sed -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-tls-bench\"#" \
        -e "s#^    { address = \"127.0.0.1:5060\", transport = \"tcp\" },#    { address = \"127.0.0.1:5061\", transport = \"tls\" },#" \
        "$ROOT/config/proxy.toml" > "$OUT/proxy.toml"
    printf '\n[tls]\ncertificate = "%s"\nkey = "%s"\n' "$CRT" "$KEY" >> "$OUT/proxy.toml"
    timeout 900 "$ROOT/target/release/rvoip" run --config "$OUT/proxy.toml" > "$OUT/rvoip.log" 2>&1 &
    PID=$(child_of $!)
    wait_tcp 5061
}

start_kamailio() {
    wait_udp_free 127.0.0.1:5060; wait_tcp_free 5061
    sed -e "s#@CRT@#$CRT#" -e "s#@KEY@#$KEY#" "$HERE/kamailio-tls-domains.cfg" > "$OUT/tls.cfg"
    sed -e "s#@TLSCFG@#$OUT/tls.cfg#" "$HERE/kamailio-tls.cfg" > "$OUT/kamailio.cfg"
    timeout 900 kamailio -f "$OUT/kamailio.cfg" -DD -E -m 256 -M 16 -w "$OUT" -Y "$OUT" \
        > /dev/null 2> "$OUT/kamailio.log" &
    PID=$(child_of $!)
    wait_tcp 5061 && sleep 1
}

# measure PROXY PHASE ARGS...: the load, and the proxy's CPU seconds over it.
measure() {
    local proxy=$1 phase=$2; shift 2
    local c0 c1 line
    c0=$("$ANCHORS/cputree.py" "$PID")
    line=$(timeout 600 "$ROOT/target/release/tls_sip_load" "$phase" 127.0.0.1:5061 "$@" 2>> "$OUT/load.log")
    c1=$("$ANCHORS/cputree.py" "$PID")
    echo "$proxy $phase $line cpu_s=$(python3 -c "print($c1 - $c0)")" | tee -a "$OUT/raw.txt" >&2
}

wait_udp_free 127.0.0.1:5070
timeout 3600 "$ROOT/target/release/rvoip-loadtest" uas --listen 127.0.0.1:5070 --duration 3600s --quiet \
    > "$OUT/uas.log" 2>&1 &
UAS=$!
sleep 1

for rep in $(seq "$REPEAT"); do
    for proxy in $PROXIES; do
        echo "[$proxy, run $rep] handshakes: $CLIENTS clients for ${HS}s; calls: $CALLS at $RATE/s over $CONNS connections" >&2
        "start_$proxy" || { echo "$proxy failed to start (see $OUT/$proxy.log)" >&2; stop_pid; continue; }
        measure "$proxy" handshakes "$CLIENTS" "$HS"
        measure "$proxy" calls "$CONNS" "$RATE" "$CALLS"
        stop_pid
        sleep 1
    done
done

python3 - "$OUT/raw.txt" "$RATE" <<'PY' | tee "$OUT/summary.txt"
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    kv = dict(x.split("=", 1) for x in f[2:] if "=" in x)
    rows.setdefault((f[0], f[1]), []).append(kv)
def med(proxy, phase, key):
    v = [float(r[key]) for r in rows.get((proxy, phase), []) if key in r]
    return statistics.median(v) if v else None
def per(proxy, phase):
    v = [1e6 * float(r["cpu_s"]) / max(float(r["done"]), 1) for r in rows.get((proxy, phase), [])]
    return statistics.median(v) if v else None
proxies = sorted({p for p, _ in rows}, key=lambda p: p != "rvoip")
print(f"{'proxy':<10} {'handshakes/s':>13} {'hs_failed':>10} {'cpu_us/handshake':>17} {'calls':>7} {'calls_failed':>13} {'cps':>7} {'cpu_us/call':>12}")
for p in proxies:
    print(f"{p:<10} {med(p, 'handshakes', 'per_s') or 0:>13.0f} {med(p, 'handshakes', 'failed') or 0:>10.0f} "
          f"{per(p, 'handshakes') or 0:>17.1f} {med(p, 'calls', 'done') or 0:>7.0f} {med(p, 'calls', 'failed') or 0:>13.0f} "
          f"{med(p, 'calls', 'per_s') or 0:>7.0f} {per(p, 'calls') or 0:>12.1f}")
if per("rvoip", "calls") and per("kamailio", "calls"):
    print(f"CPU per call over TLS, rvoip/kamailio: {per('rvoip', 'calls') / per('kamailio', 'calls'):.2f}x")
if per("rvoip", "handshakes") and per("kamailio", "handshakes"):
    print(f"CPU per full TLS handshake, rvoip/kamailio: {per('rvoip', 'handshakes') / per('kamailio', 'handshakes'):.2f}x")
PY
