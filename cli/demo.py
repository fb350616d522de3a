"""`payments demo`: the main job on the embedded default, checked as well as shown.

With no broker or database configured it starts the embedded ones, runs a worker,
opens and funds accounts, drives a seeded mix of payments (and a few duplicates,
refunds and bad messages), waits for every outcome and prints what happened:
outcomes by reason, whether the ledger balances in PostgreSQL, the throughput.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.notify import register
from harness.api_keys import new_key
from harness.driver import ServiceDriver
from harness.embedded import infrastructure
from harness.receiver import Receiver
from harness.worker_process import WorkerProcess
from harness.workload import Workload, plan
from infra.topics import PAYMENT_COMMANDS, ensure_topics, service_topics
from ledger.migrate import migrate
from ledger.store import LedgerStore
from models.payment import payment_id_for
from models.webhooks import EVENT_TYPES
from settings import Settings

console = Console()


def run_demo(settings: Settings, *, payments: int, accounts: int, seed: int, serve: bool = False) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="demo-", dir=settings.data_dir))
    with infrastructure(settings, workdir, say=console.print) as (bootstrap, database_url):
        api_key = asyncio.run(_prepare(bootstrap, database_url, settings.partitions))
        # The demo's own webhook receiver listens on loopback: allowed for this worker only.
        worker = WorkerProcess(bootstrap, database_url, workdir, partitions=settings.partitions,
                               extra_env={"PAYMENTS_WEBHOOK_ALLOW_PRIVATE": "1"})
        if serve:  # where the quickstart finds it (a free port otherwise: nothing to collide with)
            worker.web_port = settings.web_port
        console.print(f"starting a worker (log: {worker.log}) ...")
        try:
            worker.start()
            workload = plan(seed, accounts, payments, risk_max_amount=settings.risk_max_amount)
            ok = asyncio.run(_drive(bootstrap, database_url, worker, workload, api_key))
            if serve:
                _serve(bootstrap, database_url, worker)
        finally:
            worker.stop()
    return 0 if ok else 1


def _serve(bootstrap: str, database_url: str, worker: WorkerProcess) -> None:
    """Keep everything running for the README's quickstart, until Ctrl-C."""
    console.print("\nthe worker keeps running; in another shell:\n")
    print(f"export PAYMENTS_KAFKA_BOOTSTRAP={bootstrap}")
    print(f"export PAYMENTS_DATABASE_URL={database_url}")
    print(f"export API={worker.url}")
    # This worker lets webhooks reach loopback (a receiver of your own beside it); so must
    # the CLI that registers one.
    print("export PAYMENTS_WEBHOOK_ALLOW_PRIVATE=1\n", flush=True)
    console.print("Ctrl-C stops the worker, the broker and PostgreSQL.")
    try:
        while worker.process is not None and worker.process.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        pass


async def _prepare(bootstrap: str, database_url: str, partitions: int) -> str:
    """Topics, schema, and the demo's own API key (read-only: it only looks)."""
    await ensure_topics(bootstrap, service_topics(partitions))
    await migrate(database_url)
    return await new_key(database_url, f"demo-{time.time_ns()}", ["accounts:read", "payments:read"])


async def _drive(bootstrap: str, database_url: str, worker: WorkerProcess, workload: Workload,
                 api_key: str) -> bool:
    driver = await ServiceDriver(bootstrap).start()
    receiver = await Receiver().start()
    store = await LedgerStore.connect(database_url)
    try:
        endpoint, secret = await register(store, receiver.url, [], [], allow_private=True, created_by=None)
        console.print(f"webhooks go to a local receiver, {receiver.url} (endpoint {endpoint.endpoint_id})")
        await _open_accounts(driver, workload)
        started, finished = await _pay(driver, workload)
        refunds = await _refund_some(driver, workload)
        await _misbehave(driver, workload)
        balanced = not await store.unbalanced_transactions()
        ledger_total = sum((await store.balances()).values())
        matches = await _worker_matches_ledger(worker, store, workload, api_key)
        webhooks = await _webhooks_delivered(driver, receiver, secret)
        return _summarise(driver, workload, started, finished, refunds, balanced, ledger_total, matches,
                          webhooks)
    finally:
        await store.close()
        await receiver.stop()
        await driver.stop()


async def _open_accounts(driver: ServiceDriver, workload: Workload) -> None:
    for account in workload.accounts:
        await driver.open_account(account.account_id, account.currency, kyc_status=account.kyc_status,
                                  overdraft_limit=account.overdraft_limit)
    await driver.wait_for(lambda: len(driver.of("AccountOpened")) >= len(workload.accounts),
                          what="accounts opened")
    for account in workload.accounts:
        await driver.fund(f"fund-{account.account_id}", account.account_id, account.funding,
                          account.currency)
    await driver.wait_for(lambda: len(driver.of("AccountFunded")) >= len(workload.accounts),
                          what="accounts funded")


