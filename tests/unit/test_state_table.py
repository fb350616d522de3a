"""StateTable reads: parsed once, parsed again when the stored bytes change (tables/state.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from models.account import AccountState
from tables import state
from tables.state import StateTable


class FakeApp:
    """What StateTable asks of a Faust app: a table holding raw bytes, and topics."""

    def Table(self, name: str, **options: Any) -> Any:  # noqa: N802 - Faust's spelling
        return SimpleNamespace(name=name, data={})

    def topic(self, name: str, **options: Any) -> Any:
        return SimpleNamespace(name=name)


def account(posted: int) -> AccountState:
    return AccountState(account_id="alice", owner_id="o", currency="USD", overdraft_limit=0,
                        kyc_status="verified", posted=posted)


def table() -> StateTable[AccountState]:
    return StateTable(FakeApp(), "accounts", AccountState, partitions=8)  # type: ignore[arg-type]


def test_a_value_read_twice_is_parsed_once() -> None:
    accounts = table()
    accounts.table.data[b"alice"] = account(10).model_dump_json().encode()
    first = accounts.get("alice")
    assert first == account(10)
    assert accounts.get("alice") is first


def test_a_value_replaced_in_the_table_is_read_anew() -> None:
    """Recovery from the changelog puts other bytes in the table: those are what count."""
    accounts = table()
    accounts.table.data[b"alice"] = account(10).model_dump_json().encode()
    assert accounts.get("alice") == account(10)
    accounts.table.data[b"alice"] = account(99).model_dump_json().encode()
    assert accounts.get("alice") == account(99)
    del accounts.table.data[b"alice"]
    assert accounts.get("alice") is None


def test_only_the_most_recently_used_values_are_kept(monkeypatch: Any) -> None:
    monkeypatch.setattr(state, "PARSED_KEPT", 2)
    accounts = table()
    for name in ("a", "b", "c"):
        accounts.table.data[name.encode()] = account(1).model_dump_json().encode()
        accounts.get(name)
    assert list(accounts._parsed) == [b"b", b"c"]  # noqa: SLF001 - the bound is the point
    assert accounts.get("a") == account(1)  # parsed again from the table
