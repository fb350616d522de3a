"""Jepsen-style accounting, pure: every command sent is an `Operation` with the answer it
must get; `tally` counts each one once from the answers seen and the ledger's postings."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from models.payment import payment_id_for

OUTCOMES = frozenset({"PaymentCaptured", "PaymentFailed"})
REFUSALS = frozenset({"CommandRejected", "DeadLetter"})


@dataclass(frozen=True, slots=True)
class Answer:
    kind: str  # an event type, or "DeadLetter"
    event_id: str
    seen_at: float  # time.monotonic() when the driver consumed it
    reason: str | None = None
    amount: int | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One command sent, and the answer it must get."""

    kind: str  # "open" | "fund" | "payment" | "poison"
    key: str  # account_id for "open", otherwise the idempotency key (and the Kafka key)
    expected: str  # "opened" | "funded" | "refused" | "captured" | a PaymentFailed reason
    amount: int | None = None  # a payment's amount, of the first payload sent under its key
    conflicts: int = 0  # later payloads under the same key that differ from the first

    @property
    def payment_id(self) -> str:
        return payment_id_for(self.key)


@dataclass
class Answers:
    """Answers seen so far: payment facts by payment id, everything else by key."""

    by_payment: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    by_key: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))

    def outcomes(self, payment_id: str) -> list[Answer]:
        return [a for a in self.by_payment.get(payment_id, ()) if a.kind in OUTCOMES]

    def of(self, key: str, *kinds: str) -> list[Answer]:
        return [a for a in self.by_key.get(key, ()) if a.kind in kinds]


@dataclass(frozen=True, slots=True)
class Leg:
    """One posting in PostgreSQL that names a payment."""

    kind: str  # the ledger transaction's kind: capture, refund, ...
    transaction_id: str
    account_id: str
    amount: int


@dataclass
class Tally:
    attempted: int = 0
    ok: int = 0  # answered as planned
    captured: int = 0
    failed: int = 0  # ended without moving money: PaymentFailed, CommandRejected, dead letter
    unexpected: int = 0  # a definite answer, but not the planned one
    unknown: int = 0  # no outcome published, but PostgreSQL shows the money moved
    lost: int = 0  # no answer at all
    duplicated: int = 0  # an effect applied, or an outcome published, more than once
    violations: list[str] = field(default_factory=list)  # a guarantee or an invariant broken
    details: list[str] = field(default_factory=list)  # which commands were unexpected, unknown, lost
    last_answer_at: float | None = None

    def note(self, count: str, detail: str) -> None:
        setattr(self, count, getattr(self, count) + 1)
        self.details.append(f"{count}: {detail}")


def unanswered(operations: Sequence[Operation], answers: Answers) -> int:
    """Operations still waiting for (part of) their answer."""
    return sum(1 for operation in operations if not _answered(operation, answers))


def _answered(operation: Operation, answers: Answers) -> bool:
    match operation.kind:
        case "open":
            return bool(answers.of(operation.key, "AccountOpened", "CommandRejected"))
        case "fund":
            return bool(answers.of(operation.key, "AccountFunded", "CommandRejected"))
        case "poison":
            return bool(answers.of(operation.key, *REFUSALS))
    conflicts = answers.of(operation.key, "CommandRejected")
    return bool(answers.outcomes(operation.payment_id)) and len(conflicts) >= operation.conflicts


def tally(operations: Sequence[Operation], answers: Answers, legs: dict[str, list[Leg]]) -> Tally:
    """Count every operation once; `legs` are the postings naming each payment id."""
    result = Tally(attempted=len(operations))
    for operation in operations:
        seen = answers.by_key.get(operation.key, []) + answers.by_payment.get(operation.payment_id, [])
        if seen:
            latest = max(a.seen_at for a in seen)
            result.last_answer_at = max(result.last_answer_at or latest, latest)
        match operation.kind:
            case "open" | "fund":
                _count_account_operation(result, operation, answers)
            case "poison":
                _count_poison(result, operation, answers, legs.get(operation.payment_id, []))
            case _:
                _count_payment(result, operation, answers, legs.get(operation.payment_id, []))
    return result


