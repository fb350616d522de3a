"""Payments through every decision, in memory (tests/unit/world.py): no broker, no database."""

from __future__ import annotations

from typing import Any

from models.payment import payment_id_for
from tests.unit.world import World


def open_account(world: World, account_id: str, **extra: Any) -> None:
    world.command(
        {
            "type": "OpenAccount",
            "account_id": account_id,
            "owner_id": f"owner-{account_id}",
            "currency": "USD",
            **extra,
        }
    )


def fund(world: World, key: str, account_id: str, amount: int) -> None:
    world.command(
        {
            "type": "FundAccount",
            "idempotency_key": key,
            "account_id": account_id,
            "amount": amount,
            "currency": "USD",
        }
    )


def pay(world: World, key: str, debtor: str, creditor: str, amount: int, **extra: Any) -> str:
    world.command(
        {
            "type": "RequestPayment",
            "idempotency_key": key,
            "debtor_account_id": debtor,
            "creditor_account_id": creditor,
            "amount": amount,
            "currency": "USD",
            **extra,
        }
    )
    return payment_id_for(key)


def funded_world(*accounts: str, amount: int = 10_000) -> World:
    world = World()
    for account_id in accounts:
        open_account(world, account_id)
    world.settle()
    for account_id in accounts:
        fund(world, f"fund-{account_id}", account_id, amount)
    world.settle()
    return world


def test_a_payment_is_captured_posted_and_settled() -> None:
    world = funded_world("alice", "bob")
    payment_id = pay(world, "pay-1", "alice", "bob", 2_500)
    world.settle()
    record = world.payment(payment_id)
    assert record is not None and record.status == "captured" and record.psp == "approved"
    assert [h.step for h in record.history] == ["initiated", "authorized", "captured"]
    assert [e.payment_id for e in world.events("PaymentInitiated")] == [payment_id]
    assert [e.payment_id for e in world.events("PaymentAuthorized")] == [payment_id]
    assert world.events("PaymentCaptured") == []  # the outbox relay publishes it, after the commit
    alice, bob = world.account("alice"), world.account("bob")
    assert (alice.posted, alice.pending, bob.posted) == (7_500, 0, 12_500)
    assert world.ledger_balance("alice") == alice.posted and world.ledger_balance("bob") == bob.posted


def test_a_repeated_payment_answers_with_its_outcome_and_moves_nothing() -> None:
    world = funded_world("alice", "bob")
    payment_id = pay(world, "pay-1", "alice", "bob", 2_500)
    world.settle()
    pay(world, "pay-1", "alice", "bob", 2_500)
    world.settle()
    assert [e.event_type for e in world.published if getattr(e, "payment_id", None) == payment_id] == [
        "PaymentInitiated",
        "PaymentAuthorized",
        "PaymentCaptured",
    ]
    assert world.account("alice").posted == 7_500


def test_a_funding_repeated_moves_money_once_and_answers_again() -> None:
    world = funded_world("alice")
    fund(world, "fund-alice", "alice", 10_000)
    world.settle()
    assert world.account("alice").posted == 10_000
    assert len(world.events("AccountFunded")) == 1  # the first answer, published again from the outbox


def test_a_funding_key_reused_with_another_amount_is_a_conflict() -> None:
    world = funded_world("alice")
    fund(world, "fund-alice", "alice", 5)
    world.settle()
    [rejected] = world.events("CommandRejected")
    assert rejected.reason == "idempotency_conflict" and world.account("alice").posted == 10_000


def test_insufficient_funds_fail_the_payment_and_hold_nothing() -> None:
    world = funded_world("alice", "bob", amount=100)
    payment_id = pay(world, "pay-big", "alice", "bob", 101)
    world.settle()
    [failed] = world.events("PaymentFailed")
    assert failed.payment_id == payment_id and failed.reason == "insufficient_funds"
    assert world.account("alice").pending == 0 and world.ledger_balance("bob") == 100


def test_an_unknown_creditor_is_asked_of_its_home_and_fails_the_payment() -> None:
    world = funded_world("alice")
    payment_id = pay(world, "pay-nobody", "alice", "nobody", 10)
    world.settle()
    [failed] = world.events("PaymentFailed")
    assert failed.payment_id == payment_id and failed.reason == "unknown_account"
    assert "creditor" in failed.detail


def test_a_declined_payment_releases_its_hold() -> None:
    world = funded_world("alice", "bob")
    world.approve = lambda payment: _answer(payment, "declined")
    payment_id = pay(world, "pay-no", "alice", "bob", 10)
    world.settle()
    [failed] = world.events("PaymentFailed")
    assert failed.payment_id == payment_id and failed.reason == "psp_declined"
    assert world.account("alice").pending == 0 and world.account("alice").posted == 10_000


def test_a_refund_moves_the_money_back_and_is_noted() -> None:
    world = funded_world("alice", "bob")
    payment_id = pay(world, "pay-1", "alice", "bob", 2_500)
    world.settle()
    world.command(
        {"type": "RefundPayment", "idempotency_key": "refund-1", "payment_id": payment_id, "amount": 1_000}
    )
    world.settle()
    record = world.payment(payment_id)
    assert record.status == "partially_refunded" and record.refunded_total == 1_000
    assert world.account("alice").posted == 8_500 and world.account("bob").posted == 11_500
    assert world.ledger_balance("alice") == 8_500


def test_a_refund_of_an_unknown_payment_fails() -> None:
    world = funded_world("alice")
    world.command({"type": "RefundPayment", "idempotency_key": "refund-x", "payment_id": "no-such-payment"})
    world.settle()
    [failed] = world.events("RefundFailed")
    assert failed.reason == "unknown_payment"


def test_a_batch_handled_again_after_a_crash_decides_the_same_and_applies_once() -> None:
    world = funded_world("alice", "bob")
    payment_id = pay(world, "pay-1", "alice", "bob", 2_500)
    home = next(
        p
        for p, log in world.logs.items()
        if len(log) > world.read.get(p, 0) and b"PaymentSubmitted" in log[-1]
    )
    world.handle_partition(home, crash_before_record=True)
    sent = list(world.published)
    world.handle_partition(home)  # the redelivery after the restart
    assert [e.event_id for e in world.published[len(sent) :]] == [e.event_id for e in sent[-1:]]
    world.settle()
    assert world.payment(payment_id).status == "captured"
    assert world.account("alice").posted == 7_500 and world.account("bob").posted == 12_500


def _answer(payment: Any, result: str) -> Any:
    from models.steps import PspAnswered

    return PspAnswered(
        origin=payment.requested_at,
        payment_id=payment.payment_id,
        home=payment.request.debtor_account_id,
        result=result,
        detail="no",
    )


def test_a_payment_whose_directory_entry_shares_its_homes_partition_is_found_there() -> None:
    """The hand-over and the directory entry of one command meet on one partition for one
    payment in eight: each is applied, neither taken for a repeat of the other."""
    from tests.unit.world import partition_of

    world = funded_world("alice", "bob")
    key = next(
        k
        for k in (f"pay-{n}" for n in range(1000))
        if partition_of(payment_id_for(k)) == partition_of("alice")
    )
    payment_id = pay(world, key, "alice", "bob", 10)
    world.settle()
    from tables import owners

    assert world.table.get(owners.home_key(payment_id)) == "alice"
    assert world.payment(payment_id).status == "captured"
