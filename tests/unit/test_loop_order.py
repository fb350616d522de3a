"""The loop takes each partition's batches in the order they were delivered, or not at all
(agents/loop.py, InOrder): a batch the stream dropped would otherwise let later steps raise
a home's high-water mark past its own, and its hand-overs be skipped as repeats."""

from __future__ import annotations

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from agents.loop import SKIP, InOrder
from infra.kafka_transport import RecordBatchMessage, Run

COMMANDS_3 = TP("fintech.payments.commands", 3)


def batch(first: int, last: int, run: Run | None, seq: int, tp: TP = COMMANDS_3) -> RecordBatchMessage:
    records = [ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])
               for offset in range(first, last + 1)]
    return RecordBatchMessage(tp, records, generation_id=1, run=run, seq=seq)


def test_batches_that_follow_on_are_taken() -> None:
    in_order, run = InOrder(), Run(1, 100)
    assert [in_order.admit(batch(100, 104, run, 1)), in_order.admit(batch(105, 105, run, 2)),
            in_order.admit(batch(106, 110, run, 3))] == [None, None, None]


def test_a_run_whose_first_batch_was_dropped_is_read_again_from_its_start() -> None:
    # kill9 seed 10: delivery resumed at the committed offset 120, the batch 120..121 never
    # reached the loop, 122.. did.
    assert InOrder().admit(batch(122, 125, Run(7, 120), 2)) == 120


def test_a_hole_after_taken_batches_is_read_again_from_the_end_of_the_last_taken() -> None:
    in_order, run = InOrder(), Run(1, 100)
    assert in_order.admit(batch(100, 104, run, 1)) is None
    assert in_order.admit(batch(108, 109, run, 3)) == 105
    # The partition read again from 105 is a new run: it follows on from its own start.
    assert in_order.admit(batch(105, 109, Run(2, 105), 1)) is None


def test_offsets_that_do_not_exist_are_no_hole_when_the_batches_follow_on() -> None:
    # Control records of a transactional producer leave offsets out: the transport
    # delivers past them, in the same run, as the next batch.
    in_order, run = InOrder(), Run(1, 0)
    assert in_order.admit(batch(0, 4, run, 1)) is None
    assert in_order.admit(batch(6, 9, run, 2)) is None


def test_partitions_are_followed_each_on_its_own() -> None:
    in_order = InOrder()
    other = TP("payments.steps", 0)
    assert in_order.admit(batch(0, 1, Run(1, 0), 1)) is None
    assert in_order.admit(batch(50, 51, Run(2, 50), 1, other)) is None
    assert in_order.admit(batch(2, 3, Run(1, 0), 2)) is None
    assert in_order.admit(batch(55, 56, Run(2, 50), 3, other)) == 52


def test_a_batch_delivered_outside_any_run_is_taken() -> None:
    assert InOrder().admit(batch(5, 6, None, 0)) is None


def test_batches_queued_from_a_run_that_ended_are_skipped_until_the_partition_is_read_again() -> None:
    in_order, run = InOrder(), Run(1, 100)
    assert in_order.admit(batch(100, 104, run, 1)) is None
    assert in_order.admit(batch(108, 109, run, 3)) == 105  # the hole: read again from 105
    assert in_order.admit(batch(110, 112, run, 4)) == SKIP  # queued before the seek: not another seek
    assert in_order.admit(batch(105, 107, Run(2, 105), 1)) is None
