-- wallet-worker schema. Uniqueness lives here, so racing workers can never create two
-- rows for the same card or apply the same message twice.

CREATE TABLE gateways (
    id                   text PRIMARY KEY,
    token_url            text NOT NULL,
    secret               text NOT NULL,
    enabled              boolean NOT NULL DEFAULT true,
    -- circuit breaker, shared by every worker process
    consecutive_failures integer NOT NULL DEFAULT 0,
    circuit_open_until   timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    id         text PRIMARY KEY,
    email      text,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Orders the worker has seen, placed (order.placed) or in checkout (wallet.attach).
CREATE TABLE orders (
    id                          text PRIMARY KEY,
    customer_id                 text REFERENCES customers (id),
    number                      text,
    status                      text NOT NULL,
    guest                       boolean NOT NULL DEFAULT false,
    currency_code               text,
    total_amount_cents          bigint,
    payment_source_type         text,
    payment_source_id           text,
    gateway_id                  text,
    payment_source_token        text,
    payment_source_metadata     jsonb NOT NULL DEFAULT '{}',
    customer_payment_source_id  text,
    -- set by order.placed; wallet.save needs it
    placed_at                   timestamptz,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE customer_payment_sources (
    id                   text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9]{10}$'),
    customer_id          text NOT NULL REFERENCES customers (id),
    gateway_id           text NOT NULL,
    name                 text NOT NULL,
    metadata             jsonb NOT NULL DEFAULT '{}',
    -- the order payment source it was saved from
    reference            text,
    customer_token       text NOT NULL,
    payment_source_token text NOT NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, gateway_id, payment_source_token)
);
CREATE INDEX customer_payment_sources_by_customer ON customer_payment_sources (customer_id, created_at);

-- Inbox: one row per inbound message id ever applied.
CREATE TABLE processed_messages (
    message_id   text PRIMARY KEY,
    message_type text NOT NULL,
    outcome      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- Outbox: events committed with their state, deleted once the broker confirmed them.
CREATE TABLE outbox (
    seq            bigserial PRIMARY KEY,
    event_id       text NOT NULL UNIQUE,
    routing_key    text NOT NULL,
    correlation_id text,
    causation_id   text NOT NULL,
    body           bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
