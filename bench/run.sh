#!/usr/bin/env bash
# bench/run.sh — throughput, latency, CPU and memory of the full worker against the
# naive ceiling (examples/naive_ceiling.rs), on the same traffic, local services.
#
#   bench/run.sh                 # from the repository root; about 10-15 minutes
#   QUICK=1 bench/run.sh         # small counts: checks the plumbing in about 2 minutes
#
# Needs Postgres and RabbitMQ on localhost (as the worker's defaults), curl and jq.
# For each gateway latency (LATENCIES) and prefetch (PREFETCHES), for each design:
#   1. starts `wallet-worker gateway-sim` on a free port with that latency;
#   2. starts the consumer with its own database, exchange and queue:
#        worker:  `wallet-worker run` (gateway registered with `gateway set sim ...`)
#        ceiling: `naive_ceiling`
#   3. warms it up with a short loadgen, then runs `wallet-worker loadgen --count N
#      --json` with a fixed seed and save ratio (the same traffic for both designs),
#      sampling the consumer's CPU time (/proc/PID/stat) before and after, and its
#      peak RSS (VmHWM in /proc/PID/status) at the end;
#   4. stops everything and deletes the queues, the exchange and the database.
# Then, at half the worker's peak rate (prefetch 256), it measures p99 for both designs.
#
# Output: bench/results.jsonl (one JSON object per run: loadgen's report plus the
# measurements) and bench/results.md (the tables). Logs of the last run stay in $WORK.
#
# Settings (environment):
#   AMQP_URL     broker                       (amqp://guest:guest@127.0.0.1:5672/%2f)
#   PG_URL       Postgres server, no database (postgres://postgres@127.0.0.1:5432)
#   LATENCIES    gateway latencies in ms      ("0 20")
#   PREFETCHES   prefetch values              ("16 64 256")
#   SEED         loadgen --seed               (42)
#   SAVE_RATIO   loadgen --save-ratio         (0.5)
#   RUN_SECONDS  target length of a measured run; counts are derived from it (15)
#   QUICK=1      RUN_SECONDS=3 and short warm-ups
set -euo pipefail

cd "$(dirname "$0")/.."
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
LATENCIES="${LATENCIES:-0 20}"
PREFETCHES="${PREFETCHES:-16 64 256}"
SEED="${SEED:-42}"
SAVE_RATIO="${SAVE_RATIO:-0.5}"
RUN_SECONDS="${RUN_SECONDS:-15}"
WARMUP_COUNT=1000
if [[ "${QUICK:-0}" == 1 ]]; then RUN_SECONDS=3 WARMUP_COUNT=200; fi
SECRET="bench-secret-$RANDOM$RANDOM"
BIN=target/release/wallet-worker
NAIVE=target/release/examples/naive_ceiling
RESULTS=bench/results.jsonl
REPORT=bench/results.md
WORK="$(mktemp -d /tmp/wallet-bench.XXXXXX)"
CLK_TCK="$(getconf CLK_TCK)"
STAMP="$(date +%s)"
RUN_NO=0
# What the current run started, for the exit trap.
SIM_PID="" CONSUMER_PID="" NAME="" DB=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# Waits up to 30 s for a line matching $2 in file $1 (while process $3 lives).
wait_for_line() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "process $3 died; see $1"; cat "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"; return 1
}

free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# utime + stime of a process, in clock ticks.
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

stop_run() {
  if [[ -n "$CONSUMER_PID" ]]; then
    kill -TERM "$CONSUMER_PID" 2>/dev/null || true
    wait "$CONSUMER_PID" 2>/dev/null || true
  fi
  if [[ -n "$SIM_PID" ]]; then
    kill -TERM "$SIM_PID" 2>/dev/null || true
    wait "$SIM_PID" 2>/dev/null || true
  fi
  if [[ -n "$NAME" ]]; then
    "$NAIVE" --teardown --exchange "$NAME" --queue "$NAME" || log "teardown of $NAME failed"
  fi
  if [[ -n "$DB" ]]; then
    psql -q "$PG_URL/postgres" -c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" >/dev/null ||
      log "could not drop database $DB"
  fi
  SIM_PID="" CONSUMER_PID="" NAME="" DB=""
}
trap stop_run EXIT

