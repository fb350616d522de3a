"""OutboxRelay: publishes committed outbox rows to Kafka, at least once, in order per key.

A claim is one database transaction: lock a batch of unpublished rows, await the
caller's `publish(rows)` (which must raise unless every row was delivered), mark them
published, commit. A failed publish or a lost connection rolls the claim back and the
rows are claimed again later: duplicates are possible (same event_id), losses are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from ledger.journal import decode_headers
from ledger.listener import Listener
from ledger.retry import Backoff, is_connection_error

logger = logging.getLogger(__name__)

# Order per key. With SKIP LOCKED alone, relay A could claim rows 1-500 while relay B
# skips them and claims 501-1000; B may publish first, or A may fail and roll back after
# B published, and a key with rows in both batches would then be published out of order.
# So only one relay claims at a time: each claim first takes this transaction-scoped
# advisory lock, and a relay that cannot get it claims nothing this round. SKIP LOCKED
# stays as a guard; outbox rows are only ever locked by the lock holder.
# (Rows are claimed in outbox_id order, which is the order their transactions inserted
# them; one key's events are written by one partition owner, in order, so ids of one key
# never commit out of order.)
CLAIM_LOCK_KEY = 0x6F7574626F78  # "outbox"
TRY_CLAIM = "SELECT pg_try_advisory_xact_lock($1)"
CLAIM = """
SELECT outbox_id, event_id, topic, key, value, headers::text AS headers
FROM outbox WHERE published_at IS NULL AND created_at <= clock_timestamp() - make_interval(secs => $2)
ORDER BY outbox_id LIMIT $1
FOR UPDATE SKIP LOCKED
"""
MARK_PUBLISHED = "UPDATE outbox SET published_at = clock_timestamp() WHERE outbox_id = ANY($1::bigint[])"


@dataclass(frozen=True)
class OutboxRow:
    outbox_id: int
    event_id: UUID
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]


Publish = Callable[[Sequence[OutboxRow]], Awaitable[None]]


class PublishFailed(Exception):
    """The caller's publish raised (its error is the __cause__); the rows stay unpublished."""


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        publish: Publish,
        *,
        batch_size_max: int = 500,
        poll_interval_seconds: float = 1.0,
        health_check_interval_seconds: float = 5.0,
        claim_after_seconds: float = 0.0,
        listen: bool = True,
    ) -> None:
        """`claim_after_seconds`: rows younger than this are left to their writer, which
        publishes them itself after its commit and marks them (agents/owner.py); the relay
        is then the safety net for what a writer could not. `listen`: wake on NOTIFY (only
        useful when rows are claimed at once)."""
        self._database_url = database_url
        self._publish = publish
        self.batch_size_max = batch_size_max
        self.poll_interval_seconds = poll_interval_seconds
        self.claim_after_seconds = claim_after_seconds
        self._listener = (
            Listener(
                database_url,
                "outbox",
                self._wakeup_soon,
                health_check_interval_seconds=health_check_interval_seconds,
            )
            if listen
            else None
        )
        self._pool: asyncpg.Pool | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._stopped: asyncio.Event | None = None

    @property
    def listening(self) -> bool:
        """True while LISTEN outbox is active (for health checks and tests)."""
        return self._listener is not None and self._listener.listening

    def _wakeup_soon(self) -> None:
        self._wakeup.set()

    async def drain_once(self) -> int:
        """Claim, publish and mark one batch; return how many rows were published."""
        if self._pool is None:
            # min_size=0: creating the pool never fails, connecting is retried by run().
            self._pool = await asyncpg.create_pool(self._database_url, min_size=0, max_size=2, timeout=10)
        async with self._pool.acquire() as connection, connection.transaction():
            if not await connection.fetchval(TRY_CLAIM, CLAIM_LOCK_KEY):
                return 0  # another relay is claiming; it will publish these rows
            records = await connection.fetch(CLAIM, self.batch_size_max, self.claim_after_seconds)
            rows = [outbox_row(record) for record in records]
            if rows:
                try:
                    await self._publish(rows)
                except Exception as error:
                    # Wrapped so that a broker's OSError is not taken for a lost database.
                    raise PublishFailed(f"publishing {len(rows)} outbox rows failed") from error
                await connection.execute(MARK_PUBLISHED, [row.outbox_id for row in rows])
        return len(rows)

    async def run(self) -> None:
        """Publish until stop(): drain while rows wait, then sleep until NOTIFY or the poll."""
        self._stopped = asyncio.Event()
        listener = asyncio.create_task(
            self._listener.run() if self._listener else self._stopping.wait(), name="outbox-listener"
        )
        backoff = Backoff(initial_seconds=0.1, cap_seconds=5.0)
        try:
            while not self._stopping.is_set():
                self._wakeup.clear()  # before draining: a NOTIFY during the drain is kept
                try:
                    published = await self.drain_once()
                except Exception as error:
                    await self._recover(error, backoff.next_delay_seconds())
                    continue
                backoff.reset()
                if published < self.batch_size_max:
                    await self._sleep(self.poll_interval_seconds, self._wakeup)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self._close_pool()
            self._stopped.set()

    async def stop(self) -> None:
        """Finish the claim in progress and stop run(); close the pool."""
        self._stopping.set()
        self._wakeup.set()
        if self._stopped is not None:
            await self._stopped.wait()
        else:
            await self._close_pool()

    async def _recover(self, error: Exception, delay_seconds: float) -> None:
        if isinstance(error, PublishFailed):
            logger.warning("outbox publish failed (%r); retrying in %.2fs", error.__cause__, delay_seconds)
        elif is_connection_error(error) and self._pool is not None:
            logger.warning(
                "outbox relay lost its database connection (%r); reconnecting in %.2fs", error, delay_seconds
            )
            await self._pool.expire_connections()
        else:
            logger.warning("outbox drain failed (%r); retrying in %.2fs", error, delay_seconds)
        await self._sleep(delay_seconds, self._stopping)

    async def _sleep(self, seconds: float, interrupt: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(interrupt.wait(), seconds)

    async def _close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


def outbox_row(record: asyncpg.Record) -> OutboxRow:
    return OutboxRow(
        outbox_id=record["outbox_id"],
        event_id=record["event_id"],
        topic=record["topic"],
        key=record["key"],
        value=bytes(record["value"]),
        headers=decode_headers(record["headers"]),
    )
