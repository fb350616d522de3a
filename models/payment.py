"""A payment's record and the pure decisions its owner takes (key: payment_id).

The record is the payment's memory: the fingerprint of the command that created it
(so a repeat is recognised and a conflict refused), where it is in the flow, its
one outcome, and its refunds. Records are kept for good: a payment can be asked
about, or its command repeated, at any time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import NAMESPACE_URL, uuid5

from pydantic import BaseModel, ConfigDict, Field

from models.commands import RefundPayment, RequestPayment
from models.events import (
    CommandRejected,
    FailureReason,
    PaymentCaptured,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    RefundFailed,
    RefundFailureReason,
    RejectionReason,
    event_id_for,
    now,
    rejection_id_for,
)
from models.outputs import Dispatch, Output, Publish
from models.steps import (
    CheckCreditor,
    Origin,
    PaymentAuthorizedStep,
    PaymentPosted,
    PaymentStepFailed,
    RefundPosted,
    RefundStepFailed,
    RefundSubmitted,
    ReserveFunds,
)

PAYMENT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:payments-service:payment")

PaymentStatus = Literal["pending", "captured", "failed", "refunded", "partially_refunded"]
RefundStatus = Literal["pending", "refunded", "failed"]


def payment_id_for(idempotency_key: str) -> str:
    """The same idempotency key always names the same payment."""
    return str(uuid5(PAYMENT_NAMESPACE, idempotency_key))


def refund_id_for(payment_id: str, idempotency_key: str) -> str:
    """Refund keys live in their payment's record, so a refund is named within its payment."""
    return str(uuid5(PAYMENT_NAMESPACE, f"refund/{payment_id}/{idempotency_key}"))


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    at: datetime
    detail: str | None = None


class RefundRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    refund_id: str
    fingerprint: str
    amount: int
    status: RefundStatus = "pending"
    outcome: PaymentRefunded | RefundFailed | None = None


class PaymentRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    payment_id: str
    fingerprint: str
    request: RequestPayment
    status: PaymentStatus = "pending"
    reason: FailureReason | None = None
    detail: str | None = None
    psp_reference: str | None = None
    outcome: PaymentCaptured | PaymentFailed | None = None
    history: tuple[HistoryEntry, ...] = ()
    refunds: dict[str, RefundRecord] = Field(default_factory=dict)
    refunded_total: int = 0
    refund_pending: int = 0

    @property
    def refundable(self) -> int:
        return self.request.amount - self.refunded_total - self.refund_pending

    def noted(self, step: str, note: str | None = None, *, at: datetime | None = None,
              **changes: object) -> PaymentRecord:
        entry = HistoryEntry(step=step, at=at or now(), detail=note)
        return self.model_copy(update={**changes, "history": (*self.history, entry)})


def payment_facts(payment_id: str, request: RequestPayment) -> dict[str, object]:
    return {
        "payment_id": payment_id,
        "idempotency_key": request.idempotency_key,
        "debtor_account_id": request.debtor_account_id,
        "creditor_account_id": request.creditor_account_id,
        "amount": request.amount,
        "currency": request.currency,
    }


def conflict(command_type: str, idempotency_key: str, origin: Origin) -> CommandRejected:
    return CommandRejected(
        event_id=rejection_id_for(idempotency_key, origin.place),
        command_type=command_type,
        idempotency_key=idempotency_key,
        reason=RejectionReason.IDEMPOTENCY_CONFLICT,
        detail=f"idempotency key {idempotency_key!r} was used before with a different payload",
    )


def screen(request: RequestPayment, risk_max_amount: int) -> tuple[FailureReason, str] | None:
    """Checks that need no account: they fail a payment before anything is held."""
    if request.debtor_account_id == request.creditor_account_id:
        return FailureReason.SAME_ACCOUNT, "debtor and creditor are the same account"
    if request.amount > risk_max_amount:
        return FailureReason.RISK_REJECTED, (
            f"amount {request.amount} exceeds the per-payment maximum {risk_max_amount}"
        )
    return None


def fail(record: PaymentRecord, reason: FailureReason, detail: str, psp_reference: str | None = None
         ) -> tuple[PaymentRecord, list[Output]]:
    if record.outcome is not None:
        return record, []  # one outcome, never a different one later
    event = PaymentFailed(
        event_id=event_id_for(record.payment_id, "PaymentFailed"),
        **payment_facts(record.payment_id, record.request),
        psp_reference=psp_reference,
        reason=reason,
        detail=detail,
    )
    failed = record.noted("failed", f"{reason}: {detail}", status="failed", reason=reason,
                          detail=detail, outcome=event)
    return failed, [Publish(event)]


def submit(record: PaymentRecord | None, payment_id: str, fingerprint: str, request: RequestPayment,
           origin: Origin, risk_max_amount: int) -> tuple[PaymentRecord | None, list[Output]]:
    if record is not None:
        if record.fingerprint != fingerprint:
            return record, [Publish(conflict("RequestPayment", request.idempotency_key, origin))]
        # The same command again: no second effect; answer with the outcome once known.
        return record, [Publish(record.outcome)] if record.outcome is not None else []
    fresh = PaymentRecord(payment_id=payment_id, fingerprint=fingerprint, request=request)
    screened = screen(request, risk_max_amount)
    if screened is not None:
        return fail(fresh.noted("submitted"), *screened)
    initiated = PaymentInitiated(
        event_id=event_id_for(payment_id, "PaymentInitiated"), **payment_facts(payment_id, request)
    )
    check = CheckCreditor(origin=origin, payment_id=payment_id, payment=request)
    return fresh.noted("initiated"), [
        Publish(initiated),
        Dispatch("account", request.creditor_account_id, check),
    ]


