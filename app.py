"""The Faust application: configuration, agents, the outbox relay and the HTTP surface.

`create_app(settings)` builds a worker's app; nothing connects at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import faust
from prometheus_client import CollectorRegistry

from agents import accounts, intake, ledger, monitor, payments, psp, web
from agents.runtime import Runtime
from infra.crash import crash_point
from infra.delivery import confirm
from infra.metrics import Metrics
from infra.topics import APP_ID
from ledger.outbox import OutboxRelay, OutboxRow
from psp import build_psp
from settings import Settings

log = logging.getLogger(__name__)

# Outbox rows and dead letters can carry large original messages (the broker decides).
MESSAGE_SIZE_MAX_BYTES = 16 * 1024 * 1024


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> faust.App:
    bootstrap, database_url = settings.require_infrastructure()
    app = faust.App(
        APP_ID,
        broker=[f"payments-kafka://{server}" for server in bootstrap.split(",")],
        store="memory://",
        topic_partitions=settings.partitions,
        topic_disable_leader=True,
        topic_allow_declare=False,  # every topic is created up front with its partition count
        web_port=settings.web_port,
        web_bind="0.0.0.0",
        datadir=str(settings.data_dir / "faust"),
        producer_max_request_size=MESSAGE_SIZE_MAX_BYTES,
        consumer_max_fetch_size=MESSAGE_SIZE_MAX_BYTES,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        stream_buffer_maxsize=4096,
    )
    runtime = Runtime(app=app, settings=settings, database_url=database_url,
                      metrics=Metrics(registry or CollectorRegistry()), psp=build_psp(settings.psp_url))
    for module in (intake, payments, accounts, psp, ledger):
        module.install(app, runtime)
    _install_outbox_relay(app, runtime)
    monitor.install(app, runtime)
    web.install(app, runtime)
    app.payments_runtime = runtime  # type: ignore[attr-defined]
    return app


def _install_outbox_relay(app: faust.App, runtime: Runtime) -> None:
    async def publish(rows: Sequence[OutboxRow]) -> None:
        futures = [
            await runtime.outlet.produce(row.topic, row.key.encode(), row.value, list(row.headers))
            for row in rows
        ]
        await confirm(futures)
        crash_point("relay.after_publish")

    relay = OutboxRelay(runtime.database_url, publish, poll_interval_seconds=0.5)

    @app.task
    async def relay_outbox() -> None:
        await relay.run()

    @app.timer(interval=5.0)
    async def observe_outbox() -> None:
        rows, age = await (await runtime.store()).outbox_backlog()
        runtime.metrics.outbox_backlog_rows.set(rows)
        runtime.metrics.outbox_oldest_age.set(age)
