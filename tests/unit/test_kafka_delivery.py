"""The consumer delivers each partition's offsets contiguously, and reads ahead a bounded
number of batches per partition (infra/kafka_transport.py)."""

from faust.types import TP

from infra.kafka_transport import (
    BATCHES_IN_HAND_MAX,
    HELD_BACK_MAX_SECONDS,
    delivery_decision,
    enough_in_hand,
)


def test_the_expected_offset_is_delivered() -> None:
    assert delivery_decision(60, 60) == "deliver"


def test_an_offset_already_delivered_is_a_repeat() -> None:
    assert delivery_decision(59, 60) == "repeat"


def test_an_offset_past_the_expected_one_is_a_jump_over_undelivered_messages() -> None:
    assert delivery_decision(106, 60) == "jump"
    assert delivery_decision(61, 60) == "jump"


def test_with_nothing_expected_yet_anything_is_delivered() -> None:
    assert delivery_decision(7, None) == "deliver"


def test_a_partition_with_enough_batches_in_hand_is_not_fetched_until_one_is_acknowledged() -> None:
    busy, idle, fresh = TP("commands", 0), TP("commands", 1), TP("steps", 3)
    in_hand, since = {busy: BATCHES_IN_HAND_MAX, idle: BATCHES_IN_HAND_MAX - 1}, {}
    assert enough_in_hand({busy, idle, fresh}, in_hand, since, now=10.0) == {busy}
    in_hand[busy] -= 1  # the loop acknowledged one
    assert enough_in_hand({busy, idle, fresh}, in_hand, since, now=10.1) == set()


def test_a_partition_held_back_with_no_acknowledgement_for_long_is_fetched_again() -> None:
    """A batch dropped unacknowledged would otherwise hold its partition back until the
    monitor's repair: fetched again, the next batch shows the loop the hole."""
    tp, since = TP("commands", 0), {}
    in_hand = {tp: BATCHES_IN_HAND_MAX}
    assert enough_in_hand({tp}, in_hand, since, now=10.0) == {tp}
    assert enough_in_hand({tp}, in_hand, since, now=10.0 + HELD_BACK_MAX_SECONDS / 2) == {tp}
    assert enough_in_hand({tp}, in_hand, since, now=10.0 + HELD_BACK_MAX_SECONDS) == set()
