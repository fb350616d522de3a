"""The account owner: one writer per account, balances in the `accounts` table."""

from __future__ import annotations

import time
from functools import partial

import faust

from agents.runtime import Runtime
from agents.shell import Delivery, batches, deliveries
from infra.crash import crash_point
from infra.topics import ACCOUNT_STEPS
from ledger.accounts import AccountRow
from models.account import AccountState
from models.account_flow import react
from models.outputs import Output
from models.routing import ACCOUNT_STEP
from models.steps import OpenAccountOp, ReleaseFunds


def account_row(state: AccountState) -> AccountRow:
    return AccountRow(account_id=state.account_id, owner_id=state.owner_id, currency=state.currency,
                      overdraft_limit=state.overdraft_limit, kyc_status=state.kyc_status,
                      status=state.status)


def install(app: faust.App, runtime: Runtime) -> None:
    metrics = runtime.metrics

    async def handle(changed: dict[str, tuple[int, AccountState]], delivery: Delivery) -> list[Output]:
        step = delivery.step(ACCOUNT_STEP)
        account_id = delivery.key
        current = runtime.accounts.latest(account_id, changed)
        new_state, outputs = react(current, step, delivery.origin)
        if isinstance(step, OpenAccountOp) and current is None and new_state is not None:
            # The ledger of record knows the account before anyone can pay into it.
            await (await runtime.store()).open_account(account_row(new_state))
        if isinstance(step, ReleaseFunds) and outputs:
            metrics.compensations.labels(step.reason.value).inc()
        if new_state is not None:
            changed[account_id] = (delivery.partition, new_state)
        return outputs

    async def own_accounts(stream: faust.StreamT) -> None:
        async for events in batches(stream):
            started = time.perf_counter()
            changed: dict[str, tuple[int, AccountState]] = {}
            handled = await runtime.quarantine.each(deliveries(events), partial(handle, changed))
            await runtime.outlet.send(output for _, outputs in handled for output in outputs)
            crash_point("accounts.after_send")
            await runtime.accounts.record(changed)
            crash_point("accounts.after_record")
            metrics.step_duration.labels("validate_reserve").observe(time.perf_counter() - started)

    runtime.agent(ACCOUNT_STEPS, "accounts", own_accounts)
