"""What a scenario x seed run found, and the per-scenario sums the campaign prints (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.campaign.accounting import Tally

COUNTS = ("attempted", "ok", "captured", "failed", "unexpected", "unknown", "lost", "duplicated")


@dataclass
class SeedResult:
    scenario: str
    seed: int
    payments: int
    tally: Tally
    faults_planned: int = 0
    faults_injected: int = 0
    recovery_seconds: float | None = None  # from the (first) fault to the last answer
    elapsed_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the harness itself failed: nothing can be concluded

    @property
    def passed(self) -> bool:
        t = self.tally
        return (self.error is None and not t.violations and t.lost == 0 and t.unknown == 0
                and t.duplicated == 0 and t.unexpected == 0)

    def why(self) -> str:
        """One line on what went wrong (empty when it passed)."""
        if self.passed:
            return ""
        t = self.tally
        counts = ", ".join(f"{getattr(t, name)} {name}" for name in COUNTS[4:] if getattr(t, name))
        parts = [self.error or "", counts, *t.violations[:2]]
        return "; ".join(part for part in parts if part)

    def as_dict(self) -> dict[str, Any]:
        t = self.tally
        return {
            "scenario": self.scenario, "seed": self.seed, "payments": self.payments, "passed": self.passed,
            **{name: getattr(t, name) for name in COUNTS}, "violations": t.violations, "details": t.details,
            "faults_planned": self.faults_planned, "faults_injected": self.faults_injected,
            "recovery_seconds": self.recovery_seconds, "elapsed_seconds": round(self.elapsed_seconds, 1),
            "notes": self.notes, "error": self.error,
        }


@dataclass
class ScenarioSummary:
    scenario: str
    seeds: int = 0
    attempted: int = 0
    ok: int = 0
    captured: int = 0
    failed: int = 0
    unexpected: int = 0
    unknown: int = 0
    lost: int = 0
    duplicated: int = 0
    violations: int = 0
    faults_planned: int = 0
    faults_injected: int = 0
    recovery_seconds: list[float] = field(default_factory=list)
    elapsed_seconds: list[float] = field(default_factory=list)
    failing_seeds: list[int] = field(default_factory=list)


def summarise(results: Sequence[SeedResult]) -> list[ScenarioSummary]:
    """One summary per scenario, in the order the scenarios first appear."""
    summaries: dict[str, ScenarioSummary] = {}
    for result in results:
        summary = summaries.setdefault(result.scenario, ScenarioSummary(result.scenario))
        summary.seeds += 1
        for name in COUNTS:
            setattr(summary, name, getattr(summary, name) + getattr(result.tally, name))
        summary.violations += len(result.tally.violations)
        summary.faults_planned += result.faults_planned
        summary.faults_injected += result.faults_injected
        if result.recovery_seconds is not None:
            summary.recovery_seconds.append(result.recovery_seconds)
        summary.elapsed_seconds.append(result.elapsed_seconds)
        if not result.passed:
            summary.failing_seeds.append(result.seed)
    return list(summaries.values())
