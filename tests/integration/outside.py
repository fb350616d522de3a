"""Looking at the running service from outside: HTTP, SQL on the ledger, raw topics.

Shared by the end-to-end integration modules; every helper goes through the real
worker, broker or PostgreSQL, never through the service's own modules.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord, RecordMetadata

from harness.driver import ServiceDriver
from tests.conftest import CALLER, Service

T = TypeVar("T")

QUIET_SECONDS = 1.0  # how long to watch that nothing more arrives (at most 2 s)


# --- HTTP -------------------------------------------------------------------------------------


def _request(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def http(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
               key: str | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body or the raw text when it is not JSON), asked with `key`
    (default: the module's service's key; "" for none)."""
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    key = CALLER.get("key", "") if key is None else key
    authorization = {"Authorization": f"Bearer {key}"} if key else {}
    all_headers = {"Content-Type": "application/json", **authorization, **(headers or {})}
    status, payload = await asyncio.to_thread(_request, method, url, raw, all_headers)
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode(errors="replace")


async def get(url: str, key: str | None = None) -> tuple[int, Any]:
    return await http("GET", url, key=key)


async def answered(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
                   key: str | None = None) -> tuple[int, Any]:
    """The answer, asked again while it is a 503, as the API tells a client to (with the same
    Idempotency-Key, if any): a worker answers so while partitions are being reassigned."""
    return await poll(lambda: http(method, url, body, headers, key), lambda answer: answer[0] != 503,
                      what=f"{method} {url} answered")


async def poll(probe: Callable[[], Awaitable[T] | T], condition: Callable[[T], bool],
               timeout_seconds: float = 20.0, what: str = "condition") -> T:
    """Ask again (every 50 ms) until the answer satisfies the condition; the probe may be a
    coroutine function (an HTTP call) or a plain one (a look at what a receiver recorded)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        answer = probe()
        value: T = await answer if inspect.isawaitable(answer) else answer  # type: ignore[assignment]
        if condition(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_seconds:.0f}s waiting for {what}; last: {value!r}")
        await asyncio.sleep(0.05)


async def account_view(service: Service, account_id: str) -> tuple[int, Any]:
    return await get(f"{service.workers[0].url}/v1/accounts/{account_id}")


async def account_settles(service: Service, account_id: str, posted: int) -> dict[str, Any]:
    """Wait until the worker's view of the account shows `posted` and nothing held."""
    _, view = await poll(lambda: account_view(service, account_id),
                         lambda answer: answer[0] == 200 and answer[1]["posted"] == posted
                         and answer[1]["pending"] == 0,
                         what=f"{account_id} posted={posted}, pending=0")
    assert view["available"] == posted
    return view  # type: ignore[no-any-return]


async def payment_view(service: Service, payment_id: str) -> tuple[int, Any]:
    return await get(f"{service.workers[0].url}/v1/payments/{payment_id}")


# --- the ledger of record -------------------------------------------------------------------


async def sql(service: Service, query: str, *args: Any) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(service.database_url)
    try:
        return await connection.fetch(query, *args)  # type: ignore[no-any-return]
    finally:
        await connection.close()


async def ledger_balance(service: Service, account_id: str) -> int:
    rows = await sql(service, "SELECT COALESCE(SUM(amount), 0)::bigint AS b FROM postings "
                              "WHERE account_id = $1", account_id)
    return int(rows[0]["b"])


async def postings_of(service: Service, payment_id: str) -> list[tuple[str, int]]:
    rows = await sql(service, "SELECT account_id, amount FROM postings WHERE payment_id = $1 "
                              "ORDER BY posting_id", payment_id)
    return [(r["account_id"], r["amount"]) for r in rows]


async def unbalanced(service: Service) -> list[Any]:
    rows = await sql(service, "SELECT transaction_id FROM postings GROUP BY transaction_id, currency "
                              "HAVING SUM(amount) <> 0")
    return [r["transaction_id"] for r in rows]


# --- driving ----------------------------------------------------------------------------------


async def open_accounts(service: Service, *account_ids: str, currency: str = "USD",
                        **extra: Any) -> None:
    driver = service.driver
    for account_id in account_ids:
        await driver.open_account(account_id, currency, **extra)
    wanted = set(account_ids)
    await driver.wait_for(lambda: wanted <= {e["account_id"] for e in driver.of("AccountOpened")},
                          what=f"AccountOpened for {sorted(wanted)}")


async def fund(service: Service, key: str, account_id: str, amount: int, currency: str = "USD") -> None:
    """Fund and wait until the money is both in the ledger and in the worker's balance."""
    driver = service.driver
    before = await ledger_balance(service, account_id)
    await driver.fund(key, account_id, amount, currency)
    await driver.wait_for(lambda: any(e["idempotency_key"] == key for e in driver.of("AccountFunded")),
                          what=f"AccountFunded {key}")
    await account_settles(service, account_id, before + amount)


async def outcome(driver: ServiceDriver, payment_id: str, timeout_seconds: float = 30.0
                  ) -> dict[str, Any]:
    await driver.wait_for(lambda: payment_id in driver.outcomes(), timeout_seconds,
                          what=f"the outcome of {payment_id}")
    return driver.outcomes()[payment_id][0]


async def quiet(seconds: float = QUIET_SECONDS) -> None:
    """Watch for a moment that nothing more arrives (the one fixed wait allowed)."""
    await asyncio.sleep(seconds)


def events_about(driver: ServiceDriver, event_type: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in driver.of(event_type) if all(e.get(k) == v for k, v in match.items())]


async def send_raw(driver: ServiceDriver, topic: str, key: bytes | None, value: bytes | None
                   ) -> RecordMetadata:
    """Publish exact bytes and return where they landed (partition, offset)."""
    assert driver.producer is not None
    return await driver.producer.send_and_wait(topic, value, key=key)


# --- raw topics (no deduplication) -------------------------------------------------------------


async def raw_messages(bootstrap: str, topic: str, keep: Callable[[ConsumerRecord], bool], *,
                       at_least: int, timeout_seconds: float = 20.0) -> list[ConsumerRecord]:
    """Every message of `topic` that `keep` accepts, as a consumer without dedup sees them,
    read from the beginning until at least `at_least` are found (or the timeout)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                fetch_max_wait_ms=50)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh view
            partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout_seconds
        while len(found) < at_least and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                found.extend(m for m in messages if keep(m))
    finally:
        await consumer.stop()
    return found


def header(message: ConsumerRecord, name: str) -> bytes | None:
    return dict(message.headers or ()).get(name)
