"""`payments bench`: the service against the classic row-lock design, in one run on one PostgreSQL.

Starts the embedded broker and PostgreSQL unless they are configured, then measures, in
order: the floor (bare Faust agents on this broker, bench/floor.py); the ledger writer
alone; the classic design at its best client count, on each workload; the service on
each workload - latency at fixed rates (20/s, 200/s), throughput (with CPU per payment by
process and records per payment by topic), latency at half that throughput - with one
`payments worker`, then again with more (`worker_counts`: workers join the running
ones), the best count per workload reported as the classic design's best client count
is. Prints the figures, writes them as JSON and a PNG plot (throughput, latency and the
worker's memory over the run). Exits 0 when every measurement is valid (every payment
reached its outcome, none failed, the classic design raised no error), whether or not
the targets are met; the table and the JSON say which are.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import platform
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import WORKLOADS, account_ids, check_worker_counts, classic, report, transfers
from bench.floor import MESSAGES as FLOOR_MESSAGES
from bench.floor import measure_floor
from bench.ledger_writer import BATCH_SIZES, measure_ledger_writer
from bench.service import Outcomes, ServiceBench, WorkerProbe, listener
from harness.database import create_database, drop_database
from harness.driver import OUTCOME_TOPICS, ServiceDriver
from harness.embedded import infrastructure
from harness.worker_process import WorkerProcess
from infra.topics import ensure_topics, service_topics
from ledger.migrate import migrate
from models.events import AccountFunded, AccountOpened
from settings import Settings

console = Console()
# What the benchmark's drivers follow: the accounts' answers, until the accounts are open
# and funded; then the outcomes only. Every partition a consumer follows costs the shared
# broker on every fetch (about as much as the worker's own fetching), so no more.
ACCOUNT_TOPICS = (AccountOpened.topic, AccountFunded.topic)


@dataclass(frozen=True)
class Sizes:
    """How long each part runs; `quick` is for the test suite, not for figures."""

    ledger_seconds_per_size: float
    ledger_minimum_batches: int
    classic_client_counts: tuple[int, ...]
    classic_seconds_per_trial: float
    warmup_payments: int
    latency_seconds: float
    fixed_rates: tuple[float, ...]  # payments/s, measured before each workload's throughput
    floor_messages: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(0.2, 1, (1, 4), 0.5, 10, 2.0, (20.0,), 2_000)
        return cls(2.5, 3, classic.CLIENT_COUNTS, 2.5, 200, 30.0, (20.0, 200.0), FLOOR_MESSAGES)


# The bare hops measured for the floor: (mode, messages produced per message consumed).
# On uvloop, as the worker runs (cli/worker.py).
FLOOR_RUNS = (("faust", 0), ("faust", 6), ("service", 0), ("service", 6))


def run_bench(settings: Settings, *, payments: int, quick: bool, output: Path | None = None,
              worker_counts: Sequence[int] = (1,), read_side_apart: bool = False) -> int:
    """Measure, print, write `output` (default: PAYMENTS_DATA_DIR/bench-results.json); 0 when valid.
    `read_side_apart`: the read side in a worker of its own beside payments-only workers."""
    if payments < 1:
        raise ValueError("payments must be at least 1")
    check_worker_counts(worker_counts)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-", dir=settings.data_dir))
    output = output or settings.data_dir / "bench-results.json"
    sizes = Sizes.of(quick)
    started = time.monotonic()
    results: dict[str, Any] = {"run": _run_facts(settings, payments, quick)}
    results["run"]["read_side"] = "apart" if read_side_apart else "in every worker"
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    databases: list[str] = []  # created on the server; dropped at the end when it is a configured one
    embedded = infrastructure(settings, workdir, say=console.print, discard_database=True)
    with embedded as (bootstrap, server_url), Progress(*columns, console=console) as progress:
        try:
            results["floor"] = _floor(bootstrap, sizes, progress, workdir)
            results["ledger_writer"] = asyncio.run(_ledger_writer(server_url, sizes, progress, databases))
            results["classic"] = asyncio.run(_classic(server_url, sizes, progress, databases, results["run"]))
            databases.append(asyncio.run(_prepare_service(bootstrap, server_url, settings.partitions)))
            workers = Workers(bootstrap, databases[-1], workdir, settings.partitions, progress.console.print,
                              read_side_apart)
            try:
                results["service"] = asyncio.run(
                    _service(bootstrap, databases[-1], workers, worker_counts, payments, sizes, progress))
            finally:
                workers.stop()
        finally:
            if settings.database_url:  # an embedded server is removed whole when it stops
                asyncio.run(_drop(server_url, databases))
    results["ratio"] = {w: _ratio(results, w) for w in WORKLOADS}
    results["floor_share"] = report.floor_share(results)
    results["targets"] = report.targets(results)
    results["run"]["seconds"] = round(time.monotonic() - started, 1)
    report.print_tables(console, results)
    console.print(f"figures written to {report.write_json(results, output)}")
    plot = report.write_plot(results, output.with_suffix(".png"))
    console.print(f"plot written to {plot}" if plot else "no plot: matplotlib is not installed")
    problems = _invalid(results)
    for problem in problems:
        console.print(f"[red]invalid measurement:[/red] {problem}")
    return 1 if problems else 0


def _run_facts(settings: Settings, payments: int, quick: bool) -> dict[str, Any]:
    broker = "configured" if settings.kafka_bootstrap else "embedded"
    postgres = "configured" if settings.database_url else "embedded"
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if quick else "full", "payments_per_throughput_run": payments,
        "cpus": os.cpu_count(), "python": platform.python_version(), "partitions": settings.partitions,
        "infrastructure": broker if broker == postgres else f"{broker} broker, {postgres} PostgreSQL",
    }


def _floor(bootstrap: str, sizes: Sizes, progress: Progress, workdir: Path) -> list[dict[str, Any]]:
    """The bare hop's cost on this broker, first, while the broker holds nothing else."""
    task = progress.add_task("floor: bare agents", total=len(FLOOR_RUNS))
    broker_pid = listener(bootstrap)
    runs = []
    for mode, produce in FLOOR_RUNS:
        run = measure_floor(bootstrap, mode=mode, produce_per_message=produce, uvloop=True,
                            messages=sizes.floor_messages, broker_pid=broker_pid, workdir=workdir)
        runs.append(run.summary())
        progress.advance(task)
    return runs


