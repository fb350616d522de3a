"""An account's balance state and the pure decisions taken on it.

Balances live with the account's owner (one writer per account): `posted` is the
ledger balance, `reservations` the holds not yet posted or released, and
available = posted - pending. Every decision is a pure function: state and step
in, new state and what to say out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from models.commands import KycStatus, OpenAccount
from models.events import FailureReason
from models.steps import Origin, ReserveFunds

AccountStatus = str  # "active" today; closing and freezing are future commands


class AccountState(BaseModel):
    model_config = ConfigDict(frozen=True)

    account_id: str
    owner_id: str
    currency: str
    overdraft_limit: int
    kyc_status: KycStatus
    status: AccountStatus = "active"
    fingerprint: str = ""
    posted: int = 0
    # reservation_id -> amount held. Entries leave when settled or released.
    reservations: dict[str, int] = Field(default_factory=dict)
    # source ("topic#partition") -> highest position (offset, index in its message) applied
    # from it: the tracking record that lets a redelivered step be recognised. Bounded by
    # sources x partitions.
    applied: dict[str, tuple[int, int]] = Field(default_factory=dict)

    @property
    def pending(self) -> int:
        return sum(self.reservations.values())

    @property
    def available(self) -> int:
        return self.posted - self.pending

    def already_applied(self, origin: Origin) -> bool:
        return origin.position <= self.applied.get(origin.source, (-1, -1))

    def tracking(self, origin: Origin) -> AccountState:
        return self.model_copy(update={"applied": {**self.applied, origin.source: origin.position}})


# In the stored JSON of every account that holds nothing: most of them, at any moment.
NO_HOLDS_MARK = b'"reservations":{}'


def holds_in(stored: bytes) -> int:
    """The holds of an account as the table stores it; one holding nothing is not parsed
    (counting every account's holds for the metrics parsed the whole table each time)."""
    if NO_HOLDS_MARK in stored:
        return 0
    return len(AccountState.model_validate_json(stored).reservations)


def open_account(command: OpenAccount, fingerprint: str) -> AccountState:
    return AccountState(
        account_id=command.account_id,
        owner_id=command.owner_id,
        currency=command.currency,
        overdraft_limit=command.overdraft_limit,
        kyc_status=command.kyc_status,
        fingerprint=fingerprint,
    )


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: FailureReason
    detail: str


def _check_account(account: AccountState | None, label: str, currency: str, *, kyc: bool
                   ) -> Refusal | None:
    if account is None:
        return Refusal(FailureReason.UNKNOWN_ACCOUNT, f"{label} does not exist")
    if account.status != "active":
        return Refusal(FailureReason.ACCOUNT_NOT_ACTIVE, f"{label} is {account.status}")
    if kyc and account.kyc_status == "blocked":
        return Refusal(FailureReason.KYC_BLOCKED, f"{label} is blocked by KYC")
    if kyc and account.kyc_status != "verified":
        return Refusal(FailureReason.KYC_BLOCKED, f"{label} KYC is {account.kyc_status}")
    if account.currency != currency:
        return Refusal(FailureReason.CURRENCY_MISMATCH,
                       f"{label} holds {account.currency}, payment is in {currency}")
    return None


def check_creditor(creditor: AccountState | None, account_id: str, currency: str) -> Refusal | None:
    """Only the payer's KYC matters: receiving money is not what KYC blocks here."""
    return _check_account(creditor, f"creditor account {account_id}", currency, kyc=False)


def check_payer(payer: AccountState | None, account_id: str, currency: str) -> Refusal | None:
    return _check_account(payer, f"account {account_id}", currency, kyc=True)


def decide_reservation(payer: AccountState | None, step: ReserveFunds, *, refund: bool = False
                       ) -> AccountState | Refusal:
    """Hold the amount, or refuse: available - amount never goes below -overdraft_limit.

    A refund's payer is the original creditor: only its funds are checked, since the
    money it gives back arrived through this service."""
    refusal = None if refund else check_payer(payer, step.account_id, step.currency)
    if refusal is not None:
        return refusal
    if payer is None:
        return Refusal(FailureReason.UNKNOWN_ACCOUNT, f"account {step.account_id} does not exist")
    if step.reservation_id in payer.reservations:
        return payer  # the hold already exists: the same request, seen again
    if payer.available - step.amount < -payer.overdraft_limit:
        return Refusal(
            FailureReason.INSUFFICIENT_FUNDS,
            f"available {payer.available} minus {step.amount} is below the overdraft limit "
            f"-{payer.overdraft_limit}",
        )
    return payer.model_copy(
        update={"reservations": {**payer.reservations, step.reservation_id: step.amount}}
    )


def release(account: AccountState, reservation_id: str) -> AccountState:
    reservations = dict(account.reservations)
    reservations.pop(reservation_id, None)
    return account.model_copy(update={"reservations": reservations})


def apply_posting(account: AccountState, amount: int, reservation_id: str | None) -> AccountState:
    """A committed leg moves posted; the hold it consumed (a debit's) is settled with it."""
    settled = release(account, reservation_id) if reservation_id else account
    return settled.model_copy(update={"posted": account.posted + amount})
