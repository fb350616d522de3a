"""The payment service provider (PSP) port: what the service asks of a PSP, and the retry loop."""

from __future__ import annotations

import asyncio
import logging
import random as random_module
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

logger = logging.getLogger(__name__)

# A limit on the retry loop even when a policy is built from configuration.
ATTEMPTS_MAX_LIMIT = 100


@dataclass(frozen=True)
class PspRequest:
    payment_id: str
    amount: int
    currency: str
    simulation: str | None  # the payment's metadata["psp_simulation"]; None means approve


@dataclass(frozen=True)
class PspApproved:
    psp_reference: str


@dataclass(frozen=True)
class PspDeclined:
    """Final: the provider said no, so asking again cannot help."""

    detail: str


@dataclass(frozen=True)
class PspGaveUp:
    """The retry budget ran out without an answer. A timed-out attempt may have captured at
    the provider: the PSP step voids it once the give-up is the payment's recorded outcome
    (not here: another call for the same payment may have been approved, and the ledger
    posts that capture)."""

    detail: str
    attempts: int


PspOutcome: TypeAlias = PspApproved | PspDeclined | PspGaveUp


class PspRetryableError(Exception):
    """Transient: a 5xx, a refused connection. The same request may succeed later."""


class PspTimeout(PspRetryableError):
    """No answer in time: the capture may or may not have happened at the provider."""


class PaymentServiceProvider(Protocol):
    async def capture(self, request: PspRequest) -> PspApproved | PspDeclined:
        """Authorize and capture in one call; raises PspRetryableError when it may be retried."""
        ...

    async def void(self, payment_id: str) -> None:
        """Best effort: cancel anything captured for this payment, which failed without it."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    attempts_max: int = 6
    backoff_initial_seconds: float = 0.05
    backoff_max_seconds: float = 2.0
    attempt_timeout_seconds: float = 2.0
    budget_seconds: float = 20.0

    def __post_init__(self) -> None:
        # Written as "not (in range)" so that NaN is refused too.
        if not 1 <= self.attempts_max <= ATTEMPTS_MAX_LIMIT:
            raise ValueError(f"attempts_max must be 1..{ATTEMPTS_MAX_LIMIT}")
        if not 0 < self.backoff_initial_seconds <= self.backoff_max_seconds:
            raise ValueError("need 0 < backoff_initial_seconds <= backoff_max_seconds")
        if not 0 < self.attempt_timeout_seconds <= self.budget_seconds:
            raise ValueError("need 0 < attempt_timeout_seconds <= budget_seconds")

    def delay_seconds(self, attempt: int, random: Callable[[], float]) -> float:
        """Pause after failed attempt number `attempt` (1-based): capped exponential, full jitter.

        Full jitter (a uniform draw below the cap) spreads the retries of payments that
        failed together, so a recovering provider is not hit by them all at once.
        """
        if not 1 <= attempt <= self.attempts_max:
            raise ValueError(f"attempt must be 1..{self.attempts_max}, got {attempt}")
        ceiling = self.backoff_initial_seconds * 2.0 ** (attempt - 1)
        return random() * min(ceiling, self.backoff_max_seconds)

    def allows_retry(self, attempt: int, elapsed_seconds: float, delay_seconds: float) -> bool:
        """Whether another attempt fits, counting its own timeout: the budget is a hard bound."""
        finish_latest = elapsed_seconds + delay_seconds + self.attempt_timeout_seconds
        return attempt < self.attempts_max and finish_latest <= self.budget_seconds


async def capture_with_retries(
    psp: PaymentServiceProvider,
    request: PspRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    random: Callable[[], float] = random_module.random,
    clock: Callable[[], float] = time.monotonic,
    on_retry: Callable[[str], None] | None = None,
) -> PspOutcome:
    """Capture, retrying transient errors and timeouts; never raises for PSP errors.

    Every attempt sends the same payment_id, so a provider honoring it as an idempotency
    key captures at most once however many attempts reached it.
    """
    started = clock()
    attempt = 1
    while True:  # bounded: allows_retry refuses once attempt reaches policy.attempts_max
        try:
            return await _capture_once(psp, request, policy.attempt_timeout_seconds)
        except PspRetryableError as error:
            delay = policy.delay_seconds(attempt, random)
            if not policy.allows_retry(attempt, clock() - started, delay):
                return _give_up(request.payment_id, attempt, error)
            if on_retry is not None:
                on_retry("timeout" if isinstance(error, PspTimeout) else "error")
        await sleep(delay)
        attempt += 1


async def _capture_once(
    psp: PaymentServiceProvider, request: PspRequest, timeout_seconds: float
) -> PspApproved | PspDeclined:
    try:
        async with asyncio.timeout(timeout_seconds):
            return await psp.capture(request)
    except TimeoutError as error:
        raise PspTimeout(f"no answer within {timeout_seconds}s") from error


def _give_up(payment_id: str, attempts: int, error: PspRetryableError) -> PspGaveUp:
    detail = f"gave up after {attempts} attempts, last: {type(error).__name__}: {error}"
    logger.warning("psp capture of payment %s: %s", payment_id, detail)
    return PspGaveUp(detail=detail, attempts=attempts)
