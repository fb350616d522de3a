"""Writes carry on through a PostgreSQL restart: every entry ends applied exactly once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from harness.postgres import EmbeddedPostgres
from ledger.migrate import migrate
from ledger.store import LedgerStore, Origin, WriteResult
from ledger.testing import funding_entry, open_accounts
from models.ledger import JournalEntry

BATCH_SIZE = 10
BATCHES_AFTER_RESTART = 5


async def test_writes_continue_through_a_restart(
    database_url: str, embedded_postgres: EmbeddedPostgres | None
) -> None:
    if embedded_postgres is None:
        pytest.skip("needs the embedded PostgreSQL (PAYMENTS_DATABASE_URL is set)")
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, max_size=4, retry_deadline_seconds=30)
    try:
        await open_accounts(store, "alice")
        restarted = asyncio.Event()
        written: list[tuple[JournalEntry, Origin, WriteResult]] = []
        writer = asyncio.create_task(write_until_after(store, restarted, written))
        await asyncio.sleep(0.2)
        # restart() blocks while the server stops and starts: run it off the event loop.
        await asyncio.to_thread(embedded_postgres.restart)
        restarted.set()
        await asyncio.wait_for(writer, 30)

        for entry, origin, result in written:
            # Applied now, or committed by an attempt whose answer the restart swallowed.
            assert result.applied or (result.stored_origin, result.stored_fingerprint) == (
                origin, entry.fingerprint)
        again = await store.write_batch([(entry, origin) for entry, origin, _ in written])
        assert not any(result.applied for result in again)
        count = len(written)
        assert await store.balances() == {"alice": count, "settlement:USD": -count}
        assert await store.unbalanced_transactions() == []
        connection = await asyncpg.connect(database_url)
        try:
            assert await connection.fetchval("SELECT count(*) FROM ledger_transactions") == count
        finally:
            await connection.close()
    finally:
        await store.close()


async def write_until_after(
    store: LedgerStore, restarted: asyncio.Event,
    written: list[tuple[JournalEntry, Origin, WriteResult]],
) -> None:
    """Write batches of one-cent fundings until a few batches after the restart."""
    batch_number, after_restart = 0, 0
    while after_restart < BATCHES_AFTER_RESTART:
        batch = [
            (funding_entry("alice", 1, key=f"b{batch_number}-{n}"), Origin("t", 0, batch_number))
            for n in range(BATCH_SIZE)
        ]
        results = await store.write_batch(batch)
        written.extend((entry, origin, result)
                       for (entry, origin), result in zip(batch, results, strict=True))
        batch_number += 1
        after_restart += restarted.is_set()
        await asyncio.sleep(0.01)
