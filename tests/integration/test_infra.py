"""The embedded components start, answer, and are reachable by real clients."""

from __future__ import annotations

import asyncpg
from aiokafka import AIOKafkaProducer


async def test_postgres_answers(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        assert await connection.fetchval("SELECT 40 + 2") == 42
    finally:
        await connection.close()


async def test_broker_accepts_a_produce(kafka_bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        metadata = await producer.send_and_wait("infra-smoke", b"hello")
        assert metadata.offset >= 0
    finally:
        await producer.stop()