async def _ledger_writer(
    server_url: str, sizes: Sizes, progress: Progress, databases: list[str]
) -> list[dict[str, Any]]:
    task = progress.add_task("ledger writer (batch sizes, COPY)", total=len(BATCH_SIZES) + 1)
    database_url, runs = await measure_ledger_writer(
        server_url, seconds_per_size=sizes.ledger_seconds_per_size,
        minimum_batches=sizes.ledger_minimum_batches, on_run=lambda run: progress.advance(task))
    databases.append(database_url)
    return [run.summary() for run in runs]


async def _classic(
    server_url: str, sizes: Sizes, progress: Progress, databases: list[str], facts: dict[str, Any]
) -> dict[str, Any]:
    accounts = account_ids("classic")
    database_url = await classic.prepare(server_url, accounts, balance=10**15)
    databases.append(database_url)
    facts["postgres_deadlock_timeout"] = await classic.deadlock_timeout(database_url)
    found: dict[str, Any] = {}
    for seed, workload in enumerate(WORKLOADS):
        counts = sizes.classic_client_counts
        task = progress.add_task(f"classic, {workload}: client counts {counts}", total=len(counts))
        best, trials = await classic.best_client_count(
            database_url, transfers(workload, accounts, seed=seed), workload=workload,
            seconds=sizes.classic_seconds_per_trial, client_counts=counts,
            on_trial=lambda run, task=task: progress.advance(task))
        found[workload] = {"best": best.summary(), "trials": [trial.summary() for trial in trials]}
    return found


@dataclass
class Workers:
    """The service's worker processes; more join the running ones."""

    bootstrap: str
    database_url: str
    workdir: Path
    partitions: int
    say: Callable[[str], None]
    read_side_apart: bool = False
    running: list[WorkerProcess] = field(default_factory=list)
    read_side: WorkerProcess | None = None  # with read_side_apart

    def grow_to(self, count: int) -> None:
        if self.read_side_apart and self.read_side is None:
            self.read_side = WorkerProcess(self.bootstrap, self.database_url, self.workdir,
                                           partitions=self.partitions, role="read-side")
            self.say(f"starting the read side's worker (log: {self.read_side.log}) ...")
            self.read_side.start()
        while len(self.running) < count:
            role = "payments" if self.read_side_apart else "all"
            worker = WorkerProcess(self.bootstrap, self.database_url, self.workdir,
                                   partitions=self.partitions, role=role)
            self.say(f"starting worker {len(self.running) + 1} (log: {worker.log}) ...")
            self.running.append(worker)
            worker.start()

    @property
    def pids(self) -> list[int]:
        return [worker.process.pid for worker in self.running if worker.process is not None]

    @property
    def apart(self) -> dict[str, int | None]:
        """The read side's worker, when apart: its CPU is counted as a server's."""
        if self.read_side is None or self.read_side.process is None:
            return {}
        return {"read_side": self.read_side.process.pid}

    def stop(self) -> None:
        for worker in reversed(self.running):
            worker.stop()
        if self.read_side is not None:
            self.read_side.stop()


async def _prepare_service(bootstrap: str, server_url: str, partitions: int) -> str:
    database_url = await create_database(server_url, prefix="bench_service")
    await ensure_topics(bootstrap, service_topics(partitions))
    await migrate(database_url)
    return database_url


