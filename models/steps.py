"""Internal steps of the choreography: lean msgspec structs, never seen by upstream or downstream.

Public commands and events are pydantic models with published schemas (models/commands.py,
models/events.py); what the service says to itself is written and read only by this
code, so it is a msgspec struct: an order of magnitude cheaper to encode and decode.

Every step carries `origin`: the position of the step (or command) whose handling
produced it. A handler that handles a step again after a crash produces the same steps
with the same origins, so the receiving partition can tell a step it applied already
(origin at or below the highest position it applied from that source) from new work
(models/owner.py, `Tracking`).

Steps travel in batches: one message carries every step one batch of the sender
produced for one partition of the steps topic (`encode_batch`). A message's offset is
then shared by its steps, and `Origin.index` tells them apart.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Origin(msgspec.Struct, frozen=True, array_like=True):
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


# --- the validated commands' facts, as steps carry them -------------------------------------


class PaymentRequest(msgspec.Struct, frozen=True):
    """A RequestPayment, validated at the intake (models/commands.py has the schema)."""

    idempotency_key: str
    debtor_account_id: str
    creditor_account_id: str
    amount: int
    currency: str
    description: str | None = None
    metadata: dict[str, str] = {}


class Opening(msgspec.Struct, frozen=True):
    """An OpenAccount, validated at the intake."""

    account_id: str
    owner_id: str
    currency: str
    overdraft_limit: int
    kyc_status: str
    fingerprint: str


class Funding(msgspec.Struct, frozen=True):
    """A FundAccount, validated at the intake."""

    idempotency_key: str
    account_id: str
    amount: int
    currency: str
    fingerprint: str


class CreditorFacts(msgspec.Struct, frozen=True):
    """What a payment needs to know of its creditor: the account's facts that never change
    once it is open (it exists, its currency), and its status."""

    account_id: str
    currency: str
    status: str


class Refusal(msgspec.Struct, frozen=True):
    reason: str  # a FailureReason or RefundFailureReason value
    detail: str


# --- the steps (key: the owner they go to) --------------------------------------------------


class Step(msgspec.Struct, frozen=True, tag_field="kind", tag=True, kw_only=True):
    origin: Origin


class OpenAccountOp(Step):
    """To the account's home (key: account id)."""

    opening: Opening


class FundAccountOp(Step):
    """To the account's home: post money from outside."""

    funding: Funding


class PaymentSubmitted(Step):
    """To the debtor's home (key: debtor account id), where the payment lives.

    `creditor`: absent when the payment comes from the intake; present when the
    creditor's own home answered a CheckCreditor (None inside: the account does not exist)."""

    payment_id: str
    fingerprint: str
    request: PaymentRequest
    creditor_checked: bool = False
    creditor: CreditorFacts | None = None


class CheckCreditor(Step):
    """To the creditor's home, when the debtor's home does not know the creditor yet: the
    creditor's home answers with the payment, its verdict attached."""

    submitted: PaymentSubmitted


class RecordHome(Step):
    """To the payment's directory entry (key: payment id): where the payment lives."""

    payment_id: str
    home: str  # the debtor account id


class RefundRequested(Step):
    """To the payment's directory entry, which knows the payment's home."""

    payment_id: str
    refund_key: str
    amount: int | None
    fingerprint: str


class RefundSubmitted(Step):
    """To the payment's home (the debtor's), where its record is."""

    payment_id: str
    refund_key: str
    amount: int | None
    fingerprint: str


class PspAnswered(Step):
    """How a provider call ended: its answer, or the retry budget spent (`gave_up`).

    Sent by the call (a background task of the worker that started it) to the payment's
    home, its single writer, which records the outcome. Calls end in any order, so its
    origin (the request's) is not a position of an ordered source: its repeats are
    recognised by the payment's state, not by position."""

    payment_id: str
    home: str
    result: Literal["approved", "declined", "gave_up"]
    psp_reference: str | None = None
    detail: str | None = None


class ApplyCredit(Step):
    """To the creditor's home: the credit leg of a committed capture."""

    account_id: str
    transaction_id: str
    amount: int


class PostRefund(Step):
    """To the refund's payer (the payment's creditor): check its funds and post the refund."""

    payment_id: str
    refund_id: str
    refund_key: str
    amount: int
    debtor_account_id: str  # of the payment: receives the refund
    creditor_account_id: str  # of the payment: pays it back
    currency: str


class RefundPosted(Step):
    """To the payment's home: the refund is committed; credit the debtor, note it."""

    payment_id: str
    refund_key: str
    amount: int
    event: msgspec.Raw  # the PaymentRefunded event, as published


class RefundStepFailed(Step):
    """To the payment's home: the refund could not be posted."""

    payment_id: str
    refund_key: str
    refusal: Refusal


OwnerStep = (
    OpenAccountOp | FundAccountOp | PaymentSubmitted | CheckCreditor | RecordHome | RefundRequested
    | RefundSubmitted | PspAnswered | ApplyCredit | PostRefund | RefundPosted | RefundStepFailed
)


# --- the messages of the steps topic ----------------------------------------------------------


class StepBatch(msgspec.Struct, tag_field="kind", tag="StepBatch"):
    steps: list[OwnerStep]


class RawStepBatch(msgspec.Struct, tag_field="kind", tag="StepBatch"):
    steps: list[msgspec.Raw]


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(StepBatch | OwnerStep)  # type: ignore[arg-type]
_STEP_DECODER = msgspec.json.Decoder(OwnerStep)  # type: ignore[arg-type]
_RAW_DECODER = msgspec.json.Decoder(RawStepBatch | msgspec.Raw)

# Steps per message: a batch of outputs for one partition is split past it, which keeps a
# message far below the broker's size limit (a step is ~0.3-1 KB).
STEPS_PER_MESSAGE_MAX = 1000


def encode_batch(steps: list[OwnerStep]) -> bytes:
    return _ENCODER.encode(StepBatch(steps))


def encode_step(step: OwnerStep) -> bytes:
    return _ENCODER.encode(step)


class BadStep(msgspec.Struct, frozen=True):
    """A step that could not be read: its bytes (re-publishable as they are) and why."""

    raw: bytes
    error: str


def decode_message(value: bytes | None) -> list[OwnerStep | BadStep]:
    """The steps of a steps-topic message: a batch, or a message holding one step (as an
    operator re-publishes a dead-lettered one). Never raises: what cannot be read comes
    back as BadStep, in its place, so the rest of the message is handled."""
    raw = value or b""
    try:
        decoded = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _decode_each(raw)
    return list(decoded.steps) if isinstance(decoded, StepBatch) else [decoded]


def _decode_each(raw: bytes) -> list[OwnerStep | BadStep]:
    try:
        parts = _RAW_DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return [BadStep(raw, f"not a step message: {error}")]
    items = parts.steps if isinstance(parts, RawStepBatch) else [parts]
    found: list[OwnerStep | BadStep] = []
    for item in items:
        try:
            found.append(_STEP_DECODER.decode(item))
        except (msgspec.DecodeError, msgspec.ValidationError) as error:
            found.append(BadStep(bytes(item), str(error)))
    return found
