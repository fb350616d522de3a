"""The intake's decisions: which owner a valid command goes to, and the memory of payment keys.

A key names one command for good: the first one the intake handed over with it (table
`idempotency_keys`, key: the idempotency key, on the command's own partition). The
owners cannot see every reuse, because refunds live in their payment's record: the same
refund key sent for another payment, or a RequestPayment key reused by a RefundPayment
(or the reverse), reaches a record that has never heard of it. The intake reads every
payment command of a key in order (the command topic is keyed by the idempotency key,
so one partition, one reader), so it refuses the reuse before any owner acts on it.
"""

from __future__ import annotations

import msgspec

from models.codec import Invalid
from models.commands import Command, FundAccount, OpenAccount, RefundPayment, RequestPayment
from models.events import CommandRejected, RejectionReason, rejection_id_for
from models.outputs import Dispatch
from models.payment import payment_id_for
from models.steps import (
    FundAccountOp,
    Funding,
    OpenAccountOp,
    Opening,
    Origin,
    PaymentRequest,
    PaymentSubmitted,
    RecordHome,
    RefundRequested,
)

PaymentCommand = RequestPayment | RefundPayment


class KeyUse(msgspec.Struct, frozen=True):
    """What a key was first used for. All three fields are compared: the fingerprint
    already covers the type and payment id, naming them makes the conflict explainable."""

    command_type: str
    payment_id: str
    fingerprint: str


def key_use(command: PaymentCommand, fingerprint: str) -> KeyUse:
    payment_id = (
        payment_id_for(command.idempotency_key) if isinstance(command, RequestPayment) else command.payment_id
    )
    return KeyUse(command.type, payment_id, fingerprint)


def reuse_detail(key: str, first: KeyUse) -> str:
    return (
        f"idempotency key {key!r} was used before with a different payload: "
        f"first for {first.command_type} / payment {first.payment_id}"
    )


def screen_key(
    first: KeyUse | None, command: PaymentCommand, fingerprint: str, origin: Origin
) -> KeyUse | CommandRejected:
    """The key's use to hand the command over under, or the conflict that refuses it.

    A fresh key returns the use to register; a repeat of the first command returns the
    registered use (its owner answers a repeat with the outcome it recorded)."""
    use = key_use(command, fingerprint)
    if first is None or first == use:
        return use
    key = command.idempotency_key
    return CommandRejected(
        # One answer per message: a redelivery of this message re-publishes the same event.
        event_id=rejection_id_for(key, origin.place),
        command_type=command.type,
        idempotency_key=key,
        reason=RejectionReason.IDEMPOTENCY_CONFLICT,
        detail=reuse_detail(key, first),
    )


def rejection(invalid: Invalid, origin: Origin) -> CommandRejected:
    subject = invalid.idempotency_key or invalid.account_id or ""
    return CommandRejected(
        event_id=rejection_id_for(subject, origin.place),
        command_type=invalid.command_type,
        idempotency_key=invalid.idempotency_key,
        account_id=invalid.account_id,
        reason=RejectionReason.INVALID_REQUEST,
        detail=invalid.detail,
        errors=invalid.errors,
    )


def payment_request(command: RequestPayment) -> PaymentRequest:
    return PaymentRequest(
        command.idempotency_key,
        command.debtor_account_id,
        command.creditor_account_id,
        command.amount,
        command.currency,
        command.description,
        dict(command.metadata),
    )


def hand_over(command: Command, fingerprint: str, origin: Origin) -> list[Dispatch]:
    """The steps that give a valid command to its owners."""
    match command:
        case RequestPayment():
            payment_id = payment_id_for(command.idempotency_key)
            debtor = command.debtor_account_id
            return [
                Dispatch(
                    debtor,
                    PaymentSubmitted(
                        origin=origin,
                        payment_id=payment_id,
                        fingerprint=fingerprint,
                        request=payment_request(command),
                    ),
                ),
                # Its own position after the hand-over's: the two may go to one partition,
                # which applies each position of a source once (models/owner.py, Tracking).
                Dispatch(
                    payment_id,
                    RecordHome(
                        origin=msgspec.structs.replace(origin, index=origin.index + 1),
                        payment_id=payment_id,
                        home=debtor,
                    ),
                ),
            ]
        case RefundPayment():
            return [
                Dispatch(
                    command.payment_id,
                    RefundRequested(
                        origin=origin,
                        payment_id=command.payment_id,
                        refund_key=command.idempotency_key,
                        amount=command.amount,
                        fingerprint=fingerprint,
                    ),
                )
            ]
        case OpenAccount():
            return [
                Dispatch(
                    command.account_id,
                    OpenAccountOp(
                        origin=origin,
                        opening=Opening(
                            command.account_id,
                            command.owner_id,
                            command.currency,
                            command.overdraft_limit,
                            command.kyc_status,
                            fingerprint,
                        ),
                    ),
                )
            ]
        case FundAccount():
            return [
                Dispatch(
                    command.account_id,
                    FundAccountOp(
                        origin=origin,
                        funding=Funding(
                            command.idempotency_key,
                            command.account_id,
                            command.amount,
                            command.currency,
                            fingerprint,
                        ),
                    ),
                )
            ]
    raise AssertionError(f"unhandled command {command!r}")
