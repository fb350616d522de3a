"""The account owner: one writer per account, balances in the `accounts` table."""

from __future__ import annotations

import time

import faust

from agents.runtime import Runtime
from agents.shell import BATCH_SIZE_MAX, BATCH_WITHIN_SECONDS, origin_of
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
    async def own_accounts(stream: faust.StreamT) -> None:
        async for events in stream.take_events(BATCH_SIZE_MAX, within=BATCH_WITHIN_SECONDS):
            started = time.perf_counter()
            changed: dict[str, tuple[int, AccountState]] = {}
            outputs: list[Output] = []
            for event in events:
                step = ACCOUNT_STEP.validate_json(event.message.value)
                account_id = event.message.key.decode()
                current = runtime.accounts.latest(account_id, changed)
                new_state, said = react(current, step, origin_of(event))
                if isinstance(step, OpenAccountOp) and new_state is not None and current is None:
                    # The ledger of record knows the account before anyone can pay into it.
                    await (await runtime.store()).open_account(account_row(new_state))
                if isinstance(step, ReleaseFunds) and said:
                    runtime.metrics.compensations.labels(step.reason).inc()
                if new_state is not None:
                    changed[account_id] = (event.message.partition, new_state)
                outputs.extend(said)
            await runtime.outlet.send(outputs)
            await runtime.accounts.record(changed)
            runtime.metrics.step_duration.labels("validate_reserve").observe(time.perf_counter() - started)

    app.agent(runtime.source(ACCOUNT_STEPS), name="accounts", concurrency=1)(own_accounts)
