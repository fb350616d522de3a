"""`payments bench` in quick mode: every figure is measured, printed and written as JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from bench.main import run_bench
from settings import Settings


async def bench_databases(server_url: str) -> list[str]:
    connection = await asyncpg.connect(server_url)
    try:
        rows = await connection.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
    finally:
        await connection.close()
    return [row["datname"] for row in rows]


def test_a_quick_bench_measures_both_designs_at_two_worker_counts_and_writes_every_figure(
    tmp_path: Path, kafka_bootstrap: str, postgres_server_url: str
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, database_url=postgres_server_url, data_dir=tmp_path)
    before = asyncio.run(bench_databases(postgres_server_url))

    assert run_bench(settings, payments=30, quick=True, worker_counts=(1, 2)) == 0

    results = json.loads((tmp_path / "bench-results.json").read_text())
    assert set(results) >= {"run", "floor", "ledger_writer", "classic", "service", "ratio", "targets",
                            "floor_share"}
    floor = results["floor"]
    assert [(run["mode"], run["produce_per_message"]) for run in floor] == [
        ("faust", 0), ("faust", 6), ("service", 0), ("service", 6)]
    assert all(run["messages"] == 2000 and run["worker_cpu_us_per_message"] > 0 for run in floor)
    assert results["floor_share"]["bare_hop_us"] == floor[1]["worker_cpu_us_per_message"]
    for workload in ("uniform", "hot"):
        best = results["classic"][workload]["best"]
        assert best["payments_per_second"] > 0 and best["clients"] in (1, 4) and best["errors"] == 0
        assert len(results["classic"][workload]["trials"]) == 2
        throughput = results["service"][workload]["throughput"]
        assert throughput["payments"] == 30 and throughput["captured"] == 30 and throughput["missing"] == 0
        assert throughput["payments_per_second"] > 0 and throughput["worker_cpu_ms_per_payment"] > 0
        # Every process on this machine is counted, and every payment wrote its command and outcome.
        assert set(throughput["cpu_us_per_payment"]) == {"worker", "broker", "postgres"}
        # (PostgreSQL's share of 30 payments can be under the clock tick /proc counts in.)
        cpu = throughput["cpu_us_per_payment"]
        assert cpu["worker"] > 0 and cpu["broker"] > 0
        records = throughput["records_per_payment"]
        assert records["fintech.payments.commands"] == 1.0
        assert records["fintech.events.PaymentCaptured"] == 1.0
        assert throughput["records_per_payment_total"] > 3
        assert results["floor_share"][workload] > 0
        fixed = results["service"]["latency_at_fixed_rates"][workload]
        assert [run["target_rate"] for run in fixed] == [20.0] and fixed[0]["missing"] == 0
        assert isinstance(results["targets"][f"p99_{workload}_met"], bool)
        latency = results["service"][workload]["latency"]
        assert latency["missing"] == 0 and 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["p999_ms"]
        assert results["service"][workload]["workers"] in (1, 2)
        assert results["ratio"][workload] > 0
        assert isinstance(results["targets"][f"ratio_{workload}_met"], bool)
    writers = results["ledger_writer"]
    assert [(run["method"], run["batch_size"]) for run in writers[:4]] == [
        ("write_batch", 1), ("write_batch", 100), ("write_batch", 500), ("write_batch", 2000)]
    assert writers[4]["method"] == "copy"
    assert all(run["postings_per_second"] > 0 for run in writers)
    trials = results["service"]["trials"]  # the second worker joined the first
    assert [trial["workers"] for trial in trials] == [1, 2]
    assert all(trial[w]["throughput"]["captured"] == 30 for trial in trials for w in ("uniform", "hot"))
    worker = results["service"]["worker"]
    assert worker["peak_rss_bytes"] >= worker["rss_first_bytes"] > 0 and worker["rss_samples"]
    timeline = results["service"]["timeline"]
    assert sum(count for _, count in timeline) == worker["payments_total"]
    assert (tmp_path / "bench-results.png").stat().st_size > 10_000
    # A configured server keeps none of the bench's databases.
    assert asyncio.run(bench_databases(postgres_server_url)) == before
