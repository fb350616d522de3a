"""The PSP step: a call in flight per payment, one recorded outcome, and calls that run
in the background (so a silent provider holds up nobody) and are restarted by the holder
of their partition."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from agents.psp import Calls
from infra.metrics import Metrics
from models.commands import RequestPayment
from models.events import FailureReason, PaymentAuthorized
from models.outputs import Dispatch, Output, Publish
from models.payment import payment_id_for
from models.psp_flow import PspOutcomeRecord, on_answer, on_request
from models.routing import PSP_STEP
from models.steps import (
    AuthorizePayment,
    Origin,
    PostCapture,
    PspAnswered,
    ReleaseFunds,
)
from psp import PspApproved, PspDeclined, PspRequest, PspRetryableError, RetryPolicy, SimulatedPsp

PAYMENT_ID = payment_id_for("psp-key-1")
FROM_ACCOUNT = Origin(topic="payments.steps.account", partition=2, offset=11)
REQUESTED_AT = Origin(topic="payments.steps.psp", partition=3, offset=40)
ANSWERED_AT = Origin(topic="payments.steps.psp", partition=3, offset=45)


def authorize(payment_id: str = PAYMENT_ID, simulation: str | None = None) -> AuthorizePayment:
    metadata = {"psp_simulation": simulation} if simulation else {}
    payment = RequestPayment(idempotency_key="psp-key-1", debtor_account_id="alice",
                             creditor_account_id="bob", amount=1_000, currency="USD", metadata=metadata)
    return AuthorizePayment(origin=FROM_ACCOUNT, payment_id=payment_id, reservation_id=payment_id,
                            payment=payment)


def in_flight(payment_id: str = PAYMENT_ID, simulation: str | None = None, partition: int = 3
              ) -> PspOutcomeRecord:
    decision = on_request(None, authorize(payment_id, simulation), REQUESTED_AT.model_copy(
        update={"partition": partition}))
    assert decision.record is not None
    return decision.record


def answer(result: str, **fields: Any) -> PspAnswered:
    return PspAnswered(origin=REQUESTED_AT, payment_id=PAYMENT_ID, result=result, **fields)  # type: ignore[arg-type]


def decided(result: str, **fields: Any) -> PspOutcomeRecord:
    decision = on_answer(in_flight(), answer(result, **fields), ANSWERED_AT)
    assert decision.record is not None
    return decision.record


# --- decisions -------------------------------------------------------------------------------


def test_a_new_request_is_recorded_in_flight_and_called_without_any_output() -> None:
    decision = on_request(None, authorize(), REQUESTED_AT)
    assert decision.record is not None and decision.record.result == "in_flight"
    assert (decision.record.request, decision.record.requested_at) == (authorize(), REQUESTED_AT)
    assert decision.call == decision.record and decision.outputs == [] and not decision.void


def test_a_repeat_while_in_flight_asks_nobody_again_but_makes_sure_the_call_runs() -> None:
    current = in_flight()
    decision = on_request(current, authorize(), REQUESTED_AT.model_copy(update={"offset": 41}))
    assert (decision.record, decision.outputs, decision.call) == (None, [], current)


def test_a_repeat_after_the_outcome_answers_with_it_from_its_own_position() -> None:
    repeat_at = REQUESTED_AT.model_copy(update={"offset": 90})
    decision = on_request(decided("declined", detail="no"), authorize(), repeat_at)
    assert decision.record is None and decision.call is None
    [release] = decision.outputs
    assert isinstance(release, Dispatch) and isinstance(release.step, ReleaseFunds)
    assert (release.step.reason, release.step.origin) == (FailureReason.PSP_DECLINED, repeat_at)


def test_an_outcome_recorded_before_calls_ran_in_the_background_still_answers_a_repeat() -> None:
    old = PspOutcomeRecord.model_validate_json(
        f'{{"payment_id":"{PAYMENT_ID}","result":"approved","psp_reference":"sim_1","detail":null}}')
    decision = on_request(old, authorize(), REQUESTED_AT)
    assert [type(o.step if isinstance(o, Dispatch) else o.event) for o in decision.outputs] == [
        PaymentAuthorized, PostCapture]


def test_an_approval_is_recorded_and_sent_on_from_the_answers_position() -> None:
    decision = on_answer(in_flight(), answer("approved", psp_reference="sim_1"), ANSWERED_AT)
    assert decision.record == PspOutcomeRecord(payment_id=PAYMENT_ID, result="approved",
                                               psp_reference="sim_1")
    authorized, to_ledger = decision.outputs
    assert isinstance(authorized, Publish) and isinstance(authorized.event, PaymentAuthorized)
    assert isinstance(to_ledger, Dispatch) and isinstance(to_ledger.step, PostCapture)
    assert (to_ledger.step.psp_reference, to_ledger.step.origin) == ("sim_1", ANSWERED_AT)


@pytest.mark.parametrize(("result", "reason", "void"), [("declined", FailureReason.PSP_DECLINED, False),
                                                        ("gave_up", FailureReason.PSP_UNAVAILABLE, True)])
def test_a_refusal_releases_the_hold_and_a_give_up_voids(result: str, reason: FailureReason, void: bool
                                                         ) -> None:
    decision = on_answer(in_flight(), answer(result, detail="why"), ANSWERED_AT)
    assert decision.record is not None and decision.record.result == result
    # A give-up's timed-out attempts may have captured: voided now that it is the outcome.
    assert decision.void is void
    [release] = decision.outputs
    assert isinstance(release, Dispatch) and (release.route, release.key) == ("account", "alice")
    assert isinstance(release.step, ReleaseFunds)
    assert (release.step.reason, release.step.detail, release.step.origin) == (reason, "why", ANSWERED_AT)


@pytest.mark.parametrize(("recorded", "late", "void"), [
    ("approved", "approved", False), ("approved", "gave_up", False), ("declined", "gave_up", False),
    ("gave_up", "approved", True), ("declined", "approved", True),
])
def test_the_first_answer_recorded_wins(recorded: str, late: str, void: bool) -> None:
    current = decided(recorded, psp_reference="sim_1" if recorded == "approved" else None)
    decision = on_answer(current, answer(late, psp_reference="sim_1" if late == "approved" else None),
                         ANSWERED_AT.model_copy(update={"offset": 60}))
    assert (decision.record, decision.outputs, decision.call) == (None, [], None)
    assert decision.void is void


def test_an_answer_for_an_unknown_payment_changes_nothing() -> None:
    decision = on_answer(None, answer("approved", psp_reference="sim_1"), ANSWERED_AT)
    assert (decision.record, decision.outputs, decision.call, decision.void) == (None, [], None, False)


def test_the_psp_topic_carries_requests_and_answers() -> None:
    for step in (authorize(), answer("gave_up", detail="budget spent")):
        assert PSP_STEP.validate_json(step.model_dump_json()) == step


# --- calls in the background -----------------------------------------------------------------


@dataclass
class FakeTable:
    data: dict[bytes, bytes] = field(default_factory=dict)

    def raw_values(self) -> list[bytes]:
        return list(self.data.values())

    def put(self, record: PspOutcomeRecord) -> None:
        self.data[record.payment_id.encode()] = record.model_dump_json().encode()

    def get(self, key: str) -> PspOutcomeRecord | None:
        raw = self.data.get(key.encode())
        return None if raw is None else PspOutcomeRecord.model_validate_json(raw)


@dataclass
class FakeOutlet:
    sent: list[Output] = field(default_factory=list)
    sends: int = 0
    failing: int = 0  # sends that fail first

    async def send(self, outputs: Iterable[Output]) -> None:
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


@dataclass
class FakeRuntime:
    psp: CountingPsp = field(default_factory=CountingPsp)
    psp_outcomes: FakeTable = field(default_factory=FakeTable)
    outlet: FakeOutlet = field(default_factory=FakeOutlet)
    metrics: Metrics = field(default_factory=lambda: Metrics(CollectorRegistry()))
    psp_policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(
        attempts_max=2, backoff_initial_seconds=0.01, backoff_max_seconds=0.01,
        attempt_timeout_seconds=0.05, budget_seconds=0.2))


def calls_of(runtime: FakeRuntime) -> Calls:
    return Calls(runtime)  # type: ignore[arg-type]


async def settled(calls: Calls) -> None:
    while calls.running:
        await asyncio.gather(*(task for _, task in calls.running.values()), return_exceptions=True)


def answers(runtime: FakeRuntime) -> list[PspAnswered]:
    return [output.step for output in runtime.outlet.sent
            if isinstance(output, Dispatch) and isinstance(output.step, PspAnswered)]


async def test_a_silent_provider_holds_up_nobody_and_its_answer_comes_back_later() -> None:
    runtime = FakeRuntime()
    calls = calls_of(runtime)
    silent, ordinary = in_flight("pay-silent", "timeout"), in_flight("pay-ordinary")
    for record in (silent, ordinary):
        runtime.psp_outcomes.put(record)
        await asyncio.wait_for(calls.start(record), 0.01)  # starting never waits for the provider
    await asyncio.sleep(0.01)
    assert [(a.payment_id, a.result) for a in answers(runtime)] == [("pay-ordinary", "approved")]
    await settled(calls)
    [_, gave_up] = answers(runtime)
    assert (gave_up.payment_id, gave_up.result, gave_up.origin) == ("pay-silent", "gave_up", REQUESTED_AT)
    # The call leaves the void to the agent, which voids once the give-up is recorded.
    assert calls.in_flight == {} and not runtime.psp.voided
    assert runtime.metrics.psp_requests.labels("error")._value.get() == 1


async def calls_started_together(runtime: FakeRuntime, count: int) -> tuple[Calls, list[str]]:
    """`count` in-flight payments whose calls start at once; returns when all have ended."""
    calls = calls_of(runtime)
    records = [in_flight(f"pay-{n}") for n in range(count)]
    for record in records:
        runtime.psp_outcomes.put(record)
        await calls.start(record)
    await settled(calls)
    return calls, [r.payment_id for r in records]


async def test_answers_of_calls_ending_together_go_in_one_send() -> None:
    runtime = FakeRuntime()
    calls, payment_ids = await calls_started_together(runtime, 5)
    assert sorted(a.payment_id for a in answers(runtime)) == payment_ids
    assert runtime.outlet.sends == 1 and calls.in_flight == {}


async def test_answers_whose_send_failed_are_sent_again_by_their_calls() -> None:
    runtime = FakeRuntime(outlet=FakeOutlet(failing=1))
    calls, payment_ids = await calls_started_together(runtime, 3)
    assert answers(runtime) == [] and sorted(calls.in_flight) == payment_ids
    await calls.check({3})
    await settled(calls)
    assert sorted(a.payment_id for a in answers(runtime)) == payment_ids
    assert runtime.outlet.sends == 2 and calls.in_flight == {}


async def test_a_payment_has_one_call_at_a_time() -> None:
    runtime = FakeRuntime()
    calls = calls_of(runtime)
    record = in_flight(simulation="latency_ms:20")
    runtime.psp_outcomes.put(record)
    await asyncio.gather(calls.start(record), calls.start(record))
    await calls.check({3})
    await settled(calls)
    assert runtime.psp.captures == [PAYMENT_ID] and len(answers(runtime)) == 1


async def test_a_call_that_failed_unexpectedly_starts_again() -> None:
    runtime = FakeRuntime(psp=CountingPsp(broken=1))
    calls = calls_of(runtime)
    record = in_flight()
    runtime.psp_outcomes.put(record)
    await calls.start(record)
    await settled(calls)
    assert answers(runtime) == [] and PAYMENT_ID in calls.in_flight
    await calls.check({3})
    await settled(calls)
    assert [a.result for a in answers(runtime)] == ["approved"] and calls.in_flight == {}


async def test_after_a_recovery_the_holder_restarts_its_in_flight_calls_and_only_those() -> None:
    runtime = FakeRuntime()
    calls = calls_of(runtime)
    mine, elsewhere = in_flight("pay-mine", partition=3), in_flight("pay-elsewhere", partition=5)
    runtime.psp_outcomes.put(mine)
    runtime.psp_outcomes.put(elsewhere)
    runtime.psp_outcomes.put(decided("approved", psp_reference="sim_1"))
    calls.rescan({3})
    assert calls.in_flight == {"pay-mine": 3} and not calls.rescan_due
    await calls.check({3})
    await settled(calls)
    assert runtime.psp.captures == ["pay-mine"]


async def test_a_call_of_a_partition_no_longer_held_is_cancelled_and_a_decided_one_not_restarted() -> None:
    runtime = FakeRuntime()
    calls = calls_of(runtime)
    silent, answered = in_flight("pay-silent", "timeout"), in_flight("pay-answered")
    runtime.psp_outcomes.put(silent)
    await calls.start(silent)
    await asyncio.sleep(0)
    await calls.check(set())
    await settled(calls)
    assert calls.in_flight == {} and answers(runtime) == []

    calls.in_flight[answered.payment_id] = 3  # as if in flight, but decided meanwhile
    runtime.psp_outcomes.put(decided("declined").model_copy(update={"payment_id": "pay-answered"}))
    await calls.check({3})
    assert calls.running == {} and calls.in_flight == {}


async def test_a_failing_void_is_logged_and_a_hanging_one_cut_by_the_attempt_timeout(
        caplog: pytest.LogCaptureFixture) -> None:
    class BadVoidPsp(CountingPsp):
        async def void(self, payment_id: str) -> None:
            if payment_id == "pay-hangs":
                await asyncio.Event().wait()
            raise PspRetryableError("void down")

    runtime = FakeRuntime(psp=BadVoidPsp())
    calls = calls_of(runtime)
    with caplog.at_level(logging.ERROR, logger="agents.psp"):
        calls.void("pay-fails")
        calls.void("pay-hangs")
        async with asyncio.timeout(1.0):
            await asyncio.gather(*calls.voids)
    assert caplog.text.count("psp void failed: check the payment at the provider") == 2


async def test_a_late_approval_is_voided_at_the_provider() -> None:
    runtime = FakeRuntime()
    calls = calls_of(runtime)
    calls.void(PAYMENT_ID)
    await asyncio.gather(*calls.voids)
    assert PAYMENT_ID in runtime.psp.voided
