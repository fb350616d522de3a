"""Outbound events (past tense): facts the service publishes, schema version 1."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import ClassVar, Literal
from uuid import UUID, uuid5

from pydantic import BaseModel, ConfigDict, Field

EVENT_NAMESPACE = UUID("6f1c2b0e-5d1a-4f8e-9a43-0c9d3e1b7a52")


def now() -> datetime:
    return datetime.now(UTC)


def event_id_for(subject: str, event_type: str) -> UUID:
    """Deterministic: the same fact about the same subject always has the same event_id."""
    return uuid5(EVENT_NAMESPACE, f"{event_type}/{subject}")


def rejection_id_for(subject: str, place: str) -> UUID:
    """A rejection answers one message (`place`: Origin.place, where it was read): its id is
    stable when that message is redelivered."""
    return event_id_for(f"{subject}@{place}", "CommandRejected")


class FailureReason(StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    ACCOUNT_NOT_ACTIVE = "account_not_active"
    CURRENCY_MISMATCH = "currency_mismatch"
    SAME_ACCOUNT = "same_account"
    INSUFFICIENT_FUNDS = "insufficient_funds"
    KYC_BLOCKED = "kyc_blocked"
    RISK_REJECTED = "risk_rejected"
    PSP_DECLINED = "psp_declined"
    PSP_UNAVAILABLE = "psp_unavailable"


class RefundFailureReason(StrEnum):
    UNKNOWN_PAYMENT = "unknown_payment"
    PAYMENT_NOT_CAPTURED = "payment_not_captured"
    AMOUNT_EXCEEDS_REFUNDABLE = "amount_exceeds_refundable"
    INSUFFICIENT_FUNDS = "insufficient_funds"


class RejectionReason(StrEnum):
    INVALID_REQUEST = "invalid_request"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"


class Event(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: ClassVar[str]
    event_id: UUID
    event_type: str
    schema_version: Literal[1] = 1
    occurred_at: datetime = Field(default_factory=now)

    @property
    def key(self) -> str:
        """The Kafka key downstream consumers partition on."""
        raise NotImplementedError

    @property
    def correlation_id(self) -> str:
        return self.key


class AccountOpened(Event):
    topic: ClassVar[str] = "fintech.events.AccountOpened"
    event_type: Literal["AccountOpened"] = "AccountOpened"
    account_id: str
    owner_id: str
    currency: str
    overdraft_limit: int
    kyc_status: str

    @property
    def key(self) -> str:
        return self.account_id


class AccountFunded(Event):
    topic: ClassVar[str] = "fintech.events.AccountFunded"
    event_type: Literal["AccountFunded"] = "AccountFunded"
    account_id: str
    idempotency_key: str
    amount: int
    currency: str
    transaction_id: UUID

    @property
    def key(self) -> str:
        return self.account_id


class PaymentFacts(Event):
    """The fields every event about a payment carries."""

    payment_id: str
    idempotency_key: str
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str

    @property
    def key(self) -> str:
        return self.payment_id


class PaymentInitiated(PaymentFacts):
    topic: ClassVar[str] = "fintech.events.PaymentInitiated"
    event_type: Literal["PaymentInitiated"] = "PaymentInitiated"


class PaymentAuthorized(PaymentFacts):
    topic: ClassVar[str] = "fintech.events.PaymentAuthorized"
    event_type: Literal["PaymentAuthorized"] = "PaymentAuthorized"
    psp_reference: str


class PaymentCaptured(PaymentFacts):
    topic: ClassVar[str] = "fintech.events.PaymentCaptured"
    event_type: Literal["PaymentCaptured"] = "PaymentCaptured"
    psp_reference: str
    transaction_id: UUID


class PaymentFailed(PaymentFacts):
    topic: ClassVar[str] = "fintech.events.PaymentFailed"
    event_type: Literal["PaymentFailed"] = "PaymentFailed"
    psp_reference: str | None = None
    reason: FailureReason
    detail: str


class PaymentRefunded(Event):
    topic: ClassVar[str] = "fintech.events.PaymentRefunded"
    event_type: Literal["PaymentRefunded"] = "PaymentRefunded"
    payment_id: str
    idempotency_key: str
    amount: int
    currency: str
    transaction_id: UUID
    # The payment's parties, so a consumer (a webhook's account filter) needs no lookup.
    debtor_account_id: str | None = None
    creditor_account_id: str | None = None

    @property
    def key(self) -> str:
        return self.payment_id


class RefundFailed(Event):
    topic: ClassVar[str] = "fintech.events.RefundFailed"
    event_type: Literal["RefundFailed"] = "RefundFailed"
    payment_id: str
    idempotency_key: str
    amount: int | None
    reason: RefundFailureReason
    detail: str
    # The payment's parties; None when the payment is unknown.
    debtor_account_id: str | None = None
    creditor_account_id: str | None = None

    @property
    def key(self) -> str:
        return self.payment_id


class FieldError(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str
    message: str


class CommandRejected(Event):
    topic: ClassVar[str] = "fintech.events.CommandRejected"
    event_type: Literal["CommandRejected"] = "CommandRejected"
    command_type: str
    idempotency_key: str | None = None
    account_id: str | None = None
    reason: RejectionReason
    detail: str
    errors: tuple[FieldError, ...] = ()

    @property
    def key(self) -> str:
        return self.idempotency_key or self.account_id or ""


PUBLIC_EVENTS: tuple[type[Event], ...] = (
    AccountOpened,
    AccountFunded,
    PaymentInitiated,
    PaymentAuthorized,
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    RefundFailed,
    CommandRejected,
)
EVENTS_BY_TYPE: dict[str, type[Event]] = {e.model_fields["event_type"].default: e for e in PUBLIC_EVENTS}
