"""The payments' read model end to end: the read side projects the public events into
payment_views, and an account's payments are listed as debtor and as creditor, filtered,
a page at a time; a redelivered event changes nothing (agents/projection.py).

Here the read side runs apart, as a production layout would: the module's worker is a
payments-only one (PAYMENTS_WORKER_ROLE=payments), beside a read side worker of its own
consumer group. The other modules run every agent in one worker (the default)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any
from uuid import uuid4

import asyncpg
import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from agents.projection import NAME
from harness.worker_process import WorkerProcess
from infra.topics import APP_ID, READ_SIDE_APP_ID
from ledger import payment_views
from ledger.migrate import migrate
from ledger.payment_views import PaymentSummary
from ledger.store import LedgerStore
from models.payment import payment_id_for
from models.payment_view import Fact, Refund, Terms
from tests.conftest import Service
from tests.integration.outside import (
    events_about,
    fund,
    get,
    open_accounts,
    outcome,
    poll,
    raw_messages,
    send_raw,
    sql,
)


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {"PAYMENTS_WORKER_ROLE": "payments"}


@pytest.fixture(scope="module")
async def read_side(service: Service) -> WorkerProcess:
    """The read side's own worker, beside the module's payments-only one."""
    return await asyncio.to_thread(service.add_worker, PAYMENTS_WORKER_ROLE="read-side")


@pytest.fixture
async def store(service: Service, read_side: WorkerProcess) -> AsyncIterator[LedgerStore]:
    ledger = await LedgerStore.connect(service.database_url, max_size=2, retry_deadline_seconds=10)
    yield ledger
    await ledger.close()


async def pay(service: Service, key: str, debtor: str, creditor: str, amount: int, **extra: Any
              ) -> dict[str, Any]:
    """One payment, and its outcome (sent one at a time: every payment has its own created_at)."""
    await service.driver.pay(key, debtor, creditor, amount, **extra)
    return await outcome(service.driver, payment_id_for(key))


async def refund(service: Service, key: str, payment_id: str, amount: int) -> dict[str, Any]:
    driver = service.driver
    await driver.refund(key, payment_id, amount)
    await driver.wait_for(lambda: bool(events_about(driver, "PaymentRefunded", idempotency_key=key)),
                          timeout_seconds=20, what=f"refund {key}")
    [refunded] = events_about(driver, "PaymentRefunded", idempotency_key=key)
    return refunded


async def listed(store: LedgerStore, account_id: str, statuses: dict[str, str]) -> list[PaymentSummary]:
    """The account's listing once the view shows every payment of `statuses` (payment id -> status)."""
    return await poll(lambda: store.account_payments(account_id),
                      lambda found: {p.payment_id: p.status for p in found} == statuses,
                      what=f"the payments of {account_id}: {statuses}")


def ids(payments: list[PaymentSummary]) -> list[str]:
    return [payment.payment_id for payment in payments]


async def every_page(store: LedgerStore, account_id: str, limit: int, **filters: Any) -> list[list[str]]:
    pages, before = [], None
    while True:
        page = await store.account_payments(account_id, before=before, limit=limit, **filters)
        if not page:
            return pages
        pages.append(ids(page))
        before = page[-1].cursor


