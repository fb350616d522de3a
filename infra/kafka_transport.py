"""Faust's aiokafka transport, with the changes the payment flow depends on.

1. Batch delivery. Faust hands a stream one event per record and pays ~150 us of its
   own machinery for each (a task pair per message in the drain loop, the conductor, the
   stream queue, the sensors, the ack bookkeeping), where aiokafka itself reads a record
   in ~3 us. For the topics an app names with `deliver_in_batches`, the consumer hands
   over one `RecordBatchMessage` per partition and fetch instead: its `records` are the
   fetched records in offset order, its offset is the last one's. The stream, acks,
   commits, rebalances and the agents' crash-safety are Faust's, per batch. Other
   topics (table changelogs above all, which table recovery reads) keep Faust's own
   record-by-record delivery.

2. Contiguous delivery. Faust hands a stream every fetched record whose offset is at or
   past the partition's read offset, and treats a jump in offsets as a gap of a
   compacted topic, which it later commits past. Around a rebalance that is how messages
   get lost: records fetched before a seek back to the committed offset are still in
   hand after it, and the first of them "opens a gap" over the messages the seek was
   meant to replay. Our inbound and internal topics are never compacted, so here a jump
   always means skipped messages: the consumer delivers, per partition, only the offset
   it expects next, seeks back when it sees a jump, and never commits past an offset
   that was not acknowledged. A repeat is harmless (every handler is idempotent); a
   message skipped is not.

3. True end offsets of changelogs. The embedded broker reports a partition's end offset
   as the base offset of its last record batch plus one, so a table recovery reading "up
   to the end offset" would stop short of a multi-record last batch. `highwaters` of a
   changelog partition reads that last batch and answers one past its last record
   (Apache Kafka's answer, which it gives anyway).

4. Bounded reading ahead. A batched partition with BATCHES_IN_HAND_MAX batches delivered
   and not yet acknowledged is left out of the next fetches until the loop acknowledges
   one, so a backlog waits at the broker, not in the worker's memory. Faust's own flow
   control (pausing a partition when the stream's buffer fills) stays as the last
   resort: its resume can be missed, which stalls the partition until the monitor reads
   it again (agents/monitor.py); with this bound the buffer never fills.

5. Paced fetches. A fetch waits until FETCH_MIN_BYTES are there or the fetch wait has
   passed (PAYMENTS_CONSUMER_FETCH_WAIT_MS; Faust hard-codes 1,500 ms, and the embedded
   broker answers an empty fetch only at the end of the wait, adding the whole wait to
   every hop). With Faust's minimum of one byte, a consumer whose partitions receive a
   little all the time fetched ~750 times a second, and the broker spent ~0.6 ms of CPU
   on each fetch of 24 partitions: half a core at 200 payments/s. Waiting for the bytes
   (or the wait) costs a hop at most the fetch wait, and fetches many records at once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, AppT, ConsumerMessage, Message
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

log = logging.getLogger(__name__)

FETCH_WAIT_ENV = "PAYMENTS_CONSUMER_FETCH_WAIT_MS"
FETCH_WAIT_DEFAULT_MS = 5
FETCH_MIN_BYTES = 1024 * 1024
# A jump seen again in this many fetches after seeking back over it is real: the
# offsets do not exist (a topic written with Kafka transactions has control records).
REAL_GAP_AFTER_FETCHES = 3
CHANGELOG_SUFFIX = "-changelog"
# Per batched partition (4.): a batch is a fetch's records of the partition, at most
# `broker_max_poll_records` (app.py), so this bounds what a worker holds of a backlog.
BATCHES_IN_HAND_MAX = 4
HELD_BACK_WAIT_SECONDS = 0.002  # every partition held back: the fetch loop waits, not spins
END_PROBE_TIMEOUT_SECONDS = 5.0


def deliver_in_batches(app: AppT, topics: Iterable[str]) -> None:
    """Have the consumer hand these topics' records to their streams in batches (as well as
    those named before: each agent names its own)."""
    app.batched_topics = getattr(app, "batched_topics", frozenset()) | frozenset(topics)  # type: ignore[attr-defined]


def withhold(consumer: Any, messages: Iterable[Message]) -> None:
    """Never count these messages as done, whatever acks them next: a take() buffer acks
    every event it handed out once it is closed, a stopping agent's mid-batch included, and
    the final commit would then go past them. Marked acked without being counted, they keep
    the committed offset before them, so they are delivered again."""
    with ack_lock:
        for message in messages:
            message.acked = True
            consumer._unacked_messages.discard(message)  # noqa: SLF001 - no public way


def delivery_decision(offset: int, expected: int | None) -> str:
    """What to do with a fetched record: "deliver" it, drop it as a "repeat" of one
    already delivered, or treat it as a "jump" over messages not delivered yet."""
    if expected is None or offset == expected:
        return "deliver"
    return "repeat" if offset < expected else "jump"


def contiguous_run(records: Sequence[ConsumerRecord], expected: int | None
                   ) -> tuple[list[ConsumerRecord], int | None]:
    """The records to deliver from a fetched list: those from `expected` on, up to the
    first jump. Also the offset of the first record past a jump (None when there is none)."""
    run: list[ConsumerRecord] = []
    for record in records:
        decision = delivery_decision(record.offset, expected)
        if decision == "repeat":
            continue
        if decision == "jump":
            return run, record.offset
        run.append(record)
        expected = record.offset + 1
    return run, None


@dataclass(frozen=True, slots=True)
class Run:
    """One stretch of delivery of a partition: from `start` on, in order, until the next
    assignment or seek begins another (`number` tells them apart)."""

    number: int
    start: int


class RecordBatchMessage(ConsumerMessage):
    """Several consecutive records of one partition, delivered to a stream as one event.

    Acked as one: committing past it commits past all of its records. `run` and `seq`
    (1, 2, ... within the run) say where it stands in its partition's delivery, so that
    its receiver can tell when one before it never reached it (agents/loop.py, InOrder)."""

    __slots__ = ("records", "run", "seq")

    def __init__(self, tp: TP, records: list[ConsumerRecord], generation_id: int | None,
                 run: Run | None = None, seq: int = 0) -> None:
        last = records[-1]
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else 0.0
        super().__init__(tp.topic, tp.partition, last.offset, timestamp, last.timestamp_type, [],
                         None, b"", None, 0, sum(r.serialized_value_size for r in records), tp,
                         generation_id=generation_id)
        self.records = records
        self.run = run
        self.seq = seq

    @property
    def first_offset(self) -> int:
        return int(self.records[0].offset)


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(os.environ.get(FETCH_WAIT_ENV, FETCH_WAIT_DEFAULT_MS))
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer


def enough_in_hand(partitions: set[TP], in_hand: Mapping[TP, int], limit: int = BATCHES_IN_HAND_MAX
                   ) -> set[TP]:
    """The partitions not to fetch now: those with `limit` batches delivered and not yet
    acknowledged (4.)."""
    return {tp for tp in partitions if in_hand.get(tp, 0) >= limit}


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expected: dict[TP, int] = {}  # next offset to deliver, per partition
        self._jumps: dict[TP, tuple[int, int]] = {}  # (offset sought back to, at fetch number)
        self._fetches = 0
        # Per batched partition: the last offsets of the batches delivered and not yet
        # committed past, in delivery order.
        self._delivered: dict[TP, deque[int]] = {}
        self._runs: dict[TP, Run] = {}  # the current stretch of delivery, per batched partition
        self._sequence: dict[TP, int] = {}  # batches delivered in it
        self._in_hand: dict[TP, int] = {}  # batches of the current run delivered, not yet acked
        self._run_numbers = itertools.count(1)

    @property
    def batched_topics(self) -> frozenset[str]:
        return getattr(self.app, "batched_topics", frozenset())

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's getmany (generation and flow checks included), with contiguous delivery,
        and one message per partition for the batched topics."""
        self._fetches += 1
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as error:  # noqa: BLE001 - as Faust does: the watch repairs a stall
                log.warning("exception performing seek when flow not active: %r", error)
            return
        batched = self.batched_topics
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if active_partitions is not None and tp not in active_partitions \
                    and tp not in self._buffered_partitions:
                continue
            if not self.app.topics.acks_enabled_for(tp.topic):
                for record in fetched:  # changelogs: Faust's own delivery
                    yield tp, self._to_message(tp, record)
                continue
            run = await self._contiguous(tp, fetched)
            if not run:
                continue
            if tp.topic in batched:
                self._in_hand[tp] = self._in_hand.get(tp, 0) + 1
                self._delivered.setdefault(tp, deque()).append(run[-1].offset)
                self._sequence[tp] = seq = self._sequence.get(tp, 0) + 1
                yield tp, RecordBatchMessage(tp, run, generation_id, self._runs.get(tp), seq)
            else:
                for record in run:
                    yield tp, self._to_message(tp, record)

    async def _contiguous(self, tp: TP, fetched: Sequence[ConsumerRecord]) -> list[ConsumerRecord]:
        expected = await self._expected_offset(tp)
        run, jumped_to = contiguous_run(fetched, expected)
        if jumped_to is not None and not run and await self._seek_back(tp, expected, jumped_to):
            # A real gap: deliver from past it.
            run, _ = contiguous_run(fetched, jumped_to)
        if run:
            self._expected[tp] = run[-1].offset + 1
            self._jumps.pop(tp, None)
        return run

    async def _expected_offset(self, tp: TP) -> int | None:
        """After an assignment or a seek: the committed offset, else the partition's start.

        Records can arrive before Faust has read the committed offsets back after an
        assignment, so the group's committed offset is asked of the broker then."""
        if tp not in self._expected:
            committed = self._committed_offset.get(tp)
            if committed is None:
                committed = await self._group_committed(tp)
            if committed is None:
                committed = (await self.earliest_offsets(tp)).get(tp)
            if committed is None:
                return None
            self._start_run(tp, committed)
        return self._expected[tp]

    def _start_run(self, tp: TP, offset: int) -> None:
        self._expected[tp] = offset
        self._runs[tp] = Run(next(self._run_numbers), offset)
        self._sequence[tp] = 0

    async def _group_committed(self, tp: TP) -> int | None:
        thread = self._thread
        return await thread.call_thread(  # type: ignore[no-any-return]
            thread._ensure_consumer().committed, TopicPartition(tp.topic, tp.partition))

    async def _seek_back(self, tp: TP, expected: int | None, offset: int) -> bool:
        """Seek back to the expected offset. True when the jump is real and the record
        is to be delivered after all: still there REAL_GAP_AFTER_FETCHES fetches after
        the seek (records fetched before a seek can only arrive in the next fetch)."""
        assert expected is not None
        sought = self._jumps.get(tp)
        if sought is None or sought[0] != expected:
            # Routine after a rebalance (records fetched before Faust's seek back to the
            # committed offsets arrive after it), hence info, not a warning.
            log.info("%s jumped from offset %d to %d: seeking back", tp, expected, offset)
            self._jumps[tp] = (expected, self._fetches)
            await super().seek(tp, expected)
            return False
        if self._fetches - sought[1] < REAL_GAP_AFTER_FETCHES:
            return False
        log.warning("%s has no offsets %d..%d: delivering from %d", tp, expected, offset - 1, offset)
        return True

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Faust's, without the partitions that have enough in hand (4.)."""
        if active_partitions:
            held_back = enough_in_hand(active_partitions, self._in_hand)
            if held_back:
                active_partitions = active_partitions - held_back
                if not active_partitions:
                    await asyncio.sleep(HELD_BACK_WAIT_SECONDS)
                    return {}
        return await super()._getmany(active_partitions, timeout)

    def _forget(self, tp: TP) -> None:
        self._in_hand.pop(tp, None)
        self._expected.pop(tp, None)
        self._jumps.pop(tp, None)
        self._delivered.pop(tp, None)
        self._runs.pop(tp, None)
        if tp.topic in self.batched_topics:
            # Acks counted before: a batch read again can end on the same offset.
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._forget(partition)
        self._start_run(partition, offset)

    def ack(self, message: Message) -> bool:
        """Faust's ack, except for a batch that may not have been taken: one of an earlier
        stretch of delivery, or of an ended generation (the stream acks the events it drops
        for that). It is marked acked but not counted, so the offset is never committed
        past it: a batch still in hand when its partition was sought back would otherwise
        count as done for the same records read again before they were taken."""
        if isinstance(message, RecordBatchMessage) and message.run is not None and (
                self._runs.get(message.tp) != message.run
                or message.generation_id != self.app.consumer_generation_id):
            with ack_lock:
                message.acked = True
                self._unacked_messages.discard(message)
                notify(self._waiting_for_ack)
            return False
        if isinstance(message, RecordBatchMessage) and not message.acked and self._in_hand.get(message.tp):
            self._in_hand[message.tp] -= 1
        return bool(super().ack(message))

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Table recovery positions each changelog partition this way, at the offset it read
        last. Records from there on are the expected ones; without this, the first of them
        looked like a jump from the partition's start, and every rebalance re-read every
        changelog from offset 0."""
        await super().seek_wait(partitions)
        for tp, offset in partitions.items():
            self._forget(tp)
            self._start_run(tp, offset)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp in {*self._expected, *self._delivered, *self._runs, *self._jumps}:
            self._forget(tp)  # from the committed offsets, just read back

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._forget(tp)
        await super().on_partitions_revoked(revoked)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # The offsets between two batches of a batched topic were delivered in the later
        # one: not a gap.
        if tp.topic not in self.batched_topics:
            await super()._add_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic in self.batched_topics:
            return self._new_batched_offset(tp)
        # Faust commits past one missing offset at the head of the acknowledged ones
        # (it only stops when the first acknowledged offset is 2 or more past the
        # committed one): never past a message that was not acknowledged, unless the
        # offset is a real gap (see `_seek_back`).
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and min(acked) > committed \
                and not self._gap[tp].overlaps(committed):
            return None
        return super()._new_offset(tp)

    def _new_batched_offset(self, tp: TP) -> int | None:
        """One past the last record of the longest run of acknowledged batches, in the
        order they were delivered: never past a batch that was not acknowledged."""
        delivered = self._delivered.get(tp)
        acked_index = self._acked_index[tp]
        new_offset = None
        while delivered and delivered[0] in acked_index:
            new_offset = delivered.popleft() + 1
        if new_offset is not None:
            acked = self._acked[tp]
            done = [offset for offset in acked if offset < new_offset]
            acked_index.difference_update(done)
            acked[:] = [offset for offset in acked if offset >= new_offset]
        return new_offset

    async def highwaters(self, *partitions: TP) -> Mapping[TP, int]:
        ends = dict(await super().highwaters(*partitions))
        changelogs = {tp: end for tp, end in ends.items() if tp.topic.endswith(CHANGELOG_SUFFIX) and end}
        if changelogs:
            ends.update(await true_end_offsets(self._bootstrap_servers(), changelogs, self._auth_options()))
        return ends

    def _bootstrap_servers(self) -> list[str]:
        return [f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker]

    def _auth_options(self) -> Mapping[str, Any]:
        """TLS and SASL as Faust's own clients have them (app.py, broker_credentials)."""
        conf = self.app.conf
        return faust_aiokafka.credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context)


