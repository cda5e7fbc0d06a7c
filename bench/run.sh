#!/usr/bin/env bash
# bench/run.sh — the worker's throughput against the reference ceiling, its CPU per
# message, and its latency and memory at a paced load, on the local services.
#
#   CEILING_DIR=/path/to/reference-ceiling bench/run.sh
#
# The reference ceiling is the naive design every throughput figure is a ratio to (one
# task per delivery: the gateway call, one transaction, a confirmed publish, the ack;
# K in flight). It is not part of this repository: CEILING_DIR names its source
# directory, and the script builds it there (`cargo build --release`).
#
# 1. Drain race, for each gateway latency L in LATENCIES, PAIRS pairs in A B B A order
#    (a slow spell of a noisy machine hits both designs):
#    - worker: a fresh vhost and database; `migrate`; a gateway registered with
#      `gateway set` whose token_url is the ceiling's `tokenstub --latency-ms L`; `run`
#      started once to declare its topology, then stopped; a durable queue bound to
#      `wallet.#` collects the events; N valid `order.placed` saves (distinct customers
#      and tokens) are published into the stopped worker's queue; then `run` with
#      WALLET_PREFETCH=256 drains them while `drain_race watch` polls the events queue
#      every 50 ms. Throughput: events from the first to the N-th over that time. Every
#      message must give exactly one saved card; nothing may be dead-lettered.
#    - ceiling: `ceiling preload --n N`, then `ceiling pipeline --no-preload
#      --http-latency-ms L --concurrency 256` against `ceiling stub`, in its own vhost
#      and database; it prints its msgs/s and CPU per message.
#    CPU per message, both sides: the consumer's own, every `beam.smp` and every
#    `postgres` process, over the drain window (as the ceiling measures itself).
#    BASELINE_BIN, when set, races a second worker binary too (before/after a change in
#    one run: A B C C B A).
# 2. Paced latency: the worker alone (prefetch 256, `gateway-sim --latency-ms 0`),
#    `loadgen --rate R` for R in PACED_RATES: p50/p99 and peak RSS.
#
# Output: bench/results.jsonl (one JSON object per run) and bench/results.md (tables).
#
# Settings (environment):
#   CEILING_DIR   reference ceiling source directory (required)
#   WORKER_BIN    worker binary        ($CARGO_TARGET_DIR or target, /release/wallet-worker,
#                 built by this script)
#   BASELINE_BIN  a second worker binary to race (unset: none)
#   LATENCIES     gateway latencies ms ("0 20")
#   PAIRS         pairs per latency    (3)
#   N             messages per drain   (20000)
#   PACED_RATES   msgs/s of the paced runs; "" skips them ("200 1000")
#   PACED_SECONDS length of a paced run (15)
#   NO_BUILD      set: use the binaries as they are (no cargo build of the worker)
set -euo pipefail

cd "$(dirname "$0")/.."
: "${CEILING_DIR:?must name the source directory of the reference ceiling}"
TARGET="${CARGO_TARGET_DIR:-target}"
WORKER_BIN="${WORKER_BIN:-$TARGET/release/wallet-worker}"
BASELINE_BIN="${BASELINE_BIN:-}"
LATENCIES="${LATENCIES:-0 20}"
PAIRS="${PAIRS:-3}"
N="${N:-20000}"
PACED_RATES="${PACED_RATES-200 1000}"
PACED_SECONDS="${PACED_SECONDS:-15}"
PG_URL="postgres://postgres@127.0.0.1:5432"
RACE="$TARGET/release/examples/drain_race"
CEILING="$CEILING_DIR/target/release/ceiling"
RESULTS=bench/results.jsonl
REPORT=bench/results.md
WORK="$(mktemp -d /tmp/wallet-bench.XXXXXX)"
STAMP="$(date +%s)"
RUN_NO=0
export WALLET_GATEWAY_SECRET="bench-secret-$RANDOM$RANDOM"
# A data-encryption key of the bench's own (workers that encrypt stored secrets need one).
WALLET_ENCRYPTION_KEYS="bench:$(head -c 32 /dev/urandom | base64)"
export WALLET_ENCRYPTION_KEYS
# What the current run started, for the clean-up.
PIDS=()
VHOST="" DB=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  [[ -n "$VHOST" ]] && rabbitmqctl -q delete_vhost "$VHOST" >/dev/null 2>&1 || true
  [[ -n "$DB" ]] && psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null 2>&1 || true
  PIDS=()
  VHOST="" DB=""
}
trap cleanup EXIT

