"""The intake: read upstream commands, answer bad ones, hand good ones to their owners.

Unreadable bytes go to the dead-letter topic untouched; invalid commands are answered
with CommandRejected(invalid_request). A payment command whose idempotency key was first
used for another payload is answered with CommandRejected(idempotency_conflict) and
handed to nobody (models/intake.py). Valid commands become steps of their owners'
partitions: a payment goes to its debtor's home, with a directory entry at the partition
its id hashes to; a refund to that entry, which knows the payment's home.

Crash safety is the loop's (agents/loop.py): a key is registered only once its hand-over
is acknowledged. A crash in between redelivers the batch, the key is still unknown, and
the same first command (earliest in the partition) is handed over again, which its owner
recognises by its origin; a later conflicting one is refused again under the same
event_id (rejection_id_for: key, partition and offset). So the registry gives the same
answer on every replay.
"""

from __future__ import annotations

import msgspec

from agents.loop import Delivery, Done
from agents.outlet import DeadLetter
from infra.metrics import Metrics
from infra.topics import PAYMENT_COMMANDS
from models.codec import Invalid, Unreadable, read_command
from models.commands import ACCOUNT_COMMANDS, RefundPayment, RequestPayment
from models.commands import PAYMENT_COMMANDS as PAYMENT_COMMAND_TYPES
from models.events import CommandRejected, RejectionReason
from models.intake import KeyUse, hand_over, rejection, screen_key
from models.outputs import Publish
from tables.state import StateTable

KEY_USE = msgspec.json.Decoder(KeyUse)
_ENCODER = msgspec.json.Encoder()


def decode_key_use(key: bytes, raw: bytes) -> KeyUse:
    return KEY_USE.decode(raw)


class Intake:
    def __init__(self, keys: StateTable[KeyUse], metrics: Metrics) -> None:
        self.keys = keys
        self.metrics = metrics

    def split(self, value: bytes | None) -> list[bytes | None]:
        return [value]  # one command per message

    async def take(self, deliveries: list[Delivery[bytes | None]]) -> Done:
        done = Done(self.keys)
        registered: dict[bytes, KeyUse] = {}  # this batch's first uses, before they are recorded
        for delivery in deliveries:
            payments = delivery.at.topic == PAYMENT_COMMANDS
            registry = PAYMENT_COMMAND_TYPES if payments else ACCOUNT_COMMANDS
            command = read_command(delivery.item, registry, "idempotency_key" if payments else "account_id")
            if isinstance(command, Unreadable):
                self.metrics.dead_letter(delivery.at.topic, "unreadable")
                done.outputs.append(
                    DeadLetter(delivery.record, delivery.item, None, command.reason, "unreadable")
                )
                continue
            if isinstance(command, Invalid):
                self.metrics.rejected(command.command_type, RejectionReason.INVALID_REQUEST)
                done.outputs.append(Publish(rejection(command, delivery.at)))
                continue
            fingerprint = command.fingerprint()
            if isinstance(command, RequestPayment | RefundPayment):
                key = command.idempotency_key.encode()
                first = registered.get(key) or self.keys.get(key, delivery.at.partition)
                use = screen_key(first, command, fingerprint, delivery.at)
                if isinstance(use, CommandRejected):
                    self.metrics.rejected(command.type, RejectionReason.IDEMPOTENCY_CONFLICT)
                    done.outputs.append(Publish(use))
                    continue
                if first is None:
                    registered[key] = use
                    done.changes.setdefault(delivery.at.partition, {})[key] = _ENCODER.encode(use)
                    done.parsed[key] = use
            done.outputs.extend(hand_over(command, fingerprint, delivery.at))
        return done
