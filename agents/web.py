"""The HTTP surface on Faust's web server: metrics, health, payments and accounts.

Reads of table state are routed to the worker that owns the key (`table_route`); so is
POST /v1/payments (`routing_http`), whose answer depends on the payments table, and on
the intake's key registry (a key first used by a refund is refused with 409 at once).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from agents.routing_http import KeyedLocks, OwnerUnknown, forward, owner_of, unavailable
from agents.runtime import Runtime
from infra.topics import PAYMENT_COMMANDS
from models.codec import dumps, field_errors, loads
from models.commands import RequestPayment
from models.intake import KeyUse, is_reuse, reuse_detail
from models.payment import PaymentRecord, payment_id_for

STATEMENT_PAGE_MAX = 500
# How long the first POST of a payment waits for the payments agent to record it (its
# command goes through the intake agent first), so that a repeat sees the record.
RECORD_WAIT_SECONDS = 5.0
RECORD_POLL_SECONDS = 0.01
# The intake's record of a key, answered by the worker holding the key's partition.
KEY_USE_PATH = "/internal/idempotency-keys"
KEY_USE_TIMEOUT_SECONDS = 2.0


def payment_view(record: PaymentRecord) -> dict[str, Any]:
    return {
        "payment_id": record.payment_id,
        "idempotency_key": record.request.idempotency_key,
        "status": record.status,
        "reason": record.reason.value if record.reason else None,
        "detail": record.detail,
        "amount": record.request.amount,
        "currency": record.request.currency,
        "refunded": record.refunded_total,
        "psp_reference": record.psp_reference,
        "history": [{"step": h.step, "at": h.at.isoformat(), "detail": h.detail}
                    for h in record.history],
    }


def big_json(web: Any, body: dict[str, Any], status: int = 200) -> Response:
    """Ledger sums are unbounded (a settlement account can pass 2^64): the standard
    encoder writes any integer, where Faust's 64-bit one would fail with a 500."""
    return web.bytes(json.dumps(body).encode(), content_type="application/json", status=status)


def ready(app: faust.App) -> bool:
    return bool(app.consumer.assignment()) and not app.rebalancing and not app.in_recovery


def read_payment_request(raw: bytes, key: str | None) -> RequestPayment | dict[str, Any]:
    """The command, or the 422 answer saying what is wrong with the body."""
    try:
        body = loads(raw)
    except ValueError as error:
        return {"error": f"body is not JSON: {error}"}
    if not isinstance(body, dict):
        return {"error": "body must be a JSON object"}
    try:
        return RequestPayment.model_validate({**body, "idempotency_key": key})
    except ValidationError as error:
        return {"errors": [{"field": e.field, "message": e.message} for e in field_errors(error)]}


def known_payment_answer(record: PaymentRecord, command: RequestPayment, status: int
                         ) -> tuple[int, dict[str, Any]]:
    """`status` when the record was made by this body, 409 when by another one."""
    if record.fingerprint != command.fingerprint():
        return 409, {"error": "idempotency key reused with a different body", "payment_id": record.payment_id}
    return status, {"payment_id": record.payment_id, "status": record.status}


async def await_record(runtime: Runtime, payment_id: str) -> PaymentRecord | None:
    """The payment's record once the payments agent has written it, or None after
    RECORD_WAIT_SECONDS. Polled: the table has no change notification, and a look in
    its in-memory dict is cheap next to the command's trip through two topics."""
    deadline = asyncio.get_running_loop().time() + RECORD_WAIT_SECONDS
    while (record := runtime.payments.get(payment_id)) is None:
        if asyncio.get_running_loop().time() >= deadline:
            return None
        await asyncio.sleep(RECORD_POLL_SECONDS)
    return record


async def first_use(app: faust.App, runtime: Runtime, key: str) -> KeyUse | None:
    """What the key was first used for, from the intake's registry on whichever worker
    holds its partition. None when unknown, or when no answer comes now: the intake still
    refuses a reuse on the command topic, so this check only makes the answer quicker."""
    try:
        owner = owner_of(app, runtime.idempotency_keys.table, key)
    except OwnerUnknown:
        return None
    if owner is None:
        return runtime.idempotency_keys.get(key)
    url = owner.with_path(f"{KEY_USE_PATH}/{quote(key, safe='')}")
    try:
        async with app.http_client.get(
                url, timeout=aiohttp.ClientTimeout(total=KEY_USE_TIMEOUT_SECONDS)) as response:
            return KeyUse.model_validate_json(await response.read()) if response.status == 200 else None
    except (TimeoutError, aiohttp.ClientError, ValidationError):
        return None


