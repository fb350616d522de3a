"""The ledger writer: batches of journal entries into PostgreSQL, with their outbox rows.

One database transaction per batch; the unique transaction id absorbs redeliveries
and repeated commands. Follow-ups are sent only after the commit.
"""

from __future__ import annotations

import time

import faust

from agents.runtime import Runtime
from agents.shell import origin_of
from infra.topics import LEDGER_STEPS
from ledger.store import Origin as StoredOrigin
from models.ledger_flow import conflict_for, entry_for, follow_ups
from models.outputs import Output
from models.routing import LEDGER_STEP
from models.steps import Origin


def stored(origin: Origin) -> StoredOrigin:
    return StoredOrigin(topic=origin.topic, partition=origin.partition, offset=origin.offset)


def install(app: faust.App, runtime: Runtime) -> None:
    settings = runtime.settings

    async def write_ledger(stream: faust.StreamT) -> None:
        batches = stream.take_events(settings.ledger_batch_size_max,
                                     within=settings.ledger_flush_interval_seconds)
        async for events in batches:
            started = time.perf_counter()
            steps = [LEDGER_STEP.validate_json(event.message.value) for event in events]
            built = [entry_for(step) for step in steps]
            origins = [origin_of(event) for event in events]
            store = await runtime.store()
            committing = time.perf_counter()
            results = await store.write_batch(
                [(entry, stored(origin)) for (entry, _), origin in zip(built, origins, strict=True)])
            runtime.metrics.ledger_commit.observe(time.perf_counter() - committing)
            runtime.metrics.ledger_batch_size.observe(len(events))
            outputs: list[Output] = []
            for step, (entry, event), result in zip(steps, built, results, strict=True):
                if result.applied:
                    runtime.metrics.ledger_postings.inc(len(entry.postings))
                elif result.stored_fingerprint != entry.fingerprint:
                    outputs.extend(conflict_for(step))
                    continue
                first = result.stored_origin
                first_origin = Origin(topic=first.topic, partition=first.partition, offset=first.offset)
                outputs.extend(follow_ups(step, entry, event, first_origin))
            await runtime.outlet.send(outputs)
            runtime.metrics.step_duration.labels("ledger").observe(time.perf_counter() - started)

    app.agent(runtime.source(LEDGER_STEPS), name="ledger", concurrency=1)(write_ledger)
