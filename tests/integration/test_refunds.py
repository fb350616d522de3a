"""Refunds end to end: the money goes back through the ledger, or the refund fails cleanly.

Every refund outcome is a PaymentRefunded or a RefundFailed keyed by the payment id; the
refund's postings reverse the capture's and every ledger transaction still balances.
"""

from __future__ import annotations

from typing import Any

import orjson

from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import (
    account_settles,
    events_about,
    fund,
    header,
    ledger_balance,
    open_accounts,
    outcome,
    payment_view,
    poll,
    postings_of,
    quiet,
    raw_messages,
    unbalanced,
)


async def captured_payment(service: Service, tag: str, amount: int, *, funding: int = 10_000
                           ) -> tuple[str, str, str]:
    """A fresh debtor and creditor and one captured payment between them: (payment_id, debtor, creditor)."""
    debtor, creditor = f"rf-{tag}-debtor", f"rf-{tag}-creditor"
    await open_accounts(service, debtor, creditor)
    await fund(service, f"rf-{tag}-fund", debtor, funding)
    await service.driver.pay(f"rf-{tag}-pay", debtor, creditor, amount)
    captured = await outcome(service.driver, payment_id_for(f"rf-{tag}-pay"))
    assert captured["event_type"] == "PaymentCaptured", captured
    return captured["payment_id"], debtor, creditor


async def refund_outcome(service: Service, payment_id: str, key: str) -> dict[str, Any]:
    driver = service.driver

    def found() -> list[dict[str, Any]]:
        return (events_about(driver, "PaymentRefunded", payment_id=payment_id, idempotency_key=key)
                + events_about(driver, "RefundFailed", payment_id=payment_id, idempotency_key=key))

    await driver.wait_for(lambda: bool(found()), timeout_seconds=20, what=f"the outcome of refund {key}")
    [event] = found()
    return event


async def payment_status(service: Service, payment_id: str, status: str) -> dict[str, Any]:
    _, view = await poll(lambda: payment_view(service, payment_id),
                         lambda answer: answer[0] == 200 and answer[1]["status"] == status,
                         what=f"payment {payment_id} {status}")
    return view  # type: ignore[no-any-return]


async def test_full_refund_by_default(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "full", 4_000)
    await driver.refund("rf-full-r1", payment_id)
    refunded = await refund_outcome(service, payment_id, "rf-full-r1")
    assert refunded["event_type"] == "PaymentRefunded", refunded
    assert (refunded["amount"], refunded["currency"]) == (4_000, "USD")
    [message] = [r for r in driver.events["fintech.events.PaymentRefunded"]
                 if r.body["event_id"] == refunded["event_id"]]
    assert message.key == payment_id.encode()
    assert message.headers["ce_id"].decode() == refunded["event_id"]

    assert await postings_of(service, payment_id) == [(debtor, -4_000), (creditor, 4_000),
                                                      (creditor, -4_000), (debtor, 4_000)]
    assert await unbalanced(service) == []
    assert await ledger_balance(service, debtor) == 10_000
    assert await ledger_balance(service, creditor) == 0
    await account_settles(service, debtor, 10_000)
    await account_settles(service, creditor, 0)
    view = await payment_status(service, payment_id, "refunded")
    assert view["refunded"] == 4_000
    assert [h["step"] for h in view["history"]][-1] == "refunded"
    await quiet()
    assert len(events_about(driver, "PaymentRefunded", payment_id=payment_id)) == 1
    assert driver.outcomes()[payment_id][0]["event_type"] == "PaymentCaptured"
    assert len(driver.outcomes()[payment_id]) == 1


