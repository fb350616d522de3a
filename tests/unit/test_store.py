"""The tables' stores (tables/store.py): by partition, with the changelog offset written
together with the changes, and on disk what survives the process."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.types import TP

CHANGELOG = "probe-things-changelog"


def store_of(url: str, datadir: Path) -> Any:
    app = faust.App("probe", broker="memory://", store=url, datadir=str(datadir))
    return app.Table("things", partitions=4, key_type=bytes, value_type=bytes).data


def changelog_event(partition: int, offset: int, key: bytes, value: bytes | None) -> Any:
    message = SimpleNamespace(tp=TP(CHANGELOG, partition), partition=partition, offset=offset,
                              key=key, value=value)
    return SimpleNamespace(message=message, key=key, value=value)


def held(store: Any, *partitions: int) -> Any:
    """Open the partitions as an assignment does (the memory store needs nothing)."""
    for partition in partitions:
        if hasattr(store, "_db_for_partition"):
            store._db_for_partition(partition)  # noqa: SLF001
    return store


@pytest.mark.parametrize("url", ["payments-disk://", "payments-memory://"])
def test_partitions_are_read_and_written_apart(url: str, tmp_path: Path) -> None:
    store = held(store_of(url, tmp_path), 1, 2)
    store.write(1, {b"a:x": b"1", b"p:y": b"2"}, 10)
    store.write(2, {b"a:z": b"3"}, 4)
    assert store.get(1, b"a:x") == b"1" and store.get(2, b"a:x") is None
    assert store.find(b"p:y") == b"2" and store.find(b"p:none") is None
    assert sorted(store.items(b"a:", {1, 2})) == [(b"a:x", b"1"), (b"a:z", b"3")]
    assert list(store.items(b"a:", {2})) == [(b"a:z", b"3")]
    store.write(1, {b"a:x": None}, 11)
    assert store.get(1, b"a:x") is None


@pytest.mark.parametrize("url", ["payments-disk://", "payments-memory://"])
def test_the_changelog_applied_by_faust_is_what_is_read(url: str, tmp_path: Path) -> None:
    store = held(store_of(url, tmp_path), 3)
    store.apply_changelog_batch([changelog_event(3, 5, b"a:x", b"old"), changelog_event(3, 6, b"a:x", b"new"),
                                 changelog_event(3, 7, b"a:y", b"1"), changelog_event(3, 8, b"a:y", None)],
                                to_key=None, to_value=None)
    assert store.get(3, b"a:x") == b"new" and store.get(3, b"a:y") is None


def test_on_disk_the_state_and_its_offset_survive_the_process(tmp_path: Path) -> None:
    store = held(store_of("payments-disk://", tmp_path), 1)
    store.write(1, {b"a:x": b"1"}, 41)
    assert store.persisted_offset(TP(CHANGELOG, 1)) == 41
    store._dbs[1].close()  # noqa: SLF001 - what the end of the process does
    again = held(store_of("payments-disk://", tmp_path), 1)
    assert again.get(1, b"a:x") == b"1"
    assert again.persisted_offset(TP(CHANGELOG, 1)) == 41  # a restart reads the changelog from here


def test_in_memory_nothing_claims_to_be_persisted(tmp_path: Path) -> None:
    store = held(store_of("payments-memory://", tmp_path), 1)
    store.write(1, {b"a:x": b"1"}, 41)
    assert store.persisted_offset(TP(CHANGELOG, 1)) is None  # the whole changelog is read at a start


def test_a_partition_not_held_is_neither_read_nor_written(tmp_path: Path) -> None:
    """Revoked while its batch recorded: the changelog has it, its new holder recovers it."""
    store = store_of("payments-disk://", tmp_path)
    store.write(2, {b"a:x": b"1"}, 3)
    assert store.get(2, b"a:x") is None and store.find(b"a:x") is None
    assert not (tmp_path / "v1" / "tables" / "things-2.db").exists()
