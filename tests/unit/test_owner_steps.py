"""The owner's decisions, one step at a time (models/owner.py): what each step changes and says."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from models import owner
from models.account import Account
from models.events import PaymentFailed
from models.outputs import Dispatch, Publish
from models.owner import Effects, Facts, Limits, StoredEntry, Tracking, UnknownAccount
from models.payment import Payment, payment_id_for
from models.steps import (
    ApplyCredit,
    CheckCreditor,
    CreditorFacts,
    FundAccountOp,
    Funding,
    OpenAccountOp,
    Opening,
    Origin,
    PaymentRequest,
    PaymentSubmitted,
    PostRefund,
    PspAnswered,
    RecordHome,
    RefundPosted,
    RefundRequested,
    RefundStepFailed,
    RefundSubmitted,
    Refusal,
)

HOME = 3  # every account of these tests lives on partition 3, but for "far" ones
FAR = {"far-creditor": 5, "nobody": 6}
COMMANDS = Origin("fintech.payments.commands", 1, 10)
PAYMENT_ID = payment_id_for("pay-1")


class DictState:
    """models.owner.State over plain dicts."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.payments: dict[str, Payment] = {}
        self.payment_homes: dict[str, int] = {}
        self.homes: dict[str, str] = {}
        self.trackings: dict[int, Tracking] = {}
        self.written: list[tuple[int, str]] = []

    def account(self, account_id: str) -> Account | None:
        return self.accounts.get(account_id)

    def payment(self, payment_id: str, home: int) -> Payment | None:
        """As the store answers: only at the partition the record was written at (a record
        the test put in directly counts as at its home)."""
        written = self.payment_homes.get(payment_id, home)
        return self.payments.get(payment_id) if written == home else None

    def home(self, payment_id: str) -> str | None:
        return self.homes.get(payment_id)

    def tracking(self, partition: int) -> Tracking:
        return self.trackings.get(partition, Tracking())

    def set_account(self, partition: int, account: Account) -> None:
        self.accounts[account.account_id] = account
        self.written.append((partition, account.account_id))

    def set_payment(self, partition: int, payment: Payment) -> None:
        self.payments[payment.payment_id] = payment
        self.payment_homes[payment.payment_id] = partition
        self.written.append((partition, payment.payment_id))

    def set_home(self, partition: int, payment_id: str, home: str) -> None:
        self.homes[payment_id] = home

    def set_tracking(self, partition: int, tracking: Tracking) -> None:
        self.trackings[partition] = tracking

    def partition_of(self, key: str) -> int:
        return FAR.get(key, HOME)


def account(account_id: str, posted: int = 0, **changes: Any) -> Account:
    fields: dict[str, Any] = {
        "owner_id": "o",
        "currency": "USD",
        "overdraft_limit": 0,
        "kyc_status": "verified",
        "fingerprint": "fp-" + account_id,
        **changes,
    }
    return Account(account_id=account_id, posted=posted, **fields)


def state_with(*accounts: Account) -> DictState:
    state = DictState()
    for each in accounts:
        state.accounts[each.account_id] = each
    return state


def at(offset: int = 100, index: int = 0) -> Origin:
    return Origin("payments.steps", HOME, offset, index)


def handle(
    state: DictState,
    step: Any,
    where: Origin | None = None,
    facts: Facts | None = None,
    limits: Limits | None = None,
) -> Effects:
    effects = Effects()
    owner.handle(state, step, where or at(), facts or Facts(), limits or Limits(), effects)  # type: ignore[arg-type]
    return effects


def submitted(
    amount: int = 1_000,
    creditor: str = "bob",
    key: str = "pay-1",
    offset: int = COMMANDS.offset,
    **extra: Any,
) -> PaymentSubmitted:
    origin = msgspec.structs.replace(COMMANDS, offset=offset)
    return PaymentSubmitted(
        origin=origin,
        payment_id=payment_id_for(key),
        fingerprint=f"fp-{key}-{amount}",
        request=PaymentRequest(key, "alice", creditor, amount, "USD"),
        **extra,
    )


