-- Every change to a gateway (by the CLI, a worker's circuit breaker or ops by hand) is
-- announced, so running workers drop their cached copy at once.
CREATE FUNCTION wallet_gateway_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('wallet_gateway_changed', COALESCE(NEW.id, OLD.id));
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER gateways_changed AFTER INSERT OR UPDATE OR DELETE ON gateways
    FOR EACH ROW EXECUTE FUNCTION wallet_gateway_changed();
