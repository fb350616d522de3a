"""Changelog-backed Faust tables of msgspec records, written a batch at a time.

Keys and values are raw bytes on the wire (values are the records' JSON), so what
recovery reads back from the changelog is exactly what was written.

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

log = logging.getLogger(__name__)

ValueT = TypeVar("ValueT")

# Parsed values kept per table (the least recently used go first): an account is read for
# every step about it, a payment at its submission and at its provider's answer; parsing
# its JSON each time was a visible share of the worker's CPU.
PARSED_KEPT = 16_384

Changes = dict[int, dict[bytes, bytes]]  # partition -> key -> encoded value


class StateTable(Generic[ValueT]):
    def __init__(self, app: faust.App, name: str, partitions: int,
                 decode: Callable[[bytes, bytes], ValueT], producer: Callable[[], Awaitable[BatchProducer]]
                 ) -> None:
        """`decode(key, raw)` reads a stored value; `producer` gives the producer its writes go by."""
        self._decode = decode
        self._producer = producer
        self.name = name
        self.changelog = changelog_topic(name)
        # key -> (the stored bytes it was parsed from, the value). Values are frozen, so one
        # can be shared; a value replaced by recovery is another bytes object: parsed again.
        self._parsed: OrderedDict[bytes, tuple[bytes, ValueT]] = OrderedDict()
        self.table = app.Table(
            name, partitions=partitions, key_type=bytes, value_type=bytes,
            changelog_topic=app.topic(
                self.changelog, partitions=partitions, key_serializer="raw",
                value_serializer="raw", compacting=True, internal=True,
            ),
        )

    def get(self, key: bytes) -> ValueT | None:
        raw = self.table.data.get(key)
        if raw is None:
            return None
        parsed = self._parsed.get(key)
        if parsed is not None and parsed[0] is raw:
            self._parsed.move_to_end(key)
            return parsed[1]
        value = self._decode(key, raw)
        self._keep(key, raw, value)
        return value

    def _keep(self, key: bytes, raw: bytes, value: ValueT) -> None:
        self._parsed[key] = (raw, value)
        self._parsed.move_to_end(key)
        if len(self._parsed) > PARSED_KEPT:
            self._parsed.popitem(last=False)

    def raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """The stored bytes of every entry, for scans that can skip most without parsing."""
        return iter(list(self.table.data.items()))

    def apply(self, changes: Changes, parsed: Mapping[bytes, Any] | None = None) -> None:
        """Make a batch's changes what readers of this worker see (`parsed`: the values the
        changes encode, kept so the next read need not parse). Done once the batch has
        decided, before its outputs go out: whoever reads an outcome's event, then asks
        this worker, finds the state that produced it."""
        for writes in changes.values():
            for key, value in writes.items():
                self.table.data[key] = value
                if parsed is not None and key in parsed:
                    self._keep(key, value, parsed[key])

    async def record(self, changes: Changes) -> None:
        """Store each partition's changes as one record batch and wait for the changelog."""
        if not changes:
            return
        messages = [Outgoing(self.changelog, key, value, partition=partition)
                    for partition, writes in changes.items() for key, value in writes.items()]
        futures = await (await self._producer()).send(messages)
        if len(futures) > len(changes):
            log.warning("a batch's changes to %s did not fit one record batch per partition: recorded in "
                        "%d batches for %d partitions", self.name, len(futures), len(changes))
        await confirm(futures)
