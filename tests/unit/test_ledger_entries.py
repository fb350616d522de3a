"""Journal entries: balanced by construction, deterministic ids, their outbox rows."""

from __future__ import annotations

from uuid import uuid4

import orjson
import pytest

from models.codec import dumps, event_headers
from models.ledger import (
    EntryKind,
    JournalEntry,
    Posting,
    UnbalancedEntry,
    assert_balanced,
    funding_entry,
    funding_postings,
    outbox,
    transaction_id_for,
    transfer,
)
from models.owner import funded_event
from models.payment import payment_id_for, refund_id_for
from models.steps import FundAccountOp, Funding, Origin
from models.types import MAX_AMOUNT


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



def test_a_funding_entry_credits_the_account_against_settlement_and_carries_its_event() -> None:
    funding = Funding("fund-1", "alice", 500, "EUR", "fp")
    event = funded_event(FundAccountOp(origin=Origin("fintech.accounts.commands", 0, 1), funding=funding))
    made = funding_entry(funding, event)
    assert made.transaction_id == event.transaction_id == transaction_id_for(EntryKind.FUNDING, "fund-1")
    assert {(p.account_id, p.amount) for p in made.postings} == {("settlement:EUR", -500), ("alice", 500)}
    [message] = made.outbox
    assert (message.event_id, message.topic, message.key) == (event.event_id, event.topic, "alice")
    assert message.value == dumps(event) and orjson.loads(message.value)["amount"] == 500
    assert list(message.headers) == event_headers(event)


def test_an_outbox_row_is_the_event_as_published() -> None:
    event = funded_event(FundAccountOp(origin=Origin("t", 0, 1), funding=Funding("k", "a", 1, "USD", "fp")))
    assert outbox(event).value == dumps(event)


def test_capture_and_refunds_of_one_payment_have_different_transaction_ids() -> None:
    payment_id = payment_id_for("key-1")
    ids = {transaction_id_for(EntryKind.CAPTURE, payment_id),
           transaction_id_for(EntryKind.REFUND, refund_id_for(payment_id, "r-1")),
           transaction_id_for(EntryKind.REFUND, refund_id_for(payment_id, "r-2"))}
    assert len(ids) == 3
