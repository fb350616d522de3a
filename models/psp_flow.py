"""What the PSP step says once the provider has answered (or the retry budget is spent)."""

from __future__ import annotations

from models.events import FailureReason, PaymentAuthorized, event_id_for
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_facts
from models.steps import AuthorizePayment, Origin, PaymentAuthorizedStep, PostCapture, ReleaseFunds


def approved(step: AuthorizePayment, psp_reference: str, origin: Origin) -> list[Output]:
    authorized = PaymentAuthorized(
        event_id=event_id_for(step.payment_id, "PaymentAuthorized"),
        **payment_facts(step.payment_id, step.payment), psp_reference=psp_reference,
    )
    return [
        Publish(authorized),
        Dispatch("payment", step.payment_id, PaymentAuthorizedStep(
            origin=origin, payment_id=step.payment_id, psp_reference=psp_reference)),
        Dispatch("ledger", step.payment_id, PostCapture(
            origin=origin, payment_id=step.payment_id, reservation_id=step.reservation_id,
            psp_reference=psp_reference, payment=step.payment)),
    ]


def not_captured(step: AuthorizePayment, reason: FailureReason, detail: str, origin: Origin
                 ) -> list[Output]:
    """Compensation: release the hold; the account owner then tells the payment owner."""
    release = ReleaseFunds(origin=origin, payment_id=step.payment_id,
                           reservation_id=step.reservation_id,
                           account_id=step.payment.debtor_account_id, reason=reason, detail=detail)
    return [Dispatch("account", step.payment.debtor_account_id, release)]
