"""The PSP answering late, twice, or about nothing, through the real broker and PostgreSQL.

A provider call ends by sending a `PspAnswered` step to the payment's home (the steps
topic, keyed by the debtor account); the home records the first answer and ignores the
others (agents/psp.py, models/owner.py `on_answer`). A late or repeated provider answer
is therefore a second `PspAnswered` there, and these tests publish exactly that, encoded
as the worker's outlet does (`models.steps.encode_step`), then check from outside that
no money moves twice or after a failure.

The origin: answers come in any order, so the home does not track them by position; it
decides on the payment's record alone. The tests give an injected answer the position
of the step that started the call (what a late call would send) and, once, a made-up
one. Each test waits until the worker's group has committed past the answers (handled,
and whatever they caused sent), watches a moment for anything more, checks the money,
then the worker's log line of each decision: the answers reached the decision and were
refused there, not dropped before it.
"""

from __future__ import annotations

import operator
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import msgspec
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import RecordMetadata

from harness.driver import OUTBOUND_TOPICS
from infra.topics import APP_ID, DEAD_LETTER, STEPS
from models.payment import payment_id_for
from models.steps import BadStep, Origin, PspAnswered, decode_message, encode_step
from tests.conftest import Service
from tests.integration.outside import (
    account_settles,
    fund,
    get,
    ledger_balance,
    open_accounts,
    outcome,
    payment_view,
    poll,
    postings_of,
    quiet,
    send_raw,
    sql,
)

QUIET_AFTER_ANSWER_SECONDS = 2.0  # watched once the answers are handled: nothing more may follow
LATE_ANSWER_LOGGED = "psp approved after the payment ended gave_up: voiding the capture at the provider"
NO_REQUEST_LOGGED = "psp answer for a payment this partition does not hold"
GAVE_UP_VOID_LOGGED = "psp gave up: voiding at the provider whatever its attempts captured"


def ignored_logged(result: str, decided: str) -> str:
    return f"psp answer {result} ignored: the payment is already {decided}"


# --- the steps topic, as the worker's own calls use it --------------------------------------------


async def publish_answer(service: Service, answer: PspAnswered) -> RecordMetadata:
    """What a provider call's end sends (agents/psp.py `Calls._call` through the outlet)."""
    return await send_raw(service.driver, STEPS, answer.home.encode(), encode_step(answer))


@dataclass(frozen=True)
class StepRecord:
    """One step read from the steps topic (a message carries a batch of them)."""

    topic: str
    partition: int
    offset: int
    index: int
    step: Any

    @property
    def kind(self) -> str:
        return type(self.step).__name__

    @property
    def value(self) -> bytes:
        """The step's own JSON, publishable on its own."""
        return encode_step(self.step)


def position(record: StepRecord) -> Origin:
    return Origin(record.topic, record.partition, record.offset, record.index)


def about(step: Any, payment_id: str) -> bool:
    submitted = getattr(step, "submitted", None)
    return (
        getattr(step, "payment_id", None) == payment_id
        or getattr(submitted, "payment_id", None) == payment_id
    )


async def steps_about(service: Service, payment_id: str, kind: str | None = None) -> list[StepRecord]:
    """Every step of the steps topic about the payment (optionally of one kind), read from
    the beginning to the end offsets, without deduplication."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=service.bootstrap, group_id=None, auto_offset_reset="earliest", fetch_max_wait_ms=50
    )
    await consumer.start()
    found: list[StepRecord] = []
    try:
        await consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh view
        partitions = [TopicPartition(STEPS, p) for p in consumer.partitions_for_topic(STEPS) or ()]
        assert partitions, f"no partitions for {STEPS}"
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        ends = await consumer.end_offsets(partitions)
        deadline = time.monotonic() + 20
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            assert time.monotonic() < deadline, f"could not read {STEPS} to its end"
            batches = await consumer.getmany(timeout_ms=200)
            for messages in batches.values():
                for message in messages:
                    for index, step in enumerate(decode_message(message.value)):
                        if not isinstance(step, BadStep) and about(step, payment_id):
                            found.append(
                                StepRecord(message.topic, message.partition, message.offset, index, step)
                            )
    finally:
        await consumer.stop()
    return [record for record in found if kind is None or record.kind == kind]


async def committed_offset(service: Service, topic: str, partition: int) -> int:
    """The worker group's committed offset (the next to read) of one partition: -1 if none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=service.bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            APP_ID, partitions=[TopicPartition(topic, partition)]
        )
    finally:
        await admin.close()
    committed = offsets.get(TopicPartition(topic, partition))
    return -1 if committed is None else committed.offset


