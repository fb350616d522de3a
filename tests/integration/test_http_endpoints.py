"""The endpoints a merchant integrating over HTTP uses beyond paying (accounts opened and
funded, refunds, the payment's full view, an account's payments and statement), the
README's quickstart, and the whole API against its OpenAPI document (schemathesis); one
service for all three."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import answered, fund, open_accounts, outcome, poll, sql
from tests.integration.test_http_api import body, post_payment, status_is


async def api(
    service: Service, method: str, path: str, body: Any = None, key: str | None = None
) -> tuple[int, Any]:
    """The first worker's answer, asked again while it is a 503 (just after it starts, its
    partitions are still being assigned)."""
    headers = {"Idempotency-Key": key} if key else {}
    return await answered(method, f"{service.workers[0].url}{path}", body, headers)


async def test_the_whole_flow_over_http(service: Service) -> None:
    """Open and fund two accounts, pay, refund part, and read it all back, over HTTP only."""
    for account in ("flow-a", "flow-b"):
        status, view = await api(
            service,
            "POST",
            "/v1/accounts",
            {"account_id": account, "owner_id": "flow-owner", "currency": "USD"},
        )
        assert status == 201 and view == {
            "account_id": account,
            "currency": "USD",
            "posted": 0,
            "pending": 0,
            "available": 0,
        }, view
    again = await api(
        service, "POST", "/v1/accounts", {"account_id": "flow-a", "owner_id": "flow-owner", "currency": "USD"}
    )
    other = await api(
        service,
        "POST",
        "/v1/accounts",
        {"account_id": "flow-a", "owner_id": "someone-else", "currency": "USD"},
    )
    assert (again[0], other[0]) == (200, 409), (again, other)

    status, funding = await api(
        service, "POST", "/v1/accounts/flow-a/fundings", {"amount": 10_000, "currency": "USD"}, "flow-fund-1"
    )
    assert status == 201 and funding["status"] == "funded", funding
    repeat = await api(
        service, "POST", "/v1/accounts/flow-a/fundings", {"amount": 10_000, "currency": "USD"}, "flow-fund-1"
    )
    conflict = await api(
        service, "POST", "/v1/accounts/flow-a/fundings", {"amount": 9, "currency": "USD"}, "flow-fund-1"
    )
    wrong_currency = await api(
        service, "POST", "/v1/accounts/flow-a/fundings", {"amount": 9, "currency": "EUR"}, "flow-fund-2"
    )
    unknown = await api(
        service, "POST", "/v1/accounts/flow-nobody/fundings", {"amount": 9, "currency": "USD"}, "flow-fund-3"
    )
    assert [repeat[0], conflict[0], wrong_currency[0], unknown[0]] == [200, 409, 422, 404]
    assert wrong_currency[1]["errors"][0]["field"] == "currency"
    assert await postings_of_funding(service, "flow-a") == [10_000]

    before = datetime.now(UTC)
    status, paid = await post_payment(
        service, "flow-pay-1", body("flow-a", "flow-b", 3_000, description="rent", metadata={"order": "42"})
    )
    assert status == 202, paid
    await outcome(service.driver, paid["payment_id"])
    status, refund = await api(
        service, "POST", f"/v1/payments/{paid['payment_id']}/refunds", {"amount": 1_000}, "flow-refund-1"
    )
    assert status == 202 and refund["amount"] == 1_000, refund
    await poll(
        lambda: api(
            service, "POST", f"/v1/payments/{paid['payment_id']}/refunds", {"amount": 1_000}, "flow-refund-1"
        ),
        lambda answer: answer[0] == 200 and answer[1]["status"] == "refunded",
        what="the refund",
    )
    too_much = await api(
        service, "POST", f"/v1/payments/{paid['payment_id']}/refunds", {"amount": 5_000}, "flow-refund-2"
    )
    assert too_much[0] in (200, 202) and too_much[1]["status"] in ("pending", "failed"), too_much
    missing = await api(
        service, "POST", f"/v1/payments/{payment_id_for('flow-none')}/refunds", {}, "flow-refund-3"
    )
    assert missing[0] == 404

    view = await status_is(service, paid["payment_id"], "partially_refunded")
    assert (view["debtor_account_id"], view["creditor_account_id"]) == ("flow-a", "flow-b")
    assert view["description"] == "rent" and view["metadata"]["order"] == "42"
    assert view["refunded"] == 1_000
    assert {(r["idempotency_key"], r["status"]) for r in view["refunds"]} >= {("flow-refund-1", "refunded")}

    status, page = await api(service, "GET", "/v1/accounts/flow-b/statement")
    assert status == 200 and [e["amount"] for e in page["entries"]] == [3_000, -1_000]
    assert [e["balance_after"] for e in page["entries"]] == [3_000, 2_000]
    status, page = await api(
        service, "GET", f"/v1/accounts/flow-a/statement?since={quote(before.isoformat())}"
    )
    assert status == 200 and [e["amount"] for e in page["entries"]] == [-3_000, 1_000], page
    status, page = await api(
        service, "GET", f"/v1/accounts/flow-a/statement?until={quote(before.isoformat())}"
    )
    assert [e["amount"] for e in page["entries"]] == [10_000], page
    assert (await api(service, "GET", "/v1/accounts/flow-a/statement?since=yesterday"))[0] == 422
    assert (await api(service, "GET", "/v1/accounts/flow-nobody/statement"))[0] == 404


async def postings_of_funding(service: Service, account_id: str) -> list[int]:
    rows = await sql(
        service,
        "SELECT amount FROM postings WHERE account_id = $1 AND payment_id IS NULL ORDER BY posting_id",
        account_id,
    )
    return [row["amount"] for row in rows]


async def test_the_payments_of_an_account_filtered_and_paged(service: Service) -> None:
    await open_accounts(service, "list-a", "list-b", "list-c")
    await fund(service, "list-fund-a", "list-a", 100_000)
    await fund(service, "list-fund-b", "list-b", 100_000)
    keys = []
    for n in range(7):
        key = f"list-pay-{n}"
        keys.append(key)
        debtor, creditor = ("list-a", "list-b") if n % 2 else ("list-b", "list-a")
        extra = {"metadata": {"psp_simulation": "decline"}} if n == 3 else {}
        await service.driver.pay(key, debtor, creditor, 100 + n, **extra)
    await service.driver.pay("list-other", "list-b", "list-c", 5)
    for key in [*keys, "list-other"]:
        await outcome(service.driver, payment_id_for(key))

    async def listed(query: str = "") -> list[dict[str, Any]]:
        status, page = await api(service, "GET", f"/v1/accounts/list-a/payments{query}")
        assert status == 200, page
        return page["items"]  # type: ignore[no-any-return]

    wanted = {payment_id_for(k) for k in keys}
    await poll(
        lambda: listed(),
        lambda items: (
            {i["payment_id"] for i in items} == wanted and all(i["status"] != "pending" for i in items)
        ),
        what="the read model",
    )
    everything = await listed()
    assert [i["created_at"] for i in everything] == sorted(
        (i["created_at"] for i in everything), reverse=True
    )
    failed = await listed("?status=failed")
    assert [i["payment_id"] for i in failed] == [payment_id_for("list-pay-3")]
    assert failed[0]["reason"] == "psp_declined"
    both = await listed("?status=failed&status=captured")
    assert len(both) == 7

    pages, cursor = [], None
    while True:
        query = "?limit=3" + (f"&cursor={quote(cursor)}" if cursor else "")
        status, page = await api(service, "GET", f"/v1/accounts/list-a/payments{query}")
        assert status == 200 and len(page["items"]) <= 3
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i["payment_id"] for p in pages for i in p] == [i["payment_id"] for i in everything]

    middle = everything[3]["created_at"]
    newer = await listed(f"?since={quote(middle)}")
    older = await listed(f"?until={quote(middle)}")
    assert len(newer) + len(older) == 7 and newer == everything[: len(newer)]
    assert (await api(service, "GET", "/v1/accounts/list-a/payments?status=lost"))[0] == 422
    assert (await api(service, "GET", "/v1/accounts/list-a/payments?cursor=nonsense"))[0] == 422
    assert (await api(service, "GET", "/v1/accounts/list-nobody/payments"))[0] == 404


# --- the README's quickstart, pasted into bash as a newcomer would ------------------------

ROOT = Path(__file__).resolve().parents[2]


def quickstart() -> str:
    found = re.search(r"```bash quickstart\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    assert found, "README.md has no ```bash quickstart block"
    return found.group(1)


def test_the_readme_quickstart_runs_as_written(service: Service) -> None:
    env = {**os.environ, "API": service.workers[0].url, "PAYMENTS_DATABASE_URL": service.database_url,
           "PAYMENTS_KAFKA_BOOTSTRAP": service.bootstrap}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", quickstart()], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    # The output is the answers, one JSON value after another: read them all.
    decoder, text, values = json.JSONDecoder(), result.stdout, []
    position = 0
    while position < len(text.rstrip()):
        while text[position].isspace():
            position += 1
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    opened = [v for v in values if isinstance(v, dict) and v.get("currency") == "EUR" and "posted" in v]
    assert {v["account_id"] for v in opened} == {"alice", "bob"}
    funded = next(v for v in values if isinstance(v, dict) and v.get("idempotency_key") == "fund-alice-1")
    assert funded["status"] == "funded"
    view = next(v for v in values if isinstance(v, dict) and "refunds" in v)
    assert view["status"] == "partially_refunded" and view["refunded"] == 500
    assert view["refunds"][0]["status"] == "refunded" and view["debtor_account_id"] == "alice"
    statement = [v for v in values if isinstance(v, dict) and set(v) == {"amount", "balance_after"}]
    assert [(e["amount"], e["balance_after"]) for e in statement][:3] == [(10_000, 10_000), (-2_500, 7_500),
                                                                          (500, 8_000)]
    listed = [v for v in values if isinstance(v, dict) and set(v) == {"payment_id", "status", "refunded"}]
    assert listed and listed[0]["refunded"] == 500, listed


# --- schemathesis over the OpenAPI document: generated requests with a valid key find no
# server error and no answer the document does not describe --------------------------------

# Enough generated cases per operation to reach every branch of the views without
# making the suite slow (the whole run takes well under a minute here).
EXAMPLES_PER_OPERATION = 25


async def test_schemathesis_finds_nothing_the_document_does_not_say(service: Service, tmp_path: Path) -> None:
    await open_accounts(service, "st-a", "st-b")
    await fund(service, "st-fund-a", "st-a", 1_000_000)
    base = service.workers[0].url
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{base}/openapi.json",
            "--header",
            f"Authorization: Bearer {service.api_key}",
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth,positive_data_acceptance",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            str(EXAMPLES_PER_OPERATION),
            "--seed",
            "7",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-20000:] + result.stderr[-5000:]