async def test_partial_refund_then_the_rest(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "partial", 5_000)
    await driver.refund("rf-partial-r1", payment_id, 1_200)
    first = await refund_outcome(service, payment_id, "rf-partial-r1")
    assert first["event_type"] == "PaymentRefunded" and first["amount"] == 1_200, first
    view = await payment_status(service, payment_id, "partially_refunded")
    assert view["refunded"] == 1_200
    await account_settles(service, debtor, 10_000 - 5_000 + 1_200)

    await driver.refund("rf-partial-r2", payment_id)  # the rest, by default
    rest = await refund_outcome(service, payment_id, "rf-partial-r2")
    assert rest["event_type"] == "PaymentRefunded" and rest["amount"] == 3_800, rest
    assert first["transaction_id"] != rest["transaction_id"]
    view = await payment_status(service, payment_id, "refunded")
    assert view["refunded"] == 5_000

    assert await postings_of(service, payment_id) == [(debtor, -5_000), (creditor, 5_000),
                                                      (creditor, -1_200), (debtor, 1_200),
                                                      (creditor, -3_800), (debtor, 3_800)]
    assert await unbalanced(service) == []
    await account_settles(service, debtor, 10_000)
    await account_settles(service, creditor, 0)

    # Nothing is left to refund.
    await driver.refund("rf-partial-r3", payment_id)
    nothing_left = await refund_outcome(service, payment_id, "rf-partial-r3")
    assert nothing_left["event_type"] == "RefundFailed", nothing_left
    assert nothing_left["reason"] == "amount_exceeds_refundable" and nothing_left["detail"]
    await driver.refund("rf-partial-r4", payment_id, 1)
    one_more = await refund_outcome(service, payment_id, "rf-partial-r4")
    assert one_more["reason"] == "amount_exceeds_refundable"
    await quiet()
    assert len(await postings_of(service, payment_id)) == 6


async def test_over_refund_fails_and_moves_nothing(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "over", 2_000)
    await driver.refund("rf-over-r1", payment_id, 2_001)
    failed = await refund_outcome(service, payment_id, "rf-over-r1")
    assert failed["event_type"] == "RefundFailed", failed
    assert failed["reason"] == "amount_exceeds_refundable" and failed["detail"].strip()
    assert failed["amount"] == 2_001
    await quiet()
    assert await postings_of(service, payment_id) == [(debtor, -2_000), (creditor, 2_000)]
    await account_settles(service, creditor, 2_000)
    view = await payment_status(service, payment_id, "captured")
    assert view["refunded"] == 0

    # The whole amount can still be refunded afterwards.
    await driver.refund("rf-over-r2", payment_id, 2_000)
    refunded = await refund_outcome(service, payment_id, "rf-over-r2")
    assert refunded["event_type"] == "PaymentRefunded"
    await payment_status(service, payment_id, "refunded")


async def test_refund_of_a_failed_payment(service: Service) -> None:
    driver = service.driver
    debtor, creditor = "rf-failed-debtor", "rf-failed-creditor"
    await open_accounts(service, debtor, creditor)
    await fund(service, "rf-failed-fund", debtor, 1_000)
    await driver.pay("rf-failed-pay", debtor, creditor, 5_000)
    payment_id = payment_id_for("rf-failed-pay")
    failed_payment = await outcome(driver, payment_id)
    assert failed_payment["reason"] == "insufficient_funds"

    await driver.refund("rf-failed-r1", payment_id, 100)
    failed = await refund_outcome(service, payment_id, "rf-failed-r1")
    assert failed["event_type"] == "RefundFailed" and failed["reason"] == "payment_not_captured", failed
    assert failed["detail"].strip()
    await quiet()
    assert await postings_of(service, payment_id) == []
    await account_settles(service, debtor, 1_000)
    await account_settles(service, creditor, 0)
    view = await payment_status(service, payment_id, "failed")
    assert view["reason"] == "insufficient_funds"


async def test_refund_of_an_unknown_payment(service: Service) -> None:
    driver = service.driver
    payment_id = payment_id_for("rf-never-paid")
    await driver.refund("rf-unknown-r1", payment_id)
    failed = await refund_outcome(service, payment_id, "rf-unknown-r1")
    assert failed["event_type"] == "RefundFailed" and failed["reason"] == "unknown_payment", failed
    assert failed["detail"].strip()
    [message] = [r for r in driver.events["fintech.events.RefundFailed"]
                 if r.body["event_id"] == failed["event_id"]]
    assert message.key == payment_id.encode()
    await quiet()
    assert await postings_of(service, payment_id) == []
    status, _ = await payment_view(service, payment_id)
    assert status == 404  # asking about it did not create it


