"""Properties of the whole choreography, in memory (tests/unit/world.py), under random
traffic, random provider answers, random batch boundaries and crashes between a batch's
sends and its state."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from models.steps import PspAnswered
from tests.unit.test_choreography import fund, open_account, pay
from tests.unit.world import World

ACCOUNTS = ["acct-a", "acct-b", "acct-c", "acct-d", "acct-e"]
FUNDS = 1_000

payments = st.lists(
    st.tuples(
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        st.integers(min_value=1, max_value=700),
        st.sampled_from(["approved", "approved", "declined", "gave_up"]),
    ),
    min_size=1,
    max_size=25,
)


def run(plan: list[tuple[str, str, int, str]], seed: int, overdraft: int) -> tuple[World, list[str]]:
    draw = random.Random(seed)
    answers: dict[str, str] = {}
    world = World(
        approve=lambda payment: PspAnswered(
            origin=payment.requested_at,
            payment_id=payment.payment_id,  # type: ignore[arg-type]
            home=payment.request.debtor_account_id,
            result=answers[payment.payment_id],  # type: ignore[arg-type]
            psp_reference="ref" if answers[payment.payment_id] == "approved" else None,
            detail="d",
        )
    )
    for account_id in ACCOUNTS:
        open_account(world, account_id, overdraft_limit=overdraft)
    world.settle()
    for account_id in ACCOUNTS:
        fund(world, f"fund-{account_id}", account_id, FUNDS)
    world.settle()
    payment_ids = []
    for number, (debtor, creditor, amount, answer) in enumerate(plan):
        payment_id = pay(world, f"pay-{number}", debtor, creditor, amount)
        answers[payment_id] = answer
        payment_ids.append(payment_id)
        if draw.random() < 0.3:
            pay(world, f"pay-{number}", debtor, creditor, amount)  # a repeat
    for _ in range(200):  # batches of random sizes, some crashing before their state is recorded
        busy = [p for p, log in world.logs.items() if len(log) > world.read.get(p, 0)]
        if not busy and not world.calls:
            break
        if busy:
            world.handle_partition(
                draw.choice(busy), draw.randint(1, 4), crash_before_record=draw.random() < 0.2
            )
        if draw.random() < 0.5:
            world.answer_calls()
    world.settle()
    return world, payment_ids


@settings(max_examples=60, deadline=None)
@given(plan=payments, seed=st.integers(0, 10**6), overdraft=st.sampled_from([0, 300]))
def test_money_is_never_lost_doubled_or_overdrawn_and_each_payment_ends_once(
    plan: list[tuple[str, str, int, str]], seed: int, overdraft: int
) -> None:
    world, payment_ids = run(plan, seed, overdraft)
    total = 0
    for account_id in ACCOUNTS:
        account = world.account(account_id)
        assert account.holds == {}, account_id
        assert account.posted == world.ledger_balance(account_id), account_id
        assert account.posted >= -overdraft, account_id
        total += account.posted
    assert total == FUNDS * len(ACCOUNTS)
    for payment_id, (debtor, creditor, _amount, answer) in zip(payment_ids, plan, strict=True):
        record = world.payment(payment_id)
        assert record is not None and record.decided
        outcomes = {
            e.event_type
            for e in world.published
            if getattr(e, "payment_id", None) == payment_id and e.event_type in ("PaymentFailed",)
        }
        captured = any(entry.payment_id == payment_id for entry, _ in world.ledger.values())
        assert (record.status == "captured") == captured
        assert not (captured and outcomes), payment_id  # never both a failure and money moved
        if debtor == creditor:
            assert record.reason == "same_account"
        elif answer != "approved":
            assert not captured
