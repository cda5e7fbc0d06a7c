#!/usr/bin/env bash
# bench/run.sh — throughput, latency, CPU and memory of the full worker against the
# naive ceiling (examples/naive_ceiling.rs), on the same traffic, local services.
#
#   bench/run.sh                 # from anywhere in the repository; about 12 minutes
#   QUICK=1 bench/run.sh         # short runs, one repetition: checks the plumbing (~3 min)
#
# Needs Postgres and RabbitMQ on localhost (the worker's defaults), jq and psql.
# For each gateway latency (LATENCIES) × prefetch (PREFETCHES), REPEAT times, for each
# design (in A B B A order, so a slow spell of a noisy machine hits both):
#   1. starts `wallet-worker gateway-sim` on a free port with that latency;
#   2. starts the consumer with its own database, exchange and queue:
#        worker:  `wallet-worker run` (gateway registered with `gateway set sim ...`)
#        ceiling: `naive_ceiling`
#   3. warms it up with a short loadgen, then runs `wallet-worker loadgen --count N
#      --json` with a fixed seed and save ratio (the same traffic for both designs);
#      CPU time (utime + stime from /proc/PID/stat) is sampled before and after for
#      the consumer, its Postgres backends, the broker (beam.smp) and the whole
#      machine (/proc/stat), and the consumer's peak RSS (VmHWM) at the end;
#   4. stops everything and deletes the queues, the exchange and the database.
# Then, at prefetch 256, it measures latency for both designs paced at PACED_RATE, and
# at a light LIGHT_RATE (to tell the design's latency from a saturated machine).
#
# Output: bench/results.jsonl (one JSON object per run: loadgen's report plus the
# measurements) and bench/results.md (tables: means over the repetitions).
# Logs of every run are in $WORK (printed at start), named by run number: the file
# names are fresh per run, so no wait can match a line of an earlier run.
#
# Settings (environment):
#   AMQP_URL     broker                       (amqp://guest:guest@127.0.0.1:5672/%2f)
#   PG_URL       Postgres server, no database (postgres://postgres@127.0.0.1:5432)
#   LATENCIES    gateway latencies in ms      ("0 20")
#   PREFETCHES   prefetch values              ("16 64 256")
#   REPEAT       runs per design and setting  (2)
#   SEED         loadgen --seed               (42)
#   SAVE_RATIO   loadgen --save-ratio         (0.5)
#   RUN_SECONDS  rough length of a measured run; message counts derive from it (12)
#   PACED_RATE   msgs/s of the paced latency runs (1000)
#   LIGHT_RATE   msgs/s of the light-load latency runs; 0 skips them (200)
#   PACED_RATE=0 skips the paced runs too
#   DESIGNS      the two designs raced, A B B A ("worker ceiling"); `baseline` is a
#                `wallet-worker run` of BASELINE_BIN (another build, e.g. the commit
#                before a change): DESIGNS="worker baseline" BASELINE_BIN=/path/wallet-worker
#   RESULTS, REPORT  where the runs and the report go (bench/results.jsonl, .md); the
#                report tables are written for "worker ceiling" only
#   WALLET_ENCRYPTION_KEYS  the worker's data-encryption keys (a fresh one by default)
set -euo pipefail

cd "$(dirname "$0")/.."
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
LATENCIES="${LATENCIES:-0 20}"
PREFETCHES="${PREFETCHES:-16 64 256}"
REPEAT="${REPEAT:-2}"
SEED="${SEED:-42}"
SAVE_RATIO="${SAVE_RATIO:-0.5}"
RUN_SECONDS="${RUN_SECONDS:-12}"
PACED_RATE="${PACED_RATE:-1000}"
LIGHT_RATE="${LIGHT_RATE:-200}"
WARMUP_COUNT=1000
if [[ "${QUICK:-0}" == 1 ]]; then RUN_SECONDS=3 WARMUP_COUNT=300 REPEAT=1; fi
SECRET="bench-secret-$RANDOM$RANDOM"
BIN=target/release/wallet-worker
NAIVE=target/release/examples/naive_ceiling
RESULTS="${RESULTS:-bench/results.jsonl}"
REPORT="${REPORT:-bench/results.md}"
DESIGNS="${DESIGNS:-worker ceiling}"
read -r DESIGN_A DESIGN_B <<<"$DESIGNS"
export WALLET_ENCRYPTION_KEYS="${WALLET_ENCRYPTION_KEYS:-bench:$(head -c 32 /dev/urandom | base64)}"
WORK="$(mktemp -d /tmp/wallet-bench.XXXXXX)"
CLK_TCK="$(getconf CLK_TCK)"
STAMP="$(date +%s)"
RUN_NO=0
# What the current run started, for stop_run and the exit trap (each run is a subshell).
SIM_PID="" CONSUMER_PID="" NAME="" DB=""

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

