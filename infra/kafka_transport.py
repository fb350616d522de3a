"""Faust's aiokafka transport, with two changes the payment flow depends on.

1. A configurable consumer fetch wait. Faust hard-codes `fetch_max_wait_ms=1500`;
   Apache Kafka answers a parked fetch as soon as data arrives, so there the value only
   bounds idle polling, but the embedded broker we develop and test on answers at the
   end of the wait, which added ~750 ms to every hop. PAYMENTS_CONSUMER_FETCH_WAIT_MS.

2. Contiguous delivery. Faust hands a stream every fetched record whose offset is at or
   past the partition's read offset, and treats a jump in offsets as a gap of a
   compacted topic, which it later commits past. Around a rebalance that is how
   messages get lost: records fetched before a seek back to the committed offset are
   still in hand after it, and the first of them "opens a gap" over the messages the
   seek was meant to replay (and Faust's `_new_offset` also commits past a single
   missing offset at the head). Our inbound and internal topics are never compacted,
   so here a jump always means skipped messages: the consumer delivers, per partition,
   only the offset it expects next, seeks back when it sees a jump, and never commits
   past an offset that was not acknowledged. A repeat is harmless (every handler is
   idempotent); a message skipped is not.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from aiokafka import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message

log = logging.getLogger(__name__)

FETCH_WAIT_ENV = "PAYMENTS_CONSUMER_FETCH_WAIT_MS"
FETCH_WAIT_DEFAULT_MS = 10
# A jump seen again in this many fetches after seeking back over it is real: the
# offsets do not exist (a topic written with Kafka transactions has control records).
REAL_GAP_AFTER_FETCHES = 3


def delivery_decision(offset: int, expected: int | None) -> str:
    """What to do with a fetched record: "deliver" it, drop it as a "repeat" of one
    already delivered, or treat it as a "jump" over messages not delivered yet."""
    if expected is None or offset == expected:
        return "deliver"
    return "repeat" if offset < expected else "jump"


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = int(os.environ.get(FETCH_WAIT_ENV, FETCH_WAIT_DEFAULT_MS))
        return consumer


class Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._expected: dict[TP, int] = {}  # next offset to deliver, per partition
        self._jumps: dict[TP, tuple[int, int]] = {}  # (offset sought back to, at fetch number)
        self._fetches = 0

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        self._fetches += 1
        async for tp, message in super().getmany(timeout):
            if not self.app.topics.acks_enabled_for(message.topic):
                yield tp, message
                continue
            expected = await self._expected_offset(tp)
            decision = delivery_decision(message.offset, expected)
            if decision == "jump" and not await self._seek_back(tp, expected, message.offset):
                continue
            if decision == "repeat":
                continue
            self._expected[tp] = message.offset + 1
            self._jumps.pop(tp, None)
            yield tp, message

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
            self._expected[tp] = committed
        return self._expected[tp]

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

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._expected[partition] = offset
        self._jumps.pop(partition, None)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Table recovery positions each changelog partition this way, at the offset it read
        last. Records from there on are the expected ones; without this, the first of them
        looked like a jump from the partition's start, and every rebalance re-read every
        changelog from offset 0."""
        await super().seek_wait(partitions)
        for tp, offset in partitions.items():
            self._expected[tp] = offset
            self._jumps.pop(tp, None)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._expected.clear()  # from the committed offsets, just read back
        self._jumps.clear()

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:
            self._expected.pop(tp, None)
            self._jumps.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    def _new_offset(self, tp: TP) -> int | None:
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


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
