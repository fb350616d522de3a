"""Where a table's partitions live: on disk (RocksDB, the default) or in memory (tests).

Both stores are Faust stores, so Faust's recovery fills them from the changelogs, and
both are read and written by partition (`Partitioned`), which is how the tables use
them (tables/state.py): a write is one partition's changes of one batch, together with
the changelog offset they were recorded at.

On disk, a partition is a RocksDB database under `PAYMENTS_DATA_DIR`. Its changes and
its offset are written in ONE RocksDB write batch, so the database is always the
changelog's state at some offset, and a restart reads only the changelog written since
that offset. A crash between the changelog's acknowledgement and the local write leaves
the database behind the changelog, never ahead of it: the recovery catches it up.
Memory is bounded whatever the history: the block cache and the memtables of every
database of the process share one budget (`MEMORY_BUDGET_BYTES`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import rocksdict
from faust.stores import memory, rocksdb
from faust.types import TP

log = logging.getLogger(__name__)

# The one budget of every database of a worker: block cache, index and filter blocks,
# and memtables (charged to the cache). Reads beyond it go to the page cache and disk.
MEMORY_BUDGET_BYTES = 64 * 1024 * 1024
MEMTABLES_BYTES = 16 * 1024 * 1024
WRITE_BUFFER_BYTES = 2 * 1024 * 1024
MAX_OPEN_FILES = 256  # per database; its table files' handles and metadata


class Partitioned(Protocol):
    """A table's partitions as the tables read and write them."""

    def get(self, partition: int, key: bytes) -> bytes | None: ...

    def find(self, key: bytes) -> bytes | None:
        """The key's value in whichever partition held here has it."""

    def write(self, partition: int, writes: Mapping[bytes, bytes | None], offset: int) -> None:
        """One partition's changes (None: delete), recorded at changelog `offset`."""

    def items(self, prefix: bytes, partitions: set[int]) -> Iterator[tuple[bytes, bytes]]:
        """Every entry whose key starts with `prefix`, of these partitions (of those held here)."""


class _Budget:
    """The cache and memtable budget every database of the process shares, made once."""

    cache: rocksdict.Cache | None = None
    memtables: rocksdict.WriteBufferManager | None = None

    @classmethod
    def options(cls) -> rocksdict.Options:
        if cls.cache is None:
            cls.cache = rocksdict.Cache(MEMORY_BUDGET_BYTES)
            cls.memtables = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
                MEMTABLES_BYTES, False, cls.cache)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_max_open_files(MAX_OPEN_FILES)
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        options.set_write_buffer_manager(cls.memtables)
        tables = rocksdict.BlockBasedOptions()
        tables.set_block_cache(cls.cache)
        tables.set_cache_index_and_filter_blocks(True)
        tables.set_pin_l0_filter_and_index_blocks_in_cache(True)
        tables.set_bloom_filter(10, False)  # a key absent from a partition costs no disk read
        options.set_block_based_table_factory(tables)
        return options


class _Options(rocksdb.RocksDBOptions):
    def open(self, path: Any, *, read_only: bool = False) -> rocksdict.Rdict:
        return rocksdict.Rdict(str(path), options=_Budget.options())


class DiskStore(rocksdb.Store):
    """Faust's RocksDB store (rocksdict), read and written by partition, on one memory budget."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("driver", "rocksdict")
        super().__init__(*args, **kwargs)
        self.rocksdb_options = _Options(use_rocksdict=True)

    def get(self, partition: int, key: bytes) -> bytes | None:
        db = self._dbs.get(partition)
        return db.get(key) if db is not None else None

    def find(self, key: bytes) -> bytes | None:
        for db in list(self._dbs.values()):
            if db.key_may_exist(key):
                value = db.get(key)
                if value is not None:
                    return value  # type: ignore[no-any-return]
        return None

    def write(self, partition: int, writes: Mapping[bytes, bytes | None], offset: int) -> None:
        db = self._dbs.get(partition)
        if db is None:
            # Revoked while its batch was recording: the changelog has the changes, and
            # whoever holds the partition now recovers them from it.
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in writes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(self.offset_key, str(offset).encode())
        db.write(batch)

    def items(self, prefix: bytes, partitions: set[int]) -> Iterator[tuple[bytes, bytes]]:
        for partition, db in list(self._dbs.items()):
            if partition not in partitions:
                continue
            for key, value in db.items(from_key=prefix):
                if not key.startswith(prefix):
                    break
                yield key, value


class MemoryStore(memory.Store):
    """Every partition in a dict of its own; nothing survives the process (recovery reads
    the whole changelog). For tests and short-lived runs."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.parts: dict[int, dict[bytes, bytes]] = {}

    def apply_changelog_batch(self, batch: Any, to_key: Any, to_value: Any) -> None:
        for event in batch:
            message = event.message
            self._apply(message.partition, message.key, message.value)

    def _apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        part = self.parts.setdefault(partition, {})
        if value is None:
            part.pop(key, None)
        else:
            part[key] = value

    async def on_recovery_completed(self, active_tps: set[TP], standby_tps: set[TP]) -> None:
        held = {tp.partition for tp in active_tps} | {tp.partition for tp in standby_tps}
        for partition in list(self.parts):
            if partition not in held:
                del self.parts[partition]

    def get(self, partition: int, key: bytes) -> bytes | None:
        part = self.parts.get(partition)
        return part.get(key) if part is not None else None

    def find(self, key: bytes) -> bytes | None:
        for part in self.parts.values():
            value = part.get(key)
            if value is not None:
                return value
        return None

    def write(self, partition: int, writes: Mapping[bytes, bytes | None], offset: int) -> None:
        for key, value in writes.items():
            self._apply(partition, key, value)

    def items(self, prefix: bytes, partitions: set[int]) -> Iterator[tuple[bytes, bytes]]:
        for partition, part in list(self.parts.items()):
            if partition not in partitions:
                continue
            for key, value in list(part.items()):
                if key.startswith(prefix):
                    yield key, value

