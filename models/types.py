"""Value types shared by every message: identifiers, amounts, currencies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt, StringConstraints

from models.currencies import ISO_4217_CODES

MAX_AMOUNT = 2**63 - 1
SETTLEMENT_PREFIX = "settlement:"

Identifier = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
]
# StrictInt refuses booleans, floats and numeric strings: money is never coerced.
Amount = Annotated[StrictInt, Field(ge=1, le=MAX_AMOUNT)]
NonNegativeAmount = Annotated[StrictInt, Field(ge=0, le=MAX_AMOUNT)]


def _known_currency(code: str) -> str:
    if code not in ISO_4217_CODES:
        raise ValueError(f"{code!r} is not an ISO 4217 alphabetic currency code")
    return code


# The codes are in the schema too (AsyncAPI, OpenAPI), so a client can check before sending.
Currency = Annotated[str, StringConstraints(strict=True), AfterValidator(_known_currency),
                     Field(json_schema_extra={"enum": sorted(ISO_4217_CODES)})]


def settlement_account(currency: str) -> str:
    """The external account that money entering or leaving the platform is posted against."""
    return f"{SETTLEMENT_PREFIX}{currency}"


def is_settlement_account(account_id: str) -> bool:
    return account_id.startswith(SETTLEMENT_PREFIX)
