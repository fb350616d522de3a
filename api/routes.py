"""The HTTP API's operations, declared once: the gate authorises by them (api/gate.py), the
views are registered by them (api/views.py) and the OpenAPI document is built from them
(api/openapi.py), so the three cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from models.api_keys import Scope
from models.commands import FundAccount, OpenAccount, RefundPayment, RequestPayment
from models.http import (
    AccountPending,
    AccountView,
    DeliveryList,
    FundingView,
    Health,
    PaymentAccepted,
    PaymentList,
    PaymentView,
    RefundView,
    StatementPage,
    WebhookEndpointBody,
    WebhookEndpointCreated,
    WebhookEndpointList,
)
from models.payment import PaymentStatus

IDENTIFIER: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[A-Za-z0-9._:@-]+$",
}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
PAGE_SIZE_MAX = 500
# Every operation under /v1 may answer these (api/gate.py); each route adds its own.
GATE_ERRORS = (401, 403, 429, 503)


@dataclass(frozen=True)
class Param:
    name: str
    where: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    description: str
    required: bool = False
    many: bool = False  # a query parameter given once per value (?status=a&status=b)


@dataclass(frozen=True)
class Body:
    """A request body: the command, less the fields the request gives elsewhere."""

    name: str
    model: type[BaseModel]  # a command (models/commands.py), or a body of the HTTP API's own
    given_elsewhere: tuple[str, ...] = ()


@dataclass(frozen=True)
class Link:
    """An operation a success answer leads to: its `parameter` is the answer's `field`."""

    operation: str
    parameter: str
    field: str


@dataclass(frozen=True)
class Route:
    operation: str
    method: str
    path: str
    summary: str
    scope: Scope | None
    answers: Mapping[int, type[BaseModel] | None]  # None: no content
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    body: Body | None = None
    media_type: str = "application/json"
    links: tuple[Link, ...] = ()

    @property
    def open(self) -> bool:
        return self.scope is None


def path_id(name: str, what: str) -> Param:
    return Param(name, "path", IDENTIFIER, what, required=True)


IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    "header",
    IDENTIFIER,
    "the command's idempotency key: the same key always names the same operation",
    required=True,
)
PAYMENT_ID = path_id("payment_id", "the payment's id (derived from its idempotency key)")
ACCOUNT_ID = path_id("account_id", "the account's id")
ENDPOINT_ID = path_id("endpoint_id", "the webhook endpoint's id")
LIMIT = Param(
    "limit",
    "query",
    {"type": "integer", "minimum": 1, "maximum": PAGE_SIZE_MAX, "default": 100},
    "items per page",
)
SINCE = Param("since", "query", TIME, "only what happened at or after this time (RFC 3339)")
UNTIL = Param("until", "query", TIME, "only what happened before this time (RFC 3339)")
STATUSES: tuple[PaymentStatus, ...] = ("pending", "captured", "failed", "refunded", "partially_refunded")

