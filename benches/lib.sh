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
