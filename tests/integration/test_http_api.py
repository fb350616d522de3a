"""The HTTP surface on the worker's web server, used as a client would, checked against
Kafka (what downstream sees) and PostgreSQL (the ledger of record)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from api.gate import INTERNAL_HEADER
from infra.topics import STEPS
from models.commands import RequestPayment
from models.intake import hand_over
from models.payment import payment_id_for
from models.steps import Origin, RecordHome, encode_step
from tests.conftest import Service
from tests.integration.outside import (
    account_view,
    answered,
    events_about,
    fund,
    get,
    http,
    open_accounts,
    outcome,
    payment_view,
    poll,
    postings_of,
    quiet,
    send_raw,
    sql,
)


def body(debtor: str, creditor: str, amount: int, **extra: Any) -> dict[str, Any]:
    return {"debtor_account_id": debtor, "creditor_account_id": creditor, "amount": amount,
            "currency": "USD", **extra}


async def post_payment(service: Service, key: str | None, payload: Any) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await http("POST", f"{service.workers[0].url}/v1/payments", payload, headers)


async def status_is(service: Service, payment_id: str, status: str) -> dict[str, Any]:
    _, view = await poll(lambda: payment_view(service, payment_id),
                         lambda answer: answer[0] == 200 and answer[1]["status"] == status,
                         what=f"payment {payment_id} {status}")
    return view  # type: ignore[no-any-return]


async def test_healthz(service: Service) -> None:
    status, answer = await get(f"{service.workers[0].url}/healthz")
    assert status == 200, answer


async def test_post_payment_is_accepted_and_captured(service: Service) -> None:
    await open_accounts(service, "http-a", "http-b")
    await fund(service, "http-fund-a", "http-a", 10_000)
    key = "http-pay-1"
    payment_id = payment_id_for(key)
    status, answer = await post_payment(service, key, body("http-a", "http-b", 2_500, description="x"))
    assert status == 202, answer
    assert answer == {"payment_id": payment_id, "status": "pending"}

    captured = await outcome(service.driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured" and captured["idempotency_key"] == key
    assert await postings_of(service, payment_id) == [("http-a", -2_500), ("http-b", 2_500)]
    view = await status_is(service, payment_id, "captured")
    assert view["payment_id"] == payment_id and view["reason"] is None
    assert view["amount"] == 2_500 and view["currency"] == "USD"
    steps = [entry["step"] for entry in view["history"]]
    assert steps[0] == "initiated" and steps[-1] == "captured", steps
    times = [datetime.fromisoformat(entry["at"]) for entry in view["history"]]
    assert all(t.tzinfo is not None for t in times) and times == sorted(times)

    # Same key, same body: 200 with the current status, and no second payment.
    status, answer = await post_payment(service, key, body("http-a", "http-b", 2_500, description="x"))
    assert status == 200, answer
    assert answer == {"payment_id": payment_id, "status": "captured"}

    # Same key, another body: 409.
    status, answer = await post_payment(service, key, body("http-a", "http-b", 2_600, description="x"))
    assert status == 409, answer

    await quiet()
    assert len(service.driver.outcomes()[payment_id]) == 1
    assert await postings_of(service, payment_id) == [("http-a", -2_500), ("http-b", 2_500)]
    assert not events_about(service.driver, "CommandRejected", idempotency_key=key)


async def test_same_key_and_body_posted_back_to_back_make_one_payment(service: Service) -> None:
    await open_accounts(service, "http-burst-a", "http-burst-b")
    await fund(service, "http-fund-burst", "http-burst-a", 10_000)
    key = "http-burst-1"
    payment_id = payment_id_for(key)
    answers = [await post_payment(service, key, body("http-burst-a", "http-burst-b", 100)) for _ in range(3)]
    assert answers[0][0] == 202
    assert all(status in (200, 202) and answer["payment_id"] == payment_id for status, answer in answers)
    await outcome(service.driver, payment_id)
    await quiet()
    assert len(service.driver.outcomes()[payment_id]) == 1
    assert await postings_of(service, payment_id) == [("http-burst-a", -100), ("http-burst-b", 100)]


async def test_a_failed_payment_shows_its_reason(service: Service) -> None:
    await open_accounts(service, "http-fail-a", "http-fail-b")
    await fund(service, "http-fund-fail", "http-fail-a", 1_000)
    key = "http-fail-1"
    payment_id = payment_id_for(key)
    status, _ = await post_payment(service, key, body("http-fail-a", "http-fail-b", 500,
                                                      metadata={"psp_simulation": "decline"}))
    assert status == 202
    failed = await outcome(service.driver, payment_id)
    assert failed["reason"] == "psp_declined"
    view = await status_is(service, payment_id, "failed")
    assert view["reason"] == "psp_declined" and view["detail"]
    assert view["history"][-1]["step"] == "failed"
    status, answer = await post_payment(service, key, body("http-fail-a", "http-fail-b", 500,
                                                           metadata={"psp_simulation": "decline"}))
    assert (status, answer["status"]) == (200, "failed")


async def test_invalid_bodies_get_422_with_field_errors(service: Service) -> None:
    cases: list[tuple[str | None, Any, str | None]] = [
        ("http-bad-1", body("a", "b", 0), "amount"),
        ("http-bad-2", body("a", "b", 1.5), "amount"),
        ("http-bad-3", body("a", "b", "100"), "amount"),
        ("http-bad-4", body("a", "b", True), "amount"),
        ("http-bad-5", body("a", "b", 2**63), "amount"),
        ("http-bad-6", {**body("a", "b", 1), "currency": "XYZ"}, "currency"),
        ("http-bad-7", body("a b", "b", 1), "debtor_account_id"),
        ("http-bad-8", {"creditor_account_id": "b", "amount": 1, "currency": "USD"}, "debtor_account_id"),
        (None, body("a", "b", 1), "idempotency_key"),
        ("bad key!", body("a", "b", 1), "idempotency_key"),
    ]
    for key, payload, field in cases:
        status, answer = await post_payment(service, key, payload)
        assert status == 422, (key, payload, answer)
        assert field in {e["field"] for e in answer["errors"]}, (key, answer)
        assert all(e["message"] for e in answer["errors"])
    for raw in (b"not json", b"[1, 2]"):
        status, answer = await post_payment(service, "http-bad-raw", raw)
        assert status == 422, (raw, answer)
    await quiet()
    for key, _, _ in cases:
        if key is not None:
            assert payment_id_for(key) not in service.driver.outcomes()
            status, _ = await payment_view(service, payment_id_for(key))
            assert status == 404


async def test_unknown_payment_and_account_are_404(service: Service) -> None:
    status, _ = await payment_view(service, payment_id_for("http-nobody-paid"))
    assert status == 404
    status, _ = await account_view(service, "http-nobody")
    assert status == 404


async def test_account_view(service: Service) -> None:
    await open_accounts(service, "http-view", overdraft_limit=300)
    await fund(service, "http-fund-view", "http-view", 4_200)
    status, view = await account_view(service, "http-view")
    assert status == 200
    assert view == {"account_id": "http-view", "currency": "USD", "posted": 4_200, "pending": 0,
                    "available": 4_200}


async def test_statement_matches_the_ledger_and_paginates(service: Service) -> None:
    driver = service.driver
    account = "http-stmt"
    await open_accounts(service, account, "http-stmt-other")
    await fund(service, "http-stmt-fund-1", account, 5_000)
    await fund(service, "http-stmt-fund-2", "http-stmt-other", 5_000)
    keys = []
    for n in range(6):
        key = f"http-stmt-pay-{n}"
        keys.append(key)
        if n % 2:
            await driver.pay(key, account, "http-stmt-other", 100 + n)
        else:
            await driver.pay(key, "http-stmt-other", account, 1_000 + n)
    await driver.wait_for(lambda: all(payment_id_for(k) in driver.outcomes() for k in keys),
                          what="the statement's payments")

    rows = await sql(service, """
        SELECT posting_id, amount, payment_id, SUM(amount) OVER (ORDER BY posting_id) AS running
        FROM postings WHERE account_id = $1 ORDER BY posting_id""", account)
    assert len(rows) == 7
    expected = [(r["posting_id"], r["amount"], r["payment_id"], int(r["running"])) for r in rows]

    base = f"{service.workers[0].url}/v1/accounts/{account}/statement"
    status, whole = await get(base)
    assert status == 200 and whole["account_id"] == account
    assert [(e["posting_id"], e["amount"], e["payment_id"], e["balance_after"])
            for e in whole["entries"]] == expected
    assert all(e["currency"] == "USD" and datetime.fromisoformat(e["posted_at"]) for e in whole["entries"])
    assert whole["next_after"] is None

    pages, after = [], 0
    while True:
        status, page = await get(f"{base}?limit=3&after={after}")
        assert status == 200 and len(page["entries"]) <= 3
        pages.append(page)
        if page["next_after"] is None:
            break
        assert page["next_after"] == page["entries"][-1]["posting_id"]
        after = page["next_after"]
    assert [e for page in pages for e in page["entries"]] == whole["entries"]
    assert len(pages) == 3  # 3 + 3 + 1

    status, answer = await get(f"{base}?limit=abc")
    assert status == 422, answer


async def test_statement_refuses_a_limit_below_one(service: Service) -> None:
    account = "http-stmt-limit"
    await open_accounts(service, account)
    await fund(service, "http-stmt-limit-1", account, 100)
    await fund(service, "http-stmt-limit-2", account, 200)
    base = f"{service.workers[0].url}/v1/accounts/{account}/statement"
    for limit in (0, -3):
        status, answer = await get(f"{base}?limit={limit}")
        assert status == 422 or (answer["next_after"] is not None or len(answer["entries"]) == 2), (
            limit, answer)


async def test_metrics_parse_and_count_outcomes(service: Service) -> None:
    await open_accounts(service, "http-metrics-a", "http-metrics-b")
    await fund(service, "http-fund-metrics", "http-metrics-a", 1_000)
    await service.driver.pay("http-metrics-1", "http-metrics-a", "http-metrics-b", 10)
    await outcome(service.driver, payment_id_for("http-metrics-1"))
    status, text = await get(f"{service.workers[0].url}/metrics")
    assert status == 200
    assert isinstance(text, str)
    families = {family.name: family for family in text_string_to_metric_families(text)}
    samples = {sample.name for family in families.values() for sample in family.samples}
    assert "payments_outcomes_total" in samples, sorted(samples)
    outcomes = [s for s in families["payments_outcomes"].samples if s.name == "payments_outcomes_total"]
    assert sum(s.value for s in outcomes) >= 1
    assert {s.labels["outcome"] for s in outcomes} >= {"captured"}


async def test_a_repeat_posted_right_away_gets_200_and_another_body_409(service: Service) -> None:
    await open_accounts(service, "http-quick-a", "http-quick-b")
    await fund(service, "http-fund-quick", "http-quick-a", 10_000)
    key = "http-quick-1"
    first = await post_payment(service, key, body("http-quick-a", "http-quick-b", 100))
    again = await post_payment(service, key, body("http-quick-a", "http-quick-b", 100))
    other = await post_payment(service, key, body("http-quick-a", "http-quick-b", 999))
    await outcome(service.driver, payment_id_for(key))
    assert first[0] == 202
    assert (again[0], other[0]) == (200, 409), (again, other)


async def test_the_same_payment_posted_concurrently_is_accepted_once(service: Service) -> None:
    await open_accounts(service, "http-race-a", "http-race-b")
    await fund(service, "http-fund-race", "http-race-a", 10_000)
    key = "http-race-1"
    answers = await asyncio.gather(*(post_payment(service, key, body("http-race-a", "http-race-b", 100))
                                     for _ in range(4)))
    assert sorted(status for status, _ in answers) == [200, 200, 200, 202], answers
    await outcome(service.driver, payment_id_for(key))
    await quiet()
    assert len(service.driver.outcomes()[payment_id_for(key)]) == 1


async def test_statement_of_a_settlement_account_beyond_64_bits(service: Service) -> None:
    biggest = 2**63 - 1
    await open_accounts(service, "http-big-1", "http-big-2", currency="CHF")
    await fund(service, "http-big-fund-1", "http-big-1", biggest, currency="CHF")
    await fund(service, "http-big-fund-2", "http-big-2", biggest, currency="CHF")
    status, page = await get(f"{service.workers[0].url}/v1/accounts/settlement:CHF/statement")
    assert status == 200, page
    assert [e["balance_after"] for e in page["entries"]] == [-biggest, -2 * biggest]


async def test_with_two_workers_either_worker_answers_for_any_payment(service: Service) -> None:
    """Last in this module: it adds a second worker to the module's service."""
    driver = service.driver
    await open_accounts(service, "http-2w-a", "http-2w-b")
    await fund(service, "http-fund-2w", "http-2w-a", 100_000)
    before = [f"http-2w-before-{n}" for n in range(8)]
    for key in before:
        status, _ = await post_payment(service, key, body("http-2w-a", "http-2w-b", 10))
        assert status == 202
    await driver.wait_for(lambda: all(payment_id_for(k) in driver.outcomes() for k in before),
                          what="the payments made with one worker")

    await asyncio.to_thread(service.add_worker)
    for worker in service.workers:
        await poll(lambda url=worker.url: get(f"{url}/healthz"), lambda answer: answer[0] == 200,
                   what=f"{worker.url} healthy")
    after = [f"http-2w-after-{n}" for n in range(8)]
    for key in after:
        # Right after a rebalance the workers may still disagree about who owns the key: the
        # answer is then 503 with Retry-After, and a client asks again with the same key.
        answer = await answered("POST", f"{service.workers[1].url}/v1/payments",
                                body("http-2w-a", "http-2w-b", 10), {"Idempotency-Key": key})
        assert answer[0] == 202, answer
    await driver.wait_for(lambda: all(payment_id_for(k) in driver.outcomes() for k in after),
                          what="the payments made with two workers")

    wrong = []
    for worker in service.workers:
        await poll(lambda url=worker.url: get(f"{url}/v1/accounts/http-2w-a"),
                   lambda answer: answer[0] == 200 and answer[1]["posted"] == 100_000 - 10 * 16,
                   what=f"the account seen through {worker.url}")
        for key in before + after:
            payment_id = payment_id_for(key)
            # A worker slow on its heartbeats can make the group rebalance again at any time:
            # a 503 is then a right answer (asked again), a 404 never is.
            status, view = await answered("GET", f"{worker.url}/v1/payments/{payment_id}")
            assert status == 200 and view["status"] == "captured", view  # GET is routed
            same = await answered("POST", f"{worker.url}/v1/payments", body("http-2w-a", "http-2w-b", 10),
                                  {"Idempotency-Key": key})
            other = await answered("POST", f"{worker.url}/v1/payments", body("http-2w-a", "http-2w-b", 11),
                                   {"Idempotency-Key": key})
            if (same[0], same[1].get("status"), other[0]) != (200, "captured", 409):
                wrong.append((worker.url, key, same, other[0]))
    # Whatever the answers, nothing moved twice.
    await quiet()
    for key in before + after:
        assert len(driver.outcomes()[payment_id_for(key)]) == 1
        assert await postings_of(service, payment_id_for(key)) == [("http-2w-a", -10), ("http-2w-b", 10)]
    assert wrong == []

    # Asked for a payment's record at its home (the debtor's partition), only the worker
    # holding it answers; the other says 503, not the 404 of a payment it does not hold.
    # Asked with no home (a search: see the next test), the other says 404.
    secret = (await sql(service, "SELECT secret FROM service_secrets WHERE name = 'internal-requests'"))[0][0]
    path = f"/internal/payments/{payment_id_for(after[0])}"

    async def record_answers(query: str) -> list[int]:
        answers = [await http("GET", f"{worker.url}{path}{query}", headers={INTERNAL_HEADER: secret}, key="")
                   for worker in service.workers]
        return sorted(status for status, _ in answers)

    for query, others in (("?home=http-2w-a", 503), ("", 404)):
        statuses = await poll(lambda q=query: record_answers(q), lambda statuses: 200 in statuses,
                              what="the home's answer")
        assert statuses == sorted([200, others]), query


