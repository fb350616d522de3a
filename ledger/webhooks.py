"""The webhook tables: endpoints, the deliveries due, and every attempt (0007_webhooks.sql).

Deliveries are made from the events in the notifier's transaction (`enqueue`: one row per
event and matching endpoint, the unique key absorbing a redelivered event), claimed by
any worker's dispatcher under a lease (`claim`: SKIP LOCKED, so two workers never send
the same one at once, and a worker killed mid-send leaves a lease that runs out), and
settled with the lease's token (`settle`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from models.webhooks import Endpoint, Notice


@dataclass(frozen=True)
class EndpointRow:
    endpoint_id: str
    url: str
    event_types: tuple[str, ...] | None
    accounts: tuple[str, ...] | None
    created_by: str | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None


@dataclass(frozen=True)
class Due:
    """A delivery claimed for sending."""

    delivery_id: int
    endpoint_id: str
    url: str
    secret: str
    event_id: str
    payload: bytes
    attempts: int  # made before this one
    lease_token: str


@dataclass(frozen=True)
class Attempt:
    attempted_at: datetime
    status_code: int | None
    latency_seconds: float
    error: str | None


@dataclass(frozen=True)
class Delivery:
    delivery_id: int
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    delivered_at: datetime | None
    last_error: str | None
    log: tuple[Attempt, ...]


ENDPOINT_COLUMNS = (
    "endpoint_id, url, event_types, accounts, created_by, created_at, disabled_at, disabled_reason"
)

# An endpoint gets the events that occurred since it was registered, and none older than
# the retention ($6 hours; 0: no bound): an event read again long after (a consumer group
# that starts from the topics' beginning) neither reaches endpoints made since nor makes
# again a delivery the retention pruned.
ENQUEUE = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, occurred_at)
SELECT e.endpoint_id, n.event_id, n.event_type, n.payload, n.occurred_at
FROM unnest($1::text[], $2::text[], $3::bytea[], $4::timestamptz[], $5::text[])
     AS n(event_id, event_type, payload, occurred_at, accounts)
JOIN webhook_endpoints AS e ON e.removed_at IS NULL AND n.occurred_at >= e.created_at
 AND (e.event_types IS NULL OR n.event_type = ANY(e.event_types))
 AND (e.accounts IS NULL OR e.accounts && string_to_array(n.accounts, ','))
WHERE $6::float8 = 0 OR n.occurred_at >= now() - make_interval(secs => $6::float8 * 3600)
ON CONFLICT (endpoint_id, event_id) DO NOTHING
"""

# Due, not leased (or the lease ran out), of a live endpoint not busy here; at most
# `$4` per endpoint, so a claim never takes more of one endpoint than it can send now.
CLAIM = """
WITH ranked AS (
    SELECT d.delivery_id,
           row_number() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at) AS place
    FROM webhook_deliveries AS d JOIN webhook_endpoints AS e USING (endpoint_id)
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
      AND e.removed_at IS NULL AND e.disabled_at IS NULL AND NOT (d.endpoint_id = ANY($2::text[]))
), chosen AS (
    SELECT d.delivery_id FROM webhook_deliveries AS d JOIN ranked AS r USING (delivery_id)
    WHERE r.place <= $4
      -- Again here: a row another claim leased (and committed) after `ranked` read it is
      -- re-checked by PostgreSQL when locked only against this statement's own conditions.
      AND d.status = 'pending' AND d.next_attempt_at <= now()
      AND (d.leased_until IS NULL OR d.leased_until < now())
    ORDER BY d.next_attempt_at LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE webhook_deliveries AS d
SET leased_until = now() + make_interval(secs => $3), lease_token = md5(random()::text || d.delivery_id)
FROM chosen, webhook_endpoints AS e
WHERE d.delivery_id = chosen.delivery_id AND e.endpoint_id = d.endpoint_id
RETURNING d.delivery_id, d.endpoint_id, e.url, e.secret, d.event_id, d.payload, d.attempts, d.lease_token
"""

