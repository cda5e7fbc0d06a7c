-- Numbered after the sealing migrations (0008, 0009): a database that has them gets
-- this one next, and its highest version says whether its schema is current.

-- Deliveries that started and did not finish (docs/operations.md, poison messages).
-- Only a delivery the broker marks redelivered is recorded, so the normal path costs
-- nothing; a row is removed when handling ends in any way the worker controls (a
-- verdict, a hand-back, or an ack lost with the connection). What remains counts
-- crashes and stalls only: broker trouble never makes a message poison.
CREATE TABLE unfinished_deliveries (
    message_id   text PRIMARY KEY,
    starts       integer NOT NULL,
    last_started timestamptz NOT NULL DEFAULT now()
);

-- The retention pruner removes rows of messages that were never delivered again.
CREATE INDEX unfinished_deliveries_last_started ON unfinished_deliveries (last_started);

-- Messages waiting for a delayed retry (docs/operations.md, retries). A retry verdict
-- writes the message here (its body sealed) and only then acks the delivery: nothing
-- waits in the broker, so a retry survives the loss of any broker node. Each worker's
-- scheduler republishes due rows to its own work queue and deletes them once the
-- broker confirmed them.
CREATE TABLE delayed_messages (
    -- One row per waiting retry (a random UUID the worker makes). The scheduler deletes
    -- the rows it republished by this id, so a later retry of the same message, written
    -- while the earlier row is still being republished, is a row of its own and is not
    -- lost. The worker makes it, not a sequence: the sealed body is bound to it.
    id           text PRIMARY KEY,
    -- The message's id: a redelivered message that already has a row is acked without
    -- another attempt.
    message_key  text NOT NULL,
    -- The message body (an order or a save request carries tokens), sealed under the
    -- data key `key_id` and bound to this row (docs/operations.md, key management).
    key_id       text NOT NULL,
    body         bytea NOT NULL,
    -- The AMQP basic properties in their wire encoding (flags, then each property set),
    -- headers included: republished exactly as they were.
    properties   bytea NOT NULL,
    -- The routing key the message was first published with.
    routing_key  text NOT NULL,
    attempts     integer NOT NULL,
    panics       integer NOT NULL,
    due_at       timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX delayed_messages_due_at ON delayed_messages (due_at);
CREATE INDEX delayed_messages_message_key ON delayed_messages (message_key);
