"""Who may use the HTTP API, checked against a real worker: keys made and revoked with the
operator's CLI, refusals in the contract's statuses, and nothing sent to Kafka for them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from harness.api_keys import new_key
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS
from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import fund, http, open_accounts, outcome, poll, quiet, raw_messages
from tests.integration.test_cli import payments


def payment(debtor: str, creditor: str, amount: int = 100) -> dict[str, Any]:
    return {"debtor_account_id": debtor, "creditor_account_id": creditor, "amount": amount, "currency": "USD"}


async def post(
    service: Service, path: str, body: Any, key: str, idempotency_key: str | None = None
) -> tuple[int, Any]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return await http("POST", f"{service.workers[0].url}{path}", body, headers, key=key)


async def get(service: Service, path: str, key: str) -> tuple[int, Any]:
    return await http("GET", f"{service.workers[0].url}{path}", key=key)


def cli_key(service: Service, *args: str) -> str:
    result = payments("api-keys", "create", *args, env={"PAYMENTS_DATABASE_URL": service.database_url})
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


async def usable(service: Service, key: str) -> None:
    """A key made a moment ago is live once every worker has read it (within a second)."""
    deadline = time.monotonic() + 5
    while (await get(service, "/v1/accounts/auth-nobody", key))[0] == 401:
        assert time.monotonic() < deadline, "a new key was not accepted within 5 s"
        await asyncio.sleep(0.1)


async def test_refusals_are_401_401_403_403_and_send_nothing(service: Service) -> None:
    await open_accounts(service, "auth-a", "auth-b", "auth-c")
    await fund(service, "auth-fund-a", "auth-a", 10_000)
    await fund(service, "auth-fund-c", "auth-c", 10_000)
    revoked = cli_key(service, "--name", "auth-revoked", "--scope", "payments:write", "--all-accounts")
    reader = cli_key(service, "--name", "auth-reader", "--scope", "payments:read", "--scope", "accounts:read")
    limited = cli_key(
        service,
        "--name",
        "auth-limited",
        "--scope",
        "payments:write",
        "--scope",
        "payments:read",
        "--account",
        "auth-a",
    )
    for key in (revoked, reader, limited):
        await usable(service, key)
    result = payments(
        "api-keys", "revoke", "auth-revoked", env={"PAYMENTS_DATABASE_URL": service.database_url}
    )
    assert result.returncode == 0, result.stderr
    revoked_at = time.monotonic()
    while (await get(service, "/v1/accounts/auth-a", revoked))[0] != 401:
        await asyncio.sleep(0.05)
    took = time.monotonic() - revoked_at
    assert took < 5, f"the revocation took {took:.1f} s to reach the worker"

    cases = [
        ("", "auth-refused-none", payment("auth-a", "auth-b"), 401),
        (revoked, "auth-refused-revoked", payment("auth-a", "auth-b"), 401),
        (reader, "auth-refused-scope", payment("auth-a", "auth-b"), 403),
        (limited, "auth-refused-account", payment("auth-c", "auth-b"), 403),
    ]
    for key, idempotency_key, body, expected in cases:
        url = f"{service.workers[0].url}/v1/payments"
        status, answer = await http("POST", url, body, {"Idempotency-Key": idempotency_key}, key=key)
        assert status == expected, (idempotency_key, status, answer)
        assert answer["status"] == expected and answer["type"].startswith("urn:payments:problem:")
        assert answer["title"] and answer["detail"], answer
    # Opening and funding are refused the same way.
    status, _ = await post(
        service, "/v1/accounts", {"account_id": "auth-new", "owner_id": "o", "currency": "USD"}, reader
    )
    assert status == 403
    status, _ = await post(
        service,
        "/v1/accounts/auth-c/fundings",
        {"amount": 5, "currency": "USD"},
        limited,
        "auth-refused-funding",
    )
    assert status == 403

    # The limited key pays from its account, and reads what involves it only.
    status, answer = await post(
        service, "/v1/payments", payment("auth-a", "auth-b"), limited, "auth-limited-ok"
    )
    assert status == 202, answer
    await outcome(service.driver, payment_id_for("auth-limited-ok"))
    assert (await get(service, f"/v1/payments/{payment_id_for('auth-limited-ok')}", limited))[0] == 200
    await service.driver.pay("auth-c-pays-b", "auth-c", "auth-b", 10)
    await outcome(service.driver, payment_id_for("auth-c-pays-b"))
    status, answer = await get(service, f"/v1/payments/{payment_id_for('auth-c-pays-b')}", limited)
    assert status == 403, answer

    await quiet()
    refused = {case[1] for case in cases} | {"auth-refused-funding"}
    sent = await raw_messages(
        service.bootstrap,
        PAYMENT_COMMANDS,
        lambda m: m.key.decode() in refused,
        at_least=1,
        timeout_seconds=2,
    )
    assert sent == []
    opened = await raw_messages(
        service.bootstrap,
        ACCOUNT_COMMANDS,
        lambda m: m.key in (b"auth-new",) or b"auth-refused-funding" in m.value,
        at_least=1,
        timeout_seconds=2,
    )
    assert opened == []


async def test_a_missing_key_is_told_how_to_authenticate(service: Service) -> None:
    url = f"{service.workers[0].url}/v1/accounts/anyone"
    for authorization in (
        None,
        "Bearer",
        "Bearer not-a-key",
        "Basic dXNlcjpwYXNz",
        "Bearer pk_000000000000." + "a" * 43,
    ):
        headers = {} if authorization is None else {"Authorization": authorization}
        status, answer = await http("GET", url, headers=headers, key="")
        assert status == 401 and answer["status"] == 401, (authorization, answer)


async def test_what_workers_ask_each_other_is_closed_to_others(service: Service) -> None:
    base = service.workers[0].url
    key = service.api_key
    for path in ("/internal/idempotency-keys/some-key", "/internal/payments/some-payment"):
        status, answer = await http("GET", f"{base}{path}", key=key)
        assert status == 401, (path, answer)
    # Faust's own pages (tables, the router) are not part of the API.
    for path in ("/router/", "/table/owners/", "/", "/stats/"):
        status, answer = await http("GET", f"{base}{path}", key=key)
        assert status == 404 and answer["type"] == "urn:payments:problem:not-found", (path, answer)
    # The open pages stay open.
    for path in ("/healthz", "/metrics", "/openapi.json"):
        assert (await http("GET", f"{base}{path}", key=""))[0] == 200, path


async def test_every_error_is_a_problem(service: Service) -> None:
    base = service.workers[0].url
    key = service.api_key
    answers = [
        await http("GET", f"{base}/v1/nothing-here", key=key),
        await http("DELETE", f"{base}/v1/payments", key=key),
        await http(
            "POST", f"{base}/v1/payments", b"{not json", {"Idempotency-Key": "auth-bad-json"}, key=key
        ),
        await http("GET", f"{base}/v1/accounts/auth-unknown", key=key),
        await http("GET", f"{base}/v1/accounts/auth-unknown/statement", key=key),
    ]
    assert [status for status, _ in answers] == [404, 405, 422, 404, 404], answers
    for status, answer in answers:
        assert set(answer) >= {"type", "title", "status", "detail"} and answer["status"] == status, answer
    assert answers[2][1]["errors"][0]["field"] == "body"


async def test_a_key_limited_to_accounts_made_by_the_harness_is_refused_elsewhere(service: Service) -> None:
    key = await new_key(service.database_url, "auth-harness-limited", ["accounts:read"], ["auth-a"])
    await usable(service, key)
    assert (await get(service, "/v1/accounts/auth-a", key))[0] == 200
    assert (await get(service, "/v1/accounts/auth-b", key))[0] == 403
    assert (await get(service, "/v1/accounts/auth-b/statement", key))[0] == 403


async def test_accepted_writes_are_audited_with_the_key_name_never_the_key(service: Service) -> None:
    await open_accounts(service, "audit-a", "audit-b")
    await fund(service, "audit-fund", "audit-a", 1_000)
    key = cli_key(service, "--name", "audit-writer", "--scope", "payments:write", "--scope", "accounts:write")
    await usable(service, key)
    status, _ = await post(service, "/v1/payments", payment("audit-a", "audit-b", 5), key, "audit-pay-1")
    assert status == 202
    status, _ = await post(service, "/v1/accounts/audit-b/fundings", {"amount": 7, "currency": "USD"}, key,
                           "audit-fund-2")
    assert status in (201, 202)
    refused = await post(service, "/v1/payments", {"amount": 0}, key, "audit-pay-bad")
    assert refused[0] == 422

    def audit_lines() -> list[str]:
        return [line for line in service.workers[0].log.read_text().splitlines() if "payments.audit" in line]

    await poll(lambda: audit_lines(), lambda lines: len([x for x in lines if "audit-writer" in x]) >= 2,
               what="the audit lines")
    mine = [line for line in audit_lines() if "audit-writer" in line]
    assert any("createPayment" in line and payment_id_for("audit-pay-1") in line for line in mine), mine
    assert any("fundAccount" in line and "audit-fund-2" in line for line in mine), mine
    assert not any("audit-pay-bad" in line for line in mine)  # refused: not a write
    whole_log = service.workers[0].log.read_text()
    assert key not in whole_log and key.partition(".")[2] not in whole_log

