"""The owner: every decision taken at an account's home, as pure functions over its state.

A partition of the steps topic is the home of the accounts whose ids hash to it, of the
payments those accounts pay (a payment lives with its debtor, so that its record, its
provider call and the debtor's hold change together) and of the directory entries of
the payment ids that hash to it (where each payment lives). Its state is one table
partition, written atomically per batch (tables/state.py), so a batch's changes are
recorded whole or not at all.

`handle` takes one step. It reads and changes the state through `State` (the table with
this batch's changes on top), and says what the batch must do besides, in `Effects`:
journal entries to commit, events and steps to send once they are committed, provider
calls to start and voids to ask once the state is recorded. It never does I/O.

Repeats. A step from an ordered source (the intake's command partitions, the other
partitions of the steps topic) is applied at most once per partition: `Tracking` keeps,
per source, the highest origin applied, written with the state it changed. The
provider's answers come in any order, and are recognised by the payment's state instead.
A step's outputs carry the position where it was read (`at`) as their origin, so
handling it again after a crash produces the same steps, which their receivers know.

Determinism. Handling a batch again must decide the same. The only facts from outside
are `Facts`, and they are used so that a second look cannot contradict a first: an
account known to exist still exists and keeps its currency, while an account not found
is asked of its own home (CheckCreditor) instead of being refused on hearsay; a
journal entry already in the ledger is told apart from the step's own earlier write by
its stored origin.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol
from uuid import UUID

import msgspec

from models import account as accounts
from models import payment as payments
from models.account import Account
from models.codec import dumps, stored_event
from models.events import (
    AccountFunded,
    AccountOpened,
    CommandRejected,
    Event,
    FailureReason,
    FieldError,
    RefundFailureReason,
    RejectionReason,
    event_id_for,
    rejection_id_for,
)
from models.ledger import EntryKind, JournalEntry, funding_entry, outbox, transaction_id_for, transfer
from models.outputs import Dispatch, Output, Publish
from models.payment import Payment, RefundRecord
from models.steps import (
    ApplyCredit,
    CheckCreditor,
    CreditorFacts,
    FundAccountOp,
    OpenAccountOp,
    Origin,
    OwnerStep,
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


class Tracking(msgspec.Struct, frozen=True):
    """A partition's tracking record: per ordered source ("topic#partition"), the highest
    origin position it applied. Bounded by the number of sources.

    So every step a source sends to one partition has a position of its own, higher than
    the one before: a step's outputs carry its own position, and where one input gives two
    steps that may meet on one partition (the intake's hand-over and directory entry of a
    payment), the second takes the next index."""

    applied: dict[str, tuple[int, int]] = {}

    def has_applied(self, origin: Origin) -> bool:
        return origin.position <= self.applied.get(origin.source, (-1, -1))

    def noting(self, origin: Origin) -> Tracking:
        return Tracking({**self.applied, origin.source: origin.position})


class State(Protocol):
    """The owner's state, as a batch in progress sees it (its own changes first)."""

    def account(self, account_id: str) -> Account | None: ...
    def payment(self, payment_id: str, home: int) -> Payment | None:
        """The payment's record, at its home partition (a step about a payment is taken
        at its home: the partition it arrived at)."""
    def home(self, payment_id: str) -> str | None: ...
    def tracking(self, partition: int) -> Tracking: ...
    def set_account(self, partition: int, account: Account) -> None: ...
    def set_payment(self, partition: int, payment: Payment) -> None: ...
    def set_home(self, partition: int, payment_id: str, home: str) -> None: ...
    def set_tracking(self, partition: int, tracking: Tracking) -> None: ...
    def partition_of(self, key: str) -> int: ...


class StoredEntry(msgspec.Struct, frozen=True):
    """A journal entry as the ledger holds it: who wrote it first, with what payload."""

    fingerprint: str
    origin: Origin


