"""The consumer delivers each partition's offsets contiguously, and reads ahead a bounded
number of batches per partition (infra/kafka_transport.py)."""

from faust.types import TP

from infra.kafka_transport import BATCHES_IN_HAND_MAX, delivery_decision, enough_in_hand


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
    in_hand = {busy: BATCHES_IN_HAND_MAX, idle: BATCHES_IN_HAND_MAX - 1}
    assert enough_in_hand({busy, idle, fresh}, in_hand) == {busy}
    in_hand[busy] -= 1  # the loop acknowledged one
    assert enough_in_hand({busy, idle, fresh}, in_hand) == set()
