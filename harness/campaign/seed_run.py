"""One scenario x seed: its sizes, its seeded randomness, the commands it sent and the
faults it injected."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.campaign.accounting import Operation, unanswered
from harness.campaign.environment import Environment
from harness.driver import ServiceDriver
from harness.workload import PlannedAccount, PlannedPayment, plan
from infra.topics import PAYMENT_COMMANDS
from settings import Settings


@dataclass(frozen=True)
class Sizes:
    payments: int = 100  # per seed
    accounts: int = 8
    timeouts: int = 1  # psp_faults: payments whose PSP never answers (each ends in 12-20 s)
    recovery_timeout_seconds: float = 60.0  # after the load and the last fault


@dataclass
class SeedRun:
    env: Environment
    scenario: str
    seed: int
    sizes: Sizes
    rng: random.Random
    operations: list[Operation] = field(default_factory=list)
    faults: list[tuple[float, str]] = field(default_factory=list)
    faults_planned: int = 0
    notes: list[str] = field(default_factory=list)
    settings: Settings = field(default_factory=Settings)

    @property
    def prefix(self) -> str:
        return f"{self.scenario.replace('_', '-')}-{self.seed}"

    @property
    def driver(self) -> ServiceDriver:
        return self.env.driver

    def fault(self, what: str) -> None:
        self.faults.append((time.monotonic(), what))
        self.notes.append(f"fault: {what}")

    def workload(self, *, timeouts: int = 0) -> tuple[list[PlannedAccount], list[PlannedPayment]]:
        planned = plan(self.seed, self.sizes.accounts, self.sizes.payments, timeouts=timeouts,
                       prefix=self.prefix, risk_max_amount=self.settings.risk_max_amount)
        return planned.accounts, planned.payments

    async def open_accounts(self, accounts: Sequence[PlannedAccount], *, wait: bool = True) -> None:
        """OpenAccount then FundAccount for each (one partition per account keeps them in order)."""
        for account in accounts:
            await self.driver.open_account(account.account_id, account.currency,
                                           kyc_status=account.kyc_status,
                                           overdraft_limit=account.overdraft_limit)
            self.operations.append(Operation("open", account.account_id, "opened"))
        for account in accounts:
            key = f"fund-{account.account_id}"
            await self.driver.fund(key, account.account_id, account.funding, account.currency)
            self.operations.append(Operation("fund", key, "funded"))
        await self.driver.flush()
        if wait:
            await self.wait_answered("the accounts opened and funded", 60.0)

    async def send_payments(self, payments: Sequence[PlannedPayment], spread_seconds: float) -> None:
        """Publish at an even pace over `spread_seconds`: load that a fault can land in."""
        started = time.monotonic()
        for number, payment in enumerate(payments):
            self.operations.append(Operation("payment", payment.key, payment.expected, payment.amount))
            await self.driver.send(PAYMENT_COMMANDS, payment.key, payment.command())
            pause = started + spread_seconds * (number + 1) / len(payments) - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
        await self.driver.flush()

    async def wait_answered(self, what: str, timeout_seconds: float) -> bool:
        def done() -> bool:
            return unanswered(self.operations, self.env.answers.update()) == 0

        try:
            await self.driver.wait_for(done, timeout_seconds=timeout_seconds, what=what)
            return True
        except TimeoutError:
            missing = unanswered(self.operations, self.env.answers.update())
            self.notes.append(f"{missing} commands unanswered {timeout_seconds:.0f}s after {what}")
            return False
