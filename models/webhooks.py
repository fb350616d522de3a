"""Webhooks, the notify step: which events go to which endpoint, when to try again, and
which addresses a webhook may never reach. Pure: no network, no database.

An event becomes one delivery per matching endpoint (by event type and account), sent
with Standard Webhooks headers; a failed attempt is tried again after the schedule's next
delay, with jitter, until the schedule is spent (then the delivery is failed, and the
operator can send it again).
"""

from __future__ import annotations

import base64
import ipaddress
import random
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from models.codec import Unreadable, json_object

EventType = Literal["PaymentCaptured", "PaymentFailed", "PaymentRefunded", "RefundFailed", "AccountFunded"]
EVENT_TYPES: tuple[EventType, ...] = (
    "PaymentCaptured",
    "PaymentFailed",
    "PaymentRefunded",
    "RefundFailed",
    "AccountFunded",
)
TOPICS: tuple[str, ...] = tuple(f"fintech.events.{event_type}" for event_type in EVENT_TYPES)
# A delay is stretched or shrunk by up to this fraction, so that the retries of many
# deliveries that failed together (a receiver's outage) do not all come back at once.
JITTER = 0.1
# The fields of an event that name the accounts it involves.
ACCOUNT_FIELDS = ("debtor_account_id", "creditor_account_id", "account_id")
SECRET_PREFIX = "whsec_"
_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
# IPv6 prefixes that carry an IPv4 address a gateway may route to (NAT64, RFC 6052).
NAT64 = ipaddress.ip_network("64:ff9b::/96")


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


def notice_of(topic: str, raw: bytes | None) -> Notice | Unreadable:
    """The notice of a message of an outcome topic, or why it cannot be one."""
    value = json_object(raw)
    if isinstance(value, Unreadable):
        return value
    assert raw is not None  # json_object has read it
    expected = topic.removeprefix("fintech.events.")
    if value.get("event_type") != expected or not value.get("event_id"):
        return Unreadable(f"not a {expected} event with an event_id")
    try:
        occurred_at = datetime.fromisoformat(str(value.get("occurred_at")))
    except ValueError:
        return Unreadable("occurred_at is not an RFC 3339 time")
    try:
        event_id = str(uuid.UUID(str(value["event_id"])))
    except ValueError:
        return Unreadable("event_id is not a UUID")
    if occurred_at.tzinfo is None:
        return Unreadable("occurred_at has no time zone offset")
    # Only what could be an account id: anything else (a NUL byte...) would make the
    # database refuse the batch, and the read side would stop at it after every restart.
    accounts = tuple(
        value[f] for f in ACCOUNT_FIELDS if isinstance(value.get(f), str) and _ID.match(value[f])
    )
    return Notice(event_id, expected, accounts, occurred_at, raw)


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
    """Standard Webhooks' form: the prefix, then 32 random bytes in standard base64 (what
    every verifier decodes; URL-safe base64 would give some of them another key)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


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
    if allow_private or all(candidate.is_global for candidate in _reachable(ip)):
        return None
    return (
        f"{address} is a loopback, private, link-local or reserved address "
        "(allowed only with PAYMENTS_WEBHOOK_ALLOW_PRIVATE=1)"
    )


def _reachable(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The address and every IPv4 address it embeds (mapped, 6to4, Teredo, NAT64, the
    deprecated IPv4-compatible form): each must be public."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        found += [v4 for v4 in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if v4 is not None]
        if ip in NAT64 or int(ip) >> 32 == 0:  # 64:ff9b::a.b.c.d, ::a.b.c.d
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found
