-- Published outbox rows are pruned after the retention (PAYMENTS_OUTBOX_RETENTION_HOURS,
-- agents/relay.py): this index finds the oldest published ones without reading the rest.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