@dataclass(frozen=True)
class Facts:
    """What the shell looked up before the batch (see the module docstring, Determinism)."""

    creditors: Mapping[str, CreditorFacts] = field(default_factory=dict)  # accounts that exist
    fundings: Mapping[UUID, StoredEntry] = field(default_factory=dict)  # funding entries in the ledger


@dataclass(frozen=True)
class Note:
    """What happened, for the shell's metrics and logs: never a decision input."""

    kind: str  # outcome | compensation | refund | log
    what: str  # outcome: captured|failed; compensation: the reason; refund: refunded|failed; log: the line
    payment_id: str | None = None
    reason: str | None = None
    detail: str | None = None
    seconds: float | None = None  # outcome: from the payment's first step to its outcome
    idempotency_key: str | None = None
    level: str = "info"  # log: debug | info | warning | error


@dataclass(frozen=True)
class Mark:
    """How long each list of Effects was: what a step added can be taken back."""

    entries: int
    openings: int
    outputs: int
    republish: int
    calls: int
    voids: int
    notes: int


@dataclass
class Effects:
    """A batch's effects besides its state, in the order the shell carries them out."""

    entries: list[tuple[JournalEntry, Origin]] = field(default_factory=list)  # commit first
    openings: list[Account] = field(default_factory=list)  # accounts rows, in the same transaction
    outputs: list[Output] = field(default_factory=list)  # sent once committed
    # Answers to publish again: the outbox's copy, or this one rebuilt if the row was pruned.
    republish: list[Event] = field(default_factory=list)
    calls: list[Payment] = field(default_factory=list)  # provider calls to run once recorded
    voids: list[str] = field(default_factory=list)  # payments to void at the provider
    notes: list[Note] = field(default_factory=list)
    _posted: dict[UUID, StoredEntry] = field(default_factory=dict)  # entries of this batch

    def mark(self) -> Mark:
        return Mark(
            len(self.entries),
            len(self.openings),
            len(self.outputs),
            len(self.republish),
            len(self.calls),
            len(self.voids),
            len(self.notes),
        )

    def rollback(self, mark: Mark) -> None:
        """Take back what was added since `mark` (a step that failed half-way)."""
        for entry, _ in self.entries[mark.entries :]:
            self._posted.pop(entry.transaction_id, None)
        del self.entries[mark.entries :], self.openings[mark.openings :], self.outputs[mark.outputs :]
        del self.republish[mark.republish :], self.calls[mark.calls :], self.voids[mark.voids :]
        del self.notes[mark.notes :]

    def publish(self, event: Event) -> None:
        self.outputs.append(Publish(event))

    def dispatch(self, key: str, step: OwnerStep) -> None:
        self.outputs.append(Dispatch(key, step))

    def post(self, entry: JournalEntry, origin: Origin) -> None:
        self.entries.append((entry, origin))
        self._posted[entry.transaction_id] = StoredEntry(entry.fingerprint, origin)


@dataclass(frozen=True)
class Limits:
    risk_max_amount: int = 100_000_000


class UnknownAccount(LookupError):
    """A committed movement for an account its home does not know: state is missing."""


def handle(state: State, step: OwnerStep, at: Origin, facts: Facts, limits: Limits, effects: Effects) -> None:
    """Take one step read at `at` (its position on the steps topic)."""
    partition = at.partition
    if isinstance(step, PspAnswered):
        on_answer(state, step, at, effects)
        return
    tracking = state.tracking(partition)
    if tracking.has_applied(step.origin):
        return  # applied before: its outputs went out before the state that records it
    match step:
        case OpenAccountOp():
            on_open(state, step, at, effects)
        case FundAccountOp():
            on_fund(state, step, at, facts, effects)
        case PaymentSubmitted():
            on_submitted(state, step, at, facts, limits, effects)
        case CheckCreditor():
            on_check_creditor(state, step, at, effects)
        case RecordHome():
            if state.home(step.payment_id) is None:
                state.set_home(partition, step.payment_id, step.home)
        case RefundRequested():
            on_refund_requested(state, step, at, effects)
        case RefundSubmitted():
            on_refund_submitted(state, step, at, effects)
        case ApplyCredit():
            credited = state.account(step.account_id)
            if credited is None:
                raise UnknownAccount(
                    f"credit of {step.amount} ({step.transaction_id}) for unknown account {step.account_id}"
                )
            state.set_account(partition, accounts.credit(credited, step.amount))
        case PostRefund():
            on_post_refund(state, step, at, effects)
        case RefundPosted():
            on_refund_posted(state, step, at, effects)
        case RefundStepFailed():
            on_refund_failed(state, step, at, effects)
    state.set_tracking(partition, state.tracking(partition).noting(step.origin))


