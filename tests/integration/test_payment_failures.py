"""Every PaymentFailed reason end to end, as an upstream system and a downstream consumer see it.

For each failure: exactly one outcome, a reason and a human detail, no postings for the
payment in PostgreSQL, and the debtor's balance (held by the worker) unchanged with
nothing left reserved. Then the PSP behaviours that end captured after all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import (
    account_settles,
    account_view,
    events_about,
    fund,
    ledger_balance,
    open_accounts,
    outcome,
    payment_view,
    poll,
    postings_of,
    quiet,
)

RISK_MAX_AMOUNT = 100_000_000  # the worker's default per-payment maximum


async def assert_failed_cleanly(service: Service, key: str, reason: str, *, debtor: str, creditor: str,
                                amount: int, debtor_posted: int | None, creditor_posted: int | None = 0,
                                currency: str = "USD", outcome_timeout: float = 30.0) -> dict[str, Any]:
    driver = service.driver
    payment_id = payment_id_for(key)
    failed = await outcome(driver, payment_id, outcome_timeout)
    assert failed["event_type"] == "PaymentFailed", failed
    assert failed["reason"] == reason, failed
    assert isinstance(failed["detail"], str) and failed["detail"].strip(), failed
    assert (failed["payment_id"], failed["idempotency_key"]) == (payment_id, key)
    assert (failed["debtor_account_id"], failed["creditor_account_id"]) == (debtor, creditor)
    assert (failed["amount"], failed["currency"]) == (amount, currency)
    assert failed["schema_version"] == 1 and failed["occurred_at"]
    [message] = [r for r in driver.events["fintech.events.PaymentFailed"]
                 if r.body["payment_id"] == payment_id]
    assert message.key == payment_id.encode()
    assert message.headers["ce_id"].decode() == failed["event_id"]
    assert message.headers["ce_type"] == b"fintech.PaymentFailed.v1"
    assert message.headers["ce_specversion"] == b"1.0" and message.headers["ce_source"]
    assert message.headers["content-type"] == b"application/json"
    assert message.headers["ce_time"].endswith(b"Z")
    assert datetime.fromisoformat(message.headers["ce_time"].decode().replace("Z", "+00:00")).tzinfo
    assert message.headers["correlation_id"] == payment_id.encode()

    await quiet()
    assert len(driver.outcomes()[payment_id]) == 1, driver.outcomes()[payment_id]
    assert not events_about(driver, "PaymentCaptured", payment_id=payment_id)
    assert await postings_of(service, payment_id) == []

    for account_id, posted in ((debtor, debtor_posted), (creditor, creditor_posted)):
        if posted is None:  # an account that does not exist
            status, _ = await account_view(service, account_id)
            assert status == 404
            assert await ledger_balance(service, account_id) == 0
        else:
            await account_settles(service, account_id, posted)
            assert await ledger_balance(service, account_id) == posted

    status, view = await payment_view(service, payment_id)
    assert status == 200 and view["status"] == "failed" and view["reason"] == reason, view
    return failed


async def test_unknown_debtor(service: Service) -> None:
    await open_accounts(service, "pf-unk-deb-creditor")
    await service.driver.pay("pf-unk-deb-1", "pf-unk-deb-ghost", "pf-unk-deb-creditor", 100)
    failed = await assert_failed_cleanly(service, "pf-unk-deb-1", "unknown_account",
                                         debtor="pf-unk-deb-ghost", creditor="pf-unk-deb-creditor",
                                         amount=100, debtor_posted=None, creditor_posted=0)
    assert "pf-unk-deb-ghost" in failed["detail"]


async def test_unknown_creditor(service: Service) -> None:
    await open_accounts(service, "pf-unk-cred-debtor")
    await fund(service, "pf-unk-cred-fund", "pf-unk-cred-debtor", 5_000)
    await service.driver.pay("pf-unk-cred-1", "pf-unk-cred-debtor", "pf-unk-cred-ghost", 100)
    failed = await assert_failed_cleanly(service, "pf-unk-cred-1", "unknown_account",
                                         debtor="pf-unk-cred-debtor", creditor="pf-unk-cred-ghost",
                                         amount=100, debtor_posted=5_000, creditor_posted=None)
    assert "pf-unk-cred-ghost" in failed["detail"]


@pytest.mark.parametrize("side", ["debtor", "creditor"])
async def test_settlement_accounts_cannot_be_paid_from_or_to(service: Service, side: str) -> None:
    """`settlement:<CUR>` is the outside world's side of the ledger, not a customer account."""
    customer = f"pf-settle-{side}"
    await open_accounts(service, customer)
    await fund(service, f"pf-settle-fund-{side}", customer, 5_000)
    settlement_before = await ledger_balance(service, "settlement:USD")
    debtor, creditor = (("settlement:USD", customer) if side == "debtor" else (customer, "settlement:USD"))
    await service.driver.pay(f"pf-settle-{side}-1", debtor, creditor, 100)
    payment_id = payment_id_for(f"pf-settle-{side}-1")
    failed = await outcome(service.driver, payment_id)
    assert failed["event_type"] == "PaymentFailed" and failed["reason"] == "unknown_account", failed
    await quiet()
    assert len(service.driver.outcomes()[payment_id]) == 1
    assert await postings_of(service, payment_id) == []
    assert await ledger_balance(service, "settlement:USD") == settlement_before
    await account_settles(service, customer, 5_000)


