#!/usr/bin/env bash
# A laptop-sized onecity cluster: three nats-server nodes forming a JetStream cluster on
# loopback, and the onecity roles as separate processes over it (two intake, two
# eligibility and two handoff instances, streams at R3). The workers' cases are split into
# two partitions; the instances of a role share them through leases, so either instance
# of a role can be killed for good and the other takes its partition over. The NATS
# servers require a user and password of every client (`authorization`); the password is
# made once into $ONECITY_LOCAL_DIR/nats.password and the roles read it from there
# ([nats] user/password_file, here through ONECITY_NATS_USER/ONECITY_NATS_PASSWORD_FILE).
#
#   deploy/local/cluster.sh start       start everything, print the addresses
#   deploy/local/cluster.sh status      which processes are running
#   deploy/local/cluster.sh kill NAME   SIGKILL one process (nats-1..3, intake-0/1,
#                                       eligibility-0/1, handoff-0/1)
#   deploy/local/cluster.sh restart NAME   start it again (after kill)
#   deploy/local/cluster.sh stop        stop exactly what this script started
#
# Environment: ONECITY_LOCAL_DIR (state, logs and pid files; default
# ${TMPDIR:-/tmp}/onecity-local), ONECITY_LOCAL_BASE_PORT (default 24000; the script uses
# BASE..BASE+39), ONECITY_BIN (the onecity binary; default: built with cargo).
set -euo pipefail

dir="${ONECITY_LOCAL_DIR:-${TMPDIR:-/tmp}/onecity-local}"
base="${ONECITY_LOCAL_BASE_PORT:-24000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$dir/run" "$dir/logs"

nats_client() { echo $((base + $1)); }          # 1..3
nats_cluster() { echo $((base + 10 + $1)); }
nats_monitor() { echo $((base + 20 + $1)); }
role_port() {
    case "$1" in
        intake-0) echo $((base + 30)) ;;
        intake-1) echo $((base + 31)) ;;
        eligibility-0) echo $((base + 32)) ;;
        eligibility-1) echo $((base + 33)) ;;
        handoff-0) echo $((base + 34)) ;;
        handoff-1) echo $((base + 35)) ;;
        *) echo "unknown role $1" >&2; exit 2 ;;
    esac
}
log_spec() {
    echo "jetstream:nats://127.0.0.1:$(nats_client 1),nats://127.0.0.1:$(nats_client 2),nats://127.0.0.1:$(nats_client 3)?replicas=3"
}

onecity_bin() {
    if [[ -n "${ONECITY_BIN:-}" ]]; then
        echo "$ONECITY_BIN"
        return
    fi
    (cd "$root" && cargo build -q -p onecity >&2)
    echo "$root/target/debug/onecity"
}

# Waits until a TCP port accepts connections (bounded: a node that does not come up is
# an error, not a hang).
wait_port() {
    local port=$1 name=$2
    # Roles wait up to 120 s for their log at start, so allow a little more here.
    for _ in $(seq 1 1300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not open port $port; see $dir/logs/$name.log" >&2
    exit 1
}

# Waits until a node's JetStream is ready (its /healthz answers ok, which in 2.9 needs
# the cluster's meta leader), bounded like wait_port.
wait_jetstream() {
    local port=$1 name=$2 reply
    for _ in $(seq 1 300); do
        reply=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 && cat <&3) 2>/dev/null || true)
        if [[ "$reply" == *'"status":"ok"'* || "$reply" == *'"status": "ok"'* ]]; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name: JetStream not ready (healthz: ${reply:-no answer}); see $dir/logs/$name.log" >&2
    exit 1
}

