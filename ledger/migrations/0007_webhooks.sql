-- Webhooks, the notify step (models/webhooks.py, agents/notifier.py). The secret is kept as
-- it is: the service signs with it (Standard Webhooks), so it cannot keep only a digest.
CREATE TABLE webhook_endpoints (
    endpoint_id          text PRIMARY KEY,
    url                  text NOT NULL,
    secret               text NOT NULL,
    event_types          text[],  -- NULL: every type
    accounts             text[],  -- NULL: every account
    created_by           text,    -- the API key's name, NULL for the CLI
    created_at           timestamptz NOT NULL DEFAULT now(),
    removed_at           timestamptz,
    disabled_at          timestamptz,
    disabled_reason      text,
    failing_since        timestamptz,  -- the first failed attempt since the last success
    consecutive_failures integer NOT NULL DEFAULT 0
);

-- What is due: one row per event and endpoint, made in the notifier's transaction, so a
-- redelivered event finds its row (the unique key) and is not sent twice for it.
CREATE TABLE webhook_deliveries (
    delivery_id     bigserial PRIMARY KEY,
    endpoint_id     text NOT NULL REFERENCES webhook_endpoints,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    payload         bytea NOT NULL,
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,  -- a worker is sending it; past this, another may
    lease_token     text,         -- which claim the lease is, so a late answer cannot settle another's
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);

-- Every attempt, for the delivery log.
CREATE TABLE webhook_attempts (
    attempt_id      bigserial PRIMARY KEY,
    delivery_id     bigint NOT NULL REFERENCES webhook_deliveries,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    status_code     integer,
    latency_seconds double precision NOT NULL,
    error           text
);
CREATE INDEX webhook_attempts_of ON webhook_attempts (delivery_id);
