"""Internal step messages of the choreography (never seen by upstream or downstream).

Every step carries `origin`: the position of the step whose handling produced it.
A handler that reprocesses a step after a crash produces the same steps with the
same origin, so the receiver can tell a redelivery (origin at or below what it
already applied from that source) from new work.

Steps travel in batches: one message carries the steps an agent's batch produced for
one partition of a step topic (models/codec.py `encode_steps`). A message's offset is
then shared by its steps, and `Origin.index` tells them apart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.commands import FundAccount, OpenAccount, RefundPayment, RequestPayment
from models.events import FailureReason, PaymentCaptured, PaymentRefunded, RefundFailureReason


class Origin(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    index: int = 0  # the step's place in its message (a batch of steps); 0 for a message of one

    @property
    def source(self) -> str:
        return f"{self.topic}#{self.partition}"

    @property
    def position(self) -> tuple[int, int]:
        """Where in its source: positions grow in the order the steps were produced."""
        return self.offset, self.index

    @property
    def place(self) -> str:
        """The position as text, unique in the whole service (a name for what came from here)."""
        at = f"{self.source}:{self.offset}"
        return f"{at}.{self.index}" if self.index else at


class Step(BaseModel):
    model_config = ConfigDict(frozen=True)

    origin: Origin


# --- to the payment owner (key: payment_id) ------------------------------------------------


class PaymentSubmitted(Step):
    kind: Literal["PaymentSubmitted"] = "PaymentSubmitted"
    payment_id: str
    fingerprint: str
    command: RequestPayment


class RefundSubmitted(Step):
    kind: Literal["RefundSubmitted"] = "RefundSubmitted"
    payment_id: str
    fingerprint: str
    command: RefundPayment


class PaymentStepFailed(Step):
    """A step after initiation failed; any reservation is already released."""

    kind: Literal["PaymentStepFailed"] = "PaymentStepFailed"
    payment_id: str
    reason: FailureReason
    detail: str
    psp_reference: str | None = None


class PaymentAuthorizedStep(Step):
    """Sent by earlier versions between the provider's approval and the posting; still
    read, so that steps in flight across an upgrade are not dead-lettered. The approval
    now reaches the payment with its posting (`PaymentPosted.authorized_at`)."""

    kind: Literal["PaymentAuthorizedStep"] = "PaymentAuthorizedStep"
    payment_id: str
    psp_reference: str


class PaymentPosted(Step):
    kind: Literal["PaymentPosted"] = "PaymentPosted"
    payment_id: str
    event: PaymentCaptured
    authorized_at: datetime | None = None  # when the provider approved (None: sent by an earlier version)


class RefundPosted(Step):
    kind: Literal["RefundPosted"] = "RefundPosted"
    payment_id: str
    event: PaymentRefunded


class RefundStepFailed(Step):
    kind: Literal["RefundStepFailed"] = "RefundStepFailed"
    payment_id: str
    refund_key: str
    reason: RefundFailureReason
    detail: str


PaymentStep = Annotated[
    PaymentSubmitted | RefundSubmitted | PaymentStepFailed | PaymentAuthorizedStep
    | PaymentPosted | RefundPosted | RefundStepFailed,
    Field(discriminator="kind"),
]



# --- to an account owner (key: account_id) -------------------------------------------------


class OpenAccountOp(Step):
    kind: Literal["OpenAccountOp"] = "OpenAccountOp"
    command: OpenAccount


class FundAccountOp(Step):
    kind: Literal["FundAccountOp"] = "FundAccountOp"
    fingerprint: str
    command: FundAccount


class CheckCreditor(Step):
    """First stop of a payment: the creditor exists, is open and holds the currency."""

    kind: Literal["CheckCreditor"] = "CheckCreditor"
    payment_id: str
    payment: RequestPayment


class ReserveFunds(Step):
    """Hold money on the payer: the debtor of a payment, or the creditor of a refund."""

    kind: Literal["ReserveFunds"] = "ReserveFunds"
    payment_id: str
    reservation_id: str
    account_id: str
    amount: int
    currency: str
    payment: RequestPayment
    refund_key: str | None = None


class ReleaseFunds(Step):
    """Compensation: give back a hold whose movement will not happen."""

    kind: Literal["ReleaseFunds"] = "ReleaseFunds"
    payment_id: str
    reservation_id: str
    account_id: str
    reason: FailureReason
    detail: str
    psp_reference: str | None = None


class ApplyPosting(Step):
    """A committed ledger leg: settle the hold it consumed (if any) and move posted."""

    kind: Literal["ApplyPosting"] = "ApplyPosting"
    account_id: str
    transaction_id: str
    amount: int  # signed: credit +, debit -
    reservation_id: str | None = None


AccountStep = Annotated[
    OpenAccountOp | FundAccountOp | CheckCreditor | ReserveFunds | ReleaseFunds | ApplyPosting,
    Field(discriminator="kind"),
]



# --- to the PSP step (key: payment_id) -----------------------------------------------------


class AuthorizePayment(Step):
    kind: Literal["AuthorizePayment"] = "AuthorizePayment"
    payment_id: str
    reservation_id: str
    payment: RequestPayment


class PspAnswered(Step):
    """How a provider call ended: its answer, or the retry budget spent (`gave_up`).

    Sent by the call (a background task of the worker that started it) to the PSP-steps
    topic, so that the partition's owner, its single writer, records the outcome. Its
    origin is the position on the PSP-steps topic of the request that started the call."""

    kind: Literal["PspAnswered"] = "PspAnswered"
    payment_id: str
    result: Literal["approved", "declined", "gave_up"]
    psp_reference: str | None = None
    detail: str | None = None


PspStep = Annotated[AuthorizePayment | PspAnswered, Field(discriminator="kind")]


# --- to the ledger writer (key: payment_id or funding key) -------------------------------


class PostCapture(Step):
    kind: Literal["PostCapture"] = "PostCapture"
    payment_id: str
    reservation_id: str
    psp_reference: str
    payment: RequestPayment
    authorized_at: datetime | None = None  # passed on to the payment with its posting


class PostFunding(Step):
    kind: Literal["PostFunding"] = "PostFunding"
    fingerprint: str
    command: FundAccount


class PostRefund(Step):
    kind: Literal["PostRefund"] = "PostRefund"
    payment_id: str
    reservation_id: str
    refund_key: str
    amount: int
    payment: RequestPayment


LedgerStep = Annotated[PostCapture | PostFunding | PostRefund, Field(discriminator="kind")]

