"""The payments' read model (CQRS): what the public events say about a payment, folded.

The projection (agents/projection.py) reads PaymentInitiated, PaymentCaptured,
PaymentFailed and PaymentRefunded from their topics: at least once each, and in no order
across topics (a capture can be read before its initiation, a refund before both). So a
view is a fold that neither the order nor repeats change:

- its status never moves backwards: pending < captured | failed, and captured <
  partially_refunded < refunded (`advances`);
- the first outcome read (captured or failed) is kept; a refund proves a capture;
- the refunded total is the sum of the payment's distinct refund events, by event_id
  (the store keeps each refund once and hands them all to `refunded_total`);
- created_at is the earliest occurred_at seen, updated_at the latest.

A payment known only by its refunds has no terms yet (who pays whom, how much): its view
exists so that its refunds count once the rest arrives, and no account lists it until then.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, get_args
from uuid import UUID

from models.codec import Unreadable
from models.events import Event, PaymentCaptured, PaymentFailed, PaymentInitiated, PaymentRefunded
from models.payment import PaymentStatus
from models.types import MAX_AMOUNT

Outcome = Literal["captured", "failed"]

EVENTS = (PaymentInitiated, PaymentCaptured, PaymentFailed, PaymentRefunded)
EVENT_OF_TOPIC: dict[str, type[Event]] = {event.topic: event for event in EVENTS}
TOPICS: tuple[str, ...] = tuple(EVENT_OF_TOPIC)
STATUSES: frozenset[str] = frozenset(get_args(PaymentStatus))
# How far along a status is. Captured and failed share a rank: neither becomes the other.
RANK: dict[str, int] = {"pending": 0, "captured": 1, "failed": 1, "partially_refunded": 2, "refunded": 3}


@dataclass(frozen=True, slots=True)
class Terms:
    """What the payment is: the same in every event about it but its refunds."""

    idempotency_key: str
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str


@dataclass(frozen=True, slots=True)
class Refund:
    event_id: UUID
    payment_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class Fact:
    """What one event says about its payment."""

    payment_id: str
    occurred_at: datetime
    terms: Terms | None = None  # None for a refund
    outcome: Outcome | None = None
    reason: str | None = None  # a failure's
    refund: Refund | None = None


@dataclass(frozen=True, slots=True)
class View:
    payment_id: str
    terms: Terms | None
    status: PaymentStatus
    reason: str | None
    refunded: int
    created_at: datetime
    updated_at: datetime


def unknown(payment_id: str, at: datetime) -> View:
    """A payment first seen: nothing known but its id, and when (the store's first row of it)."""
    return View(payment_id, None, "pending", None, 0, at, at)


# --- reading events ---------------------------------------------------------------------------


def read_fact(topic: str, value: bytes | None) -> Fact | Unreadable:
    """The fact a message of one of TOPICS holds, or why it holds none (never an exception:
    an agent that raised would have its batch acked)."""
    model = EVENT_OF_TOPIC.get(topic)
    if model is None:
        return Unreadable(f"{topic} is not a topic of the payments' view")
    if value is None:
        return Unreadable("no value")
    try:
        event = model.model_validate_json(value)
    except ValueError as error:  # pydantic's ValidationError, invalid JSON included
        return Unreadable(f"not a {model.__name__}: {str(error)[:300]}")
    return fact_of(event)


def fact_of(event: Event) -> Fact | Unreadable:
    problem = _unstorable(event)
    if problem is not None:
        return Unreadable(problem)
    at = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
    if isinstance(event, PaymentRefunded):
        return Fact(event.payment_id, at, refund=Refund(event.event_id, event.payment_id, event.amount))
    assert isinstance(event, PaymentInitiated | PaymentCaptured | PaymentFailed)
    terms = Terms(event.idempotency_key, event.debtor_account_id, event.creditor_account_id, event.amount,
                  event.currency)
    if isinstance(event, PaymentFailed):
        return Fact(event.payment_id, at, terms, "failed", event.reason.value)
    return Fact(event.payment_id, at, terms, "captured" if isinstance(event, PaymentCaptured) else None)


def _unstorable(event: Event) -> str | None:
    """What PostgreSQL would refuse (a permanent error, which would stop the projection at
    this event for ever): an amount outside bigint or not positive, a NUL in a text."""
    amount = getattr(event, "amount", 1)
    if not 1 <= amount <= MAX_AMOUNT:
        return f"amount {amount} is not between 1 and {MAX_AMOUNT}"
    if any(isinstance(value, str) and "\x00" in value for value in vars(event).values()):
        return "a text field holds a NUL character"
    return None


# --- folding ----------------------------------------------------------------------------------


def outcome_of(status: PaymentStatus) -> Outcome | None:
    if status == "pending":
        return None
    return "failed" if status == "failed" else "captured"


def status_of(outcome: Outcome | None, refunded: int, amount: int | None) -> PaymentStatus:
    """The status that an outcome and a refunded total make (`amount`: None while unknown)."""
    if outcome == "failed":
        return "failed"  # the first outcome is kept, even against a refund (never seen)
    if refunded <= 0:
        return outcome or "pending"
    # A refund proves the capture, read or not.
    return "refunded" if amount is not None and refunded >= amount else "partially_refunded"


def advances(old: PaymentStatus, new: PaymentStatus) -> bool:
    """Whether a view may go from `old` to `new`: forward only, never out of failed, never
    from one outcome to the other."""
    if old == new:
        return True
    if old == "failed" or new == "failed":
        return old == "pending"
    return RANK[new] > RANK[old]


def distinct_refunds(refunds: Iterable[Refund]) -> list[Refund]:
    """Each refund event once (a redelivered one has the same event_id), first seen first."""
    seen: dict[UUID, Refund] = {}
    for refund in refunds:
        seen.setdefault(refund.event_id, refund)
    return list(seen.values())


def refunded_total(refunds: Iterable[Refund]) -> int:
    """The sum of the distinct refunds; capped so that it always fits the bigint column."""
    return min(MAX_AMOUNT, sum(refund.amount for refund in distinct_refunds(refunds)))


def by_payment(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    """The facts of each payment, in the order read; payments in id order (the order the
    store locks their rows in, so that two batches never wait for each other in a cycle)."""
    grouped: dict[str, list[Fact]] = {}
    for fact in facts:
        grouped.setdefault(fact.payment_id, []).append(fact)
    return dict(sorted(grouped.items()))


def fold(view: View, facts: Sequence[Fact], refunds: Iterable[Refund]) -> View:
    """`view` with what `facts` say (in their order: the first outcome wins) and every refund
    known of the payment (`refunds`, repeats included: each counts once)."""
    terms, outcome, reason = view.terms, outcome_of(view.status), view.reason
    for fact in facts:
        assert fact.payment_id == view.payment_id, (fact.payment_id, view.payment_id)
        terms = terms or fact.terms
        if outcome is None and fact.outcome is not None:
            outcome, reason = fact.outcome, fact.reason
    refunded = max(view.refunded, refunded_total(refunds))
    times = [view.created_at, view.updated_at, *(fact.occurred_at for fact in facts)]
    folded = replace(view, terms=terms, status=status_of(outcome, refunded, terms.amount if terms else None),
                     reason=reason, refunded=refunded, created_at=min(times), updated_at=max(times))
    assert advances(view.status, folded.status), (view, folded)
    return folded