async def handled(service: Service, *answers: RecordMetadata | StepRecord) -> None:
    """Wait until the worker has acknowledged the answers (its group committed past them):
    decided, and whatever the decisions said to send is sent."""
    for answer in answers:
        where = TopicPartition(answer.topic, answer.partition)
        await poll(
            partial(committed_offset, service, where.topic, where.partition),
            partial(operator.lt, answer.offset),
            timeout_seconds=30,
            what=f"the worker's offset committed past {where}@{answer.offset}",
        )


# --- what the worker did -------------------------------------------------------------------------


def worker_log(service: Service, payment_id: str, text: str) -> list[dict[str, Any]]:
    found = []
    for raw in service.workers[0].log.read_text().splitlines():
        if raw.startswith("{") and payment_id in raw:
            line = orjson.loads(raw)
            if line.get("payment_id") == payment_id and text in line.get("message", ""):
                found.append(line)
    return found


def published_about(service: Service, payment_id: str) -> dict[str, list[bytes]]:
    """Every outbound message about the payment the driver has seen, by topic (event ids dedup)."""
    events = service.driver.events
    key = payment_id.encode()
    return {topic: [r.value for r in events[topic] if r.key == key] for topic in OUTBOUND_TOPICS}


async def all_published(service: Service, payment_id: str, *event_types: str) -> None:
    """Wait until the driver has seen these events about the payment: the topics are read
    independently, so an outcome can arrive before the intermediate facts that preceded it."""
    topics = [f"fintech.events.{event_type}" for event_type in event_types]
    await service.driver.wait_for(lambda: all(published_about(service, payment_id)[t] for t in topics),
                                  timeout_seconds=20, what=f"{', '.join(event_types)} of {payment_id}")


def dead_letters(service: Service) -> int:
    return len(service.driver.events[DEAD_LETTER])


async def transactions_of(service: Service, payment_id: str) -> int:
    rows = await sql(
        service, "SELECT COUNT(DISTINCT transaction_id) AS n FROM postings WHERE payment_id = $1", payment_id
    )
    return int(rows[0]["n"])


# --- 1. an approval after the payment failed and its reservation was released -----------------------


async def test_a_late_approval_after_compensation_moves_no_money(service: Service) -> None:
    driver = service.driver
    debtor, creditor, key = "pa-late-debtor", "pa-late-creditor", "pa-late-1"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pa-late-fund", debtor, 5_000)
    await driver.pay(key, debtor, creditor, 3_000, metadata={"psp_simulation": "timeout"})
    payment_id = payment_id_for(key)
    failed = await outcome(driver, payment_id, 30)
    assert failed["event_type"] == "PaymentFailed" and failed["reason"] == "psp_unavailable", failed
    await account_settles(service, debtor, 5_000)  # compensated: the hold is released

    [request] = await steps_about(service, payment_id, "PaymentSubmitted")
    [gave_up] = await steps_about(service, payment_id, "PspAnswered")
    assert gave_up.step.result == "gave_up" and gave_up.step.origin == position(request)
    _, view_before = await payment_view(service, payment_id)
    await all_published(service, payment_id, "PaymentInitiated", "PaymentFailed")
    published_before, dead_before = published_about(service, payment_id), dead_letters(service)

    # The provider answers at last (as the call would: the request's position as origin),
    # and once more from a made-up position far below it.
    late = PspAnswered(
        origin=position(request),
        payment_id=payment_id,
        home=debtor,
        result="approved",
        psp_reference="psp-late-approval-1",
    )
    landed = await publish_answer(service, late)
    assert landed.partition == request.partition  # the same partition: its owner decides
    made_up = Origin(STEPS, request.partition, 0)
    landed_too = await publish_answer(
        service, msgspec.structs.replace(late, origin=made_up, psp_reference="psp-late-2")
    )
    await handled(service, landed, landed_too)
    await quiet(QUIET_AFTER_ANSWER_SECONDS)

    assert driver.outcomes()[payment_id] == [failed]
    assert published_about(service, payment_id) == published_before  # no PaymentAuthorized, nothing
    assert not [e for e in driver.of("PaymentAuthorized") if e["payment_id"] == payment_id]
    assert dead_letters(service) == dead_before
    assert await steps_about(service, payment_id, "ApplyCredit") == []  # no capture's credit
    assert await postings_of(service, payment_id) == []
    await account_settles(service, debtor, 5_000)
    await account_settles(service, creditor, 0)
    assert (await ledger_balance(service, debtor), await ledger_balance(service, creditor)) == (5_000, 0)
    status, view = await payment_view(service, payment_id)
    assert status == 200 and view == view_before, view
    assert (view["status"], view["reason"], view["psp_reference"]) == ("failed", "psp_unavailable", None)
    # Decided, not skipped: both answers reached the decision, which voids at the provider;
    # so did the give-up, once recorded as the outcome.
    assert len(worker_log(service, payment_id, LATE_ANSWER_LOGGED)) == 2
    assert len(worker_log(service, payment_id, GAVE_UP_VOID_LOGGED)) == 1


