"""The HTTP surface on Faust's web server: metrics, health, payments and accounts.

State lives in the owners' table, on the worker holding the key's partition, so reads and
POST /v1/payments are answered there (`routing_http`): an account at its home, a payment
found through its directory entry (the partition its id hashes to) at its debtor's home,
a new payment at its debtor's home, where its record will appear.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import faust
import msgspec
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from agents.outlet import Outlet
from agents.routing_http import KeyedLocks, OwnerUnknown, forward, owner_of, unavailable
from infra.metrics import Metrics
from infra.producer import Outgoing
from infra.topics import PAYMENT_COMMANDS
from ledger.store import LedgerStore
from models.codec import dumps, field_errors, loads
from models.commands import RequestPayment
from models.intake import KeyUse, key_use, reuse_detail
from models.payment import Payment, payment_id_for
from tables.owners import Value, account_key, home_key, payment_key
from tables.state import StateTable

STATEMENT_PAGE_MAX = 500
# How long the first POST of a payment waits for its home to record it (its command goes
# through the intake first), so that a repeat sees the record.
RECORD_WAIT_SECONDS = 5.0
RECORD_POLL_SECONDS = 0.01
# The intake's record of a key, answered by the worker holding the key's partition.
KEY_USE_PATH = "/internal/idempotency-keys"
KEY_USE_TIMEOUT_SECONDS = 2.0
# A payment's record, answered by the worker holding its home.
RECORD_PATH = "/internal/payments"
KEY_USE = msgspec.json.Decoder(KeyUse)


def payment_view(record: Payment) -> dict[str, Any]:
    request = record.request
    return {
        "payment_id": record.payment_id,
        "idempotency_key": request.idempotency_key,
        "status": record.status,
        "reason": record.reason,
        "detail": record.detail,
        "amount": request.amount,
        "currency": request.currency,
        "refunded": record.refunded_total,
        "psp_reference": record.psp_reference,
        "history": [{"step": h.step, "at": h.at.isoformat(), "detail": h.detail} for h in record.history],
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


def known_payment_answer(record: Payment, fingerprint: str, status: int) -> tuple[int, dict[str, Any]]:
    """`status` when the record was made by this body, 409 when by another one."""
    if record.fingerprint != fingerprint:
        return 409, {"error": "idempotency key reused with a different body", "payment_id": record.payment_id}
    return status, {"payment_id": record.payment_id, "status": record.status}


class Web:
    def __init__(self, app: faust.App, owners: StateTable[Value], keys: StateTable[KeyUse], outlet: Outlet,
                 store: Callable[[], Awaitable[LedgerStore]], metrics: Metrics) -> None:
        self.app = app
        self.owners = owners
        self.keys = keys
        self.outlet = outlet
        self.store = store
        self.metrics = metrics
        self.in_flight = KeyedLocks()

    def record(self, payment_id: str) -> Payment | None:
        return self.owners.get(payment_key(payment_id))  # type: ignore[return-value]

    async def await_record(self, payment_id: str) -> Payment | None:
        """The payment's record once its home has written it, or None after
        RECORD_WAIT_SECONDS. Polled: the table has no change notification, and a look in
        its in-memory dict is cheap next to the command's trip through two topics."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORD_WAIT_SECONDS
        while (record := self.record(payment_id)) is None:
            if loop.time() >= deadline:
                return None
            await asyncio.sleep(RECORD_POLL_SECONDS)
        return record

    async def first_use(self, key: str) -> KeyUse | None:
        """What the key was first used for, from the intake's registry on whichever worker
        holds its partition. None when unknown, or when no answer comes now: the intake still
        refuses a reuse on the command topic, so this check only makes the answer quicker."""
        try:
            owner = owner_of(self.app, self.keys.name, key)
        except OwnerUnknown:
            return None
        if owner is None:
            return self.keys.get(key.encode())
        url = owner.with_path(f"{KEY_USE_PATH}/{quote(key, safe='')}")
        try:
            async with self.app.http_client.get(
                    url, timeout=aiohttp.ClientTimeout(total=KEY_USE_TIMEOUT_SECONDS)) as response:
                return KEY_USE.decode(await response.read()) if response.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def post_at_home(self, command: RequestPayment, payment_id: str) -> tuple[int, dict[str, Any]]:
        """On the worker holding the debtor's home, where the payment's record will be.

        POSTs of one payment go one at a time, and the first waits for the record it caused:
        a repeat right behind it then finds the record and gets 200 or 409, not a second 202."""
        fingerprint = command.fingerprint()
        async with self.in_flight.hold(payment_id):
            known = self.record(payment_id)
            if known is not None:
                return known_payment_answer(known, fingerprint, 200)
            first = await self.first_use(command.idempotency_key)
            if first is not None and first != key_use(command, fingerprint):  # e.g. the key names a refund
                return 409, {"error": reuse_detail(command.idempotency_key, first), "payment_id": payment_id}
            # Sent here, not through `confirm`: a send that fails answers this request with an
            # error; it is no reason to stop the worker.
            await self.outlet.send_messages(
                [Outgoing(PAYMENT_COMMANDS, command.idempotency_key.encode(), dumps(command))])
            record = await self.await_record(payment_id)
            if record is None:
                # Accepted all the same: the command is durably on the topic and will be
                # processed (slowly: a backlog, or the partition moved to another worker). A
                # repeat meanwhile publishes it again, which its home recognises.
                return 202, {"payment_id": payment_id, "status": "pending"}
            # Another body may have got there first, sent straight to the command topic.
            return known_payment_answer(record, fingerprint, 202)


