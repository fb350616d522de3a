"""Builders of realistic journal entries for tests of the ledger and of its callers."""

from __future__ import annotations

from uuid import NAMESPACE_URL, uuid5

import orjson

from ledger.accounts import AccountRow
from ledger.store import LedgerStore
from models.ledger import (
    EntryKind,
    JournalEntry,
    OutboxMessage,
    funding_postings,
    transaction_id_for,
    transfer,
)


def event(key: str, name: str, topic: str = "fintech.events.Test") -> OutboxMessage:
    """An outbox message whose event_id is stable for (key, name)."""
    event_id = uuid5(NAMESPACE_URL, f"test-event/{key}/{name}")
    value = orjson.dumps({"event_id": str(event_id), "key": key, "name": name})
    headers = (("ce_id", str(event_id).encode()), ("binary", b"\x00\xff"))
    return OutboxMessage(event_id, topic, key, value, headers)


def funding_entry(
    account_id: str, amount: int, currency: str = "USD", *, key: str, events: int = 1
) -> JournalEntry:
    return JournalEntry(
        transaction_id=transaction_id_for(EntryKind.FUNDING, key), kind=EntryKind.FUNDING,
        idempotency_key=key, fingerprint=f"fund/{account_id}/{amount}/{currency}", payment_id=None,
        postings=funding_postings(account_id, amount, currency),
        outbox=tuple(event(account_id, f"{key}/{number}") for number in range(events)),
    )


def capture_entry(
    debtor_account_id: str, creditor_account_id: str, amount: int, currency: str = "USD",
    *, payment_id: str,
) -> JournalEntry:
    return JournalEntry(
        transaction_id=transaction_id_for(EntryKind.CAPTURE, payment_id), kind=EntryKind.CAPTURE,
        idempotency_key=f"idem-{payment_id}", payment_id=payment_id,
        fingerprint=f"pay/{debtor_account_id}/{creditor_account_id}/{amount}/{currency}",
        postings=transfer(debtor_account_id, creditor_account_id, amount, currency),
        outbox=(event(payment_id, "captured"),),
    )


async def open_accounts(store: LedgerStore, *account_ids: str, currency: str = "USD") -> None:
    for account_id in account_ids:
        row = AccountRow(account_id, f"owner-{account_id}", currency, 0, "verified")
        await store.open_account(row)
