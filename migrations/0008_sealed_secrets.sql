-- Secrets at rest (docs/operations.md, key management): payment source tokens, order
-- tokens, gateway secrets and outbox bodies are sealed with an AEAD under a data key
-- whose id is stored beside them. This step only adds the sealed columns next to the
-- plaintext ones. `wallet-worker migrate` (and `run`, `demo`) then seals the rows an
-- earlier version wrote, in small batches, clearing each plaintext value as its sealed
-- form is committed; migration 0009 drops the plaintext columns once no row needs them.

-- The fingerprint key (one row): random, wrapped by a data key, re-wrapped by
-- `keys rotate`, never replaced (every stored fingerprint depends on it).
CREATE TABLE fingerprint_key (
    id         text PRIMARY KEY DEFAULT 'fingerprint' CHECK (id = 'fingerprint'),
    key_id     text NOT NULL,
    wrapped    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Both tokens of a source are sealed under one key (`key_id`). "The same card" is the
-- same fingerprint: a keyed hash of gateway and payment source token, unique per
-- customer, so racing workers can never store one card twice.
ALTER TABLE customer_payment_sources
    ADD COLUMN key_id text,
    ADD COLUMN customer_token_sealed bytea,
    ADD COLUMN payment_source_token_sealed bytea,
    ADD COLUMN fingerprint bytea,
    ALTER COLUMN customer_token DROP NOT NULL,
    ALTER COLUMN payment_source_token DROP NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS customer_payment_sources_card
    ON customer_payment_sources (customer_id, fingerprint);

ALTER TABLE orders
    ADD COLUMN token_key_id text,
    ADD COLUMN payment_source_token_sealed bytea;

ALTER TABLE gateways
    ADD COLUMN secret_key_id text,
    ADD COLUMN secret_sealed bytea,
    ALTER COLUMN secret DROP NOT NULL;

ALTER TABLE outbox ADD COLUMN key_id text;

-- Which keys the stored rows need, without reading every row: `run` refuses to start
-- when one is missing, `keys status` and `keys rotate` find the rows of a key. The two
-- large tables are indexed by key id (read with a skip scan); gateways, the outbox and
-- the fingerprint key stay small.
--
-- On a large existing database, create them beforehand with CREATE INDEX CONCURRENTLY
-- and these names: IF NOT EXISTS then makes this a no-op.
CREATE INDEX IF NOT EXISTS customer_payment_sources_by_key ON customer_payment_sources (key_id);
CREATE INDEX IF NOT EXISTS orders_by_token_key ON orders (token_key_id)
    WHERE token_key_id IS NOT NULL;
