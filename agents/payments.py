"""The payment owner: each payment's record, its one outcome, and its refunds."""

from __future__ import annotations

import logging
from functools import partial

import faust

from agents.runtime import Runtime
from agents.shell import Delivery, batches, deliveries
from infra.crash import crash_point
from infra.logs import payment_context
from infra.topics import PAYMENT_STEPS
from models import payment as flow
from models.events import RefundFailed
from models.outputs import Output, Publish
from models.payment import PaymentRecord
from models.routing import PAYMENT_STEP
from models.steps import (
    Origin,
    PaymentAuthorizedStep,
    PaymentPosted,
    PaymentStep,
    PaymentStepFailed,
    PaymentSubmitted,
    RefundPosted,
    RefundStepFailed,
    RefundSubmitted,
)

log = logging.getLogger(__name__)

Reaction = tuple[PaymentRecord | None, list[Output]]


def react(record: PaymentRecord | None, step: PaymentStep, origin: Origin, risk_max_amount: int
          ) -> Reaction:
    match step:
        case PaymentSubmitted():
            return flow.submit(record, step.payment_id, step.fingerprint, step.command, origin,
                               risk_max_amount)
        case RefundSubmitted():
            return flow.submit_refund(record, step, origin)
    if record is None:
        return None, []  # news about a payment never submitted here: nothing to update
    match step:
        case PaymentAuthorizedStep():
            return flow.authorized(record, step), []
        case PaymentStepFailed():
            return flow.step_failed(record, step)
        case PaymentPosted():
            return flow.posted(record, step), []
        case RefundPosted():
            return flow.refund_posted(record, step), []
        case RefundStepFailed():
            return flow.refund_step_failed(record, step)
    raise AssertionError(f"unhandled payment step {step!r}")


def observe(runtime: Runtime, before: PaymentRecord | None, after: PaymentRecord) -> None:
    if after.outcome is not None and (before is None or before.outcome is None):
        reason = after.reason.value if after.reason else ""
        # A failure is what an operator reads the log for; captures are counted in the
        # metrics and published as events, and at hundreds per second one line each was
        # ~3% of the worker's CPU.
        level = logging.INFO if reason else logging.DEBUG
        if log.isEnabledFor(level):
            log.log(level, "payment %s%s", after.status, f": {reason} ({after.detail})" if reason else "",
                    extra=payment_context(after.payment_id, after.request.idempotency_key))
        runtime.metrics.outcomes.labels(after.status, reason).inc()
        started = after.history[0].at
        runtime.metrics.end_to_end.labels(after.status).observe(
            (after.history[-1].at - started).total_seconds())


def count_refund(runtime: Runtime, step: PaymentStep, before: PaymentRecord | None,
                 after: PaymentRecord | None, outputs: list[Output]) -> None:
    if isinstance(step, RefundPosted) and after is not before:
        runtime.metrics.refunds.labels("refunded").inc()
    failed = sum(1 for o in outputs if isinstance(o, Publish) and isinstance(o.event, RefundFailed))
    if failed and (after is not before or isinstance(step, RefundSubmitted) and before is None):
        runtime.metrics.refunds.labels("failed").inc(failed)


def install(app: faust.App, runtime: Runtime) -> None:
    risk_max_amount = runtime.settings.risk_max_amount

    async def handle(changed: dict[str, tuple[int, PaymentRecord]], delivery: Delivery) -> list[Output]:
        step = delivery.step(PAYMENT_STEP)
        payment_id = delivery.key
        current = runtime.payments.latest(payment_id, changed)
        if current is None and not isinstance(step, PaymentSubmitted | RefundSubmitted):
            # Cannot happen while the table is complete: a step of an unknown payment means
            # this worker's view of the partition is missing state. Say so loudly.
            log.error("step %s for a payment this worker does not know (at %s, assigned %s)",
                      step.kind, delivery.origin.place,
                      sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == PAYMENT_STEPS),
                      extra=payment_context(payment_id))
        record, outputs = react(current, step, delivery.origin, risk_max_amount)
        count_refund(runtime, step, current, record, outputs)
        if record is not None and record is not current:
            observe(runtime, current, record)
            changed[payment_id] = (delivery.partition, record)
        return outputs

    async def own_payments(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            changed: dict[str, tuple[int, PaymentRecord]] = {}
            handled = await runtime.quarantine.each(deliveries(events), partial(handle, changed))
            await runtime.outlet.send(output for _, outputs in handled for output in outputs)
            crash_point("payments.after_send")
            await runtime.payments.record(changed)
            crash_point("payments.after_record")

    runtime.agent(PAYMENT_STEPS, "payments", own_payments)
