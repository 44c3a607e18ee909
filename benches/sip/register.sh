#!/usr/bin/env bash
# REGISTER with digest authentication through rvoip (config/proxy.toml:
# registrar for rvoip.test, users from config/users.toml, bindings stored in
# redb). SIPp runs controlplane/tests/data/register_digest.xml: REGISTER,
# 401 with the challenge, REGISTER with MD5 credentials, 200 — two
# transactions and one durable binding update per registration. Loopback
# only; every process is bounded in time.
#
# usage: benches/sip/register.sh [DURATION_S] RATE...
#   e.g. benches/sip/register.sh 20 500 1000 2000 3000
#
# Per step: PASS (< 0.1 % failed and >= 98 % of the offered rate), the
# achieved rate, and rvoip's CPU per registration in µs (whole process tree).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
DUR=${1:-20}; shift || true
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=(500 1000 2000)
OUT=${OUT:-$ROOT/target/register-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
SCENARIO=$ROOT/controlplane/tests/data/register_digest.xml

cargo build -q --release --bin rvoip --manifest-path "$ROOT/Cargo.toml"

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
stop_rvoip() { stop_pid; }
trap stop_pid EXIT
trap 'exit 130' INT TERM

printf "%6s %-5s %9s %9s %12s\n" rate pass achieved fail_pct cpu_us_reg | tee "$OUT/summary.txt"
best=0
for rate in "${STEPS[@]}"; do
    wait_udp_free 127.0.0.1:5060 127.0.0.1:2223
    rm -rf "$OUT/state" /dev/shm/rvoip-register-bench
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    sed -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-register-bench\"#" \
        "$ROOT/config/proxy.toml" > "$OUT/proxy.toml"
    timeout $((DUR + 120)) "$ROOT/target/release/rvoip" run --config "$OUT/proxy.toml" > "$OUT/rvoip-$rate.log" 2>&1 &
    wrapper=$!
    sleep 1.5
    PID=$(child_of "$wrapper")
    total=$((rate * DUR))
    c0=$("$ANCHORS/cputree.py" "$PID")
    timeout $((DUR + 60)) sipp -sf "$SCENARIO" -s alice -au alice -ap alicepw \
        -i 127.0.0.1 -p 5081 127.0.0.1:5060 -m "$total" -r "$rate" -rp 1000 -l "$rate" \
        -nostdin -buff_size 1048576 -timeout $((DUR + 50))s \
        -trace_stat -stf "$OUT/register-$rate.csv" -fd 1 > /dev/null 2>&1
    c1=$("$ANCHORS/cputree.py" "$PID")
    stop_rvoip
    stats=$("$ANCHORS/sipp_stats.py" "$OUT/register-$rate.csv" "$total" 2>&1)
    echo "$rate $stats cpu_s=$(awk -v a="$c0" -v b="$c1" 'BEGIN {print b - a}')" >> "$OUT/raw.txt"
    python3 - "$rate" "$stats" "$c0" "$c1" <<'PY' | tee -a "$OUT/summary.txt"
import sys
rate, line, c0, c1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
try:
    ok = float(kv["fail_pct"]) < 0.1 and float(kv["achieved_cps"]) >= 0.98 * float(kv["target_cps"])
    done = int(kv["successful"])
    cpu = 1e6 * (c1 - c0) / done if done else float("nan")
    print(f"{rate:>6} {'PASS' if ok else 'FAIL':<5} {float(kv['achieved_cps']):>9.0f} {float(kv['fail_pct']):>9.4f} {cpu:>12.1f}")
except (KeyError, ValueError):
    print(f"{rate:>6} {'ERROR':<5} {'?':>9} {'?':>9} {'?':>12}")
PY
    sleep 2
done
awk 'NR > 1 && $2 == "PASS" && $1 > best { best = $1 } END { printf "max passing REGISTER rate (with digest auth): %d/s\n", best }' "$OUT/summary.txt" | tee -a "$OUT/summary.txt"