async def test_currency_mismatch_of_the_creditor(service: Service) -> None:
    await open_accounts(service, "pf-cur-cred-debtor")
    await open_accounts(service, "pf-cur-cred-creditor", currency="EUR")
    await fund(service, "pf-cur-cred-fund", "pf-cur-cred-debtor", 5_000)
    await service.driver.pay("pf-cur-cred-1", "pf-cur-cred-debtor", "pf-cur-cred-creditor", 100)
    await assert_failed_cleanly(service, "pf-cur-cred-1", "currency_mismatch", debtor="pf-cur-cred-debtor",
                                creditor="pf-cur-cred-creditor", amount=100, debtor_posted=5_000)


async def test_currency_mismatch_of_the_debtor(service: Service) -> None:
    await open_accounts(service, "pf-cur-deb-debtor", currency="EUR")
    await open_accounts(service, "pf-cur-deb-creditor")
    await fund(service, "pf-cur-deb-fund", "pf-cur-deb-debtor", 5_000, currency="EUR")
    await service.driver.pay("pf-cur-deb-1", "pf-cur-deb-debtor", "pf-cur-deb-creditor", 100)
    await assert_failed_cleanly(service, "pf-cur-deb-1", "currency_mismatch", debtor="pf-cur-deb-debtor",
                                creditor="pf-cur-deb-creditor", amount=100, debtor_posted=5_000)


async def test_same_account(service: Service) -> None:
    await open_accounts(service, "pf-same")
    await fund(service, "pf-same-fund", "pf-same", 5_000)
    await service.driver.pay("pf-same-1", "pf-same", "pf-same", 100)
    await assert_failed_cleanly(service, "pf-same-1", "same_account", debtor="pf-same", creditor="pf-same",
                                amount=100, debtor_posted=5_000, creditor_posted=5_000)


