"""The floor of this stack: what a bare Faust agent costs on this broker, per message.

A payment cannot cost the worker less than consuming its command and producing its
events and state, so the service's CPU per payment is read against these figures,
measured in the same run on the same broker (see issue #13, "The budget").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil
from aiokafka import AIOKafkaProducer

from infra.topics import TopicSpec, ensure_topics

MESSAGES = 40_000
PARTITIONS = 8
# About the size of a RequestPayment command.
VALUE = orjson.dumps({"type": "RequestPayment", "idempotency_key": "floor-0000000000",
                      "debtor_account_id": "floor-account-01", "creditor_account_id": "floor-account-02",
                      "amount": 1234, "currency": "USD", "metadata": {"note": "x" * 40}})


@dataclass(frozen=True)
class FloorRun:
    mode: str
    produce_per_message: int
    uvloop: bool
    messages: int
    worker_cpu_seconds: float
    wall_seconds: float
    broker_cpu_seconds: float | None

    def summary(self) -> dict[str, Any]:
        per = self.messages or 1
        return {
            "mode": self.mode, "produce_per_message": self.produce_per_message, "uvloop": self.uvloop,
            "messages": self.messages, "messages_per_second": round(self.messages / self.wall_seconds, 1),
            "worker_cpu_us_per_message": round(self.worker_cpu_seconds / per * 1e6, 1),
            "broker_cpu_us_per_message": (round(self.broker_cpu_seconds / per * 1e6, 1)
                                          if self.broker_cpu_seconds is not None else None),
        }


async def _fill(bootstrap: str, topic: str, messages: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, VALUE, key=f"floor-{n:010d}".encode()) for n in range(messages)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _cpu_seconds(process: psutil.Process | None) -> float | None:
    if process is None:
        return None
    times = process.cpu_times()
    return times.user + times.system


def measure_floor(bootstrap: str, *, mode: str, produce_per_message: int, uvloop: bool,
                  messages: int = MESSAGES,
                  broker_pid: int | None = None, workdir: Path | None = None) -> FloorRun:
    """One bare agent over `messages` messages written beforehand; its own CPU and wall time."""
    run = f"floor-{os.getpid()}-{mode}-{produce_per_message}-{int(uvloop)}-{os.urandom(3).hex()}"
    source, sink = f"{run}.in", f"{run}.out"
    asyncio.run(ensure_topics(bootstrap, [TopicSpec(source, PARTITIONS), TopicSpec(sink, PARTITIONS)]))
    asyncio.run(_fill(bootstrap, source, messages))
    broker = psutil.Process(broker_pid) if broker_pid else None
    workdir = workdir or Path(tempfile.mkdtemp(prefix="floor-"))
    env = {**os.environ, "FLOOR_BOOTSTRAP": bootstrap, "FLOOR_TOPIC": source, "FLOOR_SINK": sink,
           "FLOOR_TOTAL": str(messages), "FLOOR_PRODUCE": str(produce_per_message),
           "FLOOR_UVLOOP": "1" if uvloop else "0", "FLOOR_MODE": mode, "FLOOR_DATADIR": str(workdir / run)}
    read_end, write_end = os.pipe()
    env["FLOOR_REPORT_FD"] = str(write_end)
    worker = subprocess.Popen([sys.executable, "-m", "bench.floor_worker"], env=env, pass_fds=(write_end,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=Path(__file__).resolve().parent.parent)
    os.close(write_end)
    broker_first = None
    result: dict[str, Any] = {}
    try:
        for line in os.fdopen(read_end, "rb"):
            found = orjson.loads(line)
            if found.get("first"):
                broker_first = _cpu_seconds(broker)
            else:
                result = found
                break
        broker_last = _cpu_seconds(broker)
    finally:
        worker.kill()
        worker.wait()
    if not result:
        raise RuntimeError("the bare agent stopped before reading every message")
    broker_seconds = (broker_last - broker_first) if broker_first is not None and broker_last is not None \
        else None
    return FloorRun(mode, produce_per_message, uvloop, result["messages"], result["cpu_seconds"],
                    result["wall_seconds"], broker_seconds)