# Waits up to 60 s for a line matching $2 in file $1 while process $3 lives.
wait_for_line() {
  for _ in $(seq 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "process $3 died; see $1"; tail -20 "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A vhost and a database of the run's own: sets VHOST, DB, AMQP.
fresh_place() {
  RUN_NO=$((RUN_NO + 1))
  VHOST="bench-$STAMP-$RUN_NO" DB="bench_${STAMP}_$RUN_NO"
  rabbitmqctl -q add_vhost "$VHOST" >/dev/null
  rabbitmqctl -q set_permissions -p "$VHOST" guest '.*' '.*' '.*' >/dev/null
  AMQP="amqp://guest:guest@127.0.0.1:5672/$VHOST"
}

# ---- the drain race -------------------------------------------------------------

drain_worker() { # label bin latency → one JSON line
  local label=$1 bin=$2 latency=$3 port pid
  fresh_place
  export AMQP_URL="$AMQP" DATABASE_URL="$PG_URL/$DB" WALLET_EXCHANGE=bench WALLET_QUEUE=bench-wallet
  export WALLET_ADMIN_ADDR=127.0.0.1:0 RUST_LOG=warn,wallet_worker::worker=info
  port="$(free_port)"
  "$CEILING" tokenstub --port "$port" --latency-ms "$latency" 2>"$WORK/$RUN_NO.stub.log" &
  PIDS+=($!)
  wait_for_line "$WORK/$RUN_NO.stub.log" 'listening' "$!"
  "$bin" migrate >/dev/null
  "$bin" gateway set bench --token-url "http://127.0.0.1:$port/token" >/dev/null
  "$bin" run >"$WORK/$RUN_NO.declare.log" 2>&1 &
  pid=$!
  wait_for_line "$WORK/$RUN_NO.declare.log" 'connected to the broker' "$pid"
  kill -TERM "$pid" && wait "$pid"
  "$RACE" --amqp-url "$AMQP" events --exchange bench --queue bench-events
  "$RACE" --amqp-url "$AMQP" preload --exchange bench --n "$N" --gateway bench
  WALLET_PREFETCH=256 "$bin" run >"$WORK/$RUN_NO.worker.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  local result saved
  result="$("$RACE" --amqp-url "$AMQP" watch --queue bench-events --n "$N" --pid "$pid")"
  saved="$(psql -qAt "$DATABASE_URL" -c 'SELECT count(*) FROM customer_payment_sources')"
  [[ "$saved" == "$N" ]] || { log "worker saved $saved cards of $N"; return 1; }
  local dead
  dead="$(psql -qAt "$DATABASE_URL" -c 'SELECT count(*) FROM dead_letters')"
  [[ "$dead" == 0 ]] || { log "worker dead-lettered $dead messages"; return 1; }
  local rss
  rss="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
  cleanup
  jq -c --arg design "$label" --argjson latency "$latency" --argjson rss "$rss" \
    '{design: $design, latency_ms: $latency, msgs_per_s, cpu_us_per_msg, peak_rss_mib: ($rss / 1024)}' <<<"$result"
}

drain_ceiling() { # latency → one JSON line
  local latency=$1 port result
  fresh_place
  psql -q "$PG_URL/postgres" -c "CREATE DATABASE \"$DB\"" >/dev/null
  port="$(free_port)"
  "$CEILING" stub --port "$port" 2>"$WORK/$RUN_NO.stub.log" &
  PIDS+=($!)
  wait_for_line "$WORK/$RUN_NO.stub.log" 'listening' "$!"
  local where=(--amqp "$AMQP" --pg "$PG_URL/$DB")
  "$CEILING" "${where[@]}" preload --n "$N" >/dev/null 2>>"$WORK/$RUN_NO.ceiling.log"
  result="$("$CEILING" "${where[@]}" pipeline --n "$N" --no-preload --http-latency-ms "$latency" \
    --concurrency 256 --stub-url "http://127.0.0.1:$port/token" 2>>"$WORK/$RUN_NO.ceiling.log")"
  cleanup
  jq -c --argjson latency "$latency" '{design: "ceiling", latency_ms: $latency, msgs_per_s,
    cpu_us_per_msg: {consumer: .cpu_us_per_msg.client, rabbitmq: .cpu_us_per_msg.rabbitmq,
                     postgres: .cpu_us_per_msg.postgres}}' <<<"$result"
}

race_one() { # design latency
  log "drain: $1, gateway $2 ms, $N messages"
  # Run in this shell (not a $(...) subshell), so the clean-up knows what it started.
  # A drain that fails (a broker or Postgres restarted by someone else on a shared
  # machine) is run again, up to twice, rather than losing the whole run.
  local try
  for try in 1 2 3; do
    case $1 in
      ceiling) drain_ceiling "$2" >"$WORK/line.json" && [[ -s "$WORK/line.json" ]] && break ;;
      worker) drain_worker worker "$WORKER_BIN" "$2" >"$WORK/line.json" && [[ -s "$WORK/line.json" ]] && break ;;
      baseline) drain_worker baseline "$BASELINE_BIN" "$2" >"$WORK/line.json" && [[ -s "$WORK/line.json" ]] && break ;;
    esac
    cleanup
    ((try < 3)) || return 1
    log "drain failed; again in 10 s"
    sleep 10
  done
  # The load average after the run: the machine is shared, so say how busy it was.
  jq -c --argjson pair "$3" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '. + {pair: $pair, load: ($load | tonumber)}' "$WORK/line.json" | tee -a "$RESULTS" |
    jq -r '"  \(.msgs_per_s | floor) msgs/s; CPU µs/msg own \(.cpu_us_per_msg.consumer), RabbitMQ \(.cpu_us_per_msg.rabbitmq), Postgres \(.cpu_us_per_msg.postgres)"' >&2
}

