"""The Faust application: configuration, and every part built with what it uses.

`create_app(settings)` builds a worker's app; nothing connects at import time. Each part
gets its collaborators here, and nothing else (cosmicpython's bootstrap): the intake
its key registry, the owner the owners' table, the ledger and the provider calls, the
web surface what it reads.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass, field

import faust
from prometheus_client import CollectorRegistry

from agents import loop, monitor, notify, projection, relay
from agents.intake import Intake, decode_key_use
from agents.outlet import Outlet
from agents.owner import Owner
from agents.psp import CHECK_INTERVAL_SECONDS, Calls
from api import views
from api.gate import Gate
from infra.kafka_transport import deliver_in_batches
from infra.metrics import Metrics
from infra.producer import Producers, partition_for
from infra.topics import ACCOUNT_COMMANDS, APP_ID, PAYMENT_COMMANDS, READ_SIDE_APP_ID, STEPS
from ledger.store import LedgerStore
from models.intake import KeyUse
from models.owner import Limits
from psp import RetryPolicy, build_psp
from settings import Settings
from tables import owners as owners_table
from tables.state import StateTable

log = logging.getLogger(__name__)

# Outbox rows and dead letters can carry large original messages (the broker decides).
MESSAGE_SIZE_MAX_BYTES = 16 * 1024 * 1024
# A batch's state changes of one partition go in one record batch (tables/state.py).
RECORD_BATCH_MAX_BYTES = 8 * 1024 * 1024
# The parts of a worker that send, each with a producer of its own (infra/producer.py).
PARTS = ("owner", "answers", "relay", "web")


@dataclass
class Ledger:
    """The ledger connection pool, opened on first use (the database may start later)."""

    database_url: str
    _store: LedgerStore | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def __call__(self) -> LedgerStore:
        async with self._lock:
            if self._store is None:
                # No deadline: while PostgreSQL is away the agents pause and retry; giving up
                # would let Faust ack a batch whose effects were never written.
                self._store = await LedgerStore.connect(self.database_url, max_size=5,
                                                        retry_deadline_seconds=math.inf)
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()


def create_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> faust.App:
    """The app of a worker of the settings' role (settings.worker_role)."""
    if settings.worker_role == "read-side":
        return create_read_side_app(settings, registry=registry)
    _, database_url = settings.require_infrastructure()
    partitions = settings.partitions
    ledger = Ledger(database_url)
    gate = Gate(ledger, settings.api_rate_per_second, settings.api_rate_burst)
    app = _faust_app(settings, APP_ID, gate)
    deliver_in_batches(app, [PAYMENT_COMMANDS, ACCOUNT_COMMANDS, STEPS])
    metrics = Metrics(registry or CollectorRegistry())

    def partition_of(key: str) -> int:
        return partition_for(key.encode(), partitions)

    producers = Producers(app.producer._new_producer)  # noqa: SLF001 - Faust's settings, TLS and SASL included

    def outlet(part: str) -> Outlet:
        return Outlet(producers.of(part), partitions)

    owners: StateTable[owners_table.Value] = StateTable(
        app, "owners", partitions, owners_table.decode, producers.of("owner"),
        owners_table.locator(partitions))
    keys: StateTable[KeyUse] = StateTable(app, "idempotency_keys", partitions, decode_key_use,
                                          producers.of("owner"))
    psp = build_psp(settings.psp_url)
    calls = Calls(psp, RetryPolicy(), metrics, outlet("answers"), partition_of)
    owner = Owner(owners, ledger, calls, metrics, Limits(settings.risk_max_amount), partition_of)
    intake = Intake(keys, metrics)

    handlers = loop.Topics({PAYMENT_COMMANDS: intake, ACCOUNT_COMMANDS: intake, STEPS: owner})

    async def own(stream: faust.StreamT) -> None:
        await loop.run("owner", stream, handlers, outlet("owner"), metrics, app.consumer.seek)

    loop.install(app, "owner", list(handlers.handlers), own)
    _install_calls(app, calls, owners)
    relay.install(app, database_url, outlet("relay"), ledger, metrics, settings.outbox_retention_hours)
    monitor.install(app, metrics, owners)
    if settings.worker_role == "all":
        _install_read_side(app, ledger, metrics, settings)
    views.install(app, views.Api(app, owners, keys, outlet("web").send_messages, ledger, metrics, gate,
                                 settings.webhook_allow_private))

    @app.task
    async def keep_api_keys_fresh() -> None:
        await gate.keep_fresh()

    @app.task
    async def start_producers() -> None:
        await producers.start(*PARTS)

    @app.on_before_shutdown.connect
    async def close(app: faust.App, **_: object) -> None:
        await psp.close()
        await producers.stop()

    return app