# Waits up to 30 s for a line matching $2 in file $1 while process $3 lives.
wait_for_line() {
  for _ in $(seq 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { log "process $3 died; see $1"; cat "$1" >&2; return 1; }
    sleep 0.1
  done
  log "timed out waiting for '$2' in $1"
  return 1
}

# ---- measurements ---------------------------------------------------------------

# utime + stime of each pid given, in clock ticks, one "pid ticks" line each.
cpu_ticks() {
  local pid
  for pid in "$@"; do
    [[ -r "/proc/$pid/stat" ]] && echo "$pid $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')"
  done
  return 0
}
# Busy ticks of the whole machine (everything but idle and iowait).
machine_busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
backend_pids() {
  psql -At "$PG_URL/postgres" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$DB'"
}
broker_pid() { pgrep -x beam.smp | head -1; }

# Ticks spent between two `cpu_ticks` snapshots ($1 before, $2 after); a pid that is
# only in the second was born during the run and counts whole.
ticks_between() {
  awk 'NR == FNR {before[$1] = $2; next} {sum += $2 - ($1 in before ? before[$1] : 0)} END {print sum + 0}' \
    <(echo "$1") <(echo "$2")
}

# ---- starting and stopping ------------------------------------------------------

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
    >"$WORK/$RUN_NO.sim.out" 2>"$WORK/$RUN_NO.sim.err" &
  SIM_PID=$!
  wait_for_line "$WORK/$RUN_NO.sim.out" 'listening on' "$SIM_PID"
  TOKEN_URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/$RUN_NO.sim.out")"
}

start_worker() { # prefetch [binary] → sets CONSUMER_PID
  local bin="${2:-$BIN}"
  "$bin" migrate >/dev/null
  "$bin" gateway set sim --token-url "$TOKEN_URL" --secret "$SECRET" >/dev/null
  # Admin on port 0: nothing to collide with; readiness is the "connected" log line,
  # written once the topology is declared.
  WALLET_PREFETCH="$1" WALLET_ADMIN_ADDR=127.0.0.1:0 RUST_LOG=warn,wallet_worker::worker=info \
    "$bin" run >"$WORK/$RUN_NO.consumer.log" 2>&1 &
  CONSUMER_PID=$!
  wait_for_line "$WORK/$RUN_NO.consumer.log" 'connected to the broker' "$CONSUMER_PID"
}

start_baseline() { # prefetch → sets CONSUMER_PID
  start_worker "$1" "${BASELINE_BIN:?BASELINE_BIN names the baseline wallet-worker binary}"
}

start_ceiling() { # prefetch → sets CONSUMER_PID
  "$NAIVE" --prefetch "$1" --token-url "$TOKEN_URL" --secret "$SECRET" \
    >"$WORK/$RUN_NO.consumer.log" 2>&1 &
  CONSUMER_PID=$!
  wait_for_line "$WORK/$RUN_NO.consumer.log" 'naive-ceiling consuming' "$CONSUMER_PID"
}

loadgen() { # count [rate] → loadgen's JSON report on stdout
  local rate=()
  [[ -n "${2:-}" ]] && rate=(--rate "$2")
  "$BIN" loadgen --count "$1" "${rate[@]}" --seed "$SEED" --save-ratio "$SAVE_RATIO" \
    --timeout-secs 300 --json 2>>"$WORK/loadgen.err"
}

