"""The payments' read model folds events in any order, any batching and any number of
repeats to the same view, never moving a status backwards (models/payment_view.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from uuid import uuid4

import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from hypothesis import given
from hypothesis import strategies as st

from infra.kafka_transport import withhold
from ledger.payment_views import LATEST, upper_bound
from models.codec import Unreadable
from models.events import (
    FailureReason,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    event_id_for,
)
from models.payment_view import (
    Fact,
    View,
    advances,
    fact_of,
    fold,
    read_fact,
    refunded_total,
    unknown,
)
from models.types import MAX_AMOUNT

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
PAYMENT = "pay-1"
TERMS = {"payment_id": PAYMENT, "idempotency_key": "key-1", "debtor_account_id": "alice",
         "creditor_account_id": "bob", "amount": 1_000, "currency": "EUR"}


def initiated(seconds: int = 0) -> PaymentInitiated:
    return PaymentInitiated(event_id=event_id_for(PAYMENT, "PaymentInitiated"),
                            occurred_at=T0 + timedelta(seconds=seconds), **TERMS)


def captured(seconds: int = 1) -> PaymentCaptured:
    return PaymentCaptured(event_id=event_id_for(PAYMENT, "PaymentCaptured"), psp_reference="psp-1",
                           transaction_id=uuid4(), occurred_at=T0 + timedelta(seconds=seconds), **TERMS)


def failed(seconds: int = 1) -> PaymentFailed:
    return PaymentFailed(event_id=event_id_for(PAYMENT, "PaymentFailed"), reason=FailureReason.PSP_DECLINED,
                         detail="declined", occurred_at=T0 + timedelta(seconds=seconds), **TERMS)


def refunded(amount: int, n: int = 1, seconds: int = 10) -> PaymentRefunded:
    return PaymentRefunded(event_id=event_id_for(f"{PAYMENT}/refund-{n}", "PaymentRefunded"),
                           payment_id=PAYMENT, idempotency_key=f"refund-{n}", amount=amount, currency="EUR",
                           transaction_id=uuid4(), occurred_at=T0 + timedelta(seconds=seconds))


def facts(*events: object) -> list[Fact]:
    found = [fact_of(event) for event in events]  # type: ignore[arg-type]
    assert all(isinstance(fact, Fact) for fact in found), found
    return found  # type: ignore[return-value]


def apply(*batches: list[Fact]) -> View:
    """Batches written one after the other, as the store does: each refund kept once."""
    view: View | None = None
    kept = []
    for batch in batches:
        kept += [fact.refund for fact in batch if fact.refund is not None]
        view = fold(view or unknown(PAYMENT, min(f.occurred_at for f in batch)), batch, kept)
    assert view is not None
    return view


# --- precedence ---------------------------------------------------------------------------------


def test_a_capture_read_before_its_initiation_stays_captured() -> None:
    view = apply(facts(captured()), facts(initiated()))
    assert view.status == "captured"
    assert view.terms is not None and view.terms.amount == 1_000
    assert (view.created_at, view.updated_at) == (T0, T0 + timedelta(seconds=1))


def test_an_initiated_payment_is_pending() -> None:
    assert apply(facts(initiated())).status == "pending"


def test_the_first_outcome_is_kept() -> None:
    first_failed = apply(facts(failed()), facts(captured()))
    assert (first_failed.status, first_failed.reason) == ("failed", "psp_declined")
    first_captured = apply(facts(captured()), facts(failed()))
    assert (first_captured.status, first_captured.reason) == ("captured", None)
    in_one_batch = apply(facts(initiated(), captured(), failed()))
    assert in_one_batch.status == "captured"


def test_refunds_move_a_capture_to_partially_refunded_then_refunded() -> None:
    partly = apply(facts(initiated(), captured()), facts(refunded(300, 1)))
    assert (partly.status, partly.refunded) == ("partially_refunded", 300)
    fully = apply(facts(initiated(), captured()), facts(refunded(300, 1)), facts(refunded(700, 2)))
    assert (fully.status, fully.refunded) == ("refunded", 1_000)


def test_a_redelivered_refund_counts_once() -> None:
    view = apply(facts(captured()), facts(refunded(300)), facts(refunded(300)),
                 facts(refunded(300), refunded(300)))
    assert (view.status, view.refunded) == ("partially_refunded", 300)
    assert refunded_total([fact.refund for fact in facts(refunded(300), refunded(300), refunded(5, 2))
                           if fact.refund]) == 305


def test_a_refund_read_first_proves_the_capture() -> None:
    only_refund = apply(facts(refunded(1_000)))
    assert only_refund.terms is None  # no account lists it yet
    assert only_refund.status == "partially_refunded"  # the amount refunded of is not known yet
    view = apply(facts(refunded(1_000)), facts(failed()), facts(initiated()))
    assert (view.status, view.refunded, view.reason) == ("refunded", 1_000, None)
    assert (view.created_at, view.updated_at) == (T0, T0 + timedelta(seconds=10))


def test_a_failed_payment_stays_failed_whatever_follows() -> None:
    view = apply(facts(failed()), facts(refunded(100)), facts(captured()))
    assert view.status == "failed"


@pytest.mark.parametrize(("old", "new", "allowed"), [
    ("pending", "captured", True), ("pending", "failed", True), ("pending", "refunded", True),
    ("captured", "partially_refunded", True), ("partially_refunded", "refunded", True),
    ("captured", "refunded", True), ("refunded", "refunded", True),
    ("captured", "pending", False), ("failed", "pending", False), ("captured", "failed", False),
    ("failed", "captured", False), ("failed", "refunded", False), ("refunded", "partially_refunded", False),
    ("partially_refunded", "captured", False),
])
def test_which_moves_advance(old: str, new: str, allowed: bool) -> None:
    assert advances(old, new) is allowed  # type: ignore[arg-type]


# Every event of a payment captured and refunded twice (the second time in full): any order,
# any split into batches, any repeats make the same view, and no step goes backwards.
HISTORY = [initiated(), captured(), refunded(400, 1), refunded(600, 2)]


@given(st.lists(st.integers(min_value=0, max_value=len(HISTORY) - 1), min_size=len(HISTORY), max_size=12)
       .filter(lambda picks: set(picks) == set(range(len(HISTORY)))),
       st.lists(st.integers(min_value=1, max_value=4), min_size=12, max_size=12))
def test_order_batching_and_repeats_change_nothing(picks: list[int], sizes: list[int]) -> None:
    stream = facts(*(HISTORY[pick] for pick in picks))
    batches, start = [], 0
    for size in sizes:
        if start < len(stream):
            batches.append(stream[start:start + size])
            start += size
    view: View | None = None
    kept = []
    for batch in batches:
        kept += [fact.refund for fact in batch if fact.refund is not None]
        before = view or unknown(PAYMENT, min(f.occurred_at for f in batch))
        view = fold(before, batch, kept)
        assert advances(before.status, view.status)
    assert view == apply(facts(*HISTORY))
    assert (view.status, view.refunded, view.created_at) == ("refunded", 1_000, T0)


# --- reading the events -------------------------------------------------------------------------


def test_each_event_reads_as_its_fact() -> None:
    read = read_fact(PaymentFailed.topic, failed().model_dump_json().encode())
    assert isinstance(read, Fact) and (read.outcome, read.reason, read.terms) == ("failed", "psp_declined",
                                                                                    facts(initiated())[0].terms)
    refund = read_fact(PaymentRefunded.topic, refunded(300).model_dump_json().encode())
    assert isinstance(refund, Fact) and refund.refund is not None and refund.refund.amount == 300
    assert refund.terms is None


def test_an_occurred_at_without_time_zone_is_utc() -> None:
    body = initiated().model_dump(mode="json") | {"occurred_at": "2025-03-01T12:00:00"}
    read = read_fact(PaymentInitiated.topic, PaymentInitiated(**body).model_dump_json().encode())
    assert isinstance(read, Fact) and read.occurred_at == T0


@pytest.mark.parametrize(("topic", "value"), [
    (PaymentCaptured.topic, b"{not json"),
    (PaymentCaptured.topic, None),
    (PaymentCaptured.topic, initiated().model_dump_json().encode()),  # another event's type
    (PaymentInitiated.topic, initiated().model_dump_json().encode().replace(b'"alice"', b'"al\\u0000ice"')),
    (PaymentInitiated.topic,
     initiated().model_dump_json().encode().replace(b"1000", str(MAX_AMOUNT + 1).encode())),
    (PaymentRefunded.topic, refunded(300).model_dump_json().encode().replace(b"300", b"-300")),
    ("fintech.events.AccountOpened", b"{}"),
])
def test_what_is_not_a_storable_event_is_unreadable(topic: str, value: bytes | None) -> None:
    assert isinstance(read_fact(topic, value), Unreadable)


# --- the listing's bound and the withheld acks --------------------------------------------------


def test_the_upper_bound_is_the_cursor_or_until_whichever_is_lower() -> None:
    assert upper_bound(None, None) == (LATEST, "")
    assert upper_bound(T0, None) == (T0, "")
    assert upper_bound(T0, (T0 + timedelta(seconds=1), "p")) == (T0, "")
    assert upper_bound(T0 + timedelta(seconds=1), (T0, "p")) == (T0, "p")
    assert upper_bound(T0, (T0, "p")) == (T0, "")  # until is exclusive


def test_a_withheld_message_is_never_counted_as_acknowledged() -> None:
    message = ConsumerMessage("t", 0, 5, 0.0, 0, [], None, b"", None, 0, 0, TP("t", 0))
    counted = []
    consumer = SimpleNamespace(_unacked_messages={message}, ack=counted.append)
    withhold(consumer, [message])
    assert message.ack(consumer) is False  # type: ignore[arg-type]
    assert counted == [] and consumer._unacked_messages == set()
