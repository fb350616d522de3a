"""Every topic the service uses, created explicitly with its partition count.

A Kafka-compatible broker may auto-create an unknown topic on first use with its own
default partition count, which would silently break co-partitioning of the tables.
So topics are created before any client touches them, and their counts are checked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from models.events import PUBLIC_EVENTS

APP_ID = "payments"
# The consumer group of the read side when it runs in workers of its own (PAYMENTS_WORKER_ROLE).
READ_SIDE_APP_ID = "payments-read-side"
ACCOUNT_COMMANDS = "fintech.accounts.commands"
PAYMENT_COMMANDS = "fintech.payments.commands"
DEAD_LETTER = "fintech.deadletter"
# The one internal topic: the steps each partition's owner takes (key: account id, or
# payment id for a payment's directory entry), in batches (models/steps.py).
STEPS = "payments.steps"

# Tables and the topic each is partitioned by (its changelog has the same count).
TABLE_SOURCES = {"owners": STEPS, "idempotency_keys": PAYMENT_COMMANDS}


def changelog_topic(table: str) -> str:
    return f"{APP_ID}-{table}-changelog"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False


def service_topics(partitions: int) -> list[TopicSpec]:
    plain = [ACCOUNT_COMMANDS, PAYMENT_COMMANDS, DEAD_LETTER, STEPS]
    plain += [event.topic for event in PUBLIC_EVENTS]
    specs = [TopicSpec(name, partitions) for name in plain]
    specs += [TopicSpec(changelog_topic(t), partitions, compacted=True) for t in TABLE_SOURCES]
    return specs


class TopicMismatch(RuntimeError):
    """A topic exists with another partition count than the service needs."""


async def ensure_topics(bootstrap: str, specs: list[TopicSpec],
                        client_options: Mapping[str, Any] | None = None) -> None:
    """`client_options`: TLS and SASL (Settings.kafka_client_options); none for a plaintext broker."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000,
                                **(client_options or {}))
    await admin.start()
    try:
        existing = await _partition_counts(admin)
        missing = [spec for spec in specs if spec.name not in existing]
        if missing:
            try:
                await admin.create_topics([_new_topic(spec) for spec in missing])
            except TopicAlreadyExistsError:
                pass  # another process created them at the same moment
        counts = await _partition_counts(admin)
    finally:
        await admin.close()
    wrong = [f"{s.name}: has {counts.get(s.name)}, needs {s.partitions}" for s in specs
             if counts.get(s.name) != s.partitions]
    if wrong:
        raise TopicMismatch("topics with the wrong partition count: " + "; ".join(wrong))


def _new_topic(spec: TopicSpec) -> NewTopic:
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    return NewTopic(spec.name, spec.partitions, 1, topic_configs=configs)


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    described = await admin.describe_topics()
    return {t["topic"]: len(t["partitions"]) for t in described if not t.get("error_code")}
