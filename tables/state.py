"""Changelog-backed Faust tables holding typed state, written only through `record`.

Values are the models' JSON. Keys and values are raw bytes on the wire so that what
recovery reads back from the changelog is exactly what was written.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Generic, TypeVar

import faust
from pydantic import BaseModel

from infra.delivery import confirm
from infra.topics import changelog_topic
from models.codec import dumps

ModelT = TypeVar("ModelT", bound=BaseModel)


# Parsed values kept per table (the least recently used go first): an account is read for
# every step about it, and a payment a few times within seconds; parsing its JSON each time
# was a visible share of the worker's CPU.
PARSED_KEPT = 4096


class StateTable(Generic[ModelT]):
    def __init__(self, app: faust.App, name: str, model: type[ModelT], partitions: int) -> None:
        self.model = model
        self.app = app
        # key -> (the stored bytes it was parsed from, the model). Models are frozen, so one
        # can be shared; a value replaced by recovery is another bytes object: parsed again.
        self._parsed: OrderedDict[bytes, tuple[bytes, ModelT]] = OrderedDict()
        self.changelog = changelog_topic(name)
        self.table = app.Table(
            name, partitions=partitions, key_type=bytes, value_type=bytes,
            changelog_topic=app.topic(
                changelog_topic(name), partitions=partitions, key_serializer="raw",
                value_serializer="raw", compacting=True, internal=True,
            ),
        )

    def get(self, key: str) -> ModelT | None:
        stored_key = key.encode()
        raw = self.table.data.get(stored_key)
        if raw is None:
            return None
        parsed = self._parsed.get(stored_key)
        if parsed is not None and parsed[0] is raw:
            self._parsed.move_to_end(stored_key)
            return parsed[1]
        model = self.model.model_validate_json(raw)
        self._keep(stored_key, raw, model)
        return model

    def _keep(self, key: bytes, raw: bytes, model: ModelT) -> None:
        self._parsed[key] = (raw, model)
        self._parsed.move_to_end(key)
        if len(self._parsed) > PARSED_KEPT:
            self._parsed.popitem(last=False)

    def latest(self, key: str, changed: dict[str, tuple[int, ModelT]]) -> ModelT | None:
        """The state as a batch in progress sees it: its own unrecorded changes first."""
        return changed[key][1] if key in changed else self.get(key)

    def raw_values(self) -> list[bytes]:
        """The stored JSON of every value, for scans that can skip most without parsing."""
        return list(self.table.data.values())

    def items(self) -> list[tuple[str, ModelT]]:
        return [(k.decode(), self.model.model_validate_json(v)) for k, v in self.table.data.items()]

    async def record(self, writes: dict[str, tuple[int, ModelT]]) -> None:
        """Store new state (key -> (partition, model)) and wait for its changelog.

        The last write of each partition goes out alone, after the others are acknowledged.
        The embedded broker reports a partition's end offset as the base offset of its last
        record batch plus one, so a multi-record batch at the tail would be cut off by a
        recovery that reads "up to the end offset"; a single-record batch at the tail keeps
        that end offset exact. (Apache Kafka reports it exactly either way.)"""
        encoded = {key.encode(): (partition, dumps(model), model)
                   for key, (partition, model) in writes.items()}
        last_of_partition = {partition: key for key, (partition, _, _) in encoded.items()}
        tails = set(last_of_partition.values())
        await confirm([await self._write(key, *encoded[key]) for key in encoded if key not in tails])
        await confirm([await self._write(key, *encoded[key]) for key in tails])

    async def _write(self, key: bytes, partition: int, value: bytes, model: ModelT) -> asyncio.Future[Any]:
        """Sent directly, not through Faust's background changelog buffer (`send_soon`):
        a future from that buffer never resolves if its flushing task dies. And straight to
        the producer, not through `Topic.send`, whose per-message futures and callbacks
        cost more CPU than the send itself."""
        self.table.data[key] = value
        self._keep(key, value, model)
        return await self.app.producer.send(self.changelog, key, value, partition, None, None)