def authorized(record: PaymentRecord, step: PaymentAuthorizedStep) -> PaymentRecord:
    if record.status != "pending" or record.psp_reference is not None:
        return record
    return record.noted("authorized", psp_reference=step.psp_reference)


def step_failed(record: PaymentRecord, step: PaymentStepFailed) -> tuple[PaymentRecord, list[Output]]:
    return fail(record, step.reason, step.detail, step.psp_reference)


def posted(record: PaymentRecord, step: PaymentPosted) -> PaymentRecord:
    if record.outcome is not None:
        return record
    if step.authorized_at is not None and record.psp_reference is None:  # not noted by an earlier version
        record = record.noted("authorized", at=step.authorized_at)
    return record.noted("captured", status="captured", outcome=step.event,
                        psp_reference=step.event.psp_reference)


# --- refunds -------------------------------------------------------------------------------


def refund_failed_event(payment_id: str, command: RefundPayment, reason: RefundFailureReason,
                        detail: str) -> RefundFailed:
    return RefundFailed(
        event_id=event_id_for(refund_id_for(payment_id, command.idempotency_key), "RefundFailed"),
        payment_id=payment_id, idempotency_key=command.idempotency_key, amount=command.amount,
        reason=reason, detail=detail,
    )


def refund_refusal(record: PaymentRecord | None, command: RefundPayment
                   ) -> tuple[RefundFailureReason, str] | None:
    if record is None:
        return RefundFailureReason.UNKNOWN_PAYMENT, f"payment {command.payment_id} does not exist"
    if record.status not in ("captured", "partially_refunded", "refunded"):
        return RefundFailureReason.PAYMENT_NOT_CAPTURED, f"payment is {record.status}, not captured"
    amount = command.amount if command.amount is not None else record.refundable
    if amount <= 0 or amount > record.refundable:
        return RefundFailureReason.AMOUNT_EXCEEDS_REFUNDABLE, (
            f"refund of {amount} exceeds the refundable {record.refundable} "
            f"(captured {record.request.amount}, refunded {record.refunded_total}, "
            f"in progress {record.refund_pending})"
        )
    return None


def submit_refund(record: PaymentRecord | None, step: RefundSubmitted, origin: Origin
                  ) -> tuple[PaymentRecord | None, list[Output]]:
    command = step.command
    known = record.refunds.get(command.idempotency_key) if record is not None else None
    if known is not None:
        if known.fingerprint != step.fingerprint:
            return record, [Publish(conflict("RefundPayment", command.idempotency_key, origin))]
        return record, [Publish(known.outcome)] if known.outcome is not None else []
    refusal = refund_refusal(record, command)
    if refusal is not None:
        event = refund_failed_event(step.payment_id, command, *refusal)
        if record is None:
            return None, [Publish(event)]
        refund = RefundRecord(refund_id=refund_id_for(step.payment_id, command.idempotency_key),
                              fingerprint=step.fingerprint, amount=command.amount or 0,
                              status="failed", outcome=event)
        return _with_refund(record, command.idempotency_key, refund), [Publish(event)]
    assert record is not None
    amount = command.amount if command.amount is not None else record.refundable
    refund = RefundRecord(refund_id=refund_id_for(record.payment_id, command.idempotency_key),
                          fingerprint=step.fingerprint, amount=amount)
    hold = ReserveFunds(
        origin=origin, payment_id=record.payment_id, reservation_id=refund.refund_id,
        account_id=record.request.creditor_account_id, amount=amount,
        currency=record.request.currency, payment=record.request,
        refund_key=command.idempotency_key,
    )
    updated = _with_refund(record, command.idempotency_key, refund).noted(
        "refund_requested", f"{amount}", refund_pending=record.refund_pending + amount)
    return updated, [Dispatch("account", hold.account_id, hold)]


def _with_refund(record: PaymentRecord, key: str, refund: RefundRecord) -> PaymentRecord:
    return record.model_copy(update={"refunds": {**record.refunds, key: refund}})


def refund_posted(record: PaymentRecord, step: RefundPosted) -> PaymentRecord:
    key = step.event.idempotency_key
    refund = record.refunds.get(key)
    if refund is None or refund.status != "pending":
        return record
    total = record.refunded_total + refund.amount
    status: PaymentStatus = "refunded" if total >= record.request.amount else "partially_refunded"
    done = refund.model_copy(update={"status": "refunded", "outcome": step.event})
    return _with_refund(record, key, done).noted(
        "refunded", f"{refund.amount}", status=status, refunded_total=total,
        refund_pending=record.refund_pending - refund.amount)


def refund_step_failed(record: PaymentRecord, step: RefundStepFailed
                       ) -> tuple[PaymentRecord, list[Output]]:
    refund = record.refunds.get(step.refund_key)
    if refund is None or refund.status != "pending":
        return record, []
    event = RefundFailed(
        event_id=event_id_for(refund.refund_id, "RefundFailed"), payment_id=record.payment_id,
        idempotency_key=step.refund_key, amount=refund.amount, reason=step.reason,
        detail=step.detail,
    )
    done = refund.model_copy(update={"status": "failed", "outcome": event})
    updated = _with_refund(record, step.refund_key, done).noted(
        "refund_failed", step.detail, refund_pending=record.refund_pending - refund.amount)
    return updated, [Publish(event)]
