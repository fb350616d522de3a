"""The ledger writer: batches of journal entries into PostgreSQL, with their outbox rows.

One database transaction per batch; the unique transaction id absorbs redeliveries
and repeated commands. Follow-ups are sent only after the commit.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import asyncpg
import faust

from agents.runtime import Runtime
from agents.shell import Delivery, batches, deliveries
from infra.crash import crash_point
from infra.topics import LEDGER_STEPS
from ledger.store import Origin as StoredOrigin
from ledger.store import WriteResult
from models.events import Event
from models.ledger import JournalEntry
from models.ledger_flow import conflict_for, entry_for, follow_ups
from models.outputs import Output
from models.routing import LEDGER_STEP
from models.steps import LedgerStep, Origin

Prepared = tuple[Delivery, LedgerStep, JournalEntry, Event]


async def prepare(delivery: Delivery) -> tuple[LedgerStep, JournalEntry, Event]:
    step = delivery.step(LEDGER_STEP)
    entry, announced = entry_for(step)
    return step, entry, announced


def stored(origin: Origin) -> StoredOrigin:
    return StoredOrigin(topic=origin.topic, partition=origin.partition, offset=origin.offset,
                        index=origin.index)


def outputs_for(step: LedgerStep, entry: JournalEntry, event: Event, result: WriteResult) -> list[Output]:
    if not result.applied and result.stored_fingerprint != entry.fingerprint:
        return conflict_for(step)
    first = result.stored_origin
    origin = Origin(topic=first.topic, partition=first.partition, offset=first.offset, index=first.index)
    return follow_ups(step, entry, event, origin)


def is_repeated_command(delivery: Delivery, entry: JournalEntry, result: WriteResult) -> bool:
    """The same command again (not a redelivery of the first request): answer it with the
    original outcome, which only the outbox holds for a funding."""
    return (not result.applied and result.stored_fingerprint == entry.fingerprint
            and result.stored_origin != stored(delivery.origin))


def install(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings
    metrics = runtime.metrics

    async def write(batch: Sequence[Prepared]) -> list[WriteResult]:
        store = await runtime.store()
        started = time.perf_counter()
        results = await store.write_batch([(entry, stored(delivery.origin))
                                           for delivery, _, entry, _ in batch])
        metrics.ledger_commit.observe(time.perf_counter() - started)
        metrics.ledger_batch_size.observe(len(batch))
        applied = [entry for (_, _, entry, _), result in zip(batch, results, strict=True) if result.applied]
        metrics.ledger_postings.inc(sum(len(entry.postings) for entry in applied))
        return results

    async def write_or_split(batch: list[Prepared]) -> list[tuple[Prepared, WriteResult]]:
        """A permanent error refuses the whole transaction: find the entry at fault by
        writing one at a time, and quarantine it; the others are written."""
        try:
            return list(zip(batch, await write(batch), strict=True))
        except asyncpg.PostgresError as error:
            if len(batch) == 1:
                await runtime.quarantine.quarantine(batch[0][0], error)
                return []
        written = []
        for prepared in batch:
            written.extend(await write_or_split([prepared]))
        return written

    async def write_ledger(stream: faust.StreamT) -> None:
        async for events in batches(stream, settings.ledger_batch_size_max,
                                    settings.ledger_flush_interval_seconds):
            started = time.perf_counter()
            batch = [(delivery, *prepared)
                     for delivery, prepared in await runtime.quarantine.each(deliveries(events), prepare)]
            written = await write_or_split(batch)
            if written:
                crash_point("ledger.after_commit")
            outputs: list[Output] = []
            repeated = []
            for (source, step, entry, event), result in written:
                outputs.extend(outputs_for(step, entry, event, result))
                if is_repeated_command(source, entry, result):
                    repeated.extend(message.event_id for message in entry.outbox)
            await runtime.outlet.send(outputs)
            if repeated:
                await (await runtime.store()).republish(repeated)
            crash_point("ledger.after_send")
            metrics.step_duration.labels("ledger").observe(time.perf_counter() - started)

    runtime.agent(LEDGER_STEPS, "ledger", write_ledger)
