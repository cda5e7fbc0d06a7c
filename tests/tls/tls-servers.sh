#!/usr/bin/env bash
# A Postgres and a RabbitMQ of the test's own, each accepting only TLS, with the
# certificate the test made (DIR/server.pem and DIR/server.key, signed by its CA):
#
#   tls-servers.sh start DIR      Postgres on 127.0.0.1:5691 (hostssl only),
#                                 RabbitMQ on 127.0.0.1:5692 (TLS only; guest/guest)
#   tls-servers.sh stop DIR
#
# Both keep their state under DIR; the shared servers on 5432 and 5672 are untouched.
# Postgres runs as the `postgres` user (initdb refuses root), RabbitMQ as the caller.
# Needs root, PostgreSQL's binaries (/usr/lib/postgresql/*/bin) and rabbitmq-server.
set -euo pipefail

PG_PORT=5691
AMQPS_PORT=5692
DIST_PORT=25692
NODE=wallet-tls@localhost
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
SBIN=${RABBITMQ_SBIN:-/usr/lib/rabbitmq/bin}
DIR=${2:?usage: $0 start|stop DIR}
PGDATA="$DIR/pg"
RMQ="$DIR/rabbitmq"

as_postgres() { runuser -u postgres -- "$@"; }
rabbit() {
    env HOME="$RMQ" RABBITMQ_NODENAME="$NODE" RABBITMQ_DIST_PORT="$DIST_PORT" \
        RABBITMQ_CONF_ENV_FILE="$RMQ/rabbitmq-env.conf" RABBITMQ_CONFIG_FILE="$RMQ/node.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$RMQ/mnesia" RABBITMQ_LOG_BASE="$RMQ/log" \
        RABBITMQ_PID_FILE="$RMQ/node.pid" RABBITMQ_ALLOW_INPUT=true \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-noinput -noshell -kernel inet_dist_use_interface {127,0,0,1}" \
        "$@"
}

start_postgres() {
    mkdir -p "$PGDATA"
    chown postgres "$PGDATA"
    as_postgres "$PG_BIN/initdb" -D "$PGDATA" -U postgres -A trust --no-sync >"$DIR/initdb.log"
    install -o postgres -m 600 "$DIR/server.pem" "$PGDATA/server.crt"
    install -o postgres -m 600 "$DIR/server.key" "$PGDATA/server.key"
    cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PGDATA'
ssl = on
fsync = off
EOF
    # TLS or nothing over TCP: a client that works proves it spoke TLS.
    printf 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n' >"$PGDATA/pg_hba.conf"
    as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/postgres.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$PGDATA/postgres.log" >&2; exit 1; }
}

start_rabbitmq() {
    mkdir -p "$RMQ/log"
    chmod 700 "$RMQ"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RMQ/.erlang.cookie"
    chmod 400 "$RMQ/.erlang.cookie"
    : >"$RMQ/rabbitmq-env.conf"
    echo "[]." >"$RMQ/enabled_plugins"
    echo "[]." >"$RMQ/advanced.config"
    cat >"$RMQ/node.conf" <<EOF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$AMQPS_PORT
ssl_options.cacertfile = $DIR/ca.pem
ssl_options.certfile = $DIR/server.pem
ssl_options.keyfile = $DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
log.console = false
EOF
    rabbit setsid "$SBIN/rabbitmq-server" >>"$RMQ/log/stdout.log" 2>&1 </dev/null &
    echo $! >"$RMQ/node.pid"
    rabbit "$SBIN/rabbitmqctl" -q -n "$NODE" wait "$RMQ/node.pid" --timeout 90 >/dev/null \
        || { tail -n 30 "$RMQ/log/stdout.log" >&2; exit 1; }
}

stop_all() {
    if [ -f "$PGDATA/postmaster.pid" ]; then
        as_postgres "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    if [ -f "$RMQ/node.pid" ]; then
        pid=$(cat "$RMQ/node.pid")
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
        # epmd stays for other nodes; this node's name is free again.
    fi
}

case "$1" in
    start) stop_all; start_postgres; start_rabbitmq; echo "postgres 127.0.0.1:$PG_PORT amqps 127.0.0.1:$AMQPS_PORT" ;;
    stop) stop_all ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
