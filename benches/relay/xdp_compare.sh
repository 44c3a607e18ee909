#!/usr/bin/env bash
# The media relay on the AF_XDP test topology, side by side in one run (as
# root): rvoip on AF_XDP (config/xdp.toml), rvoip on io_uring (the same
# configuration, io = "io-uring"), rtpengine 10.5 in userspace and the bare
# recvmmsg/sendmmsg forwarder (the floor), each in namespace rvx on
# 10.99.0.1, driven by rvoip-loadtest's media mode in namespace rvxpeer on
# 10.99.0.2 (ng offer/answer, RTP both ways at 50 pps per leg). The
# topology (rvx0 10.99.0.1/24 in rvx, its veth peer rvx1 10.99.0.2/24 in
# rvxpeer) is made here and removed at the end; traffic stays in it.
#
# Prints per relay: calls, RTP sent and received, loss, and the relay's CPU
# per relayed packet (its whole process tree over the run); then the ratios.
#
# usage: sudo benches/relay/xdp_compare.sh [CALLS] [RATE] [HOLD_S]
#   e.g. benches/relay/xdp_compare.sh 400 100 20
# env: RELAYS="af_xdp io_uring rtpengine bare" (default all four)
#      POLLING=adaptive: both rvoip runs spin after traffic (AF_XDP: with
#      SO_PREFER_BUSY_POLL on its sockets) instead of sleeping per batch
#      QUEUES=n: rvx0 and rvx1 with n channels (ethtool -L): rvoip on
#      AF_XDP runs a media worker per queue (up to its cores), each frame
#      taken by the queue's worker and handed to its endpoint's when
#      another's
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ANCHORS=${ANCHORS:-$ROOT/../shared/anchors}
CALLS=${1:-400}; RATE=${2:-100}; HOLD=${3:-20}
OUT=${OUT:-$ROOT/target/relay-xdp}
rm -rf "$OUT"; mkdir -p "$OUT"
[ "$(id -u)" -eq 0 ] || { echo "the AF_XDP topology needs root" >&2; exit 1; }
cargo build -q --release --bin rvoip -p rvoip-controlplane --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-loadtest --manifest-path "$ROOT/Cargo.toml"
cargo build -q --release -p rvoip-benches --bin bare_forwarder --manifest-path "$ROOT/Cargo.toml"
LIMIT=$((CALLS / RATE + HOLD + 60))

# shellcheck source=../lib.sh
. "$ROOT/benches/lib.sh"

trap 'stop_pid; topology_down' EXIT
trap 'exit 130' INT TERM
topology_up
if [ "${QUEUES:-1}" -gt 1 ]; then
    for nd in "rvx rvx0" "rvxpeer rvx1"; do
        set -- $nd
        ip netns exec "$1" ethtool -L "$2" rx "$QUEUES" tx "$QUEUES"
    done
fi

# The configurations: rvoip's own (ring directory of this run), rtpengine's
# anchor moved to 10.99.0.1.
for io in af_xdp io_uring; do
    sed -e "s|ring_dir = \"/dev/shm/rvoip-xdp\"|ring_dir = \"/dev/shm/rvoip-bench-xdp\"|" \
        -e "s|io = \"af_xdp\"|io = \"${io/io_uring/io-uring}\"|" -e "s|state_dir = \"../state\"|state_dir = \"$OUT/state\"|" \
        -e "s|users_file = \"users.toml\"|users_file = \"$ROOT/config/users.toml\"|" \
        -e "s|^polling = \"interrupt\"|polling = \"${POLLING:-interrupt}\"|" \
        "$ROOT/config/xdp.toml" > "$OUT/rvoip-$io.toml"
done
sed -e "s/127.0.0.1/10.99.0.1/g" "$ANCHORS/rtpengine-userspace.conf" > "$OUT/rtpengine.conf"

ng_ready() {
    ip netns exec rvxpeer python3 - <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
for _ in range(100):
    s.sendto(b"r1 d7:command4:pinge", ("10.99.0.1", 2223))
    try:
        if b"pong" in s.recv(200):
            sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("ng did not answer on 10.99.0.1:2223")
PY
}

printf "%-10s %7s %10s %10s %8s %10s\n" relay calls rtp_sent rtp_recv lost us_per_pkt | tee "$OUT/summary.txt"
for relay in ${RELAYS:-af_xdp io_uring rtpengine bare}; do
    case $relay in
        af_xdp|io_uring)
            ip netns exec rvx timeout $((LIMIT + 30)) "$ROOT/target/release/rvoip" run --config "$OUT/rvoip-$relay.toml" > "$OUT/$relay.log" 2>&1 & ;;
        rtpengine)
            ip netns exec rvx timeout $((LIMIT + 30)) rtpengine --config-file="$OUT/rtpengine.conf" --config-section=anchor > "$OUT/rtpengine.log" 2>&1 & ;;
        bare)
            ip netns exec rvx timeout $((LIMIT + 30)) "$ROOT/target/release/bare_forwarder" 2223 10000 29999 10.99.0.1 > "$OUT/bare.log" 2>&1 & ;;
    esac
    wrapper=$!
    sleep 1
    # ip netns exec execs the timeout wrapper; the relay is its child.
    PID=$(child_of "$wrapper")
    ng_ready || { echo "$relay did not start (see $OUT/$relay.log)" >&2; stop_pid; continue; }
    c0=$("$ANCHORS/cputree.py" "$PID")
    ip netns exec rvxpeer timeout "$LIMIT" "$ROOT/target/release/rvoip-loadtest" media \
        --ng 10.99.0.1:2223 --listen 10.99.0.2:0 --rate "$RATE" --calls "$CALLS" --hold "${HOLD}s" \
        --max-concurrent "$CALLS" --quiet --json "$OUT/$relay.json" 2> "$OUT/$relay-loadtest.txt"
    c1=$("$ANCHORS/cputree.py" "$PID")
    stop_pid
    kill -TERM "$wrapper" 2>/dev/null; wait "$wrapper" 2>/dev/null
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
print(f"{relay:<10} {r['calls']['completed']:>7} {rtp['sent']:>10} {rtp['received']:>10} {rtp['lost']:>8} "
      f"{1e6 * (c1 - c0) / relayed:>10.2f}")
PY
    sleep 1
done

echo
awk 'NR > 1 && $NF ~ /^[0-9.]+$/ { cpu[$1] = $NF }
     END {
       if (cpu["af_xdp"] == "") exit;
       printf "rvoip af_xdp: %.2f us per relayed packet\n", cpu["af_xdp"];
       if (cpu["io_uring"] > 0) printf "af_xdp/io_uring  %.2fx\n", cpu["af_xdp"] / cpu["io_uring"];
       if (cpu["rtpengine"] > 0) printf "af_xdp/rtpengine %.2fx\n", cpu["af_xdp"] / cpu["rtpengine"];
       if (cpu["bare"] > 0) printf "af_xdp/bare      %.2fx\n", cpu["af_xdp"] / cpu["bare"];
     }' "$OUT/summary.txt" | tee -a "$OUT/summary.txt"
