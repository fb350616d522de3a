"""Faults on the real broker and PostgreSQL, each ending with the invariant checker:
a worker killed with -9 under load, and a worker dying at every named crash point."""

from __future__ import annotations

import asyncio
import random
import time
import urllib.request

import pytest

from harness.invariants import check
from harness.processes import ComponentFailed
from infra.crash import POINTS
from models.payment import payment_id_for
from tests.conftest import Service

FUNDING = 50_000


async def open_and_fund(service: Service, prefix: str, accounts: int) -> list[str]:
    driver = service.driver
    ids = [f"{prefix}-{n}" for n in range(accounts)]
    opened = len(driver.of("AccountOpened"))
    funded = len(driver.of("AccountFunded"))
    for account_id in ids:
        await driver.open_account(account_id, overdraft_limit=100)
    await driver.wait_for(lambda: len(driver.of("AccountOpened")) >= opened + accounts, what="opened")
    for account_id in ids:
        await driver.fund(f"{account_id}-funding", account_id, FUNDING)
    await driver.wait_for(lambda: len(driver.of("AccountFunded")) >= funded + accounts, what="funded",
                          timeout_seconds=120)
    return ids


async def send_payments(service: Service, prefix: str, accounts: list[str], count: int, seed: int
                        ) -> set[str]:
    rng = random.Random(seed)
    keys = []
    for n in range(count):
        debtor, creditor = rng.sample(accounts, 2)
        key = f"{prefix}-pay-{n}"
        keys.append(key)
        simulation = rng.choice([None, None, None, "decline", "fail_then_approve:1"])
        extra = {"metadata": {"psp_simulation": simulation}} if simulation else {}
        await service.driver.pay(key, debtor, creditor, rng.randint(1, 20_000), **extra)
    await service.driver.flush()
    return {payment_id_for(k) for k in keys}


def funded_total(service: Service) -> int:
    return sum(e["amount"] for e in service.driver.of("AccountFunded"))


def payment_status(service: Service, payment_id: str) -> str:
    url = f"{service.workers[-1].url}/v1/payments/{payment_id}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read()[:600])
    except OSError as error:
        return f"{url}: {error}"


async def settle_and_check(service: Service, payment_ids: set[str]) -> None:
    driver = service.driver
    try:
        await driver.wait_for(lambda: payment_ids <= driver.outcomes().keys(), timeout_seconds=180,
                              what="every payment's outcome after recovery")
    except TimeoutError:
        missing = sorted(payment_ids - driver.outcomes().keys())
        details = [await asyncio.to_thread(payment_status, service, p) for p in missing[:5]]
        raise AssertionError(f"{len(missing)} payments without an outcome, e.g. {details}") from None
    verdict = await check(driver, service.database_url, service.bootstrap, payment_ids, funded_total(service))
    assert verdict.ok, verdict


# Known to fail intermittently (about half the runs on this machine): after a restart a
# partition's committed offset can stop moving (see agents/monitor.py), leaving payments
# pending. Run by `make chaos`, not by `make test`, until that is fixed.
@pytest.mark.chaos
async def test_kill_9_under_load_then_restart(service: Service) -> None:
    accounts = await open_and_fund(service, "kill", 12)
    payment_ids = await send_payments(service, "kill", accounts, 400, seed=1)
    driver = service.driver
    await driver.wait_for(lambda: len(payment_ids & driver.outcomes().keys()) >= 40, what="some outcomes")
    service.workers[0].kill()
    started = time.monotonic()
    await asyncio.to_thread(service.add_worker)
    await settle_and_check(service, payment_ids)
    print(f"recovered in {time.monotonic() - started:.1f}s")


async def send_everything(service: Service, prefix: str, accounts: int, payments: int, seed: int,
                          *, funded_first: bool = False) -> set[str]:
    """Accounts, fundings and payments at once, without waiting in between: whatever
    state the crash catches the flow in, every payment still needs its one outcome.
    With `funded_first`, the payments wait for the fundings (payments racing their
    funding mostly fail for insufficient funds and never reach the PSP)."""
    driver = service.driver
    ids = [f"{prefix}-{n}" for n in range(accounts)]
    funded = len(driver.of("AccountFunded"))
    for account_id in ids:
        await driver.open_account(account_id, overdraft_limit=100)
    for account_id in ids:
        await driver.fund(f"{account_id}-funding", account_id, FUNDING)
    if funded_first:
        await driver.wait_for(lambda: len(driver.of("AccountFunded")) >= funded + accounts,
                              timeout_seconds=120, what="the fundings")
    return await send_payments(service, prefix, ids, payments, seed)


@pytest.mark.chaos
@pytest.mark.parametrize("point", sorted(POINTS))
async def test_a_worker_dying_at_a_crash_point_loses_and_doubles_nothing(
    service: Service, point: str
) -> None:
    for worker in service.workers:
        worker.stop()
    service.workers.clear()
    try:
        crashing = await asyncio.to_thread(service.add_worker, PAYMENTS_CRASH_AT=f"{point}:2")
    except ComponentFailed:
        # The point can be reached while the worker starts, replaying batches the previous
        # test's worker had not committed: a crash all the same.
        crashing = service.workers[-1]
    prefix = "crash-" + point.replace(".", "-").replace("_", "-")
    fundings = len(service.driver.of("AccountFunded"))
    payment_ids = await send_everything(service, prefix, 6, 60, seed=len(point),
                                        funded_first=point.startswith("psp."))
    deadline = time.monotonic() + 60
    while crashing.process is not None and crashing.process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert crashing.process is not None and crashing.process.poll() == 137, f"{point} was never reached"
    crashing.process = None
    await asyncio.to_thread(service.add_worker)
    await service.driver.wait_for(lambda: len(service.driver.of("AccountFunded")) >= fundings + 6,
                                  timeout_seconds=120, what="every funding")
    await settle_and_check(service, payment_ids)
