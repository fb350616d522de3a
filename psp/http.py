"""A PSP reached over HTTP: the shape a real provider adapter takes behind the port."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from psp.port import PspApproved, PspDeclined, PspRequest, PspRetryableError, PspTimeout

# Worth asking again: the provider is overloaded (429, 5xx), timed out reading our
# request (408) or is still working on the same idempotency key (409, 425).
_STATUSES_RETRYABLE = frozenset({408, 409, 425, 429})
_STATUSES_SUCCESS = frozenset({200, 201})
_STATUS_PAYMENT_REQUIRED = 402  # the conventional "declined" answer
_STATUS_NOT_FOUND = 404


class HttpPsp:
    def __init__(self, base_url: str, *, request_timeout_seconds: float = 5.0) -> None:
        self._base_url = base_url.rstrip("/")
        # The caller times captures out itself; this bounds void and any forgotten caller.
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def capture(self, request: PspRequest) -> PspApproved | PspDeclined:
        body = {
            "payment_id": request.payment_id,
            "amount": request.amount,
            "currency": request.currency,
        }
        # The payment_id as key on every attempt: a retry of a capture that happened but
        # whose answer was lost gets the original answer instead of a second capture.
        status, answer = await self._post("/v1/captures", body, request.payment_id)
        return capture_outcome(status, answer)

    async def void(self, payment_id: str) -> None:
        path = f"/v1/captures/{quote(payment_id, safe='')}/void"
        status, _ = await self._post(path, None, f"void:{payment_id}")
        # 404: nothing was captured, so there is nothing to cancel.
        if status not in _STATUSES_SUCCESS and status != _STATUS_NOT_FOUND:
            raise PspRetryableError(f"void of {payment_id} answered HTTP {status}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: Any, idempotency_key: str) -> tuple[int, Any]:
        """(HTTP status, JSON answer or None); network trouble becomes retryable errors."""
        headers = {"Idempotency-Key": idempotency_key}
        try:
            async with self._client().post(
                self._base_url + path, json=body, headers=headers
            ) as response:
                return response.status, await _json_or_none(response)
        except TimeoutError as error:  # before ClientError: aiohttp's timeouts are both
            raise PspTimeout(f"no answer from {self._base_url} in time") from error
        except aiohttp.ClientError as error:
            raise PspRetryableError(f"{self._base_url} unreachable: {error!r}") from error

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session must be made inside the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session


async def _json_or_none(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except ValueError:  # an error page or an empty body: the status says enough
        return None


def capture_outcome(status: int, answer: Any) -> PspApproved | PspDeclined:
    """Map a capture answer to an outcome; raises PspRetryableError when it may be retried."""
    if status in _STATUSES_RETRYABLE or status >= 500:
        raise PspRetryableError(f"capture answered HTTP {status}")
    if status == _STATUS_PAYMENT_REQUIRED:
        return PspDeclined(_detail(answer, "declined by the provider (HTTP 402)"))
    if status not in _STATUSES_SUCCESS:
        # Any other 4xx: the provider refused the request itself, so it captured nothing.
        return PspDeclined(_detail(answer, f"refused by the provider (HTTP {status})"))
    return _success_outcome(answer)


def _success_outcome(answer: Any) -> PspApproved | PspDeclined:
    status = answer.get("status") if isinstance(answer, dict) else None
    reference = answer.get("reference") if isinstance(answer, dict) else None
    if status == "approved" and isinstance(reference, str) and reference:
        return PspApproved(reference)
    if status == "declined":
        return PspDeclined(_detail(answer, "declined by the provider"))
    # Unreadable, so it may have captured: retrying with the same key asks again safely,
    # and if it never reads well the payment gives up and voids.
    raise PspRetryableError(f"unreadable capture answer: {answer!r:.200}")


def _detail(answer: Any, default: str) -> str:
    detail = answer.get("detail") if isinstance(answer, dict) else None
    return detail if isinstance(detail, str) and detail else default