async def test_an_accounts_payments_as_debtor_and_creditor(service: Service, store: LedgerStore) -> None:
    alice, bob, carol = "pv-alice", "pv-bob", "pv-carol"
    await open_accounts(service, alice, bob, carol)
    await fund(service, "pv-fund-alice", alice, 20_000)
    await fund(service, "pv-fund-bob", bob, 1_000)
    assert (await pay(service, "pv-captured", alice, bob, 1_000))["event_type"] == "PaymentCaptured"
    declined = await pay(service, "pv-declined", alice, bob, 2_000, metadata={"psp_simulation": "decline"})
    assert declined["reason"] == "psp_declined", declined
    partly = await pay(service, "pv-partly", alice, bob, 3_000)
    assert partly["event_type"] == "PaymentCaptured"
    await refund(service, "pv-partly-refund", partly["payment_id"], 1_000)
    assert (await pay(service, "pv-back", bob, alice, 500))["event_type"] == "PaymentCaptured"
    for n in range(3):
        assert (await pay(service, f"pv-carol-{n}", alice, carol, 100 + n))["event_type"] == "PaymentCaptured"
    assert (await pay(service, "pv-self", alice, alice, 10))["reason"] == "same_account"

    [captured, failed, partial_id, back, self_id, *to_carol] = [payment_id_for(key) for key in (
        "pv-captured", "pv-declined", "pv-partly", "pv-back", "pv-self", "pv-carol-0", "pv-carol-1",
        "pv-carol-2")]
    with_bob = {captured: "captured", failed: "failed", partial_id: "partially_refunded", back: "captured"}
    with_carol = dict.fromkeys(to_carol, "captured")
    of_alice = await listed(store, alice, {**with_bob, **with_carol, self_id: "failed"})
    of_bob = await listed(store, bob, with_bob)
    assert await listed(store, carol, with_carol)

    # Newest first, the same payment the same for both of its accounts.
    assert ids(of_alice) == [self_id, *reversed(to_carol), back, partial_id, failed, captured]
    assert ids(of_bob) == [back, partial_id, failed, captured]
    assert [p for p in of_alice if p.payment_id in with_bob] == of_bob
    by_id = {payment.payment_id: payment for payment in of_alice}
    partly_view = by_id[partial_id]
    assert (partly_view.amount, partly_view.refunded, partly_view.currency) == (3_000, 1_000, "USD")
    assert (by_id[failed].reason, by_id[self_id].reason, by_id[captured].reason) == (
        "psp_declined", "same_account", None)
    assert (by_id[back].debtor_account_id, by_id[back].creditor_account_id) == (bob, alice)
    assert by_id[captured].idempotency_key == "pv-captured"
    assert all(p.created_at <= p.updated_at for p in of_alice)
    assert partly_view.updated_at > partly_view.created_at  # the refund came later

    # Filters: by status, by time ([since, until)), both.
    assert ids(await store.account_payments(alice, statuses=frozenset({"failed"}))) == [self_id, failed]
    assert ids(await store.account_payments(bob, statuses=frozenset({"captured", "partially_refunded"}))) == [
        back, partial_id, captured]
    since, until = partly_view.created_at, by_id[to_carol[1]].created_at
    between = await store.account_payments(alice, since=since, until=until)
    assert ids(between) == [to_carol[0], back, partial_id]
    after = await store.account_payments(alice, since=since + timedelta(microseconds=1))
    assert ids(after) == ids(of_alice)[:5]
    assert ids(await store.account_payments(alice, statuses=frozenset({"captured"}), until=until)) == [
        to_carol[0], back, captured]

    # Pages: every payment once, in order, whatever the page size and the filters.
    for limit in (1, 2, 3, 100):
        pages = await every_page(store, alice, limit)
        assert [payment for page in pages for payment in page] == ids(of_alice)
        assert all(len(page) == limit for page in pages[:-1])
    captured_pages = await every_page(store, alice, 2, statuses=frozenset({"captured"}))
    assert [payment for page in captured_pages for payment in page] == [*reversed(to_carol), back, captured]
    assert await store.account_payments("pv-nobody") == []


async def committed_offset(service: Service, group: str, topic: str, partition_number: int) -> int:
    """The group's committed offset of the partition; -1 for none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=service.bootstrap)
    await admin.start()
    partition = TopicPartition(topic, partition_number)
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[partition])
    finally:
        await admin.close()
    found = offsets.get(partition)
    return -1 if found is None else found.offset


async def committed_past(service: Service, topic: str, partition_number: int, offset: int) -> None:
    """Wait until the read side's group has committed past a message: by then it is written."""
    await poll(partial(committed_offset, service, READ_SIDE_APP_ID, topic, partition_number),
               partial(int.__lt__, offset), timeout_seconds=30,
               what=f"the read side's offset past {topic}[{partition_number}]@{offset}")


