"""Steps travel in batches on the internal topics (models/codec.py, agents/shell.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner
from pydantic import ValidationError

from agents.shell import ROUTES, deliveries, partition_for, step_messages
from infra.topics import ACCOUNT_STEPS, PSP_STEPS
from models.account_flow import react
from models.codec import STEPS_PER_MESSAGE_MAX, dumps, encode_steps, split_steps
from models.outputs import Dispatch
from models.routing import ACCOUNT_STEP, PSP_STEP
from models.steps import ApplyPosting, Origin, PspAnswered
from tests.unit.test_account_decisions import account

PARTITIONS = 8
FROM_LEDGER = Origin(topic="payments.steps.ledger", partition=1, offset=7)


def posting(account_id: str, amount: int, origin: Origin = FROM_LEDGER) -> ApplyPosting:
    return ApplyPosting(origin=origin, account_id=account_id, transaction_id=f"t-{amount}", amount=amount)


def message(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> Any:
    """What a Faust event exposes to the agents: its message's coordinates, key and value."""
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=partition, offset=offset,
                                                   key=key, value=value))


def test_a_batch_gives_back_each_key_and_step_in_order() -> None:
    steps = [("alice", posting("alice", -5)), ("bob", posting("bob", 5))]
    split = split_steps(encode_steps(steps), b"alice")
    assert [key for key, _ in split] == ["alice", "bob"]
    assert [ACCOUNT_STEP.validate_python(body) for _, body in split] == [step for _, step in steps]


def test_a_message_of_one_step_is_read_as_that_step_under_the_message_key() -> None:
    answer = PspAnswered(origin=FROM_LEDGER, payment_id="pay-1", result="approved", psp_reference="r")
    [(key, body)] = split_steps(dumps(answer), b"pay-1")
    assert key == "pay-1" and PSP_STEP.validate_python(body) == answer


def test_bytes_that_are_not_json_come_back_whole_for_the_decoder_to_refuse() -> None:
    [delivery] = deliveries([message(PSP_STEPS, 2, 40, b"pay-1", b"\xff{not json")])
    assert delivery.value == b"\xff{not json"
    with pytest.raises(ValidationError, match="Invalid JSON"):
        delivery.step(PSP_STEP)


def test_each_step_of_a_message_has_its_own_position() -> None:
    value = encode_steps([("alice", posting("alice", -5)), ("bob", posting("bob", 5))])
    found = deliveries([message(ACCOUNT_STEPS, 3, 12, b"alice", value),
                        message(ACCOUNT_STEPS, 3, 13, b"bob", dumps(posting("bob", 9)))])
    assert [(d.key, d.origin.offset, d.origin.index) for d in found] == [
        ("alice", 12, 0), ("bob", 12, 1), ("bob", 13, 0)]
    assert [d.origin.place for d in found] == [
        f"{ACCOUNT_STEPS}#3:12", f"{ACCOUNT_STEPS}#3:12.1", f"{ACCOUNT_STEPS}#3:13"]
    assert found[1].partition == 3
    assert ACCOUNT_STEP.validate_json(found[1].value) == posting("bob", 5)  # a dead letter re-publishes as is


def test_the_partition_is_the_one_kafka_and_the_table_router_give_the_key() -> None:
    partitioner = DefaultPartitioner()
    for key in (b"alice", b"bob", b"0f8b3c1e-5f59-5d7c-9d1a-0c8d3b9e9c11", b"settlement:USD", b"x" * 128):
        assert partition_for(key, PARTITIONS) == partitioner(key, list(range(PARTITIONS)), [])


def test_dispatches_go_one_message_per_partition_keeping_their_order() -> None:
    keys = [f"account-{n}" for n in range(40)]
    dispatches = [Dispatch("account", key, posting(key, amount)) for amount, key in enumerate(keys * 2)]
    messages = step_messages(dispatches, PARTITIONS)
    assert len(messages) == len({partition_for(key.encode(), PARTITIONS) for key in keys})
    for sent in messages:
        assert sent.topic == ROUTES["account"]
        carried = split_steps(sent.value, sent.key)
        assert all(partition_for(key.encode(), PARTITIONS) == sent.partition for key, _ in carried)
        amounts = [body["amount"] for _, body in carried]
        assert amounts == sorted(amounts)  # the order they were dispatched in
    assert sum(len(split_steps(m.value, m.key)) for m in messages) == len(dispatches)


def test_a_partition_with_more_steps_than_a_message_holds_gets_several_messages() -> None:
    count = STEPS_PER_MESSAGE_MAX + 1
    dispatches = [Dispatch("account", "alice", posting("alice", n + 1)) for n in range(count)]
    first, second = step_messages(dispatches, PARTITIONS)
    assert len(split_steps(first.value, first.key)) == STEPS_PER_MESSAGE_MAX
    assert [body["amount"] for _, body in split_steps(second.value, second.key)] == [count]


def test_routes_to_different_topics_never_share_a_message() -> None:
    answer = PspAnswered(origin=FROM_LEDGER, payment_id="pay-1", result="declined")
    dispatches = [Dispatch("account", "pay-1", posting("pay-1", 1)), Dispatch("psp", "pay-1", answer)]
    topics = sorted(m.topic for m in step_messages(dispatches, PARTITIONS))
    assert topics == sorted([ACCOUNT_STEPS, PSP_STEPS])


def test_an_account_applies_both_steps_of_one_message_and_neither_twice() -> None:
    """Two steps produced from one batched message share its offset: the index tells them apart."""
    first = posting("alice", 30, FROM_LEDGER)
    second = posting("alice", 40, FROM_LEDGER.model_copy(update={"index": 1}))
    state, _ = react(account(posted=0), first, FROM_LEDGER)
    assert state is not None
    state, _ = react(state, second, FROM_LEDGER)
    assert state is not None and state.posted == 70
    assert react(state, first, FROM_LEDGER) == (None, [])  # redelivered: already applied
    assert react(state, second, FROM_LEDGER) == (None, [])


def test_at_debug_each_step_received_is_traced_with_its_payment(caplog: pytest.LogCaptureFixture) -> None:
    answer = PspAnswered(origin=FROM_LEDGER, payment_id="pay-7", result="declined")
    value = encode_steps([("alice", posting("alice", 5)), ("pay-7", answer)])
    with caplog.at_level(logging.DEBUG, logger="agents.shell"):
        deliveries([message(ACCOUNT_STEPS, 3, 12, b"alice", value)])
    assert [r.getMessage() for r in caplog.records] == [
        f"step ApplyPosting for alice at {ACCOUNT_STEPS}#3:12",
        f"step PspAnswered for pay-7 at {ACCOUNT_STEPS}#3:12.1"]
    assert getattr(caplog.records[1], "payment_id", None) == "pay-7"
