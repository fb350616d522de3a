"""Webhooks, the notify step: which events go to which endpoint, when to try again, and
which addresses a webhook may never reach. Pure: no network, no database.

An event becomes one delivery per matching endpoint (by event type and account), sent
with Standard Webhooks headers; a failed attempt is tried again after the schedule's next
delay, with jitter, until the schedule is spent (then the delivery is failed, and the
operator can send it again).
"""

from __future__ import annotations

import ipaddress
import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

import orjson

from models.codec import Unreadable

EventType = Literal["PaymentCaptured", "PaymentFailed", "PaymentRefunded", "RefundFailed", "AccountFunded"]
EVENT_TYPES: tuple[EventType, ...] = (
    "PaymentCaptured",
    "PaymentFailed",
    "PaymentRefunded",
    "RefundFailed",
    "AccountFunded",
)
TOPICS: tuple[str, ...] = tuple(f"fintech.events.{event_type}" for event_type in EVENT_TYPES)
DEFAULT_SCHEDULE: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
# A delay is stretched or shrunk by up to this fraction, so that the retries of many
# deliveries that failed together (a receiver's outage) do not all come back at once.
JITTER = 0.1
# The fields of an event that name the accounts it involves.
ACCOUNT_FIELDS = ("debtor_account_id", "creditor_account_id", "account_id")
SECRET_PREFIX = "whsec_"


@dataclass(frozen=True, slots=True)
class Notice:
    """An event as the notifier reads it: enough to choose its endpoints, and its bytes."""

    event_id: str
    event_type: str
    accounts: tuple[str, ...]
    occurred_at: datetime
    payload: bytes  # the value on Kafka, sent as it is


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    url: str
    event_types: frozenset[str] | None  # None: all
    accounts: frozenset[str] | None  # None: every account

    def wants(self, notice: Notice) -> bool:
        return (self.event_types is None or notice.event_type in self.event_types) and (
            self.accounts is None or any(a in self.accounts for a in notice.accounts)
        )


def notice_of(topic: str, raw: bytes | None) -> Notice | Unreadable:
    """The notice of a message of an outcome topic, or why it cannot be one."""
    if raw is None:
        return Unreadable("a message without a value")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Unreadable(f"not JSON: {error}")
    expected = topic.removeprefix("fintech.events.")
    if not isinstance(value, dict) or value.get("event_type") != expected or not value.get("event_id"):
        return Unreadable(f"not a {expected} event with an event_id")
    try:
        occurred_at = datetime.fromisoformat(str(value.get("occurred_at")))
    except ValueError:
        return Unreadable("occurred_at is not an RFC 3339 time")
    accounts = tuple(str(value[f]) for f in ACCOUNT_FIELDS if isinstance(value.get(f), str))
    return Notice(str(value["event_id"]), expected, accounts, occurred_at, raw)


def retry_delay(
    schedule: Sequence[float], attempts: int, chance: random.Random | None = None
) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones; None: the schedule is spent."""
    if attempts > len(schedule):
        return None
    delay = schedule[attempts - 1]
    spread = (chance or random).uniform(-JITTER, JITTER)
    return max(0.0, delay * (1 + spread))


def parse_schedule(text: str) -> tuple[float, ...]:
    """`5,300,1800`: seconds to wait after the first, second, third failed attempt."""
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not comma-separated seconds") from None
    if not delays or any(delay < 0 for delay in delays):
        raise ValueError(f"{text!r}: delays must be seconds >= 0, at least one")
    return delays


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_endpoint_id() -> str:
    return "we_" + secrets.token_hex(8)


def url_refusal(url: str, allow_private: bool) -> str | None:
    """Why a webhook URL is refused before its host is even looked up; None when it is not."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{url!r} is not an http(s) URL with a host"
    if parts.scheme != "https" and not allow_private:
        return f"{url!r} is not https (plain http only with PAYMENTS_WEBHOOK_ALLOW_PRIVATE=1)"
    if parts.username or parts.password:
        return f"{url!r} carries credentials; put them in the path or use the signature instead"
    return None


def address_refusal(address: str, allow_private: bool) -> str | None:
    """Why a webhook may not reach this IP address (loopback, private, link-local...)."""
    ip = ipaddress.ip_address(address)
    if allow_private or ip.is_global:
        return None
    return (
        f"{address} is a loopback, private, link-local or reserved address "
        "(allowed only with PAYMENTS_WEBHOOK_ALLOW_PRIVATE=1)"
    )
