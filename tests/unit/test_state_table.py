"""StateTable (tables/state.py): values parsed once and read anew when their bytes change;
a batch's changes of one partition written as one record batch."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from infra.producer import Outgoing
from tables import state
from tables.state import StateTable


class FakeApp:
    """What StateTable asks of a Faust app: a table holding raw bytes, and topics."""

    def Table(self, name: str, **options: Any) -> Any:  # noqa: N802 - Faust's spelling
        return SimpleNamespace(name=name, data={})

    def topic(self, name: str, **options: Any) -> Any:
        return SimpleNamespace(name=name)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[list[Outgoing]] = []

    async def send(self, messages: list[Outgoing]) -> list[Any]:
        self.sent.append(list(messages))
        done: Any = __import__("asyncio").get_running_loop().create_future()
        done.set_result(None)
        return [done for _ in {(m.topic, m.partition) for m in messages}]


def table(producer: FakeProducer | None = None) -> StateTable[str]:
    parsed: list[bytes] = []

    def decode(key: bytes, raw: bytes) -> str:
        parsed.append(raw)
        return raw.decode().upper()

    async def give() -> FakeProducer:
        return producer or FakeProducer()

    made = StateTable(FakeApp(), "things", 8, decode, give)  # type: ignore[arg-type]
    made.parsed_log = parsed  # type: ignore[attr-defined]
    return made


def test_a_value_read_twice_is_parsed_once() -> None:
    things = table()
    things.table.data[b"a"] = b"one"
    assert things.get(b"a") == "ONE" and things.get(b"a") == "ONE"
    assert things.parsed_log == [b"one"]  # type: ignore[attr-defined]


def test_a_value_replaced_in_the_table_is_read_anew() -> None:
    """Recovery from the changelog puts other bytes in the table: those are what count."""
    things = table()
    things.table.data[b"a"] = b"one"
    assert things.get(b"a") == "ONE"
    things.table.data[b"a"] = b"two"
    assert things.get(b"a") == "TWO"
    del things.table.data[b"a"]
    assert things.get(b"a") is None


def test_only_the_most_recently_used_values_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "PARSED_KEPT", 2)
    things = table()
    for name in (b"a", b"b", b"c"):
        things.table.data[name] = name
        things.get(name)
    assert list(things._parsed) == [b"b", b"c"]  # noqa: SLF001 - the bound is the point


async def test_a_batch_is_recorded_with_its_partitions_and_read_back_without_parsing() -> None:
    producer = FakeProducer()
    things = table(producer)
    changes = {3: {b"a": b"x", b"b": b"y"}, 5: {b"c": b"z"}}
    things.apply(changes, {b"a": "X", b"b": "Y", b"c": "Z"})
    await things.record(changes)
    [messages] = producer.sent
    assert {(m.partition, m.key) for m in messages} == {(3, b"a"), (3, b"b"), (5, b"c")}
    assert {m.topic for m in messages} == {"payments-things-changelog"}
    assert things.get(b"a") == "X" and things.parsed_log == []  # type: ignore[attr-defined]
