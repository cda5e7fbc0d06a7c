-- The dead-letter store (docs/operations.md, dead letters): every message that reaches
-- $WALLET_QUEUE.dlq becomes one row of dead_letters, written with its
-- wallet.dead_lettered event in one transaction by the worker's intake. The dlq
-- commands and the console read and act on these rows, never on the broker's queue.

CREATE TABLE dead_letters (
    id               bigserial PRIMARY KEY,
    -- SHA-256 of (message id, original routing key, x-wallet-replayed-at): the same
    -- message dead-lettered twice in one life is one row; after a replay it is a new
    -- life and a new row (docs/operations.md, the dead-letter store).
    dedupe_key       bytea NOT NULL,
    -- AMQP message_id, else the envelope id; NULL when the message has neither.
    message_id       text,
    -- The original routing key (the message type), where a replay sends it.
    routing_key      text,
    error            text NOT NULL,
    detail           text NOT NULL,
    attempts         integer,
    -- Sniffed from the body when it parses; NULL when unknown.
    order_id         text,
    customer_id      text,
    correlation_id   text,
    -- The failure group: error kind + type + the detail without ids and numbers.
    group_key        text NOT NULL,
    dead_lettered_at timestamptz NOT NULL,
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    -- The message as it came, sealed (docs/interface.md, secrets: an order body carries
    -- its payment source token, and any header may hold a secret): body byte for byte,
    -- headers as the AMQP header table in typed JSON (a string stays a string, any
    -- other value is {"<type>": value}) so a replay republishes them as they were. Both
    -- are sealed under key_id and bound to the row's id; nothing is indexed or searched
    -- inside them. properties (message id, type, content type, ...) are the AMQP
    -- properties as `dlq list --json` shows them, in the clear.
    key_id           text NOT NULL,
    body             bytea NOT NULL,
    headers          bytea NOT NULL,
    properties       jsonb NOT NULL,
    -- Set in the transaction that puts the message back into the outbox.
    replayed_at      timestamptz,
    replayed_by      text
);

CREATE UNIQUE INDEX dead_letters_dedupe ON dead_letters (dedupe_key);
CREATE INDEX dead_letters_by_message_id ON dead_letters (message_id);
-- `keys status`, `keys rotate` and `run` find the key ids in use with a skip scan.
CREATE INDEX dead_letters_by_key ON dead_letters (key_id);
-- The pruner's: how long a row has been kept (WALLET_DEAD_LETTER_RETENTION_DAYS).
CREATE INDEX dead_letters_by_ingested_at ON dead_letters (ingested_at);

-- Listing, replay and purge walk the dead letters not replayed yet in
-- (dead_lettered_at, id) order, filtered by one of these; each is a range scan that
-- starts at the previous page's last row (keyset pagination).
CREATE INDEX dead_letters_pending_by_time ON dead_letters (dead_lettered_at, id)
    WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_pending_by_error ON dead_letters (error, dead_lettered_at, id)
    WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_pending_by_type ON dead_letters (routing_key, dead_lettered_at, id)
    WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_pending_by_group ON dead_letters (group_key, dead_lettered_at, id)
    WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_pending_by_order ON dead_letters (order_id, dead_lettered_at, id)
    WHERE replayed_at IS NULL AND order_id IS NOT NULL;
CREATE INDEX dead_letters_pending_by_customer ON dead_letters (customer_id, dead_lettered_at, id)
    WHERE replayed_at IS NULL AND customer_id IS NOT NULL;

-- One row per failure group with dead letters not replayed yet, kept in the same
-- transactions that add, replay, purge or prune them: `dlq summary` and the console's
-- groups read this small table instead of counting a million rows.
CREATE TABLE dead_letter_groups (
    group_key   text PRIMARY KEY,
    error       text NOT NULL,
    routing_key text,
    -- For people: the detail with its ids, numbers and quoted values replaced by `*`.
    label       text NOT NULL,
    count       bigint NOT NULL CHECK (count >= 0),
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL
);

-- Who did what to the store, when, and to how many: replays and purges of dead letters
-- (from the CLI or the console) today; other operator actions may follow. The count
-- grows in the transaction of each batch, so it is exact even for an interrupted run.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    -- `cli` or `console`.
    via         text NOT NULL,
    -- `dlq.replay`, `dlq.purge`, ...
    action      text NOT NULL,
    -- What it was applied to (for the dlq actions: the selection).
    target      jsonb NOT NULL,
    count       bigint NOT NULL DEFAULT 0,
    finished_at timestamptz
);

-- A replayed dead letter travels through the outbox like an event, but keeps its own
-- AMQP properties and headers (same forms as in dead_letters; the headers sealed like
-- the body, under the row's key_id). NULL for events, whose properties the relay makes
-- up.
ALTER TABLE outbox
    ADD COLUMN properties jsonb,
    ADD COLUMN headers    bytea;
