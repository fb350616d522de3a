"""Intake: read upstream commands, answer bad ones, hand good ones to their owner.

Unreadable bytes go to the dead-letter topic untouched; invalid commands are answered
with CommandRejected(invalid_request). Account commands are handed over statelessly.

Payment commands pass one more check: the table `idempotency_keys` remembers, per
key, the first command handed over with it (models/intake.py). A later command with
the same key and another payload (another refund amount, a refund of another payment,
a RequestPayment key reused by a RefundPayment or the reverse) is answered with
CommandRejected(idempotency_conflict) and handed to no owner. The command topic is
keyed by idempotency key, so each key has one reader: its partition's, in order.
The payments agent keeps its own conflict check: a key is registered only after its
first hand-over, and keys used before this table existed are not in it.

Crash safety follows the shell's order (send, then record, then ack). A key is
registered only after its hand-over was acknowledged; a crash in between redelivers
the batch, the key is still unknown, and the same first command (earliest in the
partition) is handed over again, which its owner recognises as a repeat; a later
conflicting one is refused again under the same event_id (rejection_id_for: key,
partition and offset). So the registry gives the same answer on every replay.
"""

from __future__ import annotations

from functools import partial

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
from models.intake import KeyUse, PaymentCommand, screen_key
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_id_for
from models.steps import FundAccountOp, OpenAccountOp, Origin, PaymentSubmitted, RefundSubmitted


def rejection(invalid: Invalid, origin: Origin) -> CommandRejected:
    subject = invalid.idempotency_key or invalid.account_id or ""
    return CommandRejected(
        event_id=rejection_id_for(subject, origin.place),
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


KeyChanges = dict[str, tuple[int, KeyUse]]


def screened(runtime: Runtime, changed: KeyChanges, command: PaymentCommand, event: faust.EventT
             ) -> Output:
    """Hand a payment command over unless its key was first used for another payload."""
    origin = origin_of(event)
    key = command.idempotency_key
    first = runtime.idempotency_keys.latest(key, changed)  # this batch's earlier commands too
    decision = screen_key(first, command, origin)
    if isinstance(decision, CommandRejected):
        runtime.metrics.rejected(command.type, RejectionReason.IDEMPOTENCY_CONFLICT)
        return Publish(decision)
    handed_over = hand_over(command, origin)
    if first is None:
        changed[key] = (event.message.partition, decision)
    return handed_over


def install(app: faust.App, runtime: Runtime) -> None:
    readers = (
        ("intake_payments", PAYMENT_COMMANDS, PAYMENT_COMMAND_TYPES, "idempotency_key", True),
        ("intake_accounts", ACCOUNT_COMMANDS, ACCOUNT_COMMAND_TYPES, "account_id", False),
    )
    for name, topic, registry, key_field, keyed in readers:
        _install_reader(app, runtime, name, topic, registry, key_field, keyed)


def _install_reader(app: faust.App, runtime: Runtime, name: str, topic: str,
                    registry: dict[str, type[Command]], key_field: str, keyed: bool) -> None:
    """`keyed`: payment commands, screened against the idempotency-key registry."""

    async def handle(changed: KeyChanges, event: faust.EventT) -> list[Output]:
        result = read_command(event.message.value, registry, key_field)
        if isinstance(result, Unreadable):
            runtime.metrics.dead_letter(topic, "unreadable")
            await runtime.outlet.dead_letter(event, result.reason, "unreadable")
            return []
        if isinstance(result, Invalid):
            runtime.metrics.rejected(result.command_type, RejectionReason.INVALID_REQUEST)
            return [Publish(rejection(result, origin_of(event)))]
        if keyed:
            assert isinstance(result, RequestPayment | RefundPayment)
            return [screened(runtime, changed, result, event)]
        return [hand_over(result, origin_of(event))]

    async def read(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            changed: KeyChanges = {}
            handled = await runtime.quarantine.each(events, partial(handle, changed))
            await runtime.outlet.send(output for _, outputs in handled for output in outputs)
            # Only now, with every hand-over acknowledged: see the module docstring.
            await runtime.idempotency_keys.record(changed)

    runtime.agent(topic, name, read)
