"""The payments' read model in PostgreSQL: the projection's writes, the per-account listing.

A batch of facts is written in one transaction: its refunds first (each event once), then
every payment of the batch locked (its row created when new), its refunds read back, its
view folded by models.payment_view and written when it changed. The lock is taken on a row
that always exists by then, the new ones included (an INSERT waits for a concurrent one of
the same key), so two batches about one payment (the projection of two workers around a
rebalance) follow each other, and the second counts the refunds of the first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from models.payment_view import STATUSES, Fact, Refund, Terms, View, by_payment, distinct_refunds, fold

LIMIT_MAX = 1000
# Bounds that every created_at lies within: a bound not asked for is one of these, so that
# both bounds are always conditions of the index scan.
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)

COLUMNS = ("payment_id, idempotency_key, debtor_account_id, creditor_account_id, amount, currency, status, "
           "reason, refunded, created_at, updated_at")


@dataclass(frozen=True)
class PaymentSummary:
    payment_id: str
    idempotency_key: str
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str
    status: str
    reason: str | None
    refunded: int
    created_at: datetime
    updated_at: datetime

    @property
    def cursor(self) -> tuple[datetime, str]:
        """`before` for the next page."""
        return self.created_at, self.payment_id


INSERT_REFUNDS = """
INSERT INTO payment_view_refunds (event_id, payment_id, amount)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[])
ON CONFLICT (event_id) DO NOTHING
"""

# Creates the payments not seen yet (nothing known but when), and locks every one; the
# no-op update is what takes the lock of a row that exists.
LOCK_VIEWS = f"""
INSERT INTO payment_views (payment_id, status, created_at, updated_at)
SELECT payment_id, 'pending', first_at, first_at
FROM unnest($1::text[], $2::timestamptz[]) AS batch (payment_id, first_at)
ORDER BY payment_id
ON CONFLICT (payment_id) DO UPDATE SET payment_id = EXCLUDED.payment_id
RETURNING {COLUMNS}
"""

REFUNDS_OF = """
SELECT event_id, payment_id, amount FROM payment_view_refunds WHERE payment_id = ANY($1::text[])
"""

UPDATE_VIEWS = """
UPDATE payment_views AS view SET
    idempotency_key = new.idempotency_key, debtor_account_id = new.debtor_account_id,
    creditor_account_id = new.creditor_account_id, amount = new.amount, currency = new.currency,
    status = new.status, reason = new.reason, refunded = new.refunded,
    created_at = new.created_at, updated_at = new.updated_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
            $8::text[], $9::bigint[], $10::timestamptz[], $11::timestamptz[])
    AS new (payment_id, idempotency_key, debtor_account_id, creditor_account_id, amount, currency,
            status, reason, refunded, created_at, updated_at)
WHERE view.payment_id = new.payment_id
"""

# The two indexed scans, each stopping at the limit, merged: an OR of the two accounts
# would read one index or the whole table. A payment from the account to itself (refused,
# same_account) is listed once, by the first.
ACCOUNT_PAYMENTS = f"""
(SELECT {COLUMNS} FROM payment_views
 WHERE debtor_account_id = $1 AND status = ANY($2::text[])
   AND created_at >= $3 AND (created_at, payment_id) < ($4, $5)
 ORDER BY created_at DESC, payment_id DESC LIMIT $6)
UNION ALL
(SELECT {COLUMNS} FROM payment_views
 WHERE creditor_account_id = $1 AND debtor_account_id <> $1 AND status = ANY($2::text[])
   AND created_at >= $3 AND (created_at, payment_id) < ($4, $5)
 ORDER BY created_at DESC, payment_id DESC LIMIT $6)
ORDER BY created_at DESC, payment_id DESC LIMIT $6
"""


async def write(connection: asyncpg.Connection, facts: Sequence[Fact]) -> int:
    """Apply a batch of facts in one transaction; the number of views that changed. Writing
    the same facts again changes nothing."""
    facts_of = by_payment(facts)
    if not facts_of:
        return 0
    refunds = distinct_refunds(fact.refund for fact in facts if fact.refund is not None)
    async with connection.transaction():
        if refunds:
            await connection.execute(INSERT_REFUNDS, [r.event_id for r in refunds],
                                     [r.payment_id for r in refunds], [r.amount for r in refunds])
        ids = list(facts_of)
        firsts = [min(fact.occurred_at for fact in facts_of[payment_id]) for payment_id in ids]
        current = {row["payment_id"]: _view(row) for row in await connection.fetch(LOCK_VIEWS, ids, firsts)}
        known: dict[str, list[Refund]] = {}
        for row in await connection.fetch(REFUNDS_OF, ids):
            known.setdefault(row["payment_id"], []).append(Refund(row["event_id"], row["payment_id"],
                                                                  row["amount"]))
        folded = [fold(current[payment_id], facts_of[payment_id], known.get(payment_id, ()))
                  for payment_id in ids]
        changed = [view for view in folded if view != current[view.payment_id]]
        if changed:
            await connection.execute(UPDATE_VIEWS, *_columns(changed))
    return len(changed)


async def account_payments(
    connection: asyncpg.Connection,
    account_id: str,
    *,
    statuses: frozenset[str] | None,
    since: datetime | None,
    until: datetime | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[PaymentSummary]:
    """The payments the account pays or is paid by, newest first (created_at, then payment_id,
    descending): of `statuses` (None: all), created in [since, until) (None: unbounded),
    after the cursor `before` (the last item of the previous page), at most `limit` (1..1000)."""
    wanted = STATUSES if statuses is None else statuses
    unknown = wanted - STATUSES
    if unknown:
        raise ValueError(f"unknown payment statuses: {sorted(unknown)}")
    upper_at, upper_id = upper_bound(until, before)
    limit = max(1, min(limit, LIMIT_MAX))
    rows = await connection.fetch(ACCOUNT_PAYMENTS, account_id, sorted(wanted), since or EARLIEST, upper_at,
                                  upper_id, limit)
    return [PaymentSummary(**dict(row)) for row in rows]


def upper_bound(until: datetime | None, before: tuple[datetime, str] | None) -> tuple[datetime, str]:
    """(created_at, payment_id) that every payment listed is below: the cursor, or `until`,
    whichever is lower. No payment id sorts below '', so (until, '') excludes until itself."""
    bounds = [bound for bound in (before, (until, "") if until is not None else None) if bound is not None]
    return min(bounds) if bounds else (LATEST, "")


def _view(row: asyncpg.Record) -> View:
    terms = None
    if row["debtor_account_id"] is not None:
        terms = Terms(row["idempotency_key"], row["debtor_account_id"], row["creditor_account_id"],
                      row["amount"], row["currency"])
    return View(row["payment_id"], terms, row["status"], row["reason"], row["refunded"], row["created_at"],
                row["updated_at"])


def _columns(views: Sequence[View]) -> list[list[object]]:
    def terms(field: str) -> list[object]:
        return [getattr(view.terms, field) if view.terms else None for view in views]

    return [[view.payment_id for view in views], terms("idempotency_key"), terms("debtor_account_id"),
            terms("creditor_account_id"), terms("amount"), terms("currency"),
            [view.status for view in views], [view.reason for view in views],
            [view.refunded for view in views], [view.created_at for view in views],
            [view.updated_at for view in views]]
