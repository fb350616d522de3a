"""The configured broker and database, or embedded ones: one place for demo and bench."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from harness.broker import EmbeddedBroker
from harness.postgres import EmbeddedPostgres
from settings import Settings


@contextlib.contextmanager
def infrastructure(settings: Settings, workdir: Path, *, say: Callable[[str], object] = print,
                   discard_database: bool = False) -> Iterator[tuple[str, str]]:
    """(bootstrap, PostgreSQL URL): embedded components are stopped on every exit path,
    Ctrl-C included; `discard_database` also removes the embedded data directory (a long
    benchmark leaves about 1 GB of tables and WAL otherwise; logs stay in workdir)."""
    with contextlib.ExitStack() as stack:
        bootstrap, database_url = settings.kafka_bootstrap, settings.database_url
        if not bootstrap:
            say("starting the embedded Kafka-compatible broker (tansu) ...")
            bootstrap = stack.enter_context(EmbeddedBroker(workdir)).bootstrap
        if not database_url:
            say("starting the embedded PostgreSQL ...")
            if discard_database:  # callbacks run last-in first-out: after the server stopped
                stack.callback(shutil.rmtree, workdir / "postgres", ignore_errors=True)
            database_url = stack.enter_context(EmbeddedPostgres(workdir / "postgres")).url
        yield bootstrap, database_url
