"""Drives the service from outside, as upstream and downstream systems do.

Publishes commands to the inbound topics and follows every outbound topic, keeping
each event once (by event_id), so tests, the demo and the benchmark all see the
service exactly as its users do.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from infra.topics import ACCOUNT_COMMANDS, DEAD_LETTER, PAYMENT_COMMANDS
from models.events import PUBLIC_EVENTS, PaymentCaptured, PaymentFailed

OUTBOUND_TOPICS = [event.topic for event in PUBLIC_EVENTS] + [DEAD_LETTER]
OUTCOME_TOPICS = (PaymentCaptured.topic, PaymentFailed.topic)


def payment_command(key: str, debtor: str, creditor: str, amount: int, currency: str = "USD",
                    **extra: Any) -> dict[str, Any]:
    """A RequestPayment as upstream publishes it (CONTRACT.md)."""
    return {"type": "RequestPayment", "idempotency_key": key, "debtor_account_id": debtor,
            "creditor_account_id": creditor, "amount": amount, "currency": currency, **extra}


@dataclass
class Received:
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    seen_at: float

    @property
    def body(self) -> dict[str, Any]:
        return orjson.loads(self.value)  # type: ignore[no-any-return]


@dataclass
class ServiceDriver:
    bootstrap: str
    # What it follows: every outbound topic by default. The benchmark follows only the
    # outcomes, so that its own fetching costs the shared broker as little as it can.
    topics: Sequence[str] = tuple(OUTBOUND_TOPICS)
    producer: AIOKafkaProducer | None = None
    consumer: AIOKafkaConsumer | None = None
    events: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    duplicates: int = 0
    _seen: set[str] = field(default_factory=set)
    _reader: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> ServiceDriver:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=2,
                                         max_request_size=16 * 1024 * 1024)
        await self.producer.start()
        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                         auto_offset_reset="earliest", fetch_max_wait_ms=10,
                                         fetch_min_bytes=1024 * 1024,  # paced: see infra/kafka_transport.py
                                         fetch_max_bytes=32 * 1024 * 1024,
                                         max_partition_fetch_bytes=16 * 1024 * 1024)
        await self.consumer.start()
        partitions = [TopicPartition(topic, p) for topic in self.topics
                      for p in (self.consumer.partitions_for_topic(topic) or await self._partitions(topic))]
        self.consumer.assign(partitions)
        await self.consumer.seek_to_beginning()
        self._reader = asyncio.create_task(self._read())
        return self

    async def _partitions(self, topic: str) -> set[int]:
        assert self.consumer is not None
        await self.consumer._client.force_metadata_update()  # noqa: SLF001 - a fresh view
        return self.consumer.partitions_for_topic(topic) or set()

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    async def _read(self) -> None:
        assert self.consumer is not None
        while True:
            batches = await self.consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batches.items():
                for message in messages:
                    self._keep(tp.topic, message)
            if batches:
                self._changed.set()

    def _keep(self, topic: str, message: Any) -> None:
        headers = {name: value for name, value in message.headers or ()}
        identity = headers.get("ce_id", b"").decode() or f"{topic}/{message.partition}/{message.offset}"
        if identity in self._seen:
            self.duplicates += 1
            return
        self._seen.add(identity)
        self.events[topic].append(Received(topic, message.key, message.value, headers, time.monotonic()))

    # --- publishing ----------------------------------------------------------------------

    async def send(self, topic: str, key: str | bytes | None, value: bytes | dict[str, Any]) -> None:
        assert self.producer is not None
        raw_key = key.encode() if isinstance(key, str) else key
        raw_value = value if isinstance(value, bytes) else orjson.dumps(value)
        await self.producer.send(topic, raw_value, key=raw_key)

    async def flush(self) -> None:
        assert self.producer is not None
        await self.producer.flush()

    async def open_account(self, account_id: str, currency: str = "USD", **extra: Any) -> None:
        await self.send(ACCOUNT_COMMANDS, account_id, {
            "type": "OpenAccount", "account_id": account_id, "owner_id": f"owner-{account_id}",
            "currency": currency, **extra})

    async def fund(self, key: str, account_id: str, amount: int, currency: str = "USD") -> None:
        await self.send(ACCOUNT_COMMANDS, account_id, {
            "type": "FundAccount", "idempotency_key": key, "account_id": account_id,
            "amount": amount, "currency": currency})

    async def pay(self, key: str, debtor: str, creditor: str, amount: int, currency: str = "USD",
                  **extra: Any) -> None:
        await self.send(PAYMENT_COMMANDS, key,
                        payment_command(key, debtor, creditor, amount, currency, **extra))

    async def refund(self, key: str, payment_id: str, amount: int | None = None) -> None:
        body: dict[str, Any] = {"type": "RefundPayment", "idempotency_key": key, "payment_id": payment_id}
        if amount is not None:
            body["amount"] = amount
        await self.send(PAYMENT_COMMANDS, key, body)

    # --- reading -------------------------------------------------------------------------

    def of(self, event_type: str) -> list[dict[str, Any]]:
        return [r.body for r in self.events[f"fintech.events.{event_type}"]]

    def outcomes(self) -> dict[str, list[dict[str, Any]]]:
        """payment_id -> its PaymentCaptured / PaymentFailed events."""
        found: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event_type in ("PaymentCaptured", "PaymentFailed"):
            for body in self.of(event_type):
                found[body["payment_id"]].append(body)
        return found

    async def wait_for(self, condition: Callable[[], bool], timeout_seconds: float = 60.0,
                       what: str = "condition") -> None:
        deadline = time.monotonic() + timeout_seconds
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"timed out after {timeout_seconds:.0f}s waiting for {what}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 0.5))
            except TimeoutError:
                pass