def published(effects: Effects) -> list[Any]:
    return [output.event for output in effects.outputs if isinstance(output, Publish)]


def dispatched(effects: Effects) -> list[tuple[str, Any]]:
    return [(output.key, output.step) for output in effects.outputs if isinstance(output, Dispatch)]


def answered(result: str, **fields: Any) -> PspAnswered:
    return PspAnswered(origin=at(100), payment_id=PAYMENT_ID, home="alice", result=result, **fields)  # type: ignore[arg-type]


def in_flight(amount: int = 1_000) -> DictState:
    state = state_with(account("alice", 5_000), account("bob"))
    handle(state, submitted(amount))
    return state


# --- submitting a payment ---------------------------------------------------------------------


def test_a_payment_holds_the_funds_records_it_in_flight_and_asks_for_its_call() -> None:
    state = state_with(account("alice", 5_000), account("bob"))
    effects = handle(state, submitted(1_000))
    record = state.payments[PAYMENT_ID]
    assert record.psp == "in_flight" and record.requested_at == at() and record.status == "pending"
    assert state.accounts["alice"].holds == {PAYMENT_ID: 1_000} and state.accounts["alice"].available == 4_000
    assert [e.event_type for e in published(effects)] == ["PaymentInitiated"]
    assert effects.calls == [record] and effects.entries == []


@pytest.mark.parametrize(
    ("changes", "reason"), [({"creditor": "alice"}, "same_account"), ({"amount": 10**9}, "risk_rejected")]
)
def test_checks_that_need_no_account_fail_at_once_without_initiating(
    changes: dict[str, Any], reason: str
) -> None:
    state = state_with(account("alice", 5_000), account("bob"))
    effects = handle(state, submitted(**changes))
    [failed] = published(effects)
    assert isinstance(failed, PaymentFailed) and failed.reason == reason
    assert state.payments[PAYMENT_ID].status == "failed" and state.accounts["alice"].holds == {}


def test_exactly_the_risk_maximum_is_accepted() -> None:
    state = state_with(account("alice", 10**6), account("bob"))
    handle(state, submitted(500), limits=Limits(risk_max_amount=500))
    assert state.payments[PAYMENT_ID].psp == "in_flight"


@pytest.mark.parametrize(
    ("debtor", "reason"),
    [
        (account("alice", 100), "insufficient_funds"),
        (account("alice", 5_000, kyc_status="pending"), "kyc_blocked"),
        (account("alice", 5_000, kyc_status="blocked"), "kyc_blocked"),
        (account("alice", 5_000, currency="EUR"), "currency_mismatch"),
        (account("alice", 5_000, status="frozen"), "account_not_active"),
    ],
)
def test_the_debtor_decides(debtor: Account, reason: str) -> None:
    state = state_with(debtor, account("bob"))
    effects = handle(state, submitted(1_000))
    assert [e.event_type for e in published(effects)] == ["PaymentInitiated", "PaymentFailed"]
    assert published(effects)[1].reason == reason and effects.calls == []
    assert state.accounts["alice"].holds == {}


def test_the_overdraft_limit_is_the_floor_exactly() -> None:
    state = state_with(account("alice", 100, overdraft_limit=50), account("bob"))
    handle(state, submitted(150))
    assert state.accounts["alice"].available == -50
    handle(state, submitted(1, key="pay-2", offset=11))
    assert state.payments[payment_id_for("pay-2")].reason == "insufficient_funds"


def test_an_unknown_debtor_fails_the_payment() -> None:
    state = state_with(account("bob"))
    effects = handle(state, submitted())
    assert published(effects)[-1].reason == "unknown_account"


def test_a_creditor_whose_home_is_elsewhere_is_known_from_the_directory() -> None:
    state = state_with(account("alice", 5_000))
    facts = Facts(creditors={"far-creditor": CreditorFacts("far-creditor", "USD", "active")})
    handle(state, submitted(creditor="far-creditor"), facts=facts)
    assert state.payments[PAYMENT_ID].psp == "in_flight"


