"""Reading a table's state straight from its changelog topic, without a worker.

The changelog is the table: the latest value of each key, read from the beginning
to the end offsets taken at the start. Used by `payments reconcile`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def read_table(bootstrap: str, topic: str,
                     client_options: Mapping[str, Any] | None = None) -> dict[bytes, bytes]:
    """`client_options`: TLS and SASL (Settings.kafka_client_options); none for a plaintext broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                fetch_max_wait_ms=10, max_partition_fetch_bytes=16 * 1024 * 1024,
                                **(client_options or {}))
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return {}
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        state: dict[bytes, bytes] = {}
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    if message.value is None:
                        state.pop(message.key, None)  # a tombstone
                    else:
                        state[message.key] = message.value
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return state
    finally:
        await consumer.stop()
