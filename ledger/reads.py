"""Queries over the ledger: balances, checks, statements, the outbox backlog, read models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

import asyncpg

STATEMENT_LIMIT_MAX = 1000
# Any constant distinct from the other advisory lock keys of this database.
DAILY_BALANCES_LOCK_KEY = 0x6461696C79  # "daily"


@dataclass(frozen=True)
class StatementEntry:
    posting_id: int
    transaction_id: UUID
    amount: int
    currency: str
    payment_id: str | None
    posted_at: datetime
    balance_after: int


@dataclass(frozen=True)
class DailyBalance:
    account_id: str
    day: date  # UTC
    currency: str
    closing_balance: int


# Sums are numeric (not bigint) so that a settlement account's total can never overflow.
BALANCES = "SELECT account_id, sum(amount)::numeric AS balance FROM postings GROUP BY account_id"

UNBALANCED = """
SELECT transaction_id FROM postings GROUP BY transaction_id, currency HAVING sum(amount) <> 0
UNION
SELECT transaction_id FROM ledger_transactions AS entry
WHERE NOT EXISTS (SELECT 1 FROM postings WHERE postings.transaction_id = entry.transaction_id)
"""

# The running sum covers the account's whole history and is filtered afterwards, so a
# page's balance_after never depends on where the page starts.
STATEMENT = """
SELECT * FROM (
    SELECT posting_id, transaction_id, amount, currency::text, payment_id, posted_at,
           sum(amount) OVER (ORDER BY posting_id)::numeric AS balance_after
    FROM postings WHERE account_id = $1
) AS history
WHERE posting_id > $2
  AND ($4::timestamptz IS NULL OR posted_at >= $4) AND ($5::timestamptz IS NULL OR posted_at < $5)
ORDER BY posting_id LIMIT $3
"""

OUTBOX_BACKLOG = """
SELECT count(*) AS unpublished,
       coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0)::float8 AS age
FROM outbox WHERE published_at IS NULL
"""

OUTBOX_STUCK = """
SELECT count(*) FROM outbox
WHERE published_at IS NULL AND created_at < clock_timestamp() - make_interval(secs => $1)
"""

# The oldest published rows past the retention, a chunk at a time (short transactions).
PRUNE_OUTBOX = """
DELETE FROM outbox WHERE outbox_id IN (
    SELECT outbox_id FROM outbox
    WHERE published_at IS NOT NULL AND published_at < clock_timestamp() - make_interval(secs => $1)
    ORDER BY published_at LIMIT $2
)
"""

REBUILD_DAILY_BALANCES = """
INSERT INTO daily_balances (account_id, day, currency, closing_balance)
SELECT account_id, day, currency,
       sum(day_total) OVER (PARTITION BY account_id, currency ORDER BY day)
FROM (
    SELECT account_id, (posted_at AT TIME ZONE 'UTC')::date AS day, currency,
           sum(amount) AS day_total
    FROM postings GROUP BY 1, 2, 3
) AS days
"""

DAILY_BALANCES = """
SELECT account_id, day, currency::text, closing_balance FROM daily_balances
WHERE account_id = $1 ORDER BY day
"""


async def balances(connection: asyncpg.Connection) -> dict[str, int]:
    return {row["account_id"]: int(row["balance"]) for row in await connection.fetch(BALANCES)}


async def unbalanced_transactions(connection: asyncpg.Connection) -> list[UUID]:
    return [row["transaction_id"] for row in await connection.fetch(UNBALANCED)]


async def statement(
    connection: asyncpg.Connection, account_id: str, after_posting_id: int, limit: int,
    since: datetime | None = None, until: datetime | None = None,
) -> list[StatementEntry]:
    """A page of the account's entries, optionally those posted in [since, until)."""
    limit = max(1, min(limit, STATEMENT_LIMIT_MAX))
    rows = await connection.fetch(STATEMENT, account_id, after_posting_id, limit, since, until)
    return [
        StatementEntry(**{**dict(row), "balance_after": int(row["balance_after"])}) for row in rows
    ]


async def outbox_backlog(connection: asyncpg.Connection) -> tuple[int, float]:
    row = await connection.fetchrow(OUTBOX_BACKLOG)
    assert row is not None
    return int(row["unpublished"]), float(row["age"])


STORED_EVENTS = """
SELECT outbox_id, event_id, topic, key, value, headers::text AS headers
FROM outbox WHERE event_id = ANY($1::uuid[]) ORDER BY outbox_id
"""


async def stored_events(connection: asyncpg.Connection, event_ids: list[UUID]) -> list[asyncpg.Record]:
    return await connection.fetch(STORED_EVENTS, event_ids)  # type: ignore[no-any-return]


async def outbox_stuck(connection: asyncpg.Connection, older_than_seconds: float) -> int:
    return int(await connection.fetchval(OUTBOX_STUCK, older_than_seconds))


async def prune_outbox(connection: asyncpg.Connection, older_than_seconds: float, limit: int) -> int:
    status = await connection.execute(PRUNE_OUTBOX, older_than_seconds, limit)
    return int(status.split()[-1])


async def rebuild_daily_balances(connection: asyncpg.Connection) -> int:
    """Recompute the read model from postings in one transaction; return rows written."""
    async with connection.transaction():
        # Two rebuilds at once would each insert the full set: the second waits instead.
        await connection.execute("SELECT pg_advisory_xact_lock($1)", DAILY_BALANCES_LOCK_KEY)
        # DELETE, not TRUNCATE: readers keep seeing the old rows until this commits.
        await connection.execute("DELETE FROM daily_balances")
        status = await connection.execute(REBUILD_DAILY_BALANCES)
    return int(status.split()[-1])


async def daily_balances(connection: asyncpg.Connection, account_id: str) -> list[DailyBalance]:
    rows = await connection.fetch(DAILY_BALANCES, account_id)
    return [DailyBalance(**dict(row)) for row in rows]