async def _service(
    bootstrap: str, database_url: str, workers: Workers, worker_counts: Sequence[int], payments: int,
    sizes: Sizes, progress: Progress
) -> dict[str, Any]:
    """Per worker count (workers join the running ones): warm-up, then per workload the
    latency at the fixed rates (first count only), the throughput, and the latency at half
    of it. The best count per workload is reported, every count in `trials`."""
    await asyncio.to_thread(workers.grow_to, worker_counts[0])
    driver = await ServiceDriver(bootstrap, topics=OUTCOME_TOPICS).start()
    servers = {"broker": listener(bootstrap), "postgres": listener(database_url), **workers.apart}
    outcomes, probe = Outcomes(driver), WorkerProbe(workers.pids, servers)
    run_id = uuid.uuid4().hex[:8]
    topics = [spec.name for spec in service_topics(workers.partitions)]
    bench = ServiceBench(driver, outcomes, progress, run_id, topics)
    accounts = account_ids(f"bench-{run_id}")
    trials: list[dict[str, Any]] = []
    try:
        async with probe.sampling(outcomes):
            accounts_driver = await ServiceDriver(bootstrap, topics=ACCOUNT_TOPICS).start()
            try:
                await bench.open_accounts(accounts_driver, accounts)
            finally:
                await accounts_driver.stop()
            rss_first = probe.rss_bytes()
            for count in worker_counts:
                await asyncio.to_thread(workers.grow_to, count)
                probe.pids = workers.pids
                # Not counted: a worker that just joined waits for the rebalance and recovery.
                await bench.throughput("uniform", transfers("uniform", accounts, seed=100 + count),
                                       sizes.warmup_payments, probe, label=f"{count} worker(s): warm-up")
                trial: dict[str, Any] = {"workers": count}
                for seed, workload in enumerate(WORKLOADS, start=1):
                    stream = transfers(workload, accounts, seed=seed)
                    label = f"{count} worker(s), {workload}"
                    fixed = [] if trials else [
                        (await bench.latency(workload, stream, rate, sizes.latency_seconds, probe)).summary()
                        for rate in sizes.fixed_rates]
                    throughput = await bench.throughput(workload, stream, payments, probe,
                                                        label=f"{label}: throughput")
                    rate = max(throughput.payments_per_second / 2, 1.0)
                    latency = await bench.latency(workload, stream, rate, sizes.latency_seconds, probe)
                    trial[workload] = {"throughput": throughput.summary(), "latency": latency.summary(),
                                       "latency_at_fixed_rates": fixed}
                trials.append(trial)
            rss_last = probe.rss_bytes()
    finally:
        await driver.stop()
    found: dict[str, Any] = {workload: _best(trials, workload) for workload in WORKLOADS}
    found["trials"] = trials
    found["latency_at_fixed_rates"] = {workload: trials[0][workload]["latency_at_fixed_rates"]
                                       for workload in WORKLOADS}
    found["timeline"] = _timeline(outcomes, probe.started)
    found["worker"] = {
        "pid": probe.pid, "peak_rss_bytes": probe.peak_rss_bytes(), "rss_first_bytes": rss_first,
        "rss_last_bytes": rss_last, "payments_total": len(outcomes.by_payment),
        "rss_growth_second_half_bytes_per_1000_payments": probe.growth_second_half_per_1000(),
        "rss_samples": [[round(t, 2), rss, count] for t, rss, count in probe.samples],
    }
    return found


def _timeline(outcomes: Outcomes, epoch: float) -> list[list[int]]:
    """Outcomes consumed per second of the service part: [second, outcomes]."""
    per_second: dict[int, int] = {}
    for outcome in outcomes.by_payment.values():
        second = int(outcome.seen_at - epoch)
        per_second[second] = per_second.get(second, 0) + 1
    return [[second, per_second.get(second, 0)] for second in range(max(per_second, default=-1) + 1)]


def _best(trials: list[dict[str, Any]], workload: str) -> dict[str, Any]:
    """The worker count with the highest throughput on the workload (with its latency)."""
    best = max(trials, key=lambda trial: trial[workload]["throughput"]["payments_per_second"])
    return {"workers": best["workers"], **best[workload]}


async def _drop(server_url: str, databases: list[str]) -> None:
    for database_url in databases:
        await drop_database(server_url, database_url)


def _ratio(results: dict[str, Any], workload: str) -> float:
    service = results["service"][workload]["throughput"]["payments_per_second"]
    baseline = results["classic"][workload]["best"]["payments_per_second"]
    return round(service / baseline, 4) if baseline else 0.0


def _invalid(results: dict[str, Any]) -> list[str]:
    problems = []
    for workload in WORKLOADS:
        for trial in results["service"]["trials"]:
            runs = [("throughput", trial[workload]["throughput"]), ("latency", trial[workload]["latency"])]
            runs += [(f"latency at {run['target_rate']:,.0f}/s", run)
                     for run in trial[workload]["latency_at_fixed_rates"]]
            for phase, figures in runs:
                if figures["missing"] or figures["failed"]:
                    problems.append(f"service {workload} {phase}, {trial['workers']} worker(s): "
                                    f"{figures['missing']} payments without an outcome, "
                                    f"{figures['failed']} failed")
        errors = sum(trial["errors"] for trial in results["classic"][workload]["trials"])
        if errors:
            problems.append(f"classic {workload}: {errors} transfers refused")
    return problems
