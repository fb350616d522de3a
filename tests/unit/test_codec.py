"""The codec: reading upstream bytes into commands, answers or dead letters; event headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import orjson
import pytest

from models.codec import Invalid, Unreadable, dumps, event_headers, read_command, stored_event
from models.commands import ACCOUNT_COMMANDS, PAYMENT_COMMANDS, OpenAccount, RequestPayment
from models.events import (
    AccountOpened,
    CommandRejected,
    FailureReason,
    PaymentCaptured,
    PaymentFailed,
    RejectionReason,
    event_id_for,
)

RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def payment_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "RequestPayment", "idempotency_key": "key-1", "debtor_account_id": "alice",
        "creditor_account_id": "bob", "amount": 100, "currency": "USD",
    }
    return {**body, **changes}


def read_payment(raw: bytes | None) -> object:
    return read_command(raw, PAYMENT_COMMANDS, "idempotency_key")


def read_json(body: object) -> object:
    return read_payment(orjson.dumps(body))


def captured() -> PaymentCaptured:
    return PaymentCaptured(
        event_id=event_id_for("pay-1", "PaymentCaptured"), payment_id="pay-1", idempotency_key="key-1",
        debtor_account_id="alice", creditor_account_id="bob", amount=100, currency="USD",
        psp_reference="psp-1", transaction_id=uuid4(),
    )


def headers(event: Any) -> dict[str, bytes]:
    pairs = event_headers(event)
    assert len({name for name, _ in pairs}) == len(pairs), "a header name appears twice"
    return dict(pairs)


# --- read_command: unreadable -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "empty message value"),
        (b"not json", "not UTF-8 JSON"),
        (b'{"type": "RequestPayment"', "not UTF-8 JSON"),
        (b"\xff\xfe\xfa", "not UTF-8 JSON"),
        (b'{"type": "Request\xffPayment"}', "not UTF-8 JSON"),
        (b"[1, 2]", "is a list, not an object"),
        (b'"RequestPayment"', "is a str, not an object"),
        (b"42", "is a int, not an object"),
        (b'{"idempotency_key": "k"}', "no 'type' field"),
        (b'{"type": 7, "idempotency_key": "k"}', "no 'type' field"),
        (b'{"type": "Transfer", "idempotency_key": "k"}', "unknown type 'Transfer'"),
    ],
)
def test_unreadable_bytes_name_their_reason(raw: bytes | None, reason: str) -> None:
    result = read_payment(raw)
    assert isinstance(result, Unreadable)
    assert reason in result.reason


def test_unknown_type_lists_the_expected_types() -> None:
    result = read_json({"type": "OpenAccount", "account_id": "a"})
    assert isinstance(result, Unreadable)
    assert "RefundPayment" in result.reason and "RequestPayment" in result.reason


def test_unknown_type_reason_is_bounded() -> None:
    result = read_json({"type": "X" * 10_000, "idempotency_key": "k"})
    assert isinstance(result, Unreadable)
    assert len(result.reason) < 200


def test_missing_idempotency_key_has_no_one_to_answer() -> None:
    body = payment_body(amount=0)
    del body["idempotency_key"]
    result = read_json(body)
    assert isinstance(result, Unreadable)
    assert "without a usable 'idempotency_key' to answer to" in result.reason
    assert "amount" in result.reason


@pytest.mark.parametrize("key", ["", 42, None, ["k"]])
def test_unusable_idempotency_key_has_no_one_to_answer(key: object) -> None:
    assert isinstance(read_json(payment_body(idempotency_key=key)), Unreadable)


def test_account_command_without_account_id_has_no_one_to_answer() -> None:
    result = read_command(orjson.dumps({"type": "OpenAccount", "owner_id": "o", "currency": "USD"}),
                          ACCOUNT_COMMANDS, "account_id")
    assert isinstance(result, Unreadable)
    assert "account_id" in result.reason


# --- read_command: invalid -------------------------------------------------------------------


def test_invalid_field_is_named_in_the_answer() -> None:
    result = read_json(payment_body(amount=0))
    assert isinstance(result, Invalid)
    assert [error.field for error in result.errors] == ["amount"]
    assert (result.command_type, result.idempotency_key, result.account_id) == (
        "RequestPayment", "key-1", None)
    assert result.detail.startswith("amount: ")


def test_every_invalid_field_is_reported() -> None:
    result = read_json(payment_body(amount=1.5, currency="usd", creditor_account_id="has space"))
    assert isinstance(result, Invalid)
    assert {error.field for error in result.errors} == {"amount", "currency", "creditor_account_id"}
    assert result.detail.count(";") == 2


def test_missing_field_is_reported_as_invalid() -> None:
    body = payment_body()
    del body["amount"]
    result = read_json(body)
    assert isinstance(result, Invalid)
    assert [(error.field, error.message) for error in result.errors] == [("amount", "Field required")]


def test_invalid_idempotency_key_text_is_still_answered() -> None:
    result = read_json(payment_body(idempotency_key="has space"))
    assert isinstance(result, Invalid)
    assert result.idempotency_key == "has space"
    assert [error.field for error in result.errors] == ["idempotency_key"]


def test_amount_beyond_64_bits_is_invalid_not_unreadable() -> None:
    raw = orjson.dumps(payment_body()).replace(b'"amount":100', b'"amount":18446744073709551616')
    result = read_payment(raw)
    assert isinstance(result, Invalid)
    assert [error.field for error in result.errors] == ["amount"]


def test_invalid_account_command_is_answered_by_account_id() -> None:
    body = {"type": "OpenAccount", "account_id": "settlement:USD", "owner_id": "o", "currency": "USD"}
    result = read_command(orjson.dumps(body), ACCOUNT_COMMANDS, "account_id")
    assert isinstance(result, Invalid)
    assert (result.account_id, result.idempotency_key) == ("settlement:USD", None)
    assert [error.field for error in result.errors] == ["account_id"]


def test_fund_account_invalid_carries_both_answer_keys() -> None:
    body = {"type": "FundAccount", "idempotency_key": "f-1", "account_id": "a", "amount": -5,
            "currency": "USD"}
    result = read_command(orjson.dumps(body), ACCOUNT_COMMANDS, "account_id")
    assert isinstance(result, Invalid)
    assert (result.idempotency_key, result.account_id) == ("f-1", "a")


# --- read_command: valid ---------------------------------------------------------------------


def test_valid_command_round_trips() -> None:
    command = RequestPayment.model_validate(payment_body(metadata={"psp_simulation": "approve"}))
    result = read_payment(dumps(command))
    assert result == command
    assert isinstance(result, RequestPayment)
    assert result.fingerprint() == command.fingerprint()


def test_valid_account_command_is_read() -> None:
    raw = orjson.dumps({"type": "OpenAccount", "account_id": "a", "owner_id": "o", "currency": "EUR"})
    assert read_command(raw, ACCOUNT_COMMANDS, "account_id") == OpenAccount(
        account_id="a", owner_id="o", currency="EUR")


def test_read_command_never_raises_on_odd_input() -> None:
    for raw in (b"", b"null", b"{}", b'{"type": null}', b'{"type": {}}', b"\x00", b"1e999"):
        assert isinstance(read_payment(raw), Unreadable | Invalid)


# --- events: encoding and headers -----------------------------------------------------------


def test_event_round_trips_through_dumps_and_stored_event() -> None:
    event = captured()
    assert stored_event(dumps(event)) == event


def test_event_value_carries_the_contract_fields() -> None:
    value = orjson.loads(dumps(captured()))
    assert value["event_type"] == "PaymentCaptured"
    assert value["schema_version"] == 1
    assert RFC3339_UTC.match(value["occurred_at"])
    assert value["amount"] == 100 and isinstance(value["amount"], int)


def test_headers_are_cloudevents_binary_mode() -> None:
    event = captured()
    found = headers(event)
    assert found["ce_specversion"] == b"1.0"
    assert found["ce_id"] == str(event.event_id).encode()
    assert found["ce_source"]
    assert b"PaymentCaptured" in found["ce_type"]
    assert found["content-type"] == b"application/json"


def test_ce_time_is_rfc3339_utc_ending_in_z() -> None:
    ce_time = headers(captured())["ce_time"].decode()
    assert RFC3339_UTC.match(ce_time), ce_time


def test_ce_time_is_the_events_occurred_at() -> None:
    at = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)
    event = captured().model_copy(update={"occurred_at": at})
    assert headers(event)["ce_time"] == b"2024-02-29T23:59:58.123456Z"


def test_ce_time_survives_a_json_round_trip() -> None:
    event = stored_event(dumps(captured()))
    assert RFC3339_UTC.match(headers(event)["ce_time"].decode())


def test_ce_time_is_utc_whatever_the_offset_of_occurred_at() -> None:
    at = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    event = captured().model_copy(update={"occurred_at": at})
    assert headers(event)["ce_time"] == b"2024-01-01T10:00:00Z"


def test_correlation_id_is_the_payment_id_for_payment_events() -> None:
    failed = PaymentFailed(
        event_id=uuid4(), payment_id="pay-9", idempotency_key="key-9", debtor_account_id="a",
        creditor_account_id="b", amount=1, currency="USD", reason=FailureReason.SAME_ACCOUNT, detail="x",
    )
    assert headers(failed)["correlation_id"] == b"pay-9"
    assert headers(captured())["correlation_id"] == b"pay-1"


def test_correlation_id_of_account_events_is_the_account_id() -> None:
    opened = AccountOpened(event_id=uuid4(), account_id="acct-1", owner_id="o", currency="USD",
                           overdraft_limit=0, kyc_status="verified")
    assert headers(opened)["correlation_id"] == b"acct-1"


def test_rejection_is_correlated_by_its_idempotency_key() -> None:
    rejected = CommandRejected(event_id=uuid4(), command_type="RequestPayment", idempotency_key="k-7",
                               reason=RejectionReason.INVALID_REQUEST, detail="amount: bad")
    assert headers(rejected)["correlation_id"] == b"k-7"