async def test_refund_when_the_creditor_has_spent_the_money(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "spent", 3_000)
    await open_accounts(service, "rf-spent-shop")
    await driver.pay("rf-spent-onward", creditor, "rf-spent-shop", 2_500)
    onward = await outcome(driver, payment_id_for("rf-spent-onward"))
    assert onward["event_type"] == "PaymentCaptured"
    await account_settles(service, creditor, 500)

    await driver.refund("rf-spent-r1", payment_id)
    failed = await refund_outcome(service, payment_id, "rf-spent-r1")
    assert failed["event_type"] == "RefundFailed" and failed["reason"] == "insufficient_funds", failed
    assert failed["detail"].strip()
    await quiet()
    assert await postings_of(service, payment_id) == [(debtor, -3_000), (creditor, 3_000)]
    await account_settles(service, creditor, 500)  # and nothing left held on it
    await account_settles(service, debtor, 7_000)
    view = await payment_status(service, payment_id, "captured")
    assert view["refunded"] == 0

    # What the creditor still has can be refunded; the hold of the failed refund is gone.
    await driver.refund("rf-spent-r2", payment_id, 500)
    refunded = await refund_outcome(service, payment_id, "rf-spent-r2")
    assert refunded["event_type"] == "PaymentRefunded", refunded
    await payment_status(service, payment_id, "partially_refunded")
    await account_settles(service, creditor, 0)
    await account_settles(service, debtor, 7_500)


async def test_repeated_refund_has_no_second_effect(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "repeat", 1_000)
    await driver.refund("rf-repeat-r1", payment_id, 400)
    refunded = await refund_outcome(service, payment_id, "rf-repeat-r1")
    assert refunded["event_type"] == "PaymentRefunded"
    await driver.refund("rf-repeat-r1", payment_id, 400)
    messages = await raw_messages(
        service.bootstrap, "fintech.events.PaymentRefunded",
        lambda m: orjson.loads(m.value)["idempotency_key"] == "rf-repeat-r1", at_least=2)
    assert [header(m, "ce_id") for m in messages] == [refunded["event_id"].encode()] * 2

    await driver.refund("rf-repeat-r1", payment_id, 600)  # same key, another amount
    await driver.wait_for(
        lambda: bool(events_about(driver, "CommandRejected", idempotency_key="rf-repeat-r1")),
        timeout_seconds=20, what="the conflict")
    [rejected] = events_about(driver, "CommandRejected", idempotency_key="rf-repeat-r1")
    assert rejected["reason"] == "idempotency_conflict" and rejected["command_type"] == "RefundPayment"
    await quiet()
    assert await postings_of(service, payment_id) == [(debtor, -1_000), (creditor, 1_000),
                                                      (creditor, -400), (debtor, 400)]
    view = await payment_status(service, payment_id, "partially_refunded")
    assert view["refunded"] == 400


async def test_refunds_racing_for_the_same_money_never_exceed_the_payment(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "race", 1_000)
    for n in range(6):
        await driver.refund(f"rf-race-r{n}", payment_id, 300)
    outcomes = [await refund_outcome(service, payment_id, f"rf-race-r{n}") for n in range(6)]
    refunded = [o for o in outcomes if o["event_type"] == "PaymentRefunded"]
    assert len(refunded) == 3, outcomes
    assert {o["reason"] for o in outcomes if o["event_type"] == "RefundFailed"} == {
        "amount_exceeds_refundable"}
    await quiet()
    legs = await postings_of(service, payment_id)
    assert sum(a for account, a in legs if account == debtor) == -100
    assert await unbalanced(service) == []
    view = await payment_status(service, payment_id, "partially_refunded")
    assert view["refunded"] == 900
    await account_settles(service, creditor, 100)


# --- idempotency keys across payments ---------------------------------------------------------


async def conflict_of(service: Service, key: str) -> dict[str, Any]:
    """The one CommandRejected answering a reuse of `key`."""
    driver = service.driver
    await driver.wait_for(lambda: bool(events_about(driver, "CommandRejected", idempotency_key=key)),
                          timeout_seconds=20, what=f"the conflict on {key}")
    await quiet()
    [rejected] = events_about(driver, "CommandRejected", idempotency_key=key)
    assert rejected["reason"] == "idempotency_conflict", rejected
    [message] = [r for r in driver.events["fintech.events.CommandRejected"]
                 if r.body["event_id"] == rejected["event_id"]]
    assert message.key == key.encode()
    return rejected


