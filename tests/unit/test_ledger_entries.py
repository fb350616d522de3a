"""Journal entries: balanced by construction, deterministic ids, outbox and follow-ups."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import orjson
import pytest

from models.codec import dumps
from models.commands import FundAccount, RequestPayment
from models.events import AccountFunded, CommandRejected, PaymentCaptured, PaymentRefunded, RejectionReason
from models.ledger import (
    EntryKind,
    JournalEntry,
    Posting,
    UnbalancedEntry,
    assert_balanced,
    funding_postings,
    transaction_id_for,
    transfer,
)
from models.ledger_flow import conflict_for, entry_for, follow_ups
from models.outputs import Dispatch, Publish
from models.payment import payment_id_for, refund_id_for
from models.steps import (
    ApplyPosting,
    Origin,
    PaymentPosted,
    PostCapture,
    PostFunding,
    PostRefund,
    RefundPosted,
)
from models.types import MAX_AMOUNT

ORIGIN = Origin(topic="ledger-steps", partition=2, offset=40)
PAYMENT_ID = payment_id_for("key-1")


def request(amount: int = 1000, **changes: Any) -> RequestPayment:
    body: dict[str, Any] = {
        "idempotency_key": "key-1",
        "debtor_account_id": "alice",
        "creditor_account_id": "bob",
        "amount": amount,
        "currency": "USD",
    }
    return RequestPayment.model_validate({**body, **changes})


def capture_step(amount: int = 1000) -> PostCapture:
    return PostCapture(
        origin=ORIGIN,
        payment_id=PAYMENT_ID,
        reservation_id=PAYMENT_ID,
        psp_reference="psp-1",
        payment=request(amount),
        authorized_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def funding_step(amount: int = 500, account_id: str = "alice") -> PostFunding:
    command = FundAccount(idempotency_key="fund-1", account_id=account_id, amount=amount, currency="EUR")
    return PostFunding(origin=ORIGIN, fingerprint=command.fingerprint(), command=command)


def refund_step(amount: int = 300, key: str = "r-1", payment: RequestPayment | None = None) -> PostRefund:
    payment = payment or request()
    return PostRefund(
        origin=ORIGIN,
        payment_id=payment_id_for(payment.idempotency_key),
        reservation_id=refund_id_for(payment_id_for(payment.idempotency_key), key),
        refund_key=key,
        amount=amount,
        payment=payment,
    )


def legs(entry: JournalEntry) -> set[tuple[str, int, str]]:
    return {(p.account_id, p.amount, p.currency) for p in entry.postings}


def entry(postings: tuple[Posting, ...]) -> JournalEntry:
    return JournalEntry(
        transaction_id=uuid4(),
        kind=EntryKind.CAPTURE,
        idempotency_key="k",
        fingerprint="f",
        payment_id=None,
        postings=postings,
    )


# --- assert_balanced -------------------------------------------------------------------------


def test_balanced_legs_pass() -> None:
    assert_balanced(transfer("a", "b", 10, "USD"))
    assert_balanced([Posting("a", -10, "USD"), Posting("b", 4, "USD"), Posting("c", 6, "USD")])


def test_unbalanced_legs_are_refused() -> None:
    with pytest.raises(UnbalancedEntry, match="do not sum to zero"):
        assert_balanced([Posting("a", -10, "USD"), Posting("b", 9, "USD")])


def test_a_single_leg_is_refused() -> None:
    with pytest.raises(UnbalancedEntry, match="at least two legs"):
        assert_balanced([Posting("a", 10, "USD")])


def test_no_legs_are_refused() -> None:
    with pytest.raises(UnbalancedEntry):
        assert_balanced([])


def test_zero_amount_legs_are_refused() -> None:
    with pytest.raises(UnbalancedEntry, match="out of range"):
        assert_balanced([Posting("a", 0, "USD"), Posting("b", 0, "USD")])


def test_legs_beyond_the_maximum_amount_are_refused() -> None:
    with pytest.raises(UnbalancedEntry, match="out of range"):
        assert_balanced(transfer("a", "b", MAX_AMOUNT + 1, "USD"))


def test_legs_must_balance_per_currency() -> None:
    with pytest.raises(UnbalancedEntry, match="do not sum to zero"):
        assert_balanced([Posting("a", -10, "USD"), Posting("b", 10, "EUR")])


def test_journal_entry_refuses_unbalanced_postings_at_construction() -> None:
    with pytest.raises(UnbalancedEntry):
        entry((Posting("a", -10, "USD"), Posting("b", 11, "USD")))


def test_journal_entry_accepts_balanced_postings() -> None:
    assert len(entry(transfer("a", "b", 1, "USD")).postings) == 2


def test_funding_debits_the_settlement_account_of_the_currency() -> None:
    assert set(funding_postings("alice", 500, "EUR")) == {
        Posting("settlement:EUR", -500, "EUR"),
        Posting("alice", 500, "EUR"),
    }


def test_transaction_id_depends_on_kind_and_subject() -> None:
    assert transaction_id_for(EntryKind.CAPTURE, "x") == transaction_id_for(EntryKind.CAPTURE, "x")
    assert transaction_id_for(EntryKind.CAPTURE, "x") != transaction_id_for(EntryKind.REFUND, "x")
    assert transaction_id_for(EntryKind.CAPTURE, "x") != transaction_id_for(EntryKind.CAPTURE, "y")


# --- entry_for -------------------------------------------------------------------------------


def test_capture_entry_moves_the_amount_from_debtor_to_creditor() -> None:
    built, event = entry_for(capture_step(1000))
    assert legs(built) == {("alice", -1000, "USD"), ("bob", 1000, "USD")}
    assert (built.kind, built.payment_id, built.idempotency_key) == (EntryKind.CAPTURE, PAYMENT_ID, "key-1")
    assert isinstance(event, PaymentCaptured)
    assert (event.transaction_id, event.psp_reference, event.amount) == (built.transaction_id, "psp-1", 1000)


def test_funding_entry_credits_the_account_against_settlement() -> None:
    step = funding_step(500)
    built, event = entry_for(step)
    assert legs(built) == {("settlement:EUR", -500, "EUR"), ("alice", 500, "EUR")}
    assert (built.kind, built.payment_id, built.fingerprint) == (EntryKind.FUNDING, None, step.fingerprint)
    assert isinstance(event, AccountFunded) and event.transaction_id == built.transaction_id


def test_refund_entry_moves_the_amount_back_from_creditor_to_debtor() -> None:
    built, event = entry_for(refund_step(300))
    assert legs(built) == {("bob", -300, "USD"), ("alice", 300, "USD")}
    assert (built.kind, built.idempotency_key, built.payment_id) == (EntryKind.REFUND, "r-1", PAYMENT_ID)
    assert isinstance(event, PaymentRefunded)
    assert (event.amount, event.transaction_id) == (300, built.transaction_id)


@pytest.mark.parametrize("make", [capture_step, funding_step, refund_step])
def test_entries_are_deterministic(make: Any) -> None:
    first, first_event = entry_for(make())
    again, again_event = entry_for(make())
    assert (first.transaction_id, first.fingerprint) == (again.transaction_id, again.fingerprint)
    assert first_event.event_id == again_event.event_id


@pytest.mark.parametrize("make", [capture_step, funding_step, refund_step])
def test_entry_carries_one_outbox_message_with_the_event_json(make: Any) -> None:
    built, event = entry_for(make())
    (message,) = built.outbox
    assert (message.event_id, message.topic, message.key) == (event.event_id, event.topic, event.key)
    assert message.value == dumps(event)
    assert orjson.loads(message.value)["event_type"] == event.event_type
    assert dict(message.headers)["ce_id"] == str(event.event_id).encode()


def test_capture_and_refund_of_one_payment_have_different_transaction_ids() -> None:
    assert entry_for(capture_step())[0].transaction_id != entry_for(refund_step())[0].transaction_id


def test_two_refunds_of_one_payment_have_different_transaction_ids() -> None:
    first, _ = entry_for(refund_step(100, key="r-1"))
    second, _ = entry_for(refund_step(100, key="r-2"))
    assert first.transaction_id != second.transaction_id


def test_refund_key_reused_on_another_payment_is_not_a_silent_duplicate() -> None:
    first, _ = entry_for(refund_step(300, key="r-1"))
    other_payment = request(idempotency_key="key-2", creditor_account_id="carol")
    other, _ = entry_for(refund_step(50, key="r-1", payment=other_payment))
    assert legs(first) != legs(other)
    assert (first.transaction_id, first.fingerprint) != (other.transaction_id, other.fingerprint)


# --- follow_ups ------------------------------------------------------------------------------


def applied(outputs: list[Any]) -> list[tuple[str, str, int, str | None]]:
    return [
        (o.key, o.step.account_id, o.step.amount, o.step.reservation_id)
        for o in outputs
        if isinstance(o, Dispatch) and isinstance(o.step, ApplyPosting)
    ]


def test_capture_follow_ups_settle_the_debtor_credit_the_creditor_and_tell_the_payment() -> None:
    step = capture_step(1000)
    built, event = entry_for(step)
    outputs = follow_ups(step, built, event, ORIGIN)
    assert applied(outputs) == [("alice", "alice", -1000, PAYMENT_ID), ("bob", "bob", 1000, None)]
    news = outputs[-1]
    assert isinstance(news, Dispatch) and (news.route, news.key) == ("payment", PAYMENT_ID)
    assert isinstance(news.step, PaymentPosted) and news.step.event == event
    assert news.step.authorized_at == step.authorized_at  # the approval reaches the payment with it


def test_follow_ups_carry_the_origin_and_transaction_of_the_first_write() -> None:
    step = capture_step()
    built, event = entry_for(step)
    first_write = Origin(topic="ledger-steps", partition=2, offset=3)
    outputs = follow_ups(step, built, event, first_write)
    assert {o.step.origin for o in outputs} == {first_write}
    assert {o.step.transaction_id for o in outputs if isinstance(o.step, ApplyPosting)} == {
        str(built.transaction_id)
    }


def test_funding_follow_up_credits_only_the_account() -> None:
    step = funding_step(500)
    built, event = entry_for(step)
    assert applied(follow_ups(step, built, event, ORIGIN)) == [("alice", "alice", 500, None)]


def test_refund_follow_ups_settle_the_creditor_credit_the_debtor_and_tell_the_payment() -> None:
    step = refund_step(300)
    built, event = entry_for(step)
    outputs = follow_ups(step, built, event, ORIGIN)
    assert applied(outputs) == [
        ("bob", "bob", -300, refund_id_for(PAYMENT_ID, "r-1")),
        ("alice", "alice", 300, None),
    ]
    assert isinstance(outputs[-1].step, RefundPosted) and outputs[-1].step.event == event


@pytest.mark.parametrize("make", [capture_step, funding_step, refund_step])
def test_follow_up_legs_mirror_the_entry(make: Any) -> None:
    step = make()
    built, event = entry_for(step)
    moved = Counter(
        {account_id: amount for _, account_id, amount, _ in applied(follow_ups(step, built, event, ORIGIN))}
    )
    on_accounts = Counter(
        {p.account_id: p.amount for p in built.postings if not p.account_id.startswith("settlement:")}
    )
    assert moved == on_accounts


def test_funding_conflict_is_rejected_by_idempotency_key() -> None:
    (output,) = conflict_for(funding_step())
    assert isinstance(output, Publish) and isinstance(output.event, CommandRejected)
    assert (output.event.reason, output.event.idempotency_key, output.event.account_id) == (
        RejectionReason.IDEMPOTENCY_CONFLICT,
        "fund-1",
        "alice",
    )
