-- API keys (models/api_keys.py): only the digest of a key's secret is kept. Rows are never
-- deleted: a revoked key keeps its row (and its name), so the audit log's names stay meaningful.
CREATE TABLE api_keys (
    name          text PRIMARY KEY,
    key_id        text NOT NULL UNIQUE,
    secret_digest text NOT NULL,
    scopes        text[] NOT NULL,
    accounts      text[],  -- NULL: every account
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz
);

-- Secrets the workers share among themselves (the credential of worker-to-worker requests),
-- made by the first worker that needs one.
CREATE TABLE service_secrets (
    name       text PRIMARY KEY,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
