"""The notify step against real receivers (aiohttp servers on loopback), the real broker and
PostgreSQL: what is delivered, signed how, retried when, isolated from whom, and kept
through a kill -9."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook

from harness.receiver import Receiver
from ledger.migrate import migrate
from ledger.store import LedgerStore
from models.payment import payment_id_for
from models.webhooks import Notice
from tests.conftest import Service
from tests.integration.outside import fund, http, open_accounts, outcome, poll
from tests.integration.test_cli import payments

# Short schedules (the setting), a short timeout, and an endpoint disabled after failing 4 s.
SCHEDULE = "0.2,0.3,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,1,1,1,1,1,1"
TIMEOUT_SECONDS = 2.0


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return {
        "PAYMENTS_WEBHOOK_ALLOW_PRIVATE": "1",
        "PAYMENTS_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
        "PAYMENTS_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT_SECONDS),
        "PAYMENTS_WEBHOOK_DISABLE_AFTER_SECONDS": "4",
    }


def add(service: Service, url: str, *options: str) -> tuple[str, str]:
    result = payments(
        "webhooks",
        "add",
        "--url",
        url,
        *options,
        env={"PAYMENTS_DATABASE_URL": service.database_url, "PAYMENTS_WEBHOOK_ALLOW_PRIVATE": "1"},
    )
    assert result.returncode == 0, result.stderr
    endpoint_id, secret = result.stdout.strip().splitlines()[-1].split()
    return endpoint_id, secret


async def outcomes_of(service: Service, keys: list[str]) -> dict[str, dict[str, Any]]:
    """The outcome event of each payment, by its event_id."""
    events = [await outcome(service.driver, payment_id_for(key)) for key in keys]
    return {event["event_id"]: event for event in events}


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[tuple[LedgerStore, asyncpg.Connection]]:
    """A database of the test's own, migrated: the store, and a connection to look with."""
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, retry_deadline_seconds=30)
    connection = await asyncpg.connect(database_url)
    try:
        yield store, connection
    finally:
        await connection.close()
        await store.close()


async def test_settled_deliveries_past_the_retention_are_pruned_with_attempts(
    ledger: tuple[LedgerStore, asyncpg.Connection],
) -> None:
    """The retention's statement (PAYMENTS_WEBHOOK_RETENTION_HOURS, agents/pruning.py), on a
    database of its own: delivered and failed deliveries older than the retention go, with
    their attempts, a chunk at a time; recent ones stay, and pending ones stay however old."""
    store, connection = ledger
    await connection.execute("INSERT INTO webhook_endpoints (endpoint_id, url, secret) "
                             "VALUES ('we_1', 'https://example.com/hook', 'whsec_x')")
    rows = {  # event_id: (status, delivered_at, next_attempt_at), ages in minutes
        "delivered-old": ("delivered", 120, 0), "failed-old": ("failed", None, 120),
        "delivered-new": ("delivered", 1, 0), "pending-old": ("pending", None, 120),
    }
    for event_id, (status, delivered_ago, next_ago) in rows.items():
        delivery_id = await connection.fetchval(
            "INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, payload, occurred_at, "
            "status, delivered_at, next_attempt_at) VALUES ('we_1', $1, 'PaymentCaptured', '{}', now(), "
            "$2, now() - make_interval(mins => $3), now() - make_interval(mins => $4)) "
            "RETURNING delivery_id",
            event_id, status, delivered_ago, next_ago)
        await connection.execute("INSERT INTO webhook_attempts (delivery_id, status_code, "
                                 "latency_seconds) VALUES ($1, 500, 0.1), ($1, 200, 0.1)", delivery_id)

    assert await store.prune_webhook_deliveries(older_than_seconds=3600, limit=1) == 1  # a chunk
    assert await store.prune_webhook_deliveries(older_than_seconds=3600) == 1
    assert await store.prune_webhook_deliveries(older_than_seconds=3600) == 0
    left = await connection.fetch("SELECT event_id, (SELECT count(*) FROM webhook_attempts AS a "
                                  "WHERE a.delivery_id = d.delivery_id) AS attempts "
                                  "FROM webhook_deliveries AS d ORDER BY event_id")
    assert [(row["event_id"], row["attempts"]) for row in left] == [
        ("delivered-new", 2), ("pending-old", 2)]
    assert await connection.fetchval("SELECT count(*) FROM webhook_attempts") == 4

    # A removed endpoint's pending deliveries are given up, and so pruned in their turn.
    await connection.execute("INSERT INTO webhook_endpoints (endpoint_id, url, secret) "
                             "VALUES ('we_2', 'https://example.com/other', 'whsec_y')")
    await connection.execute("INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, "
                             "payload, occurred_at) "
                             "VALUES ('we_2', 'owed', 'PaymentCaptured', '{}', now())")
    assert await store.remove_webhook_endpoint("we_2")
    given_up = await connection.fetchrow("SELECT status, last_error FROM webhook_deliveries "
                                         "WHERE event_id = 'owed'")
    assert (given_up["status"], given_up["last_error"]) == ("failed", "endpoint removed")
    assert await store.prune_webhook_deliveries(older_than_seconds=0) == 2  # and delivered-new
    left = await connection.fetch("SELECT event_id FROM webhook_deliveries")
    assert [row["event_id"] for row in left] == ["pending-old"]


