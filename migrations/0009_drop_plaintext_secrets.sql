-- The plaintext secret columns go (docs/operations.md, upgrading to sealed secrets).
-- `wallet-worker migrate` applies this only after it sealed every row; applied by any
-- other tool while a row is still in plaintext, it refuses instead of losing that
-- secret.
LOCK TABLE customer_payment_sources, orders, gateways, outbox IN ACCESS EXCLUSIVE MODE;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM customer_payment_sources WHERE key_id IS NULL)
        OR EXISTS (SELECT 1 FROM orders
                   WHERE payment_source_token IS NOT NULL AND token_key_id IS NULL)
        OR EXISTS (SELECT 1 FROM gateways WHERE secret_key_id IS NULL)
        OR EXISTS (SELECT 1 FROM outbox WHERE key_id IS NULL)
    THEN
        RAISE EXCEPTION 'secrets are still stored in plaintext; `wallet-worker migrate` seals them before this step';
    END IF;
END
$$;

ALTER TABLE customer_payment_sources
    DROP COLUMN customer_token,
    DROP COLUMN payment_source_token,
    ALTER COLUMN key_id SET NOT NULL,
    ALTER COLUMN customer_token_sealed SET NOT NULL,
    ALTER COLUMN payment_source_token_sealed SET NOT NULL,
    ALTER COLUMN fingerprint SET NOT NULL;

ALTER TABLE orders
    DROP COLUMN payment_source_token,
    ADD CONSTRAINT orders_token_sealed_with_key
        CHECK ((token_key_id IS NULL) = (payment_source_token_sealed IS NULL));

ALTER TABLE gateways
    DROP COLUMN secret,
    ALTER COLUMN secret_key_id SET NOT NULL,
    ALTER COLUMN secret_sealed SET NOT NULL;

ALTER TABLE outbox ALTER COLUMN key_id SET NOT NULL;
