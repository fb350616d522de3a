"""The bench's figures: a table on the console, a JSON file, a PNG plot when matplotlib is there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import WORKLOADS

RATIO_TARGET = 5.0
P99_TARGET_MS = 100.0
MB = 1024 * 1024


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets against the figures: ratio >= 5 on each workload, p99 < 100 ms."""
    met: dict[str, Any] = {"ratio_min": RATIO_TARGET, "p99_ms_max": P99_TARGET_MS}
    for workload in WORKLOADS:
        met[f"ratio_{workload}_met"] = results["ratio"][workload] >= RATIO_TARGET
        latency = results["service"][workload]["latency"]
        met[f"p99_{workload}_met"] = latency["missing"] == 0 and latency["p99_ms"] < P99_TARGET_MS
    return met


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return path


def print_tables(console: Console, results: dict[str, Any]) -> None:
    console.print(_comparison(results))
    console.print(_ledger_writer(results))
    worker = results["service"]["worker"]
    console.print(
        f"worker memory: peak RSS {worker['peak_rss_bytes'] / MB:,.0f} MB; "
        f"RSS {worker['rss_first_bytes'] / MB:,.0f} MB after the accounts were opened -> "
        f"{worker['rss_last_bytes'] / MB:,.0f} MB at the end ({worker['payments_total']:,} payments); "
        f"second half of the run: "
        f"{worker['rss_growth_second_half_bytes_per_1000_payments'] / 1024:+,.0f} KB per 1000 payments"
    )


def _comparison(results: dict[str, Any]) -> Table:
    run = results["run"]
    table = Table(title=f"payments bench: {run['mode']}, {run['cpus']} CPUs, {run['infrastructure']} "
                        "infrastructure, PSP simulator at zero latency")
    table.add_column("")
    table.add_column("uniform (40 accounts)", justify="right")
    table.add_column("hot account", justify="right")

    def row(name: str, cell: Any) -> None:
        table.add_row(name, *(cell(workload) for workload in WORKLOADS))

    classic, service = results["classic"], results["service"]
    row("classic payments/s", lambda w: "{payments_per_second:,.0f} ({clients} clients)".format(
        **classic[w]["best"]))
    row("  deadlock retries (best/all)", lambda w: f"{classic[w]['best']['deadlock_retries']} / "
        f"{sum(trial['deadlock_retries'] for trial in classic[w]['trials'])}")
    row("  latency p50 / p99 ms", lambda w: "{latency_p50_ms:.1f} / {latency_p99_ms:.1f}".format(
        **classic[w]["best"]))
    row("service payments/s", lambda w: f"{service[w]['throughput']['payments_per_second']:,.1f} "
        f"({service[w]['workers']} worker{'s' if service[w]['workers'] > 1 else ''})")
    if len(service["trials"]) > 1:
        row("  by worker count", lambda w: " / ".join(
            f"{trial['workers']}: {trial[w]['throughput']['payments_per_second']:,.0f}"
            for trial in service["trials"]))
    row(f"ratio (target >= {RATIO_TARGET:.0f})",
        lambda w: f"{results['ratio'][w]:.3f} {_verdict(results['targets'][f'ratio_{w}_met'])}")
    row("service at half load: sent", lambda w: f"{service[w]['latency']['achieved_send_rate']:,.1f}/s")
    row("  p50 / p99 / p999 ms", lambda w: "{p50_ms:,.0f} / {p99_ms:,.0f} / {p999_ms:,.0f}".format(
        **service[w]["latency"]))
    row("  p50 first / last tenth ms", lambda w: "{:,.0f} / {:,.0f}".format(
        service[w]["latency"]["windows"][0]["p50_ms"], service[w]["latency"]["windows"][-1]["p50_ms"]))
    row(f"  p99 < {P99_TARGET_MS:.0f} ms", lambda w: _verdict(results["targets"][f"p99_{w}_met"]))
    row("worker CPU ms / payment", lambda w: f"{service[w]['throughput']['worker_cpu_ms_per_payment']:,.2f}")
    row("payments (max + half load)", lambda w: f"{service[w]['throughput']['payments']:,} + "
        f"{service[w]['latency']['payments']:,}")
    return table


def _ledger_writer(results: dict[str, Any]) -> Table:
    table = Table(title="ledger writer: capture entries (2 postings + 1 outbox row each)")
    for name in ("write", "entries / tx", "postings/s", "postings", "seconds"):
        table.add_column(name, justify="left" if name == "write" else "right")
    for run in results["ledger_writer"]:
        copy = run["method"] == "copy"
        table.add_row("raw COPY, no checks" if copy else "write_batch",
                      f"{run['batch_size']:,} rows" if copy else f"{run['batch_size']:,}",
                      f"{run['postings_per_second']:,.0f}", f"{run['postings']:,}", f"{run['seconds']:.2f}")
    return table


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def write_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Throughput of both designs and the worker's memory over time; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, (bars, memory) = plt.subplots(1, 2, figsize=(11, 4))
    positions = range(len(WORKLOADS))
    bars.bar([p - 0.2 for p in positions], [results["classic"][w]["best"]["payments_per_second"]
                                            for w in WORKLOADS], width=0.4, label="classic (row locks)")
    bars.bar([p + 0.2 for p in positions], [results["service"][w]["throughput"]["payments_per_second"]
                                            for w in WORKLOADS], width=0.4, label="service")
    bars.set_xticks(list(positions), list(WORKLOADS))
    bars.set_ylabel("payments/s")
    bars.legend()
    samples = results["service"]["worker"]["rss_samples"]
    memory.plot([s[0] for s in samples], [s[1] / MB for s in samples])
    memory.set_xlabel("seconds")
    memory.set_ylabel("worker RSS (MB)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
