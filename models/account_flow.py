"""The account owner's reactions to each step (key: account_id), as pure functions.

`react(state, step, origin)` returns the account's new state (None: unchanged or
still absent) and the outputs. A step whose origin the account already applied is
a redelivery: no effect, and nothing to say, because its outputs were acknowledged
before the state that records it was written.
"""

from __future__ import annotations

from models.account import (
    AccountState,
    Refusal,
    apply_posting,
    check_creditor,
    decide_reservation,
    open_account,
    release,
)
from models.events import (
    AccountOpened,
    CommandRejected,
    FieldError,
    RefundFailureReason,
    RejectionReason,
    event_id_for,
    rejection_id_for,
)
from models.outputs import Dispatch, Output, Publish
from models.steps import (
    AccountStep,
    ApplyPosting,
    AuthorizePayment,
    CheckCreditor,
    FundAccountOp,
    OpenAccountOp,
    Origin,
    PaymentStepFailed,
    PostFunding,
    PostRefund,
    RefundStepFailed,
    ReleaseFunds,
    ReserveFunds,
)

Reaction = tuple[AccountState | None, list[Output]]


def react(state: AccountState | None, step: AccountStep, origin: Origin) -> Reaction:
    if state is not None and state.already_applied(step.origin):
        return None, []
    new_state, outputs = _dispatch(state, step, origin)
    tracked = new_state or state
    return (tracked.tracking(step.origin) if tracked is not None else None), outputs


def _dispatch(state: AccountState | None, step: AccountStep, origin: Origin) -> Reaction:
    match step:
        case OpenAccountOp():
            return on_open(state, step, origin)
        case FundAccountOp():
            return on_fund(state, step, origin)
        case CheckCreditor():
            return on_check_creditor(state, step, origin)
        case ReserveFunds():
            return on_reserve(state, step, origin)
        case ReleaseFunds():
            return on_release(state, step, origin)
        case ApplyPosting():
            return (apply_posting(state, step.amount, step.reservation_id) if state else None), []
    raise AssertionError(f"unhandled account step {step!r}")


def opened_event(state: AccountState) -> AccountOpened:
    return AccountOpened(
        event_id=event_id_for(state.account_id, "AccountOpened"), account_id=state.account_id,
        owner_id=state.owner_id, currency=state.currency, overdraft_limit=state.overdraft_limit,
        kyc_status=state.kyc_status,
    )


def rejected(command_type: str, reason: RejectionReason, detail: str, field: str, origin: Origin, *,
             account_id: str, idempotency_key: str | None = None) -> CommandRejected:
    subject = idempotency_key or account_id
    return CommandRejected(
        event_id=rejection_id_for(subject, origin.place), command_type=command_type,
        idempotency_key=idempotency_key, account_id=account_id, reason=reason, detail=detail,
        errors=(FieldError(field=field, message=detail),),
    )


def on_open(state: AccountState | None, step: OpenAccountOp, origin: Origin) -> Reaction:
    fingerprint = step.command.fingerprint()
    if state is None:
        opened = open_account(step.command, fingerprint)
        return opened, [Publish(opened_event(opened))]
    if state.fingerprint == fingerprint:
        return None, [Publish(opened_event(state))]  # a repeat: the same answer again
    detail = f"account {state.account_id} was opened before with a different payload"
    return None, [Publish(rejected("OpenAccount", RejectionReason.IDEMPOTENCY_CONFLICT, detail,
                                   "account_id", origin, account_id=state.account_id))]


def on_fund(state: AccountState | None, step: FundAccountOp, origin: Origin) -> Reaction:
    command = step.command
    problem: tuple[str, str] | None = None
    if state is None:
        problem = ("account_id", f"account {command.account_id} does not exist")
    elif state.currency != command.currency:
        problem = ("currency", f"account {command.account_id} holds {state.currency}, not {command.currency}")
    if problem is not None:
        return None, [Publish(rejected("FundAccount", RejectionReason.INVALID_REQUEST, problem[1],
                                       problem[0], origin, account_id=command.account_id,
                                       idempotency_key=command.idempotency_key))]
    post = PostFunding(origin=origin, fingerprint=step.fingerprint, command=command)
    return None, [Dispatch("ledger", command.idempotency_key, post)]


def payment_failed(step: CheckCreditor | ReserveFunds, refusal: Refusal, origin: Origin) -> Dispatch:
    failed = PaymentStepFailed(origin=origin, payment_id=step.payment_id, reason=refusal.reason,
                               detail=refusal.detail)
    return Dispatch("payment", step.payment_id, failed)


def on_check_creditor(state: AccountState | None, step: CheckCreditor, origin: Origin) -> Reaction:
    payment = step.payment
    refusal = check_creditor(state, payment.creditor_account_id, payment.currency)
    if refusal is not None:
        return None, [payment_failed(step, refusal, origin)]
    hold = ReserveFunds(
        origin=origin, payment_id=step.payment_id, reservation_id=step.payment_id,
        account_id=payment.debtor_account_id, amount=payment.amount, currency=payment.currency,
        payment=payment,
    )
    return None, [Dispatch("account", payment.debtor_account_id, hold)]


def on_reserve(state: AccountState | None, step: ReserveFunds, origin: Origin) -> Reaction:
    decision = decide_reservation(state, step, refund=step.refund_key is not None)
    if isinstance(decision, Refusal):
        return None, [_refusal_output(step, decision, origin)]
    if step.refund_key is not None:
        post = PostRefund(
            origin=origin, payment_id=step.payment_id, reservation_id=step.reservation_id,
            refund_key=step.refund_key, amount=step.amount, payment=step.payment,
        )
        return decision, [Dispatch("ledger", step.payment_id, post)]
    authorize = AuthorizePayment(origin=origin, payment_id=step.payment_id,
                                 reservation_id=step.reservation_id, payment=step.payment)
    return decision, [Dispatch("psp", step.payment_id, authorize)]


def _refusal_output(step: ReserveFunds, refusal: Refusal, origin: Origin) -> Dispatch:
    if step.refund_key is None:
        return payment_failed(step, refusal, origin)
    failed = RefundStepFailed(origin=origin, payment_id=step.payment_id, refund_key=step.refund_key,
                              reason=RefundFailureReason.INSUFFICIENT_FUNDS, detail=refusal.detail)
    return Dispatch("payment", step.payment_id, failed)


def on_release(state: AccountState | None, step: ReleaseFunds, origin: Origin) -> Reaction:
    """Compensation: the hold goes first, then the payment hears that it failed."""
    released = release(state, step.reservation_id) if state is not None else None
    failed = PaymentStepFailed(origin=origin, payment_id=step.payment_id, reason=step.reason,
                               detail=step.detail, psp_reference=step.psp_reference)
    return released, [Dispatch("payment", step.payment_id, failed)]