async def test_insufficient_funds_and_exactly_the_overdraft_limit(service: Service) -> None:
    driver = service.driver
    debtor, creditor = "pf-nsf-debtor", "pf-nsf-creditor"
    await open_accounts(service, debtor, overdraft_limit=2_500)
    await open_accounts(service, creditor)
    await fund(service, "pf-nsf-fund", debtor, 10_000)

    # One unit more than funds + overdraft: refused, nothing moves.
    await driver.pay("pf-nsf-over", debtor, creditor, 12_501)
    failed = await assert_failed_cleanly(service, "pf-nsf-over", "insufficient_funds", debtor=debtor,
                                         creditor=creditor, amount=12_501, debtor_posted=10_000)
    assert failed["detail"]

    # Exactly funds + overdraft: captured, the debtor sits at -overdraft_limit.
    await driver.pay("pf-nsf-exact", debtor, creditor, 12_500)
    captured = await outcome(driver, payment_id_for("pf-nsf-exact"))
    assert captured["event_type"] == "PaymentCaptured", captured
    assert await postings_of(service, payment_id_for("pf-nsf-exact")) == [(debtor, -12_500),
                                                                          (creditor, 12_500)]
    await account_settles(service, debtor, -2_500)
    await account_settles(service, creditor, 12_500)

    # Now not a single unit more.
    await driver.pay("pf-nsf-one-more", debtor, creditor, 1)
    await assert_failed_cleanly(service, "pf-nsf-one-more", "insufficient_funds", debtor=debtor,
                                creditor=creditor, amount=1, debtor_posted=-2_500, creditor_posted=12_500)


@pytest.mark.parametrize("kyc_status", ["pending", "blocked"])
async def test_kyc_blocked(service: Service, kyc_status: str) -> None:
    debtor, creditor = f"pf-kyc-{kyc_status}-debtor", f"pf-kyc-{kyc_status}-creditor"
    await open_accounts(service, debtor, kyc_status=kyc_status)
    await open_accounts(service, creditor)
    await fund(service, f"pf-kyc-{kyc_status}-fund", debtor, 5_000)
    await service.driver.pay(f"pf-kyc-{kyc_status}-1", debtor, creditor, 100)
    await assert_failed_cleanly(service, f"pf-kyc-{kyc_status}-1", "kyc_blocked", debtor=debtor,
                                creditor=creditor, amount=100, debtor_posted=5_000)


async def test_risk_rejected_above_the_per_payment_maximum(service: Service) -> None:
    driver = service.driver
    debtor, creditor = "pf-risk-debtor", "pf-risk-creditor"
    await open_accounts(service, debtor)
    await open_accounts(service, creditor)
    await fund(service, "pf-risk-fund", debtor, 3 * RISK_MAX_AMOUNT)

    await driver.pay("pf-risk-over", debtor, creditor, RISK_MAX_AMOUNT + 1)
    failed = await assert_failed_cleanly(service, "pf-risk-over", "risk_rejected", debtor=debtor,
                                         creditor=creditor, amount=RISK_MAX_AMOUNT + 1,
                                         debtor_posted=3 * RISK_MAX_AMOUNT)
    assert failed["detail"]

    # The maximum itself is allowed.
    await driver.pay("pf-risk-max", debtor, creditor, RISK_MAX_AMOUNT)
    captured = await outcome(driver, payment_id_for("pf-risk-max"))
    assert captured["event_type"] == "PaymentCaptured", captured
    await account_settles(service, debtor, 2 * RISK_MAX_AMOUNT)


async def test_psp_declined_releases_the_reservation(service: Service) -> None:
    debtor, creditor = "pf-decline-debtor", "pf-decline-creditor"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pf-decline-fund", debtor, 5_000)
    await service.driver.pay("pf-decline-1", debtor, creditor, 4_000,
                             metadata={"psp_simulation": "decline"})
    await assert_failed_cleanly(service, "pf-decline-1", "psp_declined", debtor=debtor, creditor=creditor,
                                amount=4_000, debtor_posted=5_000)
    # The released funds can be spent again at once.
    await service.driver.pay("pf-decline-2", debtor, creditor, 5_000)
    captured = await outcome(service.driver, payment_id_for("pf-decline-2"))
    assert captured["event_type"] == "PaymentCaptured", captured


@dataclass
class SilentPsp:
    """A payment whose PSP never answers, and an ordinary payment sent right behind it."""

    started: float
    held: dict[str, Any]  # the debtor's view while the PSP is silent
    timeout_outcome_after: float
    ordinary_outcome: dict[str, Any] | None
    ordinary_outcome_after: float