async def _pay(driver: ServiceDriver, workload: Workload) -> tuple[float, float]:
    expected = {payment_id_for(p.key) for p in workload.payments}
    columns = (TextColumn("payments"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("outcomes", total=len(expected))
        started = time.monotonic()
        for number, payment in enumerate(workload.payments):
            await driver.send(PAYMENT_COMMANDS, payment.key, payment.command())
            if number % 25 == 0:  # a repeat: same key, same payload, no second effect
                await driver.send(PAYMENT_COMMANDS, payment.key, payment.command())
        await driver.flush()

        def done() -> bool:
            count = len(expected & driver.outcomes().keys())
            progress.update(task, completed=count)
            return count == len(expected)

        await driver.wait_for(done, timeout_seconds=180, what="every payment's outcome")
    finish_times = [r.seen_at for topic in ("PaymentCaptured", "PaymentFailed")
                    for r in driver.events[f"fintech.events.{topic}"]
                    if not r.body["idempotency_key"].startswith("demo-timeout")]
    return started, max(finish_times)


async def _refund_some(driver: ServiceDriver, workload: Workload) -> int:
    captured = [body for body in driver.of("PaymentCaptured")][:20]
    for number, body in enumerate(captured):
        partial = body["amount"] // 2 if number % 2 else None
        await driver.refund(f"refund-{body['payment_id']}", body["payment_id"], partial)
    await driver.flush()
    await driver.wait_for(
        lambda: len(driver.of("PaymentRefunded")) + len(driver.of("RefundFailed")) >= len(captured),
        what="refund outcomes")
    return len(captured)


async def _misbehave(driver: ServiceDriver, workload: Workload) -> None:
    """What upstream systems get wrong: a bad field, a reused key, bytes that are not JSON."""
    first = workload.payments[0].command()
    await driver.send(PAYMENT_COMMANDS, first["idempotency_key"], {**first, "amount": first["amount"] + 1})
    await driver.send(PAYMENT_COMMANDS, "demo-invalid", {**first, "idempotency_key": "demo-invalid",
                                                         "amount": -5, "currency": "XYZ"})
    await driver.send(PAYMENT_COMMANDS, "demo-garbage", b"\xff{not json")
    await driver.flush()
    await driver.wait_for(lambda: len(driver.of("CommandRejected")) >= 2
                          and len(driver.events["fintech.deadletter"]) >= 1, what="rejections")


async def _worker_matches_ledger(worker: WorkerProcess, store: LedgerStore, workload: Workload,
                                 api_key: str) -> bool:
    """The balances the worker holds equal the ledger's sums (postings settle asynchronously)."""
    import urllib.request

    import orjson

    deadline = time.monotonic() + 30
    while True:
        ledger = await store.balances()
        mismatched = []
        for account in workload.accounts:
            asked = urllib.request.Request(f"{worker.url}/v1/accounts/{account.account_id}",
                                           headers={"Authorization": f"Bearer {api_key}"})
            body = await asyncio.to_thread(lambda r=asked: orjson.loads(urllib.request.urlopen(r).read()))
            if body["posted"] != ledger.get(account.account_id, 0) or body["pending"] != 0:
                mismatched.append(account.account_id)
        if not mismatched or time.monotonic() > deadline:
            return not mismatched
        await asyncio.sleep(0.5)


@dataclass(frozen=True)
class Webhooks:
    expected: int  # the notified events the driver saw on Kafka
    delivered: int  # of those, how many reached the receiver
    repeated: int  # deliveries beyond the first of a webhook-id (at least once)
    unverified: int  # deliveries whose signature the Standard Webhooks verifier refused

    @property
    def ok(self) -> bool:
        return self.delivered == self.expected and self.unverified == 0


async def _webhooks_delivered(driver: ServiceDriver, receiver: Receiver, secret: str) -> Webhooks:
    """Every notified event the driver saw, delivered to the receiver (within 30 s), signed."""
    expected = {body["event_id"] for event_type in EVENT_TYPES for body in driver.of(event_type)}
    try:
        await driver.wait_for(lambda: expected <= set(receiver.ids()), timeout_seconds=30, what="webhooks")
    except TimeoutError:
        pass  # reported below
    ids = receiver.ids()
    return Webhooks(len(expected), len(expected & set(ids)), sum(ids.values()) - len(ids),
                    len(receiver.unverified(secret)))


def _summarise(driver: ServiceDriver, workload: Workload, started: float, finished: float, refunds: int,
               balanced: bool, ledger_total: int, matches: bool, webhooks: Webhooks) -> bool:
    outcomes = driver.outcomes()
    expected = {payment_id_for(p.key): p.expected for p in workload.payments}
    by_reason: Counter[str] = Counter()
    wrong = 0
    for payment_id, want in expected.items():
        events = outcomes.get(payment_id, [])
        got = events[0].get("reason", "captured") if events else "missing"
        by_reason[got] += 1
        wrong += got != want or len(events) != 1
    table = Table(title="payments demo")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for reason, count in sorted(by_reason.items(), key=lambda item: -item[1]):
        table.add_row(reason, str(count))
    console.print(table)
    timed = len([p for p in workload.payments if p.simulation != "timeout"])
    rate = timed / max(finished - started, 1e-9)
    lines = [
        f"payments sent: {len(expected)} (+ repeats of every 25th, which had no second effect)",
        f"outcomes as planned: {len(expected) - wrong}/{len(expected)}",
        f"refunds: {refunds} requested, {len(driver.of('PaymentRefunded'))} refunded, "
        f"{len(driver.of('RefundFailed'))} failed",
        f"rejected commands: {len(driver.of('CommandRejected'))}; dead letters: "
        f"{len(driver.events['fintech.deadletter'])}",
        f"ledger balanced (PostgreSQL): {'yes' if balanced and ledger_total == 0 else 'NO'} "
        f"(sum of all postings = {ledger_total})",
        f"worker balances match the ledger: {'yes' if matches else 'NO'}",
        f"webhooks delivered to the local receiver: {webhooks.delivered}/{webhooks.expected} "
        f"(signatures verified: {'all' if not webhooks.unverified else f'NOT {webhooks.unverified}'}; "
        f"repeats: {webhooks.repeated})",
        f"throughput: {rate:,.0f} payments/s ({timed} payments without the PSP timeouts in "
        f"{finished - started:.1f}s)",
    ]
    for line in lines:
        console.print(line)
    return wrong == 0 and balanced and ledger_total == 0 and matches and webhooks.ok