def _count_account_operation(result: Tally, operation: Operation, answers: Answers) -> None:
    wanted = "AccountOpened" if operation.kind == "open" else "AccountFunded"
    good, refused = answers.of(operation.key, wanted), answers.of(operation.key, "CommandRejected")
    if not good and not refused:
        result.note("lost", f"{operation.kind} {operation.key}")
    elif good and not refused:
        result.ok += 1
    else:
        result.note("unexpected", f"{operation.kind} {operation.key}: {len(good)} {wanted}, "
                                  f"{len(refused)} CommandRejected ({refused[0].reason if refused else ''})")


def _count_poison(result: Tally, operation: Operation, answers: Answers, legs: list[Leg]) -> None:
    facts = answers.by_payment.get(operation.payment_id, [])
    if facts or legs:
        result.violations.append(f"poison {operation.key} became a payment "
                                 f"({sorted({a.kind for a in facts})}, {len(legs)} postings)")
    if not answers.of(operation.key, *REFUSALS):
        result.note("lost", f"poison {operation.key}: neither rejected nor dead-lettered")
    elif facts or legs:
        result.note("unexpected", f"poison {operation.key}: refused, and a payment as well")
    else:
        result.failed += 1
        result.ok += 1


def _count_payment(result: Tally, operation: Operation, answers: Answers, legs: list[Leg]) -> None:
    captures = [leg for leg in legs if leg.kind == "capture"]
    if len({leg.transaction_id for leg in captures}) > 1 or len(captures) > 2:
        result.note("duplicated", f"payment {operation.key}: {len(captures)} capture postings")
    outcomes = answers.outcomes(operation.payment_id)
    if not outcomes:
        if captures:  # the money moved; nobody downstream was told
            result.note("unknown", f"payment {operation.key}: captured in the ledger, no outcome published")
        else:
            result.note("lost", f"payment {operation.key}: no outcome")
        return
    if len({a.kind for a in outcomes}) > 1:
        result.violations.append(f"payment {operation.key} has {len(outcomes)} outcomes: "
                                 f"{', '.join(sorted(a.kind for a in outcomes))}")
        return
    if len(outcomes) > 1:  # one kind, several event ids: a second publication, not a redelivery
        result.note("duplicated", f"payment {operation.key}: {len(outcomes)} distinct {outcomes[0].kind}")
    outcome = outcomes[0]
    _check_money(result, operation, outcome, captures)
    rejections = answers.of(operation.key, "CommandRejected")
    missing = operation.conflicts - len(rejections)
    for _ in range(max(0, missing)):
        result.note("lost", f"payment {operation.key}: a conflicting payload got no CommandRejected")
    got = "captured" if outcome.kind == "PaymentCaptured" else outcome.reason
    amount_as_sent = operation.amount is None or outcome.amount == operation.amount
    conflicts_as_planned = (missing <= 0 and len(rejections) == operation.conflicts
                            and all(r.reason == "idempotency_conflict" for r in rejections))
    if got == operation.expected and amount_as_sent and conflicts_as_planned:
        result.ok += 1
    elif missing <= 0:
        result.note("unexpected", f"payment {operation.key}: expected {operation.expected} of "
                                  f"{operation.amount} and {operation.conflicts} conflicts, got {got} of "
                                  f"{outcome.amount} and {len(rejections)} rejections")


def _check_money(result: Tally, operation: Operation, outcome: Answer, captures: list[Leg]) -> None:
    """The outcome published agrees with PostgreSQL's record of the payment."""
    moved = sum(leg.amount for leg in captures if leg.amount > 0)
    if outcome.kind == "PaymentCaptured":
        result.captured += 1
        if moved != outcome.amount:
            result.violations.append(f"payment {operation.key} captured {outcome.amount}, "
                                     f"the ledger moved {moved}")
    else:
        result.failed += 1
        if captures:
            result.violations.append(f"payment {operation.key} failed ({outcome.reason}) "
                                     f"but the ledger moved {moved}")
