"""The chaos campaign: fault scenarios x seeds on the real broker and PostgreSQL, counted
the way Jepsen counts.

Every command the campaign sends is an `Operation` with the answer it must get; after
each scenario x seed the answers seen on the outbound topics and the ledger's postings
are tallied per operation (ok, captured, failed, unexpected, unknown, lost, duplicated)
and the global invariant checker (harness.invariants) runs. Nothing is retried away: a
command without an answer after the recovery window is counted as lost.

    accounting   Operation, Answers, tally (pure)
    results      SeedResult, ScenarioSummary, summarise (pure)
    traffic      PSP behaviours, poison messages, interleaving (pure)
    environment  broker, database, workers, driver, the answer index
    seed_run     one scenario x seed: sizes, randomness, commands sent, faults injected
    scenarios    kill9, crash_point, rebalance, postgres_restart, psp_faults, storms_and_poison
    runner       run_seed, judge, run_campaign
"""

from __future__ import annotations

from harness.campaign.accounting import Answer, Answers, Leg, Operation, Tally, tally, unanswered
from harness.campaign.environment import Infrastructure
from harness.campaign.results import ScenarioSummary, SeedResult, summarise
from harness.campaign.runner import plan_runs, run_campaign
from harness.campaign.scenarios import SCENARIOS
from harness.campaign.seed_run import Sizes

__all__ = [
    "SCENARIOS", "Answer", "Answers", "Infrastructure", "Leg", "Operation", "ScenarioSummary", "SeedResult",
    "Sizes", "Tally", "plan_runs", "run_campaign", "summarise", "tally", "unanswered",
]
