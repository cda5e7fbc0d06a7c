#!/usr/bin/env bash
# bench/dlq.sh — the dead-letter store at depth (a benchmark, not a test), against the
# local RabbitMQ and Postgres, with release builds.
#
#   bench/dlq.sh                          # 10^6 dead letters (about 20 minutes)
#   COUNT=100000 RUNS=3 bench/dlq.sh      # a quicker check of the plumbing
#
# 1. examples/fill_dlq declares the worker's topology and fills <queue>.dlq with COUNT
#    realistic dead letters (~600-byte bodies; four x-wallet-* error kinds, one in ten
#    a broker dead letter with only x-death): a deployment with a backlog, upgraded.
# 2. A release worker (`run`, fresh database) starts and ingests them. Ingestion rate:
#    COUNT / seconds from the worker's start to the last row stored. RabbitMQ's and the
#    worker's resident memory are sampled meanwhile.
# 3. With the worker running, each read RUNS times: `dlq summary`, `dlq list` (a page),
#    a filtered page, `dlq show`, the console's /ui/dlq (groups) and a filtered
#    /ui/dlq/list: median and worst wall time, the client's peak RSS (for the console,
#    the worker's before and after), RabbitMQ's RSS before / peak / after.
# 4. The worker stops; `dlq replay --error gateway_unavailable --rate RATE` replays a
#    quarter of them (250,000 at 10^6) into the worker's queue: wall time, achieved
#    rate, peak RSS; then the queue must hold exactly that many messages, the outbox
#    none, and that many rows be marked replayed (nothing lost, nothing doubled).
# 5. Everything it made is deleted.
# Results: a markdown table on stdout, appended to bench/dlq-results.md. Targets are in
# the table; ratio = measured / target (below 1 is within the target).
set -euo pipefail

cd "$(dirname "$0")/.."
COUNT="${COUNT:-1000000}"
RUNS="${RUNS:-5}"
RATE="${RATE:-5000}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
PG="${PG:-postgres://postgres@127.0.0.1:5432}"
BIN=target/release/wallet-worker
FILL=target/release/examples/fill_dlq
OUT="${OUT:-bench/dlq-results.md}"
STAMP="$(date +%s)"
WORK="$(mktemp -d /tmp/wallet-dlq-bench.XXXXXX)"
export WALLET_QUEUE="bench-dlq-$STAMP" WALLET_EXCHANGE="bench-dlq-x-$STAMP"
export DATABASE_URL="$PG/wallet_bench_dlq_$STAMP"
export WALLET_ADMIN_TOKEN="bench-token-$STAMP" RUST_LOG=warn
# A fresh data-encryption key: the store seals every dead letter's body and headers.
WALLET_ENCRYPTION_KEYS="bench:$(head -c 32 /dev/urandom | base64)"
export WALLET_ENCRYPTION_KEYS
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export WALLET_ADMIN_ADDR="127.0.0.1:$PORT"
WORKER_PID=""

CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --bin wallet-worker --example fill_dlq >&2

cleanup() {
  [[ -n "$WORKER_PID" ]] && kill "$WORKER_PID" 2>/dev/null && wait "$WORKER_PID" 2>/dev/null || true
  "$FILL" --queue "$WALLET_QUEUE" --exchange "$WALLET_EXCHANGE" --count 0 --teardown || true
  psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS wallet_bench_dlq_$STAMP WITH (FORCE)" || true
  rm -rf "$WORK"
}
trap cleanup EXIT

