"""What the worker watches about itself: consumer lag, holds in flight, stalled partitions.

A partition can stall after a rebalance: Faust drops the events queued for its streams,
and when its seek back to the committed offset fails ("exception performing seek when
flow not active") the consumer goes on from where it had read, so the dropped events
are never delivered and the committed offset can never move again; or a partition paused
while its stream buffer was full is never resumed. A partition whose committed offset
has not moved for STALL_SECONDS while messages wait or while it is not fetched, and of
which this worker holds no message in hand, is resumed and sought back to its committed
offset: the messages are read again (repeats are harmless: every handler is idempotent)
and the flow resumes. Each such repair is logged.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faust
from aiokafka.errors import IllegalStateError
from faust.types import TP
from faust.types.transports import ConsumerT

from agents import projection
from infra.metrics import Metrics
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS, STEPS
from tables.owners import ACCOUNT, Value
from tables.state import StateTable

log = logging.getLogger(__name__)

# The batched topics (infra/kafka_transport.py): the owner's loop's, and the payments' view's.
WATCHED_TOPICS = frozenset({ACCOUNT_COMMANDS, PAYMENT_COMMANDS, STEPS, *projection.TOPICS})
# In the stored JSON of every account that holds nothing: most of them, at any moment.
NO_HOLDS_MARK = b'"holds":{}'

# Short: a partition is only repaired when no message of it is in hand (a batch held up by
# a database outage is busy, not stalled), and every second a stall lasts, payments wait.
STALL_SECONDS = 5.0
POSITION_WAIT_SECONDS = 1.0
LOOP_PROBE_SECONDS = 0.01


def waiting(committed: int, end: int | None, fetched: int | None) -> int:
    """Messages past the committed offset. The embedded broker reports a partition's end
    as the base offset of its last record batch plus one, so the messages of a last batch
    holding several can be missing from it; the consumer cannot have fetched past messages
    that do not exist."""
    return max(0, max(end or 0, fetched or 0) - committed)


@dataclass
class Progress:
    """Per partition: the committed offset last seen, and since when it has not moved."""

    seen: dict[TP, tuple[int, float]] = field(default_factory=dict)

    def stalled_for(self, tp: TP, committed: int, now: float) -> float:
        previous = self.seen.get(tp)
        if previous is None or previous[0] != committed:
            self.seen[tp] = (committed, now)
            return 0.0
        return now - previous[1]


async def fetch_position(consumer: ConsumerT, tp: TP) -> int | None:
    """The offset the consumer fetches next; None while it has none (it waits for one)."""
    try:
        async with asyncio.timeout(POSITION_WAIT_SECONDS):
            return await consumer.position(tp)
    except (IllegalStateError, TimeoutError):  # no longer assigned, or no position yet
        return None


def is_fetched(consumer: ConsumerT, tp: TP) -> bool:
    """Whether the consumer fetches `tp`: Faust stops while a rebalance runs and while the
    partition's stream buffer is full, and a partition left paused can look idle."""
    active = consumer._active_partitions  # noqa: SLF001 - no public view
    return tp not in consumer._paused_partitions and (active is None or tp in active)  # noqa: SLF001


def in_hand(consumer: ConsumerT, tp: TP, collect: Callable[[], object] = gc.collect) -> bool:
    """Whether a message of `tp` was delivered to a stream and not acknowledged yet: then
    its agent is busy with it (or will be), and seeking back would only read it twice.
    What seems in hand may be events Faust dropped in a rebalance, lingering in reference
    cycles: they are collected before the second look. A collection walks the whole heap
    (~13% of a busy worker's CPU when it ran for every look), so only then, and at most
    once per round of looks (`collect`)."""

    def held() -> bool:
        return any(message.tp == tp and not message.acked
                   for message in list(consumer._unacked_messages))  # noqa: SLF001 - no public view

    if not held():
        return False
    collect()
    return held()


async def watch_partition(consumer: ConsumerT, tp: TP, end: int | None, now: float, progress: Progress,
                          collect: Callable[[], object] = gc.collect) -> int:
    """One look at `tp` (its broker end offset: `end`): repairs it when stalled; returns its lag."""
    committed = consumer._committed_offset.get(tp) or 0  # noqa: SLF001 - no public view
    lag = waiting(committed, end, await fetch_position(consumer, tp))
    fetched = is_fetched(consumer, tp)
    stalled = progress.stalled_for(tp, committed, now) if lag or not fetched else 0.0
    if stalled >= STALL_SECONDS and not in_hand(consumer, tp, collect):
        log.error("partition %s has %d messages waiting%s and its offset has not moved for %.0fs "
                  "(committed %s, read %s): reading it again from the committed offset",
                  tp, lag, "" if fetched else ", is not fetched,", stalled, committed,
                  consumer._read_offset.get(tp))  # noqa: SLF001
        # A partition whose stream buffer filled is dropped from the fetch set until the
        # buffer drains; if that notice is lost in a rebalance it is never fetched again.
        # Resuming an active partition changes nothing.
        consumer.resume_partitions({tp})
        await consumer.seek(tp, committed)
        progress.seen.pop(tp, None)
    return lag


def steps_held(app: faust.App) -> set[int]:
    """The partitions of the steps topic this worker processes: the homes it holds."""
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == STEPS}


def holds_in(table: StateTable[Value], held: set[int]) -> int:
    """The holds of the accounts of the partitions `held` here; those holding nothing are not parsed."""
    holds = 0
    for key, stored in table.raw_items(ACCOUNT, held):
        if NO_HOLDS_MARK not in stored:
            account = table.get(key)
            holds += len(account.holds) if account is not None else 0  # type: ignore[union-attr]
    return holds


def install(app: faust.App, metrics: Metrics, owners: StateTable[Value] | None = None) -> None:
    """The consumer's watch (lag, stalls) and the loop's; the holds of `owners`, if any
    (a read side worker has no table)."""
    progress = Progress()

    @app.timer(interval=2.0)
    async def watch_consumer() -> None:
        consumer = app.consumer
        partitions = [tp for tp in consumer.assignment() if tp.topic in WATCHED_TOPICS]
        if not partitions or app.rebalancing:
            progress.seen.clear()  # a stall is timed from a settled assignment
            return
        highwaters = await consumer.highwaters(*partitions)
        now = time.monotonic()
        collect = functools.cache(gc.collect)  # at most once this round
        for tp in partitions:
            lag = await watch_partition(consumer, tp, highwaters.get(tp), now, progress, collect)
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)

    @app.task
    async def watch_loop() -> None:
        """The event loop's lag: how late a short sleep wakes up. Every batch, call and
        request of the worker waits that long on top of its own time."""
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LOOP_PROBE_SECONDS)
            metrics.loop_lag.observe(max(0.0, time.perf_counter() - started - LOOP_PROBE_SECONDS))

    if owners is None:
        return

    @app.timer(interval=5.0)
    async def count_holds() -> None:
        metrics.reservations_in_flight.set(holds_in(owners, steps_held(app)))