def test_a_creditor_in_another_currency_fails_the_payment() -> None:
    state = state_with(account("alice", 5_000))
    facts = Facts(creditors={"far-creditor": CreditorFacts("far-creditor", "EUR", "active")})
    effects = handle(state, submitted(creditor="far-creditor"), facts=facts)
    assert published(effects)[-1].reason == "currency_mismatch"


def test_a_creditor_not_in_the_directory_is_asked_of_its_home_before_anything_is_decided() -> None:
    state = state_with(account("alice", 5_000))
    step = submitted(creditor="nobody")
    effects = handle(state, step)
    assert dispatched(effects) == [("nobody", CheckCreditor(origin=at(), submitted=step))]
    assert published(effects) == [] and state.payments == {} and state.accounts["alice"].holds == {}


def test_the_creditors_home_answers_with_its_verdict_and_the_payment_goes_on() -> None:
    home = state_with(account("far-creditor"))
    step = submitted(creditor="far-creditor")
    [(debtor, answer)] = dispatched(handle(home, CheckCreditor(origin=at(7), submitted=step), at(20)))
    assert (
        debtor == "alice"
        and answer.creditor_checked
        and answer.creditor == CreditorFacts("far-creditor", "USD", "active")
        and answer.origin == at(20)
    )
    missing = dispatched(
        handle(DictState(), CheckCreditor(origin=at(8), submitted=submitted(creditor="nobody")))
    )
    [(_, refused)] = missing
    assert refused.creditor_checked and refused.creditor is None
    state = state_with(account("alice", 5_000))
    effects = handle(state, refused)
    assert published(effects)[-1].reason == "unknown_account"


def test_a_repeat_while_in_flight_says_nothing_and_after_the_outcome_answers_with_it() -> None:
    state = in_flight()
    assert handle(state, submitted(1_000), at(200)).outputs == []
    handle(state, answered("declined", detail="no"))
    [outcome] = published(
        handle(state, msgspec.structs.replace(submitted(1_000), origin=at(300, 1)), at(301))
    )
    assert outcome == published_outcome(state)


def published_outcome(state: DictState) -> Any:
    from models.codec import stored_event

    return stored_event(state.payments[PAYMENT_ID].outcome)


def test_the_same_key_with_another_payload_is_a_conflict_and_changes_nothing() -> None:
    state = in_flight()
    before = state.payments[PAYMENT_ID]
    [rejected] = published(handle(state, msgspec.structs.replace(submitted(999), origin=at(400))))
    assert rejected.event_type == "CommandRejected" and rejected.reason == "idempotency_conflict"
    assert state.payments[PAYMENT_ID] == before


def test_a_step_already_applied_from_its_source_is_skipped() -> None:
    state = state_with(account("alice", 5_000), account("bob"))
    handle(state, submitted())
    assert state.tracking(HOME).has_applied(COMMANDS)
    writes = len(state.written)
    assert handle(state, submitted()).outputs == [] and len(state.written) == writes


# --- the provider's answer ----------------------------------------------------------------------


def test_an_approval_posts_the_capture_settles_the_hold_and_credits_the_creditor_here() -> None:
    state = in_flight()
    effects = handle(state, answered("approved", psp_reference="ref-1"), at(150))
    [(entry, origin)] = effects.entries
    assert origin == at(150) and [(p.account_id, p.amount) for p in entry.postings] == [
        ("alice", -1_000),
        ("bob", 1_000),
    ]
    assert [m.topic for m in entry.outbox] == ["fintech.events.PaymentCaptured"]
    alice, bob = state.accounts["alice"], state.accounts["bob"]
    assert (alice.posted, alice.holds, bob.posted) == (4_000, {}, 1_000)
    assert [e.event_type for e in published(effects)] == ["PaymentAuthorized"]
    record = state.payments[PAYMENT_ID]
    assert record.status == "captured" and record.psp_reference == "ref-1"
    assert [h.step for h in record.history] == ["initiated", "authorized", "captured"]