async def test_a_payment_whose_directory_entry_trails_it_is_found(service: Service) -> None:
    """The intake hands a payment over in two steps: to its debtor's home, and to its
    directory entry (where its id hashes), which a busy or just reassigned partition can
    hold up while the payment goes on. Here the second never comes: the payment is found
    all the same, through every worker (two, after the test above), and an id nobody
    holds is still a 404."""
    await open_accounts(service, "http-dir-a", "http-dir-b")
    await fund(service, "http-fund-dir", "http-dir-a", 1_000)
    command = RequestPayment(idempotency_key="http-dir-1", debtor_account_id="http-dir-a",
                             creditor_account_id="http-dir-b", amount=10, currency="USD")
    submitted, directory = hand_over(command, command.fingerprint(), Origin("tests.directory-trails", 0, 0))
    assert isinstance(directory.step, RecordHome)
    await send_raw(service.driver, STEPS, submitted.key.encode(), encode_step(submitted.step))
    payment_id = payment_id_for("http-dir-1")
    driver = service.driver
    await driver.wait_for(lambda: payment_id in driver.outcomes(), what="the payment's outcome")

    for worker in service.workers:
        status, view = await answered("GET", f"{worker.url}/v1/payments/{payment_id}")
        assert status == 200 and view["status"] == "captured", view
        status, _ = await answered("GET", f"{worker.url}/v1/payments/{payment_id_for('http-dir-none')}")
        assert status == 404


async def test_a_key_first_used_by_a_refund_gets_409_at_once(service: Service) -> None:
    """The key names a refund: the intake would refuse a payment under it (on the topic, as
    idempotency_conflict), so the POST answers 409 naming the first use, and sends nothing."""
    driver = service.driver
    await open_accounts(service, "http-rk-a", "http-rk-b")
    await fund(service, "http-fund-rk", "http-rk-a", 10_000)
    await driver.pay("http-rk-pay", "http-rk-a", "http-rk-b", 500)
    paid = payment_id_for("http-rk-pay")
    await outcome(driver, paid)
    await driver.refund("http-rk-refund", paid, 100)
    await driver.wait_for(
        lambda: bool(events_about(driver, "PaymentRefunded", idempotency_key="http-rk-refund")),
        timeout_seconds=20, what="the refund")

    status, answer = await post_payment(service, "http-rk-refund", body("http-rk-a", "http-rk-b", 100))

    assert status == 409, answer
    assert "RefundPayment" in answer["detail"] and paid in answer["detail"], answer
    await quiet()
    assert events_about(driver, "CommandRejected", idempotency_key="http-rk-refund") == []  # nothing sent
    assert (await payment_view(service, payment_id_for("http-rk-refund")))[0] == 404

