"""The fault scenarios: each sends a seeded workload and injects its faults; the runner
waits for the answers and judges."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import orjson

from harness.campaign.accounting import Operation, unanswered
from harness.campaign.seed_run import SeedRun
from harness.campaign.traffic import interleave, poison_messages, psp_payment
from harness.processes import ComponentFailed
from harness.worker_process import WorkerProcess
from harness.workload import PlannedPayment
from infra.crash import CRASH_EXIT_CODE, POINTS
from infra.topics import PAYMENT_COMMANDS

Scenario = Callable[[SeedRun], Awaitable[None]]


async def kill9(run: SeedRun) -> None:
    """kill -9 of the worker at seeded moments under load, restarted each time: the
    payments come in one wave per kill, so every kill lands in traffic."""
    accounts, payments = run.workload()
    await run.open_accounts(accounts)
    kills = run.rng.choice([1, 1, 2])
    run.faults_planned = kills
    loads = []
    for wave in waves(payments, kills):
        loads.append(asyncio.create_task(run.send_payments(wave, spread_seconds=run.rng.uniform(2.0, 5.0))))
        await asyncio.sleep(run.rng.uniform(0.2, 3.0))
        victim = run.env.workers[-1]
        run.fault(f"kill -9 of worker {victim.web_port}")
        await run.env.remove_worker(victim, kill=True)
        await run.env.add_worker()
    await asyncio.gather(*loads)


def waves(payments: Sequence[PlannedPayment], count: int) -> list[Sequence[PlannedPayment]]:
    size = -(-len(payments) // count)
    return [payments[start:start + size] for start in range(0, len(payments), size)]


async def crash_point(run: SeedRun) -> None:
    """A worker exits abruptly at a seeded crash point, and is replaced. The seed also
    decides whether it is armed while the accounts are opened and funded, or only once
    they are (payments wait for their funding either way, so every outcome is planned)."""
    point, nth = run.rng.choice(sorted(POINTS)), run.rng.randint(1, 2)
    armed_from = run.rng.choice(["accounts", "payments"])
    run.faults_planned = 1
    run.notes.append(f"PAYMENTS_CRASH_AT={point}:{nth}, armed from the {armed_from}")
    accounts, payments = run.workload()
    if armed_from == "payments":
        await run.open_accounts(accounts)
    for worker in list(run.env.workers):
        await run.env.remove_worker(worker)
    crashing = await _start_armed(run, point, nth)
    if armed_from == "accounts" and crashing is not None:
        await run.open_accounts(accounts, wait=False)
        if await _crashed_or_answered(run, crashing, 60.0, point, nth):
            await run.env.add_worker()
            await run.wait_answered("the accounts opened and funded", 60.0)
    elif armed_from == "accounts":
        await run.open_accounts(accounts)
    await run.send_payments(payments, spread_seconds=run.rng.uniform(0.0, 2.0))
    if crashing is not None and crashing in run.env.workers:
        if await _crashed_or_answered(run, crashing, 60.0, point, nth):
            await run.env.add_worker()
        else:
            run.notes.append(f"{point}:{nth} was never reached")
            await run.env.remove_worker(crashing)
            await run.env.add_worker()


async def _start_armed(run: SeedRun, point: str, nth: int) -> WorkerProcess | None:
    """The armed worker; None when it reached its point while starting (replaying what
    the previous seed's worker had not committed): that is the crash, and a plain worker
    replaces it."""
    try:
        return await run.env.add_worker(PAYMENTS_CRASH_AT=f"{point}:{nth}")
    except ComponentFailed:
        armed = run.env.workers[-1]
        if armed.process is None or armed.process.poll() != CRASH_EXIT_CODE:
            raise
    run.fault(f"worker exited at {point}:{nth} while starting")
    await run.env.remove_worker(armed)
    await run.env.add_worker()
    return None


async def _crashed_or_answered(run: SeedRun, crashing: WorkerProcess, timeout_seconds: float, point: str,
                               nth: int) -> bool:
    """Wait until the armed worker exits (True: it is removed, the fault recorded) or
    every command so far is answered (False)."""
    process = crashing.process
    assert process is not None

    def settled() -> bool:
        return process.poll() is not None or unanswered(run.operations, run.env.answers.update()) == 0

    with contextlib.suppress(TimeoutError):
        await run.driver.wait_for(settled, timeout_seconds=timeout_seconds, what="the crash")
    deadline = time.monotonic() + 2.0  # a crash point just after the last answer (relay.after_publish)
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    code = process.poll()
    if code is None:
        return False
    if code == CRASH_EXIT_CODE:
        run.fault(f"worker exited at {point}:{nth}")
    else:
        run.notes.append(f"the armed worker exited with {code}, not {CRASH_EXIT_CODE}")
    await run.env.remove_worker(crashing)
    return True


async def rebalance(run: SeedRun) -> None:
    """A second worker joins under load, then one of the two leaves (gracefully) under the
    second half of the load."""
    accounts, payments = run.workload()
    await run.open_accounts(accounts)
    run.faults_planned = 2
    first_half, second_half = waves(payments, 2)
    leaver = run.rng.choice(["the joiner", "the first worker"])
    first = run.env.workers[-1]
    loads = [asyncio.create_task(run.send_payments(first_half, spread_seconds=run.rng.uniform(2.0, 5.0)))]
    await asyncio.sleep(run.rng.uniform(0.2, 2.0))
    run.fault("a second worker joins")
    second = await run.env.add_worker()
    spread_seconds = run.rng.uniform(2.0, 5.0)
    loads.append(asyncio.create_task(run.send_payments(second_half, spread_seconds=spread_seconds)))
    await asyncio.sleep(run.rng.uniform(0.2, 2.0))
    run.fault(f"{leaver} leaves")
    await run.env.remove_worker(second if leaver == "the joiner" else first)
    await asyncio.gather(*loads)


async def postgres_restart(run: SeedRun) -> None:
    """PostgreSQL restarted under load, or the service's connections terminated (seeded)."""
    accounts, payments = run.workload()
    await run.open_accounts(accounts)
    variant = run.rng.choice(["restart", "terminate"])
    if variant == "restart" and run.env.postgres is None:
        variant = "terminate"
        run.notes.append("a configured PostgreSQL cannot be restarted: terminating connections instead")
    rounds = 1 if variant == "restart" else run.rng.randint(1, 3)
    run.faults_planned = rounds
    load = asyncio.create_task(run.send_payments(payments, spread_seconds=run.rng.uniform(2.0, 5.0)))
    for _ in range(rounds):
        await asyncio.sleep(run.rng.uniform(0.3, 2.0))
        if variant == "restart":
            assert run.env.postgres is not None
            run.fault("PostgreSQL restart")
            await asyncio.to_thread(run.env.postgres.restart)
        else:
            terminated = await terminate_connections(run.env.database_url)
            run.fault(f"pg_terminate_backend of {terminated} connections")
    await load


async def terminate_connections(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        await connection.close()


async def psp_faults(run: SeedRun) -> None:
    """The PSP slow, failing then approving, declining, answering too late, never answering."""
    accounts, _ = run.workload()
    await run.open_accounts(accounts)
    ids = [a.account_id for a in accounts if a.currency == "USD" and a.kyc_status == "verified"]
    payments = [psp_payment(run.rng, f"{run.prefix}-psp-{n:04d}", *run.rng.sample(ids, 2))
                for n in range(run.sizes.payments)]
    for n in range(run.sizes.timeouts):
        debtor, creditor = run.rng.sample(ids, 2)
        payments.append(PlannedPayment(f"{run.prefix}-psp-timeout-{n}", debtor, creditor, 500,
                                       "psp_unavailable", simulation="timeout"))
    run.rng.shuffle(payments)
    run.faults_planned = 1
    run.fault("payments with PSP faults start")
    await run.send_payments(payments, spread_seconds=run.rng.uniform(0.5, 3.0))


async def storms_and_poison(run: SeedRun) -> None:
    """Duplicate storms, one key with several payloads at once, and poison, among payments."""
    accounts, payments = run.workload()
    await run.open_accounts(accounts)
    ids = [a.account_id for a in accounts if a.currency == "USD" and a.kyc_status == "verified"]
    queues: list[list[tuple[str, str, bytes]]] = []
    for n in range(run.rng.randint(3, 6)):  # a storm: the same command many times
        key, amount = f"{run.prefix}-storm-{n}", run.rng.randint(100, 2_000)
        body = orjson.dumps(PlannedPayment(key, *run.rng.sample(ids, 2), amount, "captured").command())
        run.operations.append(Operation("payment", key, "captured", amount))
        queues.append([(PAYMENT_COMMANDS, key, body)] * run.rng.randint(5, 40))
    for n in range(run.rng.randint(2, 4)):  # one key, several payloads, back to back
        key, debtor, creditor = f"{run.prefix}-conflict-{n}", *run.rng.sample(ids, 2)
        amounts = [run.rng.randint(100, 2_000) for _ in range(run.rng.randint(2, 5))]
        sent = [orjson.dumps(PlannedPayment(key, debtor, creditor, a, "captured").command()) for a in amounts]
        run.operations.append(Operation("payment", key, "captured", amounts[0],
                                        conflicts=sum(a != amounts[0] for a in amounts[1:])))
        queues.append([(PAYMENT_COMMANDS, key, body) for body in sent])
    poison = poison_messages(run.rng, run.prefix, *run.rng.sample(ids, 2))
    run.operations += [Operation("poison", key, "refused") for _, key, _ in poison]
    queues += [[message] for message in poison]
    plain = payments[: max(1, len(payments) // 2)]
    run.operations += [Operation("payment", p.key, p.expected, p.amount) for p in plain]
    queues.append([(PAYMENT_COMMANDS, p.key, orjson.dumps(p.command())) for p in plain])
    run.faults_planned = 1
    run.fault("storms, conflicts and poison start")
    for topic, key, value in interleave(run.rng, queues):
        await run.driver.send(topic, key, value)
    await run.driver.flush()


SCENARIOS: dict[str, Scenario] = {
    "kill9": kill9, "crash_point": crash_point, "rebalance": rebalance,
    "postgres_restart": postgres_restart, "psp_faults": psp_faults, "storms_and_poison": storms_and_poison,
}
