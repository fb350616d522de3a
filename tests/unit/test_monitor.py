"""The stall watch's decisions: what counts as waiting, and for how long it has not moved."""

from __future__ import annotations

from faust.types import TP

from agents.monitor import Progress, waiting

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