race() { # latency
  local designs=(worker ceiling) pair order
  [[ -n "$BASELINE_BIN" ]] && designs=(worker baseline ceiling)
  for pair in $(seq "$PAIRS"); do
    order=("${designs[@]}")
    if ((pair % 2 == 0)); then
      order=()
      for ((i = ${#designs[@]} - 1; i >= 0; i--)); do order+=("${designs[$i]}"); done
    fi
    for design in "${order[@]}"; do race_one "$design" "$1" "$pair"; done
  done
}

# ---- paced latency ----------------------------------------------------------------

paced() { # rate → one JSON line
  local rate=$1 pid sim
  fresh_place
  export AMQP_URL="$AMQP" DATABASE_URL="$PG_URL/$DB" WALLET_EXCHANGE=bench WALLET_QUEUE=bench-wallet
  export WALLET_ADMIN_ADDR=127.0.0.1:0 RUST_LOG=warn,wallet_worker::worker=info
  log "paced: worker at $rate msgs/s for $PACED_SECONDS s"
  "$WORKER_BIN" gateway-sim --listen 127.0.0.1:0 --latency-ms 0 >"$WORK/$RUN_NO.sim.log" 2>&1 &
  sim=$!
  PIDS+=("$sim")
  wait_for_line "$WORK/$RUN_NO.sim.log" 'listening on' "$sim"
  "$WORKER_BIN" migrate >/dev/null
  "$WORKER_BIN" gateway set sim --token-url "$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/$RUN_NO.sim.log")" >/dev/null
  WALLET_PREFETCH=256 "$WORKER_BIN" run >"$WORK/$RUN_NO.worker.log" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  wait_for_line "$WORK/$RUN_NO.worker.log" 'connected to the broker' "$pid"
  "$WORKER_BIN" loadgen --count 1000 --seed 7 --json >/dev/null 2>>"$WORK/loadgen.err"
  local report rss
  report="$("$WORKER_BIN" loadgen --count $((rate * PACED_SECONDS)) --rate "$rate" --seed 42 \
    --save-ratio 0.5 --timeout-secs 300 --json 2>>"$WORK/loadgen.err")"
  rss="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
  cleanup
  jq -c --argjson rate "$rate" --argjson rss "$rss" \
    '{design: "paced", rate: $rate, p50_ms: .latency_ms.p50, p99_ms: .latency_ms.p99,
      missing, peak_rss_mib: ($rss / 1024)}' <<<"$report" | tee -a "$RESULTS" |
    jq -r '"  p50 \(.p50_ms) ms, p99 \(.p99_ms) ms, peak RSS \(.peak_rss_mib | floor) MiB, missing \(.missing)"' >&2
}

# ---- the report -------------------------------------------------------------------

write_report() {
  jq -rs --arg date "$(date -u '+%F %R UTC')" --arg host "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted src changes')" \
    --arg n "$N" '
    def r(n): (n * 100 | round) / 100;
    def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def runs(d; l): map(select(.design == d and .latency_ms == l));
    def cpu(d; l; k): runs(d; l) | map(.cpu_us_per_msg[k]) | median;
    def ratio_of(d; l): . as $all | [runs(d; l)[] | . as $w
      | ($all | runs("ceiling"; l) | map(select(.pair == $w.pair)) | first) as $c
      | select($c != null) | $w.msgs_per_s / $c.msgs_per_s] | median;
    "Run \($date) on \($host); commit \($commit); \($n) pre-loaded saves drained at prefetch 256.\n",
    "### Drain race against the reference ceiling (median of the pairs; each pair in A B B A order)\n",
    "| gateway ms | design | msgs/s per run | median msgs/s | / ceiling (median of pair ratios) | CPU µs/msg own / RabbitMQ / Postgres (medians) | own CPU / ceiling'"'"'s | Postgres / ceiling'"'"'s | peak RSS MiB |",
    "|---:|---|---|---:|---:|---|---:|---:|---:|",
    (. as $all | [.[] | select(.latency_ms != null) | .latency_ms] | unique[] as $l
      | ($all | map(select(.latency_ms == $l)) | map(.design) | unique
         | sort_by(if . == "worker" then 0 elif . == "baseline" then 1 else 2 end)[]) as $d
      | $all | runs($d; $l) as $runs
      | "| \($l) | \($d) | \($runs | map(.msgs_per_s | floor | tostring) | join(", ")) | \($runs | map(.msgs_per_s) | median | floor) | \(if $d == "ceiling" then "1" else "**\(r($all | ratio_of($d; $l)))×**" end) | \($all | cpu($d; $l; "consumer")) / \($all | cpu($d; $l; "rabbitmq")) / \($all | cpu($d; $l; "postgres")) | \(r(($all | cpu($d; $l; "consumer")) / ($all | cpu("ceiling"; $l; "consumer"))))× | \(r(($all | cpu($d; $l; "postgres")) / ($all | cpu("ceiling"; $l; "postgres"))))× | \($runs | map(.peak_rss_mib // empty) | max // "–" | if type == "number" then floor else . end) |"),
    "\n### Paced: the worker alone, prefetch 256, gateway 0 ms, loadgen --rate\n",
    "| msgs/s | p50 ms | p99 ms | peak RSS MiB | missing |",
    "|---:|---:|---:|---:|---:|",
    (map(select(.design == "paced"))[] | "| \(.rate) | \(.p50_ms) | \(.p99_ms) | \(.peak_rss_mib | floor) | \(.missing) |")
  ' "$RESULTS" >"$REPORT"
}

# ---- main ---------------------------------------------------------------------------

log "building: the worker, its drain_race example, the reference ceiling"
[[ -n "${NO_BUILD:-}" ]] || cargo build --release --quiet --bin wallet-worker --example drain_race
# Its own target directory, whatever CARGO_TARGET_DIR says: $CEILING is found there.
(cd "$CEILING_DIR" && CARGO_TARGET_DIR="$CEILING_DIR/target" cargo build --release --quiet)
: >"$RESULTS"
log "logs in $WORK; results in $RESULTS"
for latency in $LATENCIES; do race "$latency"; done
for rate in $PACED_RATES; do paced "$rate"; done
write_report
cat "$REPORT"
