"""The SQL of one write_batch transaction: set-based inserts, one round trip per table.

Each function takes the connection of an open transaction; ledger.store composes them
and owns retrying. Arrays go in through unnest(), so a batch of 500 entries costs the
same five statements as a batch of one.
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

# Sorted by transaction_id so that two batches sharing entries take the unique-index
# locks in the same order and cannot deadlock each other.
INSERT_TRANSACTIONS = """
INSERT INTO ledger_transactions (transaction_id, kind, idempotency_key, fingerprint,
                                 payment_id, origin_topic, origin_partition, origin_offset,
                                 origin_index)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::int[], $8::bigint[], $9::int[])
    AS entry(transaction_id, kind, idempotency_key, fingerprint, payment_id, origin_topic,
             origin_partition, origin_offset, origin_index)
ORDER BY transaction_id
ON CONFLICT (transaction_id) DO NOTHING
RETURNING transaction_id
"""

ENSURE_SETTLEMENT_ACCOUNTS = """
INSERT INTO accounts (account_id, currency, kyc_status, kind)
SELECT account_id, currency, 'verified', 'settlement'
FROM unnest($1::text[], $2::text[]) AS settlement(account_id, currency)
ORDER BY account_id
ON CONFLICT DO NOTHING
"""

# WITH ORDINALITY + ORDER BY: posting_id and outbox_id follow the order of the batch,
# which is the order events of one key must be published in.
INSERT_POSTINGS = """
INSERT INTO postings (transaction_id, account_id, amount, currency, payment_id)
SELECT transaction_id, account_id, amount, currency, payment_id
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY
    AS leg(transaction_id, account_id, amount, currency, payment_id, position)
ORDER BY position
"""

INSERT_OUTBOX = """
INSERT INTO outbox (event_id, topic, key, value, headers)
SELECT event_id, topic, key, value, headers::jsonb
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[]) WITH ORDINALITY
    AS message(event_id, topic, key, value, headers, position)
ORDER BY position
"""

INSERT_ACCOUNTS = """
INSERT INTO accounts (account_id, owner_id, currency, overdraft_limit, kyc_status, status)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
ORDER BY 1
ON CONFLICT (account_id) DO NOTHING
"""

SELECT_STORED = """
SELECT transaction_id, fingerprint, origin_topic, origin_partition, origin_offset, origin_index
FROM ledger_transactions WHERE transaction_id = ANY($1::uuid[])
"""


async def insert_accounts(connection: asyncpg.Connection, rows: Sequence[AccountRow]) -> None:
    """Accounts opened by the batch (before their postings, which reference them)."""
    if rows:
        await connection.execute(INSERT_ACCOUNTS, *zip(*(
            (row.account_id, row.owner_id, row.currency, row.overdraft_limit, row.kyc_status, row.status)
            for row in rows), strict=True))


def encode_headers(headers: Sequence[tuple[str, bytes]]) -> str:
    """The outbox.headers format: [[name, base64(value)], ...]."""
    pairs = [[name, base64.b64encode(value).decode("ascii")] for name, value in headers]
    return orjson.dumps(pairs).decode()


def decode_headers(document: str) -> list[tuple[str, bytes]]:
    return [(name, base64.b64decode(value)) for name, value in orjson.loads(document)]


async def insert_transactions(connection: asyncpg.Connection, entries: Entries) -> set[UUID]:
    """Insert the entries' transactions; return the ids that were not there before."""
    columns = list(zip(*(
        (entry.transaction_id, str(entry.kind), entry.idempotency_key, entry.fingerprint,
         entry.payment_id, origin.topic, origin.partition, origin.offset, origin.index)
        for entry, origin in entries
    ), strict=True))
    rows = await connection.fetch(INSERT_TRANSACTIONS, *columns)
    return {row["transaction_id"] for row in rows}


async def ensure_settlement_accounts(connection: asyncpg.Connection, entries: Entries) -> None:
    settlement = sorted({
        (posting.account_id, posting.currency)
        for entry, _ in entries for posting in entry.postings
        if is_settlement_account(posting.account_id)
    })
    if settlement:
        await connection.execute(ENSURE_SETTLEMENT_ACCOUNTS, *zip(*settlement, strict=True))


async def insert_postings(connection: asyncpg.Connection, entries: Entries) -> None:
    legs = [
        (entry.transaction_id, posting.account_id, posting.amount, posting.currency,
         entry.payment_id)
        for entry, _ in entries for posting in entry.postings
    ]
    if legs:
        await connection.execute(INSERT_POSTINGS, *zip(*legs, strict=True))


async def insert_outbox(connection: asyncpg.Connection, entries: Entries) -> None:
    messages = [
        (message.event_id, message.topic, message.key, message.value,
         encode_headers(message.headers))
        for entry, _ in entries for message in entry.outbox
    ]
    if messages:
        await connection.execute(INSERT_OUTBOX, *zip(*messages, strict=True))


async def stored_first_writes(
    connection: asyncpg.Connection, transaction_ids: Sequence[UUID]
) -> dict[UUID, asyncpg.Record]:
    """Fingerprint and origin of each transaction as first written."""
    if not transaction_ids:
        return {}
    rows = await connection.fetch(SELECT_STORED, list(transaction_ids))
    return {row["transaction_id"]: row for row in rows}
