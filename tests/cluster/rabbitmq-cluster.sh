#!/usr/bin/env bash
# A three-node RabbitMQ cluster for the test suite, apart from the broker on 5672.
#
#   rabbitmq-cluster.sh start | stop | status
#   rabbitmq-cluster.sh kill NODE | restart NODE | pid NODE
#   rabbitmq-cluster.sh quorum-critical NODE | quorum-members NODE QUEUE
#
# NODE is c1, c2 or c3 (Erlang node wallet-cN@localhost, AMQP on 127.0.0.1:568N,
# distribution on 2568N). Nodes share one Erlang cookie (in $HOME of the nodes and of
# the CLI, which is the state directory), enable no plugins, and keep data, logs and
# pid files under $WALLET_CLUSTER_DIR (default: $TMPDIR/wallet-rabbitmq-cluster),
# which `start` recreates and `stop` removes. Runs as root or as any user that may
# run rabbitmq-server.
set -euo pipefail

SBIN=${RABBITMQ_SBIN:-/usr/lib/rabbitmq/bin}
DIR=${WALLET_CLUSTER_DIR:-${TMPDIR:-/tmp}/wallet-rabbitmq-cluster}
NODES=(c1 c2 c3)
BOOT_TIMEOUT=${WALLET_CLUSTER_BOOT_TIMEOUT:-90}

index() {
    case "$1" in
        c1) echo 1 ;;
        c2) echo 2 ;;
        c3) echo 3 ;;
        *) echo "unknown node '$1' (c1, c2 or c3)" >&2; exit 2 ;;
    esac
}
name() { echo "wallet-$1@localhost"; }
amqp_port() { echo $((5680 + $(index "$1"))); }
dist_port() { echo $((25680 + $(index "$1"))); }
pid_file() { echo "$DIR/$1.pid"; }

# Runs "$@" with the environment of node $1: its ports and directories, never the
# system broker's /etc/rabbitmq files.
with_node() {
    local node=$1
    shift
    env HOME="$DIR" \
        RABBITMQ_NODENAME="$(name "$node")" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$(amqp_port "$node")" \
        RABBITMQ_DIST_PORT="$(dist_port "$node")" \
        RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$DIR/$node.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$DIR/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$DIR/$node/mnesia" \
        RABBITMQ_LOG_BASE="$DIR/$node/log" \
        RABBITMQ_PID_FILE="$(pid_file "$node")" \
        RABBITMQ_ALLOW_INPUT=true \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-noinput -noshell -kernel inet_dist_use_interface {127,0,0,1}" \
        "$@"
}

ctl() {
    local node=$1
    shift
    with_node "$node" "$SBIN/rabbitmqctl" -q -n "$(name "$node")" "$@"
}

queues() {
    local node=$1
    shift
    with_node "$node" "$SBIN/rabbitmq-queues" -q -n "$(name "$node")" "$@"
}

running_pid() {
    local file
    file=$(pid_file "$1")
    [ -f "$file" ] || return 1
    local pid
    pid=$(cat "$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

boot() {
    local node=$1
    mkdir -p "$DIR/$node/log"
    rm -f "$(pid_file "$node")"
    # RABBITMQ_ALLOW_INPUT makes rabbitmq-server exec the VM: $! is the node's pid.
    with_node "$node" setsid "$SBIN/rabbitmq-server" \
        >>"$DIR/$node/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$(pid_file "$node")"
}

# The node rewrites its pid file (the VM's own pid over the launcher's) while it boots;
# `rabbitmqctl wait` reading it mid-rewrite fails with `garbage_in_pid_file`, and then
# waits again (it once failed a restart on a loaded machine).
await_boot() {
    local node=$1 tries=0 out
    while ! out=$(ctl "$node" wait "$(pid_file "$node")" --timeout "$BOOT_TIMEOUT" 2>&1 >/dev/null); do
        tries=$((tries + 1))
        if [[ $out == *garbage_in_pid_file* && $tries -lt 5 ]]; then
            sleep 0.2
            continue
        fi
        echo "$out" >&2
        echo "node $node did not boot; its log:" >&2
        tail -n 30 "$DIR/$node/log/stdout.log" >&2 || true
        exit 1
    done
}

cmd_start() {
    cmd_stop
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"
    chmod 400 "$DIR/.erlang.cookie"
    : >"$DIR/rabbitmq-env.conf"
    echo "[]." >"$DIR/enabled_plugins"
    echo "[]." >"$DIR/advanced.config"
    for node in "${NODES[@]}"; do
        cat >"$DIR/$node.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$node")
log.console = false
log.file.level = info
EOF
        boot "$node"
    done
    for node in "${NODES[@]}"; do
        await_boot "$node"
    done
    for node in "${NODES[@]:1}"; do
        ctl "$node" stop_app
        ctl "$node" join_cluster "$(name c1)"
        ctl "$node" start_app
    done
    cmd_status
}

# Graceful where possible (SIGTERM), then SIGKILL; removes the state directory.
cmd_stop() {
    [ -d "$DIR" ] || return 0
    local pids=()
    for node in "${NODES[@]}"; do
        if pid=$(running_pid "$node"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$DIR"
}

cmd_kill() {
    local node=$1 pid
    pid=$(running_pid "$node") || { echo "node $node is not running" >&2; exit 1; }
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    echo "killed $(name "$node") (pid $pid)"
}

cmd_restart() {
    local node=$1
    if running_pid "$node" >/dev/null; then
        ctl "$node" stop
    fi
    boot "$node"
    await_boot "$node"
    echo "restarted $(name "$node")"
}

cmd_status() {
    ctl c1 cluster_status --formatter json | tr -d '\n'
    echo
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    kill) cmd_kill "${2:?node}" ;;
    restart) cmd_restart "${2:?node}" ;;
    pid) running_pid "${2:?node}" ;;
    quorum-critical) queues "${2:?node}" check_if_node_is_quorum_critical ;;
    quorum-members) queues "${2:?node}" quorum_status "${3:?queue}" --formatter json ;;
    *)
        echo "usage: $0 start|stop|status|kill NODE|restart NODE|pid NODE|quorum-critical NODE|quorum-members NODE QUEUE" >&2
        exit 2
        ;;
esac
