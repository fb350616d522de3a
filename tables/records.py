"""Records that only a table holds (the account and payment state live in models/)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class PspOutcomeRecord(BaseModel):
    """What the PSP step concluded for a payment, kept so a redelivery does not call twice."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    result: Literal["approved", "declined", "gave_up"]
    psp_reference: str | None = None
    detail: str | None = None
