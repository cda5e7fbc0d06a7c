#!/usr/bin/env bash
# bench/prune_cost.sh — what the retention pruner itself costs: an idle worker prunes a
# backlog of 2·10^6 expired inbox rows for 30 s; prints rows pruned and the CPU time of
# the Postgres backends connected to its database and of the worker (from /proc).
# Needs the release binaries (bench/retention.sh builds them), Postgres and RabbitMQ.
cd "$(dirname "$0")/.."
set -euo pipefail
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/prune_cost_$$ WALLET_QUEUE=prune-cost-$$ WALLET_EXCHANGE=prune-cost-$$ WALLET_ADMIN_ADDR=127.0.0.1:0
BIN=target/release/wallet-worker
$BIN migrate >/dev/null
psql -qAt "$DATABASE_URL" -c "DO \$\$ DECLARE c text; BEGIN FOR c IN SELECT column_name FROM information_schema.columns WHERE table_name='processed_messages' AND is_nullable='NO' AND column_default IS NULL AND column_name NOT IN ('message_id','message_type','processed_at') LOOP EXECUTE format('ALTER TABLE processed_messages ALTER COLUMN %I DROP NOT NULL', c); END LOOP; END \$\$"
psql -qAt "$DATABASE_URL" -c "INSERT INTO processed_messages (message_id, message_type, processed_at) SELECT 'old-'||i, 'order.placed', now() - interval '40 days' + i * interval '1 ms' FROM generate_series(1, 2000000) i"
psql -qAt "$DATABASE_URL" -c "VACUUM ANALYZE processed_messages"
pg_ticks() { for p in $(psql -qAt postgres://postgres@127.0.0.1:5432/postgres -c "select pid from pg_stat_activity where datname = 'prune_cost_$$'"); do [ -r /proc/$p/stat ] && sed 's/^.*) //' /proc/$p/stat | awk '{print $12+$13}'; done | awk '{s+=$1} END {print s}'; }
WALLET_RETENTION_INTERVAL_MS=1000 RUST_LOG=warn $BIN run >/tmp/prune_cost.log 2>&1 &
W=$!
sleep 3
r0=$(psql -qAt "$DATABASE_URL" -c "select count(*) from processed_messages"); c0=$(pg_ticks); w0=$(sed 's/^.*) //' /proc/$W/stat | awk '{print $12+$13}'); t0=$(date +%s.%N)
sleep 30
r1=$(psql -qAt "$DATABASE_URL" -c "select count(*) from processed_messages"); c1=$(pg_ticks); w1=$(sed 's/^.*) //' /proc/$W/stat | awk '{print $12+$13}'); t1=$(date +%s.%N)
kill -TERM $W; wait $W || true
for q in $(rabbitmqctl -q list_queues name | grep "^prune-cost-$$"); do rabbitmqctl -q delete_queue "$q" >/dev/null; done
target/release/examples/fill_dlq --teardown --queue "$WALLET_QUEUE" --exchange "$WALLET_EXCHANGE" --count 0
psql -q postgres://postgres@127.0.0.1:5432/postgres -c "DROP DATABASE prune_cost_$$ WITH (FORCE)"
echo "rows pruned $((r0-r1)) in $(echo "$t1-$t0" | bc) s; postgres CPU $(( (c1-c0) ))/100 s; worker CPU $((w1-w0))/100 s; per 1000 rows: postgres $(echo "scale=2; ($c1-$c0)*10/(($r0-$r1)/1000)" | bc) ms"
