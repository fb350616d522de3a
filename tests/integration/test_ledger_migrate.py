"""Migrations: applied once each, in order, safely from two processes at once."""

from __future__ import annotations

import asyncio

import asyncpg

from ledger.migrate import available_migrations, migrate

ALL_VERSIONS = [migration.version for migration in available_migrations()]


async def test_the_migration_files_are_found_in_order() -> None:
    assert ALL_VERSIONS[:2] == ["0001", "0002"]
    assert ALL_VERSIONS == sorted(ALL_VERSIONS)


async def test_a_second_run_applies_nothing(database_url: str) -> None:
    assert await migrate(database_url) == ALL_VERSIONS
    assert await migrate(database_url) == []
    connection = await asyncpg.connect(database_url)
    try:
        recorded = await connection.fetch("SELECT version FROM schema_migrations ORDER BY version")
        tables = {row["tablename"] for row in await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    finally:
        await connection.close()
    assert [row["version"] for row in recorded] == ALL_VERSIONS
    assert {"accounts", "ledger_transactions", "postings", "outbox", "daily_balances"} <= tables


async def test_concurrent_runs_apply_each_migration_once(database_url: str) -> None:
    results = await asyncio.gather(*(migrate(database_url) for _ in range(3)))
    applied = sorted(version for result in results for version in result)
    assert applied == ALL_VERSIONS
    assert await migrate(database_url) == []
