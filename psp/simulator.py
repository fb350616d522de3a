"""The default PSP: behaviour per payment chosen by its metadata["psp_simulation"]."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import KeysView
from typing import TypeVar

from psp.port import PspApproved, PspDeclined, PspRequest, PspRetryableError

SIMULATIONS = ("approve", "decline", "fail_then_approve:N", "timeout", "latency_ms:N")
_MODES_PLAIN = frozenset({"approve", "decline", "timeout"})
_MODES_COUNTED = frozenset({"fail_then_approve", "latency_ms"})
# Bounds N: int() refuses (and is slow on) huge digit strings, and more simulates nothing new.
_COUNT_DIGITS_MAX = 7

Value = TypeVar("Value")


def parse_simulation(simulation: str | None) -> tuple[str, int] | None:
    """(mode, N) for a known behaviour (N is 0 when the mode takes none), else None."""
    if simulation is None:
        return ("approve", 0)
    mode, colon, count = simulation.partition(":")
    if not colon:
        return (mode, 0) if mode in _MODES_PLAIN else None
    if mode not in _MODES_COUNTED or not _is_count(count):
        return None
    return (mode, int(count))


def _is_count(text: str) -> bool:
    # isascii: str.isdigit also accepts digits such as "²" that int() refuses.
    return text.isascii() and text.isdigit() and len(text) <= _COUNT_DIGITS_MAX


def reference_for(payment_id: str) -> str:
    """Deterministic, like a real PSP honoring the payment_id as idempotency key."""
    return "sim_" + hashlib.sha256(payment_id.encode()).hexdigest()[:16]


def _remember(memory: dict[str, Value], key: str, value: Value, entries_max: int) -> None:
    """Store as newest (dicts keep insertion order); forget the oldest past the limit."""
    memory.pop(key, None)
    memory[key] = value
    if len(memory) > entries_max:
        del memory[next(iter(memory))]


class SimulatedPsp:
    """In-memory PSP for the demo, tests and benchmarks.

    Memory is bounded by payments_remembered_max: retries of one payment come within
    seconds, so only recent payments need their failure count. Forgetting an old one is
    harmless: a later capture of it would fail N times again, then get the same reference.
    """

    def __init__(self, *, payments_remembered_max: int = 100_000) -> None:
        if payments_remembered_max < 1:
            raise ValueError("payments_remembered_max must be at least 1")
        self._payments_remembered_max = payments_remembered_max
        self._capture_calls: dict[str, int] = {}
        self._voided: dict[str, None] = {}  # an insertion-ordered set, so the oldest can go

    @property
    def voided(self) -> KeysView[str]:
        """Payment ids voided so far (the most recent payments_remembered_max)."""
        return self._voided.keys()

    async def capture(self, request: PspRequest) -> PspApproved | PspDeclined:
        match parse_simulation(request.simulation):
            case None:
                return PspDeclined(
                    f"unknown psp_simulation {request.simulation!r}, expected one of "
                    + ", ".join(SIMULATIONS)
                )
            case ("decline", _):
                return PspDeclined("declined by the simulated provider")
            case ("timeout", _):
                await asyncio.Event().wait()  # never set: only the caller's timeout ends this
            case ("latency_ms", milliseconds):
                await asyncio.sleep(milliseconds / 1000)
            case ("fail_then_approve", failures):
                self._fail_first(request.payment_id, failures)
        return PspApproved(reference_for(request.payment_id))

    async def void(self, payment_id: str) -> None:
        _remember(self._voided, payment_id, None, self._payments_remembered_max)

    async def close(self) -> None:
        """Nothing to release: the simulator holds no connections."""

    def _fail_first(self, payment_id: str, failures: int) -> None:
        calls = self._capture_calls.get(payment_id, 0) + 1
        _remember(self._capture_calls, payment_id, calls, self._payments_remembered_max)
        if calls <= failures:
            raise PspRetryableError(f"simulated transient failure {calls} of {failures}")
