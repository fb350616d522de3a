"""Reconciliation: the balances the workers hold against the ledger of record. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from uuid import UUID

from models.types import is_settlement_account


@dataclass(frozen=True, slots=True)
class Mismatch:
    account_id: str
    worker_posted: int | None  # None: the workers do not know the account
    ledger_posted: int


@dataclass(frozen=True)
class Report:
    accounts_checked: int
    mismatches: list[Mismatch] = field(default_factory=list)
    unbalanced_transactions: list[UUID] = field(default_factory=list)
    ledger_total: int = 0
    outbox_stuck_rows: int = 0
    reservations_open: int = 0

    @property
    def clean(self) -> bool:
        return (not self.mismatches and not self.unbalanced_transactions and self.ledger_total == 0
                and self.outbox_stuck_rows == 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "clean": self.clean,
            "accounts_checked": self.accounts_checked,
            "mismatches": [{"account_id": m.account_id, "worker_posted": m.worker_posted,
                            "ledger_posted": m.ledger_posted} for m in self.mismatches],
            "unbalanced_transactions": [str(t) for t in self.unbalanced_transactions],
            "ledger_total": self.ledger_total,
            "outbox_stuck_rows": self.outbox_stuck_rows,
            "reservations_open": self.reservations_open,
        }


def compare_balances(worker_posted: dict[str, int], ledger_posted: dict[str, int]) -> list[Mismatch]:
    """Customer accounts only: settlement accounts live in the ledger alone."""
    accounts = {a for a in worker_posted.keys() | ledger_posted.keys() if not is_settlement_account(a)}
    return [
        Mismatch(account_id, worker_posted.get(account_id), ledger_posted.get(account_id, 0))
        for account_id in sorted(accounts)
        if worker_posted.get(account_id) != ledger_posted.get(account_id, 0)
        and not (account_id not in worker_posted and ledger_posted.get(account_id, 0) == 0)
    ]
