"""The ledger writer's pure half: journal entries from ledger steps, follow-ups from results.

A committed entry is followed by the legs applied on each account's owner and the
news sent to the payment's owner. For a duplicate (the entry was committed before),
the follow-ups carry the origin of the first write, so an owner that applied them
already recognises them; a duplicate command with another payload is refused.
"""

from __future__ import annotations

from models.account_flow import rejected
from models.codec import dumps, event_headers
from models.events import (
    AccountFunded,
    Event,
    PaymentCaptured,
    PaymentRefunded,
    RejectionReason,
    event_id_for,
)
from models.ledger import (
    EntryKind,
    JournalEntry,
    OutboxMessage,
    funding_postings,
    transaction_id_for,
    transfer,
)
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_facts
from models.steps import (
    ApplyPosting,
    LedgerStep,
    Origin,
    PaymentPosted,
    PostCapture,
    PostFunding,
    PostRefund,
    RefundPosted,
)


def outbox(event: Event) -> OutboxMessage:
    return OutboxMessage(event_id=event.event_id, topic=event.topic, key=event.key,
                         value=dumps(event), headers=tuple(event_headers(event)))


def captured_event(step: PostCapture) -> PaymentCaptured:
    return PaymentCaptured(
        event_id=event_id_for(step.payment_id, "PaymentCaptured"),
        **payment_facts(step.payment_id, step.payment), psp_reference=step.psp_reference,
        transaction_id=transaction_id_for(EntryKind.CAPTURE, step.payment_id),
    )


def funded_event(step: PostFunding) -> AccountFunded:
    command = step.command
    return AccountFunded(
        event_id=event_id_for(command.idempotency_key, "AccountFunded"), account_id=command.account_id,
        idempotency_key=command.idempotency_key, amount=command.amount, currency=command.currency,
        transaction_id=transaction_id_for(EntryKind.FUNDING, command.idempotency_key),
    )


def refunded_event(step: PostRefund) -> PaymentRefunded:
    return PaymentRefunded(
        event_id=event_id_for(step.reservation_id, "PaymentRefunded"),
        payment_id=step.payment_id, idempotency_key=step.refund_key, amount=step.amount,
        currency=step.payment.currency,
        transaction_id=transaction_id_for(EntryKind.REFUND, step.reservation_id),
    )


def entry_for(step: LedgerStep) -> tuple[JournalEntry, Event]:
    match step:
        case PostCapture():
            event: Event = captured_event(step)
            payment = step.payment
            return JournalEntry(
                transaction_id=event.transaction_id, kind=EntryKind.CAPTURE,
                idempotency_key=payment.idempotency_key, fingerprint=step.payment_id,
                payment_id=step.payment_id,
                postings=transfer(payment.debtor_account_id, payment.creditor_account_id,
                                  payment.amount, payment.currency),
                outbox=(outbox(event),),
            ), event
        case PostFunding():
            event = funded_event(step)
            command = step.command
            return JournalEntry(
                transaction_id=event.transaction_id, kind=EntryKind.FUNDING,
                idempotency_key=command.idempotency_key, fingerprint=step.fingerprint,
                payment_id=None,
                postings=funding_postings(command.account_id, command.amount, command.currency),
                outbox=(outbox(event),),
            ), event
        case PostRefund():
            event = refunded_event(step)
            payment = step.payment
            return JournalEntry(
                transaction_id=event.transaction_id, kind=EntryKind.REFUND,
                idempotency_key=step.refund_key, fingerprint=f"{step.reservation_id}/{step.amount}",
                payment_id=step.payment_id,
                postings=transfer(payment.creditor_account_id, payment.debtor_account_id,
                                  step.amount, payment.currency),
                outbox=(outbox(event),),
            ), event
    raise AssertionError(f"unhandled ledger step {step!r}")


def follow_ups(step: LedgerStep, entry: JournalEntry, event: Event, origin: Origin) -> list[Output]:
    """What happens once `entry` is committed; `origin` is that of its first write."""
    transaction_id = str(entry.transaction_id)

    def leg(account_id: str, amount: int, reservation_id: str | None = None) -> Dispatch:
        return Dispatch("account", account_id, ApplyPosting(
            origin=origin, account_id=account_id, transaction_id=transaction_id, amount=amount,
            reservation_id=reservation_id))

    match step:
        case PostCapture():
            assert isinstance(event, PaymentCaptured)
            p = step.payment
            return [leg(p.debtor_account_id, -p.amount, step.reservation_id),
                    leg(p.creditor_account_id, p.amount),
                    Dispatch("payment", step.payment_id,
                             PaymentPosted(origin=origin, payment_id=step.payment_id, event=event,
                                           authorized_at=step.authorized_at))]
        case PostFunding():
            return [leg(step.command.account_id, step.command.amount)]
        case PostRefund():
            assert isinstance(event, PaymentRefunded)
            p = step.payment
            return [leg(p.creditor_account_id, -step.amount, step.reservation_id),
                    leg(p.debtor_account_id, step.amount),
                    Dispatch("payment", step.payment_id,
                             RefundPosted(origin=origin, payment_id=step.payment_id, event=event))]
    raise AssertionError(f"unhandled ledger step {step!r}")


def conflict_for(step: LedgerStep) -> list[Output]:
    """The entry exists with another payload: only a FundAccount key can collide this way."""
    if not isinstance(step, PostFunding):
        return []
    command = step.command
    detail = f"idempotency key {command.idempotency_key!r} was used before with a different payload"
    return [Publish(rejected("FundAccount", RejectionReason.IDEMPOTENCY_CONFLICT, detail,
                             "idempotency_key", step.origin, account_id=command.account_id,
                             idempotency_key=command.idempotency_key))]