# --- accounts ---------------------------------------------------------------------------------


def opened_event(account: Account) -> AccountOpened:
    return AccountOpened(
        event_id=event_id_for(account.account_id, "AccountOpened"),
        account_id=account.account_id,
        owner_id=account.owner_id,
        currency=account.currency,
        overdraft_limit=account.overdraft_limit,
        kyc_status=account.kyc_status,
    )


def rejected(
    command_type: str,
    reason: RejectionReason,
    detail: str,
    field_name: str,
    origin: Origin,
    *,
    account_id: str | None = None,
    idempotency_key: str | None = None,
) -> CommandRejected:
    subject = idempotency_key or account_id or ""
    return CommandRejected(
        event_id=rejection_id_for(subject, origin.place),
        command_type=command_type,
        idempotency_key=idempotency_key,
        account_id=account_id,
        reason=reason,
        detail=detail,
        errors=(FieldError(field=field_name, message=detail),),
    )


def on_open(state: State, step: OpenAccountOp, at: Origin, effects: Effects) -> None:
    opening = step.opening
    current = state.account(opening.account_id)
    if current is None:
        opened = accounts.open_account(opening)
        state.set_account(at.partition, opened)
        effects.openings.append(opened)  # the ledger knows it before anyone can pay into it
        effects.publish(opened_event(opened))
    elif current.fingerprint == opening.fingerprint:
        effects.publish(opened_event(current))  # a repeat: the same answer again
    else:
        detail = f"account {opening.account_id} was opened before with a different payload"
        effects.publish(
            rejected(
                "OpenAccount",
                RejectionReason.IDEMPOTENCY_CONFLICT,
                detail,
                "account_id",
                step.origin,
                account_id=opening.account_id,
            )
        )


def funded_event(step: FundAccountOp) -> AccountFunded:
    funding = step.funding
    return AccountFunded(
        event_id=event_id_for(funding.idempotency_key, "AccountFunded"),
        account_id=funding.account_id,
        idempotency_key=funding.idempotency_key,
        amount=funding.amount,
        currency=funding.currency,
        transaction_id=transaction_id_for(EntryKind.FUNDING, funding.idempotency_key),
    )


def on_fund(state: State, step: FundAccountOp, at: Origin, facts: Facts, effects: Effects) -> None:
    funding = step.funding
    account = state.account(funding.account_id)

    def refuse(reason: RejectionReason, detail: str, field_name: str) -> None:
        effects.publish(
            rejected(
                "FundAccount",
                reason,
                detail,
                field_name,
                step.origin,
                account_id=funding.account_id,
                idempotency_key=funding.idempotency_key,
            )
        )

    if account is None:
        refuse(RejectionReason.INVALID_REQUEST, f"account {funding.account_id} does not exist", "account_id")
        return
    if account.currency != funding.currency:
        refuse(
            RejectionReason.INVALID_REQUEST,
            f"account {funding.account_id} holds {account.currency}, not {funding.currency}",
            "currency",
        )
        return
    event = funded_event(step)
    stored = effects._posted.get(event.transaction_id) or facts.fundings.get(event.transaction_id)
    if stored is not None and stored.fingerprint != funding.fingerprint:
        refuse(
            RejectionReason.IDEMPOTENCY_CONFLICT,
            f"idempotency key {funding.idempotency_key!r} was used before with a different payload",
            "idempotency_key",
        )
        return
    if stored is not None and stored.origin != step.origin:
        effects.republish.append(event)  # the same command again: its first answer
        return
    # New, or this very step written before a crash (the ledger keeps the first write).
    effects.post(funding_entry(funding, event), step.origin)
    state.set_account(at.partition, accounts.credit(account, funding.amount))


