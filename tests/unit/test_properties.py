"""Properties over random sequences: balance invariants of one account, balance of every entry."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.account import AccountState, apply_posting, decide_reservation, open_account, release
from models.account_flow import react
from models.commands import FundAccount, OpenAccount, RequestPayment
from models.ledger_flow import entry_for, follow_ups
from models.payment import payment_id_for, refund_id_for
from models.steps import (
    ApplyPosting,
    Origin,
    PostCapture,
    PostFunding,
    PostRefund,
    ReleaseFunds,
    ReserveFunds,
)
from models.types import MAX_AMOUNT

PROPERTY = settings(max_examples=200, deadline=None)
HERE = Origin(topic="account-steps", partition=0, offset=0)
PAYMENT = RequestPayment(
    idempotency_key="k", debtor_account_id="alice", creditor_account_id="bob", amount=1, currency="USD"
)

amounts = st.integers(min_value=1, max_value=5_000)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), amounts),
        st.tuples(st.just("reserve_again"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("release"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("settle"), st.integers(min_value=0, max_value=50)),
        st.tuples(st.just("credit"), amounts),
    ),
    max_size=60,
)


def new_account(overdraft_limit: int) -> AccountState:
    command = OpenAccount(account_id="alice", owner_id="o", currency="USD", overdraft_limit=overdraft_limit)
    return open_account(command, command.fingerprint())


def reserve_step(reservation_id: str, amount: int, offset: int = 0) -> ReserveFunds:
    return ReserveFunds(
        origin=Origin(topic="steps", partition=0, offset=offset),
        payment_id=reservation_id,
        reservation_id=reservation_id,
        account_id="alice",
        amount=amount,
        currency="USD",
        payment=PAYMENT,
    )


def pick(holds: dict[str, int], index: int) -> str:
    return sorted(holds)[index % len(holds)] if holds else "no-such-hold"


@PROPERTY
@given(overdraft_limit=st.integers(min_value=0, max_value=3_000), ops=operations)
def test_account_balances_stay_consistent(overdraft_limit: int, ops: list[tuple[str, int]]) -> None:
    state = new_account(overdraft_limit)
    holds: dict[str, int] = {}
    postings: list[int] = []
    for number, (operation, value) in enumerate(ops):
        if operation in ("reserve", "reserve_again"):
            reservation_id = pick(holds, value) if operation == "reserve_again" and holds else f"r{number}"
            amount = holds.get(reservation_id, value)
            decision = decide_reservation(state, reserve_step(reservation_id, amount))
            if isinstance(decision, AccountState):
                state = decision
                holds[reservation_id] = amount
            assert state.available >= -overdraft_limit
        elif operation == "release":
            reservation_id = pick(holds, value)
            state = release(state, reservation_id)
            holds.pop(reservation_id, None)
        elif operation == "settle" and holds:
            reservation_id = pick(holds, value)
            state = apply_posting(state, -holds[reservation_id], reservation_id)
            postings.append(-holds.pop(reservation_id))
        elif operation == "credit":
            state = apply_posting(state, value, None)
            postings.append(value)
        assert state.reservations == holds
        assert state.pending == sum(holds.values())
        assert state.posted == sum(postings)
        assert state.available == state.posted - state.pending
        assert state.available >= -overdraft_limit


def step_for(operation: str, value: int, offset: int, holds: dict[str, int]) -> Any:
    """The account step an operation arrives as, from source `steps#0` at `offset`."""
    origin = Origin(topic="steps", partition=0, offset=offset)
    if operation == "reserve":
        return reserve_step(f"r{offset}", value, offset)
    if operation == "reserve_again" and holds:
        reservation_id = pick(holds, value)
        return reserve_step(reservation_id, holds[reservation_id], offset)
    if operation == "release" and holds:
        reservation_id = pick(holds, value)
        return ReleaseFunds(
            origin=origin,
            payment_id=reservation_id,
            reservation_id=reservation_id,
            account_id="alice",
            reason="psp_declined",
            detail="declined",
        )
    if operation == "settle" and holds:
        reservation_id = pick(holds, value)
        return ApplyPosting(
            origin=origin,
            account_id="alice",
            transaction_id=reservation_id,
            amount=-holds[reservation_id],
            reservation_id=reservation_id,
        )
    return ApplyPosting(origin=origin, account_id="alice", transaction_id=f"c{offset}", amount=value)


@PROPERTY
@given(
    overdraft_limit=st.integers(min_value=0, max_value=3_000),
    ops=operations,
    redeliveries=st.lists(st.integers(min_value=0, max_value=200), max_size=20),
)
def test_redelivered_steps_never_change_the_account(
    overdraft_limit: int, ops: list[tuple[str, int]], redeliveries: list[int]
) -> None:
    state = new_account(overdraft_limit)
    sent: list[Any] = []
    posted = 0
    for offset, (operation, value) in enumerate(ops):
        step = step_for(operation, value, offset, state.reservations)
        sent.append(step)
        new_state, _ = react(state, step, HERE)
        assert new_state is not None
        posted += step.amount if isinstance(step, ApplyPosting) else 0
        state = new_state
        assert (state.posted, state.applied) == (posted, {"steps#0": (offset, 0)})
        assert state.available >= -overdraft_limit
        for index in redeliveries:
            assert react(state, sent[index % len(sent)], HERE) == (None, [])


# Customer accounts never carry the settlement prefix: OpenAccount refuses it.
identifiers = st.from_regex(r"[A-Za-z0-9._:@-]{1,40}", fullmatch=True).filter(
    lambda identifier: not identifier.startswith("settlement:")
)
currencies = st.sampled_from(["USD", "EUR", "JPY", "GBP", "CHF"])
ledger_amounts = st.integers(min_value=1, max_value=MAX_AMOUNT)


@st.composite
def payments(draw: st.DrawFn) -> RequestPayment:
    debtor, creditor = draw(st.lists(identifiers, min_size=2, max_size=2, unique=True))
    return RequestPayment(
        idempotency_key=draw(identifiers),
        debtor_account_id=debtor,
        creditor_account_id=creditor,
        amount=draw(ledger_amounts),
        currency=draw(currencies),
    )


@st.composite
def ledger_steps(draw: st.DrawFn) -> Any:
    origin = Origin(
        topic="ledger-steps", partition=draw(st.integers(0, 7)), offset=draw(st.integers(0, 10**9))
    )
    kind = draw(st.sampled_from(["capture", "funding", "refund"]))
    if kind == "funding":
        command = FundAccount(
            idempotency_key=draw(identifiers),
            account_id=draw(identifiers),
            amount=draw(ledger_amounts),
            currency=draw(currencies),
        )
        return PostFunding(origin=origin, fingerprint=command.fingerprint(), command=command)
    payment = draw(payments())
    payment_id = payment_id_for(payment.idempotency_key)
    if kind == "capture":
        return PostCapture(
            origin=origin,
            payment_id=payment_id,
            reservation_id=payment_id,
            psp_reference=draw(identifiers),
            payment=payment,
        )
    refund_key = draw(identifiers)
    return PostRefund(
        origin=origin,
        payment_id=payment_id,
        reservation_id=refund_id_for(payment_id, refund_key),
        refund_key=refund_key,
        amount=draw(st.integers(1, payment.amount)),
        payment=payment,
    )


@PROPERTY
@given(step=ledger_steps())
def test_every_entry_built_from_a_valid_step_is_balanced(step: Any) -> None:
    entry, event = entry_for(step)
    totals: Counter[str] = Counter()
    for posting in entry.postings:
        assert posting.amount != 0 and abs(posting.amount) <= MAX_AMOUNT
        totals[posting.currency] += posting.amount
    assert len(entry.postings) >= 2
    assert set(totals.values()) == {0}
    assert entry.transaction_id == event.transaction_id
    assert entry_for(step)[0].transaction_id == entry.transaction_id


@PROPERTY
@given(step=ledger_steps())
def test_follow_ups_apply_exactly_the_entrys_legs_on_owned_accounts(step: Any) -> None:
    entry, event = entry_for(step)
    moved: Counter[str] = Counter()
    for output in follow_ups(step, entry, event, step.origin):
        if isinstance(output.step, ApplyPosting):
            assert output.key == output.step.account_id
            moved[output.step.account_id] += output.step.amount
    expected: Counter[str] = Counter()
    for posting in entry.postings:
        if not posting.account_id.startswith("settlement:"):
            expected[posting.account_id] += posting.amount
    assert moved == expected
