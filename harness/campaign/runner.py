"""Running scenarios x seeds: wait for the answers, count them, run the invariant checker,
and keep a failing seed's fault from being charged to the seeds after it."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import asyncpg

from cli.reconcile import reconcile
from harness.campaign.accounting import Leg, Operation, Tally, tally, unanswered
from harness.campaign.environment import Environment, Infrastructure
from harness.campaign.results import SeedResult
from harness.campaign.scenarios import SCENARIOS
from harness.campaign.seed_run import SeedRun, Sizes
from harness.invariants import check
from settings import Settings


async def run_seed(env: Environment, scenario: str, seed: int, sizes: Sizes, settings: Settings
                   ) -> SeedResult:
    run = SeedRun(env, scenario, seed, sizes, random.Random(seed), settings=settings)
    started = time.monotonic()
    error = None
    try:
        await SCENARIOS[scenario](run)
        await run.wait_answered("the load and the last fault", sizes.recovery_timeout_seconds)
    except Exception as exception:  # the harness failed: reported, never counted as a pass
        error = f"{type(exception).__name__}: {exception}"
    result = SeedResult(scenario, seed, sizes.payments, Tally(), run.faults_planned, len(run.faults),
                        notes=run.notes, error=error)
    try:
        result.tally = await judge(run)
    except Exception as exception:
        result.error = result.error or f"checking failed: {type(exception).__name__}: {exception}"
    if run.faults and result.tally.last_answer_at is not None:
        result.recovery_seconds = round(max(0.0, result.tally.last_answer_at - run.faults[0][0]), 1)
    result.elapsed_seconds = time.monotonic() - started
    if not result.passed:
        result.notes.append(f"logs of the workers and the broker: {env.workdir}")
    return result


async def judge(run: SeedRun) -> Tally:
    """Per-operation accounting, then the global invariant checker."""
    env = run.env
    if unanswered(run.operations, env.answers.update()) == 0:
        await settle(env)
    legs = await postings_of(env.database_url, {o.payment_id for o in run.operations
                                                if o.kind in ("payment", "poison")})
    result = tally(run.operations, env.answers.update(), legs)
    # Per payment outcomes are counted above, so the checker gets no payment ids: its
    # global checks (ledger, conservation, overdraft history, tables = ledger, outbox,
    # reservations, legs per transaction) are what it adds.
    verdict = await check(env.driver, env.database_url, env.bootstrap, set(), env.funded_total())
    new = [v for v in verdict.violations if v not in env.reported_violations]
    env.reported_violations.update(verdict.violations)
    if len(new) < len(verdict.violations):
        run.notes.append(f"{len(verdict.violations) - len(new)} violations carried over from earlier seeds")
    result.violations += new
    repairs = stall_repairs(env.workdir) - env.stall_repairs_seen
    env.stall_repairs_seen += repairs
    if repairs:
        run.notes.append(f"the workers' stall monitor reported {repairs} stalled partitions (see their logs)")
    run.notes += await where_stuck(env, run.operations)
    result.duplicated += max(0, verdict.duplicated_effects - env.duplicated_baseline)
    env.duplicated_baseline = max(env.duplicated_baseline, verdict.duplicated_effects)
    return result


async def where_stuck(env: Environment, operations: Sequence[Operation], limit: int = 5) -> list[str]:
    """For a few payments without an outcome, the last step a worker recorded: a clue to
    which hop lost them (404: the payment never reached its owner's table)."""
    answers = env.answers.update()
    stuck = [o for o in operations if o.kind == "payment" and not answers.outcomes(o.payment_id)]
    if not stuck or not env.workers:
        return []
    url = env.workers[-1].url
    return [f"worker's view of {o.key}: {await asyncio.to_thread(payment_status, url, o.payment_id)}"
            for o in stuck[:limit]]


def payment_status(worker_url: str, payment_id: str) -> str:
    try:
        with urllib.request.urlopen(f"{worker_url}/v1/payments/{payment_id}", timeout=5) as response:
            view = json.loads(response.read())
    except urllib.error.HTTPError as error:
        return f"HTTP {error.code}"
    except (OSError, ValueError) as error:
        return f"no answer ({error})"
    steps = [step.get("step") for step in view.get("history", [])]
    return f"{view.get('status')}, steps {' > '.join(map(str, steps[-4:]))}"


def stall_repairs(workdir: Path) -> int:
    """Errors the workers' partition monitor (agents/monitor.py) logged: stalled partitions."""
    count = 0
    for log in workdir.glob("worker-*.log"):
        with log.open(errors="replace") as lines:
            count += sum('"logger":"agents.monitor"' in line and '"level":"error"' in line for line in lines)
    return count


async def settle(env: Environment, timeout_seconds: float = 20.0) -> None:
    """Releases and postings reach the account owners shortly after the outcome: give them
    a bounded moment, so the checker judges a quiet system (a stall still shows)."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        report = await reconcile(env.bootstrap, env.database_url, settle_seconds=0)
        if not report.mismatches and not report.reservations_open:
            return
        await asyncio.sleep(1.0)


async def postings_of(database_url: str, payment_ids: set[str]) -> dict[str, list[Leg]]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT p.payment_id, t.kind, p.transaction_id::text AS transaction_id, p.account_id, p.amount"
            " FROM postings p JOIN ledger_transactions t USING (transaction_id)"
            " WHERE p.payment_id = ANY($1::text[])", sorted(payment_ids))
    finally:
        await connection.close()
    legs: dict[str, list[Leg]] = defaultdict(list)
    for row in rows:
        leg = Leg(row["kind"], row["transaction_id"], row["account_id"], row["amount"])
        legs[row["payment_id"]].append(leg)
    return legs


def plan_runs(scenarios: Sequence[str], seeds: int, first_seed: int) -> list[tuple[str, int]]:
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; expected {', '.join(SCENARIOS)}")
    return [(scenario, seed) for scenario in scenarios for seed in range(first_seed, first_seed + seeds)]


async def run_campaign(infrastructure: Infrastructure, runs: Sequence[tuple[str, int]], sizes: Sizes,
                       on_result: Callable[[SeedResult], object] = lambda result: None) -> list[SeedResult]:
    """Every (scenario, seed) in order. With an embedded broker each scenario gets a fresh
    environment, and so does the seed after a failing one (the failed one's database is
    kept for a post-mortem)."""
    results: list[SeedResult] = []
    env: Environment | None = None
    env_scenario = None
    try:
        for scenario, seed in runs:
            if env is not None and infrastructure.owns_broker and env_scenario != scenario:
                await infrastructure.close(env, keep_database=False)
                env = None
            if env is None:
                env, env_scenario = await infrastructure.open(f"{scenario}-{seed}"), scenario
            result = await run_seed(env, scenario, seed, sizes, infrastructure.settings)
            results.append(result)
            on_result(result)
            if not result.passed and infrastructure.owns_broker:
                await infrastructure.close(env, keep_database=True)
                env = None
    finally:
        if env is not None:
            await infrastructure.close(env, keep_database=False)
    return results
