"""Changelog-backed Faust tables of msgspec records, written a batch at a time.

Keys and values are raw bytes on the wire (values are the records' JSON), so what
recovery reads back from the changelog is exactly what was written. Where a partition's
entries live is the store's (tables/store.py: on disk by default); a table reads them by
partition, and writes them only once the changelog has them.

`record` writes every change of one batch for one partition as ONE record batch of the
changelog partition. A broker appends a record batch whole or not at all, so a crash
leaves each partition's state as it was before the batch or as it is after it, never
half of it: a step that changed several keys of a partition (a payment and its debtor,
and the partition's tracking record) is recorded together or not at all.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

import faust

from infra.delivery import confirm
from infra.producer import BatchProducer, Outgoing
from infra.topics import changelog_topic
from tables.store import Partitioned

log = logging.getLogger(__name__)

ValueT = TypeVar("ValueT")

# Parsed values kept per table (the least recently used go first): an account is read for
# every step about it, a payment at its submission and at its provider's answer; reading
# and parsing it each time was a visible share of the worker's CPU. Bounded, like all a
# worker keeps in memory: the rest is the store's.
PARSED_KEPT = 16_384

Changes = dict[int, dict[bytes, bytes | None]]  # partition -> key -> encoded value (None: deleted)


class StateTable(Generic[ValueT]):
    def __init__(self, app: faust.App, name: str, partitions: int,
                 decode: Callable[[bytes, bytes], ValueT], producer: Callable[[], Awaitable[BatchProducer]],
                 locate: Callable[[bytes], int | None] = lambda key: None) -> None:
        """`decode(key, raw)` reads a stored value; `producer` gives the producer its writes
        go by; `locate(key)` the partition a key lives at, where its key says (None: look in
        every partition held here)."""
        self._decode = decode
        self._producer = producer
        self._locate = locate
        self.name = name
        self.changelog = changelog_topic(name)
        # Applied but not yet recorded (the changelog has not acknowledged them): what this
        # worker's readers see, and what the store gets once the changelog has it.
        self._unrecorded: dict[bytes, bytes | None] = {}
        # key -> value. Values are frozen, so one can be shared. Only this worker writes the
        # partitions it holds, except a recovery: after one, nothing kept is trusted.
        self._parsed: OrderedDict[bytes, ValueT] = OrderedDict()
        self.table = app.Table(
            name, partitions=partitions, key_type=bytes, value_type=bytes,
            changelog_topic=app.topic(
                self.changelog, partitions=partitions, key_serializer="raw",
                value_serializer="raw", compacting=True, internal=True,
            ),
        )

        @self.table.on_recover
        async def forget_parsed() -> None:
            self._parsed.clear()

    @property
    def store(self) -> Partitioned:
        return self.table.data  # type: ignore[return-value]  # tables/store.py, by the app's store URL

    def stored(self, key: bytes, partition: int | None = None) -> bytes | None:
        if key in self._unrecorded:
            return self._unrecorded[key]
        if partition is None:
            partition = self._locate(key)
        # Looked up everywhere only off the hot path (the HTTP views): a key absent from a
        # partition can still cost a disk read there once its filter blocks left the cache.
        return self.store.find(key) if partition is None else self.store.get(partition, key)

    def get(self, key: bytes, partition: int | None = None) -> ValueT | None:
        """The key's value; `partition`: where it lives, when the caller knows and its key
        does not say (else its locator's answer, else every partition held here)."""
        parsed = self._parsed.get(key)
        if parsed is not None:
            self._parsed.move_to_end(key)
            return parsed
        raw = self.stored(key, partition)
        if raw is None:
            return None
        value = self._decode(key, raw)
        self._keep(key, value)
        return value

    def get_in(self, key: bytes, partitions: set[int]) -> ValueT | None:
        """The key's value if it lives in one of `partitions` (those this worker processes,
        not its standby copies), for a key whose partition its key does not say. A value
        kept parsed is one this worker applied or read where it lives, since its last
        recovery."""
        for partition in partitions:
            value = self.get(key, partition)
            if value is not None:
                return value
        return None

    def _keep(self, key: bytes, value: ValueT) -> None:
        self._parsed[key] = value
        self._parsed.move_to_end(key)
        if len(self._parsed) > PARSED_KEPT:
            self._parsed.popitem(last=False)

    def raw_items(self, prefix: bytes, partitions: set[int]) -> Iterator[tuple[bytes, bytes]]:
        """The stored bytes of every entry under `prefix` in these partitions (the ones this
        worker processes: not its standby copies), for scans that can skip most unparsed."""
        return self.store.items(prefix, partitions)

    def apply(self, changes: Changes, parsed: Mapping[bytes, Any] | None = None) -> None:
        """Make a batch's changes what readers of this worker see (`parsed`: the values the
        changes encode, kept so the next read need not parse). Done once the batch has
        decided, before its outputs go out: whoever reads an outcome's event, then asks
        this worker, finds the state that produced it."""
        for writes in changes.values():
            for key, value in writes.items():
                self._unrecorded[key] = value
                if parsed is not None and key in parsed and value is not None:
                    self._keep(key, parsed[key])
                else:
                    self._parsed.pop(key, None)

    async def record(self, changes: Changes) -> None:
        """Store each partition's changes as one record batch, wait for the changelog, then
        write them to the store with the offset they were recorded at."""
        if not changes:
            return
        messages = [Outgoing(self.changelog, key, value, partition=partition)
                    for partition, writes in changes.items() for key, value in writes.items()]
        futures = await (await self._producer()).send(messages)
        if len(futures) > len(changes):
            log.warning("a batch's changes to %s did not fit one record batch per partition: recorded in "
                        "%d batches for %d partitions", self.name, len(futures), len(changes))
        await confirm(futures)
        # The first offset of each partition's last record batch: a recovery from there
        # reads the rest of that batch again, which writes the same values. (The embedded
        # broker's end offset is that batch's first offset plus one, and Faust refuses a
        # store that claims to be past the end.)
        offsets = {}
        for future in futures:
            sent = future.result()
            offsets[sent.partition] = max(sent.offset, offsets.get(sent.partition, -1))
        for partition, writes in changes.items():
            self.store.write(partition, writes, offsets[partition])
            for key, value in writes.items():
                if self._unrecorded.get(key, self) is value:
                    del self._unrecorded[key]
