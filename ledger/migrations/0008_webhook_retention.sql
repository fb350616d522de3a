-- Settled webhook deliveries are pruned after the retention (PAYMENTS_WEBHOOK_RETENTION_HOURS,
-- agents/notify.py): this index finds the oldest settled ones without reading the pending.
-- A failed delivery's next_attempt_at is when it failed (ledger/webhooks.py, NOT_DELIVERED).
CREATE INDEX webhook_deliveries_settled ON webhook_deliveries ((coalesce(delivered_at, next_attempt_at)))
    WHERE status <> 'pending';
