"""The payment saga in one place: each step, who owns it, what follows, what compensates.

Choreography has no function that runs the saga (Temporal's samples have one); this
table is that function's shape. `models/owner.py` takes the steps, and a test holds the
table to it: every internal step kind is in the table, and the README's diagram is the
table's `render()`.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import steps


@dataclass(frozen=True)
class SagaStep:
    name: str
    step: type[steps.Step] | None  # the internal step that carries it (None: a public command)
    owner: str  # whose partition decides it
    does: str
    then: str  # on success
    compensation: str  # on failure, or "-"


PAYMENT = (
    SagaStep(
        "intake",
        None,
        "the command's partition (idempotency key)",
        "validate the command, register its key",
        "hand over: PaymentSubmitted + RecordHome",
        "CommandRejected (invalid, key reused); dead letter (unreadable)",
    ),
    SagaStep(
        "directory",
        steps.RecordHome,
        "hash of the payment id",
        "remember the payment's home (for refunds and GET)",
        "-",
        "-",
    ),
    SagaStep(
        "submit",
        steps.PaymentSubmitted,
        "the debtor's home",
        "screen; check the creditor (directory, else CheckCreditor at its home); check the payer; "
        "reserve the funds; record the payment in flight",
        "PaymentInitiated; the provider call starts once recorded",
        "PaymentFailed (nothing held)",
    ),
    SagaStep(
        "check creditor",
        steps.CheckCreditor,
        "the creditor's home",
        "answer whether the creditor exists, and its currency",
        "PaymentSubmitted again, with the verdict",
        "-",
    ),
    SagaStep(
        "provider answer",
        steps.PspAnswered,
        "the debtor's home",
        "approved: post the capture (PostgreSQL: postings + outbox), settle the hold",
        "PaymentAuthorized, PaymentCaptured (after the commit), ApplyCredit",
        "release the hold; PaymentFailed (psp_declined, psp_unavailable); void a give-up",
    ),
    SagaStep(
        "credit",
        steps.ApplyCredit,
        "the creditor's home (in the batch when it is the same)",
        "credit the creditor's posted balance",
        "-",
        "-",
    ),
)

REFUND = (
    SagaStep(
        "refund intake",
        None,
        "the command's partition",
        "validate, register the refund key",
        "RefundRequested",
        "CommandRejected",
    ),
    SagaStep(
        "refund directory",
        steps.RefundRequested,
        "hash of the payment id",
        "find the payment's home",
        "RefundSubmitted",
        "RefundFailed (unknown_payment)",
    ),
    SagaStep(
        "refund submit",
        steps.RefundSubmitted,
        "the payment's home (its debtor's)",
        "check what is refundable; note the refund pending",
        "PostRefund",
        "RefundFailed (payment_not_captured, amount_exceeds_refundable)",
    ),
    SagaStep(
        "refund post",
        steps.PostRefund,
        "the creditor's home (it pays back)",
        "check its funds; post the refund (PostgreSQL); debit it",
        "PaymentRefunded (after the commit), RefundPosted",
        "RefundStepFailed (insufficient_funds)",
    ),
    SagaStep(
        "refund done",
        steps.RefundPosted,
        "the payment's home",
        "credit the debtor; note the refund",
        "-",
        "-",
    ),
    SagaStep(
        "refund failed",
        steps.RefundStepFailed,
        "the payment's home",
        "give the pending amount back",
        "RefundFailed",
        "-",
    ),
)

ACCOUNTS = (
    SagaStep(
        "open",
        steps.OpenAccountOp,
        "the account's home",
        "open the account (PostgreSQL row first)",
        "AccountOpened",
        "CommandRejected (conflict)",
    ),
    SagaStep(
        "fund",
        steps.FundAccountOp,
        "the account's home",
        "post the funding (PostgreSQL); credit",
        "AccountFunded (after the commit)",
        "CommandRejected (unknown account, currency, key reused)",
    ),
)

SAGAS = {"payment": PAYMENT, "refund": REFUND, "accounts": ACCOUNTS}


def render() -> str:
    """The tables as Markdown, as the README shows them."""
    lines = []
    for name, saga in SAGAS.items():
        lines += [
            f"**{name}**",
            "",
            "| step | message | owner | does | then | on failure |",
            "|---|---|---|---|---|---|",
        ]
        for each in saga:
            message = each.step.__name__ if each.step is not None else "(command)"
            lines.append(
                f"| {each.name} | `{message}` | {each.owner} | {each.does} | {each.then} | "
                f"{each.compensation} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