async def test_a_refund_key_reused_for_another_payment_is_a_conflict(service: Service) -> None:
    driver = service.driver
    first_id, first_debtor, first_creditor = await captured_payment(service, "reuse-a", 2_000)
    other_id, other_debtor, other_creditor = await captured_payment(service, "reuse-b", 3_000)
    await driver.refund("rf-reuse-r1", first_id, 500)
    refunded = await refund_outcome(service, first_id, "rf-reuse-r1")
    assert refunded["event_type"] == "PaymentRefunded", refunded

    await driver.refund("rf-reuse-r1", other_id, 500)  # the same key, another payment
    rejected = await conflict_of(service, "rf-reuse-r1")
    assert rejected["command_type"] == "RefundPayment"
    assert "RefundPayment" in rejected["detail"] and first_id in rejected["detail"], rejected

    # The first refund is untouched, the second payment not refunded, in the ledger too.
    assert events_about(driver, "PaymentRefunded", idempotency_key="rf-reuse-r1") == [refunded]
    assert events_about(driver, "RefundFailed", idempotency_key="rf-reuse-r1") == []
    assert await postings_of(service, first_id) == [(first_debtor, -2_000), (first_creditor, 2_000),
                                                    (first_creditor, -500), (first_debtor, 500)]
    assert await postings_of(service, other_id) == [(other_debtor, -3_000), (other_creditor, 3_000)]
    assert await unbalanced(service) == []
    await account_settles(service, other_creditor, 3_000)
    await account_settles(service, other_debtor, 7_000)
    assert (await payment_status(service, first_id, "partially_refunded"))["refunded"] == 500
    other = await payment_status(service, other_id, "captured")
    assert other["refunded"] == 0 and "refund_requested" not in [h["step"] for h in other["history"]]


async def test_a_payment_key_reused_by_a_refund_is_a_conflict_and_the_reverse(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "paykey", 1_000)
    await driver.refund("rf-paykey-pay", payment_id, 100)  # the payment's own key
    rejected = await conflict_of(service, "rf-paykey-pay")
    assert rejected["command_type"] == "RefundPayment"
    assert "RequestPayment" in rejected["detail"] and payment_id in rejected["detail"], rejected
    assert events_about(driver, "PaymentRefunded", payment_id=payment_id) == []
    assert events_about(driver, "RefundFailed", payment_id=payment_id) == []
    assert len(driver.outcomes()[payment_id]) == 1

    # A refund key first, then a RequestPayment with it: no payment exists because of it.
    await driver.refund("rf-paykey-r1", payment_id, 300)
    refunded = await refund_outcome(service, payment_id, "rf-paykey-r1")
    assert refunded["event_type"] == "PaymentRefunded", refunded
    await driver.pay("rf-paykey-r1", debtor, creditor, 50)
    rejected = await conflict_of(service, "rf-paykey-r1")
    assert rejected["command_type"] == "RequestPayment"
    assert "RefundPayment" in rejected["detail"] and payment_id in rejected["detail"], rejected
    reused_id = payment_id_for("rf-paykey-r1")
    assert events_about(driver, "PaymentInitiated", payment_id=reused_id) == []
    assert reused_id not in driver.outcomes()
    status, _ = await payment_view(service, reused_id)
    assert status == 404
    assert await postings_of(service, reused_id) == []
    assert await postings_of(service, payment_id) == [(debtor, -1_000), (creditor, 1_000),
                                                      (creditor, -300), (debtor, 300)]
    assert await unbalanced(service) == []
    await account_settles(service, debtor, 9_300)


async def test_an_identical_refund_sent_again_is_answered_with_the_same_event(service: Service) -> None:
    driver = service.driver
    payment_id, debtor, creditor = await captured_payment(service, "again", 1_000)
    await driver.refund("rf-again-r1", payment_id)  # the rest, by default
    await driver.refund("rf-again-r1", payment_id)  # right behind it, before any outcome
    refunded = await refund_outcome(service, payment_id, "rf-again-r1")
    assert refunded["event_type"] == "PaymentRefunded" and refunded["amount"] == 1_000, refunded
    await driver.refund("rf-again-r1", payment_id)  # once the outcome is known
    messages = await raw_messages(
        service.bootstrap, "fintech.events.PaymentRefunded",
        lambda m: orjson.loads(m.value)["idempotency_key"] == "rf-again-r1", at_least=2)
    assert len(messages) >= 2
    assert {header(m, "ce_id") for m in messages} == {refunded["event_id"].encode()}
    assert {orjson.loads(m.value)["transaction_id"] for m in messages} == {refunded["transaction_id"]}

    await quiet()
    assert events_about(driver, "CommandRejected", idempotency_key="rf-again-r1") == []
    assert events_about(driver, "RefundFailed", idempotency_key="rf-again-r1") == []
    assert await postings_of(service, payment_id) == [(debtor, -1_000), (creditor, 1_000),
                                                      (creditor, -1_000), (debtor, 1_000)]
    view = await payment_status(service, payment_id, "refunded")
    assert view["refunded"] == 1_000
    assert [h["step"] for h in view["history"]].count("refund_requested") == 1
