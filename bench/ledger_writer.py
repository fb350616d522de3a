"""The ledger writer alone: postings per second through LedgerStore.write_batch.

Capture entries (two legs and one outbox event each, as the service writes them) in
batches of 1, 100, 500 and 2000 entries, each batch one transaction on a fresh, migrated
database; only the time inside write_batch counts. A raw COPY of posting-shaped rows
into a table without keys, constraints or triggers is the reference: what this
PostgreSQL ingests when nothing is checked.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg

from bench import account_ids, transfers
from harness.database import create_database
from ledger.migrate import migrate
from ledger.store import LedgerStore, Origin
from ledger.testing import capture_entry, open_accounts

BATCH_SIZES = (1, 100, 500, 2000)
COPY_CHUNK_ROWS = 50_000

RAW_TABLE = """
CREATE TABLE raw_postings (
    transaction_id uuid NOT NULL,
    account_id     text NOT NULL,
    amount         bigint NOT NULL,
    currency       char(3) NOT NULL,
    payment_id     text NULL,
    posted_at      timestamptz NOT NULL DEFAULT now()
)
"""
RAW_COLUMNS = ("transaction_id", "account_id", "amount", "currency", "payment_id")


@dataclass
class WriterRun:
    method: str  # "write_batch" or "copy"
    batch_size: int  # entries per transaction (rows per COPY for the reference)
    batches: int = 0
    postings: int = 0
    seconds: float = 0.0

    @property
    def postings_per_second(self) -> float:
        return self.postings / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int | str]:
        return {
            "method": self.method, "batch_size": self.batch_size, "batches": self.batches,
            "postings": self.postings, "seconds": round(self.seconds, 3),
            "postings_per_second": round(self.postings_per_second, 1),
        }


async def measure_ledger_writer(
    server_url: str, *, seconds_per_size: float, minimum_batches: int = 3,
    batch_sizes: Iterable[int] = BATCH_SIZES, on_run: Callable[[WriterRun], None] = lambda run: None,
) -> tuple[str, list[WriterRun]]:
    """(the database used, one run per batch size then the COPY reference)."""
    database_url = await create_database(server_url, prefix="bench_ledger")
    await migrate(database_url)
    accounts = account_ids("ledger")
    runs = []
    store = await LedgerStore.connect(database_url, max_size=2)
    try:
        await open_accounts(store, *accounts)
        for size in batch_sizes:
            runs.append(await _write_batches(store, accounts, size, seconds_per_size, minimum_batches))
            on_run(runs[-1])
    finally:
        await store.close()
    runs.append(await _copy(database_url, accounts, seconds_per_size))
    on_run(runs[-1])
    return database_url, runs


async def _write_batches(
    store: LedgerStore, accounts: Sequence[str], size: int, seconds: float, minimum_batches: int,
) -> WriterRun:
    run = WriterRun("write_batch", size)
    stream = transfers("uniform", accounts, seed=size)
    while run.seconds < seconds or run.batches < minimum_batches:
        first = run.batches * size
        batch = []
        for number in range(first, first + size):
            transfer = next(stream)
            entry = capture_entry(transfer.debtor, transfer.creditor, transfer.amount,
                                  payment_id=f"ledger-bench-{size}-{number}")
            batch.append((entry, Origin("bench.ledger", 0, number)))
        began = time.perf_counter()
        results = await store.write_batch(batch)
        run.seconds += time.perf_counter() - began
        if not all(result.applied for result in results):
            raise RuntimeError(f"ledger bench: a fresh entry was not applied (batch size {size})")
        run.batches += 1
        run.postings += sum(len(entry.postings) for entry, _ in batch)
    return run


async def _copy(database_url: str, accounts: Sequence[str], seconds: float) -> WriterRun:
    run = WriterRun("copy", COPY_CHUNK_ROWS)
    stream = transfers("uniform", accounts, seed=0)
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(RAW_TABLE)
        while run.seconds < seconds or run.batches < 1:
            rows = []
            for _ in range(COPY_CHUNK_ROWS // 2):
                transfer, transaction_id = next(stream), uuid.uuid4()
                rows.append((transaction_id, transfer.debtor, -transfer.amount, "USD", None))
                rows.append((transaction_id, transfer.creditor, transfer.amount, "USD", None))
            began = time.perf_counter()
            await connection.copy_records_to_table("raw_postings", records=rows, columns=RAW_COLUMNS)
            run.seconds += time.perf_counter() - began
            run.batches += 1
            run.postings += len(rows)
    finally:
        await connection.close()
    return run