async def test_a_redelivered_event_changes_nothing(service: Service, store: LedgerStore) -> None:
    driver = service.driver
    debtor, creditor = "pv-again-debtor", "pv-again-creditor"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pv-again-fund", debtor, 5_000)
    captured = await pay(service, "pv-again", debtor, creditor, 3_000)
    payment_id = captured["payment_id"]
    first = await refund(service, "pv-again-r1", payment_id, 1_000)
    await listed(store, creditor, {payment_id: "partially_refunded"})

    # The same events again, as a producer retrying would publish them: the refund, and the
    # initiation and the capture (which must not move the payment back).
    again = []
    for topic, event_id in (("fintech.events.PaymentRefunded", first["event_id"]),
                            ("fintech.events.PaymentInitiated", None),
                            ("fintech.events.PaymentCaptured", captured["event_id"])):
        [received] = [r for r in driver.events[topic]
                      if r.body["payment_id"] == payment_id and event_id in (None, r.body["event_id"])]
        again.append(await send_raw(driver, topic, received.key, received.value))
    for where in again:
        await committed_past(service, where.topic, where.partition, where.offset)
    [view] = await store.account_payments(debtor)
    assert (view.status, view.refunded) == ("partially_refunded", 1_000)
    kept = await sql(service, "SELECT amount FROM payment_view_refunds WHERE payment_id = $1", payment_id)
    assert [row["amount"] for row in kept] == [1_000]

    # A second refund, of the rest: once the group has committed past it, the view shows it.
    rest = await refund(service, "pv-again-r2", payment_id, 2_000)
    [message] = await raw_messages(service.bootstrap, "fintech.events.PaymentRefunded",
                                   lambda m: orjson.loads(m.value)["event_id"] == rest["event_id"],
                                   at_least=1)
    await committed_past(service, message.topic, message.partition, message.offset)
    [view] = await store.account_payments(creditor)
    assert (view.status, view.refunded, view.amount) == ("refunded", 3_000, 3_000)


async def test_the_read_side_runs_apart_and_only_it_reads_the_public_events(
    service: Service, store: LedgerStore, read_side: WorkerProcess
) -> None:
    """What runs where: the public events are read by the read side's group only (the
    payments workers' group commits nothing on them), its worker folds them (its metrics
    count the batches, the payments worker's none), and it serves no API."""
    debtor, creditor = "pv-apart-debtor", "pv-apart-creditor"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pv-apart-fund", debtor, 1_000)
    await pay(service, "pv-apart", debtor, creditor, 100)
    payment_id = payment_id_for("pv-apart")
    [message] = await raw_messages(service.bootstrap, "fintech.events.PaymentCaptured",
                                   lambda m: orjson.loads(m.value)["payment_id"] == payment_id, at_least=1)
    await committed_past(service, message.topic, message.partition, message.offset)
    assert await committed_offset(service, APP_ID, message.topic, message.partition) == -1
    await listed(store, debtor, {payment_id: "captured"})

    async def folded(worker: WorkerProcess) -> float:
        """The read side's batches the worker counted."""
        status, text = await get(f"{worker.url}/metrics")
        assert status == 200
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "payments_batch_size_count" and sample.labels.get("agent") == NAME)

    assert await folded(read_side) > 0
    assert await folded(service.workers[0]) == 0  # the payments-only worker
    assert (await get(f"{read_side.url}/healthz"))[0] == 200
    status, answer = await get(f"{read_side.url}/v1/accounts/{debtor}")
    assert status == 404 and answer["type"] == "urn:payments:problem:not-found", answer


def refunds_of(ids: list[str], amount: int, at: datetime) -> list[Fact]:
    return [Fact(payment_id, at, refund=Refund(uuid4(), payment_id, amount)) for payment_id in ids]


def captures_of(ids: list[str], at: datetime) -> list[Fact]:
    terms = {payment_id: Terms(f"key-{payment_id}", "debtor", "creditor", 1_000, "USD") for payment_id in ids}
    return [fact for payment_id in ids for fact in (
        Fact(payment_id, at, terms[payment_id]),
        Fact(payment_id, at + timedelta(seconds=1), terms[payment_id], "captured"))]


async def test_batches_about_the_same_payments_at_once_count_every_refund(database_url: str) -> None:
    """Two workers' projections around a rebalance: refunds written while the payment's
    other events are, by other transactions, all count, whichever commits first."""
    await migrate(database_url)
    connections = [await asyncpg.connect(database_url) for _ in range(3)]
    at = datetime(2025, 1, 1, tzinfo=UTC)
    try:
        for attempt in range(5):
            ids = [f"race-{attempt}-{n}" for n in range(100)]
            batches = (refunds_of(ids, 300, at + timedelta(seconds=5)), captures_of(ids, at),
                       refunds_of(ids, 700, at + timedelta(seconds=6)))
            await asyncio.gather(*(payment_views.write(connection, batch)
                                   for connection, batch in zip(connections, batches, strict=True)))
            rows = await connections[0].fetch(
                "SELECT status, refunded, created_at FROM payment_views WHERE payment_id = ANY($1)", ids)
            assert [tuple(row) for row in rows] == [("refunded", 1_000, at)] * len(ids)
    finally:
        for connection in connections:
            await connection.close()
