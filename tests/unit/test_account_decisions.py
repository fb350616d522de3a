"""The account owner: balance decisions and its reactions to each step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models import account_flow
from models.account import (
    AccountState,
    Refusal,
    apply_posting,
    check_creditor,
    decide_reservation,
    holds_in,
    open_account,
    release,
)
from models.account_flow import react
from models.commands import FundAccount, OpenAccount, RequestPayment
from models.events import (
    AccountOpened,
    CommandRejected,
    FailureReason,
    RefundFailureReason,
    RejectionReason,
)
from models.outputs import Dispatch, Publish
from models.steps import (
    ApplyPosting,
    AuthorizePayment,
    CheckCreditor,
    FundAccountOp,
    OpenAccountOp,
    Origin,
    PaymentStepFailed,
    PostFunding,
    PostRefund,
    RefundStepFailed,
    ReleaseFunds,
    ReserveFunds,
)

SOURCE = Origin(topic="steps", partition=3, offset=10)
HERE = Origin(topic="account-steps", partition=0, offset=99)


def at(offset: int, topic: str = "steps", partition: int = 3) -> Origin:
    return Origin(topic=topic, partition=partition, offset=offset)


def account(posted: int = 0, overdraft_limit: int = 0, **changes: Any) -> AccountState:
    command = OpenAccount(account_id="alice", owner_id="owner", currency="USD",
                          overdraft_limit=overdraft_limit)
    return open_account(command, command.fingerprint()).model_copy(update={"posted": posted, **changes})


def request(amount: int = 100, **changes: Any) -> RequestPayment:
    body: dict[str, Any] = {"idempotency_key": "key-1", "debtor_account_id": "alice",
                            "creditor_account_id": "bob", "amount": amount, "currency": "USD"}
    return RequestPayment.model_validate({**body, **changes})


def reserve(amount: int = 100, reservation_id: str = "pay-1", origin: Origin = SOURCE,
            **changes: Any) -> ReserveFunds:
    values: dict[str, Any] = dict(
        origin=origin, payment_id="pay-1", reservation_id=reservation_id, account_id="alice",
        amount=amount, currency="USD", payment=request(amount),
    )
    return ReserveFunds(**{**values, **changes})


def held(decision: AccountState | Refusal) -> AccountState:
    assert isinstance(decision, AccountState), decision
    return decision


def refused(decision: AccountState | Refusal) -> FailureReason:
    assert isinstance(decision, Refusal), decision
    return decision.reason


def only(outputs: list[Any], kind: type) -> Any:
    assert len(outputs) == 1, outputs
    output = outputs[0]
    assert isinstance(output, kind)
    return output


# --- holds_in ----------------------------------------------------------------------------------


def test_holds_are_counted_from_the_stored_json() -> None:
    empty = account(posted=500)
    two = held(decide_reservation(held(decide_reservation(empty, reserve(100, "pay-1"))),
                                  reserve(50, "pay-2")))
    assert [holds_in(state.model_dump_json().encode()) for state in (empty, two)] == [0, 2]
    assert holds_in(two.model_copy(update={"reservations": {}}).model_dump_json().encode()) == 0


# --- decide_reservation ----------------------------------------------------------------------


def test_reservation_holds_the_amount() -> None:
    state = held(decide_reservation(account(posted=500), reserve(200)))
    assert (state.posted, state.pending, state.available) == (500, 200, 300)
    assert state.reservations == {"pay-1": 200}


def test_reservation_may_spend_exactly_the_whole_balance() -> None:
    assert held(decide_reservation(account(posted=100), reserve(100))).available == 0


def test_reservation_allows_exactly_down_to_minus_overdraft_limit() -> None:
    state = held(decide_reservation(account(posted=100, overdraft_limit=50), reserve(150)))
    assert state.available == -50


def test_reservation_one_minor_unit_beyond_the_limit_is_insufficient_funds() -> None:
    decision = decide_reservation(account(posted=100, overdraft_limit=50), reserve(151))
    assert refused(decision) == FailureReason.INSUFFICIENT_FUNDS


def test_reservation_counts_existing_holds() -> None:
    state = held(decide_reservation(account(posted=100), reserve(60, "first")))
    assert refused(decide_reservation(state, reserve(41, "second"))) == FailureReason.INSUFFICIENT_FUNDS
    assert held(decide_reservation(state, reserve(40, "second"))).available == 0


def test_zero_balance_without_overdraft_refuses_any_amount() -> None:
    assert refused(decide_reservation(account(), reserve(1))) == FailureReason.INSUFFICIENT_FUNDS


@pytest.mark.parametrize("kyc_status", ["pending", "blocked"])
def test_unverified_kyc_is_blocked(kyc_status: str) -> None:
    payer = account(posted=1000, kyc_status=kyc_status)
    assert refused(decide_reservation(payer, reserve(1))) == FailureReason.KYC_BLOCKED


def test_currency_mismatch_is_refused() -> None:
    assert refused(decide_reservation(account(posted=1000), reserve(1, currency="EUR"))) == (
        FailureReason.CURRENCY_MISMATCH)


def test_unknown_account_is_refused() -> None:
    assert refused(decide_reservation(None, reserve(1))) == FailureReason.UNKNOWN_ACCOUNT
    assert refused(decide_reservation(None, reserve(1), refund=True)) == FailureReason.UNKNOWN_ACCOUNT


def test_inactive_account_is_refused() -> None:
    payer = account(posted=1000, status="frozen")
    assert refused(decide_reservation(payer, reserve(1))) == FailureReason.ACCOUNT_NOT_ACTIVE


def test_repeated_reservation_id_is_not_held_twice() -> None:
    once = held(decide_reservation(account(posted=1000), reserve(300)))
    twice = held(decide_reservation(once, reserve(300)))
    assert twice.reservations == {"pay-1": 300}
    assert twice.pending == 300


def test_repeated_reservation_is_accepted_even_when_funds_are_now_short() -> None:
    once = held(decide_reservation(account(posted=300), reserve(300)))
    assert held(decide_reservation(once, reserve(300))).available == 0


def test_refund_skips_kyc() -> None:
    payer = account(posted=1000, kyc_status="blocked")
    assert held(decide_reservation(payer, reserve(100), refund=True)).pending == 100


def test_refund_still_respects_the_overdraft_limit() -> None:
    payer = account(posted=50, kyc_status="pending")
    assert refused(decide_reservation(payer, reserve(51), refund=True)) == FailureReason.INSUFFICIENT_FUNDS


def test_reservation_does_not_touch_the_input_state() -> None:
    payer = account(posted=1000)
    decide_reservation(payer, reserve(100))
    assert payer.reservations == {}


# --- release and apply_posting ---------------------------------------------------------------


def test_release_gives_the_hold_back() -> None:
    state = release(held(decide_reservation(account(posted=500), reserve(200))), "pay-1")
    assert (state.posted, state.pending, state.available) == (500, 0, 500)


def test_release_of_an_unknown_hold_changes_nothing() -> None:
    state = held(decide_reservation(account(posted=500), reserve(200)))
    assert release(state, "other") == state


def test_settling_a_debit_consumes_its_hold() -> None:
    state = held(decide_reservation(account(posted=500), reserve(200)))
    settled = apply_posting(state, -200, "pay-1")
    assert (settled.posted, settled.pending, settled.available) == (300, 0, 300)


def test_settling_keeps_available_unchanged() -> None:
    state = held(decide_reservation(account(posted=500), reserve(200)))
    assert apply_posting(state, -200, "pay-1").available == state.available


def test_credit_moves_posted_and_available() -> None:
    state = apply_posting(account(posted=10), 90, None)
    assert (state.posted, state.pending, state.available) == (100, 0, 100)


def test_settling_one_hold_keeps_the_others() -> None:
    state = held(decide_reservation(account(posted=500), reserve(100, "a")))
    state = held(decide_reservation(state, reserve(150, "b")))
    settled = apply_posting(state, -100, "a")
    assert settled.reservations == {"b": 150}
    assert (settled.posted, settled.available) == (400, 250)


def test_check_creditor_requires_the_payment_currency() -> None:
    creditor = account()
    assert check_creditor(creditor, "alice", "USD") is None
    assert check_creditor(creditor, "alice", "EUR").reason == FailureReason.CURRENCY_MISMATCH  # type: ignore[union-attr]
    assert check_creditor(None, "bob", "USD").reason == FailureReason.UNKNOWN_ACCOUNT  # type: ignore[union-attr]


def test_creditor_kyc_does_not_matter() -> None:
    assert check_creditor(account(kyc_status="blocked"), "alice", "USD") is None


# --- account_flow.react: redelivery ----------------------------------------------------------


def test_new_step_advances_the_applied_map() -> None:
    state, _ = react(account(posted=500), reserve(100, origin=at(10)), HERE)
    assert state is not None
    assert state.applied == {"steps#3": (10, 0)}


def test_applied_map_is_kept_per_source() -> None:
    state, _ = react(account(posted=500), reserve(100, "a", origin=at(10)), HERE)
    assert state is not None
    state, _ = react(state, reserve(100, "b", origin=at(4, partition=1)), HERE)
    assert state is not None
    assert state.applied == {"steps#3": (10, 0), "steps#1": (4, 0)}
    assert state.pending == 200


@pytest.mark.parametrize("offset", [10, 9, 0])
def test_step_at_or_below_the_applied_offset_is_ignored(offset: int) -> None:
    state, _ = react(account(posted=500), reserve(100, "a", origin=at(10)), HERE)
    assert state is not None
    again, outputs = react(state, reserve(100, "b", origin=at(offset)), HERE)
    assert (again, outputs) == (None, [])


def test_redelivered_posting_is_not_applied_twice() -> None:
    posting = ApplyPosting(origin=at(5), account_id="alice", transaction_id="t", amount=70)
    state, _ = react(account(posted=0), posting, HERE)
    assert state is not None and state.posted == 70
    assert react(state, posting, HERE) == (None, [])


def test_step_from_a_later_offset_is_applied() -> None:
    state, _ = react(account(posted=500), reserve(100, "a", origin=at(10)), HERE)
    assert state is not None
    later, outputs = react(state, reserve(100, "b", origin=at(11)), HERE)
    assert later is not None and later.pending == 200
    assert later.applied == {"steps#3": (11, 0)}
    assert len(outputs) == 1


def test_refused_step_is_still_tracked() -> None:
    state, outputs = react(account(posted=0), reserve(100, origin=at(10)), HERE)
    assert state is not None and state.applied == {"steps#3": (10, 0)} and state.pending == 0
    assert only(outputs, Dispatch).step.reason == FailureReason.INSUFFICIENT_FUNDS


# --- account_flow.react: opening and funding -------------------------------------------------


def open_step(offset: int = 1, **changes: Any) -> OpenAccountOp:
    values: dict[str, Any] = {"account_id": "alice", "owner_id": "owner", "currency": "USD"}
    return OpenAccountOp(origin=at(offset, "accounts.commands", 0),
                         command=OpenAccount(**{**values, **changes}))


def test_open_account_creates_the_state_and_publishes_account_opened() -> None:
    state, outputs = react(None, open_step(overdraft_limit=25), HERE)
    assert state is not None
    assert (state.account_id, state.currency, state.overdraft_limit, state.posted) == ("alice", "USD", 25, 0)
    opened = only(outputs, Publish).event
    assert isinstance(opened, AccountOpened)
    assert (opened.account_id, opened.overdraft_limit, opened.kyc_status) == ("alice", 25, "verified")


def test_open_account_repeat_republishes_the_same_event_id() -> None:
    state, first = react(None, open_step(1), HERE)
    assert state is not None
    again_state, again = react(state, open_step(2), HERE)
    assert only(again, Publish).event.event_id == only(first, Publish).event.event_id
    assert again_state is not None and again_state.fingerprint == state.fingerprint


def test_open_account_with_another_payload_is_an_idempotency_conflict() -> None:
    state, _ = react(None, open_step(1), HERE)
    assert state is not None
    after, outputs = react(state, open_step(2, currency="EUR"), HERE)
    rejected = only(outputs, Publish).event
    assert isinstance(rejected, CommandRejected)
    assert (rejected.reason, rejected.command_type, rejected.account_id) == (
        RejectionReason.IDEMPOTENCY_CONFLICT, "OpenAccount", "alice")
    assert after is not None and after.currency == "USD"


def fund_step(account_id: str = "alice", currency: str = "USD", offset: int = 1) -> FundAccountOp:
    command = FundAccount(idempotency_key="fund-1", account_id=account_id, amount=500, currency=currency)
    return FundAccountOp(origin=at(offset, "accounts.commands", 0), fingerprint=command.fingerprint(),
                         command=command)


def test_fund_unknown_account_is_rejected_naming_account_id() -> None:
    state, outputs = react(None, fund_step("ghost"), HERE)
    rejected = only(outputs, Publish).event
    assert state is None
    assert isinstance(rejected, CommandRejected)
    assert (rejected.reason, rejected.command_type) == (RejectionReason.INVALID_REQUEST, "FundAccount")
    assert (rejected.account_id, rejected.idempotency_key) == ("ghost", "fund-1")
    assert [error.field for error in rejected.errors] == ["account_id"]


def test_fund_in_another_currency_is_rejected_naming_currency() -> None:
    _, outputs = react(account(), fund_step(currency="EUR"), HERE)
    rejected = only(outputs, Publish).event
    assert [error.field for error in rejected.errors] == ["currency"]


def test_fund_known_account_goes_to_the_ledger_without_moving_the_balance() -> None:
    step = fund_step()
    state, outputs = react(account(posted=7), step, HERE)
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("ledger", "fund-1")
    assert isinstance(dispatch.step, PostFunding)
    assert dispatch.step.fingerprint == step.fingerprint and dispatch.step.origin == HERE
    assert state is not None and state.posted == 7


def test_redelivered_rejection_keeps_its_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=s) for s in range(1_000))
    monkeypatch.setattr(account_flow, "now", lambda: next(clock), raising=False)  # a redelivery, later
    step = fund_step("ghost")
    _, first = react(None, step, HERE)
    _, again = react(None, step, HERE)
    assert only(again, Publish).event.event_id == only(first, Publish).event.event_id


# --- account_flow.react: payment steps -------------------------------------------------------


def check_step(creditor_currency: str = "USD") -> CheckCreditor:
    return CheckCreditor(origin=at(4, "payment-steps", 2), payment_id="pay-1",
                         payment=request(100, currency=creditor_currency))


def test_check_creditor_success_dispatches_reserve_funds_to_the_debtor() -> None:
    creditor = account().model_copy(update={"account_id": "bob"})
    state, outputs = react(creditor, check_step(), HERE)
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("account", "alice")
    hold = dispatch.step
    assert isinstance(hold, ReserveFunds)
    assert (hold.account_id, hold.amount, hold.currency) == ("alice", 100, "USD")
    assert hold.reservation_id == "pay-1"
    assert hold.origin == HERE and hold.refund_key is None
    assert state is not None and state.reservations == {} and state.applied == {"payment-steps#2": (4, 0)}


def test_check_creditor_unknown_fails_the_payment() -> None:
    _, outputs = react(None, check_step(), HERE)
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("payment", "pay-1")
    assert isinstance(dispatch.step, PaymentStepFailed)
    assert dispatch.step.reason == FailureReason.UNKNOWN_ACCOUNT


def test_check_creditor_in_another_currency_fails_the_payment() -> None:
    _, outputs = react(account(), check_step("EUR"), HERE)
    assert only(outputs, Dispatch).step.reason == FailureReason.CURRENCY_MISMATCH


def test_reserve_success_for_a_payment_dispatches_authorize_to_psp() -> None:
    state, outputs = react(account(posted=500), reserve(100), HERE)
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("psp", "pay-1")
    assert isinstance(dispatch.step, AuthorizePayment)
    assert dispatch.step.reservation_id == "pay-1" and dispatch.step.origin == HERE
    assert state is not None and state.reservations == {"pay-1": 100}


def test_reserve_success_for_a_refund_dispatches_post_refund_to_ledger() -> None:
    step = reserve(100, "refund-1", refund_key="r-1")
    state, outputs = react(account(posted=500, kyc_status="pending"), step, HERE)
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("ledger", "pay-1")
    post = dispatch.step
    assert isinstance(post, PostRefund)
    assert (post.refund_key, post.reservation_id, post.amount) == ("r-1", "refund-1", 100)
    assert state is not None and state.reservations == {"refund-1": 100}


def test_reserve_refused_for_a_payment_fails_the_payment() -> None:
    state, outputs = react(account(posted=50), reserve(100), HERE)
    dispatch = only(outputs, Dispatch)
    assert isinstance(dispatch.step, PaymentStepFailed)
    assert (dispatch.route, dispatch.step.reason) == ("payment", FailureReason.INSUFFICIENT_FUNDS)
    assert state is not None and state.pending == 0


def test_reserve_refused_for_a_refund_fails_the_refund() -> None:
    _, outputs = react(account(posted=50), reserve(100, "refund-1", refund_key="r-1"), HERE)
    failed = only(outputs, Dispatch).step
    assert isinstance(failed, RefundStepFailed)
    assert (failed.refund_key, failed.reason) == ("r-1", RefundFailureReason.INSUFFICIENT_FUNDS)


def test_release_funds_removes_the_hold_and_fails_the_payment() -> None:
    state, _ = react(account(posted=500), reserve(100, origin=at(1)), HERE)
    assert state is not None
    release_step = ReleaseFunds(origin=at(2), payment_id="pay-1", reservation_id="pay-1",
                                account_id="alice", reason=FailureReason.PSP_DECLINED, detail="no",
                                psp_reference="psp-9")
    released, outputs = react(state, release_step, HERE)
    assert released is not None and released.reservations == {} and released.available == 500
    dispatch = only(outputs, Dispatch)
    assert (dispatch.route, dispatch.key) == ("payment", "pay-1")
    assert isinstance(dispatch.step, PaymentStepFailed)
    assert (dispatch.step.reason, dispatch.step.psp_reference) == (FailureReason.PSP_DECLINED, "psp-9")


def test_apply_posting_settles_the_hold() -> None:
    state, _ = react(account(posted=500), reserve(100, origin=at(1)), HERE)
    assert state is not None
    posting = ApplyPosting(origin=at(2, "ledger-steps", 0), account_id="alice", transaction_id="t",
                           amount=-100, reservation_id="pay-1")
    settled, outputs = react(state, posting, HERE)
    assert outputs == []
    assert settled is not None
    assert (settled.posted, settled.pending, settled.available) == (400, 0, 400)


def test_apply_posting_on_an_unknown_account_changes_nothing() -> None:
    posting = ApplyPosting(origin=at(2), account_id="ghost", transaction_id="t", amount=5)
    assert react(None, posting, HERE) == (None, [])
