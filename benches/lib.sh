# Shared pieces of the benchmark scripts; source it after setting ROOT.

# The process under test (a relay or the appliance), once started.
PID=""

# Stops $PID: SIGTERM, up to 10 s to exit, then SIGKILL; clears PID.
stop_pid() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
    PID=""
}

# The child of a `timeout` wrapper started with `&` (the real process to
# measure), or the wrapper itself.
child_of() {
    local c
    c=$(awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null)
    echo "${c:-$1}"
}

# Waits (up to 30 s) until no UDP socket is bound to any of the given
# addresses: a previous instance's sockets close with its io_uring,
# asynchronously, and a new one bound beside them would share their traffic.
wait_udp_free() {
    local filter="" a
    for a in "$@"; do filter="${filter:+$filter or }src $a"; done
    for _ in $(seq 150); do
        ss -Hlun "( $filter )" | grep -q . || return 0
        sleep 0.2
    done
}

# Sends OPTIONS to ADDR:PORT (default 127.0.0.1:5060) until a 200 comes
# back (up to ~20 s); with NETNS set, from inside that network namespace.
sip_ready() {
    ${NETNS:+ip netns exec "$NETNS"} python3 - "${1:-5060}" "${2:-127.0.0.1}" <<'PY'
import socket, sys, time
port, addr = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
s.connect((addr, port))
me = "%s:%d" % s.getsockname()
msg = (f"OPTIONS sip:{addr}:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-b;rport\r\n"
       f"From: <sip:b@rvoip.test>;tag=b\r\nTo: <sip:{addr}>\r\nCall-ID: bench-ready\r\n"
       "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
for _ in range(100):
    try:
        s.send(msg)
        if s.recv(2000).startswith(b"SIP/2.0 200"):
            sys.exit(0)
        # 503 from the SIP workers: the control plane is not attached yet.
        time.sleep(0.1)
    except OSError:
        time.sleep(0.1)
sys.exit(f"nothing answered OPTIONS on {addr}:{port}")
PY
}

# The AF_XDP test topology (as root): namespace rvx with veth rvx0
# 10.99.0.1/24, its peer rvx1 10.99.0.2/24 in rvxpeer; one an interrupted
# run left goes first. topology_down removes it.
topology_down() { ip netns del rvx 2>/dev/null; ip netns del rvxpeer 2>/dev/null; true; }
topology_up() {
    topology_down
    ip netns add rvx && ip netns add rvxpeer || return 1
    ip -n rvx link add rvx0 type veth peer name rvx1 netns rvxpeer
    ip -n rvx addr add 10.99.0.1/24 dev rvx0
    ip -n rvxpeer addr add 10.99.0.2/24 dev rvx1
    local l
    for l in "rvx rvx0" "rvxpeer rvx1" "rvx lo" "rvxpeer lo"; do
        set -- $l; ip -n "$1" link set "$2" up
    done
}

# Starts the ng relay NAME (rvoip | rtpengine | bare) on 127.0.0.1:2223 with
# media ports 10000-29999, bounded by `timeout SECONDS`, its output in
# $OUT/NAME.log; sets PID to the relay and returns once it answers an ng
# ping (non-zero if it never does). Needs ROOT, ANCHORS and OUT.
start_ng_relay() {
    local name=$1 secs=$2
    case $name in
        rvoip)
            sed -e "s/port_min = 30000/port_min = 10000/; s/port_max = 39999/port_max = 29999/; s/127.0.0.1:5060/127.0.0.1:5099/; s|dir = \"../recordings\"|dir = \"$OUT/recordings\"|" \
                "$ROOT/config/rvoip.toml" > "$OUT/rvoip.toml"
            timeout "$secs" "$ROOT/target/release/rvoip" run --config "$OUT/rvoip.toml" > "$OUT/rvoip.log" 2>&1 &
            ;;
        rtpengine)
            timeout "$secs" rtpengine --config-file="$ANCHORS/rtpengine-userspace.conf" --config-section=anchor \
                --pidfile="$OUT/rtpengine.pid" > "$OUT/rtpengine.log" 2>&1 &
            ;;
        bare)
            timeout "$secs" "$ROOT/target/release/bare_forwarder" 2223 10000 29999 > "$OUT/bare.log" 2>&1 &
            ;;
        *) echo "unknown relay $name" >&2; return 1 ;;
    esac
    local wrapper=$!
    sleep 0.3
    # The relay is the timeout wrapper's child.
    PID=$(child_of "$wrapper")
    python3 - <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.2)
for _ in range(100):
    s.sendto(b"p d7:command4:pinge", ("127.0.0.1", 2223))
    try:
        s.recv(100); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit("relay did not answer ping")
PY
}