async def decide_on_owner(app: faust.App, runtime: Runtime, in_flight: KeyedLocks,
                          command: RequestPayment, payment_id: str) -> tuple[int, dict[str, Any]]:
    """On the worker owning the payment's partition, so its table is the one that counts.

    POSTs of one payment go one at a time, and the first waits for the record it caused:
    a repeat right behind it then finds the record and gets 200 or 409, not a second 202."""
    async with in_flight.hold(payment_id):
        known = runtime.payments.get(payment_id)
        if known is not None:
            return known_payment_answer(known, command, 200)
        first = await first_use(app, runtime, command.idempotency_key)
        if first is not None and is_reuse(first, command):  # e.g. the key names a refund
            return 409, {"error": reuse_detail(command.idempotency_key, first), "payment_id": payment_id}
        # Awaited here, not through `confirm`: a send that fails answers this request with an
        # error; it is no reason to stop the worker.
        await (await runtime.outlet.produce(PAYMENT_COMMANDS, command.idempotency_key.encode(),
                                            dumps(command)))
        record = await await_record(runtime, payment_id)
        if record is None:
            # Accepted all the same: the command is durably on the topic and will be
            # processed (slowly: a backlog, or the partition moved to another worker). A
            # repeat meanwhile publishes it again, which the payments agent recognises.
            return 202, {"payment_id": payment_id, "status": "pending"}
        # Another body may have got there first, sent straight to the command topic.
        return known_payment_answer(record, command, 202)


def install(app: faust.App, runtime: Runtime) -> None:
    payments_table = runtime.payments.table
    accounts_table = runtime.accounts.table
    in_flight = KeyedLocks()

    @app.page("/metrics")
    async def metrics(web: Any, request: Request) -> Response:
        body = generate_latest(runtime.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Request) -> Response:
        status = 200 if ready(app) else 503
        return web.json({"ready": status == 200, "recovering": bool(app.in_recovery)}, status=status)

    @app.page(KEY_USE_PATH + "/{key}")
    @app.table_route(table=runtime.idempotency_keys.table, match_info="key")
    async def key_use(web: Any, request: Request, key: str) -> Response:
        use = runtime.idempotency_keys.get(key)
        if use is None:
            return web.json({"error": f"idempotency key {key!r} not registered"}, status=404)
        return web.json(use.model_dump(mode="json"))

    @app.page("/v1/payments/{payment_id}")
    @app.table_route(table=payments_table, match_info="payment_id")
    async def get_payment(web: Any, request: Request, payment_id: str) -> Response:
        record = runtime.payments.get(payment_id)
        if record is None:
            return web.json({"error": f"payment {payment_id} not found"}, status=404)
        return web.json(payment_view(record))

    @app.page("/v1/accounts/{account_id}")
    @app.table_route(table=accounts_table, match_info="account_id")
    async def get_account(web: Any, request: Request, account_id: str) -> Response:
        state = runtime.accounts.get(account_id)
        if state is None:
            return web.json({"error": f"account {account_id} not found"}, status=404)
        return big_json(web, {"account_id": account_id, "currency": state.currency, "posted": state.posted,
                              "pending": state.pending, "available": state.available})

    @app.page("/v1/accounts/{account_id}/statement")
    async def statement(web: Any, request: Request, account_id: str) -> Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return web.json({"error": "after and limit must be integers"}, status=422)
        if not 1 <= limit <= STATEMENT_PAGE_MAX:
            return web.json({"error": f"limit must be between 1 and {STATEMENT_PAGE_MAX}"}, status=422)
        store = await runtime.store()
        entries = await store.statement(account_id, after_posting_id=after, limit=limit)
        items = [{"posting_id": e.posting_id, "transaction_id": str(e.transaction_id),
                  "amount": e.amount, "currency": e.currency, "payment_id": e.payment_id,
                  "posted_at": e.posted_at.isoformat(), "balance_after": e.balance_after}
                 for e in entries]
        next_after = items[-1]["posting_id"] if len(items) == limit else None
        return big_json(web, {"account_id": account_id, "entries": items, "next_after": next_after})

    @app.page("/v1/payments")
    class Payments(View):
        async def post(self, request: Request) -> Response:
            raw = await request.read()
            command = read_payment_request(raw, request.headers.get("Idempotency-Key"))
            if not isinstance(command, RequestPayment):
                return self.json(command, status=422)
            payment_id = payment_id_for(command.idempotency_key)
            try:
                owner = owner_of(app, payments_table, payment_id)
            except OwnerUnknown as error:
                return unavailable(self, str(error))
            if owner is not None:
                return await forward(self, request, raw, owner)
            status, answer = await decide_on_owner(app, runtime, in_flight, command, payment_id)
            return self.json(answer, status=status)
