"""Every 4xx and 5xx of the HTTP API in one shape: RFC 9457 `application/problem+json`."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from models.events import FieldError
from models.http import problem_body

CONTENT_TYPE = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid request",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}
SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}


# What an answer says besides its body that a client must still see once it is a problem,
# or once a worker passes another's answer back.
KEPT_HEADERS = ("Retry-After", "Allow", "WWW-Authenticate")


def problem(
    status: int,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> web.Response:
    body = problem_body(
        status,
        TITLES.get(status, "Error"),
        detail,
        slug=SLUGS.get(status, "error"),
        errors=errors,
        **extensions,
    )
    return web.Response(
        body=json.dumps(body).encode(), status=status, content_type=CONTENT_TYPE, headers=headers
    )


def invalid(errors: list[FieldError]) -> web.Response:
    fields = ", ".join(sorted({error.field for error in errors}))
    return problem(422, f"the request is invalid: {fields}", errors=errors)


def is_problem(response: web.StreamResponse) -> bool:
    return response.content_type == CONTENT_TYPE


def as_problem(response: web.StreamResponse) -> web.StreamResponse:
    """An error answered in another shape (Faust's or aiohttp's own), in this one."""
    if response.status < 400 or is_problem(response):
        return response
    detail = TITLES.get(response.status, "error")
    body = getattr(response, "body", None)
    if isinstance(body, bytes | bytearray):
        try:
            decoded = json.loads(body)
            detail = str(decoded.get("error") or decoded.get("detail") or detail)
        except (ValueError, AttributeError):
            detail = body.decode(errors="replace").strip() or detail
    passed = {
        name: response.headers[name]
        for name in KEPT_HEADERS
        if name in response.headers
    }
    return problem(response.status, detail, headers=passed)