LOG_ATTEMPT = """
INSERT INTO webhook_attempts (delivery_id, status_code, latency_seconds, error) VALUES ($1, $2, $3, $4)
"""
DELIVERED = """
UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),
       leased_until = NULL, lease_token = NULL, last_error = NULL
WHERE delivery_id = $1 AND lease_token = $2
"""
# $3 NULL: the schedule is spent, the delivery has failed.
NOT_DELIVERED = """
UPDATE webhook_deliveries
SET attempts = attempts + 1, status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
    next_attempt_at = now() + make_interval(secs => coalesce($3::float8, 0)),
    leased_until = NULL, lease_token = NULL, last_error = $4
WHERE delivery_id = $1 AND lease_token = $2
"""
ENDPOINT_SUCCEEDED = """
UPDATE webhook_endpoints SET failing_since = NULL, consecutive_failures = 0 WHERE endpoint_id = $1
"""
# Failing for longer than the window ($2 seconds): disabled, once.
ENDPOINT_FAILED = """
UPDATE webhook_endpoints AS e
SET failing_since = coalesce(e.failing_since, now()), consecutive_failures = e.consecutive_failures + 1,
    disabled_at = CASE WHEN e.disabled_at IS NULL AND e.failing_since < now() - make_interval(secs => $2)
                       THEN now() ELSE e.disabled_at END,
    disabled_reason = CASE WHEN e.disabled_at IS NULL AND e.failing_since < now() - make_interval(secs => $2)
                           THEN 'failing since ' || e.failing_since || ': ' || $3 ELSE e.disabled_reason END
WHERE e.endpoint_id = $1
RETURNING e.disabled_at IS NOT NULL AND e.disabled_at = now() AS disabled_now
"""
BACKLOG = """
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(next_attempt_at) FILTER (WHERE next_attempt_at <= now())),
                0)::float8 AS oldest_due
FROM webhook_deliveries AS d JOIN webhook_endpoints AS e USING (endpoint_id)
WHERE d.status = 'pending' AND e.removed_at IS NULL AND e.disabled_at IS NULL
"""


async def create_endpoint(
    connection: asyncpg.Connection, endpoint: Endpoint, secret: str, created_by: str | None
) -> None:
    await connection.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, url, secret, event_types, accounts, created_by) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        endpoint.endpoint_id,
        endpoint.url,
        secret,
        _sorted(endpoint.event_types),
        _sorted(endpoint.accounts),
        created_by,
    )


async def endpoints(connection: asyncpg.Connection) -> list[EndpointRow]:
    rows = await connection.fetch(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints "
        "WHERE removed_at IS NULL ORDER BY created_at, endpoint_id"
    )
    return [_endpoint(row) for row in rows]


async def endpoint(connection: asyncpg.Connection, endpoint_id: str) -> EndpointRow | None:
    row = await connection.fetchrow(
        f"SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE endpoint_id = $1 AND removed_at IS NULL",
        endpoint_id,
    )
    return None if row is None else _endpoint(row)


# What a removed endpoint was still owed is given up (no claim takes it any more): failed,
# and so pruned after the retention like any settled delivery. An attempt in flight logs
# its answer but settles nothing: its lease token is gone. Done when it is removed, and
# again before each pruning, for a delivery a batch wrote as the endpoint was removed.
GIVE_UP_PENDING = """
UPDATE webhook_deliveries AS d
SET status = 'failed', next_attempt_at = now(), leased_until = NULL, lease_token = NULL,
    last_error = 'endpoint removed'
FROM webhook_endpoints AS e
WHERE e.endpoint_id = d.endpoint_id AND e.removed_at IS NOT NULL AND d.status = 'pending'
  AND ($1::text IS NULL OR d.endpoint_id = $1)
"""


async def remove_endpoint(connection: asyncpg.Connection, endpoint_id: str) -> bool:
    async with connection.transaction():
        status = await connection.execute(
            "UPDATE webhook_endpoints SET removed_at = now() WHERE endpoint_id = $1 AND removed_at IS NULL",
            endpoint_id,
        )
        if status.split()[-1] != "1":
            return False
        await connection.execute(GIVE_UP_PENDING, endpoint_id)
        return True


async def enable_endpoint(connection: asyncpg.Connection, endpoint_id: str) -> bool:
    status = await connection.execute(
        "UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL, "
        "consecutive_failures = 0 WHERE endpoint_id = $1 AND removed_at IS NULL",
        endpoint_id,
    )
    return status.split()[-1] == "1"


async def enqueue(connection: asyncpg.Connection, notices: Sequence[Notice], retention_hours: float) -> int:
    """The deliveries of these events to every endpoint that wants them; the number made."""
    if not notices:
        return 0
    status = await connection.execute(
        ENQUEUE,
        [n.event_id for n in notices],
        [n.event_type for n in notices],
        [n.payload for n in notices],
        [n.occurred_at for n in notices],
        [",".join(n.accounts) for n in notices],
        retention_hours,
    )
    return int(status.split()[-1])


async def claim(
    connection: asyncpg.Connection, limit: int, busy: Sequence[str], lease_seconds: float, per_endpoint: int
) -> list[Due]:
    rows = await connection.fetch(CLAIM, limit, list(busy), lease_seconds, per_endpoint)
    return [
        Due(
            row["delivery_id"],
            row["endpoint_id"],
            row["url"],
            row["secret"],
            row["event_id"],
            bytes(row["payload"]),
            row["attempts"],
            row["lease_token"],
        )
        for row in rows
    ]


