"""The service under test: broker, database, workers and a driver outside, and an
index of every answer the driver has consumed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from harness.broker import EmbeddedBroker
from harness.campaign.accounting import OUTCOMES, Answer, Answers
from harness.database import create_database, drop_database
from harness.driver import ServiceDriver
from harness.postgres import EmbeddedPostgres
from harness.worker_process import WorkerProcess
from infra.topics import DEAD_LETTER, ensure_topics, service_topics
from ledger.migrate import migrate
from settings import Settings


class AnswerIndex:
    """Answers the driver consumed, indexed once per event (read incrementally)."""

    TOPICS = {f"fintech.events.{kind}": kind for kind in (
        "PaymentCaptured", "PaymentFailed", "PaymentInitiated", "CommandRejected", "AccountOpened",
        "AccountFunded")} | {DEAD_LETTER: "DeadLetter"}

    def __init__(self, driver: ServiceDriver) -> None:
        self.driver = driver
        self.answers = Answers()
        self._positions = dict.fromkeys(self.TOPICS, 0)

    def update(self) -> Answers:
        for topic, kind in self.TOPICS.items():
            received = self.driver.events[topic]
            for record in received[self._positions[topic]:]:
                self._keep(kind, record)
            self._positions[topic] = len(received)
        return self.answers

    def _keep(self, kind: str, record: Any) -> None:
        if kind == "DeadLetter":  # the original bytes under the original key
            key = (record.key or b"").decode(errors="replace")
            self.answers.by_key[key].append(Answer(kind, record.headers.get("ce_id", b"").decode(),
                                                   record.seen_at))
            return
        body = orjson.loads(record.value)
        answer = Answer(kind, body["event_id"], record.seen_at, body.get("reason"), body.get("amount"))
        if kind in OUTCOMES or kind == "PaymentInitiated":
            self.answers.by_payment[body["payment_id"]].append(answer)
        elif kind == "AccountOpened":
            self.answers.by_key[body["account_id"]].append(answer)
        else:  # CommandRejected, AccountFunded: the idempotency key names the command
            self.answers.by_key[body.get("idempotency_key") or body.get("account_id") or ""].append(answer)


@dataclass
class Environment:
    """A broker's topics, a database, the workers on them and a driver outside."""

    name: str
    bootstrap: str
    database_url: str
    workdir: Path
    partitions: int
    driver: ServiceDriver
    postgres: EmbeddedPostgres | None
    broker: EmbeddedBroker | None
    answers: AnswerIndex
    workers: list[WorkerProcess] = field(default_factory=list)
    created_database: bool = True
    stall_repairs_seen: int = 0
    reported_violations: set[str] = field(default_factory=set)
    duplicated_baseline: int = 0

    async def add_worker(self, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(self.bootstrap, self.database_url, self.workdir, partitions=self.partitions,
                               extra_env=extra_env)
        self.workers.append(worker)
        await asyncio.to_thread(worker.start)
        return worker

    async def remove_worker(self, worker: WorkerProcess, *, kill: bool = False) -> None:
        await asyncio.to_thread(worker.kill if kill else worker.stop)
        self.workers.remove(worker)

    def funded_total(self) -> int:
        return sum(body["amount"] for body in self.driver.of("AccountFunded"))


class Infrastructure:
    """The campaign's PostgreSQL server, and per environment a broker and a database:
    embedded unless configured (a configured broker cannot be replaced, so environments
    then share its topics)."""

    def __init__(self, settings: Settings, workdir: Path, say: Callable[[str], object] = print) -> None:
        self.settings, self.workdir, self.say = settings, workdir, say
        self.postgres: EmbeddedPostgres | None = None
        self._stack = contextlib.ExitStack()

    @property
    def owns_broker(self) -> bool:
        return not self.settings.kafka_bootstrap

    def __enter__(self) -> Infrastructure:
        if not self.settings.database_url:
            self.say("starting the embedded PostgreSQL ...")
            self.postgres = self._stack.enter_context(EmbeddedPostgres(self.workdir / "postgres"))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def server_url(self) -> str:
        return self.postgres.url if self.postgres else self.settings.require_database()

    async def open(self, name: str) -> Environment:
        """A fresh broker and database when the campaign owns the broker; with a configured
        broker, its configured database as it is (their histories must belong together)."""
        broker, bootstrap, database_url = None, self.settings.kafka_bootstrap, self.settings.database_url
        created = bootstrap is None or database_url is None
        if bootstrap is None:
            broker = await asyncio.to_thread(EmbeddedBroker(self.workdir / name).start)
            bootstrap = broker.bootstrap
        if created:
            database_url = await create_database(self.server_url, prefix="chaos")
        assert database_url is not None
        await ensure_topics(bootstrap, service_topics(self.settings.partitions))
        await migrate(database_url)
        driver = await ServiceDriver(bootstrap).start()
        environment = Environment(name, bootstrap, database_url, self.workdir / name,
                                  self.settings.partitions, driver, self.postgres, broker,
                                  AnswerIndex(driver), created_database=created)
        await environment.add_worker()
        return environment

    async def close(self, environment: Environment, *, keep_database: bool) -> None:
        for worker in list(environment.workers):
            with contextlib.suppress(Exception):
                await environment.remove_worker(worker)
        await environment.driver.stop()
        if environment.broker is not None:
            await asyncio.to_thread(environment.broker.stop)
        if environment.created_database and not keep_database:
            with contextlib.suppress(Exception):
                await drop_database(self.server_url, environment.database_url)
