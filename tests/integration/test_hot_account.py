"""One hot debtor, 300 payments at once: the balance never goes below minus the overdraft limit.

Contract guarantee 4 checked from the outside: by the outcomes downstream sees, by the
ledger of record in PostgreSQL (final balance and the running balance over its whole
posting history), and by the worker's own view of the account.
"""

from __future__ import annotations

import asyncio
import random

from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import (
    account_settles,
    fund,
    ledger_balance,
    open_accounts,
    quiet,
    sql,
    unbalanced,
)

PAYMENTS = 300
FUNDING = 60_000
OVERDRAFT = 5_000
CREDITORS = [f"hot-creditor-{n}" for n in range(6)]
DEBTOR = "hot-debtor"


async def test_a_hot_debtor_never_goes_below_its_overdraft_limit(service: Service) -> None:
    driver = service.driver
    await open_accounts(service, DEBTOR, overdraft_limit=OVERDRAFT)
    await open_accounts(service, *CREDITORS)
    await fund(service, "hot-fund-1", DEBTOR, FUNDING)

    rng = random.Random(20240617)
    planned = {f"hot-pay-{n:03d}": (rng.choice(CREDITORS), rng.randint(100, 500)) for n in range(PAYMENTS)}
    assert sum(amount for _, amount in planned.values()) > FUNDING + OVERDRAFT  # some must fail
    await asyncio.gather(*(driver.pay(key, DEBTOR, creditor, amount)
                           for key, (creditor, amount) in planned.items()))
    await driver.flush()

    ids = {payment_id_for(key): key for key in planned}
    await driver.wait_for(lambda: ids.keys() <= driver.outcomes().keys(), timeout_seconds=50,
                          what=f"{PAYMENTS} outcomes")
    await quiet()
    outcomes = driver.outcomes()

    captured_total = 0
    failed_amounts = []
    for payment_id, key in ids.items():
        [event] = outcomes[payment_id]  # exactly one outcome each
        creditor, amount = planned[key]
        assert (event["debtor_account_id"], event["creditor_account_id"], event["amount"]) == (
            DEBTOR, creditor, amount)
        if event["event_type"] == "PaymentCaptured":
            captured_total += amount
        else:
            assert event["event_type"] == "PaymentFailed"
            assert event["reason"] == "insufficient_funds", event
            failed_amounts.append(amount)

    assert failed_amounts, "the workload was meant to exhaust the debtor"
    assert captured_total <= FUNDING + OVERDRAFT
    # Nothing is ever released (the PSP approves all), so the headroom only shrinks: each
    # refused payment was larger than what is left now. No payment was refused needlessly.
    assert FUNDING + OVERDRAFT - captured_total < min(failed_amounts)

    debtor_balance = await ledger_balance(service, DEBTOR)
    assert debtor_balance == FUNDING - captured_total
    assert debtor_balance >= -OVERDRAFT
    rows = await sql(service, """
        SELECT posting_id, amount, SUM(amount) OVER (ORDER BY posting_id) AS running
        FROM postings WHERE account_id = $1 ORDER BY posting_id""", DEBTOR)
    assert len(rows) == 1 + PAYMENTS - len(failed_amounts)
    lowest = min(int(r["running"]) for r in rows)
    assert lowest >= -OVERDRAFT, f"the running balance reached {lowest}"

    creditor_rows = await sql(service, "SELECT COALESCE(SUM(amount), 0)::bigint AS total FROM postings "
                                       "WHERE account_id = ANY($1::text[])", CREDITORS)
    assert int(creditor_rows[0]["total"]) == captured_total
    failed_ids = [pid for pid in ids if outcomes[pid][0]["event_type"] == "PaymentFailed"]
    leaked = await sql(service, "SELECT count(*) AS n FROM postings WHERE payment_id = ANY($1::text[])",
                       failed_ids)
    assert leaked[0]["n"] == 0
    assert await unbalanced(service) == []

    await account_settles(service, DEBTOR, FUNDING - captured_total)


async def test_a_hot_debtor_with_psp_failures_and_repeated_commands(service: Service) -> None:
    """Holds released by PSP declines race with new reservations, and every command comes twice."""
    driver = service.driver
    debtor, creditors = "hot2-debtor", [f"hot2-creditor-{n}" for n in range(4)]
    funding, overdraft, payments = 40_000, 2_000, 240
    await open_accounts(service, debtor, overdraft_limit=overdraft)
    await open_accounts(service, *creditors)
    await fund(service, "hot2-fund-1", debtor, funding)

    rng = random.Random(7)
    simulations = ["approve"] * 10 + ["decline"] * 5 + ["fail_then_approve:1"] * 3 + ["latency_ms:20"] * 2
    planned = {f"hot2-pay-{n:03d}": (rng.choice(creditors), rng.randint(100, 400), rng.choice(simulations))
               for n in range(payments)}
    sends = [key for key in planned] * 2
    rng.shuffle(sends)
    for key in sends:
        creditor, amount, simulation = planned[key]
        await driver.pay(key, debtor, creditor, amount, metadata={"psp_simulation": simulation})
    await driver.flush()

    ids = {payment_id_for(key): key for key in planned}
    await driver.wait_for(lambda: ids.keys() <= driver.outcomes().keys(), timeout_seconds=50,
                          what=f"{payments} outcomes")
    await quiet()
    outcomes = driver.outcomes()
    captured_total = 0
    captured_ids = []
    for payment_id, key in ids.items():
        [event] = outcomes[payment_id]
        _, amount, simulation = planned[key]
        if event["event_type"] == "PaymentCaptured":
            assert simulation != "decline", event
            captured_total += amount
            captured_ids.append(payment_id)
        elif simulation == "decline":
            assert event["reason"] in ("psp_declined", "insufficient_funds"), event
        else:
            assert event["reason"] == "insufficient_funds", event
    assert not [e for e in driver.of("CommandRejected") if e["idempotency_key"] in planned]

    assert captured_total <= funding + overdraft
    assert await ledger_balance(service, debtor) == funding - captured_total
    rows = await sql(service, "SELECT SUM(amount) OVER (ORDER BY posting_id) AS running FROM postings "
                              "WHERE account_id = $1 ORDER BY posting_id", debtor)
    assert min(int(r["running"]) for r in rows) >= -overdraft
    per_payment = await sql(service, "SELECT payment_id, count(*) AS legs FROM postings "
                                     "WHERE payment_id = ANY($1::text[]) GROUP BY payment_id", list(ids))
    assert {r["payment_id"]: r["legs"] for r in per_payment} == {pid: 2 for pid in captured_ids}
    assert await unbalanced(service) == []
    await account_settles(service, debtor, funding - captured_total)
