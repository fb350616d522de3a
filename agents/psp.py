"""The PSP step: capture at the provider without holding up the payments behind.

A provider call can last the whole retry budget (a silent provider: about 13 s with the
defaults). Awaited by the agent, it held its batch and every batch behind it on the
partition. So the agent never waits for the provider:

1. A new AuthorizePayment is recorded "in flight" in `psp_outcomes` (durably, before the
   batch is acked); then its call starts as a background task of this worker (`Calls`).
2. The call ends by sending PspAnswered to the PSP-steps topic, keyed by the payment id,
   so it lands on the same partition.
3. The agent, the partition's single writer, records the outcome and sends what follows
   (models/psp_flow.py): outputs acked first, then the table, then the batch.

Repeats: a request while in flight asks nobody (its call runs, or is restarted); after
the outcome it re-sends the outcome; an answer for a decided payment changes nothing.

Calls in flight die with their worker, and a partition can move to another one. The
holder of a partition restarts the calls of its in-flight payments (`keep_calls_running`,
after every table recovery) and cancels those of partitions it lost. A restarted call
sends the same idempotency key (the payment id), so the provider answers it with its
first answer instead of capturing twice; if two workers call at once during a
rebalance, the first answer recorded wins and the other is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

import faust

from agents.runtime import Runtime
from agents.shell import Delivery, Outlet, batches, deliveries
from infra.crash import crash_point
from infra.logs import payment_context
from infra.topics import PSP_STEPS
from models import psp_flow
from models.outputs import Dispatch, Output
from models.psp_flow import PspOutcomeRecord
from models.routing import PSP_STEP
from models.steps import AuthorizePayment, PspAnswered
from psp import PspApproved, PspDeclined, PspRequest, capture_with_retries

log = logging.getLogger(__name__)

# Provider calls running at once on one worker. Past it the agent waits for a free slot:
# an outage as wide as that is better met with backpressure than with unbounded tasks.
CALLS_MAX = 1_000
# How often the calls running here are matched with the partitions held.
CHECK_INTERVAL_SECONDS = 1.0
# In the stored JSON of every in-flight record: the scan after a table recovery skips the
# decided records (most of the table) without parsing them.
IN_FLIGHT_MARK = b'"in_flight"'

Changes = dict[str, tuple[int, PspOutcomeRecord]]


async def call_provider(runtime: Runtime, record: PspOutcomeRecord) -> PspAnswered:
    """Capture with retries (never raises for provider errors); the answer to send back."""
    step, requested_at = record.request, record.requested_at
    assert step is not None and requested_at is not None, "only in-flight records are called"
    request = PspRequest(payment_id=step.payment_id, amount=step.payment.amount,
                         currency=step.payment.currency,
                         simulation=step.payment.metadata.get("psp_simulation"))
    metrics = runtime.metrics
    started = time.perf_counter()
    outcome = await capture_with_retries(
        runtime.psp, request, runtime.psp_policy,
        on_retry=lambda kind: metrics.psp_retries.labels(kind).inc())
    metrics.psp_duration.observe(time.perf_counter() - started)
    answer = partial(PspAnswered, origin=requested_at, payment_id=step.payment_id)
    if isinstance(outcome, PspApproved):
        metrics.psp_requests.labels("approved").inc()
        return answer(result="approved", psp_reference=outcome.psp_reference)
    if isinstance(outcome, PspDeclined):
        metrics.psp_requests.labels("declined").inc()
        return answer(result="declined", detail=outcome.detail)
    metrics.psp_requests.labels("error").inc()
    return answer(result="gave_up", detail=outcome.detail)


def partition_of(record: PspOutcomeRecord) -> int:
    assert record.requested_at is not None, "only in-flight records are called"
    return record.requested_at.partition


class Answers:
    """Provider answers on their way to the PSP-steps topic, sent together.

    Calls started by one batch of requests end at about the same time; sent one by one,
    each answer was a message, a wait for the broker, and a handling of its own at the
    receiving end. Answers queued while a send is under way go in the next one."""

    def __init__(self, outlet: Outlet) -> None:
        self.outlet = outlet
        self.queued: list[tuple[PspAnswered, asyncio.Future[None]]] = []
        self.sending: asyncio.Task[None] | None = None

    async def send(self, answer: PspAnswered) -> None:
        """Returns once the broker has acknowledged the answer."""
        sent = asyncio.get_running_loop().create_future()
        self.queued.append((answer, sent))
        if self.sending is None or self.sending.done():
            self.sending = asyncio.create_task(self._send_queued(), name="psp answers")
        await sent

    async def _send_queued(self) -> None:
        await asyncio.sleep(0)  # the calls ending in this turn of the loop go along
        while self.queued:
            batch, self.queued = self.queued, []
            try:
                await self.outlet.send(Dispatch("psp", answer.payment_id, answer) for answer, _ in batch)
            except asyncio.CancelledError:  # the worker stops: no call is left waiting
                for _, sent in batch + self.queued:
                    sent.cancel()
                self.queued = []
                raise
            except Exception as error:  # noqa: BLE001 - each call sees it, as if it had sent alone
                settle(batch, error)
            else:
                settle(batch, None)


def settle(batch: list[tuple[PspAnswered, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, sent in batch:
        if sent.done():  # its call was cancelled
            continue
        if error is None:
            sent.set_result(None)
        else:
            sent.set_exception(error)


class Calls:
    """The provider calls of this worker: at most one per payment, at most CALLS_MAX.

    `in_flight` holds the in-flight payments of the partitions held here whose answer has
    not been sent yet: one without a running call (the worker restarted, took over the
    partition, or the call failed) is started again by `check`."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.answers = Answers(runtime.outlet)
        self.running: dict[str, tuple[int, asyncio.Task[None]]] = {}  # payment id -> (partition, call)
        self.in_flight: dict[str, int] = {}  # payment id -> partition
        self.voids: set[asyncio.Task[None]] = set()
        self.rescan_due = True
        self._slots = asyncio.Semaphore(CALLS_MAX)

    async def start(self, record: PspOutcomeRecord) -> None:
        """Make sure the payment's call runs here; waits while CALLS_MAX calls run."""
        payment_id = record.payment_id
        self.in_flight[payment_id] = partition_of(record)
        if payment_id in self.running:
            return
        await self._slots.acquire()
        if payment_id in self.running:  # started by someone else while this waited
            self._slots.release()
            return
        task = asyncio.create_task(self._call(record), name=f"psp call {payment_id}")
        self.running[payment_id] = (partition_of(record), task)
        task.add_done_callback(partial(self._ended, payment_id))

    async def _call(self, record: PspOutcomeRecord) -> None:
        answer = await call_provider(self.runtime, record)
        crash_point("psp.after_capture")  # answered, nothing sent: the holder calls again
        await self.answers.send(answer)
        # Acknowledged, so the partition's owner will read it: no reason to call again.
        self.in_flight.pop(record.payment_id, None)

    def _ended(self, payment_id: str, task: asyncio.Task[None]) -> None:
        self._slots.release()
        if self.running.get(payment_id, (0, None))[1] is task:
            del self.running[payment_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("psp call failed unexpectedly; it starts again within %.0fs", CHECK_INTERVAL_SECONDS,
                      exc_info=task.exception(), extra=payment_context(payment_id))

    async def check(self, held: set[int]) -> None:
        """Cancel the calls of partitions not held (their new holder restarts them), and
        start the in-flight payments of the partitions held that have no call running."""
        for partition, task in list(self.running.values()):
            if partition not in held:
                task.cancel()
        for payment_id, partition in list(self.in_flight.items()):
            if partition not in held:
                del self.in_flight[payment_id]
                continue
            if payment_id in self.running:
                continue
            record = self.runtime.psp_outcomes.get(payment_id)
            if record is None or record.decided:
                del self.in_flight[payment_id]
                continue
            if self._slots.locked():
                return  # full: the next check goes on
            log.info("psp call restarted", extra=payment_context(payment_id))
            await self.start(record)

    def rescan(self, held: set[int]) -> None:
        """Find the in-flight payments of the partitions held, from the table itself."""
        in_flight: dict[str, int] = {}
        for raw in self.runtime.psp_outcomes.raw_values():
            if IN_FLIGHT_MARK not in raw:
                continue
            record = PspOutcomeRecord.model_validate_json(raw)
            if not record.decided and partition_of(record) in held:
                in_flight[record.payment_id] = partition_of(record)
        self.in_flight = in_flight
        self.rescan_due = False

    def void(self, payment_id: str) -> None:
        """Best effort: cancel at the provider a capture the ledger will not post (a late
        approval, or what a recorded give-up's timed-out attempts may have captured)."""
        task = asyncio.create_task(self._void(payment_id), name=f"psp void {payment_id}")
        self.voids.add(task)
        task.add_done_callback(self.voids.discard)

    async def _void(self, payment_id: str) -> None:
        try:
            async with asyncio.timeout(self.runtime.psp_policy.attempt_timeout_seconds):
                await self.runtime.psp.void(payment_id)
        except Exception:  # noqa: BLE001 - best effort, logged for the operator
            log.exception("psp void failed: check the payment at the provider",
                          extra=payment_context(payment_id))

    def stop(self) -> None:
        for _, task in self.running.values():
            task.cancel()
        for task in self.voids:
            task.cancel()


def note_answer(current: PspOutcomeRecord | None, answer: PspAnswered, decision: psp_flow.PspDecision
                ) -> None:
    context = payment_context(answer.payment_id)
    if current is None:
        log.error("psp answer for a payment this worker has no request for", extra=context)
    elif current.decided and decision.void:
        log.warning("psp approved after the payment ended %s: voiding the capture at the provider",
                    current.result, extra=context)
    elif current.decided:
        log.info("psp answer %s ignored: the payment is already %s", answer.result, current.result,
                 extra=context)
    elif decision.void:
        log.info("psp gave up: voiding at the provider whatever its attempts captured", extra=context)


def install(app: faust.App, runtime: Runtime) -> None:
    calls = Calls(runtime)
    table = runtime.psp_outcomes

    async def handle(changed: Changes, starts: set[str], voids: list[str], delivery: Delivery
                     ) -> list[Output]:
        step = delivery.step(PSP_STEP)
        current = table.latest(step.payment_id, changed)
        if isinstance(step, AuthorizePayment):
            decision = psp_flow.on_request(current, step, delivery.origin)
        else:
            decision = psp_flow.on_answer(current, step, delivery.origin)
            note_answer(current, step, decision)
        if decision.record is not None:
            changed[step.payment_id] = (delivery.partition, decision.record)
        if decision.call is not None:
            starts.add(step.payment_id)
        if decision.void:
            voids.append(step.payment_id)
        return decision.outputs

    async def capture_payments(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            started = time.perf_counter()
            changed: Changes = {}
            starts: set[str] = set()
            voids: list[str] = []
            handle_each = partial(handle, changed, starts, voids)
            handled = await runtime.quarantine.each(deliveries(events), handle_each)
            await runtime.outlet.send(output for _, outputs in handled for output in outputs)
            crash_point("psp.after_send")
            await table.record(changed)
            crash_point("psp.after_record")  # in flight, no call started: redelivery or check starts it
            # Calls start once their in-flight record is durable: whatever happens to this
            # worker from here on, the partition's holder finds the record and calls again.
            # (A call started earlier would be harmless too: the batch is not acked yet, so
            # a crash redelivers the request, and the provider dedupes on the payment id.)
            for payment_id in starts:
                record = table.get(payment_id)
                if record is not None and not record.decided:  # an answer later in the batch decided it
                    await calls.start(record)
            for payment_id in voids:
                calls.void(payment_id)
            runtime.metrics.step_duration.labels("psp").observe(time.perf_counter() - started)

    runtime.agent(PSP_STEPS, "psp", capture_payments)

    @table.table.on_recover
    async def rescan_after_recovery() -> None:
        calls.rescan_due = True

    @app.task
    async def keep_calls_running() -> None:
        """After a recovery (a start, a rebalance), find the in-flight payments of the
        partitions held here; every second, run their calls here and no others."""
        held_before: set[int] = set()
        try:
            while True:
                await asyncio.sleep(CHECK_INTERVAL_SECONDS)
                if app.rebalancing:  # assignment and table state are changing: wait for the end
                    continue
                held = {tp.partition for tp in app.consumer.assignment() if tp.topic == PSP_STEPS}
                if calls.rescan_due or held != held_before:  # the latter: should a callback be missed
                    calls.rescan(held)
                    held_before = held
                await calls.check(held)
        finally:
            calls.stop()
