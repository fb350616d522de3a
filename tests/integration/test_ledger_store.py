"""The ledger store against a real PostgreSQL: a contract class, then database-level guards."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ledger.accounts import AccountRow
from ledger.journal import decode_headers
from ledger.migrate import migrate
from ledger.store import LedgerStore, Origin
from ledger.testing import capture_entry, funding_entry, open_accounts
from models.ledger import Posting, UnbalancedEntry


def origins(count: int, topic: str = "fintech.payments.commands") -> list[Origin]:
    return [Origin(topic, 0, offset) for offset in range(count)]


async def fetchval(url: str, query: str) -> object:
    connection = await asyncpg.connect(url)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


class LedgerStoreContract:
    """What every ledger store must do; a subclass provides the `store` fixture."""

    async def test_writes_and_reads_back_balances(self, store: LedgerStore) -> None:
        await open_accounts(store, "alice", "bob")
        entries = [funding_entry("alice", 1000, key="f1"),
                   capture_entry("alice", "bob", 300, payment_id="p1")]
        results = await store.write_batch(list(zip(entries, origins(2), strict=True)))
        assert [result.applied for result in results] == [True, True]
        assert [result.stored_origin for result in results] == origins(2)
        assert [result.stored_fingerprint for result in results] == [e.fingerprint for e in entries]
        assert await store.balances() == {"alice": 700, "bob": 300, "settlement:USD": -1000}
        assert await store.unbalanced_transactions() == []

    async def test_the_same_batch_twice_is_all_duplicates_of_the_first(
        self, store: LedgerStore
    ) -> None:
        await open_accounts(store, "alice")
        entries = [funding_entry("alice", amount, key=f"f{amount}") for amount in range(1, 6)]
        first = await store.write_batch(list(zip(entries, origins(5, "first"), strict=True)))
        second = await store.write_batch(list(zip(entries, origins(5, "second"), strict=True)))
        assert all(result.applied for result in first)
        assert not any(result.applied for result in second)
        assert [result.stored_origin for result in second] == origins(5, "first")
        assert await store.balances() == {"alice": 15, "settlement:USD": -15}

    async def test_a_duplicate_inside_one_batch_is_a_duplicate_of_its_first(
        self, store: LedgerStore
    ) -> None:
        await open_accounts(store, "alice")
        entry = funding_entry("alice", 10, key="f1")
        conflicting = dataclasses.replace(entry, fingerprint="another payload")
        first, second = Origin("t", 0, 1), Origin("t", 0, 2)
        results = await store.write_batch([(entry, first), (conflicting, second)])
        assert [result.applied for result in results] == [True, False]
        assert [result.stored_origin for result in results] == [first, first]
        assert [result.stored_fingerprint for result in results] == [entry.fingerprint] * 2
        assert await store.balances() == {"alice": 10, "settlement:USD": -10}

    async def test_statement_runs_the_balance_newest_last(self, store: LedgerStore) -> None:
        await open_accounts(store, "alice", "bob")
        batch = [funding_entry("alice", 100 * (n + 1), key=f"f{n}") for n in range(5)]
        batch += [capture_entry("alice", "bob", 7 * (n + 1), payment_id=f"p{n}") for n in range(5)]
        random.Random(7).shuffle(batch)
        await store.write_batch(list(zip(batch, origins(len(batch)), strict=True)))
        pages, after = [], 0
        while page := await store.statement("alice", after_posting_id=after, limit=3):
            pages.append(page)
            after = page[-1].posting_id
        lines = [line for page in pages for line in page]
        assert len(pages) == 4 and len(lines) == 10
        assert [line.posting_id for line in lines] == sorted(line.posting_id for line in lines)
        running = 0
        for line in lines:
            running += line.amount
            assert line.balance_after == running
        assert lines[-1].balance_after == (await store.balances())["alice"]

    async def test_unbalanced_entries_are_refused_before_writing(self, store: LedgerStore) -> None:
        await open_accounts(store, "alice")
        entry = funding_entry("alice", 10, key="f1")
        # Frozen dataclasses can still be forged: the store must not trust the constructor.
        forged = (Posting("alice", 10, "USD"), Posting("alice", -9, "USD"))
        object.__setattr__(entry, "postings", forged)
        with pytest.raises(UnbalancedEntry):
            await store.write_batch([(entry, Origin("t", 0, 0))])
        assert await store.balances() == {}

    async def test_accounts_open_once_and_report_the_stored_row(self, store: LedgerStore) -> None:
        row = AccountRow("alice", "owner-1", "USD", 500, "verified")
        assert await store.open_account(row) == row
        conflicting = dataclasses.replace(row, overdraft_limit=0, kyc_status="blocked")
        assert await store.open_account(conflicting) == row
        assert await store.get_account("alice") == row
        assert await store.get_account("nobody") is None

    async def test_daily_balances_are_rebuilt_from_postings(self, store: LedgerStore) -> None:
        await open_accounts(store, "alice", "bob")
        batch = [funding_entry("alice", 50, key="f1"),
                 capture_entry("alice", "bob", 20, payment_id="p1")]
        await store.write_batch(list(zip(batch, origins(2), strict=True)))
        assert await store.rebuild_daily_balances() == 3
        assert await store.rebuild_daily_balances() == 3  # from scratch, not appended
        [alice] = await store.daily_balances("alice")
        assert (alice.currency, alice.closing_balance) == ("USD", 30)
        assert await store.daily_balances("nobody") == []

    async def test_outbox_backlog_counts_unpublished_rows(self, store: LedgerStore) -> None:
        assert await store.outbox_backlog() == (0, 0.0)
        await open_accounts(store, "alice")
        entry = funding_entry("alice", 5, key="f1", events=3)
        await store.write_batch([(entry, Origin("t", 0, 0))])
        count, age_seconds = await store.outbox_backlog()
        assert count == 3 and 0 <= age_seconds < 60

    async def test_a_closed_store_refuses_at_once(self, store: LedgerStore) -> None:
        await store.close()
        with pytest.raises(RuntimeError, match="closed"):
            await store.balances()

    async def test_overlapping_concurrent_batches_apply_each_entry_once(
        self, store: LedgerStore
    ) -> None:
        await open_accounts(store, "alice", "bob")
        entries = [capture_entry("alice", "bob", 1, payment_id=f"p{n}") for n in range(60)]

        async def write_shuffled(seed: int) -> list[bool]:
            batch = [(entry, Origin("t", seed, n)) for n, entry in enumerate(entries)]
            random.Random(seed).shuffle(batch)
            return [result.applied for result in await store.write_batch(batch)]

        applied = await asyncio.gather(*(write_shuffled(seed) for seed in range(4)))
        assert sum(map(sum, applied)) == len(entries)
        assert await store.balances() == {"alice": -60, "bob": 60}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[LedgerStore]:
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, retry_deadline_seconds=20)
    yield store
    await store.close()


class TestPostgresLedgerStore(LedgerStoreContract):
    """The contract, plus what the database itself guarantees below the Python code."""

    async def test_the_database_refuses_an_unbalanced_transaction_at_commit(
        self, store: LedgerStore, database_url: str
    ) -> None:
        await open_accounts(store, "alice", "bob")
        connection = await asyncpg.connect(database_url)
        try:
            with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
                async with connection.transaction():
                    await connection.execute(
                        "INSERT INTO ledger_transactions VALUES"
                        " ('00000000-0000-0000-0000-000000000001', 'capture', 'k', 'f', NULL,"
                        "  't', 0, 0)")
                    await connection.execute(
                        "INSERT INTO postings (transaction_id, account_id, amount, currency) VALUES"
                        " ('00000000-0000-0000-0000-000000000001', 'alice', -10, 'USD'),"
                        " ('00000000-0000-0000-0000-000000000001', 'bob', 9, 'USD')")
        finally:
            await connection.close()
        assert await fetchval(database_url, "SELECT count(*) FROM ledger_transactions") == 0

    @pytest.mark.parametrize("statement", [
        "UPDATE postings SET amount = amount * 2",
        "DELETE FROM postings",
        "TRUNCATE postings CASCADE",
        "UPDATE ledger_transactions SET fingerprint = 'forged'",
        "DELETE FROM ledger_transactions",
        "TRUNCATE ledger_transactions CASCADE",
    ])
    async def test_the_ledger_is_append_only(
        self, store: LedgerStore, database_url: str, statement: str
    ) -> None:
        await open_accounts(store, "alice")
        await store.write_batch([(funding_entry("alice", 10, key="f1"), Origin("t", 0, 0))])
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await fetchval(database_url, statement)
        assert await store.balances() == {"alice": 10, "settlement:USD": -10}

    async def test_a_leg_in_a_foreign_currency_is_refused(self, store: LedgerStore) -> None:
        await open_accounts(store, "alice")
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            entry = funding_entry("alice", 10, "EUR", key="f1")
            await store.write_batch([(entry, Origin("t", 0, 0))])
        assert await store.balances() == {}

    async def test_outbox_rows_are_written_only_for_new_entries(
        self, store: LedgerStore, database_url: str
    ) -> None:
        await open_accounts(store, "alice")
        entries = [funding_entry("alice", n, key=f"f{n}", events=2) for n in range(1, 4)]
        await store.write_batch(list(zip(entries, origins(3), strict=True)))
        renamed = [dataclasses.replace(entry, outbox=(), fingerprint="x") for entry in entries]
        await store.write_batch(list(zip(renamed + entries, origins(6), strict=True)))
        connection = await asyncpg.connect(database_url)
        try:
            rows = await connection.fetch(
                "SELECT event_id, headers::text FROM outbox ORDER BY outbox_id")
        finally:
            await connection.close()
        expected = [message for entry in entries for message in entry.outbox]
        assert [row["event_id"] for row in rows] == [message.event_id for message in expected]
        assert decode_headers(rows[0]["headers"]) == list(expected[0].headers)

    async def test_a_batch_cut_by_a_dropped_connection_leaves_nothing_then_succeeds(
        self, store: LedgerStore, database_url: str
    ) -> None:
        await open_accounts(store, "alice")
        entries = [funding_entry("alice", n, key=f"f{n}") for n in range(1, 11)]
        blocker = await asyncpg.connect(database_url)
        try:
            # Hold the outbox: the batch inserts its transactions and postings, then waits.
            blocker_transaction = blocker.transaction()
            await blocker_transaction.start()
            await blocker.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            batch = list(zip(entries, origins(10), strict=True))
            write = asyncio.create_task(store.write_batch(batch))
            waiting_pid = await wait_for_lock_waiter(blocker)
            assert await blocker.fetchval("SELECT count(*) FROM postings") == 0  # not committed
            assert await blocker.fetchval("SELECT pg_terminate_backend($1)", waiting_pid)
            await blocker_transaction.rollback()
            results = await asyncio.wait_for(write, 20)
        finally:
            await blocker.close()
        assert all(result.applied for result in results)  # the cut attempt left nothing behind
        assert await store.balances() == {"alice": 55, "settlement:USD": -55}
        assert await fetchval(database_url, "SELECT count(*) FROM postings") == 20


async def wait_for_lock_waiter(connection: asyncpg.Connection) -> int:
    for _ in range(200):
        pid = await connection.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid() LIMIT 1")
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("the batch never waited for the outbox lock")
