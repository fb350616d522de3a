"""The intake's memory of payment idempotency keys (table `idempotency_keys`, key: the key).

A key names one command for good: the first one the intake handed over with it. The
payments table cannot see every reuse, because refunds live in their payment's record:
the same refund key sent for another payment, or a RequestPayment key reused by a
RefundPayment (or the reverse), reaches a record that has never heard of it. The
intake reads every payment command of a key in order (the command topic is keyed by
the idempotency key, so one partition, one reader), so it can refuse the reuse before
any owner acts on it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from models.commands import RefundPayment, RequestPayment
from models.events import CommandRejected, RejectionReason, rejection_id_for
from models.payment import payment_id_for
from models.steps import Origin

PaymentCommand = RequestPayment | RefundPayment


class KeyUse(BaseModel):
    """What a key was first used for. All three fields are compared: the fingerprint
    already covers the type and payment id, naming them makes the conflict explainable."""

    model_config = ConfigDict(frozen=True)

    command_type: str
    payment_id: str
    fingerprint: str


def key_use(command: PaymentCommand) -> KeyUse:
    payment_id = (payment_id_for(command.idempotency_key) if isinstance(command, RequestPayment)
                  else command.payment_id)
    return KeyUse(command_type=command.type, payment_id=payment_id, fingerprint=command.fingerprint())


def key_conflict(first: KeyUse, command: PaymentCommand, origin: Origin) -> CommandRejected:
    key = command.idempotency_key
    return CommandRejected(
        # One answer per message: a redelivery of this message re-publishes the same event.
        event_id=rejection_id_for(key, origin.place),
        command_type=command.type,
        idempotency_key=key,
        reason=RejectionReason.IDEMPOTENCY_CONFLICT,
        detail=reuse_detail(key, first),
    )


def is_reuse(first: KeyUse, command: PaymentCommand) -> bool:
    """The key was first used for another command than this one."""
    return first != key_use(command)


def reuse_detail(key: str, first: KeyUse) -> str:
    return (f"idempotency key {key!r} was used before with a different payload: "
            f"first for {first.command_type} / payment {first.payment_id}")


def screen_key(first: KeyUse | None, command: PaymentCommand, origin: Origin
               ) -> KeyUse | CommandRejected:
    """The key's use to hand the command over under, or the conflict that refuses it.

    A fresh key returns the use to register; a repeat of the first command returns the
    registered use (the owner answers a repeat with the outcome it recorded)."""
    if first is not None and is_reuse(first, command):
        return key_conflict(first, command, origin)
    return key_use(command)
