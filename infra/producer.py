"""Sending many messages at once, as one record batch per topic partition.

aiokafka's `send` costs ~22 us a message here (a future, a partition lookup and the
accumulator's bookkeeping each); a record batch built with `create_batch` and handed over
with `send_batch` costs ~2 us a message. The service's agents send everything a batch
of steps produced in one go, so they go through here.

A record batch is also appended atomically by the broker: all of its records or none.
The state tables rely on that (tables/state.py).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

Headers = Sequence[tuple[str, bytes]]


@functools.lru_cache(maxsize=65_536)  # a payment's or an account's steps keep coming back to it
def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (and Faust's table router) gives a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None  # None: the key's, by Kafka's default partitioner (any, for no key)


@dataclass
class BatchProducer:
    producer: AIOKafkaProducer
    _partitions: dict[str, int] = field(default_factory=dict)

    async def partitions(self, topic: str) -> int:
        count = self._partitions.get(topic)
        if count is None:
            count = len(await self.producer.client._wait_on_metadata(topic))  # noqa: SLF001
            self._partitions[topic] = count
        return count

    async def send(self, messages: Iterable[Outgoing]) -> list[asyncio.Future[Any]]:
        """Queue every message, one record batch per partition (more when one is full),
        in order within a partition; the futures resolve once the broker has them."""
        grouped: dict[tuple[str, int], list[Outgoing]] = {}
        for message in messages:
            partition = message.partition
            if partition is None:
                count = await self.partitions(message.topic)
                # Kafka's default partitioner too: the key's partition, any for no key.
                partition = (
                    partition_for(message.key, count) if message.key is not None else random.randrange(count)
                )
            grouped.setdefault((message.topic, partition), []).append(message)
        futures = []
        for (topic, partition), group in grouped.items():
            batch = self.producer.create_batch()
            for message in group:
                if (
                    batch.append(
                        key=message.key, value=message.value, timestamp=None, headers=list(message.headers)
                    )
                    is None
                ):  # full: send it, go on
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    batch.append(
                        key=message.key, value=message.value, timestamp=None, headers=list(message.headers)
                    )
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures


class Producers:
    """One producer per part of the worker that sends (the intake, the owner, the provider
    answers, the outbox relay, the web surface).

    aiokafka keeps one request in flight per broker: parts sharing a producer queue behind
    each other's sends, and an agent's two round trips per batch (outputs, then state)
    each waited for whatever else the worker was sending. Each part's own producer, made
    by `make` (Faust's, so that its settings, TLS and SASL included, are the same), keeps
    the waits its own."""

    def __init__(self, make: Callable[[], AIOKafkaProducer]) -> None:
        self._make = make
        self._started: dict[str, BatchProducer] = {}
        self._lock = asyncio.Lock()

    def of(self, name: str) -> Callable[[], Awaitable[BatchProducer]]:
        async def producer() -> BatchProducer:
            return self._started.get(name) or await self._start(name)

        return producer

    async def _start(self, name: str) -> BatchProducer:
        async with self._lock:
            if name not in self._started:
                producer = self._make()
                await producer.start()
                self._started[name] = BatchProducer(producer)
            return self._started[name]

    async def start(self, *names: str) -> None:
        """Start these producers now, not on their first send (whose wait they would add)."""
        for name in names:
            await self.of(name)()

    async def stop(self) -> None:
        for started in self._started.values():
            await started.producer.stop()
        self._started.clear()
