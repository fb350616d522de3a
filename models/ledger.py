"""Double-entry journal entries: built balanced, asserted balanced, immutable.

Every movement of money is one JournalEntry: legs whose signed amounts (credit +,
debit -) sum to zero per currency. The transaction id is derived from what the
movement is for, so a retried or redelivered movement always has the same id and
the ledger's unique key absorbs it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from uuid import UUID, uuid5

from models.codec import dumps, event_headers
from models.events import AccountFunded, Event
from models.steps import Funding
from models.types import MAX_AMOUNT, settlement_account

TRANSACTION_NAMESPACE = UUID("0b7e8a52-2a44-4c55-9f0e-3d1f2f8c6a10")


class EntryKind(StrEnum):
    FUNDING = "funding"
    CAPTURE = "capture"
    REFUND = "refund"


class UnbalancedEntry(ValueError):
    """A journal entry whose legs do not sum to zero: a bug, never bad input."""


@dataclass(frozen=True, slots=True)
class Posting:
    account_id: str
    amount: int  # signed minor units: credit +, debit -
    currency: str


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event to publish once the entry that produced it is committed."""

    event_id: UUID
    topic: str
    key: str
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class JournalEntry:
    transaction_id: UUID
    kind: EntryKind
    idempotency_key: str
    fingerprint: str
    payment_id: str | None
    postings: tuple[Posting, ...]
    outbox: tuple[OutboxMessage, ...] = field(default=())

    def __post_init__(self) -> None:
        assert_balanced(self.postings)


def assert_balanced(postings: tuple[Posting, ...] | list[Posting]) -> None:
    if len(postings) < 2:
        raise UnbalancedEntry(f"an entry needs at least two legs, got {len(postings)}")
    totals: Counter[str] = Counter()
    for posting in postings:
        if posting.amount == 0 or abs(posting.amount) > MAX_AMOUNT:
            raise UnbalancedEntry(f"leg amount {posting.amount} out of range")
        totals[posting.currency] += posting.amount
    unbalanced = {currency: total for currency, total in totals.items() if total != 0}
    if unbalanced:
        raise UnbalancedEntry(f"legs do not sum to zero: {unbalanced}")


def transaction_id_for(kind: EntryKind, subject: str) -> UUID:
    return uuid5(TRANSACTION_NAMESPACE, f"{kind}/{subject}")


def transfer(debit_account: str, credit_account: str, amount: int, currency: str) -> tuple[Posting, ...]:
    return (
        Posting(debit_account, -amount, currency),
        Posting(credit_account, amount, currency),
    )


def funding_postings(account_id: str, amount: int, currency: str) -> tuple[Posting, ...]:
    """Money arriving from outside: the settlement account goes negative by what came in."""
    return transfer(settlement_account(currency), account_id, amount, currency)


def outbox(event: Event) -> OutboxMessage:
    """The event as the outbox keeps it: published once its entry is committed."""
    return OutboxMessage(event_id=event.event_id, topic=event.topic, key=event.key, value=dumps(event),
                         headers=tuple(event_headers(event)))


def funding_entry(funding: Funding, event: AccountFunded) -> JournalEntry:
    return JournalEntry(
        transaction_id=event.transaction_id, kind=EntryKind.FUNDING, idempotency_key=funding.idempotency_key,
        fingerprint=funding.fingerprint, payment_id=None,
        postings=funding_postings(funding.account_id, funding.amount, funding.currency),
        outbox=(outbox(event),),
    )