# ---- one run --------------------------------------------------------------------

# Starts the sim and a consumer, warms up, measures one loadgen, appends one JSON
# object to $RESULTS, and tears everything down.
run_one() { # design latency prefetch count [rate]
  local design=$1 latency=$2 prefetch=$3 count=$4 rate=${5:-}
  NAME="bench-$STAMP-$RUN_NO" DB="bench_${STAMP}_$RUN_NO"
  export DATABASE_URL="$PG_URL/$DB" WALLET_EXCHANGE="$NAME" WALLET_QUEUE="$NAME"
  log "run $RUN_NO: $design, gateway ${latency} ms, prefetch $prefetch, $count messages${rate:+ at $rate/s}"
  start_sim "$latency"
  "start_$design" "$prefetch"
  loadgen "$WARMUP_COUNT" >/dev/null
  local broker backends before_consumer before_pg before_broker before_machine report
  broker="$(broker_pid)"
  backends="$(backend_pids)"
  before_consumer="$(cpu_ticks "$CONSUMER_PID")"
  before_pg="$(cpu_ticks $backends)"
  before_broker="$(cpu_ticks $broker)"
  before_machine="$(machine_busy)"
  report="$(loadgen "$count" "$rate")" || { log "loadgen failed: $report"; stop_run; return 1; }
  local machine consumer pg broker_ticks
  machine=$(($(machine_busy) - before_machine))
  consumer="$(ticks_between "$before_consumer" "$(cpu_ticks "$CONSUMER_PID")")"
  pg="$(ticks_between "$before_pg" "$(cpu_ticks $(backend_pids))")"
  broker_ticks="$(ticks_between "$before_broker" "$(cpu_ticks $broker)")"
  jq -c --arg design "$design" --argjson latency "$latency" --argjson prefetch "$prefetch" \
    --arg rate "$rate" --argjson hz "$CLK_TCK" --argjson consumer "$consumer" \
    --argjson pg "$pg" --argjson broker "$broker_ticks" --argjson machine "$machine" \
    --argjson rss "$(peak_rss_kib "$CONSUMER_PID")" --arg date "$(date -u +%FT%TZ)" '
      def per_1k(ticks): ticks / $hz / .published * 1000;
      { date: $date, design: $design, gateway_latency_ms: $latency, prefetch: $prefetch,
        rate: (if $rate == "" then null else ($rate | tonumber) end),
        msgs_per_sec: (.published / .window_seconds),
        cpu_s_per_1k: per_1k($consumer), postgres_cpu_s_per_1k: per_1k($pg),
        broker_cpu_s_per_1k: per_1k($broker), machine_cpu_s_per_1k: per_1k($machine),
        peak_rss_mib: ($rss / 1024) } + .' <<<"$report" | tee -a "$RESULTS" |
    jq -r '"  \(.msgs_per_sec | floor) msgs/s, p50 \(.latency_ms.p50) ms, p99 \(.latency_ms.p99) ms, CPU-s/1k consumer \(.cpu_s_per_1k * 1000 | round / 1000) postgres \(.postgres_cpu_s_per_1k * 1000 | round / 1000) machine \(.machine_cpu_s_per_1k * 1000 | round / 1000), \(.peak_rss_mib | floor) MiB, missing \(.missing)"' >&2
  stop_run
}

# Messages for one peak run at this setting: the same for both designs (the same
# traffic), about RUN_SECONDS at the rates this machine reached (see README).
count_for() { # latency prefetch
  local rate
  case "$1:$2" in
    0:*) rate=1700 ;;
    *:16) rate=800 ;;
    *) rate=1500 ;;
  esac
  echo $((rate * RUN_SECONDS))
}

# Until the broker and Postgres answer (tests elsewhere on this machine restart them).
wait_for_services() {
  for _ in $(seq 120); do
    if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null &&
      psql -qAt "$PG_URL/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
      sleep 5 # let a restarted broker settle
      return 0
    fi
    sleep 1
  done
  log "the broker or Postgres is still down"
  return 1
}