# --- payments ---------------------------------------------------------------------------------


def age_seconds(payment: Payment) -> float:
    return (payment.history[-1].at - payment.history[0].at).total_seconds()


def fail(
    state: State,
    partition: int,
    payment: Payment,
    refusal: Refusal,
    effects: Effects,
    psp_reference: str | None = None,
) -> Payment:
    """The payment's one outcome, when it ends without moving money."""
    if payment.decided:
        return payment
    event = payments.failed_event(payment, refusal, psp_reference)
    failed = payment.noted(
        "failed",
        f"{refusal.reason}: {refusal.detail}",
        status="failed",
        reason=refusal.reason,
        detail=refusal.detail,
        outcome=msgspec.Raw(dumps(event)),
        psp_reference=psp_reference,
    )
    state.set_payment(partition, failed)
    effects.publish(event)
    effects.notes.append(
        Note(
            "outcome",
            "failed",
            payment.payment_id,
            refusal.reason,
            refusal.detail,
            age_seconds(failed),
            payment.request.idempotency_key,
        )
    )
    return failed


def creditor_facts(
    state: State, step: PaymentSubmitted, partition: int, facts: Facts
) -> tuple[bool, CreditorFacts | None]:
    """(known, facts): whether the creditor's existence is settled here, and its facts."""
    creditor_id = step.request.creditor_account_id
    if step.creditor_checked:
        return True, step.creditor
    if state.partition_of(creditor_id) == partition:  # its home is this partition: authoritative
        creditor = state.account(creditor_id)
        return True, creditor.facts if creditor is not None else None
    found = facts.creditors.get(creditor_id)
    return found is not None, found


def on_submitted(
    state: State, step: PaymentSubmitted, at: Origin, facts: Facts, limits: Limits, effects: Effects
) -> None:
    request, partition = step.request, at.partition
    record = state.payment(step.payment_id, at.partition)
    if record is not None:
        if record.fingerprint != step.fingerprint:
            detail = f"idempotency key {request.idempotency_key!r} was used before with a different payload"
            effects.publish(
                rejected(
                    "RequestPayment",
                    RejectionReason.IDEMPOTENCY_CONFLICT,
                    detail,
                    "idempotency_key",
                    step.origin,
                    idempotency_key=request.idempotency_key,
                )
            )
        elif record.decided:  # the same command again: its outcome, once known
            effects.publish(stored_event(record.outcome))
        return
    fresh = Payment(payment_id=step.payment_id, fingerprint=step.fingerprint, request=request)
    screened = payments.screen(request, limits.risk_max_amount)
    if screened is not None:
        fail(state, partition, fresh.noted("submitted"), screened, effects)
        return
    known, creditor = creditor_facts(state, step, partition, facts)
    if not known:  # asked of its home, which answers with this step and its verdict
        effects.dispatch(request.creditor_account_id, CheckCreditor(origin=at, submitted=step))
        return
    initiated = fresh.noted("initiated")
    effects.publish(payments.initiated_event(initiated))
    refusal = accounts.check_creditor(creditor, request.creditor_account_id, request.currency)
    debtor = state.account(request.debtor_account_id)
    if refusal is None:
        refusal = accounts.check_payer(debtor, request.debtor_account_id, request.currency)
    if refusal is not None:
        fail(state, partition, initiated, refusal, effects)
        return
    assert debtor is not None
    held = accounts.reserve(debtor, step.payment_id, request.amount)
    if isinstance(held, Refusal):
        fail(state, partition, initiated, held, effects)
        return
    calling = msgspec.structs.replace(initiated, psp="in_flight", requested_at=at)
    state.set_account(partition, held)
    state.set_payment(partition, calling)
    effects.calls.append(calling)


