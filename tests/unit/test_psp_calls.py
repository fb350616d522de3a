"""Provider calls in the background (agents/psp.py): a silent provider holds up nobody,
answers go back together, and the holder of a partition restarts its in-flight calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec
import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from agents.outlet import Sendable
from agents.psp import Calls
from infra.metrics import Metrics
from models.outputs import Dispatch
from models.payment import Payment, payment_id_for
from models.steps import Origin, PaymentRequest, PspAnswered
from psp import PspApproved, PspDeclined, PspRequest, PspRetryableError, RetryPolicy, SimulatedPsp

PAYMENT_ID = payment_id_for("psp-key-1")
REQUESTED_AT = Origin("payments.steps", 3, 40)
PARTITIONS = {"alice": 3, "carol": 5}  # the debtors' home partitions


def in_flight(payment_id: str = PAYMENT_ID, simulation: str | None = None, debtor: str = "alice") -> Payment:
    metadata = {"psp_simulation": simulation} if simulation else {}
    request = PaymentRequest("psp-key-1", debtor, "bob", 1_000, "USD", None, metadata)
    return Payment(
        payment_id=payment_id, fingerprint="f", request=request, psp="in_flight", requested_at=REQUESTED_AT
    )


@dataclass
class FakeOutlet:
    sent: list[Sendable] = field(default_factory=list)
    sends: int = 0
    failing: int = 0  # sends that fail first

    async def send(self, outputs: Sequence[Sendable]) -> None:
        self.sends += 1
        if self.sends <= self.failing:
            raise KafkaTimeoutError()
        self.sent.extend(outputs)


@dataclass
class CountingPsp(SimulatedPsp):
    captures: list[str] = field(default_factory=list)
    broken: int = 0  # captures that raise an unexpected error first

    def __post_init__(self) -> None:
        super().__init__()

    async def capture(self, request: PspRequest) -> PspApproved | PspDeclined:
        self.captures.append(request.payment_id)
        if len(self.captures) <= self.broken:
            raise RuntimeError("a bug in the adapter")
        return await super().capture(request)


POLICY = RetryPolicy(
    attempts_max=2,
    backoff_initial_seconds=0.01,
    backoff_max_seconds=0.01,
    attempt_timeout_seconds=0.05,
    budget_seconds=0.2,
)


def calls_of(
    psp: CountingPsp | None = None, outlet: FakeOutlet | None = None
) -> tuple[Calls, FakeOutlet, Metrics]:
    metrics = Metrics(CollectorRegistry())
    outlet = outlet or FakeOutlet()
    calls = Calls(psp or CountingPsp(), POLICY, metrics, outlet, PARTITIONS.__getitem__)  # type: ignore[arg-type]
    return calls, outlet, metrics


async def settled(calls: Calls) -> None:
    while calls.running:
        await asyncio.gather(*(task for _, task in calls.running.values()), return_exceptions=True)


def answers(outlet: FakeOutlet) -> list[PspAnswered]:
    return [
        output.step
        for output in outlet.sent
        if isinstance(output, Dispatch) and isinstance(output.step, PspAnswered)
    ]


async def test_a_silent_provider_holds_up_nobody_and_its_answer_comes_back_later() -> None:
    calls, outlet, metrics = calls_of()
    for payment in (in_flight("pay-silent", "timeout"), in_flight("pay-ordinary")):
        await asyncio.wait_for(calls.start(payment), 0.01)  # starting never waits for the provider
    await asyncio.sleep(0.01)
    assert [(a.payment_id, a.result) for a in answers(outlet)] == [("pay-ordinary", "approved")]
    await settled(calls)
    [_, gave_up] = answers(outlet)
    assert (gave_up.payment_id, gave_up.result, gave_up.origin, gave_up.home) == (
        "pay-silent",
        "gave_up",
        REQUESTED_AT,
        "alice",
    )
    assert calls.in_flight == {}
    assert metrics.psp_requests.labels("error")._value.get() == 1


async def started_together(calls: Calls, count: int) -> list[str]:
    payments = [in_flight(f"pay-{n}") for n in range(count)]
    for payment in payments:
        await calls.start(payment)
    await settled(calls)
    return [payment.payment_id for payment in payments]


async def test_answers_of_calls_ending_together_go_in_one_send_to_their_homes() -> None:
    calls, outlet, _ = calls_of()
    payment_ids = await started_together(calls, 5)
    assert sorted(a.payment_id for a in answers(outlet)) == payment_ids
    assert {output.key for output in outlet.sent} == {"alice"}  # type: ignore[union-attr]
    assert outlet.sends == 1 and calls.in_flight == {}


def recorded(payments: dict[str, Payment]):  # type: ignore[no-untyped-def]
    return lambda payment_id, home: payments.get(payment_id)


async def test_answers_whose_send_failed_are_sent_again_by_their_calls() -> None:
    calls, outlet, _ = calls_of(outlet=FakeOutlet(failing=1))
    payment_ids = await started_together(calls, 3)
    assert answers(outlet) == [] and sorted(calls.in_flight) == payment_ids
    await calls.check({3}, recorded(dict(calls.in_flight)))
    await settled(calls)
    assert sorted(a.payment_id for a in answers(outlet)) == payment_ids
    assert outlet.sends == 2 and calls.in_flight == {}


async def test_a_payment_has_one_call_at_a_time() -> None:
    psp = CountingPsp()
    calls, outlet, _ = calls_of(psp)
    payment = in_flight(simulation="latency_ms:20")
    await asyncio.gather(calls.start(payment), calls.start(payment))
    await calls.check({3}, recorded({payment.payment_id: payment}))
    await settled(calls)
    assert psp.captures == [PAYMENT_ID] and len(answers(outlet)) == 1


async def test_a_call_that_failed_unexpectedly_starts_again() -> None:
    calls, outlet, _ = calls_of(CountingPsp(broken=1))
    payment = in_flight()
    await calls.start(payment)
    await settled(calls)
    assert answers(outlet) == [] and PAYMENT_ID in calls.in_flight
    await calls.check({3}, recorded({PAYMENT_ID: payment}))
    await settled(calls)
    assert [a.result for a in answers(outlet)] == ["approved"] and calls.in_flight == {}


async def test_after_a_recovery_the_holder_restarts_its_in_flight_calls_and_only_those() -> None:
    psp = CountingPsp()
    calls, _, _ = calls_of(psp)
    mine, elsewhere = in_flight("pay-mine"), in_flight("pay-elsewhere", debtor="carol")
    done = msgspec.structs.replace(in_flight("pay-done"), psp="approved")
    stored = [(b"p:" + p.payment_id.encode(), msgspec.json.encode(p)) for p in (mine, elsewhere, done)]
    stored.append((b"a:alice", b'{"psp":"in_flight"}'))  # not a payment: never parsed as one
    calls.rescan({3}, iter(stored))
    assert list(calls.in_flight) == ["pay-mine"] and not calls.rescan_due
    await calls.check({3}, recorded({"pay-mine": mine}))
    await settled(calls)
    assert psp.captures == ["pay-mine"]


async def test_a_call_of_a_partition_no_longer_held_is_cancelled_and_a_decided_one_not_restarted() -> None:
    calls, outlet, _ = calls_of()
    silent = in_flight("pay-silent", "timeout")
    await calls.start(silent)
    await asyncio.sleep(0)
    await calls.check(set(), recorded({}))
    await settled(calls)
    assert calls.in_flight == {} and answers(outlet) == []

    answered = in_flight("pay-answered")
    calls.in_flight[answered.payment_id] = answered  # as if in flight, but decided meanwhile
    await calls.check({3}, recorded({"pay-answered": msgspec.structs.replace(answered, psp="declined")}))
    assert calls.running == {} and calls.in_flight == {}


async def test_a_failing_void_is_logged_and_a_hanging_one_cut_by_the_attempt_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BadVoidPsp(CountingPsp):
        async def void(self, payment_id: str) -> None:
            if payment_id == "pay-hangs":
                await asyncio.Event().wait()
            raise PspRetryableError("void down")

    calls, _, _ = calls_of(BadVoidPsp())
    with caplog.at_level(logging.ERROR, logger="agents.psp"):
        calls.void("pay-fails")
        calls.void("pay-hangs")
        async with asyncio.timeout(1.0):
            await asyncio.gather(*calls.voids)
    assert caplog.text.count("psp void failed: check the payment at the provider") == 2


async def test_a_void_reaches_the_provider() -> None:
    psp = CountingPsp()
    calls, _, _ = calls_of(psp)
    calls.void(PAYMENT_ID)
    await asyncio.gather(*calls.voids)
    assert PAYMENT_ID in psp.voided
