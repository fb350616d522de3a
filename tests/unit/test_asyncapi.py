"""The committed AsyncAPI document is current and describes the contract of CONTRACT.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
import yaml

from infra import asyncapi
from models.codec import event_headers
from models.events import PUBLIC_EVENTS, PaymentCaptured

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = ROOT / asyncapi.DOCUMENT_PATH

COMMAND_TOPICS = {
    "fintech.accounts.commands": {"OpenAccount", "FundAccount"},
    "fintech.payments.commands": {"RequestPayment", "RefundPayment"},
}
EVENT_ENVELOPE = {"event_id", "event_type", "schema_version", "occurred_at"}
PAYMENT = {"payment_id", "idempotency_key", "debtor_account_id", "creditor_account_id", "amount", "currency"}
# Written from CONTRACT.md, not from the models: the fields consumers and upstream rely on.
CONTRACT_FIELDS: dict[str, set[str]] = {
    "OpenAccount": {"type", "account_id", "owner_id", "currency", "overdraft_limit", "kyc_status"},
    "FundAccount": {"type", "idempotency_key", "account_id", "amount", "currency"},
    "RequestPayment": {"type", *PAYMENT - {"payment_id"}, "description", "metadata"},
    "RefundPayment": {"type", "idempotency_key", "payment_id", "amount"},
    "AccountOpened": EVENT_ENVELOPE | {"account_id"},
    "AccountFunded": EVENT_ENVELOPE | {"account_id"},
    "PaymentInitiated": EVENT_ENVELOPE | PAYMENT,
    "PaymentAuthorized": EVENT_ENVELOPE | PAYMENT,
    "PaymentCaptured": EVENT_ENVELOPE | PAYMENT | {"psp_reference"},
    "PaymentFailed": EVENT_ENVELOPE | PAYMENT | {"psp_reference", "reason", "detail"},
    "PaymentRefunded": EVENT_ENVELOPE | {"payment_id", "amount"},
    "RefundFailed": EVENT_ENVELOPE | {"payment_id", "amount", "reason"},
    "CommandRejected": EVENT_ENVELOPE | {"command_type", "idempotency_key", "account_id", "reason", "detail"},
}
CONTRACT_KEYS = {
    "OpenAccount": "account_id", "FundAccount": "account_id",
    "RequestPayment": "idempotency_key", "RefundPayment": "idempotency_key",
    "AccountOpened": "account_id", "AccountFunded": "account_id", "PaymentInitiated": "payment_id",
    "PaymentAuthorized": "payment_id", "PaymentCaptured": "payment_id", "PaymentFailed": "payment_id",
    "PaymentRefunded": "payment_id", "RefundFailed": "payment_id", "CommandRejected": "idempotency_key",
}
CLOUDEVENTS = {"ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type", "correlation_id"}
DEAD_LETTER = {"error", "error_code", "source_topic", "source_partition", "source_offset"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi.build_document()


def follow(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return follow(document, node["$ref"]) if "$ref" in node else node


def message(document: dict[str, Any], name: str) -> dict[str, Any]:
    return document["components"]["messages"][name]


def payload(document: dict[str, Any], name: str) -> dict[str, Any]:
    schema = message(document, name)["payload"]
    return follow(document, schema["$ref"]) if "$ref" in schema else schema


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in refs(value)]
    if isinstance(node, list):
        return [ref for item in node for ref in refs(item)]
    return []


def test_the_committed_document_is_current() -> None:
    problems = asyncapi.check(DOCUMENT)
    assert not problems, (
        f"{asyncapi.DOCUMENT_PATH} is out of date with the models: run `payments asyncapi` and commit it.\n"
        + "\n".join(problems[:40])
    )


def test_the_build_is_deterministic() -> None:
    assert asyncapi.render_yaml(asyncapi.build_document()) == asyncapi.render_yaml(asyncapi.build_document())


def test_the_document_has_the_asyncapi_3_shape(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"] == "payments-service" and document["info"]["version"] == "1"
    assert document["servers"]["kafka"]["protocol"] == "kafka"
    assert {"channels", "operations", "components"} <= document.keys()
    for ref in refs(document):
        follow(document, ref)  # every reference resolves (a KeyError names the broken one)
    for name, operation in document["operations"].items():
        channel = operation["channel"]["$ref"]
        assert all(m["$ref"].startswith(channel + "/messages/") for m in operation["messages"]), name


def test_every_topic_is_a_channel(document: dict[str, Any]) -> None:
    addresses = {channel["address"] for channel in document["channels"].values()}
    events = {event.topic for event in PUBLIC_EVENTS}
    assert addresses == set(COMMAND_TOPICS) | events | {"fintech.deadletter"}


def test_command_topics_carry_their_commands_and_the_service_receives_them(document: dict[str, Any]) -> None:
    for topic, names in COMMAND_TOPICS.items():
        assert set(document["channels"][topic]["messages"]) == names
        assert document["operations"][f"receive.{topic}"]["action"] == "receive"


def test_the_service_sends_every_event_and_dead_letter(document: dict[str, Any]) -> None:
    for topic in [event.topic for event in PUBLIC_EVENTS] + ["fintech.deadletter"]:
        assert document["operations"][f"send.{topic}"]["action"] == "send"


@pytest.mark.parametrize("name", sorted(CONTRACT_FIELDS))
def test_every_payload_has_the_contract_fields(document: dict[str, Any], name: str) -> None:
    assert CONTRACT_FIELDS[name] <= set(payload(document, name)["properties"])


@pytest.mark.parametrize("name", sorted(set().union(*COMMAND_TOPICS.values())))
def test_commands_require_their_type(document: dict[str, Any], name: str) -> None:
    # The codec routes on `type`: a command without it is dead-lettered, whatever the model's default.
    assert "type" in payload(document, name)["required"]


@pytest.mark.parametrize("name", sorted(CONTRACT_KEYS))
def test_every_message_names_its_kafka_key(document: dict[str, Any], name: str) -> None:
    key = message(document, name)["bindings"]["kafka"]["key"]
    assert CONTRACT_KEYS[name] in key["description"]


@pytest.mark.parametrize("event", PUBLIC_EVENTS, ids=lambda event: event.__name__)
def test_documented_keys_are_the_keys_the_models_use(event: type) -> None:
    # Each field holds its own name, so `.key` says which field it reads (the first one set).
    named = event.model_construct(**{field: field for field in event.model_fields})
    fields = asyncapi.EVENT_KEYS[event.__name__]
    assert named.key == fields[0]
    for field in fields[1:]:  # the fallbacks, in order
        named = named.model_copy(update={previous: None for previous in fields[: fields.index(field)]})
        assert named.key == field


def test_events_carry_the_cloudevents_headers_the_codec_writes(document: dict[str, Any]) -> None:
    headers = follow(document, "#/components/schemas/CloudEventsHeaders")
    assert set(headers["properties"]) == set(headers["required"]) == CLOUDEVENTS
    event = PaymentCaptured(
        event_id=uuid4(), payment_id="p-1", idempotency_key="k-1", debtor_account_id="a",
        creditor_account_id="b", amount=100, currency="EUR", psp_reference="psp-1", transaction_id=uuid4(),
    )
    written = dict(event_headers(event))
    assert set(written) == CLOUDEVENTS
    assert re.fullmatch(headers["properties"]["ce_type"]["pattern"], written["ce_type"].decode())
    for name in (event.__name__ for event in PUBLIC_EVENTS):
        assert message(document, name)["headers"] == {"$ref": "#/components/schemas/CloudEventsHeaders"}


def test_dead_letters_are_the_original_bytes_with_error_headers(document: dict[str, Any]) -> None:
    dead_letter = message(document, "DeadLetter")
    assert dead_letter["payload"]["format"] == "binary"
    headers = follow(document, dead_letter["headers"]["$ref"])
    assert set(headers["properties"]) == set(headers["required"]) == DEAD_LETTER


def test_write_then_check_is_clean_and_check_reports_drift(tmp_path: Path) -> None:
    path = tmp_path / "asyncapi.yaml"
    assert asyncapi.check(path) == [f"{path} does not exist"]
    asyncapi.write(path)
    assert asyncapi.check(path) == []
    stale = yaml.safe_load(path.read_text())
    del stale["components"]["schemas"]["PaymentCaptured"]["properties"]["psp_reference"]
    stale["channels"]["fintech.events.NotAnEvent"] = {"address": "fintech.events.NotAnEvent"}
    path.write_text(asyncapi.render_yaml(stale))
    assert asyncapi.check(path) == [
        "/channels/fintech.events.NotAnEvent: in the committed document, no longer generated",
        "/components/schemas/PaymentCaptured/properties/psp_reference: generated, missing from the "
        "committed document",
    ]
