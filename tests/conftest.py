"""Real infrastructure for the tests: the embedded broker and PostgreSQL, or the configured ones.

PAYMENTS_DATABASE_URL / PAYMENTS_KAFKA_BOOTSTRAP, when set, point the suite at servers
that already run; otherwise the suite starts its own and stops them at the end.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.api_keys import new_key
from harness.broker import EmbeddedBroker
from harness.database import create_database, drop_database
from harness.driver import ServiceDriver
from harness.postgres import EmbeddedPostgres
from harness.worker_process import WorkerProcess
from infra.topics import ensure_topics, service_topics
from ledger.migrate import migrate


@pytest.fixture(scope="session")
def infra_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infra")


@pytest.fixture(scope="session")
def embedded_postgres(infra_dir: Path) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("PAYMENTS_DATABASE_URL"):
        yield None
        return
    with EmbeddedPostgres(infra_dir / "postgres") as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server_url(embedded_postgres: EmbeddedPostgres | None) -> str:
    if embedded_postgres is None:
        return os.environ["PAYMENTS_DATABASE_URL"]
    return embedded_postgres.url


@pytest.fixture
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test: no test sees another's rows."""
    url = await create_database(postgres_server_url, prefix="test")
    yield url
    await drop_database(postgres_server_url, url)


@pytest.fixture(scope="module")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker of the test module's own (it starts in well under a second), so the
    service's fixed topic names and consumer group never mix two modules' messages."""
    configured = os.environ.get("PAYMENTS_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    with EmbeddedBroker(tmp_path_factory.mktemp("broker")) as broker:
        yield broker.bootstrap


@pytest.fixture(scope="module")
async def module_database_url(postgres_server_url: str) -> AsyncIterator[str]:
    url = await create_database(postgres_server_url, prefix="service")
    yield url
    await drop_database(postgres_server_url, url)


# The API key the outside helpers send (tests/integration/outside.py): the current module's
# service makes one with every scope.
CALLER: dict[str, str] = {}


@dataclass
class Service:
    """A running service as its users see it: topics, a worker, the ledger database."""

    bootstrap: str
    database_url: str
    data_dir: Path
    workers: list[WorkerProcess]
    driver: ServiceDriver
    api_key: str = ""
    worker_env: dict[str, str] = field(default_factory=dict)  # every worker's, besides the defaults

    def add_worker(self, **extra_env: str) -> WorkerProcess:
        worker = WorkerProcess(self.bootstrap, self.database_url, self.data_dir,
                               extra_env={**self.worker_env, **extra_env})
        self.workers.append(worker)
        return worker.start()


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    """The settings of the module's workers; a module overrides it to run them otherwise."""
    return {}


@pytest.fixture(scope="module")
async def service(kafka_bootstrap: str, module_database_url: str, worker_env: dict[str, str],
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    await ensure_topics(kafka_bootstrap, service_topics(8))
    await migrate(module_database_url)
    data_dir = tmp_path_factory.mktemp("service")
    driver = await ServiceDriver(kafka_bootstrap).start()
    running = Service(kafka_bootstrap, module_database_url, data_dir, [], driver,
                      await new_key(module_database_url, "tests"), worker_env)
    CALLER["key"] = running.api_key
    try:
        await asyncio.to_thread(running.add_worker)
        yield running
    finally:
        await driver.stop()
        for worker in running.workers:
            worker.stop()