def test_an_approval_credits_a_creditor_elsewhere_with_a_step() -> None:
    state = state_with(account("alice", 5_000))
    handle(
        state,
        submitted(creditor="far-creditor"),
        facts=Facts(creditors={"far-creditor": CreditorFacts("far-creditor", "USD", "active")}),
    )
    effects = handle(state, answered("approved", psp_reference="ref-1"), at(150))
    [(key, credit)] = dispatched(effects)
    assert key == "far-creditor" and isinstance(credit, ApplyCredit)
    assert (credit.amount, credit.origin) == (1_000, at(150))


@pytest.mark.parametrize(
    ("result", "reason", "void"), [("declined", "psp_declined", False), ("gave_up", "psp_unavailable", True)]
)
def test_a_refusal_releases_the_hold_and_a_give_up_voids(result: str, reason: str, void: bool) -> None:
    state = in_flight()
    effects = handle(state, answered(result, detail="why"))
    assert [e.reason for e in published(effects)] == [reason] and effects.entries == []
    assert state.accounts["alice"].holds == {} and state.accounts["alice"].posted == 5_000
    assert effects.voids == ([PAYMENT_ID] if void else [])


@pytest.mark.parametrize(
    ("first", "late", "void"),
    [
        ("declined", "approved", True),
        ("gave_up", "approved", True),
        ("approved", "approved", False),
        ("approved", "gave_up", False),
        ("declined", "gave_up", False),
    ],
)
def test_the_first_answer_recorded_wins(first: str, late: str, void: bool) -> None:
    state = in_flight()
    handle(state, answered(first, psp_reference="ref-1"))
    before = (state.payments[PAYMENT_ID], state.accounts["alice"])
    effects = handle(state, answered(late, psp_reference="ref-2"))
    assert (state.payments[PAYMENT_ID], state.accounts["alice"]) == before
    assert effects.outputs == [] and effects.entries == [] and effects.voids == ([PAYMENT_ID] if void else [])


def test_an_answer_for_a_payment_not_held_here_changes_nothing_and_is_noted() -> None:
    effects = handle(DictState(), answered("approved", psp_reference="r"))
    assert effects.outputs == [] and [(n.kind, n.level) for n in effects.notes] == [("log", "error")]


def test_answers_are_not_tracked_by_position() -> None:
    """Calls end in any order: an answer from below a position applied is still news."""
    state = in_flight()
    state.trackings[HOME] = Tracking({at().source: (10**9, 0)})
    handle(state, answered("approved", psp_reference="r"))
    assert state.payments[PAYMENT_ID].status == "captured"


# --- accounts ----------------------------------------------------------------------------------


def opening(**changes: Any) -> OpenAccountOp:
    fields = {
        "account_id": "carol",
        "owner_id": "o",
        "currency": "USD",
        "overdraft_limit": 0,
        "kyc_status": "verified",
        "fingerprint": "fp-carol",
        **changes,
    }
    return OpenAccountOp(origin=Origin("fintech.accounts.commands", 0, 1), opening=Opening(**fields))


def test_an_account_opens_once_and_a_repeat_answers_again() -> None:
    state = DictState()
    effects = handle(state, opening())
    assert state.accounts["carol"].posted == 0 and effects.openings == [state.accounts["carol"]]
    [opened] = published(effects)
    repeat = handle(
        state, msgspec.structs.replace(opening(), origin=Origin("fintech.accounts.commands", 0, 2))
    )
    [again] = published(repeat)
    assert again.event_id == opened.event_id and again.account_id == "carol" and repeat.openings == []


def test_an_account_opened_again_with_another_payload_is_a_conflict() -> None:
    state = DictState()
    handle(state, opening())
    again = msgspec.structs.replace(
        opening(fingerprint="other"), origin=Origin("fintech.accounts.commands", 0, 2)
    )
    [rejected] = published(handle(state, again))
    assert rejected.reason == "idempotency_conflict" and state.accounts["carol"].fingerprint == "fp-carol"