# One run in a subshell of its own, so that a failure (the broker restarted, a
# completion went missing) ends that run only; it is tried again up to twice.
run_checked() { # design latency prefetch count [rate]
  local try
  for try in 1 2 3; do
    RUN_NO=$((RUN_NO + 1))
    (
      trap stop_run EXIT
      run_one "$@"
    ) &
    wait $! && return 0
    log "run $RUN_NO failed (attempt $try of 3)"
    wait_for_services || true
  done
  log "giving up on $*"
}

# REPEAT pairs in A B B A order.
run_pairs() { # latency prefetch count [rate]
  local rep
  for rep in $(seq "$REPEAT"); do
    if ((rep % 2)); then
      run_checked "$DESIGN_A" "$@"
      run_checked "$DESIGN_B" "$@"
    else
      run_checked "$DESIGN_B" "$@"
      run_checked "$DESIGN_A" "$@"
    fi
  done
}

# ---- the report -----------------------------------------------------------------

write_report() {
  jq -rs --arg date "$(date -u '+%F %R UTC')" --arg host "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" \
    --arg commit "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo ' + uncommitted src changes')" \
    --arg seed "$SEED" --arg ratio "$SAVE_RATIO" --arg repeat "$REPEAT" --argjson light "$LIGHT_RATE" \
    --argjson paced "$PACED_RATE" '
    def r(n): (n * 10 | round) / 10;
    def r3(n): (n * 1000 | round) / 1000;
    def mean(f): (map(f) | add / length);
    def summary: {
      latency: .[0].gateway_latency_ms, prefetch: .[0].prefetch, rate: .[0].rate,
      msgs: mean(.msgs_per_sec), lo: (map(.msgs_per_sec) | min), hi: (map(.msgs_per_sec) | max),
      p50: mean(.latency_ms.p50), p99: mean(.latency_ms.p99),
      cpu: mean(.cpu_s_per_1k), pg: mean(.postgres_cpu_s_per_1k),
      broker: mean(.broker_cpu_s_per_1k), machine: mean(.machine_cpu_s_per_1k),
      rss: (map(.peak_rss_mib) | max), missing: (map(.missing) | add) };
    def pairs(paced): [.[] | select((.rate != null) == paced)]
      | group_by([.gateway_latency_ms, .prefetch, .rate])
      | map(select(any(.design == "worker") and any(.design == "ceiling")))
      | map({w: (map(select(.design == "worker")) | summary),
             c: (map(select(.design == "ceiling")) | summary)});
    def spread(s): "\(s.msgs | floor) (\(s.lo | floor)–\(s.hi | floor))";
    def verdict(ok): if ok then "met" else "**missed**" end;
    # The issue'"'"'s targets: throughput against the ceiling by gateway latency, CPU per
    # message in µs (worker, its Postgres backends), peak RSS, and paced p99.
    def throughput_target(latency): if latency == 0 then 2.0 else 1.6 end;
    "Run \($date) on \($host); commit \($commit); loadgen --seed \($seed) --save-ratio \($ratio); means of \($repeat) runs per cell (min–max of msgs/s in brackets).\n",
    "### Peak: loadgen publishes as fast as it can\n",
    "| gateway ms | prefetch | worker msgs/s | ceiling msgs/s | worker / ceiling | worker p50 / p99 ms | ceiling p50 / p99 ms | worker CPU-s/1k | ceiling CPU-s/1k | worker peak RSS MiB | ceiling peak RSS MiB |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    (pairs(false)[] | "| \(.w.latency) | \(.w.prefetch) | \(spread(.w)) | \(spread(.c)) | **\(r(.w.msgs / .c.msgs))×** | \(r(.w.p50)) / \(r(.w.p99)) | \(r(.c.p50)) / \(r(.c.p99)) | \(r3(.w.cpu)) | \(r3(.c.cpu)) | \(r(.w.rss)) | \(r(.c.rss)) |"),
    "\n### Where the CPU goes (CPU-seconds per 1,000 messages, peak runs)\n",
    "| gateway ms | prefetch | worker: consumer / its Postgres backends / broker / whole machine | ceiling: consumer / its Postgres backends / broker / whole machine |",
    "|---:|---:|---:|---:|",
    (pairs(false)[] | "| \(.w.latency) | \(.w.prefetch) | \(r3(.w.cpu)) / \(r3(.w.pg)) / \(r3(.w.broker)) / \(r3(.w.machine)) | \(r3(.c.cpu)) / \(r3(.c.pg)) / \(r3(.c.broker)) / \(r3(.c.machine)) |"),
    "\n### Paced: \($paced) msgs/s, and a light load (prefetch 256, loadgen --rate)\n",
    "| gateway ms | rate msgs/s | worker p50 / p99 ms | ceiling p50 / p99 ms | target: p99 ≤ ms | worker meets it |",
    "|---:|---:|---:|---:|---:|:---:|",
    (pairs(true)[] | "| \(.w.latency) | \(.w.rate) | \(r(.w.p50)) / \(r(.w.p99)) | \(r(.c.p50)) / \(r(.c.p99)) | \(.w.latency + 25) | \(if .w.p99 <= .w.latency + 25 then "yes" else "**no**" end) |"),
    "\n### Targets\n",
    (pairs(false)[] | select(.w.prefetch == 256) |
      "- gateway \(.w.latency) ms, prefetch 256: worker / ceiling throughput \(r(.w.msgs / .c.msgs))× (target ≥ \(throughput_target(.w.latency))×): \(verdict(.w.msgs >= throughput_target(.w.latency) * .c.msgs)); CPU per message: worker \(.w.cpu * 1000 | round) µs (target ≤ 110: \(verdict(.w.cpu <= 0.110)); the ceiling \(.c.cpu * 1000 | round) µs), its Postgres backends \(.w.pg * 1000 | round) µs (target ≤ 40: \(verdict(.w.pg <= 0.040)); the ceiling'"'"'s \(.c.pg * 1000 | round) µs); peak RSS \(r(.w.rss)) MiB (target ≤ 64): \(verdict(.w.rss <= 64))"),
    (pairs(true) | map(select(.w.rate == $paced))[] |
      "- gateway \(.w.latency) ms, paced at \(.w.rate) msgs/s: worker p99 \(r(.w.p99)) ms (target ≤ \(.w.latency + 25)): \(verdict(.w.p99 <= .w.latency + 25)); the ceiling'"'"'s p99 \(r(.c.p99)) ms"),
    (if (map(.missing) | add) > 0 then "\n**Some completions were missing**: see results.jsonl." else empty end)
  ' "$RESULTS" >"$REPORT"
}

# ---- main -----------------------------------------------------------------------

log "building release binaries"
cargo build --release --bins --examples --quiet
: >"$RESULTS"
log "logs in $WORK; results in $RESULTS"
for latency in $LATENCIES; do
  for prefetch in $PREFETCHES; do
    run_pairs "$latency" "$prefetch" "$(count_for "$latency" "$prefetch")"
  done
done
for latency in $LATENCIES; do
  ((PACED_RATE > 0)) || break
  run_pairs "$latency" 256 "$((PACED_RATE * RUN_SECONDS))" "$PACED_RATE"
  if ((LIGHT_RATE > 0)); then
    run_pairs "$latency" 256 "$((LIGHT_RATE * RUN_SECONDS))" "$LIGHT_RATE"
  fi
done
if [[ "$DESIGNS" == "worker ceiling" ]]; then
  write_report
  cat "$REPORT"
else
  # Means per design: throughput and CPU per message (µs) of the consumer and of its
  # Postgres backends.
  jq -rs 'group_by(.design)[] | "\(.[0].design): \(length) runs, \(map(.msgs_per_sec) | add / length | floor) msgs/s, consumer \(map(.cpu_s_per_1k) | add / length * 1000 | round) µs/msg, its Postgres backends \(map(.postgres_cpu_s_per_1k) | add / length * 1000 | round) µs/msg"' "$RESULTS"
fi
