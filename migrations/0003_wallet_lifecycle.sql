-- The wallet's life cycle: expiry, a default source per customer, removal.

-- The inbox only needs to know that a message id had its effect; what it did is in
-- the events and the metrics.
ALTER TABLE processed_messages DROP COLUMN outcome;

-- Events caused by a message without an id (a dead letter) have no causation.
ALTER TABLE outbox ALTER COLUMN causation_id DROP NOT NULL;

-- The first instant at which the card is expired (end of its expiry month, UTC);
-- NULL for a source without a usable expiry, which never expires.
ALTER TABLE customer_payment_sources ADD COLUMN expires_at timestamptz;
ALTER TABLE customer_payment_sources
    ADD CONSTRAINT customer_payment_sources_owner UNIQUE (customer_id, id);
CREATE INDEX customer_payment_sources_by_gateway ON customer_payment_sources (gateway_id);

-- The customer's chosen default source: at most one per customer, by the primary key,
-- and always one of the customer's own sources, by the foreign key. Removing the
-- source removes the choice; the worker then records the next default.
CREATE TABLE wallet_defaults (
    customer_id text PRIMARY KEY REFERENCES customers (id),
    source_id   text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (customer_id, source_id)
        REFERENCES customer_payment_sources (customer_id, id) ON DELETE CASCADE
);
