"""The gate (api/gate.py) in front of a bare aiohttp app, with its keys in a real PostgreSQL:
rate limits per key, revocation, and the one error shape, without a broker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from api.gate import API_KEY, REFRESH_SECONDS, STALE_SECONDS, Gate
from harness.api_keys import new_key
from ledger.api_keys import NameTaken
from ledger.migrate import migrate
from ledger.store import LedgerStore


@pytest.fixture
async def gated(database_url: str) -> AsyncIterator[tuple[str, Gate, LedgerStore]]:
    await migrate(database_url)
    store = await LedgerStore.connect(database_url, max_size=2)

    async def ledger() -> LedgerStore:
        return store

    gate = Gate(ledger, rate_per_second=2.0, burst=3)

    async def account(request: web.Request) -> web.Response:
        return web.json_response({"by": request[API_KEY].name})

    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[gate.middleware])
    app.router.add_get("/v1/accounts/{account_id}", account)
    app.router.add_get("/v1/accounts/{account_id}/statement", broken)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001
    refreshing = asyncio.create_task(gate.keep_fresh())
    try:
        yield f"http://127.0.0.1:{port}", gate, store
    finally:
        refreshing.cancel()
        await runner.cleanup()
        await store.close()


async def call(url: str, key: str) -> tuple[int, dict[str, str], dict[str, object]]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers={"Authorization": f"Bearer {key}"}) as response,
    ):
        assert response.content_type in ("application/json", "application/problem+json")
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_a_key_over_its_rate_gets_429_with_retry_after(
    gated: tuple[str, Gate, LedgerStore], database_url: str
) -> None:
    base, gate, _ = gated
    busy = await new_key(database_url, "busy", ["accounts:read"])
    calm = await new_key(database_url, "calm", ["accounts:read"])
    await asyncio.sleep(REFRESH_SECONDS * 1.5)
    statuses = [(await call(f"{base}/v1/accounts/a", busy))[0] for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:], statuses
    status, headers, body = await call(f"{base}/v1/accounts/a", busy)
    assert status == 429 and int(headers["Retry-After"]) >= 1 and "busy" in str(body["detail"])
    # Another key's budget is its own.
    assert (await call(f"{base}/v1/accounts/a", calm))[0] == 200
    # Tokens come back at the rate.
    await asyncio.sleep(1.0)
    assert (await call(f"{base}/v1/accounts/a", busy))[0] == 200


async def test_revocation_takes_effect_within_the_refresh(
    gated: tuple[str, Gate, LedgerStore], database_url: str
) -> None:
    base, _, store = gated
    key = await new_key(database_url, "soon-revoked", ["accounts:read"])
    await asyncio.sleep(REFRESH_SECONDS * 1.5)
    assert (await call(f"{base}/v1/accounts/a", key))[0] == 200
    assert await store.revoke_api_key("soon-revoked")
    revoked_at = time.monotonic()
    while (await call(f"{base}/v1/accounts/a", key))[0] != 401:
        await asyncio.sleep(0.05)
    assert time.monotonic() - revoked_at <= REFRESH_SECONDS + 1
    assert not await store.revoke_api_key("soon-revoked")  # once


async def test_a_failing_view_answers_a_500_problem(
    gated: tuple[str, Gate, LedgerStore], database_url: str
) -> None:
    base, _, _ = gated
    key = await new_key(database_url, "any", ["accounts:read"])
    await asyncio.sleep(REFRESH_SECONDS * 1.5)
    status, _, body = await call(f"{base}/v1/accounts/a/statement", key)
    assert status == 500 and body["type"] == "urn:payments:problem:internal-error"
    assert "a bug" not in str(body)  # the trace is logged, not shown


async def test_a_key_is_never_stored_and_names_are_never_reused(
    gated: tuple[str, Gate, LedgerStore], database_url: str
) -> None:
    _, _, store = gated
    key = await new_key(database_url, "once", ["payments:read"])
    secret = key.partition(".")[2]
    rows = await store.list_api_keys()
    assert [row.name for row in rows] == ["once"]
    connection = await asyncpg.connect(database_url)
    try:
        dumped = str(await connection.fetch("SELECT * FROM api_keys"))
    finally:
        await connection.close()
    assert secret not in dumped and key not in dumped
    await store.revoke_api_key("once")
    with pytest.raises(NameTaken):
        await new_key(database_url, "once", ["payments:read"])


async def test_keys_that_cannot_be_read_any_more_are_not_honoured(gated: tuple[str, Gate, LedgerStore],
                                                                 database_url: str) -> None:
    """PostgreSQL away: past STALE_SECONDS the gate answers 503 rather than honour a key that
    may have been revoked meanwhile (the contract gives a revocation 5 s)."""
    base, gate, _ = gated
    key = await new_key(database_url, "while-away", ["accounts:read"])
    await asyncio.sleep(REFRESH_SECONDS * 1.5)
    assert (await call(f"{base}/v1/accounts/a", key))[0] == 200

    async def unreachable() -> LedgerStore:
        raise ConnectionRefusedError("PostgreSQL is away")

    gate.store = unreachable
    deadline = time.monotonic() + STALE_SECONDS + 2 * REFRESH_SECONDS + 1
    while (status := (await call(f"{base}/v1/accounts/a", key))[0]) == 200:
        assert time.monotonic() < deadline, "keys read long ago were still honoured"
        await asyncio.sleep(0.6)  # within the key's rate (2/s)
    assert status == 503
