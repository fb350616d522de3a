"""The bench's figures: tables on the console, a JSON file, a PNG plot (matplotlib, the `bench` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench import WORKLOADS

# The performance issue's targets (#13): twice the classic design's throughput, p99 under
# 100 ms at 200 payments/s, the worker's CPU at or under ~450 us per payment.
RATIO_TARGET = 2.0
P99_TARGET_MS = 100.0
P99_TARGET_RATE = 200.0
WORKER_CPU_TARGET_US = 450.0
MB = 1024 * 1024


def targets(results: dict[str, Any]) -> dict[str, Any]:
    """The targets against the figures, per workload."""
    met: dict[str, Any] = {"ratio_min": RATIO_TARGET, "p99_ms_max": P99_TARGET_MS,
                           "p99_at_rate": P99_TARGET_RATE, "worker_cpu_us_max": WORKER_CPU_TARGET_US}
    service = results["service"]
    for workload in WORKLOADS:
        met[f"ratio_{workload}_met"] = results["ratio"][workload] >= RATIO_TARGET
        at_rate = [run for run in service["latency_at_fixed_rates"][workload]
                   if run["target_rate"] == P99_TARGET_RATE]
        met[f"p99_{workload}_met"] = bool(at_rate) and all(
            run["missing"] == 0 and run["p99_ms"] < P99_TARGET_MS for run in at_rate)
        cpu = service[workload]["throughput"]["cpu_us_per_payment"]["worker"]
        met[f"worker_cpu_{workload}_met"] = cpu <= WORKER_CPU_TARGET_US
    return met


def floor_share(results: dict[str, Any]) -> dict[str, Any]:
    """The service's worker CPU per payment in bare hops: what a bare agent pays per message
    consumed with six produced (stock Faust, uvloop), measured in the same run."""
    hop = next((run["worker_cpu_us_per_message"] for run in results["floor"]
                if run["mode"] == "faust" and run["produce_per_message"] == 6), None)
    found: dict[str, Any] = {"bare_hop_us": hop}
    for workload in WORKLOADS:
        cpu = results["service"][workload]["throughput"]["cpu_us_per_payment"]["worker"]
        found[workload] = round(cpu / hop, 2) if hop else None
    return found


def write_json(results: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return path


def print_tables(console: Console, results: dict[str, Any]) -> None:
    console.print(_comparison(results))
    console.print(_costs(results))
    console.print(_records(results))
    console.print(_floor(results))
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
    fixed_rates = {run["target_rate"] for w in WORKLOADS for run in service["latency_at_fixed_rates"][w]}
    for rate in sorted(fixed_rates):
        def fixed(w: str, rate: float = rate) -> str:
            run = next(r for r in service["latency_at_fixed_rates"][w] if r["target_rate"] == rate)
            return (f"{run['p50_ms']:,.0f} / {run['p99_ms']:,.0f} / {run['p999_ms']:,.0f} "
                    f"(after {run['history_payments']:,})")
        row(f"at {rate:,.0f}/s: p50 / p99 / p999 ms", fixed)
        if rate == P99_TARGET_RATE:
            row(f"  p99 < {P99_TARGET_MS:.0f} ms", lambda w: _verdict(results["targets"][f"p99_{w}_met"]))
    row("service at half load: sent", lambda w: f"{service[w]['latency']['achieved_send_rate']:,.1f}/s")
    row("  p50 / p99 / p999 ms", lambda w: "{p50_ms:,.0f} / {p99_ms:,.0f} / {p999_ms:,.0f}".format(
        **service[w]["latency"]))
    row("  p50 first / last tenth ms", lambda w: "{:,.0f} / {:,.0f}".format(
        service[w]["latency"]["windows"][0]["p50_ms"], service[w]["latency"]["windows"][-1]["p50_ms"]))
    row(f"worker CPU us / payment (<= {WORKER_CPU_TARGET_US:.0f})", lambda w: "{:,.0f} {}".format(
        service[w]["throughput"]["cpu_us_per_payment"]["worker"],
        _verdict(results["targets"][f"worker_cpu_{w}_met"])))
    row("  in bare hops (floor)", lambda w: f"{results['floor_share'][w]}")
    row("payments (max + half load)", lambda w: f"{service[w]['throughput']['payments']:,} + "
        f"{service[w]['latency']['payments']:,}")
    return table


def _table(title: str, columns: Sequence[str]) -> Table:
    """A table whose first column names the row and the others hold figures."""
    table = Table(title=title)
    for number, name in enumerate(columns):
        table.add_column(name, justify="left" if number == 0 else "right")
    return table


def _costs(results: dict[str, Any]) -> Table:
    service = results["service"]
    names = sorted({name for w in WORKLOADS for name in service[w]["throughput"]["cpu_us_per_payment"]},
                   key=("worker", "read_side", "broker", "postgres").index)
    table = _table("CPU per payment at maximum throughput, by process (us)", ["workload", *names])
    for w in WORKLOADS:
        cpu = service[w]["throughput"]["cpu_us_per_payment"]
        table.add_row(w, *(f"{cpu[name]:,.0f}" if name in cpu else "-" for name in names))
    return table


def _records(results: dict[str, Any]) -> Table:
    service = results["service"]
    topics = sorted({t for w in WORKLOADS for t in service[w]["throughput"]["records_per_payment"]})
    table = _table("records written per payment at maximum throughput, by topic", ["topic", *WORKLOADS])
    for topic in topics:
        table.add_row(topic, *(f"{service[w]['throughput']['records_per_payment'].get(topic, 0):.2f}"
                               for w in WORKLOADS))
    table.add_row("total", *(f"{service[w]['throughput']['records_per_payment_total']:.2f}"
                             for w in WORKLOADS))
    return table


def _floor(results: dict[str, Any]) -> Table:
    table = _table("floor: a bare Faust agent on this broker (uvloop), per message consumed",
                   ("agent", "produced / message", "messages/s", "worker CPU us", "broker CPU us"))
    for run in results["floor"]:
        broker = run["broker_cpu_us_per_message"]
        table.add_row("stock Faust" if run["mode"] == "faust" else "service transport + producer",
                      str(run["produce_per_message"]), f"{run['messages_per_second']:,.0f}",
                      f"{run['worker_cpu_us_per_message']:,.1f}", "-" if broker is None else f"{broker:,.1f}")
    return table


def _ledger_writer(results: dict[str, Any]) -> Table:
    table = _table("ledger writer: capture entries (2 postings + 1 outbox row each)",
                   ("write", "entries / tx", "postings/s", "postings", "seconds"))
    for run in results["ledger_writer"]:
        copy = run["method"] == "copy"
        table.add_row("raw COPY, no checks" if copy else "write_batch",
                      f"{run['batch_size']:,} rows" if copy else f"{run['batch_size']:,}",
                      f"{run['postings_per_second']:,.0f}", f"{run['postings']:,}", f"{run['seconds']:.2f}")
    return table


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def write_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Throughput of both designs, and over the service's run: outcomes per second, latency
    (p50 and p99 per tenth of each paced run), the worker's memory. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    service = results["service"]
    figure, ((bars, rate), (latency, memory)) = plt.subplots(2, 2, figsize=(12, 8))
    positions = range(len(WORKLOADS))
    bars.bar([p - 0.2 for p in positions], [results["classic"][w]["best"]["payments_per_second"]
                                            for w in WORKLOADS], width=0.4, label="classic (row locks)")
    bars.bar([p + 0.2 for p in positions], [service[w]["throughput"]["payments_per_second"]
                                            for w in WORKLOADS], width=0.4, label="service")
    bars.set_xticks(list(positions), list(WORKLOADS))
    bars.set_ylabel("payments/s (maximum)")
    bars.legend()
    timeline = service["timeline"]
    rate.plot([second for second, _ in timeline], [count for _, count in timeline])
    rate.set_xlabel("seconds")
    rate.set_ylabel("outcomes consumed per second")
    paced = [run for trial in service["trials"] for w in WORKLOADS
             for run in (*trial[w]["latency_at_fixed_rates"], trial[w]["latency"])]
    for run in paced:
        starts = [run["started_s"] + window["sent_from_s"] for window in run["windows"]]
        latency.plot(starts, [window["p99_ms"] for window in run["windows"]], color="tab:red")
        latency.plot(starts, [window["p50_ms"] for window in run["windows"]], color="tab:blue")
        latency.annotate(f"{run['target_rate']:,.0f}/s", (starts[0], run["windows"][0]["p99_ms"]), fontsize=7)
    latency.axhline(P99_TARGET_MS, color="grey", linestyle="--", linewidth=0.8)
    latency.set_yscale("log")
    latency.set_xlabel("seconds (paced runs; red p99, blue p50)")
    latency.set_ylabel("publish -> outcome (ms)")
    samples = service["worker"]["rss_samples"]
    memory.plot([s[0] for s in samples], [s[1] / MB for s in samples])
    memory.set_xlabel("seconds")
    memory.set_ylabel("worker RSS (MB)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
