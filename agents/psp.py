"""The provider calls: capture at the PSP without holding up the payments behind.

A provider call can last the whole retry budget (a silent provider: about 13 s with the
defaults). Awaited by the owner, it held its batch and every batch behind it on the
partition. So the owner never waits for the provider:

1. A payment whose funds are reserved is recorded "in flight" at its home (durably, before
   the batch is acked); then its call starts as a background task of this worker (`Calls`).
2. The call ends by sending PspAnswered to the payment's home, so it is read by the
   partition's single writer, which records the outcome and takes the next steps.

Calls in flight die with their worker, and a partition can move to another one. The
holder of a partition restarts the calls of its in-flight payments (`keep_running`, after
every table recovery) and cancels those of partitions it lost. A restarted call sends the
same idempotency key (the payment id), so the provider answers it with its first answer
instead of capturing twice; if two workers call at once during a rebalance, the first
answer recorded wins and the other is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from functools import partial

import msgspec

from agents.outlet import Outlet
from infra.crash import crash_point
from infra.logs import payment_context
from infra.metrics import Metrics
from models.outputs import Dispatch
from models.payment import IN_FLIGHT_MARK, Payment
from models.steps import PspAnswered
from psp import (
    PaymentServiceProvider,
    PspApproved,
    PspDeclined,
    PspRequest,
    RetryPolicy,
    capture_with_retries,
)

log = logging.getLogger(__name__)

# Provider calls running at once on one worker. Past it the owner waits for a free slot:
# an outage as wide as that is better met with backpressure than with unbounded tasks.
CALLS_MAX = 1_000
# How often the calls running here are matched with the partitions held.
CHECK_INTERVAL_SECONDS = 1.0

_PAYMENT = msgspec.json.Decoder(Payment)


async def call_provider(psp: PaymentServiceProvider, policy: RetryPolicy, metrics: Metrics, payment: Payment
                        ) -> PspAnswered:
    """Capture with retries (never raises for provider errors); the answer to send back."""
    request = payment.request
    started = time.perf_counter()
    outcome = await capture_with_retries(
        psp, PspRequest(payment.payment_id, request.amount, request.currency,
                        request.metadata.get("psp_simulation")),
        policy, on_retry=lambda kind: metrics.psp_retries.labels(kind).inc())
    metrics.psp_duration.observe(time.perf_counter() - started)
    assert payment.requested_at is not None, "an in-flight payment knows the step that started its call"
    answer = partial(PspAnswered, origin=payment.requested_at, payment_id=payment.payment_id,
                     home=request.debtor_account_id)
    if isinstance(outcome, PspApproved):
        metrics.psp_requests.labels("approved").inc()
        return answer(result="approved", psp_reference=outcome.psp_reference)
    if isinstance(outcome, PspDeclined):
        metrics.psp_requests.labels("declined").inc()
        return answer(result="declined", detail=outcome.detail)
    metrics.psp_requests.labels("error").inc()
    return answer(result="gave_up", detail=outcome.detail)


class Answers:
    """Provider answers on their way to the payments' homes, sent together.

    Calls started by one batch end at about the same time; sent one by one, each answer
    was a message, a wait for the broker, and a handling of its own at the receiving end.
    Answers queued while a send is under way go in the next one."""

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
                await self.outlet.send([Dispatch(answer.home, answer) for answer, _ in batch])
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

    def __init__(self, psp: PaymentServiceProvider, policy: RetryPolicy, metrics: Metrics, outlet: Outlet,
                 partition_of: Callable[[str], int]) -> None:
        self.psp = psp
        self.policy = policy
        self.metrics = metrics
        self.answers = Answers(outlet)
        self.partition_of = partition_of
        self.running: dict[str, tuple[int, asyncio.Task[None]]] = {}  # payment id -> (partition, call)
        self.in_flight: dict[str, Payment] = {}
        self.voids: set[asyncio.Task[None]] = set()
        self.rescan_due = True
        self._slots = asyncio.Semaphore(CALLS_MAX)

    def home_partition(self, payment: Payment) -> int:
        return self.partition_of(payment.request.debtor_account_id)

    async def start(self, payment: Payment) -> None:
        """Make sure the payment's call runs here; waits while CALLS_MAX calls run."""
        payment_id = payment.payment_id
        self.in_flight[payment_id] = payment
        if payment_id in self.running:
            return
        await self._slots.acquire()
        if payment_id in self.running:  # started by someone else while this waited
            self._slots.release()
            return
        task = asyncio.create_task(self._call(payment), name=f"psp call {payment_id}")
        self.running[payment_id] = (self.home_partition(payment), task)
        task.add_done_callback(partial(self._ended, payment_id))

    async def _call(self, payment: Payment) -> None:
        answer = await call_provider(self.psp, self.policy, self.metrics, payment)
        crash_point("psp.after_capture")  # answered, nothing sent: the holder calls again
        await self.answers.send(answer)
        # Acknowledged, so the partition's owner will read it: no reason to call again.
        self.in_flight.pop(payment.payment_id, None)

    def _ended(self, payment_id: str, task: asyncio.Task[None]) -> None:
        self._slots.release()
        if self.running.get(payment_id, (0, None))[1] is task:
            del self.running[payment_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("psp call failed unexpectedly; it starts again within %.0fs", CHECK_INTERVAL_SECONDS,
                      exc_info=task.exception(), extra=payment_context(payment_id))

    async def check(self, held: set[int], current: Callable[[str, int], Payment | None]) -> None:
        """Cancel the calls of partitions not held (their new holder restarts them), and
        start the in-flight payments of the partitions held that have no call running
        (`current(payment_id, home partition)`: its record as stored there)."""
        for partition, task in list(self.running.values()):
            if partition not in held:
                task.cancel()
        for payment_id, payment in list(self.in_flight.items()):
            home = self.home_partition(payment)
            if home not in held:
                del self.in_flight[payment_id]
                continue
            if payment_id in self.running:
                continue
            record = current(payment_id, home)
            if record is None or record.psp != "in_flight":
                del self.in_flight[payment_id]
                continue
            if self._slots.locked():
                return  # full: the next check goes on
            log.info("psp call restarted", extra=payment_context(payment_id))
            await self.start(record)

    def rescan(self, held: set[int], stored: Iterator[tuple[bytes, bytes]]) -> None:
        """Find the in-flight payments of the partitions held, in the table itself."""
        in_flight: dict[str, Payment] = {}
        for key, raw in stored:
            if IN_FLIGHT_MARK not in raw or not key.startswith(b"p:"):
                continue
            payment = _PAYMENT.decode(raw)
            if payment.psp == "in_flight" and self.home_partition(payment) in held:
                in_flight[payment.payment_id] = payment
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
            async with asyncio.timeout(self.policy.attempt_timeout_seconds):
                await self.psp.void(payment_id)
        except Exception:  # noqa: BLE001 - best effort, logged for the operator
            log.exception("psp void failed: check the payment at the provider",
                          extra=payment_context(payment_id))

    def stop(self) -> None:
        for _, task in self.running.values():
            task.cancel()
        for task in self.voids:
            task.cancel()
