-- Retention (docs/operations.md, failure handling): the pruner deletes processed message ids older than
-- WALLET_INBOX_RETENTION_DAYS and orders untouched for WALLET_ORDER_RETENTION_DAYS,
-- oldest first, 1000 rows per short transaction. These indexes let each batch start
-- where the previous one stopped instead of scanning the table.
--
-- B-tree, not BRIN, although inbox rows arrive in time order: once the pruner runs,
-- new rows reuse the space it frees in old pages, so every BRIN range soon spans old
-- and new times and the index stops narrowing anything; a B-tree stays exact, and on
-- an ever-increasing key its inserts go to the rightmost leaf (cheap). The orders
-- index makes an update that changes updated_at a non-HOT update (one more index
-- write); orders are written far less often than the inbox.
--
-- On a large existing database, create them beforehand with CREATE INDEX CONCURRENTLY
-- and these names: IF NOT EXISTS then makes this migration a no-op.
CREATE INDEX IF NOT EXISTS processed_messages_by_processed_at ON processed_messages (processed_at);
CREATE INDEX IF NOT EXISTS orders_by_updated_at ON orders (updated_at);