start_sim() { # latency_ms → sets SIM_PID, TOKEN_URL
  "$BIN" gateway-sim --listen 127.0.0.1:0 --latency-ms "$1" --secret "$SECRET" \
    >"$WORK/sim.out" 2>"$WORK/sim.err" &
  SIM_PID=$!
  wait_for_line "$WORK/sim.out" 'listening on' "$SIM_PID"
  TOKEN_URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/sim.out")"
}

start_worker() { # prefetch → sets CONSUMER_PID
  local admin
  admin="127.0.0.1:$(free_port)"
  "$BIN" migrate >/dev/null
  "$BIN" gateway set sim --token-url "$TOKEN_URL" --secret "$SECRET" >/dev/null
  WALLET_PREFETCH="$1" WALLET_ADMIN_ADDR="$admin" RUST_LOG=warn \
    "$BIN" run >"$WORK/consumer.log" 2>&1 &
  CONSUMER_PID=$!
  for _ in $(seq 300); do
    curl -fs "http://$admin/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$CONSUMER_PID" 2>/dev/null || { cat "$WORK/consumer.log" >&2; return 1; }
    sleep 0.1
  done
  log "worker not ready; see $WORK/consumer.log"; return 1
}

start_ceiling() { # prefetch → sets CONSUMER_PID
  "$NAIVE" --prefetch "$1" --token-url "$TOKEN_URL" --secret "$SECRET" \
    >"$WORK/consumer.log" 2>&1 &
  CONSUMER_PID=$!
  wait_for_line "$WORK/consumer.log" 'naive-ceiling consuming' "$CONSUMER_PID"
}

loadgen() { # count [rate] → loadgen's JSON report on stdout
  local rate=()
  [[ -n "${2:-}" ]] && rate=(--rate "$2")
  "$BIN" loadgen --count "$1" "${rate[@]}" --seed "$SEED" --save-ratio "$SAVE_RATIO" \
    --timeout-secs 300 --json 2>>"$WORK/loadgen.err"
}

# One measured run; appends one JSON object to $RESULTS and echoes its msgs/s.
run_one() { # design latency prefetch count [rate]
  local design=$1 latency=$2 prefetch=$3 count=$4 rate=${5:-}
  RUN_NO=$((RUN_NO + 1))
  NAME="bench-$STAMP-$RUN_NO" DB="bench_${STAMP}_$RUN_NO"
  export DATABASE_URL="$PG_URL/$DB" WALLET_EXCHANGE="$NAME" WALLET_QUEUE="$NAME"
  log "run $RUN_NO: $design, gateway ${latency} ms, prefetch $prefetch, $count messages${rate:+ at $rate/s}"
  start_sim "$latency"
  "start_$design" "$prefetch"
  loadgen "$WARMUP_COUNT" >/dev/null
  log "  warmed up; measuring"
  local before after report
  before="$(cpu_ticks "$CONSUMER_PID")"
  report="$(loadgen "$count" "$rate")" || { log "loadgen failed: $report"; stop_run; return 1; }
  after="$(cpu_ticks "$CONSUMER_PID")"
  jq -c --arg design "$design" --argjson latency "$latency" --argjson prefetch "$prefetch" \
    --arg rate "$rate" --argjson ticks "$((after - before))" --argjson hz "$CLK_TCK" \
    --argjson rss "$(peak_rss_kib "$CONSUMER_PID")" --arg date "$(date -u +%FT%TZ)" '
      { date: $date, design: $design, gateway_latency_ms: $latency, prefetch: $prefetch,
        rate: (if $rate == "" then null else ($rate | tonumber) end),
        msgs_per_sec: (.published / .window_seconds),
        cpu_s_per_1k: ($ticks / $hz / .published * 1000),
        peak_rss_mib: ($rss / 1024) } + .' <<<"$report" | tee -a "$RESULTS" |
    jq -r '"  \(.msgs_per_sec | floor) msgs/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, \(.cpu_s_per_1k * 1000 | round / 1000) CPU-s/1k, \(.peak_rss_mib | floor) MiB, missing \(.missing)"' >&2
  stop_run
}

# Messages for one peak run at this setting: the same for both designs (the same
# traffic), about RUN_SECONDS at the rates this machine reached (see README).
count_for() { # latency prefetch
  local rate
  case "$1:$2" in
    0:*) rate=1400 ;;
    *:16) rate=700 ;;
    *) rate=1200 ;;
  esac
  echo $((rate * RUN_SECONDS))
}

