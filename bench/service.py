"""The service, measured from outside: command published -> outcome consumed.

Drives a running worker exactly as upstream and downstream systems do (harness.driver):
opens and funds the accounts, then per workload
- throughput: publishes P payments as fast as it can and times the first publish to the
  last outcome consumed, reading the worker's CPU seconds over the same span;
- latency: publishes at half that rate (open loop, on a schedule that does not wait for
  answers) and takes each payment's publish -> outcome time, p50 / p99 / p999.
A sampler reads the worker's resident memory twice a second for the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.progress import Progress, TaskID

from bench import Transfer, percentile
from harness.driver import ServiceDriver
from infra.kafka_transport import true_end_offsets
from models.payment import payment_id_for

FUNDING_PER_ACCOUNT = 10**12  # minor units: no benchmark payment may fail for lack of funds
OUTCOME_TYPES = ("PaymentCaptured", "PaymentFailed")
STALL_SECONDS = 30.0  # no new outcome for this long: the run is reported as incomplete


@dataclass(frozen=True, slots=True)
class Outcome:
    seen_at: float  # time.monotonic() when the driver consumed it
    event_type: str
    reason: str | None


class Outcomes:
    """The outcome events the driver consumed, by payment id, read incrementally."""

    def __init__(self, driver: ServiceDriver) -> None:
        self.driver = driver
        self.by_payment: dict[str, Outcome] = {}
        self._positions = dict.fromkeys(OUTCOME_TYPES, 0)

    def update(self) -> None:
        for event_type in OUTCOME_TYPES:
            received = self.driver.events[f"fintech.events.{event_type}"]
            for record in received[self._positions[event_type]:]:
                body = record.body
                self.by_payment.setdefault(body["payment_id"],
                                           Outcome(record.seen_at, event_type, body.get("reason")))
            self._positions[event_type] = len(received)


def listener(address: str) -> int | None:
    """The pid of the process on this machine listening on `host:port`, None when there is
    none (a server elsewhere): its CPU is then not counted."""
    port = int(address.rsplit(":", 1)[1]) if "://" not in address else (urlsplit(address).port or 5432)
    with contextlib.suppress(psutil.Error):
        for connection in psutil.net_connections("tcp"):
            if connection.status == psutil.CONN_LISTEN and connection.laddr.port == port and connection.pid:
                return connection.pid
    return None


@dataclass
class WorkerProbe:
    """CPU of the worker processes and of the servers they use (the broker, PostgreSQL and
    its backends, when they run on this machine), and memory of the first worker (it runs
    for the whole bench), from /proc via psutil."""

    pids: list[int]
    servers: dict[str, int | None] = field(default_factory=dict)  # name -> pid of the listener
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, rss bytes, outcomes)
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.pids[0]

    @staticmethod
    def _processes(pid: int) -> list[psutil.Process]:
        process = psutil.Process(pid)
        return [process, *process.children(recursive=True)]

    def cpu_seconds(self) -> float:
        """User + system seconds of every worker (and any children)."""
        return sum(sum(p.cpu_times()[:2]) for pid in self.pids for p in self._processes(pid))

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far: "worker" (every worker) and each server found on this machine."""
        found = {"worker": self.cpu_seconds()}
        for name, pid in self.servers.items():
            if pid is not None:
                with contextlib.suppress(psutil.Error):  # a backend that ended while it was read
                    found[name] = sum(sum(p.cpu_times()[:2]) for p in self._processes(pid))
        return found

    def rss_bytes(self) -> int:
        return sum(p.memory_info().rss for p in self._processes(self.pid))

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark (VmHWM) when readable, else the highest sample."""
        sampled = max((rss for _, rss, _ in self.samples), default=0)
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return max(sampled, int(line.split()[1]) * 1024)
        return sampled

    def growth_second_half_per_1000(self) -> int:
        """RSS growth per 1000 payments over the second half of the run: ~0 when memory is flat."""
        if len(self.samples) < 2:
            return 0
        middle, last = self.samples[len(self.samples) // 2], self.samples[-1]
        payments = last[2] - middle[2]
        return round((last[1] - middle[1]) * 1000 / payments) if payments > 0 else 0

    @contextlib.asynccontextmanager
    async def sampling(self, outcomes: Outcomes, interval_seconds: float = 0.5) -> AsyncIterator[None]:
        self.started = time.monotonic()

        async def sample() -> None:
            while True:
                with contextlib.suppress(psutil.Error):
                    self.samples.append((time.monotonic() - self.started, self.rss_bytes(),
                                         len(outcomes.by_payment)))
                await asyncio.sleep(interval_seconds)

        task = asyncio.create_task(sample())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class ThroughputRun:
    workload: str
    payments: int
    seconds: float
    captured: int
    failed: int
    cpu_seconds: dict[str, float]  # by process: worker, broker, postgres (those on this machine)
    records: dict[str, int]  # written to each topic during the run

    @property
    def missing(self) -> int:
        return self.payments - self.captured - self.failed

    @property
    def payments_per_second(self) -> float:
        return (self.captured + self.failed) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        done = max(self.captured + self.failed, 1)
        return {
            "workload": self.workload, "payments": self.payments, "seconds": round(self.seconds, 3),
            "payments_per_second": round(self.payments_per_second, 1), "captured": self.captured,
            "failed": self.failed, "missing": self.missing,
            "worker_cpu_seconds": round(self.cpu_seconds["worker"], 3),
            "worker_cpu_ms_per_payment": round(self.cpu_seconds["worker"] / done * 1000, 3),
            "cpu_us_per_payment": {name: round(seconds / done * 1e6, 1)
                                   for name, seconds in self.cpu_seconds.items()},
            "records_per_payment": {topic: round(count / done, 3)
                                    for topic, count in sorted(self.records.items()) if count},
            "records_per_payment_total": round(sum(self.records.values()) / done, 3),
        }


async def records_written(bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records in each topic so far, with a consumer of its own (see `records_in`)."""
    if not topics:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return await records_in(consumer, bootstrap, topics)
    finally:
        await consumer.stop()


