"""The read side: the public events, folded into the payments' read model (payment_views)
and turned into the webhook deliveries they are due (the notify step's first half; the
dispatcher, agents/notify.py, sends them).

One agent per worker (concurrency 1), of its own, reads the
payment topics of models.payment_view.TOPICS and the notified ones of
models.webhooks.TOPICS in batches, and writes each batch in one transaction
(LedgerStore.write_events; the fold is models/payment_view.py, the matching of endpoints
ledger/webhooks.py): a delivery is durable before its event's offset is committed. It
runs in every worker by default, where it shares the worker's CPU with the payments (~1.3
bare hops per payment, docs/capacity.md); in workers of their own
(PAYMENTS_WORKER_ROLE=read-side, app.create_read_side_app) it never slows a payment.

A payment's events share its partition number on every topic, and the group assigns a
partition number of all the topics to one worker, so one
writer folds a payment's events; around a rebalance two may, and the store's row lock
orders them.

The offsets of a batch are committed only once it is written:

- Batch delivery (infra/kafka_transport.py), as for the owner's loop, not Faust's record
  by record: a message per partition and fetch instead of Faust's ~150 us per record, and
  its guards, which record-by-record delivery lacks: an ack of a message from before a
  rebalance or a seek is not counted, the offset is never committed past a batch not
  acked, a batch that never reached the agent is read again (agents/loop.py, InOrder).
- `take_events` acks a batch when the agent asks for the next one, so after the write;
  while PostgreSQL is away the store retries with no deadline and the batch waits (held:
  the monitor does not read it again). An exception stops the worker before any ack
  (loop.install). A stop mid-batch is the one path on which the take buffer acks what was
  not written: those messages are withheld first.

A message that is not a valid event is logged, counted and skipped: an exception would
stop the worker at it, again after every restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import faust
from aiokafka.structs import ConsumerRecord

from agents import loop
from infra.kafka_transport import deliver_in_batches, withhold
from infra.metrics import Metrics
from ledger.store import LedgerStore
from models import payment_view, webhooks
from models.codec import Unreadable
from models.payment_view import Fact, read_fact
from models.webhooks import Notice, notice_of

log = logging.getLogger(__name__)
T = TypeVar("T", Fact, Notice)

NAME = "payment_views"
TOPICS: tuple[str, ...] = tuple(dict.fromkeys(payment_view.TOPICS + webhooks.TOPICS))
# How long a batch waits for more once it holds a message: the view lags by about this
# much, and a transaction carries a fetch's worth of every partition.
BATCH_WITHIN_SECONDS = 0.05


def install(app: faust.App, ledger: Callable[[], Awaitable[LedgerStore]], metrics: Metrics,
            webhook_retention_hours: float) -> None:
    deliver_in_batches(app, TOPICS)
    # One message per partition per batch. The consumer hands over at most
    # BATCHES_IN_HAND_MAX (4) per partition, so with the buffer full the stream's queue
    # holds 3 per partition, below Faust's pressure mark (app.py, stream_buffer_maxsize).
    # While a short batch waits for PostgreSQL it can hold nearly 4 per partition: still
    # below the mark up to 12 partitions; above, Faust may pause them, and the monitor
    # resumes them.
    events_max = len(TOPICS) * app.conf.topic_partitions

    async def project(stream: faust.StreamT) -> None:
        in_order = loop.InOrder()
        async for batch in stream.take_events(events_max, BATCH_WITHIN_SECONDS):
            try:
                events = await loop.admitted(batch, in_order, app.consumer.seek)
                if events:
                    await write(events, ledger, metrics, webhook_retention_hours)
            except asyncio.CancelledError:  # the worker stops: the take buffer would ack it unwritten
                withhold(app.consumer, [event.message for event in batch])
                raise

    loop.install(app, NAME, TOPICS, project)


async def write(events: Sequence[faust.EventT], ledger: Callable[[], Awaitable[LedgerStore]],
                metrics: Metrics, webhook_retention_hours: float) -> None:
    records = loop.records_of(events)
    facts = readable(records, payment_view.TOPICS, read_fact, metrics)
    notices = readable(records, webhooks.TOPICS, notice_of, metrics)
    started = time.perf_counter()
    await (await ledger()).write_events(facts, notices, webhook_retention_hours)
    metrics.batch_size.labels(NAME).observe(len(records))
    metrics.batch_phase.labels(NAME, "write").observe(time.perf_counter() - started)


def readable(records: Sequence[ConsumerRecord], topics: tuple[str, ...],
             read: Callable[[str, bytes | None], T | Unreadable], metrics: Metrics) -> list[T]:
    """What `read` makes of the records of `topics`; the others logged and counted."""
    found = []
    for record in records:
        if record.topic not in topics:
            continue
        value = read(record.topic, record.value)
        if isinstance(value, Unreadable):
            log.warning("%s[%d] offset %d skipped by the read side: %s", record.topic,
                        record.partition, record.offset, value.reason)
            metrics.view_events_skipped.labels(record.topic).inc()
        else:
            found.append(value)
    return found
