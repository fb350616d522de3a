"""The bare hop: a Faust agent that does nothing but consume (and optionally produce).

Run by `bench.floor` as `python -m bench.floor_worker` with its settings in the
environment. It reads FLOOR_TOTAL messages of FLOOR_TOPIC in batches
(`take_events(200, 0.005)`, as the service's agents do), produces FLOOR_PRODUCE
messages per message read to FLOOR_SINK, waits for the broker's acknowledgements once
per batch, and reports its own CPU seconds (every thread) and wall time from the first
message to the last as one JSON line on the descriptor FLOOR_REPORT_FD.

FLOOR_MODE says how:
- `faust`: stock Faust, one event per record, `app.producer.send` per message (the hop
  as Faust's documentation writes it);
- `service`: the service's own transport and producer (one event per partition and
  fetch, one record batch per partition: infra/kafka_transport.py, infra/producer.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import faust
import orjson

from harness.worker_process import HARNESS_SESSION_TIMEOUT_SECONDS
from infra.kafka_transport import deliver_in_batches
from infra.producer import BatchProducer, Outgoing


def report(line: bytes) -> None:
    """To the harness, on the descriptor it passed (Faust takes stdout over for its logs)."""
    os.write(int(os.environ["FLOOR_REPORT_FD"]), line + b"\n")


def records_of(events: list[Any], service: bool) -> Iterator[Any]:
    for event in events:
        if service:
            yield from event.message.records
        else:
            yield event.message


def main() -> None:
    if os.environ.get("FLOOR_UVLOOP") == "1":
        import mode.loop

        mode.loop.use("uvloop")
    bootstrap = os.environ["FLOOR_BOOTSTRAP"]
    topic_name, sink = os.environ["FLOOR_TOPIC"], os.environ["FLOOR_SINK"]
    total, produce = int(os.environ["FLOOR_TOTAL"]), int(os.environ["FLOOR_PRODUCE"])
    service = os.environ.get("FLOOR_MODE") == "service"
    scheme = "payments-kafka" if service else "kafka"
    app = faust.App(
        f"floor-{os.getpid()}", broker=f"{scheme}://{bootstrap}", store="memory://",
        topic_disable_leader=True, topic_allow_declare=False, web_enabled=False,
        consumer_auto_offset_reset="earliest", datadir=os.environ["FLOOR_DATADIR"],
        producer_max_batch_size=1024 * 1024,
        # The embedded broker makes a join wait half the session timeout (Faust's 60 s: 30 s),
        # so as the harness's workers (harness/worker_process.py): 6 s, a 3 s join.
        broker_session_timeout=HARNESS_SESSION_TIMEOUT_SECONDS, broker_heartbeat_interval=1.0,
    )
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")
    if service:
        deliver_in_batches(app, [topic_name])
    started: list[float] = []

    async def send_all(records: list[Any]) -> None:
        if service:
            producer = BatchProducer(app.producer._ensure_producer())  # noqa: SLF001
            pending = await producer.send(Outgoing(sink, record.key, record.value)
                                          for record in records for _ in range(produce))
        else:
            pending = [await app.producer.send(sink, record.key, record.value, None, None, None)
                       for record in records for _ in range(produce)]
        if pending:
            await asyncio.gather(*pending)

    @app.agent(topic, concurrency=1)
    async def bare(stream: faust.StreamT) -> None:
        seen = 0
        async for events in stream.take_events(200, 0.005):
            if not started:
                logging.getLogger().setLevel(logging.WARNING)  # as the service's worker runs (infra/logs.py)
                started.extend((time.process_time(), time.perf_counter()))
                report(b'{"first": true}')
            records = list(records_of(events, service))
            await send_all(records)
            seen += len(records)
            if seen >= total:
                cpu, wall = time.process_time() - started[0], time.perf_counter() - started[1]
                report(orjson.dumps({"messages": seen, "cpu_seconds": cpu, "wall_seconds": wall}))
                os._exit(0)

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn"]
    app.main()


if __name__ == "__main__":
    main()
