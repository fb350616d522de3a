"""Open, fund and pay end to end through the real broker, a worker and PostgreSQL."""

from __future__ import annotations

import asyncpg
import orjson

from models.payment import payment_id_for
from tests.conftest import Service


async def test_a_payment_is_captured_and_posted(service: Service) -> None:
    driver = service.driver
    await driver.open_account("skeleton-alice")
    await driver.open_account("skeleton-bob")
    await driver.wait_for(lambda: len(driver.of("AccountOpened")) >= 2, what="AccountOpened x2")
    await driver.fund("skeleton-fund-1", "skeleton-alice", 10_000)
    await driver.wait_for(lambda: len(driver.of("AccountFunded")) >= 1, what="AccountFunded")

    await driver.pay(
        "skeleton-pay-1",
        "skeleton-alice",
        "skeleton-bob",
        2_500,
        description="rent",
        metadata={"order": "42"},
    )
    payment_id = payment_id_for("skeleton-pay-1")
    await driver.wait_for(lambda: payment_id in driver.outcomes(), what="the payment's outcome")

    [captured] = driver.outcomes()[payment_id]
    assert captured["event_type"] == "PaymentCaptured"
    assert captured["amount"] == 2_500 and captured["currency"] == "USD"
    assert captured["psp_reference"]
    [message] = [
        r for r in driver.events["fintech.events.PaymentCaptured"] if r.body["payment_id"] == payment_id
    ]
    assert message.key == payment_id.encode()
    assert message.headers["ce_id"].decode() == captured["event_id"]
    assert message.headers["ce_specversion"] == b"1.0"
    assert message.headers["content-type"] == b"application/json"

    connection = await asyncpg.connect(service.database_url)
    try:
        legs = await connection.fetch(
            "SELECT account_id, amount FROM postings WHERE payment_id = $1 ORDER BY amount", payment_id
        )
        balances = dict(
            await connection.fetch("SELECT account_id, SUM(amount) FROM postings GROUP BY account_id")
        )
    finally:
        await connection.close()
    assert [(r["account_id"], r["amount"]) for r in legs] == [
        ("skeleton-alice", -2_500),
        ("skeleton-bob", 2_500),
    ]
    assert balances == {"settlement:USD": -10_000, "skeleton-alice": 7_500, "skeleton-bob": 2_500}


async def test_the_worker_logs_each_failed_payment_as_json_with_the_payment_ids(service: Service) -> None:
    driver = service.driver
    await driver.open_account("log-alice")
    await driver.open_account("log-bob")
    await driver.wait_for(
        lambda: {"log-alice", "log-bob"} <= {e["account_id"] for e in driver.of("AccountOpened")},
        what="accounts",
    )
    await driver.pay("log-pay-1", "log-alice", "log-bob", 10)  # no funds: fails
    payment_id = payment_id_for("log-pay-1")
    await driver.wait_for(lambda: payment_id in driver.outcomes(), what="the outcome")
    lines = [
        orjson.loads(line) for line in service.workers[0].log.read_text().splitlines() if line.startswith("{")
    ]
    [line] = [line for line in lines if line.get("payment_id") == payment_id]
    assert line["idempotency_key"] == "log-pay-1" and line["correlation_id"] == payment_id
    assert line["level"] == "info" and "insufficient_funds" in line["message"]
