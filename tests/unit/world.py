"""The whole choreography in memory: the intake's and the owners' decisions, no broker.

`World` plays the parts around the pure decisions the way the agents do: commands are
read in order, steps go to the partition their key hashes to, each partition is handled
in batches, journal entries are committed to an in-memory ledger that keeps the first
write of each transaction, events are published, provider calls answer, and the state is
stored encoded (as the changelog would hold it) and read back decoded, so what a
worker recovers is what the decisions see.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from aiokafka.partitioner import murmur2

from models import owner
from models.codec import Invalid, Unreadable, read_command
from models.commands import ACCOUNT_COMMANDS, PAYMENT_COMMANDS, RefundPayment, RequestPayment
from models.events import Event
from models.intake import KeyUse, hand_over, screen_key
from models.ledger import JournalEntry
from models.outputs import Dispatch, Publish
from models.owner import Effects, Facts, Limits, StoredEntry
from models.payment import Payment
from models.steps import CreditorFacts, Origin, OwnerStep, PspAnswered, decode_message, encode_batch
from tables import owners as owners_table
from tables.owners import OwnerView

PARTITIONS = 8
STEPS = "payments.steps"


def partition_of(key: str) -> int:
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


class EncodedTable:
    """What OwnerView asks of a StateTable: values stored as bytes by partition, decoded on
    read, and read only where the reader says they live (as the disk store does)."""

    def __init__(self) -> None:
        self.parts: dict[int, dict[bytes, bytes]] = {}
        self.locate = owners_table.locator(PARTITIONS)

    def write(self, partition: int, writes: dict[bytes, bytes]) -> None:
        self.parts.setdefault(partition, {}).update(writes)

    def items(self) -> list[tuple[bytes, bytes]]:
        return [item for part in self.parts.values() for item in part.items()]

    def get(self, key: bytes, partition: int | None = None) -> Any:
        if partition is None:
            partition = self.locate(key)
        if partition is None:  # where only the HTTP views look: everywhere
            raw = next((part[key] for part in self.parts.values() if key in part), None)
        else:
            raw = self.parts.get(partition, {}).get(key)
        return None if raw is None else owners_table.decode(key, raw)


@dataclass
class World:
    approve: Callable[[Payment], PspAnswered | None] = field(default=lambda payment: None)
    limits: Limits = field(default_factory=Limits)
    table: EncodedTable = field(default_factory=EncodedTable)
    keys: dict[str, KeyUse] = field(default_factory=dict)
    ledger: dict[UUID, tuple[JournalEntry, Origin]] = field(default_factory=dict)
    published: list[Event] = field(default_factory=list)
    logs: dict[int, list[bytes]] = field(default_factory=dict)  # the steps topic: partition -> messages
    read: dict[int, int] = field(default_factory=dict)  # partition -> next offset to handle
    calls: deque[Payment] = field(default_factory=deque)
    commands: int = 0

    # --- upstream -------------------------------------------------------------------------

    def command(self, body: dict[str, Any]) -> None:
        """One command, read by the intake at once (partition 0 of its topic, in order)."""
        payments = body.get("type") in PAYMENT_COMMANDS
        topic = "fintech.payments.commands" if payments else "fintech.accounts.commands"
        at = Origin(topic, 0, self.commands)
        self.commands += 1
        import orjson

        command = read_command(orjson.dumps(body), PAYMENT_COMMANDS if payments else ACCOUNT_COMMANDS,
                               "idempotency_key" if payments else "account_id")
        assert not isinstance(command, Unreadable | Invalid), command
        fingerprint = command.fingerprint()
        if isinstance(command, RequestPayment | RefundPayment):
            first = self.keys.get(command.idempotency_key)
            use = screen_key(first, command, fingerprint, at)
            if not isinstance(use, KeyUse):
                self.published.append(use)
                return
            self.keys.setdefault(command.idempotency_key, use)
        self.send(hand_over(command, fingerprint, at))

    # --- the steps topic ------------------------------------------------------------------

    def send(self, outputs: list[Any]) -> None:
        grouped: dict[int, list[OwnerStep]] = {}
        for output in outputs:
            if isinstance(output, Publish):
                self.published.append(output.event)
            else:
                assert isinstance(output, Dispatch)
                grouped.setdefault(partition_of(output.key), []).append(output.step)
        for partition, steps in grouped.items():
            self.logs.setdefault(partition, []).append(encode_batch(steps))

    def pending(self) -> int:
        return sum(len(log) - self.read.get(partition, 0) for partition, log in self.logs.items())

    def handle_partition(self, partition: int, messages_max: int = 1_000, *, crash_before_record: bool = False
                         ) -> None:
        """One batch of one partition, as the owner agent takes it. With
        `crash_before_record`, everything is done but the state and the offset: what a
        worker killed between its sends and its changelog write leaves behind."""
        log = self.logs.get(partition, [])
        start = self.read.get(partition, 0)
        deliveries = []
        for offset in range(start, min(len(log), start + messages_max)):
            for index, step in enumerate(decode_message(log[offset])):
                deliveries.append((Origin(STEPS, partition, offset, index), step))
        if not deliveries:
            return
        view = OwnerView(self.table, partition_of)  # type: ignore[arg-type]
        effects = Effects()
        facts = self.facts([step for _, step in deliveries])
        for at, step in deliveries:
            owner.handle(view, step, at, facts, self.limits, effects)  # type: ignore[arg-type]
            view.keep_step()
        for entry, origin in effects.entries:
            self.ledger.setdefault(entry.transaction_id, (entry, origin))
        for answer in effects.republish:
            self.published.extend(event for entry, _ in self.ledger.values() for event in self.outbox(entry)
                                  if event.event_id == answer.event_id)
        self.send(effects.outputs)
        if crash_before_record:
            return
        changes, _ = view.changes()
        for partition, writes in changes.items():
            self.table.write(partition, writes)  # type: ignore[arg-type]
        self.read[partition] = start + min(len(log) - start, messages_max)
        for payment in effects.calls:
            current = self.payment(payment.payment_id)
            if current is not None and current.psp == "in_flight":
                self.calls.append(current)

    def facts(self, steps: list[Any]) -> Facts:
        """What the owner agent looks up in PostgreSQL: every account opened, the fundings."""
        creditors = {}
        for key, raw in self.table.items():
            if key.startswith(owners_table.ACCOUNT):
                account = owners_table.decode(key, raw)
                creditors[account.account_id] = CreditorFacts(account.account_id, account.currency,  # type: ignore[union-attr]
                                                              account.status)  # type: ignore[union-attr]
        fundings = {transaction_id: StoredEntry(entry.fingerprint, origin)
                    for transaction_id, (entry, origin) in self.ledger.items()}
        return Facts(creditors=creditors, fundings=fundings)

    @staticmethod
    def outbox(entry: JournalEntry) -> list[Event]:
        from models.codec import stored_event

        return [stored_event(message.value) for message in entry.outbox]

    def answer_calls(self) -> None:
        while self.calls:
            payment = self.calls.popleft()
            answer = self.approve(payment)
            if answer is None:
                answer = PspAnswered(origin=payment.requested_at, payment_id=payment.payment_id,  # type: ignore[arg-type]
                                     home=payment.request.debtor_account_id, result="approved",
                                     psp_reference=f"ref-{payment.payment_id[:8]}")
            self.send([Dispatch(answer.home, answer)])

    def settle(self, rounds_max: int = 100) -> None:
        """Handle every partition and answer every call until nothing is left to do."""
        for _ in range(rounds_max):
            if not self.pending() and not self.calls:
                return
            for partition in sorted(self.logs):
                self.handle_partition(partition)
            self.answer_calls()
        raise AssertionError("the world did not settle")

    # --- looking at it ----------------------------------------------------------------------

    def account(self, account_id: str) -> Any:
        return self.table.get(owners_table.account_key(account_id))

    def payment(self, payment_id: str) -> Payment | None:
        return self.table.get(owners_table.payment_key(payment_id))  # type: ignore[no-any-return]

    def events(self, event_type: str) -> list[Any]:
        return [event for event in self.published if event.event_type == event_type]

    def ledger_balance(self, account_id: str) -> int:
        return sum(posting.amount for entry, _ in self.ledger.values() for posting in entry.postings
                   if posting.account_id == account_id)
