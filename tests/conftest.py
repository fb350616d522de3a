"""Real infrastructure for the tests: the embedded broker and PostgreSQL, or the configured ones.

PAYMENTS_DATABASE_URL / PAYMENTS_KAFKA_BOOTSTRAP, when set, point the suite at servers
that already run; otherwise the suite starts its own and stops them at the end.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infra.broker import EmbeddedBroker
from infra.database import create_database, drop_database
from infra.postgres import EmbeddedPostgres


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


@pytest.fixture(scope="session")
def kafka_bootstrap(infra_dir: Path) -> Iterator[str]:
    configured = os.environ.get("PAYMENTS_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    with EmbeddedBroker(infra_dir) as broker:
        yield broker.bootstrap
