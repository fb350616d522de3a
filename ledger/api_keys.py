"""The api_keys and service_secrets tables: keys made, listed and revoked by the operator,
read by every worker (api/gate.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from models.api_keys import ApiKey


@dataclass(frozen=True)
class KeyRow:
    """A key as the operator lists it."""

    name: str
    key_id: str
    scopes: tuple[str, ...]
    accounts: tuple[str, ...] | None
    created_at: datetime
    revoked_at: datetime | None


class NameTaken(Exception):
    """Another key, live or revoked, already has this name."""


INSERT_KEY = """
INSERT INTO api_keys (name, key_id, secret_digest, scopes, accounts) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO NOTHING
"""
LIVE_KEYS = "SELECT name, key_id, secret_digest, scopes, accounts FROM api_keys WHERE revoked_at IS NULL"
ALL_KEYS = "SELECT name, key_id, scopes, accounts, created_at, revoked_at FROM api_keys ORDER BY name"
REVOKE = "UPDATE api_keys SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL"
SECRET = """
WITH made AS (
    INSERT INTO service_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING secret
)
SELECT secret FROM made UNION ALL SELECT secret FROM service_secrets WHERE name = $1
"""


async def create_key(connection: asyncpg.Connection, key: ApiKey) -> None:
    accounts = None if key.accounts is None else sorted(key.accounts)
    status = await connection.execute(
        INSERT_KEY, key.name, key.key_id, key.secret_digest, sorted(key.scopes), accounts
    )
    if status.split()[-1] == "0":
        raise NameTaken(f"an API key named {key.name!r} exists already (names are never reused)")


async def live_keys(connection: asyncpg.Connection) -> dict[str, ApiKey]:
    """Every key not revoked, by key_id."""
    rows = await connection.fetch(LIVE_KEYS)
    return {
        row["key_id"]: ApiKey(
            row["name"],
            row["key_id"],
            row["secret_digest"],
            frozenset(row["scopes"]),
            None if row["accounts"] is None else frozenset(row["accounts"]),
        )
        for row in rows
    }


async def all_keys(connection: asyncpg.Connection) -> list[KeyRow]:
    return [
        KeyRow(
            row["name"],
            row["key_id"],
            tuple(row["scopes"]),
            None if row["accounts"] is None else tuple(row["accounts"]),
            row["created_at"],
            row["revoked_at"],
        )
        for row in await connection.fetch(ALL_KEYS)
    ]


async def revoke_key(connection: asyncpg.Connection, name: str) -> bool:
    """True when a live key of that name was revoked now."""
    return (await connection.execute(REVOKE, name)).split()[-1] == "1"


async def service_secret(connection: asyncpg.Connection, name: str, candidate: str) -> str:
    """The shared secret of that name: `candidate` if this call made it, else the first one made
    (the CTE cannot see a row a concurrent caller inserted, so a race is read back once)."""
    for _ in range(2):
        secret = await connection.fetchval(SECRET, name, candidate)
        if secret is not None:
            return str(secret)
    raise RuntimeError(f"service secret {name!r} could not be made or read")