async def test_an_endpoint_is_owed_what_occurred_since_its_registration_within_the_retention(
    ledger: tuple[LedgerStore, asyncpg.Connection],
) -> None:
    """Events read again long after (a consumer group starting from the topics' beginning):
    none reaches an endpoint registered after it occurred, none older than the retention
    is owed again, and nothing is redelivered to, or left pending for, a removed endpoint."""
    store, connection = ledger
    await connection.execute(
        "INSERT INTO webhook_endpoints (endpoint_id, url, secret, created_at) VALUES "
        "('we_old', 'https://example.com/a', 'whsec_x', now() - interval '3 days'), "
        "('we_new', 'https://example.com/b', 'whsec_y', now() - interval '1 hour')")
    now = datetime.now(UTC)

    def notice(event_id: str, ago: timedelta) -> Notice:
        return Notice(event_id, "PaymentCaptured", ("acct",), now - ago, b"{}")

    notices = [notice("recent", timedelta(minutes=1)), notice("two-hours", timedelta(hours=2)),
               notice("two-days", timedelta(days=2))]
    await store.write_events([], notices, webhook_retention_hours=24)
    made = await connection.fetch("SELECT endpoint_id, event_id FROM webhook_deliveries ORDER BY 1, 2")
    assert [(row["endpoint_id"], row["event_id"]) for row in made] == [
        ("we_new", "recent"), ("we_old", "recent"), ("we_old", "two-hours")]

    # A batch that wrote a delivery as its endpoint was being removed: given up by the pruning.
    assert await store.remove_webhook_endpoint("we_new")
    await connection.execute("INSERT INTO webhook_deliveries (endpoint_id, event_id, event_type, "
                             "payload, occurred_at) "
                             "VALUES ('we_new', 'late', 'PaymentCaptured', '{}', now())")
    await store.prune_webhook_deliveries(older_than_seconds=3600)
    statuses = await connection.fetch("SELECT event_id, status FROM webhook_deliveries "
                                      "WHERE endpoint_id = 'we_new' ORDER BY event_id")
    assert [(row["event_id"], row["status"]) for row in statuses] == [
        ("late", "failed"), ("recent", "failed")]
    assert await store.redeliver_webhooks(event_id="recent") == 1  # we_old's only


async def test_every_outcome_reaches_a_healthy_receiver_once_signed(service: Service) -> None:
    receiver = await Receiver().start()
    try:
        endpoint_id, secret = add(service, receiver.url, "--account", "wh-a")
        assert endpoint_id.startswith("we_") and secret.startswith("whsec_")
        await open_accounts(service, "wh-a", "wh-b")
        await fund(service, "wh-fund-a", "wh-a", 100_000)
        keys = [f"wh-pay-{n}" for n in range(12)]
        for n, key in enumerate(keys):
            extra = {"metadata": {"psp_simulation": "decline"}} if n % 4 == 3 else {}
            await service.driver.pay(key, "wh-a", "wh-b", 100 + n, **extra)
        expected = await outcomes_of(service, keys)
        await service.driver.refund("wh-refund-1", payment_id_for("wh-pay-0"), 50)
        await poll(
            lambda: receiver.ids(),
            lambda ids: set(expected) <= set(ids) and len(ids) >= len(expected) + 2,
            what="every outcome, the funding and the refund delivered",
        )
        events = receiver.events()
        assert {events[i]["event_type"] for i in events} == {
            "PaymentCaptured",
            "PaymentFailed",
            "PaymentRefunded",
            "AccountFunded",
        }
        for event_id, event in expected.items():
            assert events[event_id] == event  # the same value as on Kafka
        for headers, body in receiver.received:
            Webhook(secret).verify(body, headers)  # raises on a bad signature
            assert headers["webhook-id"] == json.loads(body)["event_id"]
            assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
        await asyncio.sleep(1)
        assert max(receiver.ids().values()) == 1, receiver.ids()  # each once
    finally:
        await receiver.stop()


