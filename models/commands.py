"""Inbound commands (imperative): what upstream systems ask the service to do."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.types import Amount, Currency, Identifier, NonNegativeAmount, is_settlement_account

KycStatus = Literal["verified", "pending", "blocked"]
MetadataValue = Annotated[str, StringConstraints(strict=True, max_length=1024)]


class Command(BaseModel):
    # Unknown fields are ignored so upstream can add fields without being rejected.
    model_config = ConfigDict(frozen=True, extra="ignore")

    def fingerprint(self) -> str:
        """A digest of the payload: the same key with another fingerprint is a conflict."""
        canonical = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()


class OpenAccount(Command):
    type: Literal["OpenAccount"] = "OpenAccount"
    account_id: Identifier
    owner_id: Identifier
    currency: Currency
    overdraft_limit: NonNegativeAmount = 0
    kyc_status: KycStatus = "verified"

    @field_validator("account_id")
    @classmethod
    def _not_settlement(cls, account_id: str) -> str:
        if is_settlement_account(account_id):
            raise ValueError("the 'settlement:' prefix is reserved for external settlement accounts")
        return account_id


class FundAccount(Command):
    type: Literal["FundAccount"] = "FundAccount"
    idempotency_key: Identifier
    account_id: Identifier
    amount: Amount
    currency: Currency


class RequestPayment(Command):
    type: Literal["RequestPayment"] = "RequestPayment"
    idempotency_key: Identifier
    debtor_account_id: Identifier
    creditor_account_id: Identifier
    amount: Amount
    currency: Currency
    description: Annotated[str, StringConstraints(strict=True, max_length=1024)] | None = None
    metadata: dict[Identifier, MetadataValue] = Field(default_factory=dict, max_length=64)


class RefundPayment(Command):
    type: Literal["RefundPayment"] = "RefundPayment"
    idempotency_key: Identifier
    payment_id: Identifier
    amount: Amount | None = None


AccountCommand = OpenAccount | FundAccount
PaymentCommand = RequestPayment | RefundPayment

ACCOUNT_COMMANDS: dict[str, type[Command]] = {"OpenAccount": OpenAccount, "FundAccount": FundAccount}
PAYMENT_COMMANDS: dict[str, type[Command]] = {
    "RequestPayment": RequestPayment,
    "RefundPayment": RefundPayment,
}
