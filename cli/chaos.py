"""`payments chaos`: the fault campaign, scenarios x seeds, with Jepsen-style counts.

With no broker or database configured it starts embedded ones, like `payments demo`.
Prints a line per scenario x seed as it finishes and a table per scenario at the end;
exits 1 when anything was lost, unknown, duplicated, unexpected or violated, and adds
every failing (scenario, seed) to the regression file so it is replayed for good.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.campaign import (
    SCENARIOS,
    Infrastructure,
    ScenarioSummary,
    SeedResult,
    Sizes,
    plan_runs,
    run_campaign,
    summarise,
)
from settings import Settings

REGRESSIONS_PATH = Path(__file__).resolve().parent.parent / "tests" / "chaos_regressions.json"

DETAILS_SHOWN = 8
COLUMNS = ("scenario", "seeds", "attempted", "ok", "captured", "failed", "unexpected", "unknown", "lost",
           "duplicated", "violations", "faults", "recovery s p50/max", "seconds/seed")


def row(summary: ScenarioSummary) -> tuple[str, ...]:
    recovery = summary.recovery_seconds
    recovery_text = f"{statistics.median(recovery):.1f}/{max(recovery):.1f}" if recovery else "-"
    elapsed = statistics.mean(summary.elapsed_seconds) if summary.elapsed_seconds else 0.0
    return (summary.scenario, str(summary.seeds), str(summary.attempted), str(summary.ok),
            str(summary.captured), str(summary.failed), str(summary.unexpected), str(summary.unknown),
            str(summary.lost), str(summary.duplicated), str(summary.violations),
            f"{summary.faults_injected}/{summary.faults_planned}", recovery_text, f"{elapsed:.0f}")


def format_table(summaries: Sequence[ScenarioSummary]) -> str:
    """A plain-text table: the scenario left-aligned, every count right-aligned."""
    rows = [COLUMNS, *(row(s) for s in summaries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                          strict=True)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), rule, *(line(r) for r in rows[1:])])


def progress_line(result: SeedResult) -> str:
    """One line per scenario x seed as it finishes; what went wrong under a failing one."""
    t = result.tally
    recovery = "-" if result.recovery_seconds is None else f"{result.recovery_seconds:.1f}s"
    line = (f"{'ok  ' if result.passed else 'FAIL'} {result.scenario} seed {result.seed}: "
            f"{t.attempted} attempted, {t.ok} ok, {t.unexpected} unexpected, {t.unknown} unknown, "
            f"{t.lost} lost, {t.duplicated} duplicated, {len(t.violations)} violations; "
            f"faults {result.faults_injected}/{result.faults_planned}, recovery {recovery}, "
            f"{result.elapsed_seconds:.0f}s")
    if result.passed:
        return line
    shown = DETAILS_SHOWN
    details = [f"    error: {result.error}"] if result.error else []
    details += [f"    violation: {v}" for v in t.violations[:shown]]
    details += [f"    {d}" for d in t.details[:shown]]
    if len(t.violations) + len(t.details) > 2 * shown:
        details.append("    ... (all of them in --json)")
    details += [f"    note: {n}" for n in result.notes]
    return "\n".join([line, *details])


# --- the regression seeds -----------------------------------------------------------------------


def load_regressions(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = json.loads(path.read_text())["regressions"]
    return entries


def record_failures(path: Path, results: Sequence[SeedResult]) -> list[tuple[str, int]]:
    """Append each failing (scenario, seed) not yet in the file; returns those added."""
    entries = load_regressions(path)
    known = {(e["scenario"], e["seed"]) for e in entries}
    added = []
    for result in results:
        if result.passed or (result.scenario, result.seed) in known:
            continue
        known.add((result.scenario, result.seed))
        added.append((result.scenario, result.seed))
        entries.append({"scenario": result.scenario, "seed": result.seed, "payments": result.payments,
                        "first_failed": datetime.now(UTC).strftime("%Y-%m-%d"), "why": result.why()[:300]})
    if added:
        path.write_text(json.dumps({"regressions": entries}, indent=2) + "\n")
    return added


# --- the command --------------------------------------------------------------------------------


def run_chaos(settings: Settings, *, scenarios: Sequence[str] | None = None, seeds: int = 20,
              first_seed: int = 1, sizes: Sizes | None = None, json_path: Path | None = None,
              regressions: Path | None = REGRESSIONS_PATH, replay: bool = False) -> int:
    """Exit status 0 only when every scenario x seed passed. A failing seed is added to
    `regressions` as soon as it fails (not when replaying them)."""
    sizes = sizes or Sizes()
    if replay:
        batches = replay_batches(load_regressions(regressions or REGRESSIONS_PATH), scenarios, sizes)
        regressions = None
    else:
        batches = [(sizes, plan_runs(list(scenarios or SCENARIOS), seeds, first_seed))]
    total = sum(len(runs) for _, runs in batches)
    if not total:
        print("no regression seeds to replay" if replay else "nothing to run")
        return 0
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="chaos-", dir=settings.data_dir)).resolve()
    print(f"chaos campaign: {total} scenario x seed runs; logs in {workdir}", flush=True)
    started = time.monotonic()

    def on_result(result: SeedResult) -> None:
        print(progress_line(result), flush=True)
        if regressions is not None and not result.passed:
            for scenario, seed in record_failures(regressions, [result]):
                print(f"    new regression seed: {scenario} seed {seed} added to {regressions}", flush=True)

    results: list[SeedResult] = []
    with Infrastructure(settings, workdir) as infrastructure:
        for batch_sizes, runs in batches:
            results += asyncio.run(run_campaign(infrastructure, runs, batch_sizes, on_result=on_result))
    print_report(results, time.monotonic() - started, json_path)
    return 0 if all(result.passed for result in results) else 1


def replay_batches(entries: Sequence[dict[str, Any]], scenarios: Sequence[str] | None, sizes: Sizes
                   ) -> list[tuple[Sizes, list[tuple[str, int]]]]:
    """The recorded seeds, each with the payments per seed it failed with."""
    by_payments: dict[int, list[tuple[str, int]]] = {}
    for entry in entries:
        if not scenarios or entry["scenario"] in scenarios:
            payments = int(entry.get("payments", sizes.payments))
            by_payments.setdefault(payments, []).append((entry["scenario"], int(entry["seed"])))
    return [(replace(sizes, payments=payments), runs) for payments, runs in by_payments.items()]


def print_report(results: Sequence[SeedResult], seconds: float, json_path: Path | None) -> None:
    summaries = summarise(results)
    print()
    print(format_table(summaries))
    print(f"\n{len(results)} runs in {seconds:.0f}s. ok: answered as planned; failed: ended without "
          "moving money (PaymentFailed, CommandRejected, dead letter); unknown: money moved, no outcome "
          "published; lost: no answer at all; faults: injected/planned; recovery: from the first fault to "
          "the last answer")
    if json_path is not None:
        json_path.write_text(json.dumps({"seeds": [r.as_dict() for r in results],
                                         "summary": [vars(s) for s in summaries]}, indent=2))
        print(f"results written to {json_path}")
    failing = [f"{r.scenario}:{r.seed}" for r in results if not r.passed]
    print("result: " + (f"FAIL ({', '.join(failing)})" if failing else "PASS"))
