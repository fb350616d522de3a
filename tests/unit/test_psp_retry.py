"""The retry loop: backoff, budget and give-up, on a fake clock so it runs instantly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from psp import (
    PspApproved,
    PspDeclined,
    PspGaveUp,
    PspRequest,
    PspRetryableError,
    PspTimeout,
    RetryPolicy,
    SimulatedPsp,
    capture_with_retries,
)


@dataclass
class FakeTime:
    """A clock that only moves when the code under test sleeps (or a fake PSP works)."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class FailingPsp:
    """Raises `error` on every capture, each call taking `call_seconds` of fake time."""

    time: FakeTime
    error: PspRetryableError
    call_seconds: float = 0.0
    captures: int = 0
    voided: list[str] = field(default_factory=list)

    async def capture(self, request: PspRequest) -> PspApproved | PspDeclined:
        self.captures += 1
        self.time.now += self.call_seconds
        raise self.error

    async def void(self, payment_id: str) -> None:
        self.voided.append(payment_id)

    async def close(self) -> None:
        pass


def request(simulation: str | None = None, payment_id: str = "pay-1") -> PspRequest:
    return PspRequest(payment_id=payment_id, amount=1000, currency="EUR", simulation=simulation)


def always(value: float) -> Callable[[], float]:
    return lambda: value


# --- RetryPolicy: pure arithmetic ---------------------------------------------------------


def test_delay_ceiling_doubles_from_initial_then_stays_at_the_cap() -> None:
    policy = RetryPolicy(attempts_max=8, backoff_initial_seconds=0.1, backoff_max_seconds=1.0)
    ceilings = [policy.delay_seconds(attempt, always(1.0)) for attempt in range(1, 9)]
    assert ceilings == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])


def test_full_jitter_draws_uniformly_below_the_ceiling() -> None:
    policy = RetryPolicy(backoff_initial_seconds=0.1, backoff_max_seconds=1.0)
    assert policy.delay_seconds(3, always(0.0)) == 0.0
    assert policy.delay_seconds(3, always(0.5)) == pytest.approx(0.2)
    assert policy.delay_seconds(6, always(0.25)) == pytest.approx(0.25)  # quarter of the cap


def test_jitter_stays_within_bounds_for_real_random_draws() -> None:
    policy = RetryPolicy()
    for attempt in range(1, policy.attempts_max + 1):
        ceiling = min(
            policy.backoff_initial_seconds * 2 ** (attempt - 1), policy.backoff_max_seconds
        )
        for _ in range(200):
            assert 0.0 <= policy.delay_seconds(attempt, random.random) < ceiling


def test_delay_refuses_attempt_numbers_outside_the_policy() -> None:
    policy = RetryPolicy(attempts_max=3)
    with pytest.raises(ValueError):
        policy.delay_seconds(0, always(0.5))
    with pytest.raises(ValueError):
        policy.delay_seconds(4, always(0.5))


@pytest.mark.parametrize(
    "fields",
    [
        {"attempts_max": 0},
        {"attempts_max": 101},
        {"backoff_initial_seconds": 0.0},
        {"backoff_initial_seconds": 3.0, "backoff_max_seconds": 2.0},
        {"attempt_timeout_seconds": 0.0},
        {"attempt_timeout_seconds": 30.0, "budget_seconds": 20.0},
        {"budget_seconds": float("nan")},
    ],
)
def test_policy_refuses_out_of_bounds_settings(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**fields)  # type: ignore[arg-type]


def test_allows_retry_only_when_the_next_attempt_can_finish_inside_the_budget() -> None:
    policy = RetryPolicy(attempts_max=6, attempt_timeout_seconds=2.0, budget_seconds=10.0)
    assert policy.allows_retry(1, elapsed_seconds=7.0, delay_seconds=1.0)  # ends by 10.0
    assert not policy.allows_retry(1, elapsed_seconds=7.0, delay_seconds=1.5)  # could end 10.5
    assert not policy.allows_retry(6, elapsed_seconds=0.0, delay_seconds=0.0)  # attempts spent


# --- capture_with_retries ------------------------------------------------------------------


