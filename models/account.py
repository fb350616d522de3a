"""An account's balances and the pure decisions taken on them.

Balances live with the account's home (one writer per account): `posted` is the ledger
balance, `holds` the reservations of payments in flight (payment id -> amount), and
available = posted - pending. Every decision is a pure function: state in, new state
(or the refusal) out.
"""

from __future__ import annotations

import msgspec

from models.events import FailureReason
from models.steps import CreditorFacts, Opening, Refusal


class Account(msgspec.Struct, frozen=True, kw_only=True):
    account_id: str
    owner_id: str
    currency: str
    overdraft_limit: int
    kyc_status: str  # verified | pending | blocked
    status: str = "active"  # "active" today; closing and freezing are future commands
    fingerprint: str = ""  # of the OpenAccount that opened it
    posted: int = 0
    holds: dict[str, int] = {}  # payment id -> amount held; gone once captured or released

    @property
    def pending(self) -> int:
        return sum(self.holds.values())

    @property
    def available(self) -> int:
        return self.posted - self.pending

    @property
    def facts(self) -> CreditorFacts:
        return CreditorFacts(self.account_id, self.currency, self.status)


def open_account(opening: Opening) -> Account:
    return Account(account_id=opening.account_id, owner_id=opening.owner_id, currency=opening.currency,
                   overdraft_limit=opening.overdraft_limit, kyc_status=opening.kyc_status,
                   fingerprint=opening.fingerprint)


def refused(reason: FailureReason, detail: str) -> Refusal:
    return Refusal(reason.value, detail)


def check_payer(payer: Account | None, account_id: str, currency: str) -> Refusal | None:
    """The debtor of a payment: exists, is open, has passed KYC, holds the currency."""
    label = f"account {account_id}"
    if payer is None:
        return refused(FailureReason.UNKNOWN_ACCOUNT, f"{label} does not exist")
    if payer.status != "active":
        return refused(FailureReason.ACCOUNT_NOT_ACTIVE, f"{label} is {payer.status}")
    if payer.kyc_status == "blocked":
        return refused(FailureReason.KYC_BLOCKED, f"{label} is blocked by KYC")
    if payer.kyc_status != "verified":
        return refused(FailureReason.KYC_BLOCKED, f"{label} KYC is {payer.kyc_status}")
    if payer.currency != currency:
        return refused(FailureReason.CURRENCY_MISMATCH,
                       f"{label} holds {payer.currency}, payment is in {currency}")
    return None


def check_creditor(creditor: CreditorFacts | None, account_id: str, currency: str) -> Refusal | None:
    """Only the payer's KYC matters: receiving money is not what KYC blocks here."""
    label = f"creditor account {account_id}"
    if creditor is None:
        return refused(FailureReason.UNKNOWN_ACCOUNT, f"{label} does not exist")
    if creditor.status != "active":
        return refused(FailureReason.ACCOUNT_NOT_ACTIVE, f"{label} is {creditor.status}")
    if creditor.currency != currency:
        return refused(FailureReason.CURRENCY_MISMATCH,
                       f"{label} holds {creditor.currency}, payment is in {currency}")
    return None


def short_of(account: Account, amount: int) -> Refusal | None:
    """The overdraft rule: available - amount never goes below -overdraft_limit."""
    if account.available - amount >= -account.overdraft_limit:
        return None
    return refused(FailureReason.INSUFFICIENT_FUNDS,
                   f"available {account.available} minus {amount} is below the overdraft limit "
                   f"-{account.overdraft_limit}")


def reserve(payer: Account, payment_id: str, amount: int) -> Account | Refusal:
    """Hold the amount for the payment, or refuse it."""
    if payment_id in payer.holds:
        return payer  # the hold exists: the same request, seen again
    refusal = short_of(payer, amount)
    if refusal is not None:
        return refusal
    return msgspec.structs.replace(payer, holds={**payer.holds, payment_id: amount})


def release(account: Account, payment_id: str) -> Account:
    """Compensation: give back a hold whose movement will not happen."""
    if payment_id not in account.holds:
        return account
    holds = dict(account.holds)
    del holds[payment_id]
    return msgspec.structs.replace(account, holds=holds)


def settle(account: Account, payment_id: str, amount: int) -> Account:
    """A committed debit: the hold it consumed goes, posted moves."""
    released = release(account, payment_id)
    return msgspec.structs.replace(released, posted=account.posted - amount)


def credit(account: Account, amount: int) -> Account:
    return msgspec.structs.replace(account, posted=account.posted + amount)
