"""Sending what a batch decided: events one per message, steps in batches, dead letters.

Everything goes out through one BatchProducer call (one record batch per partition) and
is confirmed together: the agents' protocol (agents/loop.py) waits for the broker's
acknowledgements before it records the batch's state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from infra.delivery import confirm
from infra.producer import BatchProducer, Outgoing, partition_for
from infra.topics import DEAD_LETTER, STEPS
from models.codec import dumps, event_headers
from models.events import Event
from models.outputs import Dispatch, Output, Publish
from models.steps import STEPS_PER_MESSAGE_MAX, OwnerStep, encode_batch


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message (or one step of a batch) that no retry can fix, kept as it came, with why."""

    record: ConsumerRecord
    value: bytes | None  # the message's bytes, or the one step's
    index: int | None  # the step's place in its message; None for a whole message
    reason: str
    code: str  # unreadable | step_failed


Sendable = Output | DeadLetter | Outgoing  # the last: a message already encoded (an outbox row)


def event_message(event: Event) -> Outgoing:
    return Outgoing(event.topic, event.key.encode(), dumps(event), event_headers(event))


def dead_letter_message(letter: DeadLetter) -> Outgoing:
    record = letter.record
    headers = [
        ("error_code", letter.code.encode()), ("error", letter.reason.encode()[:4096]),
        ("source_topic", record.topic.encode()), ("source_partition", str(record.partition).encode()),
        ("source_offset", str(record.offset).encode()),
    ]
    if letter.index is not None:
        headers.append(("source_index", str(letter.index).encode()))
    return Outgoing(DEAD_LETTER, record.key, letter.value, headers)


def step_messages(dispatches: Iterable[Dispatch], partitions: int) -> list[Outgoing]:
    """One message per steps-topic partition (more past STEPS_PER_MESSAGE_MAX), each step
    in the partition its key hashes to, in order."""
    grouped: dict[int, list[tuple[str, OwnerStep]]] = {}
    for dispatch in dispatches:
        grouped.setdefault(partition_for(dispatch.key.encode(), partitions), []).append(
            (dispatch.key, dispatch.step))
    return [Outgoing(STEPS, steps[start][0].encode(),
                     encode_batch([step for _, step in steps[start:start + STEPS_PER_MESSAGE_MAX]]),
                     partition=partition)
            for partition, steps in grouped.items()
            for start in range(0, len(steps), STEPS_PER_MESSAGE_MAX)]


class Outlet:
    def __init__(self, producer: Callable[[], Awaitable[BatchProducer]], partitions: int) -> None:
        self._producer = producer
        self.partitions = partitions

    def messages(self, outputs: Sequence[Sendable]) -> list[Outgoing]:
        messages, dispatches = [], []
        for output in outputs:
            if isinstance(output, Publish):
                messages.append(event_message(output.event))
            elif isinstance(output, Dispatch):
                dispatches.append(output)
            elif isinstance(output, Outgoing):
                messages.append(output)
            else:
                messages.append(dead_letter_message(output))
        return messages + step_messages(dispatches, self.partitions)

    async def send(self, outputs: Sequence[Sendable]) -> None:
        """Send and wait until the broker has acknowledged every message."""
        if outputs:
            await self.send_messages(self.messages(outputs))

    async def send_messages(self, messages: Sequence[Outgoing]) -> None:
        await confirm(await (await self._producer()).send(messages))