ROUTES: tuple[Route, ...] = (
    Route(
        "createPayment",
        "POST",
        "/v1/payments",
        "Request a payment",
        "payments:write",
        {202: PaymentAccepted, 200: PaymentAccepted},
        (409, 422),
        (IDEMPOTENCY_KEY,),
        Body("PaymentBody", RequestPayment, ("type", "idempotency_key")),
        links=(
            Link("getPayment", "payment_id", "payment_id"),
            Link("createRefund", "payment_id", "payment_id"),
        ),
    ),
    Route(
        "getPayment",
        "GET",
        "/v1/payments/{payment_id}",
        "A payment: parties, status, history, refunds",
        "payments:read",
        {200: PaymentView},
        (404,),
        (PAYMENT_ID,),
    ),
    Route(
        "createRefund",
        "POST",
        "/v1/payments/{payment_id}/refunds",
        "Refund a captured payment",
        "refunds:write",
        {202: RefundView, 200: RefundView},
        (404, 409, 422),
        (PAYMENT_ID, IDEMPOTENCY_KEY),
        Body("RefundBody", RefundPayment, ("type", "idempotency_key", "payment_id")),
    ),
    Route(
        "openAccount",
        "POST",
        "/v1/accounts",
        "Open an account",
        "accounts:write",
        {201: AccountView, 200: AccountView, 202: AccountPending},
        (409, 422),
        (),
        Body("OpenAccountBody", OpenAccount, ("type",)),
        links=tuple(
            Link(operation, "account_id", "account_id")
            for operation in ("getAccount", "fundAccount", "getStatement", "listPayments")
        ),
    ),
    Route(
        "getAccount",
        "GET",
        "/v1/accounts/{account_id}",
        "An account's balances",
        "accounts:read",
        {200: AccountView},
        (404,),
        (ACCOUNT_ID,),
    ),
    Route(
        "fundAccount",
        "POST",
        "/v1/accounts/{account_id}/fundings",
        "Fund an account: money arriving from outside",
        "accounts:write",
        {201: FundingView, 200: FundingView, 202: FundingView},
        (404, 409, 422),
        (ACCOUNT_ID, IDEMPOTENCY_KEY),
        Body("FundingBody", FundAccount, ("type", "idempotency_key", "account_id")),
    ),
    Route(
        "getStatement",
        "GET",
        "/v1/accounts/{account_id}/statement",
        "An account's ledger entries with the balance after each, oldest first",
        "accounts:read",
        {200: StatementPage},
        (404, 422),
        (
            ACCOUNT_ID,
            Param(
                "after",
                "query",
                {"type": "integer", "minimum": 0, "default": 0},
                "the last posting_id of the previous page (its next_after)",
            ),
            LIMIT,
            SINCE,
            UNTIL,
        ),
    ),
    Route(
        "listPayments",
        "GET",
        "/v1/accounts/{account_id}/payments",
        "The payments an account paid or received, newest first",
        "payments:read",
        {200: PaymentList},
        (404, 422),
        (
            ACCOUNT_ID,
            Param(
                "status",
                "query",
                {"type": "string", "enum": list(STATUSES)},
                "only payments in these statuses (repeatable)",
                many=True,
            ),
            SINCE,
            UNTIL,
            Param(
                "cursor",
                "query",
                {"type": "string", "minLength": 1, "maxLength": 300},
                "the next_cursor of the previous page",
            ),
            LIMIT,
        ),
    ),
    Route(
        "createWebhookEndpoint",
        "POST",
        "/v1/webhook_endpoints",
        "Register a webhook endpoint; its secret is in this answer only",
        "webhooks:write",
        {201: WebhookEndpointCreated},
        (422,),
        (),
        Body("WebhookEndpointBody", WebhookEndpointBody),
        links=tuple(
            Link(operation, "endpoint_id", "endpoint_id")
            for operation in ("deleteWebhookEndpoint", "listWebhookDeliveries")
        ),
    ),
    Route(
        "listWebhookEndpoints",
        "GET",
        "/v1/webhook_endpoints",
        "The webhook endpoints (never their secrets)",
        "webhooks:write",
        {200: WebhookEndpointList},
    ),
    Route(
        "deleteWebhookEndpoint",
        "DELETE",
        "/v1/webhook_endpoints/{endpoint_id}",
        "Stop sending to a webhook endpoint",
        "webhooks:write",
        {204: None},
        (404,),
        (ENDPOINT_ID,),
    ),
    Route(
        "listWebhookDeliveries",
        "GET",
        "/v1/webhook_endpoints/{endpoint_id}/deliveries",
        "An endpoint's latest deliveries, newest first, each with its attempts",
        "webhooks:write",
        {200: DeliveryList},
        (404, 422),
        (
            ENDPOINT_ID,
            Param(
                "failed",
                "query",
                {"type": "boolean", "default": False},
                "only the deliveries whose schedule is spent",
            ),
            LIMIT,
        ),
    ),
    Route(
        "health",
        "GET",
        "/healthz",
        "200 when the worker is up and its partitions are assigned",
        None,
        {200: Health},
        (503,),
    ),
    Route(
        "metrics",
        "GET",
        "/metrics",
        "Prometheus metrics (text format)",
        None,
        {},
        (),
        media_type="text/plain",
    ),
    Route("openapi", "GET", "/openapi.json", "This document", None, {}, ()),
)

BY_OPERATION: dict[str, Route] = {route.operation: route for route in ROUTES}
_BY_PLACE: dict[tuple[str, str], Route] = {(route.method, route.path): route for route in ROUTES}
# The methods each path answers: another one gets 405.
METHODS: dict[str, tuple[str, ...]] = {}
for _route in ROUTES:
    METHODS[_route.path] = (*METHODS.get(_route.path, ()), _route.method)


def find(method: str, path_template: str) -> Route | None:
    """The operation of a request, by its method and the template its path matched."""
    return _BY_PLACE.get((method.upper(), path_template))
