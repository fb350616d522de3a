-- Read model (CQRS): every payment as its public events tell it, written by the projection
-- (agents/projection.py, ledger/payment_views.py), listed per account by the HTTP API.
-- Derived, never the source of truth: dropped and replayed from the topics, it comes back.

-- A payment whose refunds were read before any other event of it has no terms yet (all
-- five NULL): its row exists so that they are counted once the rest arrives, and no
-- account lists it until then.
CREATE TABLE payment_views (
    payment_id          text PRIMARY KEY,
    idempotency_key     text NULL,
    debtor_account_id   text NULL,
    creditor_account_id text NULL,
    amount              bigint NULL CHECK (amount > 0),
    currency            text NULL,
    status              text NOT NULL
        CHECK (status IN ('pending', 'captured', 'failed', 'refunded', 'partially_refunded')),
    reason              text NULL,
    refunded            bigint NOT NULL DEFAULT 0 CHECK (refunded >= 0),
    created_at          timestamptz NOT NULL,  -- the earliest occurred_at of its events
    updated_at          timestamptz NOT NULL,  -- the latest
    CHECK (num_nulls(idempotency_key, debtor_account_id, creditor_account_id, amount, currency) IN (0, 5))
);
-- An account's payments newest first, a page at a time (keyset: created_at, payment_id).
CREATE INDEX payment_views_debtor ON payment_views (debtor_account_id, created_at, payment_id);
CREATE INDEX payment_views_creditor ON payment_views (creditor_account_id, created_at, payment_id);

-- Each PaymentRefunded once: a redelivered event has the same event_id.
CREATE TABLE payment_view_refunds (
    event_id   uuid PRIMARY KEY,
    payment_id text NOT NULL,
    amount     bigint NOT NULL CHECK (amount > 0)
);
CREATE INDEX payment_view_refunds_payment_id ON payment_view_refunds (payment_id);