# --- 2. the same answer twice, and a contradicting one, after the capture ---------------------------


async def test_a_repeated_or_contradicting_answer_after_the_capture_changes_nothing(service: Service) -> None:
    driver = service.driver
    debtor, creditor, key = "pa-twice-debtor", "pa-twice-creditor", "pa-twice-1"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pa-twice-fund", debtor, 5_000)
    await driver.pay(key, debtor, creditor, 1_234)
    payment_id = payment_id_for(key)
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured", captured
    await account_settles(service, debtor, 5_000 - 1_234)

    [answered] = await steps_about(service, payment_id, "PspAnswered")
    first = answered.step
    assert (first.result, first.psp_reference) == ("approved", captured["psp_reference"])
    _, view_before = await payment_view(service, payment_id)
    await all_published(service, payment_id, "PaymentInitiated", "PaymentAuthorized", "PaymentCaptured")
    published_before, dead_before = published_about(service, payment_id), dead_letters(service)

    # The very same bytes again (a provider or a restarted call answering twice), then a
    # decline and a give-up for the same request.
    landed = [await publish_answer(service, first)]
    landed.append(
        await publish_answer(
            service,
            msgspec.structs.replace(
                first, result="declined", psp_reference=None, detail="declined on the second call"
            ),
        )
    )
    landed.append(
        await publish_answer(
            service,
            msgspec.structs.replace(
                first, result="gave_up", psp_reference=None, detail="no answer on the second call"
            ),
        )
    )
    await handled(service, *landed)
    await quiet(QUIET_AFTER_ANSWER_SECONDS)

    assert driver.outcomes()[payment_id] == [captured]
    assert published_about(service, payment_id) == published_before
    assert dead_letters(service) == dead_before
    assert await postings_of(service, payment_id) == [(debtor, -1_234), (creditor, 1_234)]
    assert await transactions_of(service, payment_id) == 1
    await account_settles(service, debtor, 5_000 - 1_234)
    await account_settles(service, creditor, 1_234)
    assert (await ledger_balance(service, debtor), await ledger_balance(service, creditor)) == (3_766, 1_234)
    status, view = await payment_view(service, payment_id)
    assert status == 200 and view == view_before, view
    assert (view["status"], view["psp_reference"]) == ("captured", captured["psp_reference"])
    assert len(worker_log(service, payment_id, ignored_logged("approved", "approved"))) == 1
    assert len(worker_log(service, payment_id, ignored_logged("declined", "approved"))) == 1
    # A give-up after the capture is ignored like any later answer: nothing is voided.
    assert len(worker_log(service, payment_id, ignored_logged("gave_up", "approved"))) == 1
    assert worker_log(service, payment_id, GAVE_UP_VOID_LOGGED) == []


# --- 2b. an approval while the call still runs, then the call's own give-up -------------------------


