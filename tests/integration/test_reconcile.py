"""`payments reconcile` is clean after real traffic and catches a balance the workers never saw."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg

from cli.reconcile import reconcile
from models.payment import payment_id_for
from tests.conftest import Service


async def pay_some(service: Service) -> None:
    driver = service.driver
    for account in ("rec-a", "rec-b", "rec-c"):
        await driver.open_account(account)
    await driver.wait_for(lambda: len(driver.of("AccountOpened")) >= 3, what="accounts")
    await driver.fund("rec-fund", "rec-a", 5_000)
    await driver.wait_for(lambda: len(driver.of("AccountFunded")) >= 1, what="funding")
    keys = [f"rec-pay-{n}" for n in range(10)]
    for n, key in enumerate(keys):
        await driver.pay(key, "rec-a", "rec-b" if n % 2 else "rec-c", 100 + n)
    await driver.wait_for(lambda: all(payment_id_for(k) in driver.outcomes() for k in keys), what="outcomes")


async def corrupt_ledger(database_url: str) -> None:
    """A balanced movement written behind the service's back: the ledger balances, the
    workers' view does not match it any more."""
    connection = await asyncpg.connect(database_url)
    try:
        transaction_id = uuid.uuid4()
        async with connection.transaction():
            await connection.execute(
                "INSERT INTO ledger_transactions (transaction_id, kind, idempotency_key, fingerprint,"
                " origin_topic, origin_partition, origin_offset) VALUES ($1, 'funding', 'manual', 'x',"
                " 'manual', 0, 0)",
                transaction_id,
            )
            await connection.executemany(
                "INSERT INTO postings (transaction_id, account_id, amount, currency)"
                " VALUES ($1, $2, $3, 'USD')",
                [(transaction_id, "rec-b", -7), (transaction_id, "rec-c", 7)],
            )
    finally:
        await connection.close()


async def test_reconcile_is_clean_then_detects_a_corrupted_balance(service: Service) -> None:
    await pay_some(service)
    report = await reconcile(service.bootstrap, service.database_url, settle_seconds=20)
    assert report.clean, report
    assert report.accounts_checked >= 4 and report.reservations_open == 0

    await corrupt_ledger(service.database_url)
    report = await reconcile(service.bootstrap, service.database_url, settle_seconds=1)
    assert not report.clean
    assert {m.account_id for m in report.mismatches} == {"rec-b", "rec-c"}
    assert report.unbalanced_transactions == [] and report.ledger_total == 0

    env = {
        **os.environ,
        "PAYMENTS_KAFKA_BOOTSTRAP": service.bootstrap,
        "PAYMENTS_DATABASE_URL": service.database_url,
    }
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "reconcile", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stderr
    assert '"clean": false' in cli.stdout and "rec-b" in cli.stdout
