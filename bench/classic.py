"""The baseline: the classic row-lock design, run faithfully against the same PostgreSQL.

`transferFunds` from the reference article (../shared/reference/fintech-architecture-
patterns.txt), one database transaction per transfer: BEGIN; SELECT ... FOR UPDATE the
debtor, then the creditor, in request order (so two opposite transfers can deadlock);
check funds; INSERT two transaction rows; UPDATE both balances under the version check;
COMMIT. A deadlock (SQLSTATE 40P01) or a serialization failure (40001) rolls the
transaction back and retries it. The schema is the article's, in a database of its own,
on the server's default settings (a deadlock is detected after `deadlock_timeout`).

C clients, each an asyncpg connection, take transfers from one shared stream until the
trial's time is up; `best_client_count` tries several C and keeps the fastest, so the
baseline is the classic design at its best on this machine, not at an unlucky setting.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import asyncpg

from bench import Transfer, percentile
from harness.database import create_database

CLIENT_COUNTS = (1, 2, 4, 8, 16, 32)

SCHEMA = """
CREATE TABLE accounts (
  id         text PRIMARY KEY,
  user_id    text NOT NULL,
  type       varchar(32) NOT NULL,
  currency   char(3) NOT NULL,
  balance    bigint NOT NULL,
  version    int NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE transactions (
  id           uuid PRIMARY KEY,
  account_id   text NOT NULL REFERENCES accounts (id),
  amount       bigint NOT NULL,
  description  varchar(255) NOT NULL,
  reference_id varchar(128),
  posted_at    timestamptz NOT NULL DEFAULT now(),
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_transactions_account ON transactions (account_id);
"""

SELECT_FOR_UPDATE = "SELECT balance, version FROM accounts WHERE id = $1 FOR UPDATE"
INSERT_TRANSACTION = (
    "INSERT INTO transactions (id, account_id, amount, description, reference_id) VALUES ($1, $2, $3, $4, $5)"
)
DEBIT = "UPDATE accounts SET balance = balance - $1, version = version + 1 WHERE id = $2 AND version = $3"
CREDIT = "UPDATE accounts SET balance = balance + $1, version = version + 1 WHERE id = $2 AND version = $3"


class TransferRefused(RuntimeError):
    """ACCOUNT_NOT_FOUND, INSUFFICIENT_FUNDS or a lost version check: never expected here."""


@dataclass
class ClassicRun:
    workload: str
    clients: int
    transfers: int
    seconds: float
    deadlock_retries: int = 0
    serialization_retries: int = 0
    errors: int = 0
    latencies_seconds: list[float] = field(default_factory=list, repr=False)

    @property
    def payments_per_second(self) -> float:
        return self.transfers / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, float | int | str]:
        return {
            "workload": self.workload, "clients": self.clients, "transfers": self.transfers,
            "seconds": round(self.seconds, 3), "payments_per_second": round(self.payments_per_second, 1),
            "deadlock_retries": self.deadlock_retries, "serialization_retries": self.serialization_retries,
            "errors": self.errors,
            "latency_p50_ms": round(percentile(self.latencies_seconds, 0.50) * 1000, 2),
            "latency_p99_ms": round(percentile(self.latencies_seconds, 0.99) * 1000, 2),
        }


async def prepare(server_url: str, accounts: Sequence[str], balance: int) -> str:
    """A database of its own with the article's schema and the accounts funded; its URL."""
    database_url = await create_database(server_url, prefix="bench_classic")
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(SCHEMA)
        await connection.executemany(
            "INSERT INTO accounts (id, user_id, type, currency, balance) VALUES ($1, $2, 'cash', 'USD', $3)",
            [(account_id, f"owner-{account_id}", balance) for account_id in accounts],
        )
    finally:
        await connection.close()
    return database_url


async def transfer_funds(connection: asyncpg.Connection, transfer: Transfer, reference_id: str) -> None:
    """The article's transferFunds, statement for statement."""
    async with connection.transaction():
        debtor = await connection.fetchrow(SELECT_FOR_UPDATE, transfer.debtor)
        creditor = await connection.fetchrow(SELECT_FOR_UPDATE, transfer.creditor)
        if debtor is None or creditor is None:
            raise TransferRefused("ACCOUNT_NOT_FOUND")
        if debtor["balance"] < transfer.amount:
            raise TransferRefused("INSUFFICIENT_FUNDS")
        description = f"transfer {reference_id}"
        await connection.execute(INSERT_TRANSACTION, uuid.uuid4(), transfer.debtor, -transfer.amount,
                                 description, reference_id)
        await connection.execute(INSERT_TRANSACTION, uuid.uuid4(), transfer.creditor, transfer.amount,
                                 description, reference_id)
        debited = await connection.execute(DEBIT, transfer.amount, transfer.debtor, debtor["version"])
        credited = await connection.execute(CREDIT, transfer.amount, transfer.creditor, creditor["version"])
        if debited != "UPDATE 1" or credited != "UPDATE 1":  # cannot happen under FOR UPDATE
            raise TransferRefused("VERSION_CONFLICT")


async def run_transfers(
    database_url: str, stream: Iterator[Transfer], *, workload: str, clients: int, seconds: float,
) -> ClassicRun:
    """C clients take transfers from the stream until `seconds` are up; the in-flight ones finish."""
    pool = await asyncpg.create_pool(database_url, min_size=clients, max_size=clients)
    run = ClassicRun(workload, clients, 0, 0.0)
    try:
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(_client(pool, stream, run, deadline) for _ in range(clients)))
        run.seconds = time.perf_counter() - started
    finally:
        await pool.close()
    return run


async def _client(pool: asyncpg.Pool, stream: Iterator[Transfer], run: ClassicRun, deadline: float) -> None:
    async with pool.acquire() as connection:
        while time.perf_counter() < deadline:
            transfer = next(stream)
            reference_id = uuid.uuid4().hex
            began = time.perf_counter()
            while True:
                try:
                    await transfer_funds(connection, transfer, reference_id)
                except asyncpg.exceptions.DeadlockDetectedError:
                    run.deadlock_retries += 1
                    continue
                except asyncpg.exceptions.SerializationError:
                    run.serialization_retries += 1
                    continue
                except TransferRefused:
                    run.errors += 1
                    break
                run.transfers += 1
                run.latencies_seconds.append(time.perf_counter() - began)
                break


async def best_client_count(
    database_url: str, stream: Iterator[Transfer], *, workload: str, seconds: float,
    client_counts: Iterable[int] = CLIENT_COUNTS, on_trial: Callable[[ClassicRun], None] = lambda run: None,
) -> tuple[ClassicRun, list[ClassicRun]]:
    """One trial per client count; (the fastest, every trial in order)."""
    trials = []
    for clients in client_counts:
        trials.append(await run_transfers(database_url, stream, workload=workload, clients=clients,
                                          seconds=seconds))
        on_trial(trials[-1])
    return max(trials, key=lambda run: run.payments_per_second), trials


async def deadlock_timeout(database_url: str) -> str:
    """The server setting that prices every deadlock of the classic design."""
    connection = await asyncpg.connect(database_url)
    try:
        return str(await connection.fetchval("SHOW deadlock_timeout"))
    finally:
        await connection.close()
