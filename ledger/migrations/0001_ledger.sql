-- The ledger of record: accounts, balanced immutable journal entries, and the outbox
-- that carries their events to Kafka once they are committed.

CREATE TABLE accounts (
    account_id      text PRIMARY KEY,
    owner_id        text,
    currency        char(3) NOT NULL,
    overdraft_limit bigint NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    kyc_status      text NOT NULL CHECK (kyc_status IN ('verified', 'pending', 'blocked')),
    status          text NOT NULL DEFAULT 'active',
    kind            text NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'settlement')),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    -- Target of the postings (account_id, currency) foreign key below.
    UNIQUE (account_id, currency)
);

CREATE TABLE ledger_transactions (
    transaction_id   uuid PRIMARY KEY,
    kind             text NOT NULL,
    idempotency_key  text NOT NULL,
    fingerprint      text NOT NULL,
    payment_id       text NULL,
    -- Where the request that wrote the entry came from: a duplicate is answered with it.
    origin_topic     text NOT NULL,
    origin_partition int NOT NULL,
    origin_offset    bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE postings (
    posting_id     bigserial PRIMARY KEY,
    transaction_id uuid NOT NULL REFERENCES ledger_transactions,
    account_id     text NOT NULL REFERENCES accounts,
    amount         bigint NOT NULL CHECK (amount <> 0),  -- signed minor units: credit +, debit -
    currency       char(3) NOT NULL,
    payment_id     text NULL,
    posted_at      timestamptz NOT NULL DEFAULT now(),
    -- A leg in a currency other than its account's is a bug upstream: refuse it here too.
    FOREIGN KEY (account_id, currency) REFERENCES accounts (account_id, currency)
);
CREATE INDEX postings_account_id_posting_id ON postings (account_id, posting_id);
CREATE INDEX postings_payment_id ON postings (payment_id);
-- The balance check looks up every leg of a transaction at commit.
CREATE INDEX postings_transaction_id ON postings (transaction_id);

-- Immutability: a ledger is corrected by new entries, never by editing old ones.
CREATE FUNCTION refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER postings_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postings
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER ledger_transactions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_ledger_change();

-- Balance: checked at commit (deferred) so that the legs of one entry can be inserted
-- by separate statements; a transaction whose legs do not sum to 0 per currency aborts.
CREATE FUNCTION assert_transaction_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced_currency char(3);
BEGIN
    SELECT currency INTO unbalanced_currency
    FROM postings
    WHERE transaction_id = NEW.transaction_id
    GROUP BY currency
    HAVING sum(amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger transaction % does not balance in %',
            NEW.transaction_id, unbalanced_currency
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER postings_balanced
    AFTER INSERT ON postings
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION assert_transaction_balanced();

-- Transactional outbox: events written in the same transaction as their entry,
-- published to Kafka by ledger.outbox.OutboxRelay.
-- headers: a JSON array of [name, value] pairs, value base64-encoded (header values
-- are bytes), e.g. [["ce_id", "NmYx..."]].
CREATE TABLE outbox (
    outbox_id    bigserial PRIMARY KEY,
    event_id     uuid NOT NULL UNIQUE,
    topic        text NOT NULL,
    key          text NOT NULL,
    value        bytea NOT NULL,
    headers      jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz NULL
);
CREATE INDEX outbox_unpublished ON outbox (outbox_id) WHERE published_at IS NULL;

-- Wakes the relay (LISTEN outbox) at commit; NOTIFY delivers once per transaction.
CREATE FUNCTION notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_outbox();
