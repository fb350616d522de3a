"""The gate in front of every HTTP request: who is calling, may they, how often.

An aiohttp middleware on Faust's web server, so it sees every request, Faust's own pages
included, before any view runs:
- the open pages (`Route.open`: health, metrics, this API's document) pass;
- `/internal/...` (what workers ask each other) needs the workers' shared secret;
- `/v1/...` needs a live API key with the operation's scope (401 / 403), within the key's
  request rate on this worker (429); the key goes on with the request to the view, which
  checks the accounts a request involves (it alone knows them);
- anything else is 404: Faust's built-in pages (tables, router) are not this API's.
Whatever the view or the server answers as an error comes out as problem+json.

The keys are read from PostgreSQL every REFRESH_SECONDS, so a key made or revoked there
takes effect on every worker within that time (the contract says 5 s).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from api import routes
from api.problems import as_problem, problem
from ledger.store import LedgerStore
from models.api_keys import ApiKey, TokenBucket, authenticate, missing_scope, presented

log = logging.getLogger(__name__)
audit_log = logging.getLogger("payments.audit")

REFRESH_SECONDS = 1.0
REREAD_SECONDS = 0.25
READ_TIMEOUT_SECONDS = 2.0
# Past this without a read (PostgreSQL away), /v1 answers 503 rather than honour a key that
# may have been revoked meanwhile: the contract gives a revocation 5 s to reach every worker.
STALE_SECONDS = 4.0
INTERNAL_PREFIX = "/internal/"
# The workers' shared secret rides in this header on what they ask each other, and on the
# API requests one forwards to another (which the first has already counted against the
# key's rate).
INTERNAL_HEADER = "X-Payments-Internal"
INTERNAL_SECRET_NAME = "internal-requests"
# Where the gate leaves the caller's key for the view, on the request.
API_KEY = web.RequestKey("api_key", ApiKey)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Gate:
    store: Callable[[], Awaitable[LedgerStore]]
    rate_per_second: float
    burst: float
    keys: dict[str, ApiKey] | None = None  # by key_id; None until first read
    internal_secret: str | None = None
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)
    read_at: float = -math.inf  # when the keys were last read
    _reading: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tried_at: float = -math.inf

    async def refresh(self) -> None:
        store = await self.store()
        if self.internal_secret is None:
            self.internal_secret = await store.service_secret(INTERNAL_SECRET_NAME, secrets.token_urlsafe(32))
        self.keys = await store.live_api_keys()
        # A bucket per live key only: a revoked or unknown one never gets here again.
        self._buckets = {key_id: bucket for key_id, bucket in self._buckets.items() if key_id in self.keys}

    async def read(self) -> None:
        """Read the keys now, within READ_TIMEOUT_SECONDS (the store would retry for ever)."""
        await asyncio.wait_for(self.refresh(), READ_TIMEOUT_SECONDS)
        self.read_at = time.monotonic()

    async def read_again(self) -> None:
        """The keys read now for a key_id not known, at most once per REREAD_SECONDS, so
        that made-up keys cannot turn into a stream of queries."""
        async with self._reading:
            if time.monotonic() - self._tried_at >= REREAD_SECONDS:
                self._tried_at = time.monotonic()
                try:
                    await self.read()
                except Exception:  # noqa: BLE001 - the periodic read logs it
                    pass

    def stale(self) -> bool:
        """Keys not read for STALE_SECONDS: one revoked since may still be among them."""
        return self.keys is None or time.monotonic() - self.read_at > STALE_SECONDS

    async def keep_fresh(self) -> None:
        while True:
            try:
                await self.read()
            except Exception:  # noqa: BLE001 - the last keys stay until STALE_SECONDS; the next read retries
                log.warning("could not read the API keys", exc_info=True)
            await asyncio.sleep(REFRESH_SECONDS)

    def internal_headers(self) -> dict[str, str]:
        return {INTERNAL_HEADER: self.internal_secret or ""}

    def from_a_worker(self, request: web.Request) -> bool:
        sent = request.headers.get(INTERNAL_HEADER)
        return (
            sent is not None
            and self.internal_secret is not None
            and hmac.compare_digest(sent.encode(), self.internal_secret.encode())
        )

    def wait_seconds(self, key: ApiKey) -> float:
        now = time.monotonic()
        bucket = self._buckets.get(key.key_id)
        if bucket is None:
            bucket = self._buckets[key.key_id] = TokenBucket.full(self.rate_per_second, self.burst, now)
        return bucket.take(now)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._pass(request, handler)
        except web.HTTPException as error:  # the router's own 404 / 405, or a view's
            response = error  # an aiohttp answer like any other: made a problem below
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = problem(500, "the request failed on the server; it is logged")
        return as_problem(response)

    async def _pass(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        unmatched = request.match_info.http_exception
        if unmatched is not None:  # the router's 404, or its 405 with the Allow header
            raise unmatched
        template = _template(request)
        route = routes.find(request.method, template) if template is not None else None
        if route is not None and route.open:
            return await handler(request)
        if request.path.startswith(INTERNAL_PREFIX):
            if not self.from_a_worker(request):
                return problem(401, "internal requests need the workers' credentials")
            return await handler(request)
        if not request.path.startswith("/v1/"):
            return problem(404, f"no such path: {request.path}")
        if self.stale():
            return problem(
                503,
                "the API keys cannot be read now (PostgreSQL); try again shortly",
                headers={"Retry-After": "1"},
            )
        offered = presented(request.headers.get("Authorization"))
        key = authenticate(self.keys, offered)
        if key is None and offered is not None and offered.key_id not in self.keys:
            await self.read_again()  # a key made a moment ago works at once
            key = authenticate(self.keys, offered)
        if key is None:
            return problem(
                401,
                "a live API key is needed: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": 'Bearer realm="payments"'},
            )
        if route is None:
            return problem(404, f"no such path: {request.path}")
        refusal = missing_scope(key, route.scope)
        if refusal is not None:
            return problem(403, refusal)
        if not self.from_a_worker(request):
            wait = self.wait_seconds(key)
            if wait > 0:
                return problem(
                    429,
                    f"the API key {key.name!r} is over its rate of {self.rate_per_second:g} "
                    "requests per second",
                    headers={"Retry-After": str(math.ceil(wait))},
                )
        request[API_KEY] = key
        return await handler(request)


def _template(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def audit(request: web.Request, operation: str, **about: object) -> None:
    """An accepted write, with the name of the key that made it (never the key)."""
    key = request[API_KEY]
    details = " ".join(f"{name}={value}" for name, value in about.items())
    audit_log.info("%s by key %s: %s", operation, key.name, details)
