"""`payments bench --history 10000,100000`: what a worker's state costs after N payments.

One worker (a static group member, PAYMENTS_INSTANCE_ID), uniform traffic. Payments are
published at saturation until the history reaches each point; there the worker idles,
its resident memory and its store on disk are read, and it is killed (-9) and started
again with its data directory, timing
- start -> healthy (its partitions assigned), and
- start -> processing: a payment published at the start reaches its outcome;
then the memory after the restart. The points are the payments the service has ever
taken, counted from the outcome topics' end offsets (no consumer keeps a million events).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console

from bench import Transfer, account_ids, transfers
from bench.service import Outcomes, ServiceBench, records_in
from harness.database import create_database
from harness.driver import OUTCOME_TOPICS, ServiceDriver, payment_command
from harness.embedded import infrastructure
from harness.worker_process import WorkerProcess
from infra.producer import BatchProducer, Outgoing
from infra.topics import PAYMENT_COMMANDS, ensure_topics, service_topics
from ledger.migrate import migrate
from models.events import AccountFunded, AccountOpened
from settings import Settings

console = Console()
ACCOUNTS = 1_000
CHUNK = 2_000  # payments per produce
AHEAD_MAX = 20_000  # payments published but not yet answered: the worker saturated, the broker not flooded
IDLE_SECONDS = 5.0  # before the memory is read: nothing in flight
STALL_SECONDS = 120.0
RESTART_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Point:
    payments: int  # outcomes ever published when measured
    seconds_to_reach: float
    rss_mb: float
    store_mb: float
    healthy_seconds: float
    processing_seconds: float
    rss_after_restart_mb: float

    def summary(self) -> dict[str, Any]:
        return {name: round(value, 2) if isinstance(value, float) else value
                for name, value in self.__dict__.items()}


def parse_points(text: str) -> tuple[int, ...]:
    points = tuple(int(part.replace("_", "")) for part in text.split(","))
    if not points or any(p < 1 for p in points) or list(points) != sorted(set(points)):
        raise ValueError(f"expected increasing payment counts, comma-separated, not {text!r}")
    return points


class Answered:
    """The outcomes ever published, from the outcome topics' end offsets."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer: AIOKafkaConsumer | None = None

    async def count(self) -> int:
        if self.consumer is None:  # kept: the restart is timed by polling this
            self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None)
            await self.consumer.start()
        return sum((await records_in(self.consumer, self.bootstrap, OUTCOME_TOPICS)).values())

    async def close(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()


def payment(key: str, transfer: Transfer) -> Outgoing:
    body = payment_command(key, transfer.debtor, transfer.creditor, transfer.amount)
    return Outgoing(PAYMENT_COMMANDS, key.encode(), orjson.dumps(body))


async def drive_to(target: int, answered: Answered, producer: BatchProducer, stream: Iterator[Transfer],
                   keys: Iterator[str], sent: int, say: Callable[[str], None]) -> int:
    """Publish until `target` payments were sent, keeping at most AHEAD_MAX unanswered;
    returns once `target` outcomes are out."""
    done, last_change, reported = await answered.count(), time.monotonic(), time.monotonic()
    while done < target:
        if sent < target and sent - done < AHEAD_MAX:
            batch = [payment(next(keys), next(stream)) for _ in range(min(CHUNK, target - sent))]
            await asyncio.gather(*await producer.send(batch))
            sent += len(batch)
            continue
        await asyncio.sleep(1.0)
        now_done = await answered.count()
        if now_done != done:
            done, last_change = now_done, time.monotonic()
        elif time.monotonic() - last_change > STALL_SECONDS:
            raise RuntimeError(f"no outcome for {STALL_SECONDS:.0f}s at {done} of {target}")
        if time.monotonic() - reported > 30:
            say(f"  {done:,} of {target:,} payments answered")
            reported = time.monotonic()
    return sent


def _megabytes(size: float) -> float:
    return size / 1024 / 1024


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


async def restart(worker: WorkerProcess, answered: Answered, producer: BatchProducer, probe: Outgoing,
                  before: int) -> tuple[float, float]:
    """kill -9, start again, publish `probe` at once: (start -> healthy, start -> its outcome)."""
    worker.kill()
    started = time.monotonic()
    worker.start(wait=False)
    await asyncio.gather(*await producer.send([probe]))
    healthy = processing = None
    while processing is None:
        if time.monotonic() - started > RESTART_TIMEOUT_SECONDS:
            raise RuntimeError(
                f"the worker did not process within {RESTART_TIMEOUT_SECONDS:.0f}s: {worker.log}")
        if healthy is None and await asyncio.to_thread(worker.healthy):
            healthy = time.monotonic() - started
        if await answered.count() > before:
            processing = time.monotonic() - started
        await asyncio.sleep(0.1)
    if healthy is None:
        healthy = processing
    return healthy, processing


async def measure(bootstrap: str, server_url: str, workdir: Path, points: Sequence[int], partitions: int,
                  say: Callable[[str], None]) -> list[Point]:
    database_url = await create_database(server_url, prefix="bench_history")
    await ensure_topics(bootstrap, service_topics(partitions))
    await migrate(database_url)
    run_id = uuid.uuid4().hex[:8]
    # Restarted as itself: a static member (settings.py, instance_id), as a deployment
    # with stable worker names runs it.
    worker = WorkerProcess(bootstrap, database_url, workdir, partitions=partitions,
                           extra_env={"PAYMENTS_INSTANCE_ID": f"history-{run_id}"})
    await asyncio.to_thread(worker.start)
    accounts = account_ids(f"history-{run_id}", ACCOUNTS)
    driver = await ServiceDriver(bootstrap, topics=(AccountOpened.topic, AccountFunded.topic)).start()
    try:
        from rich.progress import Progress

        with Progress(console=console, transient=True) as progress:
            await ServiceBench(driver, Outcomes(driver), progress, run_id).open_accounts(driver, accounts)
    finally:
        await driver.stop()
    raw = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=16 * 1024 * 1024, linger_ms=5)
    await raw.start()
    producer, answered = BatchProducer(raw), Answered(bootstrap)
    stream = transfers("uniform", accounts, seed=7)
    numbers = iter(range(10**12))
    keys = (f"history-{run_id}-{n}" for n in numbers)
    found: list[Point] = []
    sent, started = 0, time.monotonic()
    try:
        for target in points:
            sent = await drive_to(target, answered, producer, stream, keys, sent, say)
            reached = time.monotonic() - started
            await asyncio.sleep(IDLE_SECONDS)
            assert worker.process is not None
            rss = psutil.Process(worker.process.pid).memory_info().rss
            store = _tree_bytes(workdir / f"worker-{worker.web_port}")
            before = await answered.count()
            healthy, processing = await restart(worker, answered, producer, payment(next(keys), next(stream)),
                                                before)
            sent += 1
            await asyncio.sleep(IDLE_SECONDS)
            assert worker.process is not None
            rss_after = psutil.Process(worker.process.pid).memory_info().rss
            point = Point(before, reached, _megabytes(rss), _megabytes(store), healthy, processing,
                          _megabytes(rss_after))
            say(f"  at {before:,} payments: RSS {point.rss_mb:.0f} MB, store {point.store_mb:.0f} MB, "
                f"restart: healthy {healthy:.1f} s, processing {processing:.1f} s, "
                f"RSS after {point.rss_after_restart_mb:.0f} MB")
            found.append(point)
    finally:
        await answered.close()
        await raw.stop()
        worker.stop()
    return found


def run_history(settings: Settings, points: Sequence[int]) -> list[dict[str, Any]]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="history-", dir=settings.data_dir)).resolve()
    console.print(f"history: one worker, uniform traffic, points {', '.join(f'{p:,}' for p in points)} "
                  f"(store: {os.environ.get('PAYMENTS_TABLE_STORE', 'disk')}; logs in {workdir})")
    with infrastructure(settings, workdir, say=console.print, discard_database=True) as (bootstrap, server):
        found = asyncio.run(measure(bootstrap, server, workdir, points, settings.partitions, console.print))
    table = [point.summary() for point in found]
    console.print("| payments in history | reached after | worker RSS | store on disk | restart: healthy "
                  "| restart: processing | RSS after restart |", soft_wrap=True)
    console.print("|---:|---:|---:|---:|---:|---:|---:|", soft_wrap=True)
    for p in found:
        console.print(f"| {p.payments:,} | {p.seconds_to_reach:.0f} s | {p.rss_mb:.0f} MB "
                      f"| {p.store_mb:.0f} MB | {p.healthy_seconds:.1f} s | {p.processing_seconds:.1f} s "
                      f"| {p.rss_after_restart_mb:.0f} MB |", soft_wrap=True)
    return table