async def test_two_500s_then_200_delivers_on_the_third_attempt(service: Service) -> None:
    async def fails_twice(n: int) -> int:
        return 500 if n <= 2 else 200

    receiver = await Receiver(fails_twice).start()
    try:
        endpoint_id, _ = add(service, receiver.url, "--account", "wh-retry-a", "--event", "PaymentCaptured")
        await open_accounts(service, "wh-retry-a", "wh-retry-b")
        await fund(service, "wh-retry-fund", "wh-retry-a", 1_000)
        await service.driver.pay("wh-retry-pay", "wh-retry-a", "wh-retry-b", 10)
        captured = await outcome(service.driver, payment_id_for("wh-retry-pay"))
        await poll(lambda: len(receiver.received), lambda n: n >= 3, what="three attempts")
        assert [h["webhook-id"] for h, _ in receiver.received] == [captured["event_id"]] * 3
        status, page = await http(
            "GET", f"{service.workers[0].url}/v1/webhook_endpoints/{endpoint_id}/deliveries"
        )
        assert status == 200, page
        [delivery] = page["items"]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        assert [a["status_code"] for a in delivery["log"]] == [500, 500, 200]
        assert all(a["latency_seconds"] >= 0 for a in delivery["log"])
    finally:
        await receiver.stop()


async def test_a_receiver_down_for_a_while_gets_everything_once_back(service: Service) -> None:
    receiver = Receiver()  # not listening yet
    add(service, receiver.url, "--account", "wh-down-a")
    await open_accounts(service, "wh-down-a", "wh-down-b")
    await fund(service, "wh-down-fund", "wh-down-a", 10_000)
    keys = [f"wh-down-pay-{n}" for n in range(5)]
    for key in keys:
        await service.driver.pay(key, "wh-down-a", "wh-down-b", 10)
    expected = await outcomes_of(service, keys)
    await asyncio.sleep(1.5)  # attempts fail with the connection refused meanwhile
    await receiver.start()
    try:
        await poll(
            lambda: receiver.ids(),
            lambda ids: set(expected) <= set(ids),
            timeout_seconds=30,
            what="the deliveries after the receiver came back",
        )
    finally:
        await receiver.stop()


async def test_a_hanging_receiver_does_not_hold_up_another(service: Service) -> None:
    async def hangs(_: int) -> int:
        await asyncio.sleep(3 * TIMEOUT_SECONDS)  # longer than an attempt may take
        return 200

    stuck, fine = await Receiver(hangs).start(), await Receiver().start()
    try:
        add(service, stuck.url, "--account", "wh-hang-a")
        add(service, fine.url, "--account", "wh-hang-a")
        await open_accounts(service, "wh-hang-a", "wh-hang-b")
        await fund(service, "wh-hang-fund", "wh-hang-a", 10_000)
        keys = [f"wh-hang-pay-{n}" for n in range(10)]
        for key in keys:
            await service.driver.pay(key, "wh-hang-a", "wh-hang-b", 10)
        expected = await outcomes_of(service, keys)
        started = time.monotonic()
        await poll(
            lambda: fine.ids(), lambda ids: set(expected) <= set(ids), what="the healthy receiver"
        )
        assert time.monotonic() - started < 5 * TIMEOUT_SECONDS
        assert len(stuck.received) >= 1  # it was tried, and hangs
    finally:
        await stuck.stop()
        await fine.stop()


