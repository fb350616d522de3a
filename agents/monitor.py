"""What the worker watches about itself: consumer lag, holds in flight, stalled partitions.

A partition can stall after a rebalance: Faust drops the events queued for its streams,
and when its seek back to the committed offset fails ("exception performing seek when
flow not active") the consumer goes on from where it had read, so the dropped events
are never delivered and the committed offset can never move again. A partition whose
committed offset has not moved for STALL_SECONDS while events wait is sought back to
its committed offset: the events are read again (repeats are harmless: every handler is
idempotent) and the flow resumes. Each such repair is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faust
from faust.types import TP

from agents.runtime import Runtime
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS, STEP_TOPICS

log = logging.getLogger(__name__)

WATCHED_TOPICS = frozenset({ACCOUNT_COMMANDS, PAYMENT_COMMANDS, *STEP_TOPICS})
STALL_SECONDS = 30.0


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


def install(app: faust.App, runtime: Runtime) -> None:
    progress = Progress()
    metrics = runtime.metrics

    @app.timer(interval=2.0)
    async def watch_consumer() -> None:
        consumer = app.consumer
        partitions = [tp for tp in consumer.assignment() if tp.topic in WATCHED_TOPICS]
        if not partitions or app.rebalancing:
            return
        highwaters = await consumer.highwaters(*partitions)
        now = time.monotonic()
        for tp in partitions:
            committed = consumer._committed_offset.get(tp) or 0  # noqa: SLF001 - no public view
            lag = max(0, (highwaters.get(tp) or 0) - committed)
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(lag)
            stalled = progress.stalled_for(tp, committed, now) if lag else 0.0
            if stalled >= STALL_SECONDS:
                log.error("partition %s has %d messages waiting and its offset has not moved for %.0fs "
                          "(committed %s, read %s): reading it again from the committed offset",
                          tp, lag, stalled, committed, consumer._read_offset.get(tp))  # noqa: SLF001
                # A partition whose stream buffer filled is dropped from the fetch set until
                # the buffer drains; if that notice is lost in a rebalance it is never fetched
                # again. Resuming an active partition changes nothing.
                consumer.resume_partitions({tp})
                await consumer.seek(tp, committed)
                progress.seen.pop(tp, None)

    @app.timer(interval=5.0)
    async def count_holds() -> None:
        holds = sum(len(state.reservations) for _, state in runtime.accounts.items())
        metrics.reservations_in_flight.set(holds)
