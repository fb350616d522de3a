"""The intake's idempotency-key registry: a key names the first command handed over with it."""

from __future__ import annotations

from typing import Any

import msgspec

from models.commands import RefundPayment, RequestPayment
from models.events import CommandRejected, RejectionReason, rejection_id_for
from models.intake import KeyUse, key_use, screen_key
from models.payment import payment_id_for
from models.steps import Origin

ORIGIN = Origin(topic="fintech.payments.commands", partition=3, offset=41)
PAYMENT_A = payment_id_for("pay-a")
PAYMENT_B = payment_id_for("pay-b")


def payment(key: str = "key-1", **changes: Any) -> RequestPayment:
    body = {"idempotency_key": key, "debtor_account_id": "alice", "creditor_account_id": "bob",
            "amount": 1_000, "currency": "USD", **changes}
    return RequestPayment.model_validate(body)


def refund(key: str = "key-1", payment_id: str = PAYMENT_A, amount: int | None = 400) -> RefundPayment:
    return RefundPayment(idempotency_key=key, payment_id=payment_id, amount=amount)


def use_of(command: RequestPayment | RefundPayment) -> KeyUse:
    return key_use(command, command.fingerprint())


def screened(first: KeyUse | None, command: RequestPayment | RefundPayment, origin: Origin = ORIGIN
             ) -> KeyUse | CommandRejected:
    return screen_key(first, command, command.fingerprint(), origin)


def conflict_of(first: RequestPayment | RefundPayment, command: RequestPayment | RefundPayment
                ) -> CommandRejected:
    decision = screened(use_of(first), command)
    assert isinstance(decision, CommandRejected), decision
    assert decision.reason is RejectionReason.IDEMPOTENCY_CONFLICT
    assert decision.command_type == command.type
    assert decision.idempotency_key == command.idempotency_key
    assert decision.key == command.idempotency_key
    return decision


def test_a_fresh_key_is_registered_with_what_it_was_used_for() -> None:
    assert screened(None, payment()) == KeyUse(
        command_type="RequestPayment", payment_id=payment_id_for("key-1"),
        fingerprint=payment().fingerprint())
    assert screened(None, refund()) == KeyUse(
        command_type="RefundPayment", payment_id=PAYMENT_A, fingerprint=refund().fingerprint())


def test_the_same_command_again_is_handed_over_under_its_first_use() -> None:
    for command in (payment(description="twice", metadata={"a": "b"}), refund(), refund(amount=None)):
        first = use_of(command)
        assert screened(first, command) == first
        # Equal payloads built separately are the same use, whatever the field order.
        again = type(command).model_validate(dict(reversed(command.model_dump().items())))
        assert screened(first, again) == first


def test_a_refund_key_reused_for_another_payment_is_a_conflict_naming_the_first() -> None:
    rejected = conflict_of(refund(payment_id=PAYMENT_A), refund(payment_id=PAYMENT_B))
    assert "'key-1'" in rejected.detail
    assert "RefundPayment" in rejected.detail and PAYMENT_A in rejected.detail
    assert PAYMENT_B not in rejected.detail


def test_a_refund_key_reused_with_another_amount_is_a_conflict() -> None:
    conflict_of(refund(amount=400), refund(amount=600))
    conflict_of(refund(amount=400), refund(amount=None))  # "the rest" is another payload


def test_a_payment_key_reused_by_a_refund_is_a_conflict_and_the_reverse_too() -> None:
    pay = payment("key-1")
    own_refund = refund("key-1", payment_id=payment_id_for("key-1"))
    rejected = conflict_of(pay, own_refund)
    assert rejected.command_type == "RefundPayment"
    assert f"RequestPayment / payment {payment_id_for('key-1')}" in rejected.detail

    rejected = conflict_of(refund("key-1", payment_id=PAYMENT_A), pay)
    assert rejected.command_type == "RequestPayment"
    assert f"RefundPayment / payment {PAYMENT_A}" in rejected.detail


def test_a_payment_key_reused_with_another_payload_is_a_conflict() -> None:
    conflict_of(payment(), payment(amount=2_000))
    conflict_of(payment(), payment(metadata={"psp_simulation": "decline"}))


def test_the_same_fingerprint_under_another_type_or_payment_is_still_a_conflict() -> None:
    """Every field of the first use counts, not only the digest."""
    first = use_of(refund())
    for other in (msgspec.structs.replace(first, command_type="RequestPayment"),
                  msgspec.structs.replace(first, payment_id=PAYMENT_B)):
        assert isinstance(screened(other, refund()), CommandRejected)


def test_a_rejection_has_the_same_event_id_when_its_message_is_redelivered() -> None:
    first, second = conflict_of(refund(), refund(payment_id=PAYMENT_B)), conflict_of(
        refund(), refund(payment_id=PAYMENT_B))
    assert first.event_id == second.event_id == rejection_id_for("key-1", ORIGIN.place)
    later = screened(use_of(refund()), refund(payment_id=PAYMENT_B),
                     msgspec.structs.replace(ORIGIN, offset=42))
    assert isinstance(later, CommandRejected) and later.event_id != first.event_id


def test_a_batch_sees_its_own_first_use() -> None:
    """What the intake does: the first command of a batch registers the key, the next one
    in the same batch is checked against it."""
    changed: dict[str, KeyUse] = {}
    answers = []
    for command in (refund(), refund(payment_id=PAYMENT_B), refund()):
        decision = screened(changed.get(command.idempotency_key), command)
        if isinstance(decision, KeyUse):
            changed.setdefault(command.idempotency_key, decision)
        answers.append(type(decision).__name__)
    assert answers == ["KeyUse", "CommandRejected", "KeyUse"]
    assert changed == {"key-1": use_of(refund())}