async def test_one_dead_receiver_among_a_hundred_healthy_ones_changes_nothing_for_them(
    service: Service,
) -> None:
    async def hangs(_: int) -> int:
        await asyncio.sleep(3 * TIMEOUT_SECONDS)  # longer than an attempt may take
        return 200

    dead = await Receiver(hangs).start()
    healthy = [await Receiver().start() for _ in range(100)]
    try:
        for receiver in [dead, *healthy]:
            status, made = await http(
                "POST",
                f"{service.workers[0].url}/v1/webhook_endpoints",
                {"url": receiver.url, "accounts": ["wh-many-a"]},
            )
            assert status == 201, made
        await open_accounts(service, "wh-many-a", "wh-many-b")
        await fund(service, "wh-many-fund", "wh-many-a", 10_000)
        keys = [f"wh-many-pay-{n}" for n in range(5)]
        started = time.monotonic()
        for key in keys:
            await service.driver.pay(key, "wh-many-a", "wh-many-b", 10)
        expected = await outcomes_of(service, keys)
        await poll(
            lambda: [set(r.ids()) for r in healthy],
            lambda seen: all(set(expected) <= ids for ids in seen),
            timeout_seconds=30,
            what="every healthy receiver's deliveries",
        )
        took = time.monotonic() - started
        count = len(healthy) * len(expected)
        print(f"\n{count} deliveries to 100 healthy receivers beside a hanging one: {took:.1f} s")
        assert took < 4 * TIMEOUT_SECONDS, took  # never a hanging attempt's timeout per delivery
    finally:
        for receiver in [dead, *healthy]:
            await receiver.stop()


async def test_filters_by_account_and_type(service: Service) -> None:
    failures, everything_of_b = await Receiver().start(), await Receiver().start()
    try:
        add(service, failures.url, "--account", "wh-filter-a", "--event", "PaymentFailed")
        add(service, everything_of_b.url, "--account", "wh-filter-b")
        await open_accounts(service, "wh-filter-a", "wh-filter-b", "wh-filter-c")
        await fund(service, "wh-filter-fund-a", "wh-filter-a", 10_000)
        await fund(service, "wh-filter-fund-c", "wh-filter-c", 10_000)
        await service.driver.pay("wh-filter-ok", "wh-filter-a", "wh-filter-c", 10)
        await service.driver.pay(
            "wh-filter-no", "wh-filter-a", "wh-filter-c", 10, metadata={"psp_simulation": "decline"}
        )
        await service.driver.pay("wh-filter-to-b", "wh-filter-c", "wh-filter-b", 10)
        declined = await outcomes_of(service, ["wh-filter-no"])
        to_b = await outcomes_of(service, ["wh-filter-to-b"])
        await outcomes_of(service, ["wh-filter-ok"])
        await poll(
            lambda: (set(failures.ids()), set(everything_of_b.ids())),
            lambda seen: set(declined) <= seen[0] and set(to_b) <= seen[1],
            what="the filtered deliveries",
        )
        await asyncio.sleep(1)
        assert set(failures.ids()) == set(declined)
        assert set(everything_of_b.ids()) == set(to_b)
    finally:
        await failures.stop()
        await everything_of_b.stop()


async def test_redeliver_sends_again_under_the_same_webhook_id(service: Service) -> None:
    receiver = await Receiver().start()
    try:
        add(service, receiver.url, "--account", "wh-again-a")
        await open_accounts(service, "wh-again-a", "wh-again-b")
        await fund(service, "wh-again-fund", "wh-again-a", 1_000)
        await service.driver.pay("wh-again-pay", "wh-again-a", "wh-again-b", 10)
        [event_id] = await outcomes_of(service, ["wh-again-pay"])
        await poll(lambda: receiver.ids()[event_id], lambda n: n == 1, what="the first delivery")
        result = payments(
            "webhooks",
            "redeliver",
            "--event-id",
            event_id,
            env={"PAYMENTS_DATABASE_URL": service.database_url},
        )
        assert result.returncode == 0 and result.stdout.startswith("1 "), result.stdout + result.stderr
        await poll(lambda: receiver.ids()[event_id], lambda n: n == 2, what="the redelivery")
        first, second = [body for headers, body in receiver.received if headers["webhook-id"] == event_id]
        assert first == second
    finally:
        await receiver.stop()


