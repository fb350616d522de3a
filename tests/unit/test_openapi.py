"""The committed OpenAPI document is current, and says what the gate and the views do."""

from __future__ import annotations

import json
from pathlib import Path

from api import openapi, routes

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_document_is_current() -> None:
    assert openapi.check(ROOT / openapi.DOCUMENT_PATH) == [], (
        "run `payments openapi` and commit docs/openapi.json"
    )


def test_a_stale_document_is_reported_where_it_differs(tmp_path: Path) -> None:
    document = openapi.build_document()
    document["paths"]["/v1/payments"]["post"]["summary"] = "something else"
    stale = tmp_path / "openapi.json"
    stale.write_text(openapi.render(document))
    assert openapi.check(stale) == [
        "/paths//v1/payments/post/summary: committed 'something else', generated 'Request a payment'"
    ]


def test_every_v1_operation_needs_a_key_and_says_its_scope_and_errors() -> None:
    document = json.loads(openapi.render(openapi.build_document()))
    assert document["openapi"] == "3.1.0"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            route = routes.find(method, path)
            assert route is not None
            if path.startswith("/v1/"):
                assert operation["security"] == [{"apiKey": []}] and route.scope in operation["description"]
                assert {"401", "403", "429"} <= set(operation["responses"]), (method, path)
                problem = operation["responses"]["401"]["content"]["application/problem+json"]
                assert problem["schema"]["$ref"].endswith("/Problem")
            else:
                assert operation["security"] == []


def test_bodies_leave_out_what_the_request_gives_elsewhere() -> None:
    schemas = openapi.build_document()["components"]["schemas"]
    payment = schemas["PaymentBody"]
    assert "idempotency_key" not in payment["properties"] and "type" not in payment["properties"]
    assert set(payment["required"]) == {"debtor_account_id", "creditor_account_id", "amount", "currency"}
    assert (
        "USD" in payment["properties"]["currency"]["enum"]
        and "XYZ" not in payment["properties"]["currency"]["enum"]
    )
    assert set(schemas["FundingBody"]["properties"]) == {"amount", "currency"}
    assert set(schemas["RefundBody"]["properties"]) == {"amount"}