async def settle(
    connection: asyncpg.Connection,
    due: Due,
    *,
    delivered: bool,
    status_code: int | None,
    latency_seconds: float,
    error: str | None,
    retry_in_seconds: float | None,
    disable_after_seconds: float,
) -> bool:
    """Log the attempt and settle the delivery; True when it disabled its endpoint."""
    async with connection.transaction():
        await connection.execute(LOG_ATTEMPT, due.delivery_id, status_code, latency_seconds, error)
        if delivered:
            status = await connection.execute(DELIVERED, due.delivery_id, due.lease_token)
            if status.split()[-1] == "1":
                await connection.execute(ENDPOINT_SUCCEEDED, due.endpoint_id)
            return False
        status = await connection.execute(
            NOT_DELIVERED, due.delivery_id, due.lease_token, retry_in_seconds, error
        )
        if status.split()[-1] != "1":  # the lease ran out and another claim has it: its answer counts
            return False
        return bool(
            await connection.fetchval(
                ENDPOINT_FAILED, due.endpoint_id, disable_after_seconds, error or f"status {status_code}"
            )
        )


async def deliveries(
    connection: asyncpg.Connection,
    *,
    endpoint_id: str | None = None,
    failed_only: bool = False,
    limit: int = 100,
) -> list[Delivery]:
    rows = await connection.fetch(
        "SELECT delivery_id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, "
        "created_at, delivered_at, last_error FROM webhook_deliveries "
        "WHERE ($1::text IS NULL OR endpoint_id = $1) AND (NOT $2 OR status = 'failed') "
        "ORDER BY delivery_id DESC LIMIT $3",
        endpoint_id,
        failed_only,
        limit,
    )
    logs: dict[int, list[Attempt]] = {}
    for row in await connection.fetch(
        "SELECT delivery_id, attempted_at, status_code, latency_seconds, error FROM webhook_attempts "
        "WHERE delivery_id = ANY($1::bigint[]) ORDER BY attempt_id",
        [row["delivery_id"] for row in rows],
    ):
        logs.setdefault(row["delivery_id"], []).append(
            Attempt(row["attempted_at"], row["status_code"], row["latency_seconds"], row["error"])
        )
    return [Delivery(**dict(row), log=tuple(logs.get(row["delivery_id"], ()))) for row in rows]


# The oldest settled deliveries past the retention, with their attempts, a chunk at a
# time (short transactions). Pending ones never go: they are still owed. A row being
# redelivered at that moment is locked by the redeliver or skipped here, never both.
PRUNE = """
WITH gone AS (
    SELECT delivery_id FROM webhook_deliveries
    WHERE status <> 'pending'
      AND coalesce(delivered_at, next_attempt_at) < clock_timestamp() - make_interval(secs => $1)
    ORDER BY coalesce(delivered_at, next_attempt_at) LIMIT $2
    FOR UPDATE SKIP LOCKED
), attempts AS (
    DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT delivery_id FROM gone)
)
DELETE FROM webhook_deliveries WHERE delivery_id IN (SELECT delivery_id FROM gone)
"""


async def prune(connection: asyncpg.Connection, older_than_seconds: float, limit: int) -> int:
    """Delete up to `limit` deliveries delivered or failed more than `older_than_seconds`
    ago, and their attempts (a removed endpoint's pending ones given up first); the number
    of deliveries deleted."""
    await connection.execute(GIVE_UP_PENDING, None)
    status = await connection.execute(PRUNE, older_than_seconds, limit)
    return int(status.split()[-1])


async def redeliver(
    connection: asyncpg.Connection, *, event_id: str | None = None, since: datetime | None = None
) -> int:
    """Send again (a fresh schedule, the same webhook-id) the deliveries of an event, or of
    the events since a time, whatever became of them, to the endpoints not removed; the
    number set to go."""
    status = await connection.execute(
        "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = now(), "
        "leased_until = NULL, lease_token = NULL "
        "WHERE ($1::text IS NULL OR event_id = $1) AND ($2::timestamptz IS NULL OR occurred_at >= $2) "
        "AND endpoint_id IN (SELECT endpoint_id FROM webhook_endpoints WHERE removed_at IS NULL)",
        event_id,
        since,
    )
    return int(status.split()[-1])


async def backlog(connection: asyncpg.Connection) -> tuple[int, float]:
    """(deliveries pending to live endpoints, seconds since the oldest became due; 0: none is)."""
    row = await connection.fetchrow(BACKLOG)
    assert row is not None
    return int(row["pending"]), float(row["oldest_due"])


def _sorted(values: frozenset[str] | None) -> list[str] | None:
    return None if values is None else sorted(values)


def _endpoint(row: asyncpg.Record) -> EndpointRow:
    return EndpointRow(
        row["endpoint_id"],
        row["url"],
        _tuple(row["event_types"]),
        _tuple(row["accounts"]),
        row["created_by"],
        row["created_at"],
        row["disabled_at"],
        row["disabled_reason"],
    )


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
