"""The accounts table: opened once, read back to detect a conflicting second opening."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class AccountRow:
    account_id: str
    owner_id: str | None  # None for settlement accounts
    currency: str
    overdraft_limit: int
    kyc_status: str  # verified | pending | blocked
    status: str = "active"


COLUMNS = "account_id, owner_id, currency, overdraft_limit, kyc_status, status"

INSERT_ACCOUNT = f"""
INSERT INTO accounts ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (account_id) DO NOTHING
"""
SELECT_ACCOUNT = f"SELECT {COLUMNS} FROM accounts WHERE account_id = $1"


async def open_account(connection: asyncpg.Connection, account: AccountRow) -> AccountRow:
    # Two statements, not a CTE: after waiting for a concurrent opening of the same id,
    # only a new statement's snapshot sees the row that won.
    await connection.execute(
        INSERT_ACCOUNT, account.account_id, account.owner_id, account.currency,
        account.overdraft_limit, account.kyc_status, account.status,
    )
    stored = await get_account(connection, account.account_id)
    assert stored is not None, f"account {account.account_id} vanished after insert"
    return stored


async def get_account(connection: asyncpg.Connection, account_id: str) -> AccountRow | None:
    row = await connection.fetchrow(SELECT_ACCOUNT, account_id)
    return None if row is None else AccountRow(**dict(row))


async def get_accounts(connection: asyncpg.Connection, account_ids: list[str]) -> list[AccountRow]:
    rows = await connection.fetch(f"SELECT {COLUMNS} FROM accounts WHERE account_id = ANY($1::text[])",
                                  account_ids)
    return [AccountRow(**dict(row)) for row in rows]
