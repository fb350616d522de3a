"""API keys for the harness's own calls (demo, tests), made as the operator's CLI makes them."""

from __future__ import annotations

from collections.abc import Iterable

from ledger.store import LedgerStore
from models.api_keys import SCOPES, mint


async def new_key(
    database_url: str, name: str, scopes: Iterable[str] = SCOPES, accounts: Iterable[str] | None = None
) -> str:
    """A live key's text (the schema must exist: `migrate` first)."""
    store = await LedgerStore.connect(database_url, max_size=1)
    try:
        key, text = mint(name, frozenset(scopes), None if accounts is None else frozenset(accounts))
        await store.create_api_key(key)
        return text
    finally:
        await store.close()