async def records_in(consumer: AIOKafkaConsumer, bootstrap: str, topics: Sequence[str]) -> dict[str, int]:
    """Records in each topic so far: its partitions' end offsets (the broker's reported ones
    corrected as table recovery corrects them, infra/kafka_transport.py), asked by a
    started `consumer`."""
    partitions = [TopicPartition(topic, partition) for topic in topics
                  for partition in sorted(consumer.partitions_for_topic(topic) or ())]
    reported = await consumer.end_offsets(partitions) if partitions else {}
    ends = await true_end_offsets(bootstrap, {tp: end for tp, end in reported.items() if end})
    return {topic: sum(end for tp, end in ends.items() if tp.topic == topic) for topic in topics}


@dataclass
class LatencyRun:
    workload: str
    target_rate: float  # payments/s
    payments: int
    send_seconds: float
    failed: int
    samples: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (sent after, latency) s
    started_s: float = 0.0  # into the bench's service part (its memory samples' clock)
    history_payments: int = 0  # payments the broker's topics already held when it started

    WINDOWS = 10

    @property
    def missing(self) -> int:
        return self.payments - len(self.samples)

    def summary(self) -> dict[str, Any]:
        latencies = [latency for _, latency in self.samples]

        def ms(values: Sequence[float], share: float) -> float:
            return round(percentile(values, share) * 1000, 1)

        return {
            "workload": self.workload, "target_rate": round(self.target_rate, 1),
            "achieved_send_rate": round(self.payments / self.send_seconds, 1) if self.send_seconds else 0.0,
            "payments": self.payments, "failed": self.failed, "missing": self.missing,
            "p50_ms": ms(latencies, 0.50), "p99_ms": ms(latencies, 0.99), "p999_ms": ms(latencies, 0.999),
            "max_ms": ms(latencies, 1.0), "started_s": round(self.started_s, 1),
            "history_payments": self.history_payments,
            # Stable at this rate when the later windows look like the first ones.
            "windows": [{"sent_from_s": round(start, 1), "payments": len(values), "p50_ms": ms(values, 0.5),
                         "p99_ms": ms(values, 0.99)} for start, values in self._windows()],
        }

    def _windows(self) -> list[tuple[float, list[float]]]:
        width = max(self.send_seconds, 1e-9) / self.WINDOWS
        windows: list[list[float]] = [[] for _ in range(self.WINDOWS)]
        for sent, latency in self.samples:
            windows[min(int(sent / width), self.WINDOWS - 1)].append(latency)
        return [(number * width, values) for number, values in enumerate(windows)]


