"""The outbox relay: in order, at least once, woken by NOTIFY, one claimer, survives restarts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

import asyncpg
import pytest

from harness.postgres import EmbeddedPostgres
from ledger.migrate import migrate
from ledger.outbox import OutboxRelay, OutboxRow, PublishFailed
from ledger.store import LedgerStore, Origin
from ledger.testing import funding_entry, open_accounts
from models.ledger import JournalEntry

ACCOUNTS = [f"account-{n}" for n in range(5)]


class RecordingPublish:
    """A stand-in for the Kafka producer: records what it was given, fails when told to."""

    def __init__(self, delay_seconds: float = 0.0) -> None:
        self.rows: list[OutboxRow] = []
        self.failures_left = 0
        self.delay_seconds = delay_seconds

    async def __call__(self, rows: Sequence[OutboxRow]) -> None:
        await asyncio.sleep(self.delay_seconds)
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("broker unavailable")
        self.rows.extend(rows)

    @property
    def event_ids(self) -> list[UUID]:
        return [row.event_id for row in self.rows]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[LedgerStore]:
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, retry_deadline_seconds=30)
    await open_accounts(store, *ACCOUNTS)
    yield store
    await store.close()


async def write_events(store: LedgerStore, batch: int, count: int, events: int = 1) -> list[UUID]:
    """Write `count` fundings spread over the accounts; return their event ids in order."""
    entries: list[JournalEntry] = [
        funding_entry(ACCOUNTS[n % len(ACCOUNTS)], 1, key=f"{batch}-{n}", events=events)
        for n in range(count)
    ]
    await store.write_batch([(entry, Origin("t", 0, n)) for n, entry in enumerate(entries)])
    return [message.event_id for entry in entries for message in entry.outbox]


async def wait_until(condition: object, timeout_seconds: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_seconds, "timed out"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def wait_until_published(store: LedgerStore) -> None:
    for _ in range(500):
        if (await store.outbox_backlog())[0] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the relay never marked its rows published")


def assert_in_order_per_key(rows: Sequence[OutboxRow]) -> None:
    """In order per key as a consumer that dedupes on event_id sees them."""
    last_by_key: dict[str, int] = {}
    seen: set[UUID] = set()
    for row in rows:
        if row.event_id in seen:
            continue  # a re-publication (at least once): the consumer drops it
        seen.add(row.event_id)
        assert row.outbox_id > last_by_key.get(row.key, 0), f"key {row.key} out of order"
        last_by_key[row.key] = row.outbox_id


async def test_drains_in_order_and_marks_published(store: LedgerStore, database_url: str) -> None:
    expected = await write_events(store, 1, 7, events=2) + await write_events(store, 2, 5)
    publish = RecordingPublish()
    relay = OutboxRelay(database_url, publish, batch_size_max=4)
    try:
        while await relay.drain_once():
            pass
    finally:
        await relay.stop()
    assert publish.event_ids == expected
    assert [row.outbox_id for row in publish.rows] == sorted(row.outbox_id for row in publish.rows)
    assert publish.rows[0].headers[1] == ("binary", b"\x00\xff")
    assert await store.outbox_backlog() == (0, 0.0)


async def test_a_failed_publish_leaves_the_rows_for_a_later_drain(
    store: LedgerStore, database_url: str
) -> None:
    expected = await write_events(store, 1, 6)
    publish = RecordingPublish()
    publish.failures_left = 1
    relay = OutboxRelay(database_url, publish)
    try:
        with pytest.raises(PublishFailed) as failure:
            await relay.drain_once()
        assert isinstance(failure.value.__cause__, ConnectionError)
        assert (await store.outbox_backlog())[0] == 6
        assert await relay.drain_once() == 6
    finally:
        await relay.stop()
    assert publish.event_ids == expected  # once each: the failed attempt marked nothing


async def test_run_retries_a_failing_publish_until_it_succeeds(
    store: LedgerStore, database_url: str
) -> None:
    expected = await write_events(store, 1, 4)
    publish = RecordingPublish()
    publish.failures_left = 2
    relay = OutboxRelay(database_url, publish, poll_interval_seconds=0.05)
    running = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: len(publish.rows) == 4)
        await wait_until_published(store)
    finally:
        await relay.stop()
        await running
    assert publish.event_ids == expected


async def test_notify_wakes_the_relay_long_before_the_poll(
    store: LedgerStore, database_url: str
) -> None:
    publish = RecordingPublish()
    relay = OutboxRelay(database_url, publish, poll_interval_seconds=30)
    running = asyncio.create_task(relay.run())
    try:
        await wait_until(lambda: relay.listening)
        await asyncio.sleep(0.1)  # let the drain that follows connecting go back to sleep
        expected = await write_events(store, 1, 3)
        waited_seconds = await wait_until(lambda: len(publish.rows) == 3, timeout_seconds=5)
        assert waited_seconds < 2
        assert publish.event_ids == expected
    finally:
        await relay.stop()
        await running


async def test_two_relays_never_publish_a_row_twice(store: LedgerStore, database_url: str) -> None:
    publish = RecordingPublish(delay_seconds=0.002)
    relays = [OutboxRelay(database_url, publish, batch_size_max=20, poll_interval_seconds=0.05)
              for _ in range(2)]
    running = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        expected: list[UUID] = []
        for batch in range(10):
            expected += await write_events(store, batch, 25)
        await wait_until(lambda: len(publish.rows) >= len(expected))
        await asyncio.sleep(0.2)  # time for a stray second publication to show up
    finally:
        for relay in relays:
            await relay.stop()
        await asyncio.gather(*running)
    assert sorted(publish.event_ids) == sorted(expected)
    assert len(publish.event_ids) == len(set(publish.event_ids))
    assert_in_order_per_key(publish.rows)


async def test_the_relay_survives_a_server_restart(
    store: LedgerStore, database_url: str, embedded_postgres: EmbeddedPostgres | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if embedded_postgres is None:
        pytest.skip("needs the embedded PostgreSQL (PAYMENTS_DATABASE_URL is set)")
    caplog.set_level(logging.INFO, logger="ledger")
    publish = RecordingPublish()
    relay = OutboxRelay(database_url, publish, poll_interval_seconds=0.2,
                        health_check_interval_seconds=0.5)
    running = asyncio.create_task(relay.run())
    try:
        expected = await write_events(store, 1, 5)
        await wait_until(lambda: len(publish.rows) == 5)
        await wait_until_published(store)  # else the restart may cut the claim before commit
        await asyncio.to_thread(embedded_postgres.restart)
        expected += await write_events(store, 2, 5)  # the store retries until the server is back
        await wait_until(lambda: set(publish.event_ids) == set(expected), timeout_seconds=20)
        await wait_until(lambda: relay.listening)
    finally:
        await relay.stop()
        await running
    assert_in_order_per_key(publish.rows)
    assert "outbox listener lost" in caplog.text


async def test_published_rows_past_the_retention_are_pruned_and_unpublished_ones_never(
    store: LedgerStore, database_url: str
) -> None:
    published = await write_events(store, 7, 4)
    await store.mark_published(published[:3])
    pool = await asyncpg.connect(database_url)
    try:  # two of the published rows were published an hour ago
        await pool.execute("UPDATE outbox SET published_at = now() - interval '1 hour' "
                           "WHERE event_id = ANY($1)", published[:2])
        assert await store.prune_outbox(older_than_seconds=600) == 2
        rows = await pool.fetch("SELECT event_id FROM outbox WHERE event_id = ANY($1)", published)
        left = {row["event_id"] for row in rows}
    finally:
        await pool.close()
    assert left == set(published[2:])  # the recent one, and the unpublished one
    assert await store.prune_outbox(older_than_seconds=0) == 1  # the unpublished one stays
