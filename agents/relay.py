"""The outbox relay, as a task of every worker: committed outbox rows to Kafka, in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import faust

from agents.outlet import Outlet
from infra.crash import crash_point
from infra.metrics import Metrics
from infra.producer import Outgoing
from ledger.outbox import OutboxRelay, OutboxRow
from ledger.store import LedgerStore

POLL_INTERVAL_SECONDS = 0.5  # LISTEN/NOTIFY wakes it at once; the poll is the fallback


def install(app: faust.App, database_url: str, outlet: Outlet, store: Callable[[], Awaitable[LedgerStore]],
            metrics: Metrics) -> None:
    async def publish(rows: Sequence[OutboxRow]) -> None:
        await outlet.send_messages([Outgoing(row.topic, row.key.encode(), row.value, row.headers)
                                    for row in rows])
        crash_point("relay.after_publish")

    relay = OutboxRelay(database_url, publish, poll_interval_seconds=POLL_INTERVAL_SECONDS)

    @app.task
    async def relay_outbox() -> None:
        await relay.run()

    @app.timer(interval=5.0)
    async def observe_outbox() -> None:
        rows, age = await (await store()).outbox_backlog()
        metrics.outbox_backlog_rows.set(rows)
        metrics.outbox_oldest_age.set(age)
