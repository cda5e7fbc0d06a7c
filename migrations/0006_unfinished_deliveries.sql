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