write_report() {
  jq -rs --arg cmd "${BENCH_COMMAND:-bench/run.sh}" --arg date "$(date -u '+%F %R UTC')" \
    --arg host "$(nproc) cores, $(uname -r)" --arg seed "$SEED" --arg ratio "$SAVE_RATIO" '
    def r(n): (n * 10 | round) / 10;
    def r3(n): (n * 1000 | round) / 1000;
    def row(w; c): "| \(w.gateway_latency_ms) | \(w.prefetch) | \(w.msgs_per_sec | floor) | \(c.msgs_per_sec | floor) | **\(r(w.msgs_per_sec / c.msgs_per_sec))×** | \(w.latency_ms.p50) / \(w.latency_ms.p99) | \(c.latency_ms.p50) / \(c.latency_ms.p99) | \(r3(w.cpu_s_per_1k)) | \(r3(c.cpu_s_per_1k)) | \(r(w.peak_rss_mib)) | \(r(c.peak_rss_mib)) |";
    def pair(rate): [.[] | select((.rate != null) == rate)]
      | group_by([.gateway_latency_ms, .prefetch])
      | map({w: (map(select(.design == "worker")) | last), c: (map(select(.design == "ceiling")) | last)})
      | map(select(.w != null and .c != null));
    "Run \($date) on \($host); `\($cmd)`; loadgen --seed \($seed) --save-ratio \($ratio).\n",
    "### Peak (publish as fast as possible)\n",
    "| gateway ms | prefetch | worker msgs/s | ceiling msgs/s | worker/ceiling | worker p50 / p99 ms | ceiling p50 / p99 ms | worker CPU-s/1k | ceiling CPU-s/1k | worker peak RSS MiB | ceiling peak RSS MiB |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    (pair(false)[] | row(.w; .c)),
    "\n### Half the worker'"'"'s peak rate (prefetch 256)\n",
    "| gateway ms | rate msgs/s | worker p50 / p99 ms | ceiling p50 / p99 ms | target p99 ms | worker meets it |",
    "|---:|---:|---:|---:|---:|:---:|",
    (pair(true)[] | "| \(.w.gateway_latency_ms) | \(.w.rate) | \(.w.latency_ms.p50) / \(.w.latency_ms.p99) | \(.c.latency_ms.p50) / \(.c.latency_ms.p99) | \(.w.gateway_latency_ms + 25) | \(if .w.latency_ms.p99 <= .w.gateway_latency_ms + 25 then "yes" else "**no**" end) |"),
    "\n### Targets\n",
    (pair(false)[] | select(.w.prefetch == 256) |
      "- gateway \(.w.gateway_latency_ms) ms, prefetch 256: worker/ceiling \(r(.w.msgs_per_sec / .c.msgs_per_sec))× (target ≥ 1.5×): \(if .w.msgs_per_sec >= 1.5 * .c.msgs_per_sec then "met" else "**missed**" end); worker peak RSS \(r(.w.peak_rss_mib)) MiB (target ≤ 64): \(if .w.peak_rss_mib <= 64 then "met" else "**missed**" end)")
  ' "$RESULTS" >"$REPORT"
}

log "building release binaries"
cargo build --release --bins --examples --quiet
: >"$RESULTS"
log "work directory $WORK; results in $RESULTS"
for latency in $LATENCIES; do
  for prefetch in $PREFETCHES; do
    count="$(count_for "$latency" "$prefetch")"
    for design in worker ceiling; do
      run_one "$design" "$latency" "$prefetch" "$count"
    done
  done
done
for latency in $LATENCIES; do
  peak="$(jq -s --argjson l "$latency" '[.[] | select(.design == "worker" and
    .gateway_latency_ms == $l and .prefetch == 256 and .rate == null)][0].msgs_per_sec // empty' "$RESULTS")"
  [[ -n "$peak" ]] || continue
  rate="$(jq -n --argjson p "$peak" '$p / 2 | floor')"
  count="$(jq -n --argjson r "$rate" --argjson s "$RUN_SECONDS" '[($r * $s | floor), 500] | max')"
  for design in worker ceiling; do
    run_one "$design" "$latency" 256 "$count" "$rate"
  done
done
write_report
cat "$REPORT"
