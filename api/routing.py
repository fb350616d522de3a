"""Answering an HTTP request on the worker that owns its key, for requests Faust's
`table_route` cannot route: a POST (its body must go along) whose key is computed.

The owner is found the way `table_route` finds it (`app.router.key_store`, the table's
changelog partition the key hashes to, from the last assignment); the request is sent on once,
with its body and headers, and the owner's answer is passed back as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import aiohttp
import faust
from aiohttp.web import Request, Response
from multidict import CIMultiDict
from yarl import URL

from api.problems import KEPT_HEADERS, problem

RETRY_AFTER_SECONDS = 1
# The owner's own work is bounded (RECORD_WAIT_SECONDS per request queued on the same
# payment, plus the broker's ack): past this the answer is 503 and the client repeats
# the request with the same key, which is safe.
FORWARD_TIMEOUT_SECONDS = 30.0
# Set on a forwarded request: a worker that receives one but thinks another worker is
# the owner answers 503 instead of forwarding again, so two workers whose views of the
# assignment disagree (mid-rebalance) cannot bounce a request between them.
FORWARDED_BY = "X-Payments-Forwarded-By"
HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class OwnerUnknown(Exception):
    """No worker can be trusted to answer for the key right now."""


def owner_of(app: faust.App, table: str, key: str) -> URL | None:
    """The web address of the worker holding the partition `key` hashes to in the table
    named `table`; None when it is this one."""
    if app.rebalancing or app.in_recovery:
        # The assignment (or this worker's copy of a table) is being changed: an answer
        # now could come from a worker that is about to lose, or has not yet read back,
        # the key's state.
        raise OwnerUnknown("partitions are being reassigned")
    try:
        owner = app.router.key_store(table, key.encode())
    except KeyError:
        raise OwnerUnknown("no worker is assigned the key's partition") from None
    here = URL(str(app.conf.canonical_url))
    return None if (owner.host, owner.port) == (here.host, here.port) else owner


def unavailable(reason: str) -> Response:
    return problem(503, f"{reason}; try again shortly", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def forward(
    app: faust.App, request: Request, body: bytes, owner: URL, credentials: Mapping[str, str]
) -> Response:
    """The owner's answer to the same request (same method, path, headers and body), asked
    with the workers' `credentials` besides the caller's own."""
    if FORWARDED_BY in request.headers:
        return unavailable("the workers disagree about who owns this key")
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    headers[FORWARDED_BY] = str(app.conf.canonical_url)
    headers.update(credentials)
    url = request.url.with_host(owner.host or "").with_port(owner.port)
    timeout = aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_SECONDS)
    try:
        async with app.http_client.request(
            request.method, url, headers=headers, data=body, timeout=timeout
        ) as response:
            answer = await response.read()
            passed = {k: response.headers[k] for k in KEPT_HEADERS if k in response.headers}
            return Response(
                body=answer, status=response.status, headers=passed, content_type=response.content_type
            )
    except (TimeoutError, aiohttp.ClientError):
        return unavailable(f"the worker owning this key ({owner}) did not answer")


class KeyedLocks:
    """One asyncio.Lock per key in use, dropped when its last holder or waiter is done,
    so the number of locks is bounded by the requests in flight, not by the keys seen."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks.pop(key)
            if users > 1:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)