async def test_an_endpoint_failing_too_long_is_disabled_said_and_counted(service: Service) -> None:
    async def broken(_: int) -> int:
        return 503

    receiver = await Receiver(broken).start()
    try:
        endpoint_id, _ = add(service, receiver.url, "--account", "wh-broken-a")
        await open_accounts(service, "wh-broken-a", "wh-broken-b")
        await fund(service, "wh-broken-fund", "wh-broken-a", 1_000)

        async def disabled() -> bool:
            status, listed = await http("GET", f"{service.workers[0].url}/v1/webhook_endpoints")
            assert status == 200, listed
            return any(e["endpoint_id"] == endpoint_id and e["disabled_at"] for e in listed["items"])

        await poll(disabled, bool, timeout_seconds=30, what="the endpoint disabled")
        log = service.workers[0].log.read_text()
        assert f"webhook endpoint {endpoint_id}" in log and "disabled" in log
        status, text = await http("GET", f"{service.workers[0].url}/metrics")
        # At least this one (an earlier test's hanging receiver may have been disabled too).
        counted = re.search(r"^payments_webhook_endpoints_disabled_total (\S+)$", text, re.MULTILINE)
        assert counted and float(counted.group(1)) >= 1, text
        attempts = len(receiver.received)
        await asyncio.sleep(1.5)
        assert len(receiver.received) == attempts  # nothing more is sent to it
        result = payments(
            "webhooks", "enable", endpoint_id, env={"PAYMENTS_DATABASE_URL": service.database_url}
        )
        assert result.returncode == 0
    finally:
        await receiver.stop()


async def test_endpoints_over_http_and_the_private_address_guard(service: Service) -> None:
    base = service.workers[0].url
    status, made = await http(
        "POST",
        f"{base}/v1/webhook_endpoints",
        {"url": "http://127.0.0.1:9/hooks", "event_types": ["PaymentCaptured"]},
    )
    assert (
        status == 201 and made["secret"].startswith("whsec_") and made["event_types"] == ["PaymentCaptured"]
    )
    status, listed = await http("GET", f"{base}/v1/webhook_endpoints")
    assert made["endpoint_id"] in {e["endpoint_id"] for e in listed["items"]}
    assert all("secret" not in e for e in listed["items"])
    status, answer = await http("POST", f"{base}/v1/webhook_endpoints", {"url": "ftp://example.com/x"})
    assert status == 422 and answer["errors"][0]["field"] == "url"
    status, answer = await http(
        "POST",
        f"{base}/v1/webhook_endpoints",
        {"url": "https://example.com/x", "event_types": ["PaymentLost"]},
    )
    assert status == 422
    assert (await http("DELETE", f"{base}/v1/webhook_endpoints/{made['endpoint_id']}"))[0] == 204
    assert (await http("DELETE", f"{base}/v1/webhook_endpoints/{made['endpoint_id']}"))[0] == 404
    # Without PAYMENTS_WEBHOOK_ALLOW_PRIVATE: loopback, private and plain http are refused.
    for url in (
        "http://127.0.0.1:8080/x",
        "https://127.0.0.1/x",
        "https://10.1.2.3/x",
        "https://localhost/x",
        "https://169.254.169.254/latest",
    ):
        result = payments(
            "webhooks", "add", "--url", url, env={"PAYMENTS_DATABASE_URL": service.database_url}
        )
        assert result.returncode == 2 and ("not https" in result.stderr or "address" in result.stderr), (
            url,
            result,
        )


async def test_a_kill_mid_delivery_loses_nothing(service: Service) -> None:
    """Last: it replaces the module's worker."""

    async def slow(_: int) -> int:
        await asyncio.sleep(0.3)
        return 200

    receiver = await Receiver(slow).start()
    try:
        add(service, receiver.url, "--account", "wh-kill-a")
        await open_accounts(service, "wh-kill-a", "wh-kill-b")
        await fund(service, "wh-kill-fund", "wh-kill-a", 100_000)
        keys = [f"wh-kill-pay-{n}" for n in range(30)]
        for key in keys:
            await service.driver.pay(key, "wh-kill-a", "wh-kill-b", 10)
        expected = await outcomes_of(service, keys)
        await poll(lambda: len(receiver.received), lambda n: n >= 3, what="deliveries under way")
        service.workers[0].kill()
        assert len(set(receiver.ids()) & set(expected)) < len(expected), "all delivered before the kill"
        await asyncio.to_thread(service.add_worker)
        await poll(
            lambda: receiver.ids(),
            lambda ids: set(expected) <= set(ids),
            timeout_seconds=90,
            what="every delivery after the restart",
        )
    finally:
        await receiver.stop()

