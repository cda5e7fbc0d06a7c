#!/usr/bin/env bash
# Key rotation under load, end to end, with the release binary: a worker fills a fresh
# database under key k1; it is restarted with `k2,k1`; while loadgen keeps publishing,
# `keys rotate` runs, is killed with SIGKILL part-way, and runs again to the end; the
# worker then restarts with k2 alone (the old key removed) and serves more traffic.
# Prints `keys status` at each step and loadgen's accounting; exits non-zero if any
# message is missing or a row is left under k1. Cleans up its database, exchange and
# queues. Needs Postgres and RabbitMQ on localhost (scripts/services), openssl, curl.
#
#   cargo build --release && bench/rotation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${WORKER_BIN:-target/release/wallet-worker}
FILL=${FILL:-6000}          # orders placed under k1 before the rotation
LOAD=${LOAD:-12000}         # orders placed while the rotation runs
RATE=${RATE:-300}           # loadgen messages per second
ROTATE_RATE=${ROTATE_RATE:-400}

run=rot_$(date +%s)_$$
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/wallet_$run"
export AMQP_URL="amqp://guest:guest@127.0.0.1:5672/%2f"
export WALLET_EXCHANGE=$run WALLET_QUEUE=$run WALLET_LOG_FORMAT=json RUST_LOG=warn
export WALLET_GATEWAY_SECRET=sim-secret
k1="k1:$(openssl rand -base64 32)"
k2="k2:$(openssl rand -base64 32)"
sim_port=$((20000 + RANDOM % 20000))
admin_port=$((sim_port + 1))
work=$(mktemp -d)
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -h 127.0.0.1 -U postgres -qAtc "drop database if exists wallet_$run with (force)" >/dev/null || true
  for q in "$run" "$run.dlq"; do rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true; done
  rabbitmqadmin delete exchange name="$run" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

start_worker() { # KEYS
  WALLET_ENCRYPTION_KEYS=$1 WALLET_ADMIN_ADDR=127.0.0.1:$admin_port "$BIN" run >>"$work/worker.log" 2>&1 &
  worker=$!
  pids+=("$worker")
  for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$admin_port/readyz" >/dev/null && return 0
    kill -0 "$worker" 2>/dev/null || { tail -5 "$work/worker.log"; return 1; }
    sleep 0.5
  done
  echo "the worker did not become ready"; return 1
}
stop_worker() { kill -TERM "$worker"; wait "$worker" || true; }
status() { WALLET_ENCRYPTION_KEYS=$1 "$BIN" keys status; }
loadgen() { # COUNT -> prints the JSON report's accounting
  "$BIN" loadgen --count "$1" --rate "$RATE" --save-ratio 0.9 --timeout-secs 600 --json >"$2"
}

"$BIN" gateway-sim --listen "127.0.0.1:$sim_port" >"$work/sim.log" 2>&1 &
pids+=($!)
WALLET_ENCRYPTION_KEYS=$k1 "$BIN" migrate
WALLET_ENCRYPTION_KEYS=$k1 "$BIN" gateway set sim --token-url "http://127.0.0.1:$sim_port/token"

say "fill under k1: $FILL orders"
start_worker "$k1"
loadgen "$FILL" "$work/fill.json"
stop_worker

say "the worker restarts with k2,k1; loadgen publishes $LOAD more while keys rotate"
start_worker "$k2,$k1"
loadgen "$LOAD" "$work/load.json" &
load=$!
status "$k2,$k1"

say "keys rotate --rate $ROTATE_RATE, killed with SIGKILL after 6 s"
WALLET_ENCRYPTION_KEYS="$k2,$k1" "$BIN" keys rotate --rate "$ROTATE_RATE" &
rotate=$!
sleep 6
kill -KILL "$rotate"; wait "$rotate" || true
status "$k2,$k1"

say "keys rotate again, to the end"
time WALLET_ENCRYPTION_KEYS="$k2,$k1" "$BIN" keys rotate --rate "$ROTATE_RATE"
wait "$load"
status "$k2,$k1"
stop_worker

say "k1 removed: the worker restarts with k2 alone and serves 1000 more"
start_worker "$k2"
loadgen 1000 "$work/after.json"
stop_worker
status "$k2"

say "loadgen accounting (published / completed / missing)"
missing=0
for phase in fill load after; do
  line=$(jq -r '"\(.published) published, \(.completed_total) completed, \(.missing) missing"' "$work/$phase.json")
  echo "$phase: $line"
  missing=$((missing + $(jq -r .missing "$work/$phase.json")))
done
left=$(WALLET_ENCRYPTION_KEYS=$k2 "$BIN" keys status --json | jq '[.rows.k1 // {} | .[]] | add // 0')
echo "rows still under k1: $left"
[[ $missing -eq 0 && $left -eq 0 ]]
