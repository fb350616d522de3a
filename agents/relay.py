"""The outbox relay, as a task of every worker: the safety net of the outbox.

The owner publishes the outbox rows of its entries itself, in the batch that committed
them, and marks them published (agents/owner.py). The relay publishes what is still
unmarked after CLAIM_AFTER_SECONDS: rows whose batch was cut short after its commit by
a crash (its redelivery publishes them too: consumers dedupe on event_id), or written by
anything else.

Published rows are pruned once they are older than the retention (`retention_hours`; 0
keeps them): the outbox is a queue, not the record. What outlives it: the ledger's
entries, and each payment's outcome in its record (models/payment.py), from which a
repeated command is answered; a repeated funding whose row is gone is answered with its
event rebuilt, under the same event_id (agents/owner.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import faust

from agents import pruning
from agents.outlet import Outlet
from infra.crash import crash_point
from infra.metrics import Metrics
from infra.producer import Outgoing
from ledger.outbox import OutboxRelay, OutboxRow
from ledger.store import LedgerStore

POLL_INTERVAL_SECONDS = 1.0
CLAIM_AFTER_SECONDS = 10.0  # a batch marks its rows within milliseconds of their commit


def install(app: faust.App, database_url: str, outlet: Outlet, store: Callable[[], Awaitable[LedgerStore]],
            metrics: Metrics, retention_hours: float) -> None:
    async def publish(rows: Sequence[OutboxRow]) -> None:
        await outlet.send_messages([Outgoing(row.topic, row.key.encode(), row.value, row.headers)
                                    for row in rows])
        crash_point("relay.after_publish")

    relay = OutboxRelay(database_url, publish, poll_interval_seconds=POLL_INTERVAL_SECONDS,
                        claim_after_seconds=CLAIM_AFTER_SECONDS, listen=False)

    @app.task
    async def relay_outbox() -> None:
        await relay.run()

    @app.timer(interval=5.0)
    async def observe_outbox() -> None:
        rows, age = await (await store()).outbox_backlog()
        metrics.outbox_backlog_rows.set(rows)
        metrics.outbox_oldest_age.set(age)

    async def prune(older_than_seconds: float, limit: int) -> int:
        return await (await store()).prune_outbox(older_than_seconds, limit)

    pruning.install(app, "outbox", prune, metrics.outbox_pruned, retention_hours)