def funding(
    amount: int = 500, offset: int = 5, currency: str = "USD", account_id: str = "alice"
) -> FundAccountOp:
    return FundAccountOp(
        origin=Origin("fintech.accounts.commands", 0, offset),
        funding=Funding("fund-1", account_id, amount, currency, f"fp-{amount}"),
    )


def test_a_funding_posts_and_credits() -> None:
    state = state_with(account("alice"))
    effects = handle(state, funding())
    [(entry, _)] = effects.entries
    assert [(p.account_id, p.amount) for p in entry.postings] == [("settlement:USD", -500), ("alice", 500)]
    assert state.accounts["alice"].posted == 500


@pytest.mark.parametrize(
    ("step", "field"), [(funding(account_id="ghost"), "account_id"), (funding(currency="EUR"), "currency")]
)
def test_a_funding_that_cannot_apply_is_rejected_naming_the_field(step: FundAccountOp, field: str) -> None:
    state = state_with(account("alice"))
    [rejected] = published(handle(state, step))
    assert rejected.reason == "invalid_request" and rejected.errors[0].field == field
    assert state.accounts["alice"].posted == 0


def test_a_funding_the_ledger_has_from_another_command_is_answered_from_the_outbox() -> None:
    state = state_with(account("alice", 500))
    event = owner.funded_event(funding())
    facts = Facts(
        fundings={event.transaction_id: StoredEntry("fp-500", Origin("fintech.accounts.commands", 0, 1))}
    )
    effects = handle(state, funding(), facts=facts)
    assert [answer.event_id for answer in effects.republish] == [event.event_id] and effects.entries == []
    assert state.accounts["alice"].posted == 500


def test_a_funding_the_ledger_has_from_this_very_step_is_applied_again() -> None:
    """Written before a crash, its state was not recorded: the step is not done yet."""
    state = state_with(account("alice"))
    event = owner.funded_event(funding())
    facts = Facts(fundings={event.transaction_id: StoredEntry("fp-500", funding().origin)})
    handle(state, funding(), facts=facts)
    assert state.accounts["alice"].posted == 500


def test_a_funding_key_used_with_another_payload_is_a_conflict() -> None:
    state = state_with(account("alice"))
    effects = Effects()  # one batch: the first funding is not in the ledger yet
    for step in (funding(500, offset=5), funding(600, offset=6)):
        owner.handle(state, step, at(), Facts(), Limits(), effects)  # type: ignore[arg-type]
    [rejected] = published(effects)
    assert rejected.reason == "idempotency_conflict" and state.accounts["alice"].posted == 500
    assert len(effects.entries) == 1


def test_a_credit_for_an_unknown_account_raises_to_be_dead_lettered() -> None:
    with pytest.raises(UnknownAccount):
        handle(
            DictState(),
            ApplyCredit(
                origin=Origin("payments.steps", 5, 1), account_id="ghost", transaction_id="t", amount=5
            ),
        )


# --- refunds ------------------------------------------------------------------------------------


def captured() -> DictState:
    state = in_flight()
    handle(state, answered("approved", psp_reference="ref-1"))
    state.homes[PAYMENT_ID] = "alice"
    return state


def refund(amount: int | None = 400, key: str = "refund-1", offset: int = 50) -> RefundSubmitted:
    return RefundSubmitted(
        origin=Origin("payments.steps", 6, offset),
        payment_id=PAYMENT_ID,
        refund_key=key,
        amount=amount,
        fingerprint=f"fp-{key}-{amount}",
    )


def test_a_refund_request_goes_to_the_payments_home_or_fails_as_unknown() -> None:
    request = RefundRequested(
        origin=Origin("fintech.payments.commands", 2, 7),
        payment_id=PAYMENT_ID,
        refund_key="r",
        amount=None,
        fingerprint="f",
    )
    [(home, step)] = dispatched(handle(captured(), request))
    assert home == "alice" and isinstance(step, RefundSubmitted)
    [failed] = published(handle(DictState(), request))
    assert failed.reason == "unknown_payment"


