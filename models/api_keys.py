"""API keys and what they allow: the pure decisions behind HTTP authentication.

A key is `pk_<key_id>.<secret>`. The key_id is public (it names the key in logs and
lookups); only a SHA-256 digest of the secret is stored. The secret is 256 random bits,
so a plain digest is enough: there is nothing to guess that a slow hash would protect.
The stored digest is compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

Scope = Literal[
    "payments:write", "payments:read", "refunds:write", "accounts:read", "accounts:write", "webhooks:write"
]
SCOPES: tuple[Scope, ...] = (
    "payments:write",
    "payments:read",
    "refunds:write",
    "accounts:read",
    "accounts:write",
    "webhooks:write",
)
KEY_PREFIX = "pk_"
_KEY = re.compile(r"^pk_([0-9a-f]{12})\.([A-Za-z0-9_-]{43})$")
NAME_PATTERN = r"^[A-Za-z0-9._:@-]{1,64}$"


@dataclass(frozen=True)
class ApiKey:
    """A key as the workers hold it: never its secret, only the secret's digest."""

    name: str
    key_id: str
    secret_digest: str
    scopes: frozenset[str]
    accounts: frozenset[str] | None  # None: every account

    def covers(self, *account_ids: str) -> bool:
        """Whether the key may act for, or read about, one of these accounts."""
        return self.accounts is None or any(account in self.accounts for account in account_ids)


@dataclass(frozen=True)
class Presented:
    """A key as a client sent it, split into its public and secret parts."""

    key_id: str
    secret: str


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def compose(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}.{secret}"


def presented(authorization: str | None) -> Presented | None:
    """The key of an `Authorization: Bearer <key>` header; None when absent or malformed."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    match = _KEY.match(credentials.strip())
    return Presented(match.group(1), match.group(2)) if match else None


def authenticate(keys: dict[str, ApiKey], key: Presented | None) -> ApiKey | None:
    """The live key the client presented, or None (missing, unknown, revoked: all 401)."""
    if key is None:
        return None
    known = keys.get(key.key_id)
    # Compared even for an unknown key_id, so the answer takes the same time either way.
    stored = known.secret_digest if known is not None else "0" * 64
    matches = hmac.compare_digest(digest(key.secret), stored)
    return known if matches and known is not None else None


def missing_scope(key: ApiKey, scope: str | None) -> str | None:
    """Why the key may not use an operation that needs `scope`; None when it may."""
    if scope is None or scope in key.scopes:
        return None
    return f"the API key {key.name!r} lacks the scope {scope!r}"


def outside_accounts(key: ApiKey, *account_ids: str) -> str | None:
    """Why the key may not touch something involving only these accounts; None when it may."""
    if key.covers(*account_ids):
        return None
    return f"the API key {key.name!r} is not allowed for account {' or '.join(sorted(set(account_ids)))}"


def mint(name: str, scopes: frozenset[str], accounts: frozenset[str] | None) -> tuple[ApiKey, str]:
    """A new key and its text, which is shown once and never stored."""
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return ApiKey(name, key_id, digest(secret), scopes, accounts), compose(key_id, secret)


def check_scopes(scopes: list[str]) -> frozenset[str]:
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    return frozenset(scopes or SCOPES)


@dataclass
class TokenBucket:
    """A key's request budget on one worker: `rate` tokens a second, at most `burst` saved."""

    rate: float
    burst: float
    tokens: float
    updated_at: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> float:
        """Spend a token: 0 when one was there, else the seconds until one will be."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
