"""What the agents share in one worker: settings, tables, adapters, metrics."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import faust

from agents.shell import Outlet, Quarantine, crash_instead_of_ack
from infra.metrics import Metrics
from ledger.store import LedgerStore
from models.account import AccountState
from models.intake import KeyUse
from models.payment import PaymentRecord
from psp import PaymentServiceProvider, RetryPolicy
from settings import Settings
from tables.records import PspOutcomeRecord
from tables.state import StateTable


@dataclass
class Runtime:
    app: faust.App
    settings: Settings
    database_url: str
    metrics: Metrics
    psp: PaymentServiceProvider
    psp_policy: RetryPolicy = field(default_factory=RetryPolicy)
    outlet: Outlet = field(init=False)
    quarantine: Quarantine = field(init=False)
    payments: StateTable[PaymentRecord] = field(init=False)
    accounts: StateTable[AccountState] = field(init=False)
    psp_outcomes: StateTable[PspOutcomeRecord] = field(init=False)
    idempotency_keys: StateTable[KeyUse] = field(init=False)
    _store: LedgerStore | None = None
    _store_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _sources: dict[str, faust.TopicT] = field(default_factory=dict)

    def __post_init__(self) -> None:
        partitions = self.settings.partitions
        self.outlet = Outlet(self.app, partitions)
        self.quarantine = Quarantine(self.outlet, self.metrics.dead_letter)
        self.payments = StateTable(self.app, "payments", PaymentRecord, partitions)
        self.accounts = StateTable(self.app, "accounts", AccountState, partitions)
        self.psp_outcomes = StateTable(self.app, "psp_outcomes", PspOutcomeRecord, partitions)
        self.idempotency_keys = StateTable(self.app, "idempotency_keys", KeyUse, partitions)

    def agent(self, topic: str, name: str, body: Callable[[faust.StreamT], Awaitable[None]]) -> None:
        """Install a money-moving agent: one actor per worker (concurrency 1), so offsets
        are acked in order, and never acked past a failure (it crashes instead)."""
        self.app.agent(self.source(topic), name=name, concurrency=1)(crash_instead_of_ack(name, body))

    def source(self, name: str) -> faust.TopicT:
        if name not in self._sources:
            self._sources[name] = self.app.topic(
                name, key_serializer="raw", value_serializer="raw",
                partitions=self.settings.partitions,
            )
        return self._sources[name]

    async def store(self) -> LedgerStore:
        """The ledger connection pool, opened on first use (the database may start later)."""
        async with self._store_lock:
            if self._store is None:
                # No deadline: while PostgreSQL is away the agents pause and retry; giving up
                # would let Faust ack a batch whose effects were never written.
                self._store = await LedgerStore.connect(
                    self.database_url, max_size=5, retry_deadline_seconds=math.inf)
            return self._store

    async def close(self) -> None:
        if self._store is not None:
            await self._store.close()
        await self.psp.close()