@pytest.fixture(scope="module")
async def silent_psp(service: Service) -> SilentPsp:
    driver = service.driver
    await open_accounts(service, "pf-timeout-debtor", "pf-timeout-creditor", "pf-behind-debtor",
                        "pf-behind-creditor")
    await fund(service, "pf-timeout-fund", "pf-timeout-debtor", 5_000)
    await fund(service, "pf-behind-fund", "pf-behind-debtor", 5_000)
    started = time.monotonic()
    await driver.pay("pf-timeout-1", "pf-timeout-debtor", "pf-timeout-creditor", 3_000,
                     metadata={"psp_simulation": "timeout"})
    # While the PSP is silent, the amount is held.
    _, held = await poll(lambda: account_view(service, "pf-timeout-debtor"),
                         lambda answer: answer[0] == 200 and answer[1]["pending"] == 3_000,
                         what="the reservation while the PSP is silent")
    await driver.pay("pf-behind-1", "pf-behind-debtor", "pf-behind-creditor", 100)
    behind_sent = time.monotonic()
    waits = {}
    for key in ("pf-behind-1", "pf-timeout-1"):
        payment_id = payment_id_for(key)
        try:
            await driver.wait_for(lambda p=payment_id: p in driver.outcomes(),
                                  timeout_seconds=max(0.0, started + 30 - time.monotonic()),
                                  what=f"the outcome of {key}")
        except TimeoutError:
            continue
        [seen] = [r.seen_at for topic in ("PaymentCaptured", "PaymentFailed")
                  for r in driver.events[f"fintech.events.{topic}"] if r.body["payment_id"] == payment_id]
        waits[key] = seen
    ordinary = driver.outcomes().get(payment_id_for("pf-behind-1"), [None])[0]
    ordinary_after = waits.get("pf-behind-1", float("inf")) - behind_sent
    timeout_after = waits.get("pf-timeout-1", float("inf")) - started
    return SilentPsp(started, held, timeout_after, ordinary, ordinary_after)


async def test_psp_timeout_ends_unavailable_within_30_seconds(service: Service, silent_psp: SilentPsp
                                                              ) -> None:
    assert (silent_psp.held["posted"], silent_psp.held["available"]) == (5_000, 2_000)
    assert silent_psp.timeout_outcome_after < 30
    await assert_failed_cleanly(service, "pf-timeout-1", "psp_unavailable", debtor="pf-timeout-debtor",
                                creditor="pf-timeout-creditor", amount=3_000, debtor_posted=5_000)


async def test_a_silent_psp_does_not_hold_up_other_payments(silent_psp: SilentPsp) -> None:
    assert silent_psp.ordinary_outcome is not None
    assert silent_psp.ordinary_outcome["event_type"] == "PaymentCaptured"
    assert silent_psp.ordinary_outcome_after < 5.0, (
        f"an ordinary payment behind a silent PSP call took {silent_psp.ordinary_outcome_after:.1f}s")


@pytest.mark.parametrize("simulation", ["fail_then_approve:2", "latency_ms:50"])
async def test_psp_behaviours_that_end_captured(service: Service, simulation: str) -> None:
    driver = service.driver
    tag = simulation.split(":")[0].replace("_", "-")
    debtor, creditor, key = f"pf-{tag}-debtor", f"pf-{tag}-creditor", f"pf-{tag}-1"
    await open_accounts(service, debtor, creditor)
    await fund(service, f"pf-{tag}-fund", debtor, 5_000)
    await driver.pay(key, debtor, creditor, 1_234, metadata={"psp_simulation": simulation})
    payment_id = payment_id_for(key)
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured", captured
    assert captured["psp_reference"]
    await quiet()
    assert len(driver.outcomes()[payment_id]) == 1
    assert await postings_of(service, payment_id) == [(debtor, -1_234), (creditor, 1_234)]
    await account_settles(service, debtor, 5_000 - 1_234)
    await account_settles(service, creditor, 1_234)
    status, view = await payment_view(service, payment_id)
    assert status == 200 and view["status"] == "captured" and view["reason"] is None, view
