-- Internal step topics carry batches of steps, so one Kafka record can hold several ledger
-- requests: a request's origin is its record's position plus its index in the batch.
ALTER TABLE ledger_transactions ADD COLUMN origin_index int NOT NULL DEFAULT 0;
