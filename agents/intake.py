"""Intake: read upstream commands, answer bad ones, hand good ones to their owner.

Stateless, so it can run with any parallelism; the owners it hands to do the
idempotency. Unreadable bytes go to the dead-letter topic untouched.
"""

from __future__ import annotations

import faust

from agents.runtime import Runtime
from agents.shell import batches, origin_of
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS
from models.codec import Invalid, Unreadable, read_command
from models.commands import (
    ACCOUNT_COMMANDS as ACCOUNT_COMMAND_TYPES,
)
from models.commands import (
    PAYMENT_COMMANDS as PAYMENT_COMMAND_TYPES,
)
from models.commands import (
    Command,
    FundAccount,
    OpenAccount,
    RefundPayment,
    RequestPayment,
)
from models.events import CommandRejected, RejectionReason, rejection_id_for
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_id_for
from models.steps import FundAccountOp, OpenAccountOp, Origin, PaymentSubmitted, RefundSubmitted


def rejection(invalid: Invalid, origin: Origin) -> CommandRejected:
    subject = invalid.idempotency_key or invalid.account_id or ""
    return CommandRejected(
        event_id=rejection_id_for(subject, origin.source, origin.offset),
        command_type=invalid.command_type,
        idempotency_key=invalid.idempotency_key, account_id=invalid.account_id,
        reason=RejectionReason.INVALID_REQUEST, detail=invalid.detail, errors=invalid.errors,
    )


def hand_over(command: Command, origin: Origin) -> Dispatch:
    match command:
        case RequestPayment():
            payment_id = payment_id_for(command.idempotency_key)
            return Dispatch("payment", payment_id, PaymentSubmitted(
                origin=origin, payment_id=payment_id, fingerprint=command.fingerprint(),
                command=command))
        case RefundPayment():
            return Dispatch("payment", command.payment_id, RefundSubmitted(
                origin=origin, payment_id=command.payment_id, fingerprint=command.fingerprint(),
                command=command))
        case OpenAccount():
            return Dispatch("account", command.account_id, OpenAccountOp(origin=origin, command=command))
        case FundAccount():
            return Dispatch("account", command.account_id, FundAccountOp(
                origin=origin, fingerprint=command.fingerprint(), command=command))
    raise AssertionError(f"unhandled command {command!r}")


def install(app: faust.App, runtime: Runtime) -> None:
    readers = (
        ("intake_payments", PAYMENT_COMMANDS, PAYMENT_COMMAND_TYPES, "idempotency_key"),
        ("intake_accounts", ACCOUNT_COMMANDS, ACCOUNT_COMMAND_TYPES, "account_id"),
    )
    for name, topic, registry, key_field in readers:
        _install_reader(app, runtime, name, topic, registry, key_field)


def _install_reader(app: faust.App, runtime: Runtime, name: str, topic: str,
                    registry: dict[str, type[Command]], key_field: str) -> None:
    async def read(stream: faust.StreamT) -> None:
        async for events in batches(stream):

            async def handle(event: faust.EventT) -> list[Output]:
                result = read_command(event.message.value, registry, key_field)
                if isinstance(result, Unreadable):
                    runtime.metrics.dead_letter(topic, "unreadable")
                    await runtime.outlet.dead_letter(event, result.reason, "unreadable")
                    return []
                if isinstance(result, Invalid):
                    runtime.metrics.rejected(result.command_type, RejectionReason.INVALID_REQUEST)
                    return [Publish(rejection(result, origin_of(event)))]
                return [hand_over(result, origin_of(event))]

            handled = await runtime.quarantine.each(events, handle)
            await runtime.outlet.send(output for _, outputs in handled for output in outputs)

    runtime.agent(topic, name, read)
