"""Inbound commands: what is accepted, what is refused, and the payload fingerprint."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from models.commands import FundAccount, OpenAccount, RefundPayment, RequestPayment
from models.types import MAX_AMOUNT


def payment_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "idempotency_key": "key-1", "debtor_account_id": "alice", "creditor_account_id": "bob",
        "amount": 100, "currency": "USD",
    }
    return {**body, **changes}


def refused_fields(body: dict[str, Any], model: type = RequestPayment) -> set[str]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    return {".".join(str(part) for part in error["loc"]) for error in caught.value.errors()}


@pytest.mark.parametrize("amount", [0, -1, 2**63, MAX_AMOUNT + 10**6])
def test_amount_out_of_range_is_refused(amount: int) -> None:
    assert refused_fields(payment_body(amount=amount)) == {"amount"}


@pytest.mark.parametrize("amount", [1.0, 100.5, True, False, "100", "1", None, [1]])
def test_amount_is_never_coerced(amount: object) -> None:
    assert refused_fields(payment_body(amount=amount)) == {"amount"}


@pytest.mark.parametrize("amount", [1, MAX_AMOUNT])
def test_amount_bounds_are_accepted(amount: int) -> None:
    assert RequestPayment.model_validate(payment_body(amount=amount)).amount == amount


def test_amount_refusals_hold_when_read_from_json() -> None:
    for raw in (b"1.0", b"true", b'"5"'):
        body = orjson.loads(b'{"amount": ' + raw + b"}")
        assert refused_fields(payment_body(**body)) == {"amount"}


@pytest.mark.parametrize("currency", ["XYZ", "usd", "US", "USDD", "", 840])
def test_unknown_currency_is_refused(currency: object) -> None:
    assert refused_fields(payment_body(currency=currency)) == {"currency"}


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "GBP"])
def test_iso_currency_is_accepted(currency: str) -> None:
    assert RequestPayment.model_validate(payment_body(currency=currency)).currency == currency


@pytest.mark.parametrize(
    "identifier", ["", "a" * 129, "has space", "tab\there", "slash/no", "trailing\n", "ünïcode", "a#b"]
)
def test_malformed_identifier_is_refused(identifier: str) -> None:
    assert refused_fields(payment_body(idempotency_key=identifier)) == {"idempotency_key"}


@pytest.mark.parametrize("identifier", ["a", "a" * 128, "A-z_0.9:@x", "user@example.com", "acct:42"])
def test_well_formed_identifier_is_accepted(identifier: str) -> None:
    command = RequestPayment.model_validate(payment_body(debtor_account_id=identifier))
    assert command.debtor_account_id == identifier


def test_identifier_must_be_a_string() -> None:
    assert refused_fields(payment_body(creditor_account_id=42)) == {"creditor_account_id"}


def test_missing_required_fields_are_each_named() -> None:
    assert refused_fields({}) == {
        "idempotency_key", "debtor_account_id", "creditor_account_id", "amount", "currency"
    }


def test_open_account_defaults() -> None:
    command = OpenAccount(account_id="alice", owner_id="owner-1", currency="EUR")
    assert (command.overdraft_limit, command.kyc_status) == (0, "verified")


@pytest.mark.parametrize("account_id", ["settlement:USD", "settlement:", "settlement:anything"])
def test_open_account_refuses_the_settlement_prefix(account_id: str) -> None:
    body = {"account_id": account_id, "owner_id": "o", "currency": "USD"}
    assert refused_fields(body, OpenAccount) == {"account_id"}


@pytest.mark.parametrize("limit", [-1, 1.5, "10", True])
def test_open_account_refuses_bad_overdraft_limit(limit: object) -> None:
    body = {"account_id": "a", "owner_id": "o", "currency": "USD", "overdraft_limit": limit}
    assert refused_fields(body, OpenAccount) == {"overdraft_limit"}


def test_open_account_accepts_zero_overdraft_limit_explicitly() -> None:
    assert OpenAccount(account_id="a", owner_id="o", currency="USD", overdraft_limit=0).overdraft_limit == 0


def test_open_account_refuses_unknown_kyc_status() -> None:
    body = {"account_id": "a", "owner_id": "o", "currency": "USD", "kyc_status": "maybe"}
    assert refused_fields(body, OpenAccount) == {"kyc_status"}


def test_fund_account_refuses_zero_amount() -> None:
    body = {"idempotency_key": "k", "account_id": "a", "amount": 0, "currency": "USD"}
    assert refused_fields(body, FundAccount) == {"amount"}


def test_refund_amount_defaults_to_none_and_refuses_zero() -> None:
    assert RefundPayment(idempotency_key="r", payment_id="p").amount is None
    assert refused_fields({"idempotency_key": "r", "payment_id": "p", "amount": 0}, RefundPayment) == {
        "amount"
    }


def test_metadata_must_be_string_values_under_identifier_keys() -> None:
    assert RequestPayment.model_validate(payment_body(metadata={"psp_simulation": "decline"})).metadata == {
        "psp_simulation": "decline"
    }
    assert refused_fields(payment_body(metadata={"k": 1})) == {"metadata.k"}
    assert "metadata.bad key.[key]" in refused_fields(payment_body(metadata={"bad key": "v"}))


def test_metadata_is_limited_to_64_entries() -> None:
    metadata = {f"k{i}": "v" for i in range(65)}
    assert refused_fields(payment_body(metadata=metadata)) == {"metadata"}


def test_description_is_limited_to_1024_characters() -> None:
    assert refused_fields(payment_body(description="x" * 1025)) == {"description"}


def test_unknown_fields_are_ignored() -> None:
    command = RequestPayment.model_validate(payment_body(added_later="x"))
    assert not hasattr(command, "added_later")


def test_commands_are_frozen() -> None:
    command = RequestPayment.model_validate(payment_body())
    with pytest.raises(ValidationError):
        command.amount = 5  # type: ignore[misc]


def test_fingerprint_is_equal_for_equal_payloads() -> None:
    first = RequestPayment.model_validate(payment_body(metadata={"a": "1", "b": "2"}))
    second = RequestPayment.model_validate(payment_body(metadata={"a": "1", "b": "2"}))
    assert first.fingerprint() == second.fingerprint()


@pytest.mark.parametrize(
    "change",
    [{"amount": 101}, {"currency": "EUR"}, {"creditor_account_id": "carol"},
     {"description": "rent"}, {"metadata": {"a": "1"}}],
)
def test_fingerprint_differs_for_different_payloads(change: dict[str, Any]) -> None:
    base = RequestPayment.model_validate(payment_body())
    assert RequestPayment.model_validate(payment_body(**change)).fingerprint() != base.fingerprint()


def test_fingerprint_ignores_key_order_in_the_json() -> None:
    forward = b'{"idempotency_key":"k","debtor_account_id":"a","creditor_account_id":"b",' \
              b'"amount":5,"currency":"USD","metadata":{"x":"1","y":"2"}}'
    backward = b'{"metadata":{"y":"2","x":"1"},"currency":"USD","amount":5,' \
               b'"creditor_account_id":"b","debtor_account_id":"a","idempotency_key":"k"}'
    first = RequestPayment.model_validate_json(forward)
    second = RequestPayment.model_validate_json(backward)
    assert first.fingerprint() == second.fingerprint()


def test_fingerprint_treats_an_explicit_default_like_an_omitted_one() -> None:
    implicit = OpenAccount(account_id="a", owner_id="o", currency="USD")
    explicit = OpenAccount(account_id="a", owner_id="o", currency="USD", overdraft_limit=0,
                           kyc_status="verified")
    assert implicit.fingerprint() == explicit.fingerprint()


def test_fingerprint_ignores_unknown_fields() -> None:
    plain = RequestPayment.model_validate(payment_body())
    extended = RequestPayment.model_validate(payment_body(added_later="x"))
    assert plain.fingerprint() == extended.fingerprint()


def test_fingerprint_tells_command_types_apart() -> None:
    fund = FundAccount(idempotency_key="k", account_id="a", amount=5, currency="USD")
    refund = RefundPayment(idempotency_key="k", payment_id="a", amount=5)
    assert fund.fingerprint() != refund.fingerprint()