beam_rss() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$(pgrep -o beam.smp)/status"; }
rss_of() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
sql() { psql -Atq "$DATABASE_URL" -c "$1"; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
stored() { sql "SELECT coalesce(sum(count), 0) FROM dead_letter_groups"; }
ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# sample_beam FILE: RabbitMQ's RSS every 0.1 s until killed.
sample_beam() { while true; do beam_rss; echo; sleep 0.1; done >"$1" 2>/dev/null; }

# measure LABEL TARGET_MS CMD...: RUNS runs of a command; one table row.
measure() {
  local label="$1" target="$2"; shift 2
  local before after peak sampler walls="$WORK/walls" rss="$WORK/rss"
  : >"$walls"; : >"$rss"
  before="$(beam_rss)"
  sample_beam "$WORK/beam" & sampler=$!
  for _ in $(seq "$RUNS"); do
    local t0; t0="$(now_ms)"
    /usr/bin/time -f "%M" -o "$WORK/time" "$@" >"$WORK/stdout" 2>"$WORK/stderr" ||
      { echo "failed: $label" >&2; cat "$WORK/stderr" >&2; }
    echo $(( $(now_ms) - t0 )) >>"$walls"
    tail -1 "$WORK/time" >>"$rss"
  done
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  after="$(beam_rss)"; peak="$(sort -n "$WORK/beam" | tail -1)"
  local med worst max_rss last
  med="$(median <"$walls")"; worst="$(sort -n "$walls" | tail -1)"
  max_rss="$(sort -n "$rss" | tail -1 | awk '{ printf "%.1f", $1 / 1024 }')"
  last="$( (tail -1 "$WORK/stdout"; tail -1 "$WORK/stderr") | grep -v '^{' | tail -1 | cut -c1-70)"
  printf '| `%s` | %s | %s | %s ms (%s) | %s MiB (%s) | %s → %s → %s | %s |\n' \
    "$label" "$med" "$worst" "$target" "$(ratio "$med" "$target")" "$max_rss" "$(ratio "$max_rss" 32)" \
    "$before" "$peak" "$after" "$last" | tee -a "$OUT"
}

# page LABEL TARGET_MS PATH: RUNS views of a console page; one table row.
page() {
  local label="$1" target="$2" path="$3" before after peak sampler walls="$WORK/walls"
  : >"$walls"
  local worker_before; worker_before="$(rss_of "$WORKER_PID")"
  before="$(beam_rss)"
  sample_beam "$WORK/beam" & sampler=$!
  for _ in $(seq "$RUNS"); do
    curl -sf -o "$WORK/page" -w '%{time_total}\n' -u "bench:$WALLET_ADMIN_TOKEN" \
      "http://$WALLET_ADMIN_ADDR$path" | awk '{ printf "%d\n", $1 * 1000 }' >>"$walls"
  done
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  after="$(beam_rss)"; peak="$(sort -n "$WORK/beam" | tail -1)"
  local med worst; med="$(median <"$walls")"; worst="$(sort -n "$walls" | tail -1)"
  printf '| console `%s` | %s | %s | %s ms (%s) | worker %s → %s MiB | %s → %s → %s | %s bytes |\n' \
    "$label" "$med" "$worst" "$target" "$(ratio "$med" "$target")" "$worker_before" \
    "$(rss_of "$WORKER_PID")" "$before" "$peak" "$after" "$(wc -c <"$WORK/page")" | tee -a "$OUT"
}

{
  echo
  echo "### Run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $COUNT dead letters"
  echo
  echo "$(nproc) cores shared with other work, load $(cut -d' ' -f1-3 /proc/loadavg) at the start; RabbitMQ $(rabbitmqctl -q version 2>/dev/null || echo '?'), Postgres $(psql -Atq "$PG/postgres" -c 'SHOW server_version')."
  echo
} | tee -a "$OUT"

# 1. The backlog.
t0="$(now_ms)"
"$FILL" --queue "$WALLET_QUEUE" --exchange "$WALLET_EXCHANGE" --count "$COUNT" >&2
fill_ms=$(( $(now_ms) - t0 ))
"$BIN" migrate >/dev/null

# 2. Ingestion by a worker started on it.
beam_before="$(beam_rss)"
sample_beam "$WORK/beam-ingest" & sampler=$!
t0="$(now_ms)"
"$BIN" run 2>"$WORK/worker.log" & WORKER_PID=$!
worker_peak=0
while [[ "$(stored)" -lt "$COUNT" ]]; do
  sleep 0.5
  kill -0 "$WORKER_PID" || { cat "$WORK/worker.log" >&2; exit 1; }
  worker_peak=$(( $(rss_of "$WORKER_PID") > worker_peak ? $(rss_of "$WORKER_PID") : worker_peak ))
done
ingest_ms=$(( $(now_ms) - t0 ))
kill "$sampler"; wait "$sampler" 2>/dev/null || true
sleep 2 # the last acks
rate=$(( COUNT * 1000 / ingest_ms ))
{
  echo "| step | result | target (ratio) | memory |"
  echo "|---|---:|---:|---|"
  echo "| fill \`.dlq\` (examples/fill_dlq) | $COUNT in $(( fill_ms / 1000 )) s | | |"
  echo "| ingestion by \`run\` | $COUNT in $(( ingest_ms / 1000 )) s = **$rate/s** | ≥ 5,000/s ($(ratio 5000 "$rate") of the time allowed) | worker peak $worker_peak MiB; RabbitMQ $beam_before → peak $(sort -n "$WORK/beam-ingest" | tail -1) → $(beam_rss) MiB |"
  echo "| rows stored / distinct message ids | $(sql 'SELECT count(*) FROM dead_letters') / $(sql 'SELECT count(DISTINCT message_id) FROM dead_letters') | $COUNT / $COUNT | |"
  echo
  echo "| read ($RUNS runs) | median ms | worst ms | target (ratio) | client peak RSS (ratio to 32 MiB) | RabbitMQ RSS MiB before → peak → after | last line |"
  echo "|---|---:|---:|---:|---:|---:|---|"
} | tee -a "$OUT"

# 3. Reads, with the worker running.
sql "VACUUM ANALYZE dead_letters" >/dev/null
last_id="$(printf 'fill-%08d' $((COUNT - 2)))"
group="$(sql "SELECT group_key FROM dead_letter_groups WHERE error = 'internal_error'")"
measure "dlq summary --json" 1000 "$BIN" dlq summary --json
measure "dlq list" 100 "$BIN" dlq list
measure "dlq list --error order_not_found --type wallet.save" 100 "$BIN" dlq list --error order_not_found --type wallet.save
measure "dlq list --group <internal_error> --since <middle>" 100 "$BIN" dlq list --group "$group" --since "$(sql "SELECT to_char(dead_lettered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM dead_letters WHERE message_id = 'fill-$(printf '%08d' $((COUNT / 2)))'")"
measure "dlq show $last_id" 100 "$BIN" dlq show "$last_id"
page "/ui/dlq" 200 "/ui/dlq"
page "/ui/dlq/list?error=malformed" 200 "/ui/dlq/list?error=malformed"

# 4. Replay a quarter by error kind, paced, with the worker stopped (its queue keeps
#    what arrives, to be counted).
kill -TERM "$WORKER_PID"; wait "$WORKER_PID" || true; WORKER_PID=""
selected="$(sql "SELECT count(*) FROM dead_letters WHERE error = 'gateway_unavailable' AND replayed_at IS NULL")"
beam_before="$(beam_rss)"
sample_beam "$WORK/beam-replay" & sampler=$!
t0="$(now_ms)"
/usr/bin/time -f "%M" -o "$WORK/time" "$BIN" dlq replay --error gateway_unavailable --rate "$RATE" --actor bench \
  >"$WORK/replay.out" 2>"$WORK/replay.err"
replay_ms=$(( $(now_ms) - t0 ))
kill "$sampler"; wait "$sampler" 2>/dev/null || true
# A quorum queue's count lags its publishes by a few seconds: read until it holds still.
queued() { rabbitmqctl -q list_queues name messages | awk -v q="$WALLET_QUEUE" '$1 == q { print $2 }'; }
in_queue="$(queued)"
for _ in $(seq 30); do
  sleep 2
  now="$(queued)"
  [[ "$now" == "$in_queue" && "$now" -ge "$selected" ]] && break
  in_queue="$now"
done
{
  echo
  echo "| replay \`--error gateway_unavailable --rate $RATE\` | result | target (ratio) |"
  echo "|---|---:|---:|"
  echo "| selected | $selected | |"
  echo "| wall time | $(( replay_ms / 1000 )).$(( replay_ms % 1000 / 100 )) s = **$(( selected * 1000 / replay_ms ))/s** | $RATE/s ($(ratio "$RATE" "$(( selected * 1000 / replay_ms ))")) |"
  echo "| messages in the worker's queue afterwards | $in_queue | $selected (none lost, none doubled) |"
  echo "| rows marked replayed / outbox rows left | $(sql "SELECT count(*) FROM dead_letters WHERE replayed_at IS NOT NULL") / $(sql 'SELECT count(*) FROM outbox') | $selected / 0 |"
  echo "| client peak RSS | $(awk '{ printf "%.1f", $1 / 1024 }' "$WORK/time") MiB | 32 MiB |"
  echo "| RabbitMQ RSS before → peak → after | $beam_before → $(sort -n "$WORK/beam-replay" | tail -1) → $(beam_rss) MiB | |"
  echo "| last line | $(tail -1 "$WORK/replay.out") | |"
} | tee -a "$OUT"
