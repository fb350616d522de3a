"""What every agent shares: sending outputs durably, recording table state, dead letters.

The order is the point. An agent decides on a batch, sends what the decisions say and
waits until the broker has acknowledged every message, then writes its table state
and waits for the changelog too, and only then lets Faust ack the batch. A crash at
any moment therefore leaves either nothing, or outputs whose receivers recognise a
repeat by its origin: never a recorded state whose messages were lost.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import faust
import orjson
from aiokafka.partitioner import murmur2
from faust.types import EventT
from pydantic import BaseModel, TypeAdapter

from infra.delivery import confirm
from infra.logs import payment_context
from infra.topics import ACCOUNT_STEPS, DEAD_LETTER, LEDGER_STEPS, PAYMENT_STEPS, PSP_STEPS
from models.codec import STEPS_PER_MESSAGE_MAX, dumps, encode_steps, event_headers, split_steps
from models.events import Event
from models.outputs import Dispatch, Output, Publish, Route
from models.steps import Origin

log = logging.getLogger(__name__)
T = TypeVar("T")

# An exception escaping an agent makes Faust ack the batch: the worker exits instead
# (EX_SOFTWARE), so the batch is redelivered after the restart.
AGENT_CRASHED_EXIT_CODE = 70

ROUTES: dict[Route, str] = {
    "payment": PAYMENT_STEPS, "account": ACCOUNT_STEPS, "psp": PSP_STEPS, "ledger": LEDGER_STEPS,
}
BATCH_SIZE_MAX = 200
BATCH_WITHIN_SECONDS = 0.005


async def batches(stream: faust.StreamT, size: int = BATCH_SIZE_MAX, within: float = BATCH_WITHIN_SECONDS
                  ) -> AsyncIterator[list[EventT]]:
    """Batches of events; Faust acks a batch when the agent asks for the next one.

    Known hazard: take_events acks in a `finally`, so a batch interrupted by an exception
    would be acked; the agents never let one escape (crash_instead_of_ack exits first).
    Acking by hand (noack_take) was tried and stalled a partition after a kill -9 and
    restart (its offset stopped moving), so it is not used."""
    async for events in stream.take_events(size, within):
        yield list(events)


def origin_of(event: EventT) -> Origin:
    message = event.message
    return Origin(topic=message.topic, partition=message.partition, offset=message.offset)


@functools.lru_cache(maxsize=65_536)  # a payment's or an account's steps keep coming back to it
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and Faust's table router) gives a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Delivery:
    """One step as its agent receives it: alone in its message or one of a batch."""

    event: EventT  # the message it came in
    key: str
    origin: Origin  # its own position: the message's, plus its index in the batch
    body: Any  # its JSON, parsed (the raw bytes when the message was not JSON)

    @property
    def partition(self) -> int:
        return self.origin.partition

    def step(self, adapter: TypeAdapter[T]) -> T:
        if isinstance(self.body, bytes | None):
            return adapter.validate_json(self.body or b"")
        return adapter.validate_python(self.body)

    @property
    def value(self) -> bytes | None:
        """The step's bytes, as a dead letter keeps them (re-publishable as they are)."""
        return self.body if isinstance(self.body, bytes | None) else orjson.dumps(self.body)


@dataclass(frozen=True, slots=True)
class StepMessage:
    topic: str
    partition: int
    key: bytes  # its first step's (the partition is given, so the key only names it)
    value: bytes


def step_messages(dispatches: Iterable[Dispatch], partitions: int) -> list[StepMessage]:
    """The messages carrying `dispatches`: one per step-topic partition (more past
    STEPS_PER_MESSAGE_MAX), each step in the partition its key hashes to, in order."""
    grouped: dict[tuple[str, int], list[tuple[str, BaseModel]]] = {}
    for dispatch in dispatches:
        where = (ROUTES[dispatch.route], partition_for(dispatch.key.encode(), partitions))
        grouped.setdefault(where, []).append((dispatch.key, dispatch.step))
    return [StepMessage(topic, partition, steps[start][0].encode(),
                        encode_steps(steps[start:start + STEPS_PER_MESSAGE_MAX]))
            for (topic, partition), steps in grouped.items()
            for start in range(0, len(steps), STEPS_PER_MESSAGE_MAX)]


ItemT = TypeVar("ItemT", EventT, Delivery)  # what an agent handles: a message, or one step of it


