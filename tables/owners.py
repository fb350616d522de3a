"""The owners' table: every account, payment, directory entry and tracking record of a partition.

One table, so that one record batch of its changelog partition holds every change a batch
made to the partition (tables/state.py). Keys are prefixed by what they hold:

| key | value |
|---|---|
| `a:<account id>` | the account's balances (models.account.Account) |
| `p:<payment id>` | the payment's record, at its debtor's home (models.payment.Payment) |
| `h:<payment id>` | the payment's home, at the partition its id hashes to (the debtor account id) |
| `t:<partition>` | the partition's tracking record (models.owner.Tracking) |

`OwnerView` is the table as a batch sees it (its own changes first): the `State` the
owner's decisions read and write (models/owner.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from infra.producer import partition_for
from models.account import Account
from models.owner import Tracking
from models.payment import Payment
from tables.state import Changes, StateTable

ACCOUNT, PAYMENT, HOME, TRACKING = b"a:", b"p:", b"h:", b"t:"

_ENCODER = msgspec.json.Encoder()
_ACCOUNT = msgspec.json.Decoder(Account)
_PAYMENT = msgspec.json.Decoder(Payment)
_TRACKING = msgspec.json.Decoder(Tracking)

Value = Account | Payment | Tracking | str


def account_key(account_id: str) -> bytes:
    return ACCOUNT + account_id.encode()


def payment_key(payment_id: str) -> bytes:
    return PAYMENT + payment_id.encode()


def home_key(payment_id: str) -> bytes:
    return HOME + payment_id.encode()


def tracking_key(partition: int) -> bytes:
    return TRACKING + str(partition).encode()


def locator(partitions: int) -> Callable[[bytes], int | None]:
    """Where a key lives, when its key says: an account and a directory entry at the
    partition their id hashes to, a tracking record at its own. A payment lives with its
    debtor, which its key does not name (None: looked up in every partition held)."""

    def locate(key: bytes) -> int | None:
        prefix = key[:2]
        if prefix in (ACCOUNT, HOME):
            return partition_for(key[2:], partitions)
        if prefix == TRACKING:
            return int(key[2:])
        return None

    return locate


def decode(key: bytes, raw: bytes) -> Value:
    prefix = key[:2]
    if prefix == ACCOUNT:
        return _ACCOUNT.decode(raw)
    if prefix == PAYMENT:
        return _PAYMENT.decode(raw)
    if prefix == TRACKING:
        return _TRACKING.decode(raw)
    if prefix == HOME:
        return raw.decode()
    raise ValueError(f"not a key of the owners' table: {key[:64]!r}")


def encode(value: Value) -> bytes:
    return value.encode() if isinstance(value, str) else _ENCODER.encode(value)


class OwnerView:
    """The owners' table with a batch's changes on top. A step's changes are staged, and
    kept (`keep_step`) or dropped (`drop_step`: the step was quarantined) as a whole."""

    def __init__(self, table: StateTable[Value], partition_of: Callable[[str], int]) -> None:
        self._table = table
        self.partition_of = partition_of
        self._batch: dict[bytes, tuple[int, Value]] = {}
        self._step: dict[bytes, tuple[int, Value]] = {}

    def _get(self, key: bytes, partition: int | None = None) -> Any:
        if key in self._step:
            return self._step[key][1]
        if key in self._batch:
            return self._batch[key][1]
        return self._table.get(key, partition)

    def account(self, account_id: str) -> Account | None:
        return self._get(account_key(account_id))  # type: ignore[no-any-return]

    def payment(self, payment_id: str, home: int) -> Payment | None:
        return self._get(payment_key(payment_id), home)  # type: ignore[no-any-return]

    def home(self, payment_id: str) -> str | None:
        return self._get(home_key(payment_id))  # type: ignore[no-any-return]

    def tracking(self, partition: int) -> Tracking:
        return self._get(tracking_key(partition)) or Tracking()  # type: ignore[no-any-return]

    def set_account(self, partition: int, account: Account) -> None:
        self._step[account_key(account.account_id)] = (partition, account)

    def set_payment(self, partition: int, payment: Payment) -> None:
        self._step[payment_key(payment.payment_id)] = (partition, payment)

    def set_home(self, partition: int, payment_id: str, home: str) -> None:
        self._step[home_key(payment_id)] = (partition, home)

    def set_tracking(self, partition: int, tracking: Tracking) -> None:
        self._step[tracking_key(partition)] = (partition, tracking)

    def keep_step(self) -> None:
        self._batch.update(self._step)
        self._step = {}

    def drop_step(self) -> None:
        self._step = {}

    def drop_batch(self) -> None:
        self._batch = {}
        self._step = {}

    def changes(self) -> tuple[Changes, dict[bytes, Value]]:
        """(partition -> key -> encoded value, key -> value) of the batch's kept changes."""
        encoded: Changes = {}
        parsed: dict[bytes, Value] = {}
        for key, (partition, value) in self._batch.items():
            encoded.setdefault(partition, {})[key] = encode(value)
            parsed[key] = value
        return encoded, parsed
