#!/usr/bin/env bash
# SIP proxy benchmark, side by side in one run: rvoip (config/proxy.toml:
# transaction-stateful, record-routing, to 127.0.0.1:5070) vs Kamailio 5.6
# with the anchor's stateful cfg (tm + rr, `-x tlsf`), both driven by the
# anchor's step runner (../shared/anchors/sip_run.sh: SIPp built-in uac ->
# proxy on 127.0.0.1:5060 -> SIPp built-in uas on :5070). Loopback only;
# every process is bounded in time.
#
# usage: benches/sip/compare.sh [DURATION_S] RATE...
#   e.g. benches/sip/compare.sh 20 1000 2000 4000 6000
# env: PROXIES="rvoip kamailio" (default both; also rvoip-stateless and
#      kamailio-stateless, the stateless modes, rvoip-shards: rvoip with
#      SHARDS control-plane shards (default 2; each run also prints the
#      control plane's CPU per call by thread, benches/threads.py), and
#      floor: a forwarder that
#      does no SIP at all, benches/src/bin/bare_sip_forwarder.rs, whose CPU
#      per call is the kernel's share of any proxy's), WARMUP (anchor
#      default 6 s),
#      REPEAT=n: n runs per rate with the proxies in turn; the ratios are
#      then of the medians (a noisy VM moves single runs by 20 % or more)
#
# Per step and proxy it prints the anchor's verdict (PASS: < 0.1 % failed and
# >= 98 % of the offered rate), the achieved rate, and the proxy's CPU per
# call in µs (whole process tree: for rvoip the dataplane and its control
# plane child), then the rvoip/Kamailio CPU ratio per step and the highest
# passing rate of each.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
DUR=${1:-20}; shift || true
STEPS=("$@"); [ ${#STEPS[@]} -gt 0 ] || STEPS=(1000 2000 4000)
PROXIES=${PROXIES:-"rvoip kamailio"}
REPEAT=${REPEAT:-1}
OUT=${OUT:-$ROOT/target/sip-bench}
rm -rf "$OUT"; mkdir -p "$OUT"
export RESULTS=$OUT/anchor QUIET_WAIT=${QUIET_WAIT:-60} KAM_EXTRA=${KAM_EXTRA:--x tlsf}

cargo build -q --release --bin rvoip --manifest-path "$ROOT/Cargo.toml"
case " $PROXIES " in *" floor "*)
    cargo build -q --release -p rvoip-benches --bin bare_sip_forwarder --manifest-path "$ROOT/Cargo.toml" ;;
esac

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"
stop_rvoip() { stop_pid; }
# The rvoip run's shared-memory rings go with it.
trap 'stop_pid; rm -rf /dev/shm/rvoip-sip-bench' EXIT
trap 'exit 130' INT TERM

start_rvoip() {
    wait_udp_free 127.0.0.1:5060 127.0.0.1:2223
    rm -rf "$OUT/state" "/dev/shm/rvoip-sip-bench"
    cp "$ROOT/config/users.toml" "$OUT/users.toml"
    sed -e "s#state_dir = \"../state\"#state_dir = \"state\"#" \
        -e "s#ring_dir = \"/dev/shm/rvoip\"#ring_dir = \"/dev/shm/rvoip-sip-bench\"#" \
        -e "s#^stateful = true#stateful = ${2:-true}#" \
        -e "s#^shards = 1#shards = ${3:-1}#" \
        "$ROOT/config/proxy.toml" > "$OUT/proxy.toml"
    "$ROOT/target/release/rvoip" run --config "$OUT/proxy.toml" > "$OUT/rvoip-$1.log" 2>&1 &
    PID=$!
    sip_ready 5060
}

printf "%-18s %6s %-5s %9s %9s %12s\n" proxy rate pass achieved fail_pct cpu_us_call | tee "$OUT/summary.txt"
for rate in "${STEPS[@]}"; do
  for rep in $(seq "$REPEAT"); do
    for proxy in $PROXIES; do
        case $proxy in
            rvoip)
                start_rvoip "$rate" || { echo "rvoip failed to start" >&2; stop_rvoip; continue; }
                line=$(PROXY_PID=$PID "$ANCHORS/sip_run.sh" external "$rate" "$DUR" | tail -1)
                stop_rvoip
                ;;
            rvoip-shards)
                start_rvoip "$rate" true "${SHARDS:-2}" || { echo "rvoip failed to start" >&2; stop_rvoip; continue; }
                ( sleep $((${WARMUP:-6} + DUR / 4))
                  RVOIP_THREADS_BY_NAME=1 python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-a"
                  sleep $((DUR / 2))
                  RVOIP_THREADS_BY_NAME=1 python3 "$ROOT/benches/threads.py" snap "$PID" > "$OUT/threads-b" ) &
                sampler=$!
                line=$(PROXY_PID=$PID "$ANCHORS/sip_run.sh" external "$rate" "$DUR" | tail -1)
                wait "$sampler" 2>/dev/null
                echo "rvoip-shards $rate cps, µs of CPU per call by thread: $(python3 "$ROOT/benches/threads.py" diff "$OUT/threads-a" "$OUT/threads-b" $((rate * (DUR / 2))))" | tee -a "$OUT/parts.txt" >&2
                stop_rvoip
                ;;
            rvoip-stateless)
                start_rvoip "$rate" false || { echo "rvoip failed to start" >&2; stop_rvoip; continue; }
                line=$(PROXY_PID=$PID "$ANCHORS/sip_run.sh" external "$rate" "$DUR" | tail -1)
                stop_rvoip
                ;;
            floor)
                wait_udp_free 127.0.0.1:5060
                "$ROOT/target/release/bare_sip_forwarder" 5060 5070 5080 &
                PID=$!
                line=$(PROXY_PID=$PID "$ANCHORS/sip_run.sh" external "$rate" "$DUR" | tail -1)
                stop_pid
                ;;
            kamailio)
                line=$("$ANCHORS/sip_run.sh" stateful "$rate" "$DUR" | tail -1)
                ;;
            kamailio-stateless)
                line=$("$ANCHORS/sip_run.sh" stateless "$rate" "$DUR" | tail -1)
                ;;
        esac
        echo "$proxy $rate $line" >> "$OUT/raw.txt"
        python3 - "$proxy" "$rate" "$line" <<'PY' | tee -a "$OUT/summary.txt"