def deliveries(events: Iterable[EventT]) -> list[Delivery]:
    """The steps of a batch of step-topic messages, in order. At DEBUG each is logged with
    its payment and position: the trace that shows where a payment's chain of steps stops."""
    found = []
    trace = log.isEnabledFor(logging.DEBUG)
    for event in events:
        at = origin_of(event)
        for index, (key, body) in enumerate(split_steps(event.message.value, event.message.key)):
            # Built, not model_copy'd: a third of the time, for every step of every batch.
            origin = Origin(topic=at.topic, partition=at.partition, offset=at.offset, index=index) \
                if index else at
            found.append(Delivery(event, str(key), origin, body))
            if trace and isinstance(body, dict):
                payment_id = body.get("payment_id")
                log.debug("step %s for %s at %s", body.get("kind"), key, origin.place,
                          extra=payment_context(payment_id) if isinstance(payment_id, str) else None)
    return found


class Outlet:
    """Sends outputs and dead letters, and waits for the broker to acknowledge them.

    Steps go in batches, one message per step-topic partition (models/codec.py
    `encode_steps`); events go one per message, as downstream consumers expect."""

    def __init__(self, app: faust.App, partitions: int) -> None:
        self.app = app
        self.partitions = partitions

    async def send(self, outputs: Iterable[Output]) -> None:
        pending, dispatches = [], []
        for output in outputs:
            if isinstance(output, Publish):
                pending.append(await self.publish_soon(output.event))
            else:
                dispatches.append(output)
        for message in step_messages(dispatches, self.partitions):
            pending.append(await self.produce(message.topic, message.key, message.value,
                                              partition=message.partition))
        await confirm(pending)

    async def publish_soon(self, event: Event) -> asyncio.Future[Any]:
        return await self.produce(event.topic, event.key.encode(), dumps(event), event_headers(event))

    async def produce(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None, partition: int | None = None
                      ) -> asyncio.Future[Any]:
        """Straight to the producer: `Topic.send` wraps every message in Faust's futures and
        callbacks, which cost more CPU than the send itself and serve nothing here."""
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    async def dead_letter(self, item: EventT | Delivery, reason: str, code: str) -> None:
        """The message (or the one step of a batch) as it came, with why and from where."""
        if isinstance(item, Delivery):
            origin, key, value = item.origin, item.key.encode(), item.value
        else:
            origin, key, value = origin_of(item), item.message.key, item.message.value
        headers = [
            ("error_code", code.encode()), ("error", reason.encode()[:4096]),
            ("source_topic", origin.topic.encode()),
            ("source_partition", str(origin.partition).encode()),
            ("source_offset", str(origin.offset).encode()),
        ]
        if isinstance(item, Delivery):
            headers.append(("source_index", str(origin.index).encode()))
        await confirm([await self.produce(DEAD_LETTER, key, value, headers)])


def crash_instead_of_ack(name: str, body: Callable[[faust.StreamT], Awaitable[None]]
                         ) -> Callable[[faust.StreamT], Awaitable[None]]:
    async def guarded(stream: faust.StreamT) -> None:
        try:
            await body(stream)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - anything here would be acked past
            log.critical("agent %s failed; exiting so its batch is redelivered", name, exc_info=True)
            os._exit(AGENT_CRASHED_EXIT_CODE)

    guarded.__name__ = name
    return guarded


class Quarantine:
    """Per-message failures that no retry can fix (a step that does not decode, a
    decision that raises): the message goes to the dead-letter topic with the error,
    and the batch goes on. Nothing is dropped, and one bad message does not wedge a
    partition."""

    def __init__(self, outlet: Outlet, on_dead_letter: Callable[[str, str], None]) -> None:
        self.outlet = outlet
        self.on_dead_letter = on_dead_letter

    async def each(self, items: Sequence[ItemT], handle: Callable[[ItemT], Awaitable[T]]
                   ) -> list[tuple[ItemT, T]]:
        handled = []
        for item in items:
            try:
                handled.append((item, await handle(item)))
            except Exception as error:  # noqa: BLE001 - quarantined with its reason
                await self.quarantine(item, error)
        return handled

    async def quarantine(self, item: EventT | Delivery, error: Exception) -> None:
        origin = item.origin if isinstance(item, Delivery) else origin_of(item)
        log.error("step at %s quarantined: %r", origin.place, error, exc_info=error)
        self.on_dead_letter(origin.topic, type(error).__name__)
        await self.outlet.dead_letter(item, repr(error)[:2000], "step_failed")