async def test_an_approval_while_the_call_runs_wins_over_the_calls_own_give_up(service: Service) -> None:
    """The first answer recorded wins: the payment is captured once, and the silent call's
    give-up that follows neither releases the captured money, nor fails the payment, nor
    voids the capture at the provider."""
    driver = service.driver
    debtor, creditor, key = "pa-early-debtor", "pa-early-creditor", "pa-early-1"
    await open_accounts(service, debtor, creditor)
    await fund(service, "pa-early-fund", debtor, 5_000)
    await driver.pay(key, debtor, creditor, 2_000, metadata={"psp_simulation": "timeout"})
    payment_id = payment_id_for(key)
    [request] = await poll(
        lambda: steps_about(service, payment_id, "PaymentSubmitted"),
        lambda found: len(found) == 1,
        what="the payment at its home",
    )
    # Its call runs once the batch that reserved its funds is recorded; an answer read in
    # that same batch would find no payment in flight yet.
    await handled(service, request)
    await publish_answer(
        service,
        PspAnswered(
            origin=position(request),
            payment_id=payment_id,
            home=debtor,
            result="approved",
            psp_reference="psp-early-1",
        ),
    )
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured", captured
    assert captured["psp_reference"] == "psp-early-1"

    # The call started by the request is still silent; when its budget is spent, it answers.
    answers = await poll(
        lambda: steps_about(service, payment_id, "PspAnswered"),
        lambda found: len(found) >= 2,
        timeout_seconds=40,
        what="the call's own answer",
    )
    assert [record.step.result for record in answers] == ["approved", "gave_up"]
    await handled(service, *answers)
    await quiet(QUIET_AFTER_ANSWER_SECONDS)

    assert driver.outcomes()[payment_id] == [captured]
    assert await postings_of(service, payment_id) == [(debtor, -2_000), (creditor, 2_000)]
    assert await transactions_of(service, payment_id) == 1
    await account_settles(service, debtor, 3_000)
    await account_settles(service, creditor, 2_000)
    status, view = await payment_view(service, payment_id)
    assert status == 200 and (view["status"], view["psp_reference"]) == ("captured", "psp-early-1"), view
    # The call's own give-up came second: ignored, and the capture is not voided at the
    # provider (it used to be, by the call itself, while the ledger posted it).
    assert len(worker_log(service, payment_id, ignored_logged("gave_up", "approved"))) == 1
    assert worker_log(service, payment_id, GAVE_UP_VOID_LOGGED) == []


# --- 3. an answer about a payment nobody asked about ---------------------------------------------------


async def test_an_answer_for_an_unknown_payment_is_logged_and_ignored(service: Service) -> None:
    driver = service.driver
    payment_id = payment_id_for("pa-nobody-asked")
    published_before, dead_before = published_about(service, payment_id), dead_letters(service)
    settlement_before = await ledger_balance(service, "settlement:USD")

    stray = PspAnswered(
        origin=Origin(STEPS, 0, 0),
        payment_id=payment_id,
        home="pa-nobody-debtor",
        result="approved",
        psp_reference="psp-stray-1",
    )
    landed = await publish_answer(service, stray)
    await handled(service, landed)  # and acknowledged: the partition moves on past it
    await quiet(QUIET_AFTER_ANSWER_SECONDS)

    # What the code does: an error log line, no record, no output, no dead letter.
    [line] = worker_log(service, payment_id, NO_REQUEST_LOGGED)
    assert line["level"] == "error"
    assert payment_id not in driver.outcomes()
    assert published_about(service, payment_id) == published_before == {t: [] for t in OUTBOUND_TOPICS}
    assert dead_letters(service) == dead_before
    assert [record.kind for record in await steps_about(service, payment_id)] == ["PspAnswered"]  # the stray
    assert await postings_of(service, payment_id) == []
    assert await ledger_balance(service, "settlement:USD") == settlement_before
    status, _ = await payment_view(service, payment_id)
    assert status == 404
    status, health = await get(f"{service.workers[0].url}/healthz")
    assert status == 200 and health["ready"], health
    assert service.workers[0].process is not None and service.workers[0].process.poll() is None

    # A real payment of the same id afterwards is asked for and captured as usual.
    await open_accounts(service, "pa-nobody-debtor", "pa-nobody-creditor")
    await fund(service, "pa-nobody-fund", "pa-nobody-debtor", 1_000)
    await driver.pay("pa-nobody-asked", "pa-nobody-debtor", "pa-nobody-creditor", 400)
    captured = await outcome(driver, payment_id)
    assert captured["event_type"] == "PaymentCaptured", captured
    assert captured["psp_reference"] != "psp-stray-1"
    assert await postings_of(service, payment_id) == [("pa-nobody-debtor", -400), ("pa-nobody-creditor", 400)]