def test_a_refund_is_noted_pending_and_posted_at_the_creditor() -> None:
    state = captured()
    effects = handle(state, refund(400))
    [(key, post)] = dispatched(effects)
    assert key == "bob" and isinstance(post, PostRefund) and post.amount == 400
    record = state.payments[PAYMENT_ID]
    assert record.refund_pending == 400 and record.refundable == 600


@pytest.mark.parametrize(
    ("amount", "reason"), [(1_001, "amount_exceeds_refundable"), (0, "amount_exceeds_refundable")]
)
def test_a_refund_beyond_what_is_refundable_fails(amount: int, reason: str) -> None:
    effects = handle(captured(), refund(amount))
    assert [e.reason for e in published(effects)] == [reason]


def test_a_refund_of_a_payment_not_captured_fails() -> None:
    state = in_flight()
    state.homes[PAYMENT_ID] = "alice"
    assert [e.reason for e in published(handle(state, refund()))] == ["payment_not_captured"]


def test_the_creditor_pays_back_at_once_or_refuses_for_lack_of_funds() -> None:
    post = PostRefund(
        origin=at(60),
        payment_id=PAYMENT_ID,
        refund_id="rid",
        refund_key="refund-1",
        amount=400,
        debtor_account_id="alice",
        creditor_account_id="bob",
        currency="USD",
    )
    rich = state_with(account("bob", 1_000))
    effects = handle(rich, post, at(61))
    [(entry, _)] = effects.entries
    assert [(p.account_id, p.amount) for p in entry.postings] == [("bob", -400), ("alice", 400)]
    assert rich.accounts["bob"].posted == 600
    [(key, posted)] = dispatched(effects)
    assert key == "alice" and isinstance(posted, RefundPosted)
    poor = state_with(account("bob", 100))
    [(_, failed)] = dispatched(handle(poor, post, at(61)))
    assert isinstance(failed, RefundStepFailed) and failed.refusal.reason == "insufficient_funds"


def test_a_posted_refund_credits_the_debtor_and_completes_the_refund_once() -> None:
    state = captured()
    handle(state, refund(1_000))
    event = msgspec.Raw(b'{"event_type":"PaymentRefunded"}')
    posted = RefundPosted(
        origin=Origin("payments.steps", 4, 9),
        payment_id=PAYMENT_ID,
        refund_key="refund-1",
        amount=1_000,
        event=event,
    )
    handle(state, posted)
    record = state.payments[PAYMENT_ID]
    assert record.status == "refunded" and record.refunded_total == 1_000 and record.refund_pending == 0
    assert state.accounts["alice"].posted == 5_000
    handle(state, posted)  # redelivered: already applied from its source
    assert state.accounts["alice"].posted == 5_000


def test_a_failed_refund_gives_back_its_pending_amount_once() -> None:
    state = captured()
    handle(state, refund(400))
    failed = RefundStepFailed(
        origin=Origin("payments.steps", 4, 9),
        payment_id=PAYMENT_ID,
        refund_key="refund-1",
        refusal=Refusal("insufficient_funds", "short"),
    )
    effects = handle(state, failed)
    assert [e.reason for e in published(effects)] == ["insufficient_funds"]
    assert state.payments[PAYMENT_ID].refund_pending == 0
    assert (
        handle(state, msgspec.structs.replace(failed, origin=Origin("payments.steps", 4, 10))).outputs == []
    )


def test_a_refund_repeated_answers_with_its_outcome_and_another_payload_is_a_conflict() -> None:
    state = captured()
    handle(state, refund(2_000, offset=50))
    [failed] = published(handle(state, refund(2_000, offset=51)))
    assert failed.reason == "amount_exceeds_refundable"
    [rejected] = published(handle(state, refund(3, offset=52)))
    assert rejected.reason == "idempotency_conflict"


def test_a_directory_entry_keeps_the_first_home() -> None:
    state = DictState()
    handle(state, RecordHome(origin=COMMANDS, payment_id=PAYMENT_ID, home="alice"))
    handle(
        state, RecordHome(origin=Origin("fintech.payments.commands", 2, 1), payment_id=PAYMENT_ID, home="x")
    )
    assert state.homes[PAYMENT_ID] == "alice"