running() {
    local pidfile="$dir/run/$1.pid"
    [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# The password of the `onecity` NATS user, made once per cluster directory (owner-only):
# the servers require it of every client, the roles read it from the file.
nats_password() {
    local f="$dir/nats.password"
    if [[ ! -s "$f" ]]; then
        (umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$f")
    fi
    cat "$f"
}

start_nats() {
    local i=$1 name="nats-$1"
    running "$name" && return 0
    mkdir -p "$dir/nats-$i"
    cat >"$dir/nats-$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$(nats_client "$i")
http: 127.0.0.1:$(nats_monitor "$i")
max_payload: 8MB
authorization {
  user: onecity
  password: "$(nats_password)"
}
jetstream {
  store_dir: "$dir/nats-$i"
}
cluster {
  name: onecity-local
  listen: 127.0.0.1:$(nats_cluster "$i")
  routes: [
    nats://127.0.0.1:$(nats_cluster 1)
    nats://127.0.0.1:$(nats_cluster 2)
    nats://127.0.0.1:$(nats_cluster 3)
  ]
}
CONF
    nats-server -c "$dir/nats-$i.conf" >>"$dir/logs/$name.log" 2>&1 &
    echo $! >"$dir/run/$name.pid"
}

start_role() {
    local name=$1 role port bin
    running "$name" && return 0
    role="${name%-*}"
    port=$(role_port "$name")
    bin=$(onecity_bin)
    mkdir -p "$dir/$name"
    # Every process is told the partition count: the workers lease their share of the
    # partitions, intake's backpressure watches each partition's checkpoint.
    nats_password >/dev/null
    # One person index key for both intake processes (docs/security.md): with a key each,
    # their claims on one person would never meet.
    [[ -s "$dir/person-index.key" ]] || (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/person-index.key")
    ONECITY_LOG_LEVEL="${ONECITY_LOG_LEVEL:-info}" NO_COLOR=1 \
        ONECITY_NATS_USER=onecity ONECITY_NATS_PASSWORD_FILE="$dir/nats.password" \
        ONECITY_PERSON_INDEX_KEY_FILE="$dir/person-index.key" \
        "$bin" serve --role "$role" --partitions 2 \
        --addr "127.0.0.1:$port" --data-dir "$dir/$name" --log "$(log_spec)" \
        >>"$dir/logs/$name.log" 2>&1 &
    echo $! >"$dir/run/$name.pid"
}

all_roles=(intake-0 intake-1 eligibility-0 eligibility-1 handoff-0 handoff-1)

cmd="${1:-}"
case "$cmd" in
    start)
        command -v nats-server >/dev/null || { echo "nats-server not found: apt-get install nats-server" >&2; exit 1; }
        for i in 1 2 3; do start_nats "$i"; done
        for i in 1 2 3; do wait_port "$(nats_client "$i")" "nats-$i"; done
        for i in 1 2 3; do wait_jetstream "$(nats_monitor "$i")" "nats-$i"; done
        for r in "${all_roles[@]}"; do start_role "$r"; done
        for r in "${all_roles[@]}"; do wait_port "$(role_port "$r")" "$r"; done
        echo "log:     $(log_spec)"
        for r in "${all_roles[@]}"; do echo "$r: http://127.0.0.1:$(role_port "$r")"; done
        ;;
    status)
        for n in nats-1 nats-2 nats-3 "${all_roles[@]}"; do
            if running "$n"; then echo "$n running (pid $(cat "$dir/run/$n.pid"))"; else echo "$n stopped"; fi
        done
        ;;
    kill)
        name="${2:?name}"
        if running "$name"; then
            pid=$(cat "$dir/run/$name.pid")
            kill -9 "$pid"
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        fi
        rm -f "$dir/run/$name.pid"
        ;;
    restart)
        name="${2:?name}"
        case "$name" in
            nats-*)
                start_nats "${name#nats-}"
                wait_port "$(nats_client "${name#nats-}")" "$name"
                wait_jetstream "$(nats_monitor "${name#nats-}")" "$name"
                ;;
            *) start_role "$name"; wait_port "$(role_port "$name")" "$name" ;;
        esac
        ;;
    stop)
        # Roles first (they drain), then the nodes; only the PIDs this script recorded.
        for n in "${all_roles[@]}" nats-1 nats-2 nats-3; do
            pidfile="$dir/run/$n.pid"
            [[ -f "$pidfile" ]] || continue
            pid=$(cat "$pidfile")
            if kill -0 "$pid" 2>/dev/null; then
                kill -TERM "$pid"
                for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            fi
            rm -f "$pidfile"
        done
        ;;
    *)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