def _faust_app(settings: Settings, app_id: str, gate: Gate) -> faust.App:
    """A Faust app (its consumer group: `app_id`) configured as every worker's is."""
    bootstrap, _ = settings.require_infrastructure()
    partitions = settings.partitions
    return faust.App(
        app_id,
        broker=[f"payments-kafka://{server}" for server in bootstrap.split(",")],
        # TLS and SASL (PAYMENTS_KAFKA_*): every consumer, producer and admin client Faust
        # makes reads them, so do the producers and probes built from Faust's (infra/).
        broker_credentials=settings.kafka_credentials(),
        store=f"payments-{settings.table_store}://",
        topic_partitions=partitions,
        topic_disable_leader=True,
        topic_allow_declare=False,  # every topic is created up front with its partition count
        web_port=settings.web_port,
        web_bind="0.0.0.0",
        datadir=str(settings.data_dir / "faust"),
        producer_max_request_size=MESSAGE_SIZE_MAX_BYTES,
        producer_max_batch_size=RECORD_BATCH_MAX_BYTES,
        consumer_max_fetch_size=MESSAGE_SIZE_MAX_BYTES,
        broker_max_poll_records=250,
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.instance_id,
        table_standby_replicas=settings.standby_replicas,
        TableManager="tables.manager:PromptTableManager",
        # Events (each a partition's records of one fetch): room for every batched partition's
        # batches in hand (infra/kafka_transport.py, 4.) below Faust's pressure mark (/1.25),
        # so its pause, whose resume can be missed, does not trigger.
        stream_buffer_maxsize=max(256, 16 * partitions),
        web_application_options={"middlewares": [gate.middleware]},
    )


def create_read_side_app(settings: Settings, *, registry: CollectorRegistry | None = None) -> faust.App:
    """A worker of the read side only (PAYMENTS_WORKER_ROLE=read-side): the payments' read
    model and the webhooks, in a consumer group of its own (READ_SIDE_APP_ID), with no
    table; its web server answers /healthz and /metrics, and the gate 404s the rest."""
    _, database_url = settings.require_infrastructure()
    ledger = Ledger(database_url)
    gate = Gate(ledger, settings.api_rate_per_second, settings.api_rate_burst)
    app = _faust_app(settings, READ_SIDE_APP_ID, gate)
    metrics = Metrics(registry or CollectorRegistry())
    _install_read_side(app, ledger, metrics, settings)
    monitor.install(app, metrics)
    views.install_open_pages(app, views.OpenPages(app, metrics))

    @app.on_before_shutdown.connect
    async def close(app: faust.App, **_: object) -> None:
        await ledger.close()

    return app


def _install_read_side(app: faust.App, ledger: Ledger, metrics: Metrics, settings: Settings) -> None:
    """The public events folded into the read model and turned into webhook deliveries
    (agents/projection.py), and the dispatcher that sends them (agents/notify.py)."""
    projection.install(app, ledger, metrics, settings.webhook_retention_hours)
    notify.install(app, notify.Dispatcher(
        ledger, metrics, settings.webhook_retry_schedule, settings.webhook_timeout_seconds,
        settings.webhook_concurrency, settings.webhook_disable_after_seconds, settings.webhook_allow_private),
        settings.webhook_retention_hours)


def _install_calls(app: faust.App, calls: Calls, owners: StateTable[owners_table.Value]) -> None:
    @owners.table.on_recover
    async def rescan_after_recovery() -> None:
        calls.rescan_due = True

    def current(payment_id: str, home: int) -> object:
        """The payment's record at its home partition (one this worker processes)."""
        return owners.get(owners_table.payment_key(payment_id), home)

    @app.task
    async def keep_calls_running() -> None:
        """After a recovery (a start, a rebalance), find the in-flight payments of the
        partitions held here; every second, run their calls here and no others."""
        held_before: set[int] = set()
        try:
            while True:
                await asyncio.sleep(CHECK_INTERVAL_SECONDS)
                if app.rebalancing:  # assignment and table state are changing: wait for the end
                    continue
                held = monitor.steps_held(app)
                if calls.rescan_due or held != held_before:  # the latter: should a callback be missed
                    calls.rescan(held, owners.raw_items(owners_table.PAYMENT, held))
                    held_before = held
                await calls.check(held, current)  # type: ignore[arg-type]
        finally:
            calls.stop()
