"""What every agent shares: sending outputs durably, recording table state, dead letters.

The order is the point. An agent decides on a batch, sends what the decisions say and
waits until the broker has acknowledged every message, then writes its table state
and waits for the changelog too, and only then lets Faust ack the batch. A crash at
any moment therefore leaves either nothing, or outputs whose receivers recognise a
repeat by its origin: never a recorded state whose messages were lost.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import faust
from faust.types import EventT

from infra.delivery import confirm
from infra.topics import ACCOUNT_STEPS, DEAD_LETTER, LEDGER_STEPS, PAYMENT_STEPS, PSP_STEPS
from models.codec import dumps, event_headers
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


class Outlet:
    """Sends outputs and dead letters, and waits for the broker to acknowledge them."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._topics: dict[str, faust.TopicT] = {}

    def topic(self, name: str) -> faust.TopicT:
        if name not in self._topics:
            self._topics[name] = self.app.topic(
                name, key_serializer="raw", value_serializer="raw", internal=False
            )
        return self._topics[name]

    async def send(self, outputs: Iterable[Output]) -> None:
        pending = [await self._send_one(output) for output in outputs]
        await confirm(pending)

    async def _send_one(self, output: Output) -> asyncio.Future[Any]:
        if isinstance(output, Publish):
            return await self.publish_soon(output.event)
        assert isinstance(output, Dispatch)
        return await self.produce(ROUTES[output.route], output.key.encode(), dumps(output.step))

    async def publish_soon(self, event: Event) -> asyncio.Future[Any]:
        return await self.produce(event.topic, event.key.encode(), dumps(event), event_headers(event))

    async def produce(self, topic: str, key: bytes | None, value: bytes | None,
                      headers: list[tuple[str, bytes]] | None = None, partition: int | None = None
                      ) -> asyncio.Future[Any]:
        """Straight to the producer: `Topic.send` wraps every message in Faust's futures and
        callbacks, which cost more CPU than the send itself and serve nothing here."""
        return await self.app.producer.send(topic, key, value, partition, None, headers)

    async def dead_letter(self, event: EventT, reason: str, code: str) -> None:
        message = event.message
        headers = [
            ("error_code", code.encode()), ("error", reason.encode()[:4096]),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
        ]
        future = await self.topic(DEAD_LETTER).send(
            key=message.key, value=message.value, headers=headers
        )
        await confirm([future])


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

    async def each(self, events: Sequence[EventT], handle: Callable[[EventT], Awaitable[T]]
                   ) -> list[tuple[EventT, T]]:
        handled = []
        for event in events:
            try:
                handled.append((event, await handle(event)))
            except Exception as error:  # noqa: BLE001 - quarantined with its reason
                await self.quarantine(event, error)
        return handled

    async def quarantine(self, event: EventT, error: Exception) -> None:
        log.error("step at %s quarantined: %r", origin_of(event), error, exc_info=error)
        self.on_dead_letter(event.message.topic, type(error).__name__)
        await self.outlet.dead_letter(event, repr(error)[:2000], "step_failed")