def on_check_creditor(state: State, step: CheckCreditor, at: Origin, effects: Effects) -> None:
    submitted = step.submitted
    creditor = state.account(submitted.request.creditor_account_id)
    answer = msgspec.structs.replace(
        submitted, origin=at, creditor_checked=True, creditor=creditor.facts if creditor is not None else None
    )
    effects.dispatch(submitted.request.debtor_account_id, answer)


def on_answer(state: State, step: PspAnswered, at: Origin, effects: Effects) -> None:
    """The first answer recorded wins. A later one (a second call after a rebalance, or a
    restarted call) changes nothing; an approval after the payment failed, whose funds are
    already released, must not move money: it is voided at the provider. A give-up is
    voided once it is the recorded outcome, never after another call's approval."""
    partition = at.partition
    record = state.payment(step.payment_id, at.partition)
    if record is None:
        effects.notes.append(
            Note(
                "log", "psp answer for a payment this partition does not hold", step.payment_id, level="error"
            )
        )
        return
    if record.psp != "in_flight":
        if step.result == "approved" and record.psp != "approved":
            effects.voids.append(step.payment_id)
            effects.notes.append(
                Note(
                    "log",
                    f"psp approved after the payment ended {record.psp}: voiding the capture at the provider",
                    step.payment_id,
                    level="warning",
                )
            )
        else:
            effects.notes.append(
                Note(
                    "log",
                    f"psp answer {step.result} ignored: the payment is already {record.psp}",
                    step.payment_id,
                )
            )
        return
    request = record.request
    debtor = state.account(request.debtor_account_id)
    if debtor is None:
        raise UnknownAccount(f"payment {step.payment_id} of unknown debtor {request.debtor_account_id}")
    if step.result != "approved":
        state.set_account(partition, accounts.release(debtor, step.payment_id))
        reason = FailureReason.PSP_DECLINED if step.result == "declined" else FailureReason.PSP_UNAVAILABLE
        decided = msgspec.structs.replace(record, psp=step.result)
        fail(state, partition, decided, Refusal(reason.value, step.detail or step.result), effects)
        effects.notes.append(Note("compensation", reason.value, step.payment_id))
        if step.result == "gave_up":
            effects.voids.append(step.payment_id)  # whatever its timed-out attempts captured
            effects.notes.append(
                Note(
                    "log",
                    "psp gave up: voiding at the provider whatever its attempts captured",
                    step.payment_id,
                )
            )
        return
    capture(state, record, step.psp_reference or "", at, effects)


def capture(state: State, record: Payment, psp_reference: str, at: Origin, effects: Effects) -> None:
    """The approval: the capture is posted, the hold settled, the creditor credited."""
    partition, request = at.partition, record.request
    authorized = record.noted("authorized")
    captured = payments.captured_event(authorized, psp_reference)
    effects.post(
        JournalEntry(
            transaction_id=captured.transaction_id,
            kind=EntryKind.CAPTURE,
            idempotency_key=request.idempotency_key,
            fingerprint=record.payment_id,
            payment_id=record.payment_id,
            postings=transfer(
                request.debtor_account_id, request.creditor_account_id, request.amount, request.currency
            ),
            outbox=(outbox(captured),),
        ),
        at,
    )
    debtor = state.account(request.debtor_account_id)
    assert debtor is not None
    state.set_account(partition, accounts.settle(debtor, record.payment_id, request.amount))
    credit_leg(
        state,
        partition,
        request.creditor_account_id,
        str(captured.transaction_id),
        request.amount,
        at,
        effects,
    )
    effects.publish(payments.authorized_event(authorized, psp_reference))
    done = authorized.noted(
        "captured",
        status="captured",
        psp="approved",
        psp_reference=psp_reference,
        outcome=msgspec.Raw(dumps(captured)),
    )
    state.set_payment(partition, done)
    effects.notes.append(
        Note(
            "outcome",
            "captured",
            record.payment_id,
            seconds=age_seconds(done),
            idempotency_key=request.idempotency_key,
        )
    )


