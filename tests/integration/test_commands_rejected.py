"""Commands the service does not accept, repeats it must not act on twice, and dead letters.

Through the real broker and PostgreSQL: invalid requests come back as CommandRejected
naming the field, a reused key with another payload as idempotency_conflict, a repeat
of the same command re-publishes the original answer (same event_id), and bytes that
cannot be read at all go to the dead-letter topic untouched.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from infra.topics import ACCOUNT_COMMANDS, DEAD_LETTER, PAYMENT_COMMANDS
from models.payment import payment_id_for
from tests.conftest import Service
from tests.integration.outside import (
    account_settles,
    account_view,
    events_about,
    fund,
    header,
    ledger_balance,
    open_accounts,
    outcome,
    payment_view,
    postings_of,
    quiet,
    raw_messages,
    send_raw,
    sql,
)


def payment_body(key: str, **changes: Any) -> dict[str, Any]:
    return {"type": "RequestPayment", "idempotency_key": key, "debtor_account_id": "cr-payer",
            "creditor_account_id": "cr-payee", "amount": 100, "currency": "USD", **changes}


async def rejection_of(service: Service, **match: Any) -> dict[str, Any]:
    driver = service.driver
    await driver.wait_for(lambda: bool(events_about(driver, "CommandRejected", **match)),
                          timeout_seconds=20, what=f"CommandRejected {match}")
    [rejected] = events_about(driver, "CommandRejected", **match)
    assert rejected["schema_version"] == 1 and rejected["event_id"] and rejected["occurred_at"]
    assert isinstance(rejected["detail"], str) and rejected["detail"].strip()
    return rejected


@pytest.fixture(scope="module")
async def accounts(service: Service) -> None:
    await open_accounts(service, "cr-payer", "cr-payee")
    await fund(service, "cr-fund-payer", "cr-payer", 1_000_000)


# --- invalid_request --------------------------------------------------------------------------

# (case id, the field at fault, the body's bytes with KEY where the idempotency key goes)
_GOOD = payment_body("KEY")
INVALID_PAYMENTS: list[tuple[str, str, bytes]] = [
    ("amount-zero", "amount", orjson.dumps({**_GOOD, "amount": 0})),
    ("amount-negative", "amount", orjson.dumps({**_GOOD, "amount": -1})),
    ("amount-2-pow-63", "amount", orjson.dumps({**_GOOD, "amount": 2**63})),
    ("amount-2-pow-64", "amount", orjson.dumps({**_GOOD, "amount": 0}).replace(
        b'"amount":0', b'"amount":18446744073709551616')),
    ("amount-huge", "amount", orjson.dumps({**_GOOD, "amount": 0}).replace(
        b'"amount":0', b'"amount":100000000000000000000000000000')),
    ("amount-float", "amount", orjson.dumps({**_GOOD, "amount": 1.5})),
    ("amount-integral-float", "amount", orjson.dumps({**_GOOD, "amount": 100.0})),
    ("amount-true", "amount", orjson.dumps({**_GOOD, "amount": True})),
    ("amount-string", "amount", orjson.dumps({**_GOOD, "amount": "100"})),
    ("amount-missing", "amount", orjson.dumps({k: v for k, v in _GOOD.items() if k != "amount"})),
    ("currency-unknown", "currency", orjson.dumps({**_GOOD, "currency": "XYZ"})),
    ("currency-lowercase", "currency", orjson.dumps({**_GOOD, "currency": "usd"})),
    ("debtor-bad-identifier", "debtor_account_id", orjson.dumps({**_GOOD, "debtor_account_id": "a b!"})),
    ("creditor-too-long", "creditor_account_id", orjson.dumps({**_GOOD, "creditor_account_id": "c" * 129})),
    ("creditor-empty", "creditor_account_id", orjson.dumps({**_GOOD, "creditor_account_id": ""})),
    ("metadata-not-strings", "metadata", orjson.dumps({**_GOOD, "metadata": {"n": 1}})),
]


@pytest.mark.parametrize(("field", "raw"), [(f, r) for _, f, r in INVALID_PAYMENTS],
                         ids=[case for case, _, _ in INVALID_PAYMENTS])
async def test_request_payment_field_errors_are_rejected(service: Service, accounts: None, field: str,
                                                         raw: bytes, request: pytest.FixtureRequest) -> None:
    key = f"cr-invalid-{request.node.callspec.id}"
    await send_raw(service.driver, PAYMENT_COMMANDS, key.encode(), raw.replace(b"KEY", key.encode()))
    rejected = await rejection_of(service, idempotency_key=key)
    assert rejected["reason"] == "invalid_request", rejected
    assert rejected["command_type"] == "RequestPayment"
    assert field in rejected["detail"], rejected
    assert field in {error["field"].split(".")[0] for error in rejected["errors"]}, rejected
    [message] = [r for r in service.driver.events["fintech.events.CommandRejected"]
                 if r.body["idempotency_key"] == key]
    assert message.key == key.encode()
    assert message.headers["ce_id"].decode() == rejected["event_id"]

    # No payment exists because of it.
    payment_id = payment_id_for(key)
    await quiet(0.5)
    assert not events_about(service.driver, "PaymentInitiated", payment_id=payment_id)
    assert payment_id not in service.driver.outcomes()
    status, _ = await payment_view(service, payment_id)
    assert status == 404


async def test_invalid_idempotency_key_is_rejected_naming_it(service: Service, accounts: None) -> None:
    key = "bad key with spaces!"
    await service.driver.send(PAYMENT_COMMANDS, key, payment_body(key))
    rejected = await rejection_of(service, idempotency_key=key)
    assert rejected["reason"] == "invalid_request"
    assert "idempotency_key" in rejected["detail"]
    assert "idempotency_key" in {e["field"] for e in rejected["errors"]}


INVALID_ACCOUNT_COMMANDS: list[tuple[str, str, dict[str, Any]]] = [
    ("open-currency", "currency", {"type": "OpenAccount", "owner_id": "o", "currency": "XYZ"}),
    ("open-overdraft", "overdraft_limit",
     {"type": "OpenAccount", "owner_id": "o", "currency": "USD", "overdraft_limit": -1}),
    ("open-kyc", "kyc_status", {"type": "OpenAccount", "owner_id": "o", "currency": "USD",
                                "kyc_status": "trusted"}),
    ("fund-amount", "amount", {"type": "FundAccount", "idempotency_key": "cr-fund-bad-amount",
                               "amount": 0, "currency": "USD"}),
]


@pytest.mark.parametrize(("field", "body"), [(f, b) for _, f, b in INVALID_ACCOUNT_COMMANDS],
                         ids=[case for case, _, _ in INVALID_ACCOUNT_COMMANDS])
async def test_account_command_field_errors_are_rejected(service: Service, field: str, body: dict[str, Any],
                                                         request: pytest.FixtureRequest) -> None:
    account_id = f"cr-acct-{request.node.callspec.id}"
    await service.driver.send(ACCOUNT_COMMANDS, account_id, {**body, "account_id": account_id})
    rejected = await rejection_of(service, account_id=account_id)
    assert rejected["reason"] == "invalid_request", rejected
    assert rejected["command_type"] == body["type"]
    assert field in rejected["detail"] and field in {e["field"] for e in rejected["errors"]}, rejected
    await quiet(0.5)
    assert not events_about(service.driver, "AccountOpened", account_id=account_id)
    status, _ = await account_view(service, account_id)
    assert status == 404


async def test_settlement_account_ids_are_reserved(service: Service) -> None:
    await service.driver.open_account("settlement:CHF", "CHF")
    rejected = await rejection_of(service, account_id="settlement:CHF")
    assert rejected["reason"] == "invalid_request" and "account_id" in rejected["detail"]


# --- payments: conflicts and repeats -----------------------------------------------------------


async def test_idempotency_conflict_leaves_the_original_payment_untouched(service: Service,
                                                                          accounts: None) -> None:
    driver = service.driver
    key = "cr-conflict-1"
    payment_id = payment_id_for(key)
    await driver.pay(key, "cr-payer", "cr-payee", 1_000)
    original = await outcome(driver, payment_id)
    assert original["event_type"] == "PaymentCaptured"
    payer_before = await ledger_balance(service, "cr-payer")

    await driver.pay(key, "cr-payer", "cr-payee", 2_000)
    rejected = await rejection_of(service, idempotency_key=key)
    assert rejected["reason"] == "idempotency_conflict" and rejected["command_type"] == "RequestPayment"

    await quiet()
    assert driver.outcomes()[payment_id] == [original]
    assert await postings_of(service, payment_id) == [("cr-payer", -1_000), ("cr-payee", 1_000)]
    assert await ledger_balance(service, "cr-payer") == payer_before
    status, view = await payment_view(service, payment_id)
    assert status == 200 and view["status"] == "captured" and view["amount"] == 1_000, view


async def test_conflicting_payloads_sent_back_to_back_make_one_payment(service: Service,
                                                                       accounts: None) -> None:
    driver = service.driver
    key = "cr-conflict-burst"
    payment_id = payment_id_for(key)
    await driver.pay(key, "cr-payer", "cr-payee", 700)
    await driver.pay(key, "cr-payer", "cr-payee", 900)
    captured = await outcome(driver, payment_id)
    rejected = await rejection_of(service, idempotency_key=key)
    assert rejected["reason"] == "idempotency_conflict"
    assert captured["event_type"] == "PaymentCaptured" and captured["amount"] == 700
    await quiet()
    assert len(driver.outcomes()[payment_id]) == 1
    assert await postings_of(service, payment_id) == [("cr-payer", -700), ("cr-payee", 700)]


async def test_repeated_payment_has_no_second_effect_and_republishes_the_outcome(service: Service,
                                                                                 accounts: None) -> None:
    driver = service.driver
    key = "cr-repeat-1"
    payment_id = payment_id_for(key)
    await driver.pay(key, "cr-payer", "cr-payee", 1_500, description="twice")
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured"

    duplicates_before = driver.duplicates
    await driver.pay(key, "cr-payer", "cr-payee", 1_500, description="twice")
    messages = await raw_messages(service.bootstrap, "fintech.events.PaymentCaptured",
                                  lambda m: m.key == payment_id.encode(), at_least=2)
    assert len(messages) == 2, messages
    assert {header(m, "ce_id") for m in messages} == {captured["event_id"].encode()}
    assert {orjson.loads(m.value)["event_id"] for m in messages} == {captured["event_id"]}
    await driver.wait_for(lambda: driver.duplicates > duplicates_before, what="the re-published outcome")

    await quiet()
    assert driver.outcomes()[payment_id] == [captured]
    assert await postings_of(service, payment_id) == [("cr-payer", -1_500), ("cr-payee", 1_500)]
    assert not events_about(driver, "CommandRejected", idempotency_key=key)


async def test_repeated_failed_payment_republishes_the_same_failure(service: Service, accounts: None) -> None:
    driver = service.driver
    key = "cr-repeat-failed"
    payment_id = payment_id_for(key)
    await driver.pay(key, "cr-payer", "cr-payer", 10)
    failed = await outcome(driver, payment_id)
    assert failed["reason"] == "same_account"
    await driver.pay(key, "cr-payer", "cr-payer", 10)
    messages = await raw_messages(service.bootstrap, "fintech.events.PaymentFailed",
                                  lambda m: m.key == payment_id.encode(), at_least=2)
    assert [header(m, "ce_id") for m in messages] == [failed["event_id"].encode()] * 2
    assert driver.outcomes()[payment_id] == [failed]


async def test_repeats_while_still_pending_make_one_payment(service: Service, accounts: None) -> None:
    driver = service.driver
    key = "cr-repeat-burst"
    payment_id = payment_id_for(key)
    for _ in range(5):
        await driver.pay(key, "cr-payer", "cr-payee", 333, metadata={"psp_simulation": "latency_ms:50"})
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured"
    await quiet()
    assert driver.outcomes()[payment_id] == [captured]
    assert await postings_of(service, payment_id) == [("cr-payer", -333), ("cr-payee", 333)]
    assert not events_about(driver, "CommandRejected", idempotency_key=key)


# --- dead letters ------------------------------------------------------------------------------

_NO_KEY = {k: v for k, v in payment_body("x").items() if k != "idempotency_key"}
DEAD_LETTERS: list[tuple[str, str, bytes | None]] = [
    ("not-json", PAYMENT_COMMANDS, b"this is not JSON {"),
    ("invalid-utf8", PAYMENT_COMMANDS,
     b'{"type":"RequestPayment","idempotency_key":"cr-dl-utf8","description":"\xff\xfe"}'),
    ("json-array", PAYMENT_COMMANDS, b'[{"type":"RequestPayment"}]'),
    ("json-string", PAYMENT_COMMANDS, b'"RequestPayment"'),
    ("json-null", PAYMENT_COMMANDS, b"null"),
    ("no-type", PAYMENT_COMMANDS, orjson.dumps({k: v for k, v in payment_body("cr-dl-nt").items()
                                                if k != "type"})),
    ("type-not-a-string", PAYMENT_COMMANDS, orjson.dumps(payment_body("cr-dl-tn", type=7))),
    ("unknown-type", PAYMENT_COMMANDS, orjson.dumps(payment_body("cr-dl-ut", type="StealMoney"))),
    ("account-command-on-payments-topic", PAYMENT_COMMANDS,
     orjson.dumps({"type": "OpenAccount", "account_id": "cr-dl-x", "owner_id": "o", "currency": "USD"})),
    ("payment-without-idempotency-key", PAYMENT_COMMANDS, orjson.dumps(_NO_KEY)),
    ("payment-with-empty-idempotency-key", PAYMENT_COMMANDS,
     orjson.dumps({**_NO_KEY, "idempotency_key": ""})),
    ("empty-value", PAYMENT_COMMANDS, None),
    ("open-account-without-account-id", ACCOUNT_COMMANDS,
     orjson.dumps({"type": "OpenAccount", "owner_id": "o", "currency": "USD"})),
    ("not-json-on-accounts", ACCOUNT_COMMANDS, b"\x00\x01binary"),
]


@pytest.mark.parametrize(("topic", "raw"), [(t, r) for _, t, r in DEAD_LETTERS],
                         ids=[case for case, _, _ in DEAD_LETTERS])
async def test_unreadable_messages_are_dead_lettered_untouched(service: Service, topic: str,
                                                               raw: bytes | None,
                                                               request: pytest.FixtureRequest) -> None:
    driver = service.driver
    key = f"cr-dl-{request.node.callspec.id}".encode()
    landed = await send_raw(driver, topic, key, raw)
    await driver.wait_for(lambda: any(r.key == key for r in driver.events[DEAD_LETTER]),
                          timeout_seconds=20, what=f"the dead letter of {key!r}")
    [letter] = [r for r in driver.events[DEAD_LETTER] if r.key == key]
    assert letter.value == raw
    assert letter.headers["error"].strip()
    assert letter.headers["error_code"].strip()
    assert letter.headers["source_topic"] == topic.encode()
    assert letter.headers["source_partition"] == str(landed.partition).encode()
    assert letter.headers["source_offset"] == str(landed.offset).encode()
    await quiet(0.5)
    assert not [r for r in driver.events["fintech.events.CommandRejected"] if r.key == key]


async def test_a_message_without_a_kafka_key_is_dead_lettered_too(service: Service) -> None:
    driver = service.driver
    raw = b"keyless garbage 6b1f"
    landed = await send_raw(driver, PAYMENT_COMMANDS, None, raw)
    await driver.wait_for(lambda: any(r.value == raw for r in driver.events[DEAD_LETTER]),
                          timeout_seconds=20, what="the keyless dead letter")
    [letter] = [r for r in driver.events[DEAD_LETTER] if r.value == raw]
    assert letter.key is None
    assert letter.headers["source_offset"] == str(landed.offset).encode()


# --- accounts: repeats and conflicts -----------------------------------------------------------


async def test_open_account_twice_with_the_same_payload_answers_again(service: Service) -> None:
    driver = service.driver
    account_id = "cr-open-twice"
    await open_accounts(service, account_id, overdraft_limit=50)
    [opened] = events_about(driver, "AccountOpened", account_id=account_id)
    await driver.open_account(account_id, overdraft_limit=50)
    messages = await raw_messages(service.bootstrap, "fintech.events.AccountOpened",
                                  lambda m: m.key == account_id.encode(), at_least=2)
    assert [header(m, "ce_id") for m in messages] == [opened["event_id"].encode()] * 2
    await quiet()
    assert not events_about(driver, "CommandRejected", account_id=account_id)
    rows = await sql(service, "SELECT currency, overdraft_limit FROM accounts WHERE account_id = $1",
                     account_id)
    assert [(r["currency"], r["overdraft_limit"]) for r in rows] == [("USD", 50)]


async def test_open_account_again_with_another_payload_is_a_conflict(service: Service) -> None:
    driver = service.driver
    account_id = "cr-open-conflict"
    await open_accounts(service, account_id)
    await driver.open_account(account_id, "EUR")
    rejected = await rejection_of(service, account_id=account_id)
    assert rejected["reason"] == "idempotency_conflict" and rejected["command_type"] == "OpenAccount"
    await quiet()
    assert len(events_about(driver, "AccountOpened", account_id=account_id)) == 1
    status, view = await account_view(service, account_id)
    assert status == 200 and view["currency"] == "USD"
    rows = await sql(service, "SELECT currency FROM accounts WHERE account_id = $1", account_id)
    assert [r["currency"] for r in rows] == ["USD"]


async def test_fund_an_unknown_account_is_rejected(service: Service) -> None:
    await service.driver.fund("cr-fund-ghost-1", "cr-ghost-account", 500)
    rejected = await rejection_of(service, idempotency_key="cr-fund-ghost-1")
    assert rejected["reason"] == "invalid_request" and rejected["command_type"] == "FundAccount"
    assert rejected["account_id"] == "cr-ghost-account"
    assert "account_id" in {e["field"] for e in rejected["errors"]}
    await quiet(0.5)
    assert not events_about(service.driver, "AccountFunded", idempotency_key="cr-fund-ghost-1")
    assert await ledger_balance(service, "cr-ghost-account") == 0


async def test_fund_in_another_currency_is_rejected(service: Service) -> None:
    await open_accounts(service, "cr-fund-currency")
    await service.driver.fund("cr-fund-currency-1", "cr-fund-currency", 500, currency="EUR")
    rejected = await rejection_of(service, idempotency_key="cr-fund-currency-1")
    assert rejected["reason"] == "invalid_request" and "currency" in rejected["detail"]
    await quiet(0.5)
    assert await ledger_balance(service, "cr-fund-currency") == 0


async def test_repeated_funding_moves_money_once(service: Service) -> None:
    driver = service.driver
    account_id = "cr-fund-repeat"
    await open_accounts(service, account_id)
    await fund(service, "cr-fund-repeat-1", account_id, 2_500)
    await driver.fund("cr-fund-repeat-1", account_id, 2_500)
    await driver.fund("cr-fund-repeat-1", account_id, 2_500)
    await quiet()
    rows = await sql(service, "SELECT amount FROM postings WHERE account_id = $1", account_id)
    assert [r["amount"] for r in rows] == [2_500]
    assert not events_about(driver, "CommandRejected", idempotency_key="cr-fund-repeat-1")
    await account_settles(service, account_id, 2_500)


async def test_repeated_funding_republishes_account_funded(service: Service) -> None:
    driver = service.driver
    account_id = "cr-fund-answer"
    await open_accounts(service, account_id)
    await fund(service, "cr-fund-answer-1", account_id, 1_000)
    [funded] = events_about(driver, "AccountFunded", idempotency_key="cr-fund-answer-1")
    await driver.fund("cr-fund-answer-1", account_id, 1_000)
    messages = await raw_messages(service.bootstrap, "fintech.events.AccountFunded",
                                  lambda m: orjson.loads(m.value)["idempotency_key"] == "cr-fund-answer-1",
                                  at_least=2, timeout_seconds=5)
    assert [header(m, "ce_id") for m in messages] == [funded["event_id"].encode()] * 2


async def test_funding_key_reused_with_another_amount_is_a_conflict(service: Service) -> None:
    driver = service.driver
    account_id = "cr-fund-conflict"
    await open_accounts(service, account_id)
    await fund(service, "cr-fund-conflict-1", account_id, 1_000)
    await driver.fund("cr-fund-conflict-1", account_id, 9_999)
    rejected = await rejection_of(service, idempotency_key="cr-fund-conflict-1")
    assert rejected["reason"] == "idempotency_conflict" and rejected["command_type"] == "FundAccount"
    assert rejected["account_id"] == account_id
    await quiet()
    assert await ledger_balance(service, account_id) == 1_000
    await account_settles(service, account_id, 1_000)
    assert len(events_about(driver, "AccountFunded", idempotency_key="cr-fund-conflict-1")) == 1
