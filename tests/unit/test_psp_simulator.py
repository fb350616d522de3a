"""The simulated PSP: each psp_simulation behaviour from the contract."""

from __future__ import annotations

import asyncio

import pytest

from psp import (
    HttpPsp,
    PspApproved,
    PspDeclined,
    PspRequest,
    PspRetryableError,
    SimulatedPsp,
    build_psp,
)
from psp.simulator import parse_simulation, reference_for


def request(simulation: str | None, payment_id: str = "pay-1") -> PspRequest:
    return PspRequest(payment_id=payment_id, amount=1000, currency="EUR", simulation=simulation)


@pytest.mark.parametrize("simulation", [None, "approve"])
async def test_approves_by_default_with_a_reference_derived_from_the_payment(
    simulation: str | None,
) -> None:
    outcome = await SimulatedPsp().capture(request(simulation))
    assert outcome == PspApproved(reference_for("pay-1"))
    assert outcome.psp_reference.startswith("sim_") and len(outcome.psp_reference) == 20


async def test_same_payment_always_gets_the_same_reference_across_instances() -> None:
    first = await SimulatedPsp().capture(request(None))
    again = await SimulatedPsp().capture(request("latency_ms:0"))
    other = await SimulatedPsp().capture(request(None, payment_id="pay-2"))
    assert first == again
    assert other != first


async def test_decline_is_a_final_outcome() -> None:
    outcome = await SimulatedPsp().capture(request("decline"))
    assert isinstance(outcome, PspDeclined) and "declined" in outcome.detail


async def test_fail_then_approve_fails_n_times_per_payment_then_approves_for_good() -> None:
    psp = SimulatedPsp()
    for _ in range(2):
        with pytest.raises(PspRetryableError):
            await psp.capture(request("fail_then_approve:2"))
    # The count is per payment: another payment starts its own failures.
    with pytest.raises(PspRetryableError):
        await psp.capture(request("fail_then_approve:2", payment_id="pay-2"))
    for _ in range(2):  # approved stays approved, like a provider replaying its answer
        assert await psp.capture(request("fail_then_approve:2")) == PspApproved(
            reference_for("pay-1")
        )


async def test_fail_then_approve_zero_approves_at_once() -> None:
    assert isinstance(await SimulatedPsp().capture(request("fail_then_approve:0")), PspApproved)


async def test_timeout_never_answers() -> None:
    capture = asyncio.ensure_future(SimulatedPsp().capture(request("timeout")))
    done, _ = await asyncio.wait({capture}, timeout=0.05)
    assert not done
    capture.cancel()
    with pytest.raises(asyncio.CancelledError):
        await capture


async def test_latency_ms_answers_after_the_delay() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await SimulatedPsp().capture(request("latency_ms:30"))
    assert isinstance(outcome, PspApproved)
    assert loop.time() - started >= 0.03


@pytest.mark.parametrize(
    "simulation",
    [
        "",
        "explode",
        "APPROVE",
        "approve:1",
        "decline:",
        "fail_then_approve",
        "fail_then_approve:x",
        "fail_then_approve:-1",
        "latency_ms:1.5",
        "latency_ms:²",
        "latency_ms:" + "9" * 5000,
        " timeout",
    ],
)
async def test_unknown_or_malformed_simulation_declines_naming_it(simulation: str) -> None:
    outcome = await SimulatedPsp().capture(request(simulation))
    assert isinstance(outcome, PspDeclined)
    assert "unknown psp_simulation" in outcome.detail and "fail_then_approve:N" in outcome.detail


def test_parse_simulation() -> None:
    assert parse_simulation(None) == ("approve", 0)
    assert parse_simulation("timeout") == ("timeout", 0)
    assert parse_simulation("fail_then_approve:12") == ("fail_then_approve", 12)
    assert parse_simulation("latency_ms:9999999") == ("latency_ms", 9_999_999)
    assert parse_simulation("latency_ms:10000000") is None


async def test_void_records_the_payment() -> None:
    psp = SimulatedPsp()
    await psp.void("pay-1")
    await psp.void("pay-1")
    assert psp.voided == {"pay-1"}


async def test_memory_is_bounded_forgetting_the_oldest_payments() -> None:
    psp = SimulatedPsp(payments_remembered_max=2)
    for payment_id in ("pay-1", "pay-2", "pay-3"):
        await psp.void(payment_id)
        with pytest.raises(PspRetryableError):
            await psp.capture(request("fail_then_approve:1", payment_id=payment_id))
    assert psp.voided == {"pay-2", "pay-3"}
    # pay-3 is remembered, so its one failure is spent; pay-1 was forgotten and fails anew.
    assert isinstance(await psp.capture(request("fail_then_approve:1", "pay-3")), PspApproved)
    with pytest.raises(PspRetryableError):
        await psp.capture(request("fail_then_approve:1", payment_id="pay-1"))


def test_memory_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SimulatedPsp(payments_remembered_max=0)


@pytest.mark.parametrize("url", [None, "simulator"])
def test_build_psp_defaults_to_the_simulator(url: str | None) -> None:
    assert isinstance(build_psp(url), SimulatedPsp)


async def test_build_psp_with_a_url_builds_the_http_adapter() -> None:
    psp = build_psp("http://127.0.0.1:9/")
    assert isinstance(psp, HttpPsp)
    await psp.close()
