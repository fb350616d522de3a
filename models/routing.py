"""Decoding of internal step messages: one adapter per step topic."""

from __future__ import annotations

from pydantic import TypeAdapter

from models.steps import AccountStep, AuthorizePayment, LedgerStep, PaymentStep

PAYMENT_STEP: TypeAdapter[PaymentStep] = TypeAdapter(PaymentStep)
ACCOUNT_STEP: TypeAdapter[AccountStep] = TypeAdapter(AccountStep)
PSP_STEP: TypeAdapter[AuthorizePayment] = TypeAdapter(AuthorizePayment)
LEDGER_STEP: TypeAdapter[LedgerStep] = TypeAdapter(LedgerStep)
