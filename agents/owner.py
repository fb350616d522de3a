"""The owner agent: the steps topic, every partition's accounts, payments and directory entries.

A batch goes: look up what the decisions need from outside (`prepare`: the creditors
this worker does not know yet, the fundings already in the ledger), decide each step in
order (models/owner.py), commit the batch's journal entries and outbox rows to
PostgreSQL in one transaction, then hand the outputs and the state to the loop
(agents/loop.py), which sends, records, and only then starts the provider calls.

A step that raises is quarantined (dead-lettered with its error) and its changes are
dropped; the rest of the batch goes on. A journal entry that PostgreSQL refuses for good
is found by writing the steps' entries one at a time, its step quarantined, and the
batch decided again without it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from agents.loop import Delivery, Done
from agents.outlet import DeadLetter, Sendable
from agents.psp import Calls
from infra.crash import crash_point
from infra.logs import payment_context
from infra.metrics import Metrics
from infra.producer import Outgoing
from ledger.accounts import AccountRow
from ledger.store import LedgerStore
from models import owner
from models.account import Account
from models.events import Event
from models.ledger import EntryKind, transaction_id_for
from models.outputs import Publish
from models.owner import Effects, Facts, Limits
from models.steps import (
    BadStep,
    CreditorFacts,
    FundAccountOp,
    OwnerStep,
    PaymentSubmitted,
    decode_message,
    encode_step,
)
from tables.owners import OwnerView, Value
from tables.state import StateTable

log = logging.getLogger(__name__)

# Creditors known to exist, kept per worker (their currency never changes).
CREDITORS_KEPT = 100_000

Item = OwnerStep | BadStep


class Creditors:
    """What this worker knows of accounts that exist, from the ledger's accounts table."""

    def __init__(self, lookup: Callable[[Sequence[str]], Awaitable[dict[str, CreditorFacts]]]) -> None:
        self._lookup = lookup
        self._known: OrderedDict[str, CreditorFacts] = OrderedDict()

    async def facts(self, account_ids: set[str]) -> dict[str, CreditorFacts]:
        found = {
            account_id: self._known[account_id] for account_id in account_ids if account_id in self._known
        }
        missing = account_ids - found.keys()
        if missing:
            for account_id, facts in (await self._lookup(sorted(missing))).items():
                self._known[account_id] = facts
                found[account_id] = facts
            while len(self._known) > CREDITORS_KEPT:
                self._known.popitem(last=False)
        return found


def committed_events(effects: Effects) -> list[Outgoing]:
    """The outbox rows of the batch's entries, published by the batch itself once they are
    committed (the loop sends them with its outputs, and redelivers the batch, entries and
    all, until they are acknowledged). The relay publishes only what no batch marked."""
    return [
        Outgoing(message.topic, message.key.encode(), message.value, message.headers)
        for entry, _ in effects.entries
        for message in entry.outbox
    ]


def account_row(account: Account) -> AccountRow:
    return AccountRow(
        account_id=account.account_id,
        owner_id=account.owner_id,
        currency=account.currency,
        overdraft_limit=account.overdraft_limit,
        kyc_status=account.kyc_status,
        status=account.status,
    )


@dataclass
class Decided:
    effects: Effects
    bad: list[tuple[Delivery[Item], str]]
    entries_of: list[tuple[Delivery[Item], int, int]]  # each step's slice of effects.entries


