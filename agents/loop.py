"""The one crash-safety protocol of the worker's loop: decide, send and confirm, record and confirm, ack.

One loop per worker reads the commands and the steps topic together (`Topics` hands
each record to the handler of its topic: intake for commands, the owner for steps), so
every batch pays each broker round trip once, whatever it holds.

The order is the point. The loop takes a batch, decides (the owner also commits its
journal entries to PostgreSQL), sends what the decisions say and waits until the broker
has acknowledged every message, then records the tables' state and waits for the
changelogs, and only then lets Faust ack the batch (by asking for the next one). A crash
at any moment leaves either nothing, or outputs whose receivers recognise a repeat by
its origin: never a recorded state whose messages were lost. Only after the state is
recorded does a handler act outside Kafka and PostgreSQL (a provider call, a void).

A message arrives as a batch of records (infra/kafka_transport.py, batch delivery); a
record of the steps topic holds several steps. `unpack` gives each its position.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import faust
from aiokafka.structs import ConsumerRecord
from faust.types import TP

from agents.outlet import Outlet, Sendable
from infra.crash import crash_point
from infra.kafka_transport import RecordBatchMessage
from infra.metrics import Metrics
from models.steps import Origin
from tables.state import Changes, StateTable

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")

# An exception escaping an agent makes Faust ack the batch: the worker exits instead
# (EX_SOFTWARE), so the batch is redelivered after the restart.
AGENT_CRASHED_EXIT_CODE = 70
# Events per agent batch (an event is one partition's records of one fetch) and how long
# to wait for more once one is in hand: a fetch hands over all its partitions at once.
BATCH_EVENTS_MAX = 8
BATCH_WITHIN_SECONDS = 0.002


@dataclass(frozen=True, slots=True)
class Delivery(Generic[ItemT]):
    """One item as its agent receives it: a command, or one step of a batch of steps."""

    at: Origin  # where it was read: the record's position, and its index in the record
    record: ConsumerRecord
    item: ItemT


def records_of(events: Sequence[faust.EventT]) -> list[ConsumerRecord]:
    return [record for event in events for record in event.message.records]


def unpack(events: Sequence[faust.EventT], split: Callable[[str, bytes | None], list[ItemT]]
           ) -> list[Delivery[ItemT]]:
    """The items of a batch, in order, each with its position (`split` reads a record of a
    topic into its items)."""
    found = []
    for record in records_of(events):
        for index, item in enumerate(split(record.topic, record.value)):
            found.append(Delivery(Origin(record.topic, record.partition, record.offset, index), record, item))
    return found


@dataclass
class Done:
    """What a handler made of a batch: to send, then to record (in `table`), then to do."""

    table: StateTable[Any]
    outputs: list[Sendable] = field(default_factory=list)
    changes: Changes = field(default_factory=dict)
    parsed: dict[bytes, Any] = field(default_factory=dict)
    after: Callable[[], Awaitable[None]] | None = None


class Handler(Protocol[ItemT]):
    def split(self, value: bytes | None) -> list[ItemT]: ...

    async def take(self, deliveries: list[Delivery[ItemT]]) -> Done: ...


@dataclass
class Topics:
    """Several handlers in one loop, each for the topics it reads: one batch, one send and
    one record for all of them, where a loop each paid every broker round trip twice."""

    handlers: dict[str, Handler[Any]]

    def split(self, topic: str, value: bytes | None) -> list[Any]:
        return self.handlers[topic].split(value)

    async def take(self, deliveries: list[Delivery[Any]]) -> list[Done]:
        by_handler: dict[int, tuple[Handler[Any], list[Delivery[Any]]]] = {}
        for delivery in deliveries:
            handler = self.handlers[delivery.at.topic]
            by_handler.setdefault(id(handler), (handler, []))[1].append(delivery)
        return [await handler.take(mine) for handler, mine in by_handler.values()]


SKIP = -1  # InOrder.admit: a batch of a run that ended, queued before its partition was read again


@dataclass
class InOrder:
    """Per source partition, the batch the loop takes next: a batch that does not follow on
    is not taken, and its partition is read again from where the loop stands.

    Decisions about repeats rest on it: a home treats a step whose origin is at or below
    the highest it applied from the same source partition as applied (models/owner.py,
    Tracking). Faust can drop a delivered batch (an event of a generation that ended is
    discarded by the stream) while later ones of the same partition arrive; taken, they
    would raise that mark past the dropped batch's steps, and when it was read again its
    hand-overs would be skipped as repeats: payments lost (`payments chaos`, kill9 seed
    10). Each stretch of delivery starts at a known offset and numbers its batches
    (infra/kafka_transport.py, Run), so a hole shows."""

    position: dict[TP, tuple[int, int, int]] = field(default_factory=dict)  # tp -> (run, next seq, offset)
    # Per partition read again: its runs up to this one are over (their queued batches are skipped).
    ended: dict[TP, int] = field(default_factory=dict)

    def admit(self, message: RecordBatchMessage) -> int | None:
        """None when the batch follows on; SKIP for a batch of a run that ended; else the
        offset to read its partition again from."""
        if message.run is None:
            return None
        if message.run.number <= self.ended.get(message.tp, 0):
            return SKIP
        known = self.position.get(message.tp)
        if known is not None and known[0] == message.run.number:
            _, expected, resume_at = known
        else:
            expected, resume_at = 1, message.run.start
        if message.seq > expected:
            self.ended[message.tp] = message.run.number
            return resume_at
        if message.seq == expected:
            self.position[message.tp] = (message.run.number, expected + 1, message.offset + 1)
        return None


async def admitted(events: Sequence[faust.EventT], in_order: InOrder,
                   seek: Callable[[TP, int], Awaitable[None]]) -> list[faust.EventT]:
    """The events that follow on; each partition with a hole is read again from it."""
    taken, holes = [], {}
    for event in events:
        message = event.message
        if message.tp in holes:
            continue
        again = in_order.admit(message) if isinstance(message, RecordBatchMessage) else None
        if again is None:
            taken.append(event)
        elif again != SKIP:
            holes[message.tp] = again
            log.warning("%s: a batch before offset %d never reached the loop (dropped by the stream): "
                        "reading again from %d", message.tp, message.first_offset, again)
    for tp, offset in holes.items():
        await seek(tp, offset)
    return taken


async def run(name: str, stream: faust.StreamT, handlers: Topics, outlet: Outlet, metrics: Metrics,
              seek: Callable[[TP, int], Awaitable[None]]) -> None:
    """The loop; `seek` reads a partition again from an offset (the consumer's)."""
    phase = functools.partial(metrics.batch_phase.labels, name)
    size = metrics.batch_size.labels(name)
    in_order = InOrder()
    async for batch in stream.take_events(BATCH_EVENTS_MAX, BATCH_WITHIN_SECONDS):
        events = await admitted(batch, in_order, seek)
        if not events:
            continue
        started = time.perf_counter()
        deliveries = unpack(events, handlers.split)
        size.observe(len(deliveries))
        dones = await handlers.take(deliveries)
        for done in dones:
            done.table.apply(done.changes, done.parsed)
        decided = time.perf_counter()
        await outlet.send([output for done in dones for output in done.outputs])
        crash_point(f"{name}.after_send")
        sent = time.perf_counter()
        await asyncio.gather(*(done.table.record(done.changes) for done in dones))
        crash_point(f"{name}.after_record")
        recorded = time.perf_counter()
        for done in dones:
            if done.after is not None:
                await done.after()
        phase("decide").observe(decided - started)
        phase("send").observe(sent - decided)
        phase("record").observe(recorded - sent)
        finished = time.perf_counter()
        phase("after").observe(finished - recorded)
        metrics.step_duration.labels(name).observe(finished - started)


def install(app: faust.App, name: str, topics: Sequence[str], body: Callable[[faust.StreamT], Awaitable[None]]
            ) -> None:
    """A money-moving agent: one actor per worker (concurrency 1), so offsets are acked in
    order, and never acked past a failure (the worker exits instead)."""
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")

    async def guarded(stream: faust.StreamT) -> None:
        try:
            await body(stream)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - anything here would be acked past
            log.critical("agent %s failed; exiting so its batch is redelivered", name, exc_info=True)
            os._exit(AGENT_CRASHED_EXIT_CODE)

    guarded.__name__ = name
    app.agent(source, name=name, concurrency=1)(guarded)
