"""The invariant checker: what must hold after any run, however it was disturbed.

Used by the fault tests, the chaos campaign and the demo. Each check returns the
violations it found (empty when it holds), so a report can name every one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from cli.reconcile import reconcile
from harness.driver import ServiceDriver

NEGATIVE_HISTORY = """
SELECT account_id, min(running) AS lowest, max(overdraft_limit) AS overdraft_limit FROM (
    SELECT p.account_id, a.overdraft_limit,
           sum(p.amount) OVER (PARTITION BY p.account_id ORDER BY p.posting_id) AS running
    FROM postings p JOIN accounts a USING (account_id) WHERE a.kind = 'customer'
) AS history GROUP BY account_id HAVING min(running) < -max(overdraft_limit)
"""


@dataclass
class Verdict:
    attempted: int = 0
    captured: int = 0
    failed: int = 0
    lost: int = 0  # accepted, but no outcome at all
    duplicated_effects: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.lost == 0 and self.duplicated_effects == 0


async def check(driver: ServiceDriver, database_url: str, bootstrap: str, payment_ids: set[str],
                funded_total: int) -> Verdict:
    verdict = Verdict(attempted=len(payment_ids))
    _outcomes(verdict, driver, payment_ids)
    connection = await asyncpg.connect(database_url)
    try:
        await _ledger(verdict, connection, driver, funded_total)
    finally:
        await connection.close()
    report = await reconcile(bootstrap, database_url, settle_seconds=30, outbox_stuck_seconds=30)
    verdict.violations += [f"worker balance of {m.account_id} is {m.worker_posted}, ledger {m.ledger_posted}"
                           for m in report.mismatches]
    if report.outbox_stuck_rows:
        verdict.violations.append(f"{report.outbox_stuck_rows} outbox rows not published")
    if report.reservations_open:
        verdict.violations.append(f"{report.reservations_open} reservations still held")
    return verdict


def _outcomes(verdict: Verdict, driver: ServiceDriver, payment_ids: set[str]) -> None:
    outcomes = driver.outcomes()
    for payment_id in payment_ids:
        kinds = {event["event_type"] for event in outcomes.get(payment_id, [])}
        if not kinds:
            verdict.lost += 1
        elif len(kinds) > 1 or len(outcomes[payment_id]) > 1:
            verdict.violations.append(f"payment {payment_id} has outcomes {sorted(kinds)} "
                                      f"({len(outcomes[payment_id])} distinct events)")
        elif kinds == {"PaymentCaptured"}:
            verdict.captured += 1
        else:
            verdict.failed += 1


async def _ledger(verdict: Verdict, connection: asyncpg.Connection, driver: ServiceDriver,
                  funded_total: int) -> None:
    unbalanced = await connection.fetch(
        "SELECT transaction_id FROM postings GROUP BY transaction_id, currency HAVING sum(amount) <> 0")
    verdict.violations += [f"transaction {r['transaction_id']} does not balance" for r in unbalanced]
    legs = Counter(dict(await connection.fetch(
        "SELECT transaction_id, count(*) FROM postings GROUP BY transaction_id")))
    verdict.duplicated_effects += sum(1 for count in legs.values() if count != 2)
    captured = {e["payment_id"] for e in driver.of("PaymentCaptured")}
    failed = {e["payment_id"] for e in driver.of("PaymentFailed")}
    posted = {r["payment_id"] for r in await connection.fetch(
        "SELECT DISTINCT payment_id FROM ledger_transactions WHERE kind = 'capture'")}
    verdict.violations += [f"payment {p} failed but has capture postings" for p in failed & posted]
    verdict.violations += [f"payment {p} captured without postings" for p in captured - posted]
    total = await connection.fetchval("SELECT coalesce(sum(amount), 0) FROM postings")
    customers = await connection.fetchval(
        "SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN accounts a USING (account_id)"
        " WHERE a.kind = 'customer'")
    if total != 0:
        verdict.violations.append(f"the postings sum to {total}, not 0")
    if customers != funded_total:
        verdict.violations.append(f"customer balances total {customers}, funded {funded_total}")
    for row in await connection.fetch(NEGATIVE_HISTORY):
        verdict.violations.append(f"{row['account_id']} went to {row['lowest']} "
                                  f"(overdraft limit {row['overdraft_limit']})")
