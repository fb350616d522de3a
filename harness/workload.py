"""A seeded, realistic mix of accounts and payments: for the demo, tests and benchmarks.

Each planned payment carries the outcome it should reach, so a run can be checked,
not just watched.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

FUNDING_PER_ACCOUNT = 1_000_000  # minor units


@dataclass(frozen=True)
class PlannedAccount:
    account_id: str
    currency: str = "USD"
    kyc_status: str = "verified"
    overdraft_limit: int = 0
    funding: int = FUNDING_PER_ACCOUNT


@dataclass(frozen=True)
class PlannedPayment:
    key: str
    debtor: str
    creditor: str
    amount: int
    expected: str  # "captured" or a PaymentFailed reason
    currency: str = "USD"
    simulation: str | None = None

    def command(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": "RequestPayment", "idempotency_key": self.key, "debtor_account_id": self.debtor,
            "creditor_account_id": self.creditor, "amount": self.amount, "currency": self.currency,
            "description": f"demo payment {self.key}",
        }
        if self.simulation:
            body["metadata"] = {"psp_simulation": self.simulation}
        return body


@dataclass
class Workload:
    accounts: list[PlannedAccount]
    payments: list[PlannedPayment] = field(default_factory=list)


# (share of payments, expected outcome, how to build one); shares sum to 1.
MIX: list[tuple[float, str]] = [
    (0.70, "captured"), (0.05, "captured:latency"), (0.04, "captured:retried"),
    (0.04, "psp_declined"), (0.03, "insufficient_funds"), (0.03, "risk_rejected"),
    (0.03, "unknown_account"), (0.03, "currency_mismatch"), (0.03, "same_account"),
    (0.02, "kyc_blocked"),
]


def plan(seed: int, accounts: int, payments: int, *, timeouts: int = 2, prefix: str = "demo",
         risk_max_amount: int = 100_000_000) -> Workload:
    rng = random.Random(seed)
    customers = [PlannedAccount(f"{prefix}-acct-{i:03d}") for i in range(accounts)]
    special = [PlannedAccount(f"{prefix}-eur", currency="EUR"),
               PlannedAccount(f"{prefix}-kyc-pending", kyc_status="pending")]
    workload = Workload(customers + special)
    ids = [a.account_id for a in customers]
    kinds = rng.choices([k for _, k in MIX], weights=[w for w, _ in MIX], k=payments)
    for number, kind in enumerate(kinds):
        debtor, creditor = rng.sample(ids, 2)
        amount = rng.randint(100, 2_000)
        key = f"{prefix}-pay-{seed}-{number:06d}"
        workload.payments.append(_build(kind, key, debtor, creditor, amount, prefix, risk_max_amount))
    for number in range(timeouts):
        debtor, creditor = rng.sample(ids, 2)
        workload.payments.append(PlannedPayment(f"{prefix}-timeout-{seed}-{number}", debtor, creditor,
                                                500, "psp_unavailable", simulation="timeout"))
    return workload


def _build(kind: str, key: str, debtor: str, creditor: str, amount: int, prefix: str,
           risk_max_amount: int) -> PlannedPayment:
    match kind:
        case "captured":
            return PlannedPayment(key, debtor, creditor, amount, "captured")
        case "captured:latency":
            return PlannedPayment(key, debtor, creditor, amount, "captured", simulation="latency_ms:20")
        case "captured:retried":
            return PlannedPayment(key, debtor, creditor, amount, "captured",
                                  simulation="fail_then_approve:2")
        case "psp_declined":
            return PlannedPayment(key, debtor, creditor, amount, kind, simulation="decline")
        case "insufficient_funds":
            return PlannedPayment(key, debtor, creditor, FUNDING_PER_ACCOUNT * 50, kind)
        case "risk_rejected":
            return PlannedPayment(key, debtor, creditor, risk_max_amount + 1, kind)
        case "unknown_account":
            return PlannedPayment(key, debtor, f"{prefix}-nobody", amount, kind)
        case "currency_mismatch":
            return PlannedPayment(key, debtor, f"{prefix}-eur", amount, kind)
        case "same_account":
            return PlannedPayment(key, debtor, debtor, amount, kind)
        case "kyc_blocked":
            return PlannedPayment(key, f"{prefix}-kyc-pending", creditor, amount, kind)
    raise ValueError(f"unknown kind {kind}")
