"""Records that only a table holds (the account and payment state live in models/).

The PSP step's record lives with its decisions in models/psp_flow.py (they read and
write it); it is named here too, next to the tables' other records."""

from __future__ import annotations

from models.psp_flow import PspOutcomeRecord

__all__ = ["PspOutcomeRecord"]
