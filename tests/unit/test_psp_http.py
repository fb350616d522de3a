"""HttpPsp against a real local fake provider that records requests and honors idempotency keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import pytest
from aiohttp import web

from psp import (
    HttpPsp,
    PspApproved,
    PspDeclined,
    PspGaveUp,
    PspRequest,
    PspRetryableError,
    PspTimeout,
    RetryPolicy,
    capture_with_retries,
)


@dataclass(frozen=True)
class Recorded:
    path: str
    idempotency_key: str | None
    body: Any


@dataclass
class FakeProvider:
    """Captures once per idempotency key, like a real PSP, then answers as scripted.

    A scripted answer is given after the capture is recorded: the worst case for a
    client, whose capture happened although it saw an error.
    """

    requests: list[Recorded] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)  # idempotency key -> reference
    scripted: dict[str, list[web.Response]] = field(default_factory=dict)  # by payment_id
    voided: list[str] = field(default_factory=list)
    delay_seconds: float = 0.0

    async def capture(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        self.requests.append(Recorded(request.path, key, body))
        await asyncio.sleep(self.delay_seconds)
        reference = self.references.setdefault(str(key), f"ref_{uuid4().hex}")
        answers = self.scripted.get(body["payment_id"])
        if answers:
            return answers.pop(0)
        return web.json_response({"status": "approved", "reference": reference}, status=201)

    async def void(self, request: web.Request) -> web.Response:
        payment_id = request.match_info["payment_id"]
        self.requests.append(Recorded(request.path, request.headers.get("Idempotency-Key"), None))
        if payment_id not in self.references:
            return web.json_response({"detail": "no such capture"}, status=404)
        self.voided.append(payment_id)
        return web.json_response({"status": "voided"})


@pytest.fixture
async def provider() -> AsyncIterator[tuple[FakeProvider, str]]:
    fake = FakeProvider()
    app = web.Application()
    app.router.add_post("/v1/captures", fake.capture)
    app.router.add_post("/v1/captures/{payment_id}/void", fake.void)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()  # port 0: the OS picks a free one
    host, port = runner.addresses[0][:2]
    yield fake, f"http://{host}:{port}/"
    await runner.cleanup()


@pytest.fixture
async def psp(provider: tuple[FakeProvider, str]) -> AsyncIterator[HttpPsp]:
    adapter = HttpPsp(provider[1])
    yield adapter
    await adapter.close()


def request(payment_id: str = "pay-1") -> PspRequest:
    return PspRequest(payment_id=payment_id, amount=1250, currency="EUR", simulation=None)


def no_sleep_policy() -> RetryPolicy:
    return RetryPolicy(backoff_initial_seconds=0.001, backoff_max_seconds=0.001)


async def test_capture_posts_the_payment_with_its_id_as_idempotency_key(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    fake, _ = provider
    outcome = await psp.capture(request())
    assert outcome == PspApproved(fake.references["pay-1"])
    assert fake.requests == [
        Recorded(
            "/v1/captures", "pay-1", {"payment_id": "pay-1", "amount": 1250, "currency": "EUR"}
        )
    ]


async def test_retried_capture_reuses_the_key_and_the_provider_captures_once(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    fake, _ = provider
    fake.scripted["pay-1"] = [web.Response(status=503), web.Response(status=502)]
    retries: list[str] = []
    outcome = await capture_with_retries(psp, request(), no_sleep_policy(), on_retry=retries.append)
    assert retries == ["error", "error"]
    assert [recorded.idempotency_key for recorded in fake.requests] == ["pay-1"] * 3
    # One capture at the provider, and the client got that capture's reference.
    assert list(fake.references) == ["pay-1"]
    assert outcome == PspApproved(fake.references["pay-1"])


async def test_a_repeated_capture_gets_the_original_reference(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    first = await psp.capture(request())
    again = await psp.capture(request())
    other = await psp.capture(request("pay-2"))
    assert first == again and other != first


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (web.json_response({"detail": "card declined"}, status=402), "card declined"),
        (web.Response(status=402), "declined by the provider (HTTP 402)"),
        (web.json_response({"status": "declined", "detail": "issuer says no"}), "issuer says no"),
        (
            web.json_response({"detail": "currency not supported"}, status=400),
            "currency not supported",
        ),
    ],
)
async def test_declines_map_to_a_final_outcome(
    provider: tuple[FakeProvider, str], psp: HttpPsp, answer: web.Response, detail: str
) -> None:
    fake, _ = provider
    fake.scripted["pay-1"] = [answer]
    assert await psp.capture(request()) == PspDeclined(detail)


@pytest.mark.parametrize(
    "answer",
    [
        web.Response(status=503, text="<html>unavailable</html>"),
        web.Response(status=500),
        web.json_response({"detail": "slow down"}, status=429),
        web.json_response({"status": "approved"}),  # no reference: cannot tell what happened
        web.Response(status=200, text="not json"),
    ],
)
async def test_transient_answers_raise_retryable(
    provider: tuple[FakeProvider, str], psp: HttpPsp, answer: web.Response
) -> None:
    fake, _ = provider
    fake.scripted["pay-1"] = [answer]
    with pytest.raises(PspRetryableError):
        await psp.capture(request())
    assert await psp.capture(request()) == PspApproved(fake.references["pay-1"])


async def test_refused_connection_is_retryable() -> None:
    closed = HttpPsp("http://127.0.0.1:1")  # port 1: nothing listens there
    try:
        with pytest.raises(PspRetryableError) as raised:
            await closed.capture(request())
        assert not isinstance(raised.value, PspTimeout)
    finally:
        await closed.close()


async def test_a_slow_provider_raises_psp_timeout(provider: tuple[FakeProvider, str]) -> None:
    fake, url = provider
    fake.delay_seconds = 0.5
    slow = HttpPsp(url, request_timeout_seconds=0.05)
    try:
        with pytest.raises(PspTimeout):
            await slow.capture(request())
    finally:
        await slow.close()


async def test_void_posts_to_the_capture_with_its_own_key(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    fake, _ = provider
    await psp.capture(request())
    await psp.void("pay-1")
    assert fake.requests[-1] == Recorded("/v1/captures/pay-1/void", "void:pay-1", None)
    assert fake.voided == ["pay-1"]


async def test_void_of_nothing_captured_is_not_an_error(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    fake, _ = provider
    await psp.void("never-captured")
    assert fake.requests[-1].path == "/v1/captures/never-captured/void"
    assert fake.voided == []


async def test_giving_up_sends_no_void_itself(provider: tuple[FakeProvider, str], psp: HttpPsp) -> None:
    # Another call for the payment may have been approved: the PSP step voids once the
    # give-up is the payment's recorded outcome (test_psp_step).
    fake, _ = provider
    fake.scripted["pay-1"] = [web.Response(status=503) for _ in range(3)]
    policy = RetryPolicy(attempts_max=3, backoff_initial_seconds=0.001, backoff_max_seconds=0.001)
    outcome = await capture_with_retries(psp, request(), policy)
    assert isinstance(outcome, PspGaveUp) and outcome.attempts == 3
    assert [r.path for r in fake.requests] == ["/v1/captures"] * 3 and fake.voided == []


async def test_close_releases_the_session_and_a_later_call_opens_a_new_one(
    provider: tuple[FakeProvider, str], psp: HttpPsp
) -> None:
    await psp.capture(request())
    await psp.close()
    await psp.close()  # idempotent
    assert isinstance(await psp.capture(request("pay-2")), PspApproved)
