"""`payments reconcile`: the workers' balances against the ledger sums in PostgreSQL.

Worker state is read from the owners table's changelog (what a worker recovers
from), so it needs no running worker. Postings still settling between the ledger
and the account owners are given `settle_seconds` to arrive before a difference
counts as a mismatch.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

from infra.changelog import read_table
from infra.topics import changelog_topic
from ledger.store import LedgerStore
from models.account import Account
from models.reconciliation import Report, compare_balances
from settings import Settings
from tables import owners


async def reconcile(
    bootstrap: str, database_url: str, *, outbox_stuck_seconds: float = 60.0, settle_seconds: float = 10.0,
    kafka_options: Mapping[str, Any] | None = None,
) -> Report:
    """`kafka_options`: TLS and SASL (Settings.kafka_client_options); none for a plaintext broker."""
    store = await LedgerStore.connect(database_url)
    try:
        deadline = time.monotonic() + settle_seconds
        while True:
            stored = await read_table(bootstrap, changelog_topic("owners"), kafka_options)
            states: list[Account] = [owners.decode(key, value) for key, value in stored.items()  # type: ignore[misc]
                                     if key.startswith(owners.ACCOUNT)]
            worker = {s.account_id: s.posted for s in states}
            ledger = await store.balances()
            mismatches = compare_balances(worker, ledger)
            if not mismatches or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.5)
        return Report(
            accounts_checked=len(worker.keys() | ledger.keys()),
            mismatches=mismatches,
            unbalanced_transactions=await store.unbalanced_transactions(),
            ledger_total=sum(ledger.values()),
            outbox_stuck_rows=await store.outbox_stuck(outbox_stuck_seconds),
            reservations_open=sum(len(s.holds) for s in states),
        )
    finally:
        await store.close()


def render(report: Report) -> str:
    lines = [
        f"accounts checked: {report.accounts_checked}",
        f"balance mismatches: {len(report.mismatches)}",
        *(
            f"  {m.account_id}: workers {m.worker_posted}, ledger {m.ledger_posted}"
            for m in report.mismatches
        ),
        f"unbalanced ledger transactions: {len(report.unbalanced_transactions)}",
        *(f"  {t}" for t in report.unbalanced_transactions),
        f"sum of all postings: {report.ledger_total}",
        f"outbox rows stuck: {report.outbox_stuck_rows}",
        f"reservations open: {report.reservations_open}",
        f"result: {'CLEAN' if report.clean else 'MISMATCH'}",
    ]
    return "\n".join(lines)


def run_reconcile(settings: Settings, *, as_json: bool, outbox_stuck_seconds: float) -> int:
    bootstrap, database_url = settings.require_infrastructure()
    report = asyncio.run(reconcile(bootstrap, database_url, outbox_stuck_seconds=outbox_stuck_seconds,
                                   kafka_options=settings.kafka_client_options()))
    print(json.dumps(report.as_dict(), indent=2) if as_json else render(report))
    return 0 if report.clean else 1
