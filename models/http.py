"""The HTTP API's bodies and answers: the schemas of docs/openapi.json (api/openapi.py).

Request bodies are the commands themselves (models/commands.py), less what the request
gives elsewhere (the idempotency key in its header, the account or payment in its path):
one definition of each field, whether it arrives on Kafka or over HTTP.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from models.events import FieldError
from models.payment import PaymentStatus, RefundStatus
from models.types import Identifier
from models.webhooks import EVENT_TYPES, EventType


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(Answer):
    """RFC 9457 problem details, for every 4xx and 5xx."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


class PaymentAccepted(Answer):
    payment_id: str
    status: PaymentStatus


class HistoryItem(Answer):
    step: str
    at: datetime
    detail: str | None


class RefundView(Answer):
    refund_id: str
    payment_id: str
    idempotency_key: str
    amount: int
    status: RefundStatus
    reason: str | None = None
    detail: str | None = None


class PaymentView(Answer):
    payment_id: str
    idempotency_key: str
    status: PaymentStatus
    reason: str | None
    detail: str | None
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str
    description: str | None
    metadata: dict[str, str]
    refunded: int
    psp_reference: str | None
    refunds: list[RefundView]
    history: list[HistoryItem]


class PaymentSummaryView(Answer):
    payment_id: str
    idempotency_key: str
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str
    status: PaymentStatus
    reason: str | None
    refunded: int
    created_at: datetime
    updated_at: datetime


class PaymentList(Answer):
    account_id: str
    items: list[PaymentSummaryView]
    next_cursor: str | None  # pass as `cursor` for the next (older) page; None: no more


class AccountView(Answer):
    account_id: str
    currency: str
    posted: int
    pending: int
    available: int


class AccountPending(Answer):
    """Accepted, not yet opened at its home (a backlog): GET the account to see it."""

    account_id: str
    status: Literal["pending"]


class FundingView(Answer):
    account_id: str
    idempotency_key: str
    amount: int
    currency: str
    transaction_id: str
    status: Literal["pending", "funded"]  # funded: the ledger holds its entry


class StatementEntryView(Answer):
    posting_id: int
    transaction_id: str
    amount: int
    currency: str
    payment_id: str | None
    posted_at: datetime
    balance_after: int


class StatementPage(Answer):
    account_id: str
    entries: list[StatementEntryView]
    next_after: int | None


class Health(Answer):
    ready: bool
    recovering: bool


def problem_body(
    status: int,
    title: str,
    detail: str,
    *,
    slug: str,
    errors: list[FieldError] | None = None,
    **extensions: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": f"urn:payments:problem:{slug}",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [error.model_dump() for error in errors]
    return {**body, **extensions}


# --- webhooks ---------------------------------------------------------------------------------------


class WebhookEndpointBody(BaseModel):
    """An endpoint to register: events of these types (default: all) involving these
    accounts (default: every one; a key limited to accounts must name some of its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    url: Annotated[str, StringConstraints(strict=True, min_length=8, max_length=2048)]
    event_types: list[EventType] = Field(default_factory=list, max_length=len(EVENT_TYPES))
    accounts: list[Identifier] = Field(default_factory=list, max_length=1000)


class WebhookEndpointView(Answer):
    endpoint_id: str
    url: str
    event_types: list[str] | None  # None: all
    accounts: list[str] | None  # None: every account
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


class WebhookEndpointCreated(WebhookEndpointView):
    """The endpoint, with its secret: shown only in this answer."""

    secret: str


class WebhookEndpointList(Answer):
    items: list[WebhookEndpointView]


class AttemptView(Answer):
    attempted_at: datetime
    status_code: int | None
    latency_seconds: float
    error: str | None


class DeliveryView(Answer):
    delivery_id: int
    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    log: list[AttemptView]


class DeliveryList(Answer):
    endpoint_id: str
    items: list[DeliveryView]
