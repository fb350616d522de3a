"""A payment's record and the pure decisions taken on it (it lives at the debtor's home).

The record is the payment's memory: the fingerprint of the command that created it (so
a repeat is recognised and a conflict refused), where it is in the flow (its provider
call above all), its one outcome, as published, and its refunds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import NAMESPACE_URL, uuid5

import msgspec

from models.events import (
    FailureReason,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    RefundFailed,
    RefundFailureReason,
    event_id_for,
    now,
)
from models.ledger import EntryKind, transaction_id_for
from models.steps import Origin, PaymentRequest, Refusal

PAYMENT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:payments-service:payment")

PaymentStatus = Literal["pending", "captured", "failed", "refunded", "partially_refunded"]
RefundStatus = Literal["pending", "refunded", "failed"]
PspResult = Literal["in_flight", "approved", "declined", "gave_up"]

# In the stored JSON of a payment whose provider call runs: the scan after a table
# recovery finds them without parsing the other records.
IN_FLIGHT_MARK = b'"psp":"in_flight"'


# An event field that holds no event yet: msgspec reads a Raw field only as a plain Raw.
NO_EVENT = msgspec.Raw(b"null")


def has_event(raw: msgspec.Raw) -> bool:
    return bytes(raw) != b"null"


def payment_id_for(idempotency_key: str) -> str:
    """The same idempotency key always names the same payment."""
    return str(uuid5(PAYMENT_NAMESPACE, idempotency_key))


def refund_id_for(payment_id: str, idempotency_key: str) -> str:
    """Refund keys live in their payment's record, so a refund is named within its payment."""
    return str(uuid5(PAYMENT_NAMESPACE, f"refund/{payment_id}/{idempotency_key}"))


class HistoryEntry(msgspec.Struct, frozen=True, array_like=True):
    step: str
    at: datetime
    detail: str | None = None


class RefundRecord(msgspec.Struct, frozen=True, kw_only=True):
    refund_id: str
    fingerprint: str
    amount: int
    status: RefundStatus = "pending"
    outcome: msgspec.Raw = NO_EVENT  # the PaymentRefunded or RefundFailed, as published


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    payment_id: str
    fingerprint: str
    request: PaymentRequest
    status: PaymentStatus = "pending"
    reason: str | None = None
    detail: str | None = None
    psp: PspResult | None = None
    psp_reference: str | None = None
    requested_at: Origin | None = None  # the step that started the provider call
    outcome: msgspec.Raw = NO_EVENT  # the PaymentCaptured or PaymentFailed, as published
    history: tuple[HistoryEntry, ...] = ()
    refunds: dict[str, RefundRecord] = {}
    refunded_total: int = 0
    refund_pending: int = 0

    @property
    def decided(self) -> bool:
        return has_event(self.outcome)

    @property
    def refundable(self) -> int:
        return self.request.amount - self.refunded_total - self.refund_pending

    def noted(self, step: str, note: str | None = None, *, at: datetime | None = None,
              **changes: object) -> Payment:
        entry = HistoryEntry(step, at or now(), note)
        return msgspec.structs.replace(self, history=(*self.history, entry), **changes)


def screen(request: PaymentRequest, risk_max_amount: int) -> Refusal | None:
    """Checks that need no account: they fail a payment before anything is held."""
    if request.debtor_account_id == request.creditor_account_id:
        return Refusal(FailureReason.SAME_ACCOUNT.value, "debtor and creditor are the same account")
    if request.amount > risk_max_amount:
        return Refusal(FailureReason.RISK_REJECTED.value,
                       f"amount {request.amount} exceeds the per-payment maximum {risk_max_amount}")
    return None


# --- the events about a payment ------------------------------------------------------------


def payment_facts(payment_id: str, request: PaymentRequest) -> dict[str, object]:
    return {
        "payment_id": payment_id,
        "idempotency_key": request.idempotency_key,
        "debtor_account_id": request.debtor_account_id,
        "creditor_account_id": request.creditor_account_id,
        "amount": request.amount,
        "currency": request.currency,
    }


def initiated_event(payment: Payment) -> PaymentInitiated:
    return PaymentInitiated(event_id=event_id_for(payment.payment_id, "PaymentInitiated"),
                            **payment_facts(payment.payment_id, payment.request))


def authorized_event(payment: Payment, psp_reference: str) -> PaymentAuthorized:
    return PaymentAuthorized(event_id=event_id_for(payment.payment_id, "PaymentAuthorized"),
                             **payment_facts(payment.payment_id, payment.request),
                             psp_reference=psp_reference)


def captured_event(payment: Payment, psp_reference: str) -> PaymentCaptured:
    return PaymentCaptured(event_id=event_id_for(payment.payment_id, "PaymentCaptured"),
                           **payment_facts(payment.payment_id, payment.request),
                           psp_reference=psp_reference,
                           transaction_id=transaction_id_for(EntryKind.CAPTURE, payment.payment_id))


def failed_event(payment: Payment, refusal: Refusal, psp_reference: str | None) -> PaymentFailed:
    return PaymentFailed(event_id=event_id_for(payment.payment_id, "PaymentFailed"),
                         **payment_facts(payment.payment_id, payment.request),
                         psp_reference=psp_reference, reason=FailureReason(refusal.reason),
                         detail=refusal.detail)


def refunded_event(payment_id: str, refund_id: str, refund_key: str, amount: int, currency: str,
                   parties: tuple[str, str]) -> PaymentRefunded:
    """`parties`: the payment's (debtor, creditor)."""
    return PaymentRefunded(event_id=event_id_for(refund_id, "PaymentRefunded"), payment_id=payment_id,
                           idempotency_key=refund_key, amount=amount, currency=currency,
                           transaction_id=transaction_id_for(EntryKind.REFUND, refund_id),
                           debtor_account_id=parties[0], creditor_account_id=parties[1])


def refund_failed_event(payment_id: str, refund_key: str, amount: int | None, refusal: Refusal,
                        payment: Payment | None) -> RefundFailed:
    refund_id = refund_id_for(payment_id, refund_key)
    request = payment.request if payment is not None else None
    return RefundFailed(event_id=event_id_for(refund_id, "RefundFailed"), payment_id=payment_id,
                        idempotency_key=refund_key, amount=amount,
                        reason=RefundFailureReason(refusal.reason), detail=refusal.detail,
                        debtor_account_id=request.debtor_account_id if request else None,
                        creditor_account_id=request.creditor_account_id if request else None)


# --- refunds ----------------------------------------------------------------------------------


def refund_refusal(payment: Payment | None, payment_id: str, amount: int | None) -> Refusal | None:
    if payment is None:
        return Refusal(RefundFailureReason.UNKNOWN_PAYMENT.value, f"payment {payment_id} does not exist")
    if payment.status not in ("captured", "partially_refunded", "refunded"):
        return Refusal(RefundFailureReason.PAYMENT_NOT_CAPTURED.value,
                       f"payment is {payment.status}, not captured")
    wanted = amount if amount is not None else payment.refundable
    if wanted <= 0 or wanted > payment.refundable:
        return Refusal(RefundFailureReason.AMOUNT_EXCEEDS_REFUNDABLE.value,
                       f"refund of {wanted} exceeds the refundable {payment.refundable} "
                       f"(captured {payment.request.amount}, refunded {payment.refunded_total}, "
                       f"in progress {payment.refund_pending})")
    return None


def with_refund(payment: Payment, key: str, refund: RefundRecord, **changes: object) -> Payment:
    return msgspec.structs.replace(payment, refunds={**payment.refunds, key: refund}, **changes)
