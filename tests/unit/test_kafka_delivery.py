"""The consumer delivers each partition's offsets contiguously (infra/kafka_transport.py)."""

from infra.kafka_transport import delivery_decision


def test_the_expected_offset_is_delivered() -> None:
    assert delivery_decision(60, 60) == "deliver"


def test_an_offset_already_delivered_is_a_repeat() -> None:
    assert delivery_decision(59, 60) == "repeat"


def test_an_offset_past_the_expected_one_is_a_jump_over_undelivered_messages() -> None:
    assert delivery_decision(106, 60) == "jump"
    assert delivery_decision(61, 60) == "jump"


def test_with_nothing_expected_yet_anything_is_delivered() -> None:
    assert delivery_decision(7, None) == "deliver"
