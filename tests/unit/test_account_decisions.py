"""An account's balance decisions (models/account.py)."""

from __future__ import annotations

from typing import Any

import pytest

from models.account import (
    Account,
    check_creditor,
    check_payer,
    credit,
    open_account,
    release,
    reserve,
    settle,
    short_of,
)
from models.steps import CreditorFacts, Opening, Refusal


def account(posted: int = 0, overdraft_limit: int = 0, **changes: Any) -> Account:
    opened = open_account(Opening("alice", "owner", "USD", overdraft_limit, "verified", "fp"))
    import msgspec

    return msgspec.structs.replace(opened, posted=posted, **changes)


def test_an_opened_account_starts_empty_with_its_facts() -> None:
    opened = account()
    assert (opened.posted, opened.pending, opened.available, opened.holds) == (0, 0, 0, {})
    assert opened.facts == CreditorFacts("alice", "USD", "active") and opened.fingerprint == "fp"


def test_a_reservation_holds_the_amount() -> None:
    held = reserve(account(1_000), "p1", 300)
    assert isinstance(held, Account) and held.holds == {"p1": 300}
    assert (held.posted, held.pending, held.available) == (1_000, 300, 700)


def test_a_reservation_may_spend_exactly_the_whole_balance_and_down_to_the_overdraft_limit() -> None:
    assert isinstance(reserve(account(100), "p", 100), Account)
    assert isinstance(reserve(account(100, overdraft_limit=50), "p", 150), Account)


def test_one_minor_unit_beyond_the_limit_is_insufficient_funds() -> None:
    refused = reserve(account(100, overdraft_limit=50), "p", 151)
    assert isinstance(refused, Refusal) and refused.reason == "insufficient_funds"
    assert "-50" in refused.detail


def test_a_reservation_counts_the_other_holds() -> None:
    held = reserve(account(1_000), "p1", 600)
    assert isinstance(held, Account)
    assert isinstance(reserve(held, "p2", 401), Refusal)
    assert isinstance(reserve(held, "p2", 400), Account)


def test_a_hold_seen_again_is_not_held_twice_even_when_funds_are_now_short() -> None:
    held = reserve(account(1_000), "p1", 1_000)
    assert reserve(held, "p1", 1_000) is held  # type: ignore[arg-type]


def test_a_reservation_does_not_touch_the_account_it_was_given() -> None:
    before = account(1_000)
    reserve(before, "p1", 10)
    assert before.holds == {}


def test_release_gives_the_hold_back_and_an_unknown_hold_changes_nothing() -> None:
    held = reserve(account(1_000), "p1", 300)
    assert isinstance(held, Account)
    assert release(held, "p1").holds == {} and release(held, "other") is held


def test_settling_a_debit_consumes_its_hold_keeps_the_others_and_available_unchanged() -> None:
    held = reserve(reserve(account(1_000), "p1", 300), "p2", 100)  # type: ignore[arg-type]
    assert isinstance(held, Account)
    settled = settle(held, "p1", 300)
    assert (settled.posted, settled.holds, settled.available) == (700, {"p2": 100}, held.available)


def test_credit_moves_posted_and_available() -> None:
    assert credit(account(5), 10).available == 15


@pytest.mark.parametrize(("changes", "reason"), [
    ({"kyc_status": "pending"}, "kyc_blocked"), ({"kyc_status": "blocked"}, "kyc_blocked"),
    ({"currency": "EUR"}, "currency_mismatch"), ({"status": "frozen"}, "account_not_active")])
def test_the_payer_is_checked(changes: dict[str, Any], reason: str) -> None:
    refused = check_payer(account(**changes), "alice", "USD")
    assert refused is not None and refused.reason == reason
    assert check_payer(account(), "alice", "USD") is None
    unknown = check_payer(None, "alice", "USD")
    assert unknown is not None and unknown.reason == "unknown_account"


def test_the_creditor_needs_the_currency_and_to_be_open_but_not_kyc() -> None:
    assert check_creditor(CreditorFacts("bob", "USD", "active"), "bob", "USD") is None
    wrong = check_creditor(CreditorFacts("bob", "EUR", "active"), "bob", "USD")
    assert wrong is not None and wrong.reason == "currency_mismatch" and "creditor" in wrong.detail
    closed = check_creditor(CreditorFacts("bob", "USD", "closed"), "bob", "USD")
    assert closed is not None and closed.reason == "account_not_active"
    missing = check_creditor(None, "bob", "USD")
    assert missing is not None and missing.reason == "unknown_account"


def test_short_of_says_nothing_while_the_funds_suffice() -> None:
    assert short_of(account(10), 10) is None and short_of(account(10), 11) is not None
