"""StateTable (tables/state.py): values parsed once and read anew after a recovery; a
batch's changes of one partition written as one record batch, and to the store only once
the changelog has them, with their offset."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from infra.producer import Outgoing
from tables import state
from tables.state import StateTable


class Parts:
    """A store by partition (tables/store.py, Partitioned), with the offsets written."""

    def __init__(self) -> None:
        self.parts: dict[int, dict[bytes, bytes]] = {}
        self.offsets: dict[int, int] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.parts.get(partition, {}).get(key)

    def find(self, key: bytes) -> bytes | None:
        return next((part[key] for part in self.parts.values() if key in part), None)

    def write(self, partition: int, writes: dict[bytes, bytes | None], offset: int) -> None:
        part = self.parts.setdefault(partition, {})
        for key, value in writes.items():
            if value is None:
                part.pop(key, None)
            else:
                part[key] = value
        self.offsets[partition] = offset

    def items(self, prefix: bytes, partitions: set[int]) -> Any:
        return ((k, v) for p, part in self.parts.items() if p in partitions
                for k, v in part.items() if k.startswith(prefix))


class FakeTable:
    def __init__(self, name: str) -> None:
        self.name = name
        self.data = Parts()
        self.recovered: list[Any] = []

    def on_recover(self, callback: Any) -> Any:
        self.recovered.append(callback)
        return callback


class FakeApp:
    """What StateTable asks of a Faust app: a table over a store by partition, and topics."""

    def Table(self, name: str, **options: Any) -> Any:  # noqa: N802 - Faust's spelling
        return FakeTable(name)

    def topic(self, name: str, **options: Any) -> Any:
        return SimpleNamespace(name=name)


class FakeProducer:
    """Sends each partition's messages as one record batch, at the next offset of its log."""

    def __init__(self) -> None:
        self.sent: list[list[Outgoing]] = []
        self.ends: dict[int, int] = {}

    async def send(self, messages: list[Outgoing]) -> list[Any]:
        self.sent.append(list(messages))
        futures = []
        for partition in dict.fromkeys(m.partition for m in messages):
            assert partition is not None
            first = self.ends.get(partition, 0)
            self.ends[partition] = first + sum(1 for m in messages if m.partition == partition)
            done: Any = asyncio.get_running_loop().create_future()
            done.set_result(SimpleNamespace(partition=partition, offset=first))  # a batch's first offset
            futures.append(done)
        return futures


def table(producer: FakeProducer | None = None) -> StateTable[str]:
    parsed: list[bytes] = []

    def decode(key: bytes, raw: bytes) -> str:
        parsed.append(raw)
        return raw.decode().upper()

    async def give() -> FakeProducer:
        return producer or FakeProducer()

    made = StateTable(FakeApp(), "things", 8, decode, give, lambda key: 1 if key.startswith(b"k") else None)  # type: ignore[arg-type]
    made.parsed_log = parsed  # type: ignore[attr-defined]
    return made


def stored(things: StateTable[str]) -> Parts:
    return things.table.data  # type: ignore[no-any-return]


def test_a_value_read_twice_is_parsed_once() -> None:
    things = table()
    stored(things).write(2, {b"a": b"one"}, 0)
    assert things.get(b"a") == "ONE" and things.get(b"a") == "ONE"
    assert things.parsed_log == [b"one"]  # type: ignore[attr-defined]


def test_a_key_that_names_its_partition_is_read_only_there() -> None:
    things = table()
    stored(things).write(2, {b"k1": b"elsewhere"}, 0)
    assert things.get(b"k1") is None
    stored(things).write(1, {b"k1": b"here"}, 0)
    assert things.get(b"k1") == "HERE"


async def test_after_a_recovery_values_are_read_anew() -> None:
    """Recovery from the changelog puts other bytes in the store: those are what count."""
    things = table()
    stored(things).write(2, {b"a": b"one"}, 0)
    assert things.get(b"a") == "ONE"
    stored(things).write(2, {b"a": b"two"}, 1)
    for callback in things.table.recovered:
        await callback()
    assert things.get(b"a") == "TWO"


def test_only_the_most_recently_used_values_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "PARSED_KEPT", 2)
    things = table()
    for name in (b"a", b"b", b"c"):
        stored(things).write(0, {name: name}, 0)
        things.get(name)
    assert list(things._parsed) == [b"b", b"c"]  # noqa: SLF001 - the bound is the point


async def test_a_batch_is_recorded_with_its_partitions_and_read_back_without_parsing() -> None:
    producer = FakeProducer()
    things = table(producer)
    producer.ends[3] = 40
    changes: state.Changes = {3: {b"a": b"x", b"b": b"y"}, 5: {b"c": b"z"}}
    things.apply(changes, {b"a": "X", b"b": "Y", b"c": "Z"})
    await things.record(changes)
    [messages] = producer.sent
    assert {(m.partition, m.key) for m in messages} == {(3, b"a"), (3, b"b"), (5, b"c")}
    assert {m.topic for m in messages} == {"payments-things-changelog"}
    assert things.get(b"a") == "X" and things.parsed_log == []  # type: ignore[attr-defined]
    # In the store with the first offset of each partition's record batch.
    assert stored(things).parts == {3: {b"a": b"x", b"b": b"y"}, 5: {b"c": b"z"}}
    assert stored(things).offsets == {3: 40, 5: 0}
    assert things._unrecorded == {}  # noqa: SLF001


async def test_a_change_is_seen_at_once_and_stored_only_once_the_changelog_has_it() -> None:
    """A crash between the two leaves the store behind the changelog, never ahead of it."""
    things = table()
    changes: state.Changes = {4: {b"a": b"new"}}
    things.apply(changes)
    assert things.get(b"a") == "NEW"
    assert stored(things).parts == {}
    await things.record(changes)
    assert stored(things).parts == {4: {b"a": b"new"}}


async def test_a_deleted_key_is_gone_from_readers_and_from_the_store() -> None:
    things = table()
    stored(things).write(4, {b"a": b"old"}, 0)
    assert things.get(b"a") == "OLD"
    changes: state.Changes = {4: {b"a": None}}
    things.apply(changes)
    assert things.get(b"a") is None
    await things.record(changes)
    assert things.get(b"a") is None and stored(things).parts == {4: {}}
