"""The SQL of a write_batch: one statement, so one round trip and its own transaction.

Data-modifying CTEs insert the accounts a batch opens (and the settlement accounts its
fundings need), the journal entries not written before, their legs and their outbox rows;
the final SELECT says which entries were new and, for the others, how they were first
written (it sees the rows as they were before the statement). Arrays go in through
unnest(), so a batch of 500 entries costs what a batch of one does. The deferred balance
trigger runs at the statement's commit.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from uuid import UUID

import asyncpg
import orjson

from ledger.accounts import AccountRow
from models.ledger import JournalEntry
from models.steps import Origin
from models.types import is_settlement_account

Entries = Sequence[tuple[JournalEntry, Origin]]

# Inserts are sorted (accounts by id, entries by transaction_id) so that two batches
# sharing rows take the unique-index locks in the same order and cannot deadlock each
# other. WITH ORDINALITY + ORDER BY: posting_id and outbox_id follow the order of the
# batch, which is the order events of one key must be published in.
WRITE_BATCH = """
WITH opened AS (
    INSERT INTO accounts (account_id, owner_id, currency, overdraft_limit, kyc_status, status, kind)
    SELECT * FROM (
        SELECT *, 'customer' FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                                         $6::text[])
        UNION ALL
        SELECT account_id, NULL, currency, 0, 'verified', 'active', 'settlement'
        FROM unnest($7::text[], $8::text[]) AS settlement(account_id, currency)
    ) AS opening ORDER BY 1
    ON CONFLICT (account_id) DO NOTHING
), entry AS (
    INSERT INTO ledger_transactions (transaction_id, kind, idempotency_key, fingerprint, payment_id,
                                     origin_topic, origin_partition, origin_offset, origin_index)
    SELECT * FROM unnest($9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                         $15::int[], $16::bigint[], $17::int[])
    ORDER BY 1
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING transaction_id
), legs AS (
    INSERT INTO postings (transaction_id, account_id, amount, currency, payment_id)
    SELECT leg.transaction_id, leg.account_id, leg.amount, leg.currency, leg.payment_id
    FROM unnest($18::uuid[], $19::text[], $20::bigint[], $21::text[], $22::text[]) WITH ORDINALITY
        AS leg(transaction_id, account_id, amount, currency, payment_id, position)
    WHERE leg.transaction_id IN (SELECT transaction_id FROM entry)
    ORDER BY leg.position
), events AS (
    INSERT INTO outbox (event_id, topic, key, value, headers)
    SELECT message.event_id, message.topic, message.key, message.value, message.headers::jsonb
    FROM unnest($23::uuid[], $24::uuid[], $25::text[], $26::text[], $27::bytea[], $28::text[])
        WITH ORDINALITY AS message(event_id, transaction_id, topic, key, value, headers, position)
    WHERE message.transaction_id IN (SELECT transaction_id FROM entry)
    ORDER BY message.position
)
SELECT transaction_id, true AS applied, NULL AS fingerprint, NULL AS origin_topic,
       NULL::int AS origin_partition, NULL::bigint AS origin_offset, NULL::int AS origin_index
FROM entry
UNION ALL
SELECT transaction_id, false, fingerprint, origin_topic, origin_partition, origin_offset, origin_index
FROM ledger_transactions WHERE transaction_id = ANY($9::uuid[])
"""

SELECT_STORED = """
SELECT transaction_id, fingerprint, origin_topic, origin_partition, origin_offset, origin_index
FROM ledger_transactions WHERE transaction_id = ANY($1::uuid[])
"""

MARK_PUBLISHED = """
UPDATE outbox SET published_at = clock_timestamp()
WHERE event_id = ANY($1::uuid[]) AND published_at IS NULL
"""


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """The outbox.headers format: [[name, base64(value)], ...]."""
    pairs = [[name, base64.b64encode(value).decode("ascii")] for name, value in headers]
    return orjson.dumps(pairs).decode()


def decode_headers(document: str) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(value)) for name, value in orjson.loads(document)]


def _columns(rows: Sequence[tuple[object, ...]], width: int) -> list[list[object]]:
    """Rows as the columns unnest() takes (empty columns for no rows)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def write_arguments(opened: Sequence[AccountRow], entries: Entries) -> list[list[object]]:
    """The WRITE_BATCH parameters: entries with distinct transaction ids, in order."""
    accounts = [
        (row.account_id, row.owner_id, row.currency, row.overdraft_limit, row.kyc_status, row.status)
        for row in opened
    ]
    settlement = sorted(
        {
            (posting.account_id, posting.currency)
            for entry, _ in entries
            for posting in entry.postings
            if is_settlement_account(posting.account_id)
        }
    )
    journal = [
        (
            entry.transaction_id,
            str(entry.kind),
            entry.idempotency_key,
            entry.fingerprint,
            entry.payment_id,
            origin.topic,
            origin.partition,
            origin.offset,
            origin.index,
        )
        for entry, origin in entries
    ]
    legs = [
        (entry.transaction_id, posting.account_id, posting.amount, posting.currency, entry.payment_id)
        for entry, _ in entries
        for posting in entry.postings
    ]
    messages = [
        (
            message.event_id,
            entry.transaction_id,
            message.topic,
            message.key,
            message.value,
            encode_headers(message.headers),
        )
        for entry, _ in entries
        for message in entry.outbox
    ]
    return [
        *_columns(accounts, 6),
        *_columns(settlement, 2),
        *_columns(journal, 9),
        *_columns(legs, 5),
        *_columns(messages, 6),
    ]


async def write(
    connection: asyncpg.Connection, opened: Sequence[AccountRow], entries: Entries
) -> list[asyncpg.Record]:
    return await connection.fetch(WRITE_BATCH, *write_arguments(opened, entries))  # type: ignore[no-any-return]


async def stored_first_writes(
    connection: asyncpg.Connection, transaction_ids: Sequence[UUID]
) -> dict[UUID, asyncpg.Record]:
    """Fingerprint and origin of each transaction as first written."""
    if not transaction_ids:
        return {}
    rows = await connection.fetch(SELECT_STORED, list(transaction_ids))
    return {row["transaction_id"]: row for row in rows}


async def mark_published(connection: asyncpg.Connection, event_ids: Sequence[UUID]) -> None:
    await connection.execute(MARK_PUBLISHED, list(event_ids))