def install(app: faust.App, web: Web) -> None:
    owners = web.owners.name

    @app.page("/metrics")
    async def metrics(view: Any, request: Request) -> Response:
        body = generate_latest(web.metrics.registry)
        return view.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(view: Any, request: Request) -> Response:
        status = 200 if ready(app) else 503
        return view.json({"ready": status == 200, "recovering": bool(app.in_recovery)}, status=status)

    @app.page(KEY_USE_PATH + "/{key}")
    @app.table_route(table=web.keys.table, match_info="key")
    async def key_use_view(view: Any, request: Request, key: str) -> Response:
        use = web.keys.get(key.encode())
        if use is None:
            return view.json({"error": f"idempotency key {key!r} not registered"}, status=404)
        return view.bytes(msgspec.json.encode(use), content_type="application/json")

    def record_answer(view: Any, payment_id: str) -> Response:
        record = web.record(payment_id)
        if record is None:
            return view.json({"error": f"payment {payment_id} not found"}, status=404)
        return view.json(payment_view(record))

    @app.page(RECORD_PATH + "/{payment_id}")
    async def record_view(view: Any, request: Request, payment_id: str) -> Response:
        return record_answer(view, payment_id)

    @app.page("/v1/payments/{payment_id}")
    async def get_payment(view: Any, request: Request, payment_id: str) -> Response:
        try:
            directory = owner_of(app, owners, payment_id)
            if directory is not None:
                return await forward(view, request, b"", directory)
            home = web.owners.get(home_key(payment_id))
            if home is None:
                return view.json({"error": f"payment {payment_id} not found"}, status=404)
            at_home = owner_of(app, owners, str(home))
        except OwnerUnknown as error:
            return unavailable(view, str(error))
        if at_home is None:
            return record_answer(view, payment_id)
        return await forward(view, request, b"", at_home, path=f"{RECORD_PATH}/{quote(payment_id, safe='')}")

    @app.page("/v1/accounts/{account_id}")
    async def get_account(view: Any, request: Request, account_id: str) -> Response:
        try:
            home = owner_of(app, owners, account_id)
        except OwnerUnknown as error:
            return unavailable(view, str(error))
        if home is not None:
            return await forward(view, request, b"", home)
        state = web.owners.get(account_key(account_id))
        if state is None:
            return view.json({"error": f"account {account_id} not found"}, status=404)
        return big_json(view, {"account_id": account_id, "currency": state.currency,  # type: ignore[union-attr]
                               "posted": state.posted, "pending": state.pending,  # type: ignore[union-attr]
                               "available": state.available})  # type: ignore[union-attr]

    @app.page("/v1/accounts/{account_id}/statement")
    async def statement(view: Any, request: Request, account_id: str) -> Response:
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return view.json({"error": "after and limit must be integers"}, status=422)
        if not 1 <= limit <= STATEMENT_PAGE_MAX:
            return view.json({"error": f"limit must be between 1 and {STATEMENT_PAGE_MAX}"}, status=422)
        entries = await (await web.store()).statement(account_id, after_posting_id=after, limit=limit)
        items = [{"posting_id": e.posting_id, "transaction_id": str(e.transaction_id),
                  "amount": e.amount, "currency": e.currency, "payment_id": e.payment_id,
                  "posted_at": e.posted_at.isoformat(), "balance_after": e.balance_after}
                 for e in entries]
        next_after = items[-1]["posting_id"] if len(items) == limit else None
        return big_json(view, {"account_id": account_id, "entries": items, "next_after": next_after})

    @app.page("/v1/payments")
    class Payments(View):
        async def post(self, request: Request) -> Response:
            raw = await request.read()
            command = read_payment_request(raw, request.headers.get("Idempotency-Key"))
            if not isinstance(command, RequestPayment):
                return self.json(command, status=422)
            payment_id = payment_id_for(command.idempotency_key)
            try:
                home = owner_of(app, owners, command.debtor_account_id)
            except OwnerUnknown as error:
                return unavailable(self, str(error))
            if home is not None:
                return await forward(self, request, raw, home)
            status, answer = await web.post_at_home(command, payment_id)
            return self.json(answer, status=status)
