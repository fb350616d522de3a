"""LedgerStore: the PostgreSQL ledger of record behind an asyncpg pool.

Every operation runs through `_run`, which retries transient errors (restarts, dropped
connections, serialization failures) until a deadline. Writes are idempotent by
transaction_id, so a retry after an unknown outcome (commit sent, answer lost) finds the
first attempt's rows: it then reports applied=False with stored_origin equal to the
caller's own origin, which the caller can recognise as its own write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar
from uuid import UUID

import asyncpg

from ledger import accounts, api_keys, journal, payment_views, reads, webhooks
from ledger.accounts import AccountRow
from ledger.outbox import OutboxRow, outbox_row
from ledger.payment_views import PaymentSummary
from ledger.reads import DailyBalance, StatementEntry
from ledger.retry import with_retry
from models.api_keys import ApiKey
from models.ledger import JournalEntry, assert_balanced
from models.owner import StoredEntry
from models.payment_view import Fact
from models.steps import CreditorFacts, Origin
from models.webhooks import Endpoint, Notice

__all__ = ["AccountRow", "DailyBalance", "LedgerStore", "Origin", "StatementEntry", "WriteResult"]

T = TypeVar("T")
Work = Callable[[asyncpg.Connection], Awaitable[T]]


@dataclass(frozen=True)
class WriteResult:
    applied: bool  # True: written by this call; False: the transaction_id was already there
    stored_fingerprint: str  # of the first write: differs from ours on a conflicting payload
    stored_origin: Origin


class LedgerStore:
    def __init__(self, pool: asyncpg.Pool, retry_deadline_seconds: float) -> None:
        self._pool = pool
        self.retry_deadline_seconds = retry_deadline_seconds
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        retry_deadline_seconds: float = 60.0,
        connect_timeout_seconds: float = 10.0,
    ) -> LedgerStore:
        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, timeout=connect_timeout_seconds
            )

        pool = await with_retry(create, deadline_seconds=retry_deadline_seconds, what="connect")
        return cls(pool, retry_deadline_seconds)

    async def close(self) -> None:
        self._closed = True
        await self._pool.close()

    async def _run(self, work: Work[T], *, what: str, deadline_seconds: float | None = None) -> T:
        if self._closed:
            # Checked here: a closed pool raises InterfaceError, which would be retried.
            raise RuntimeError("the ledger store is closed")

        async def attempt() -> T:
            async with self._pool.acquire() as connection:
                return await work(connection)

        return await with_retry(
            attempt,
            what=what,
            on_connection_error=self._pool.expire_connections,
            deadline_seconds=deadline_seconds or self.retry_deadline_seconds,
        )

    async def write_batch(
        self,
        entries: Sequence[tuple[JournalEntry, Origin]],
        *,
        accounts: Sequence[AccountRow] = (),
        deadline_seconds: float | None = None,
    ) -> list[WriteResult]:
        """Write the entries in one transaction, after the `accounts` they may need (opened
        unless they exist); one result per entry, in input order."""
        for entry, _ in entries:
            assert_balanced(entry.postings)  # again: the entry may have been built elsewhere
        firsts: dict[UUID, tuple[JournalEntry, Origin]] = {}
        for entry, origin in entries:
            firsts.setdefault(entry.transaction_id, (entry, origin))
        if not firsts and not accounts:
            return []
        unique = list(firsts.values())
        applied, stored = await self._run(
            lambda connection: _write_unique(connection, unique, accounts),
            what="write_batch",
            deadline_seconds=deadline_seconds,
        )
        seen: set[UUID] = set()
        results = []
        for entry, _ in entries:
            transaction_id = entry.transaction_id
            results.append(
                WriteResult(transaction_id in applied and transaction_id not in seen, *stored[transaction_id])
            )
            seen.add(transaction_id)
        return results

    async def open_account(self, account: AccountRow) -> AccountRow:
        """Open the account unless it exists; return the stored row (differs on a conflict)."""
        return await self._run(
            lambda connection: accounts.open_account(connection, account), what="open_account"
        )

    async def creditors(self, account_ids: Sequence[str]) -> dict[str, CreditorFacts]:
        """The facts of those of the accounts that exist."""
        rows = await self._run(
            lambda connection: accounts.get_accounts(connection, list(account_ids)), what="creditors"
        )
        return {row.account_id: CreditorFacts(row.account_id, row.currency, row.status) for row in rows}

    async def stored_entries(self, transaction_ids: Sequence[UUID]) -> dict[UUID, StoredEntry]:
        """How each of the transactions that exist was first written."""
        rows = await self._run(
            lambda connection: journal.stored_first_writes(connection, transaction_ids), what="stored_entries"
        )
        return {
            transaction_id: StoredEntry(row["fingerprint"], _origin(row))
            for transaction_id, row in rows.items()
        }

    async def mark_published(self, event_ids: Sequence[UUID]) -> None:
        """Outbox rows their writer has published itself (after its commit): the relay
        leaves them alone."""
        if event_ids:
            await self._run(
                lambda connection: journal.mark_published(connection, event_ids), what="mark_published"
            )

    async def get_account(self, account_id: str) -> AccountRow | None:
        return await self._run(
            lambda connection: accounts.get_account(connection, account_id), what="get_account"
        )

    async def balances(self) -> dict[str, int]:
        return await self._run(reads.balances, what="balances")

    async def unbalanced_transactions(self) -> list[UUID]:
        return await self._run(reads.unbalanced_transactions, what="unbalanced_transactions")

    async def statement(
        self, account_id: str, *, after_posting_id: int = 0, limit: int = 100,
        since: datetime | None = None, until: datetime | None = None,
    ) -> list[StatementEntry]:
        return await self._run(
            lambda connection: reads.statement(connection, account_id, after_posting_id, limit, since, until),
            what="statement",
        )

    async def outbox_backlog(self) -> tuple[int, float]:
        """(unpublished outbox rows, age in seconds of the oldest; 0 when none)."""
        return await self._run(reads.outbox_backlog, what="outbox_backlog")

    async def stored_events(self, event_ids: Sequence[UUID]) -> list[OutboxRow]:
        """Events as the outbox keeps them (the same bytes under the same event_id): the
        answer to a repeated command whose outcome lives only there."""
        rows = await self._run(
            lambda connection: reads.stored_events(connection, list(event_ids)), what="stored_events"
        )
        return [outbox_row(row) for row in rows]

    async def outbox_stuck(self, older_than_seconds: float) -> int:
        """Unpublished outbox rows older than the threshold: the relay is not keeping up."""
        return await self._run(
            lambda connection: reads.outbox_stuck(connection, older_than_seconds), what="outbox_stuck"
        )

    async def prune_outbox(self, older_than_seconds: float, limit: int = 10_000) -> int:
        """Delete up to `limit` outbox rows published more than `older_than_seconds` ago;
        the count deleted. Unpublished rows are never pruned."""
        return await self._run(
            lambda connection: reads.prune_outbox(connection, older_than_seconds, limit), what="prune_outbox"
        )

    async def rebuild_daily_balances(self) -> int:
        return await self._run(reads.rebuild_daily_balances, what="rebuild_daily_balances")

    async def daily_balances(self, account_id: str) -> list[DailyBalance]:
        return await self._run(
            lambda connection: reads.daily_balances(connection, account_id), what="daily_balances"
        )

    async def write_events(self, facts: Sequence[Fact], notices: Sequence[Notice],
                           webhook_retention_hours: float = 0.0) -> None:
        """A batch of the public events, in one transaction: the payments' events folded into
        their views, the webhook deliveries of the notified ones made (idempotent: a batch
        redelivered changes nothing; none for events older than the retention)."""
        if not facts and not notices:
            return

        async def write(connection: asyncpg.Connection) -> None:
            async with connection.transaction():
                await payment_views.write(connection, facts)
                await webhooks.enqueue(connection, notices, webhook_retention_hours)

        await self._run(write, what="write_events")

    async def account_payments(
        self,
        account_id: str,
        *,
        statuses: frozenset[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 100,
    ) -> list[PaymentSummary]:
        """The account's payments as debtor or creditor, newest first (ledger/payment_views.py)."""
        return await self._run(
            lambda connection: payment_views.account_payments(
                connection, account_id, statuses=statuses, since=since, until=until, before=before,
                limit=limit),
            what="account_payments",
        )

    async def create_api_key(self, key: ApiKey) -> None:
        await self._run(lambda connection: api_keys.create_key(connection, key), what="create_api_key")

    async def live_api_keys(self) -> dict[str, ApiKey]:
        return await self._run(api_keys.live_keys, what="live_api_keys")

    async def list_api_keys(self) -> list[api_keys.KeyRow]:
        return await self._run(api_keys.all_keys, what="api_keys")

    async def revoke_api_key(self, name: str) -> bool:
        return await self._run(lambda connection: api_keys.revoke_key(connection, name),
                               what="revoke_api_key")

    async def service_secret(self, name: str, candidate: str) -> str:
        return await self._run(lambda connection: api_keys.service_secret(connection, name, candidate),
                               what="service_secret")

    # --- webhooks (ledger/webhooks.py) ---------------------------------------------------------

    async def create_webhook_endpoint(self, endpoint: Endpoint, secret: str, created_by: str | None) -> None:
        await self._run(lambda c: webhooks.create_endpoint(c, endpoint, secret, created_by),
                        what="create_webhook_endpoint")

    async def webhook_endpoints(self) -> list[webhooks.EndpointRow]:
        return await self._run(webhooks.endpoints, what="webhook_endpoints")

    async def webhook_endpoint(self, endpoint_id: str) -> webhooks.EndpointRow | None:
        return await self._run(lambda c: webhooks.endpoint(c, endpoint_id), what="webhook_endpoint")

    async def remove_webhook_endpoint(self, endpoint_id: str) -> bool:
        return await self._run(lambda c: webhooks.remove_endpoint(c, endpoint_id),
                               what="remove_webhook_endpoint")

    async def enable_webhook_endpoint(self, endpoint_id: str) -> bool:
        return await self._run(lambda c: webhooks.enable_endpoint(c, endpoint_id),
                               what="enable_webhook_endpoint")

    async def claim_webhook_deliveries(self, limit: int, busy: Sequence[str], lease_seconds: float,
                                       per_endpoint: int) -> list[webhooks.Due]:
        return await self._run(lambda c: webhooks.claim(c, limit, busy, lease_seconds, per_endpoint),
                               what="claim_webhook_deliveries")

    async def settle_webhook_delivery(self, due: webhooks.Due, **outcome: object) -> bool:
        return await self._run(lambda c: webhooks.settle(c, due, **outcome),  # type: ignore[arg-type]
                               what="settle_webhook_delivery")

    async def webhook_deliveries(self, *, endpoint_id: str | None = None, failed_only: bool = False,
                                 limit: int = 100) -> list[webhooks.Delivery]:
        return await self._run(
            lambda c: webhooks.deliveries(c, endpoint_id=endpoint_id, failed_only=failed_only, limit=limit),
            what="webhook_deliveries")

    async def redeliver_webhooks(self, *, event_id: str | None = None, since: datetime | None = None) -> int:
        return await self._run(lambda c: webhooks.redeliver(c, event_id=event_id, since=since),
                               what="redeliver_webhooks")

    async def prune_webhook_deliveries(self, older_than_seconds: float, limit: int = 10_000) -> int:
        """Delete up to `limit` deliveries settled (delivered or failed) more than
        `older_than_seconds` ago, with their attempts; the count deleted. Pending ones stay."""
        return await self._run(lambda c: webhooks.prune(c, older_than_seconds, limit),
                               what="prune_webhook_deliveries")

    async def webhook_backlog(self) -> tuple[int, float]:
        return await self._run(webhooks.backlog, what="webhook_backlog")


async def _write_unique(
    connection: asyncpg.Connection, unique: list[tuple[JournalEntry, Origin]], opened: Sequence[AccountRow]
) -> tuple[set[UUID], dict[UUID, tuple[str, Origin]]]:
    """Write entries with distinct transaction ids; return (ids written now, first writes)."""
    rows = await journal.write(connection, opened, unique)
    applied = {row["transaction_id"] for row in rows if row["applied"]}
    stored = {
        entry.transaction_id: (entry.fingerprint, origin)
        for entry, origin in unique
        if entry.transaction_id in applied
    }
    for row in rows:
        if not row["applied"]:
            stored[row["transaction_id"]] = (row["fingerprint"], _origin(row))
    # Written by a concurrent batch that committed while this statement waited for it: too
    # late for the statement's snapshot, so read back now.
    unseen = [entry.transaction_id for entry, _ in unique if entry.transaction_id not in stored]
    for transaction_id, row in (await journal.stored_first_writes(connection, unseen)).items():
        stored[transaction_id] = (row["fingerprint"], _origin(row))
    return applied, stored


def _origin(row: asyncpg.Record) -> Origin:
    return Origin(row["origin_topic"], row["origin_partition"], row["origin_offset"], row["origin_index"])
