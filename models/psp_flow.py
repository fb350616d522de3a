"""The PSP step's decisions: a call in flight per payment, then its one recorded outcome.

The step never waits for the provider (a silent one takes the whole retry budget, and
would hold up every payment behind it on the partition). A new request is recorded
"in flight" and its call runs in the background; the call's end comes back as a
PspAnswered step, which records the outcome and says what follows. Pure: the agent
(agents/psp.py) reads the state, calls these, sends, records, and runs the calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict

from models.events import FailureReason, PaymentAuthorized, event_id_for
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_facts
from models.steps import (
    AuthorizePayment,
    Origin,
    PostCapture,
    PspAnswered,
    ReleaseFunds,
)


class PspOutcomeRecord(BaseModel):
    """The PSP step's state for one payment (table `psp_outcomes`, key: payment_id).

    `in_flight`: a call was started; `request` and `requested_at` say what to ask and
    which partition's owner runs it (and restarts it after a crash or a rebalance).
    Otherwise what the call concluded, kept so that no repeat calls the provider again.
    Records written before calls ran in the background have no `request`; they are all
    decided, and a decided record does not need it."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    result: Literal["in_flight", "approved", "declined", "gave_up"]
    psp_reference: str | None = None
    detail: str | None = None
    request: AuthorizePayment | None = None
    requested_at: Origin | None = None  # the request's position on the PSP-steps topic

    @property
    def decided(self) -> bool:
        return self.result != "in_flight"


@dataclass(frozen=True, slots=True)
class PspDecision:
    record: PspOutcomeRecord | None = None  # the payment's new state; None: unchanged
    outputs: list[Output] = field(default_factory=list)
    call: PspOutcomeRecord | None = None  # an in-flight payment whose call must run (once)
    # Cancel at the provider whatever it captured for the payment, which failed without it:
    # a late approval, or a give-up recorded (its timed-out attempts may have captured).
    void: bool = False


def on_request(current: PspOutcomeRecord | None, step: AuthorizePayment, origin: Origin) -> PspDecision:
    if current is None:
        in_flight = PspOutcomeRecord(payment_id=step.payment_id, result="in_flight", request=step,
                                     requested_at=origin)
        return PspDecision(record=in_flight, call=in_flight)
    if not current.decided:  # asked again: the call runs, or is restarted; nobody is asked twice
        return PspDecision(call=current)
    return PspDecision(outputs=outcome_outputs(step, current, origin))  # answer with what was decided


def on_answer(current: PspOutcomeRecord | None, answer: PspAnswered, origin: Origin) -> PspDecision:
    """The first answer recorded wins. A later one (a second call after a rebalance, or a
    restarted call) changes nothing; an approval after the payment failed, whose funds
    are already released, must not move money: it is voided at the provider. A give-up
    voids only once it is the recorded outcome, never after another call's approval."""
    if current is None or current.decided:
        late_approval = current is not None and answer.result == "approved" and current.result != "approved"
        return PspDecision(void=late_approval)
    assert current.request is not None, "an in-flight record always holds its request"
    decided = PspOutcomeRecord(payment_id=current.payment_id, result=answer.result,
                               psp_reference=answer.psp_reference, detail=answer.detail)
    # The outputs carry the answer's own position as origin, not the request's: receivers
    # skip what comes from a position at or below one they applied from this partition,
    # and answers arrive in their own order, not in the order of the requests.
    return PspDecision(record=decided, outputs=outcome_outputs(current.request, decided, origin),
                       void=answer.result == "gave_up")


def outcome_outputs(step: AuthorizePayment, outcome: PspOutcomeRecord, origin: Origin) -> list[Output]:
    if outcome.result == "approved":
        assert outcome.psp_reference is not None
        return approved(step, outcome.psp_reference, origin)
    assert outcome.decided
    reason = FailureReason.PSP_DECLINED if outcome.result == "declined" else FailureReason.PSP_UNAVAILABLE
    return not_captured(step, reason, outcome.detail or outcome.result, origin)


def approved(step: AuthorizePayment, psp_reference: str, origin: Origin) -> list[Output]:
    authorized = PaymentAuthorized(
        event_id=event_id_for(step.payment_id, "PaymentAuthorized"),
        **payment_facts(step.payment_id, step.payment), psp_reference=psp_reference,
    )
    # The payment owner hears of the approval with the posting (PaymentPosted carries
    # `authorized_at`): a step of its own would cost it a handling and a record write.
    return [
        Publish(authorized),
        Dispatch("ledger", step.payment_id, PostCapture(
            origin=origin, payment_id=step.payment_id, reservation_id=step.reservation_id,
            psp_reference=psp_reference, payment=step.payment, authorized_at=authorized.occurred_at)),
    ]


def not_captured(step: AuthorizePayment, reason: FailureReason, detail: str, origin: Origin
                 ) -> list[Output]:
    """Compensation: release the hold; the account owner then tells the payment owner."""
    release = ReleaseFunds(origin=origin, payment_id=step.payment_id,
                           reservation_id=step.reservation_id,
                           account_id=step.payment.debtor_account_id, reason=reason, detail=detail)
    return [Dispatch("account", step.payment.debtor_account_id, release)]
