"""The PSP step: authorize and capture at the provider, with retries inside the step.

The calls of one batch run concurrently, so a slow or silent provider holds up its
batch for at most the retry budget, not every payment behind it one by one.
"""

from __future__ import annotations

import asyncio
import time

import faust

from agents.runtime import Runtime
from agents.shell import batches, origin_of
from infra.crash import crash_point
from infra.topics import PSP_STEPS
from models import psp_flow
from models.events import FailureReason
from models.outputs import Output
from models.routing import PSP_STEP
from models.steps import AuthorizePayment, Origin
from psp import PspApproved, PspDeclined, PspRequest, capture_with_retries
from tables.records import PspOutcomeRecord


async def authorize(runtime: Runtime, step: AuthorizePayment) -> PspOutcomeRecord:
    request = PspRequest(payment_id=step.payment_id, amount=step.payment.amount,
                         currency=step.payment.currency,
                         simulation=step.payment.metadata.get("psp_simulation"))
    metrics = runtime.metrics
    started = time.perf_counter()
    outcome = await capture_with_retries(
        runtime.psp, request, runtime.psp_policy,
        on_retry=lambda kind: metrics.psp_retries.labels(kind).inc())
    metrics.psp_duration.observe(time.perf_counter() - started)
    if isinstance(outcome, PspApproved):
        metrics.psp_requests.labels("approved").inc()
        return PspOutcomeRecord(payment_id=step.payment_id, result="approved",
                                psp_reference=outcome.psp_reference)
    if isinstance(outcome, PspDeclined):
        metrics.psp_requests.labels("declined").inc()
        return PspOutcomeRecord(payment_id=step.payment_id, result="declined", detail=outcome.detail)
    metrics.psp_requests.labels("error").inc()
    return PspOutcomeRecord(payment_id=step.payment_id, result="gave_up", detail=outcome.detail)


def outputs_for(step: AuthorizePayment, outcome: PspOutcomeRecord, origin: Origin) -> list[Output]:
    if outcome.result == "approved":
        assert outcome.psp_reference is not None
        return psp_flow.approved(step, outcome.psp_reference, origin)
    reason = FailureReason.PSP_DECLINED if outcome.result == "declined" else FailureReason.PSP_UNAVAILABLE
    return psp_flow.not_captured(step, reason, outcome.detail or outcome.result, origin)


async def decode(event: faust.EventT) -> AuthorizePayment:
    return PSP_STEP.validate_json(event.message.value)


def install(app: faust.App, runtime: Runtime) -> None:
    async def capture_payments(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            started = time.perf_counter()
            work: dict[str, tuple[faust.EventT, AuthorizePayment]] = {}
            outputs: list[Output] = []
            for event, step in await runtime.quarantine.each(events, decode):
                decided = runtime.psp_outcomes.get(step.payment_id)
                if decided is not None:  # asked again: answer with what was decided, call nobody
                    outputs.extend(outputs_for(step, decided, origin_of(event)))
                else:
                    work.setdefault(step.payment_id, (event, step))
            steps = [step for _, step in work.values()]
            outcomes = await asyncio.gather(*(authorize(runtime, step) for step in steps))
            if outcomes:
                crash_point("psp.after_capture")
            for (event, step), outcome in zip(work.values(), outcomes, strict=True):
                outputs.extend(outputs_for(step, outcome, origin_of(event)))
            await runtime.outlet.send(outputs)
            crash_point("psp.after_send")
            await runtime.psp_outcomes.record({
                step.payment_id: (event.message.partition, outcome)
                for (event, step), outcome in zip(work.values(), outcomes, strict=True)})
            runtime.metrics.step_duration.labels("psp").observe(time.perf_counter() - started)

    runtime.agent(PSP_STEPS, "psp", capture_payments)
