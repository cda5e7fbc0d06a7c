#!/usr/bin/env bash
# bench/dlq.sh — wall time and peak memory of the `dlq` commands on a deep dead-letter
# queue, against the local RabbitMQ.
#
#   bench/dlq.sh                       # 10^5 then 10^6 dead letters (about 15 minutes)
#   COUNTS=10000 bench/dlq.sh          # a quick check of the plumbing
#   REMOVING_ONLY=1 bench/dlq.sh       # only the replay and purge commands
#
# For each depth in COUNTS:
#   1. examples/fill_dlq fills `<queue>.dlq` with that many realistic dead letters
#      (~600-byte bodies; x-wallet-* headers in a mix of four error kinds; one in ten a
#      broker dead letter with only x-death, reason delivery_limit) and declares the
#      exchange and a quorum `<queue>` bound to the inbound types, for replays to land;
#   2. runs each command under /usr/bin/time -v, output to a file: wall time and the
#      command's peak RSS; meanwhile samples the broker's (beam.smp) RSS every 0.5 s,
#      to show what holding the queue costs the broker;
#   3. checks the depth before and after each command (rabbitmqctl);
#   4. deletes the queues and the exchange.
# Results: a markdown table on stdout and in bench/dlq-results.md.
set -euo pipefail

cd "$(dirname "$0")/.."
COUNTS="${COUNTS:-100000 1000000}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
BIN=target/release/wallet-worker
FILL=target/release/examples/fill_dlq
OUT="${OUT:-bench/dlq-results.md}"
WORK="$(mktemp -d /tmp/wallet-dlq-bench.XXXXXX)"
STAMP="$(date +%s)"

CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --bin wallet-worker --example fill_dlq >&2

depth() { # ready unacked of queue $1
  rabbitmqctl -q list_queues name messages_ready messages_unacknowledged |
    awk -v q="$1" '$1 == q { print $2 " " $3 }'
}

beam_rss_mib() {
  local pid
  pid="$(pgrep -o beam.smp)"
  awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$pid/status"
}

# measure LABEL CMD...: one table row.
measure() {
  local label="$1"; shift
  local before after wall rss peak_beam=0 sampler
  before="$(depth "$DLQ")"
  ( while true; do beam_rss_mib; echo; sleep 0.5; done ) >"$WORK/beam.$N" 2>/dev/null &
  sampler=$!
  local beam_before; beam_before="$(beam_rss_mib)"
  /usr/bin/time -v -o "$WORK/time" "$@" >"$WORK/stdout" 2>"$WORK/stderr" || {
    echo "failed: $label" >&2; cat "$WORK/stderr" >&2; }
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  after="$(depth "$DLQ")"
  wall="$(awk -F': ' '/Elapsed \(wall clock\)/ { print $2 }' "$WORK/time")"
  rss="$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$WORK/time")"
  peak_beam="$(sort -n "$WORK/beam.$N" | tail -1)"
  local last; last="$(tail -1 "$WORK/stdout" | cut -c1-90)"
  printf '| %s | `%s` | %s | %s | %s → %s | %s → %s | %s |\n' \
    "$N" "$label" "$wall" "$rss" "$beam_before" "$peak_beam" "${before% *}" "${after% *}" "$last" |
    tee -a "$OUT"
}

{
  echo
  echo "Run $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo '| dead letters | command | wall (m:ss) | peak RSS MiB | broker RSS MiB (before → peak) | ready before → after | last line printed |'
  echo '|---:|---|---:|---:|---:|---:|---|'
} | tee -a "$OUT"

for N in $COUNTS; do
  export WALLET_QUEUE="bench-dlq-$STAMP-$N" WALLET_EXCHANGE="bench-dlq-x-$STAMP-$N"
  DLQ="$WALLET_QUEUE.dlq"
  fill_start=$(date +%s.%N)
  "$FILL" --queue "$WALLET_QUEUE" --exchange "$WALLET_EXCHANGE" --count "$N" >&2
  echo "filled $N in $(echo "$(date +%s.%N) - $fill_start" | bc) s" >&2
  last_id="$(printf 'fill-%08d' $((N - 2)))"
  if [[ "${REMOVING_ONLY:-0}" != 1 ]]; then
    measure "list" "$BIN" dlq list
    measure "list --error order_not_found --type wallet.save" "$BIN" dlq list --error order_not_found --type wallet.save
    measure "list --all" "$BIN" dlq list --all
    measure "summary --json" "$BIN" dlq summary --json
    measure "show $last_id" "$BIN" dlq show "$last_id"
    measure "replay --error malformed --dry-run" "$BIN" dlq replay --error malformed --dry-run
  fi
  measure "replay --error gateway_unavailable" "$BIN" dlq replay --error gateway_unavailable
  measure "purge --error internal_error" "$BIN" dlq purge --error internal_error
  measure "purge --all" "$BIN" dlq purge --all
  "$FILL" --queue "$WALLET_QUEUE" --exchange "$WALLET_EXCHANGE" --count 0 --teardown
done
rm -rf "$WORK"
