#!/usr/bin/env bash
# bench/retention.sh — the worker's throughput while the retention pruner clears a
# backlog of old inbox rows, against the same worker with no pruning.
#
#   bench/retention.sh                 # 10^7 old rows, 2 rounds (about 25 minutes)
#   ROWS=100000 COUNT=5000 ROUNDS=1 bench/retention.sh   # the plumbing
#
# One database, exchange, queue and gateway-sim for every run:
#   1. `migrate`, `gateway set sim`, a warm-up loadgen (so processed_messages has a
#      real row), then ROWS processed message ids aged 31 to 40 days are inserted in
#      chunks of 10^6 (naming only message_id, message_type and processed_at: any
#      other column without a default is made nullable in this throwaway database),
#      and the table is vacuumed and analysed;
#   2. ROUNDS times, in the order off, on: starts `wallet-worker run` with pruning
#      effectively off (WALLET_RETENTION_INTERVAL_MS one hour: the first pass would
#      come after the run) or on (every second; it starts at once and works through
#      the backlog, 1000 rows per transaction, 100 ms apart); for "on", waits until
#      old rows are going; runs `loadgen --count COUNT --seed 42 --json`; reads the
#      old rows left before and after (rows pruned during the measured window);
#      stops the worker (SIGTERM).
# Output: one markdown row per run on stdout and in bench/retention-results.md.
set -euo pipefail

cd "$(dirname "$0")/.."
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
ROWS="${ROWS:-10000000}"
COUNT="${COUNT:-60000}"
ROUNDS="${ROUNDS:-2}"
PREFETCH="${PREFETCH:-64}"
OUT="${OUT:-bench/retention-results.md}"
BIN=target/release/wallet-worker
FILL=target/release/examples/fill_dlq
SECRET="bench-secret-$RANDOM$RANDOM"
STAMP="$(date +%s)"
NAME="bench-retention-$STAMP"
DB="bench_retention_$STAMP"
WORK="$(mktemp -d /tmp/wallet-retention-bench.XXXXXX)"
export DATABASE_URL="$PG_URL/$DB" WALLET_EXCHANGE="$NAME" WALLET_QUEUE="$NAME"
export WALLET_PREFETCH="$PREFETCH" WALLET_ADMIN_ADDR=127.0.0.1:0
SIM_PID="" WORKER_PID=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
sql() { psql -qAt "$DATABASE_URL" -c "$1"; }
old_rows() { sql "SELECT count(*) FROM processed_messages WHERE processed_at < now() - interval '30 days'"; }

wait_for_line() { # file pattern pid
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "process $3 died; see $1"; cat "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"; return 1
}

stop_worker() {
  if [[ -n "$WORKER_PID" ]]; then
    kill -TERM "$WORKER_PID" 2>/dev/null || true
    wait "$WORKER_PID" 2>/dev/null || true
  fi
  WORKER_PID=""
}

cleanup() {
  stop_worker
  [[ -n "$SIM_PID" ]] && { kill -TERM "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }
  "$FILL" --teardown --queue "$NAME" --exchange "$NAME" --count 0 2>/dev/null || true
  for level in $(rabbitmqctl -q list_queues name | grep "^$NAME\."); do
    rabbitmqctl -q delete_queue "$level" >/dev/null 2>&1 || true
  done
  psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_worker() { # interval_ms run_no
  WALLET_RETENTION_INTERVAL_MS="$1" RUST_LOG=warn,wallet_worker::worker=info,wallet_worker::store::retention=info \
    "$BIN" run >"$WORK/$2.worker.log" 2>&1 &
  WORKER_PID=$!
  wait_for_line "$WORK/$2.worker.log" 'connected to the broker' "$WORKER_PID"
}

loadgen() { # count → JSON report
  "$BIN" loadgen --count "$1" --seed 42 --save-ratio 0.5 --timeout-secs 600 --json 2>>"$WORK/loadgen.err"
}

CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --bin wallet-worker --example fill_dlq >&2
GATEWAY_SIM_SECRET="$SECRET" "$BIN" gateway-sim --listen 127.0.0.1:0 >"$WORK/sim.out" 2>"$WORK/sim.err" &
SIM_PID=$!
wait_for_line "$WORK/sim.out" 'listening on' "$SIM_PID"
TOKEN_URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/sim.out")"
"$BIN" migrate >/dev/null
WALLET_GATEWAY_SECRET="$SECRET" "$BIN" gateway set sim --token-url "$TOKEN_URL" >/dev/null

start_worker 3600000 warmup
loadgen 2000 >/dev/null
stop_worker
log "inserting $ROWS old processed message ids"
started=$(date +%s)
# Columns other than the id, type and time, if any, become nullable in this throwaway
# database, so the insert names only the three (the schema may change around them).
sql "DO \$\$ DECLARE c text; BEGIN
       FOR c IN SELECT column_name FROM information_schema.columns
                WHERE table_name = 'processed_messages' AND is_nullable = 'NO'
                  AND column_default IS NULL
                  AND column_name NOT IN ('message_id', 'message_type', 'processed_at') LOOP
         EXECUTE format('ALTER TABLE processed_messages ALTER COLUMN %I DROP NOT NULL', c);
       END LOOP; END \$\$"
chunk=1000000
for ((from = 1; from <= ROWS; from += chunk)); do
  to=$((from + chunk - 1 < ROWS ? from + chunk - 1 : ROWS))
  sql "INSERT INTO processed_messages (message_id, message_type, processed_at)
       SELECT 'old-' || i, 'order.placed',
              now() - interval '40 days' + (i::float8 / $ROWS) * interval '9 days'
       FROM generate_series($from, $to) i"
  log "  $to rows"
done
sql "VACUUM ANALYZE processed_messages"
log "inserted and vacuumed in $(( $(date +%s) - started )) s; table $(sql "SELECT pg_size_pretty(pg_total_relation_size('processed_messages'))")"

{
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg); $ROWS old inbox rows; loadgen --count $COUNT --seed 42 --save-ratio 0.5; prefetch $PREFETCH"
  echo
  echo '| run | pruner | msgs/s | p50 / p99 ms | old rows before → after | pruned rows/s during the run |'
  echo '|---:|---|---:|---:|---:|---:|'
} | tee -a "$OUT"

run=0
for round in $(seq "$ROUNDS"); do
  for mode in off on; do
    run=$((run + 1))
    if [[ $mode == on ]]; then interval=1000; else interval=3600000; fi
    start_worker "$interval" "$run"
    before="$(old_rows)"
    if [[ $mode == on ]]; then
      # The pruner's first pass starts a second after the worker: wait until it bites.
      for _ in $(seq 100); do [[ "$(old_rows)" -lt "$before" ]] && break; sleep 0.2; done
      before="$(old_rows)"
    fi
    t0=$(date +%s.%N)
    report="$(loadgen "$COUNT")"
    t1=$(date +%s.%N)
    after="$(old_rows)"
    stop_worker
    jq -r --arg run "$run" --arg mode "$mode" --arg before "$before" --arg after "$after" \
      --arg secs "$(echo "$t1 - $t0" | bc)" '
      "| \($run) | \($mode) | \(.published / .window_seconds | floor) | \(.latency_ms.p50) / \(.latency_ms.p99) | \($before) → \($after) | \((($before | tonumber) - ($after | tonumber)) / ($secs | tonumber) | floor) |"' \
      <<<"$report" | tee -a "$OUT"
  done
done
