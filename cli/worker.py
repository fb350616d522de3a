"""`payments worker`: topics and schema first, then one Faust worker running every agent."""

from __future__ import annotations

import asyncio
import logging

import faust
import mode.loop

from infra import logs
from infra.topics import ensure_topics, service_topics
from ledger.migrate import migrate
from settings import Settings


def run_worker(settings: Settings) -> int:
    bootstrap, database_url = settings.require_infrastructure()
    # uvloop's event loop costs the worker about a fifth less CPU than asyncio's own.
    mode.loop.use("uvloop")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(_prepare(bootstrap, database_url, settings))
    from app import create_app

    app = create_app(settings)
    logs.configure()
    worker = faust.Worker(app, loglevel=logging.WARNING, override_logging=False)
    worker.execute_from_commandline()  # blocks; exits the process when the worker stops
    return 0


async def _prepare(bootstrap: str, database_url: str, settings: Settings) -> None:
    await ensure_topics(bootstrap, service_topics(settings.partitions), settings.kafka_client_options())
    await migrate(database_url)