class Owner:
    def __init__(
        self,
        table: StateTable[Value],
        store: Callable[[], Awaitable[LedgerStore]],
        calls: Calls,
        metrics: Metrics,
        limits: Limits,
        partition_of: Callable[[str], int],
    ) -> None:
        self.table = table
        self.store = store
        self.calls = calls
        self.metrics = metrics
        self.limits = limits
        self.partition_of = partition_of
        self.creditors = Creditors(self._creditors)

    async def _creditors(self, account_ids: Sequence[str]) -> dict[str, CreditorFacts]:
        return await (await self.store()).creditors(account_ids)

    def split(self, value: bytes | None) -> list[Item]:
        return decode_message(value)

    async def take(self, deliveries: list[Delivery[Item]]) -> Done:
        facts = await self.prepare(deliveries)
        view = OwnerView(self.table, self.partition_of)
        decided = self.decide(view, deliveries, facts)
        quarantined = await self.commit(decided)
        while quarantined:  # PostgreSQL refused some step's entries for good: decide without them
            refused = {id(delivery) for delivery, _ in quarantined}
            view.drop_batch()
            remaining = [delivery for delivery in deliveries if id(delivery) not in refused]
            decided = self.decide(view, remaining, facts)
            decided.bad.extend(quarantined)
            quarantined = await self.commit(decided)
        effects = decided.effects
        if effects.entries:
            crash_point("owner.after_commit")
        outputs: list[Sendable] = [
            *effects.outputs,
            *committed_events(effects),
            *(await self.republished(effects.republish)),
            *(self.dead_letter(delivery, reason) for delivery, reason in decided.bad),
        ]
        changes, parsed = view.changes()

        async def after() -> None:
            await self.after(view, effects)

        return Done(self.table, outputs=outputs, changes=changes, parsed=parsed, after=after)

    async def republished(self, events: list[Event]) -> list[Sendable]:
        """First answers to publish again: the bytes the outbox kept, or for a row pruned
        past its retention (agents/relay.py) the event rebuilt, under the same event_id."""
        if not events:
            return []
        rows = await (await self.store()).stored_events([event.event_id for event in events])
        kept = {row.event_id for row in rows}
        return [*(Outgoing(row.topic, row.key.encode(), row.value, row.headers) for row in rows),
                *(Publish(event) for event in events if event.event_id not in kept)]

    async def prepare(self, deliveries: list[Delivery[Item]]) -> Facts:
        """The facts from outside the decisions need (models/owner.py, Determinism)."""
        creditors: set[str] = set()
        fundings = []
        for delivery in deliveries:
            step = delivery.item
            if isinstance(step, PaymentSubmitted) and not step.creditor_checked:
                creditor = step.request.creditor_account_id
                if self.partition_of(creditor) != delivery.at.partition:
                    creditors.add(creditor)
            elif isinstance(step, FundAccountOp):
                fundings.append(transaction_id_for(EntryKind.FUNDING, step.funding.idempotency_key))
        return Facts(
            creditors=await self.creditors.facts(creditors) if creditors else {},
            fundings=await (await self.store()).stored_entries(fundings) if fundings else {},
        )

    def decide(self, view: OwnerView, deliveries: list[Delivery[Item]], facts: Facts) -> Decided:
        effects = Effects()
        decided = Decided(effects, [], [])
        for delivery in deliveries:
            step = delivery.item
            if isinstance(step, BadStep):
                decided.bad.append((delivery, step.error))
                continue
            mark = effects.mark()
            try:
                owner.handle(view, step, delivery.at, facts, self.limits, effects)
            except Exception as error:  # noqa: BLE001 - quarantined with its reason
                log.error("step at %s quarantined: %r", delivery.at.place, error, exc_info=error)
                view.drop_step()
                effects.rollback(mark)
                decided.bad.append((delivery, repr(error)[:2000]))
                continue
            view.keep_step()
            decided.entries_of.append((delivery, mark.entries, len(effects.entries)))
        return decided

    async def commit(self, decided: Decided) -> list[tuple[Delivery[Item], str]]:
        """Write the batch's entries in one transaction; the steps whose entries PostgreSQL
        refuses for good, when it does."""
        effects = decided.effects
        if not effects.entries and not effects.openings:
            return []
        store = await self.store()
        opened = [account_row(account) for account in effects.openings]
        started = time.perf_counter()
        try:
            await store.write_batch(effects.entries, accounts=opened)
        except asyncpg.PostgresError as error:
            log.warning("the ledger refused a batch (%r): finding the step at fault", error)
            return await self._refused(store, decided, opened)
        self.metrics.ledger_commit.observe(time.perf_counter() - started)
        self.metrics.ledger_batch_size.observe(len(effects.entries))
        self.metrics.ledger_postings.inc(sum(len(entry.postings) for entry, _ in effects.entries))
        return []

    async def _refused(
        self, store: LedgerStore, decided: Decided, opened: list[AccountRow]
    ) -> list[tuple[Delivery[Item], str]]:
        await store.write_batch([], accounts=opened)
        refused = []
        for delivery, first, last in decided.entries_of:
            if first == last:
                continue
            try:
                await store.write_batch(decided.effects.entries[first:last])
            except asyncpg.PostgresError as error:
                refused.append((delivery, repr(error)[:2000]))
        return refused

    def dead_letter(self, delivery: Delivery[Item], reason: str) -> DeadLetter:
        self.metrics.dead_letter(delivery.at.topic, "step_failed")
        step = delivery.item
        value = step.raw if isinstance(step, BadStep) else encode_step(step)
        return DeadLetter(delivery.record, value, delivery.at.index, reason, "step_failed")

    async def after(self, view: OwnerView, effects: Effects) -> None:
        """Once the state is recorded: mark the outbox rows this batch published, start the
        calls of payments still in flight (the holder of the partition finds them again
        whatever happens to this worker), ask the voids, count and log what happened."""
        published = [message.event_id for entry, _ in effects.entries for message in entry.outbox]
        if published:
            await (await self.store()).mark_published(published)
        for payment in effects.calls:
            current = view.payment(payment.payment_id, self.calls.home_partition(payment))
            if current is not None and current.psp == "in_flight":
                await self.calls.start(current)
        for payment_id in effects.voids:
            self.calls.void(payment_id)
        for note in effects.notes:
            self.observe(note)

    def observe(self, note: owner.Note) -> None:
        metrics = self.metrics
        context = payment_context(note.payment_id, note.idempotency_key) if note.payment_id else None
        if note.kind == "outcome":
            metrics.outcomes.labels(note.what, note.reason or "").inc()
            if note.seconds is not None:
                metrics.end_to_end.labels(note.what).observe(note.seconds)
            if note.what == "failed":
                # A failure is what an operator reads the log for; captures are counted and
                # published, and at thousands per second a line each would cost real CPU.
                log.info("payment failed: %s (%s)", note.reason, note.detail, extra=context)
        elif note.kind == "compensation":
            metrics.compensations.labels(note.what).inc()
        elif note.kind == "refund":
            metrics.refunds.labels(note.what).inc()
        else:
            log.log(logging.getLevelName(note.level.upper()), "%s", note.what, extra=context)
