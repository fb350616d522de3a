"""The stall watch's decisions: what counts as waiting, and for how long it has not moved."""

from __future__ import annotations

from dataclasses import dataclass, field

from faust.types import TP

from agents.monitor import STALL_SECONDS, Progress, waiting, watch_partition

TP_0 = TP("payments.steps.account", 0)


def test_nothing_waits_when_everything_read_is_committed() -> None:
    assert waiting(committed=120, end=120, fetched=120) == 0


def test_the_broker_end_offset_counts_messages_not_fetched_yet() -> None:
    assert waiting(committed=100, end=105, fetched=100) == 5


def test_messages_fetched_past_an_under_reported_end_still_wait() -> None:
    # The embedded broker ends the partition at the base of its last batch plus one (101
    # for a batch 100..104): the fetch position shows the messages it hides.
    assert waiting(committed=102, end=101, fetched=105) == 3


def test_unknown_offsets_count_as_nothing() -> None:
    assert waiting(committed=0, end=None, fetched=None) == 0


def test_a_stall_is_timed_from_the_last_move_of_the_committed_offset() -> None:
    progress = Progress()
    assert progress.stalled_for(TP_0, 10, now=100.0) == 0.0
    assert progress.stalled_for(TP_0, 10, now=104.0) == 4.0
    assert progress.stalled_for(TP_0, 11, now=105.0) == 0.0  # it moved: timed afresh
    assert progress.stalled_for(TP_0, 11, now=111.0) == 6.0


# --- the watch on one partition, against a stand-in for Faust's consumer ----------------------


@dataclass
class Delivered:
    tp: TP
    acked: bool = False


@dataclass
class StandInConsumer:
    """The parts of Faust's consumer the watch reads and calls."""

    committed: int
    fetched: int
    paused: bool = False
    unacked: list[Delivered] = field(default_factory=list)
    sought: list[tuple[TP, int]] = field(default_factory=list)
    resumed: list[TP] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._committed_offset = {TP_0: self.committed}
        self._read_offset = {TP_0: self.fetched - 1}
        self._active_partitions = set() if self.paused else {TP_0}
        self._paused_partitions = {TP_0} if self.paused else set()
        self._unacked_messages = self.unacked

    async def position(self, tp: TP) -> int:
        return self.fetched

    def resume_partitions(self, tps: set[TP]) -> None:
        self.resumed.extend(tps)

    async def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


async def look(consumer: StandInConsumer, end: int, at: list[float]) -> Progress:
    progress = Progress()
    for now in at:
        await watch_partition(consumer, TP_0, end, now, progress)  # type: ignore[arg-type]
    return progress


async def test_messages_hidden_from_the_end_offset_are_read_again_once_stalled() -> None:
    # Fetched up to 105 and dropped: the broker's end says 101 (a batch 100..104), 102 committed.
    consumer = StandInConsumer(committed=102, fetched=105)
    await look(consumer, end=101, at=[0.0, STALL_SECONDS - 1])
    assert consumer.sought == []  # not yet: it may still move
    await look(consumer, end=101, at=[0.0, STALL_SECONDS])
    assert consumer.sought == [(TP_0, 102)] and consumer.resumed == [TP_0]


async def test_a_partition_left_paused_is_resumed_though_nothing_shows_as_waiting() -> None:
    consumer = StandInConsumer(committed=50, fetched=50, paused=True)
    await look(consumer, end=50, at=[0.0, STALL_SECONDS])
    assert consumer.resumed == [TP_0] and consumer.sought == [(TP_0, 50)]


async def test_a_partition_whose_messages_are_in_hand_is_busy_not_stalled() -> None:
    consumer = StandInConsumer(committed=102, fetched=105, unacked=[Delivered(TP_0)])
    await look(consumer, end=105, at=[0.0, STALL_SECONDS * 10])
    assert consumer.sought == [] and consumer.resumed == []


async def test_an_idle_partition_is_left_alone() -> None:
    consumer = StandInConsumer(committed=80, fetched=80, unacked=[Delivered(TP_0, acked=True)])
    await look(consumer, end=80, at=[0.0, STALL_SECONDS * 10])
    assert consumer.sought == [] and consumer.resumed == []


async def test_the_heap_is_collected_only_when_a_stalled_partition_seems_busy() -> None:
    collections: list[int] = []

    def collect() -> None:
        collections.append(1)

    idle = StandInConsumer(committed=102, fetched=105)  # stalled, nothing in hand: no collection needed
    progress = Progress()
    for now in (0.0, STALL_SECONDS):
        await watch_partition(idle, TP_0, 105, now, progress, collect)  # type: ignore[arg-type]
    progress = Progress()
    busy = StandInConsumer(committed=102, fetched=105, unacked=[Delivered(TP_0)])
    for now in (0.0, STALL_SECONDS):
        await watch_partition(busy, TP_0, 105, now, progress, collect)  # type: ignore[arg-type]
    assert idle.sought == [(TP_0, 102)] and len(collections) == 1 and busy.sought == []


async def test_a_message_only_dropped_garbage_held_is_collected_and_the_partition_repaired() -> None:
    consumer = StandInConsumer(committed=102, fetched=105, unacked=[Delivered(TP_0)])
    progress = Progress()
    for now in (0.0, STALL_SECONDS):
        await watch_partition(consumer, TP_0, 105, now, progress, consumer.unacked.clear)  # type: ignore[arg-type]
    assert consumer.sought == [(TP_0, 102)]
