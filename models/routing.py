"""Decoding of internal step messages: one adapter per step topic."""

from __future__ import annotations

from pydantic import TypeAdapter

from models.steps import AccountStep, LedgerStep, PaymentStep, PspStep

PAYMENT_STEP: TypeAdapter[PaymentStep] = TypeAdapter(PaymentStep)
ACCOUNT_STEP: TypeAdapter[AccountStep] = TypeAdapter(AccountStep)
PSP_STEP: TypeAdapter[PspStep] = TypeAdapter(PspStep)
LEDGER_STEP: TypeAdapter[LedgerStep] = TypeAdapter(LedgerStep)