import sys
proxy, rate, line = sys.argv[1], sys.argv[2], sys.argv[3]
kv = dict(x.split("=", 1) for x in line.split() if "=" in x)
try:
    ok = float(kv["fail_pct"]) < 0.1 and float(kv["achieved_cps"]) >= 0.98 * float(kv["target_cps"])
    cpu = float(kv["proxy_cpu_s_per_1k_calls"]) * 1000.0
    # A process tree that changed during the window reads negative: no figure.
    shown = f"{cpu:>12.1f}" if cpu > 0 else f"{'?':>12}"
    print(f"{proxy:<18} {rate:>6} {'PASS' if ok else 'FAIL':<5} {float(kv['achieved_cps']):>9.0f} {float(kv['fail_pct']):>9.4f} {shown}")
except (KeyError, ValueError):
    print(f"{proxy:<18} {rate:>6} {'ERROR':<5} {'?':>9} {'?':>9} {'?':>12}")
PY
        sleep 2
    done
  done
done

echo
python3 - "$OUT/summary.txt" <<'PY' | tee -a "$OUT/summary.txt"
import statistics, sys
cpu, passes, order = {}, {}, []
for line in open(sys.argv[1]).read().splitlines()[1:]:
    f = line.split()
    if len(f) != 6:
        continue
    proxy, rate, verdict, figure = f[0], int(f[1]), f[2], f[5]
    if rate not in order:
        order.append(rate)
    passes.setdefault((proxy, rate), []).append(verdict == "PASS")
    if figure != "?":
        cpu.setdefault((proxy, rate), []).append(float(figure))
def median(proxy, rate):
    v = cpu.get((proxy, rate))
    return statistics.median(v) if v else None
runs = max((len(v) for v in passes.values()), default=1)
if runs > 1:
    print(f"medians of {runs} runs per proxy and rate, the proxies in turn")
print(f"{'rate':>6} {'rvoip/kamailio':>16} {'stateless rvoip/kamailio':>26} {'floor/kamailio':>16} {'shards/1 shard':>16}")
for rate in order:
    cells = []
    for a, b in (("rvoip", "kamailio"), ("rvoip-stateless", "kamailio-stateless"), ("floor", "kamailio"), ("rvoip-shards", "rvoip")):
        x, y = median(a, rate), median(b, rate)
        cells.append(f"{x / y:.2f}x" if x is not None and y else "-")
    print(f"{rate:>6} {cells[0]:>16} {cells[1]:>26} {cells[2]:>16} {cells[3]:>16}")
def best(proxy):
    ok = [r for r in order if passes.get((proxy, r)) and all(passes[(proxy, r)])]
    return max(ok, default=0)
line = f"max passing rate (every run passed): rvoip {best('rvoip')} cps, kamailio {best('kamailio')} cps"
if best("rvoip-shards") > 0:
    line += f", rvoip with shards {best('rvoip-shards')} cps"
if best("rvoip-stateless") + best("kamailio-stateless") > 0:
    line += f"; stateless: rvoip {best('rvoip-stateless')} cps, kamailio {best('kamailio-stateless')} cps"
print(line)
PY