async def true_end_offsets(bootstrap: list[str] | str, reported: Mapping[TP, int],
                           client_options: Mapping[str, Any] | None = None) -> dict[TP, int]:
    """One past the last record of each partition, given the end offsets a broker reported:
    the last record batch is read from `reported - 1` on (see the module docstring, 3).
    `client_options`: TLS and SASL; none for a plaintext broker."""
    found = dict(reported)
    if not reported:
        return found
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                             fetch_max_wait_ms=10, max_partition_fetch_bytes=16 * 1024 * 1024,
                             **(client_options or {}))
    await probe.start()
    try:
        # Every partition in the same fetches: a restarted worker asks this of each of its
        # changelog partitions, and the broker's cost per fetch grows with their history.
        waiting = {TopicPartition(tp.topic, tp.partition): tp for tp in reported}
        probe.assign(list(waiting))
        for partition, tp in waiting.items():
            probe.seek(partition, reported[tp] - 1)
        async with asyncio.timeout(END_PROBE_TIMEOUT_SECONDS):
            while waiting:
                fetched = await probe.getmany(*waiting, timeout_ms=200)
                for partition, records in fetched.items():
                    if records and partition in waiting:
                        tp = waiting.pop(partition)
                        found[tp] = max(reported[tp], records[-1].offset + 1)
                        probe.pause(partition)
        return found
    finally:
        await probe.stop()


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