@dataclass
class ServiceBench:
    driver: ServiceDriver
    outcomes: Outcomes
    progress: Progress
    run_id: str
    topics: Sequence[str] = ()  # whose records are counted in a throughput run
    _sent: int = 0

    def _key(self, phase: str) -> str:
        self._sent += 1
        return f"bench-{self.run_id}-{phase}-{self._sent}"

    async def _send(self, key: str, transfer: Transfer) -> None:
        await self.driver.pay(key, transfer.debtor, transfer.creditor, transfer.amount,
                              description="bench payment")

    async def open_accounts(self, driver: ServiceDriver, accounts: Sequence[str]) -> None:
        """With a driver of its own that follows the accounts' answers (the payments' driver
        follows the outcomes only)."""
        task = self.progress.add_task("open and fund accounts", total=2 * len(accounts))

        def all_have(event_type: str) -> bool:
            return set(accounts) <= {body["account_id"] for body in driver.of(event_type)}

        for account_id in accounts:
            await driver.open_account(account_id, "USD")
        await driver.flush()
        await driver.wait_for(lambda: all_have("AccountOpened"), what="accounts opened")
        self.progress.update(task, completed=len(accounts))
        for account_id in accounts:
            await driver.fund(f"bench-{self.run_id}-fund-{account_id}", account_id, FUNDING_PER_ACCOUNT)
        await driver.flush()
        await driver.wait_for(lambda: all_have("AccountFunded"), what="accounts funded")
        self.progress.update(task, completed=2 * len(accounts))

    async def throughput(self, workload: str, stream: Iterator[Transfer], payments: int,
                         probe: WorkerProbe, *, label: str | None = None) -> ThroughputRun:
        """P payments published back to back; first publish -> last outcome consumed, with
        the CPU of each process and the records written to each topic over that span."""
        task = self.progress.add_task(label or f"{workload}: throughput", total=payments)
        keys = [self._key(f"{workload}-max") for _ in range(payments)]
        records_before = await records_written(self.driver.bootstrap, self.topics)
        cpu_before = probe.cpu_by_process()
        started = time.monotonic()
        for key in keys:
            await self._send(key, next(stream))
        await self.driver.flush()
        found = await self._await_outcomes([payment_id_for(key) for key in keys], task)
        cpu_after = probe.cpu_by_process()
        cpu = {name: cpu_after[name] - cpu_before[name] for name in cpu_after if name in cpu_before}
        records_after = await records_written(self.driver.bootstrap, self.topics)
        records = {topic: records_after[topic] - records_before[topic] for topic in self.topics}
        finished = max((outcome.seen_at for outcome in found), default=started)
        failed = sum(outcome.event_type == "PaymentFailed" for outcome in found)
        return ThroughputRun(workload, payments, finished - started, len(found) - failed, failed,
                             cpu, records)

    async def latency(self, workload: str, stream: Iterator[Transfer], rate: float,
                      seconds: float, probe: WorkerProbe) -> LatencyRun:
        """Open loop at `rate` payments/s for `seconds`: payment i is published at start + i/rate."""
        payments = max(1, int(rate * seconds))
        task = self.progress.add_task(f"{workload}: latency at {rate:,.0f}/s", total=payments)
        sent_at: dict[str, float] = {}
        self.outcomes.update()
        history = len(self.outcomes.by_payment)
        started = time.monotonic()
        for number in range(payments):
            delay = started + number / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            key = self._key(f"{workload}-paced")
            sent_at[payment_id_for(key)] = time.monotonic()
            await self._send(key, next(stream))
            if number % 50 == 0:
                self.outcomes.update()
                self.progress.update(task, completed=sum(p in self.outcomes.by_payment for p in sent_at))
        send_seconds = time.monotonic() - started
        await self.driver.flush()
        await self._await_outcomes(list(sent_at), task)
        arrived = {p: self.outcomes.by_payment[p] for p in sent_at if p in self.outcomes.by_payment}
        samples = [(sent_at[p] - started, outcome.seen_at - sent_at[p]) for p, outcome in arrived.items()]
        failed = sum(outcome.event_type == "PaymentFailed" for outcome in arrived.values())
        return LatencyRun(workload, rate, payments, send_seconds, failed, samples,
                          started - probe.started, history)

    async def _await_outcomes(self, payment_ids: Sequence[str], task: TaskID) -> list[Outcome]:
        """Wait until every payment has its outcome, or none arrived for STALL_SECONDS."""
        last_count, last_change = -1, time.monotonic()

        def settled() -> bool:
            nonlocal last_count, last_change
            self.outcomes.update()
            count = sum(p in self.outcomes.by_payment for p in payment_ids)
            self.progress.update(task, completed=count)
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            return count == len(payment_ids) or time.monotonic() - last_change > STALL_SECONDS

        await self.driver.wait_for(settled, timeout_seconds=24 * 3600, what="outcomes")
        return [self.outcomes.by_payment[p] for p in payment_ids if p in self.outcomes.by_payment]