def credit_leg(
    state: State,
    partition: int,
    account_id: str,
    transaction_id: str,
    amount: int,
    at: Origin,
    effects: Effects,
) -> None:
    """Credit the account here when its home is this partition, else send it there."""
    if state.partition_of(account_id) == partition:
        creditor = state.account(account_id)
        if creditor is None:
            raise UnknownAccount(f"credit of {amount} ({transaction_id}) for unknown account {account_id}")
        state.set_account(partition, accounts.credit(creditor, amount))
        return
    effects.dispatch(
        account_id,
        ApplyCredit(origin=at, account_id=account_id, transaction_id=transaction_id, amount=amount),
    )


# --- refunds ----------------------------------------------------------------------------------


def on_refund_requested(state: State, step: RefundRequested, at: Origin, effects: Effects) -> None:
    home = state.home(step.payment_id)
    if home is None:
        refusal = payments.refund_refusal(None, step.payment_id, step.amount)
        assert refusal is not None
        effects.publish(payments.refund_failed_event(step.payment_id, step.refund_key, step.amount, refusal,
                                                     None))
        effects.notes.append(Note("refund", "failed", step.payment_id, refusal.reason))
        return
    effects.dispatch(
        home,
        RefundSubmitted(
            origin=at,
            payment_id=step.payment_id,
            refund_key=step.refund_key,
            amount=step.amount,
            fingerprint=step.fingerprint,
        ),
    )


def on_refund_submitted(state: State, step: RefundSubmitted, at: Origin, effects: Effects) -> None:
    record = state.payment(step.payment_id, at.partition)
    known = record.refunds.get(step.refund_key) if record is not None else None
    if known is not None:
        if known.fingerprint != step.fingerprint:
            detail = f"idempotency key {step.refund_key!r} was used before with a different payload"
            effects.publish(
                rejected(
                    "RefundPayment",
                    RejectionReason.IDEMPOTENCY_CONFLICT,
                    detail,
                    "idempotency_key",
                    step.origin,
                    idempotency_key=step.refund_key,
                )
            )
        elif payments.has_event(known.outcome):
            effects.publish(stored_event(known.outcome))
        return
    refund_id = payments.refund_id_for(step.payment_id, step.refund_key)
    refusal = payments.refund_refusal(record, step.payment_id, step.amount)
    if refusal is not None:
        event = payments.refund_failed_event(step.payment_id, step.refund_key, step.amount, refusal, record)
        effects.publish(event)
        effects.notes.append(Note("refund", "failed", step.payment_id, refusal.reason))
        if record is not None:
            failed = RefundRecord(
                refund_id=refund_id,
                fingerprint=step.fingerprint,
                amount=step.amount or 0,
                status="failed",
                outcome=msgspec.Raw(dumps(event)),
            )
            state.set_payment(at.partition, payments.with_refund(record, step.refund_key, failed))
        return
    assert record is not None
    amount = step.amount if step.amount is not None else record.refundable
    refund = RefundRecord(refund_id=refund_id, fingerprint=step.fingerprint, amount=amount)
    requested = payments.with_refund(record, step.refund_key, refund).noted(
        "refund_requested", f"{amount}", refund_pending=record.refund_pending + amount
    )
    state.set_payment(at.partition, requested)
    request = record.request
    effects.dispatch(
        request.creditor_account_id,
        PostRefund(
            origin=at,
            payment_id=record.payment_id,
            refund_id=refund_id,
            refund_key=step.refund_key,
            amount=amount,
            debtor_account_id=request.debtor_account_id,
            creditor_account_id=request.creditor_account_id,
            currency=request.currency,
        ),
    )