async def test_fail_then_approve_within_attempts_approves_after_backoff_sleeps() -> None:
    time, retries = FakeTime(), list[str]()
    policy = RetryPolicy(backoff_initial_seconds=0.1, backoff_max_seconds=1.0)
    outcome = await capture_with_retries(
        SimulatedPsp(),
        request("fail_then_approve:3"),
        policy,
        sleep=time.sleep,
        random=always(1.0),
        clock=time.clock,
        on_retry=retries.append,
    )
    assert isinstance(outcome, PspApproved)
    assert time.sleeps == pytest.approx([0.1, 0.2, 0.4])
    assert retries == ["error", "error", "error"]


async def test_fail_then_approve_beyond_attempts_gives_up_and_leaves_the_void_to_the_psp_step() -> None:
    time, psp = FakeTime(), SimulatedPsp()
    policy = RetryPolicy(attempts_max=4)
    outcome = await capture_with_retries(
        psp,
        request("fail_then_approve:4"),
        policy,
        sleep=time.sleep,
        random=always(0.5),
        clock=time.clock,
    )
    assert isinstance(outcome, PspGaveUp) and outcome.attempts == 4
    assert "PspRetryableError" in outcome.detail
    assert len(time.sleeps) == 3
    assert "pay-1" not in psp.voided  # another call may have been approved: not the call's to decide


async def test_decline_is_final_and_not_retried() -> None:
    time, retries = FakeTime(), list[str]()
    outcome = await capture_with_retries(
        SimulatedPsp(),
        request("decline"),
        RetryPolicy(),
        sleep=time.sleep,
        clock=time.clock,
        on_retry=retries.append,
    )
    assert isinstance(outcome, PspDeclined)
    assert time.sleeps == [] and retries == []


async def test_budget_exhaustion_stops_before_attempts_max() -> None:
    time = FakeTime()
    psp = FailingPsp(time, PspRetryableError("HTTP 503"), call_seconds=1.0)
    policy = RetryPolicy(
        attempts_max=10,
        backoff_initial_seconds=0.5,
        backoff_max_seconds=0.5,
        attempt_timeout_seconds=2.0,
        budget_seconds=5.0,
    )
    outcome = await capture_with_retries(
        psp, request(), policy, sleep=time.sleep, random=always(1.0), clock=time.clock
    )
    # Attempts end at 1.0, 2.5, 4.0; a fourth could run until 4.0 + 0.5 + 2.0 > 5.0.
    assert isinstance(outcome, PspGaveUp) and outcome.attempts == 3
    assert psp.captures == 3 and time.sleeps == [0.5, 0.5]
    assert psp.voided == []
    assert time.now <= policy.budget_seconds


async def test_default_policy_gives_up_on_a_silent_provider_well_within_30_seconds() -> None:
    time, retries = FakeTime(), list[str]()
    policy = RetryPolicy()
    # Worst case: every attempt uses its whole timeout and every jitter draw is the maximum.
    psp = FailingPsp(time, PspTimeout("silent"), call_seconds=policy.attempt_timeout_seconds)
    outcome = await capture_with_retries(
        psp,
        request(),
        policy,
        sleep=time.sleep,
        random=always(1.0),
        clock=time.clock,
        on_retry=retries.append,
    )
    assert isinstance(outcome, PspGaveUp) and outcome.attempts == policy.attempts_max
    assert retries == ["timeout"] * (policy.attempts_max - 1)
    assert time.now <= policy.budget_seconds < 30


async def test_timeout_mode_is_cut_by_the_attempt_timeout() -> None:
    psp, retries = SimulatedPsp(), list[str]()
    policy = RetryPolicy(
        attempts_max=3,
        backoff_initial_seconds=0.001,
        backoff_max_seconds=0.001,
        attempt_timeout_seconds=0.02,
        budget_seconds=1.0,
    )
    async with asyncio.timeout(1.0):
        outcome = await capture_with_retries(
            psp, request("timeout"), policy, on_retry=retries.append
        )
    assert isinstance(outcome, PspGaveUp) and outcome.attempts == 3
    assert "PspTimeout" in outcome.detail
    assert retries == ["timeout", "timeout"]
    assert set(psp.voided) == set()
