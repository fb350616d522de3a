"""Schema migrations: plain SQL files in ledger/migrations, applied once each, in order."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

logger = logging.getLogger(__name__)

# Any constant shared by every migrator; advisory locks are scoped to one database.
MIGRATION_LOCK_KEY = 0x6C6564676572  # "ledger"
FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str  # the NNNN prefix of the file name
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    folder = resources.files("ledger").joinpath("migrations")
    migrations = []
    for entry in folder.iterdir():
        match = FILE_NAME.match(entry.name)
        if match:
            migrations.append(Migration(match.group(1), entry.name, entry.read_text("utf-8")))
    migrations.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in migrations]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migration files share a version: {versions}")
    return migrations


async def migrate(database_url: str) -> list[str]:
    """Apply the pending migrations; return the versions applied (empty when up to date)."""
    connection = await asyncpg.connect(database_url)
    try:
        # Session lock: a second migrator waits here, then finds nothing left to apply.
        await connection.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            return await _apply_pending(connection)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await connection.close()


async def _apply_pending(connection: asyncpg.Connection) -> list[str]:
    await connection.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    recorded = await connection.fetch("SELECT version FROM schema_migrations")
    applied = {row["version"] for row in recorded}
    newly_applied = []
    for migration in available_migrations():
        if migration.version in applied:
            continue
        # One transaction per file: a failed migration leaves no half-built schema behind.
        async with connection.transaction():
            await connection.execute(migration.sql)
            await connection.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)", migration.version
            )
        logger.info("applied migration %s", migration.name)
        newly_applied.append(migration.version)
    return newly_applied