def on_post_refund(state: State, step: PostRefund, at: Origin, effects: Effects) -> None:
    """At the refund's payer (the payment's creditor): its funds decide, and the refund is
    posted at once, so no hold is needed. The debtor is credited at the payment's home."""
    payer = state.account(step.creditor_account_id)
    if payer is None:
        raise UnknownAccount(f"refund {step.refund_id} of unknown account {step.creditor_account_id}")
    short = accounts.short_of(payer, step.amount)
    if short is not None:
        refusal = Refusal(RefundFailureReason.INSUFFICIENT_FUNDS.value, short.detail)
        effects.dispatch(
            step.debtor_account_id,
            RefundStepFailed(
                origin=at, payment_id=step.payment_id, refund_key=step.refund_key, refusal=refusal
            ),
        )
        return
    event = payments.refunded_event(
        step.payment_id, step.refund_id, step.refund_key, step.amount, step.currency,
        (step.debtor_account_id, step.creditor_account_id),
    )
    effects.post(
        JournalEntry(
            transaction_id=event.transaction_id,
            kind=EntryKind.REFUND,
            idempotency_key=step.refund_key,
            fingerprint=f"{step.refund_id}/{step.amount}",
            payment_id=step.payment_id,
            postings=transfer(step.creditor_account_id, step.debtor_account_id, step.amount, step.currency),
            outbox=(outbox(event),),
        ),
        at,
    )
    state.set_account(at.partition, accounts.credit(payer, -step.amount))
    effects.dispatch(
        step.debtor_account_id,
        RefundPosted(
            origin=at,
            payment_id=step.payment_id,
            refund_key=step.refund_key,
            amount=step.amount,
            event=msgspec.Raw(dumps(event)),
        ),
    )


def on_refund_posted(state: State, step: RefundPosted, at: Origin, effects: Effects) -> None:
    record = state.payment(step.payment_id, at.partition)
    debtor = state.account(record.request.debtor_account_id) if record is not None else None
    if record is None or debtor is None:
        raise UnknownAccount(f"refund of payment {step.payment_id}, which this partition does not hold")
    state.set_account(at.partition, accounts.credit(debtor, step.amount))  # the money moved: always
    refund = record.refunds.get(step.refund_key)
    if refund is None or refund.status != "pending":
        return
    effects.notes.append(Note("refund", "refunded", step.payment_id))
    total = record.refunded_total + refund.amount
    status = "refunded" if total >= record.request.amount else "partially_refunded"
    done = msgspec.structs.replace(refund, status="refunded", outcome=step.event)
    state.set_payment(
        at.partition,
        payments.with_refund(record, step.refund_key, done).noted(
            "refunded",
            f"{refund.amount}",
            status=status,
            refunded_total=total,
            refund_pending=record.refund_pending - refund.amount,
        ),
    )


def on_refund_failed(state: State, step: RefundStepFailed, at: Origin, effects: Effects) -> None:
    record = state.payment(step.payment_id, at.partition)
    refund = record.refunds.get(step.refund_key) if record is not None else None
    if record is None or refund is None or refund.status != "pending":
        return
    event = payments.refund_failed_event(step.payment_id, step.refund_key, refund.amount, step.refusal,
                                         record)
    done = msgspec.structs.replace(refund, status="failed", outcome=msgspec.Raw(dumps(event)))
    state.set_payment(
        at.partition,
        payments.with_refund(record, step.refund_key, done).noted(
            "refund_failed", step.refusal.detail, refund_pending=record.refund_pending - refund.amount
        ),
    )
    effects.publish(event)
    effects.notes.append(Note("refund", "failed", step.payment_id, step.refusal.reason))
