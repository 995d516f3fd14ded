#!/usr/bin/env bash
# A two-node Ray cluster on this machine's loopback interface, one CPU per node.
#
#   scripts/ray_cluster.sh start DIR        # prints the `export ...` lines a driver needs
#   scripts/ray_cluster.sh kill-worker DIR  # SIGKILL the worker node's raylet (a lost node)
#   scripts/ray_cluster.sh stop DIR         # ends both nodes, by their own PIDs
#
# Each node is a `ray start --block` process in the background (its PID in DIR/pid/), with its
# own temp directory under DIR. The head node is at 127.0.0.2, the worker node at 127.0.0.3:
# both on the loopback interface (Linux routes all of 127.0.0.0/8 there). Not 127.0.0.1: Ray
# replaces that one by the machine's network address (resolve_ip_for_localhost), so traffic
# would leave loopback. Token authentication is on, with a token kept in DIR (not
# ~/.ray/auth_token): the driver needs the two RAY_AUTH_* variables printed by `start`.
# RAY (the `ray` command) defaults to the one beside this Python: RAY=/venv/bin/ray.
set -euo pipefail

HEAD_ADDRESS=127.0.0.2
WORKER_ADDRESS=127.0.0.3
RAY=${RAY:-ray}

die() { echo "ray_cluster.sh: $*" >&2; exit 1; }

free_port() {
    python3 -c "import socket; s = socket.socket(); s.bind(('$HEAD_ADDRESS', 0)); print(s.getsockname()[1])"
}

node_alive() { # node_alive NAME: its ray start process still runs
    [ -s "$DIR/pid/$1.pid" ] && kill -0 "$(cat "$DIR/pid/$1.pid")" 2>/dev/null
}

start_node() { # start_node NAME ARGUMENTS...: one `ray start --block` in the background
    local name=$1
    shift
    "$RAY" start --block --num-cpus=1 --num-gpus=0 --disable-usage-stats \
        --object-store-memory=$((100 * 1024 * 1024)) "$@" \
        </dev/null >"$DIR/log/$name.log" 2>&1 &
    echo $! >"$DIR/pid/$name.pid"
}

wait_for_nodes() { # wait_for_nodes COUNT: until COUNT nodes are alive
    local deadline=$((SECONDS + 90))
    while [ $SECONDS -lt $deadline ]; do
        node_alive head || die "the head node stopped; see $DIR/log/head.log"
        local alive
        alive=$(timeout 20 "$RAY" status --address="$HEAD_ADDRESS:$(cat "$DIR/port")" \
            2>/dev/null | grep -c '^ 1 node_' || true)
        [ "${alive:-0}" -ge "$1" ] && return
        sleep 1
    done
    die "fewer than $1 nodes came up in 90s; logs in $DIR/log"
}

start() {
    [ -e "$DIR/pid" ] && die "$DIR already holds a cluster; stop it first ($0 stop $DIR)"
    mkdir -p "$DIR"/{pid,log,head,worker}
    DIR=$(cd "$DIR" && pwd)
    python3 -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/auth_token"
    chmod 600 "$DIR/auth_token"
    export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$DIR/auth_token"
    free_port >"$DIR/port"
    local port
    port=$(cat "$DIR/port")
    start_node head --head --node-ip-address="$HEAD_ADDRESS" --port="$port" \
        --include-dashboard=false --temp-dir="$DIR/head"
    wait_for_nodes 1
    start_node worker --address="$HEAD_ADDRESS:$port" --node-ip-address="$WORKER_ADDRESS" \
        --temp-dir="$DIR/worker"
    wait_for_nodes 2
    echo "export RAY_ADDRESS=$HEAD_ADDRESS:$port RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
}

raylet_of() { # raylet_of NAME: the PID of the raylet under that node's ray start process
    local parent
    parent=$(cat "$DIR/pid/$1.pid")
    ps -o pid=,comm= --ppid "$parent" | awk '$2 == "raylet" {print $1}'
}

kill_worker() {
    node_alive worker || die "the worker node is not running"
    local raylet
    raylet=$(raylet_of worker)
    [ -n "$raylet" ] || die "no raylet under the worker node's ray start ($(cat "$DIR/pid/worker.pid"))"
    kill -9 "$raylet"
}

stop_node() { # stop_node NAME: SIGTERM its ray start --block, which ends the node's processes
    node_alive "$1" || { rm -f "$DIR/pid/$1.pid"; return 0; }
    local pid
    pid=$(cat "$DIR/pid/$1.pid")
    kill "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$DIR/pid/$1.pid"
}

stop() {
    [ -d "$DIR/pid" ] || return 0
    stop_node worker
    stop_node head
    rmdir "$DIR/pid" 2>/dev/null || true
}

[ $# -eq 2 ] || die "usage: $0 start|kill-worker|stop DIR"
DIR=$2
case $1 in
    start) start ;;
    kill-worker) kill_worker ;;
    stop) stop ;;
    *) die "usage: $0 start|kill-worker|stop DIR" ;;
esac
