"""The HTTP surface on Faust's web server: metrics, health, payments and accounts.

Reads of table state are routed to the worker that owns the key (`table_route`).
"""

from __future__ import annotations

import json
from typing import Any

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from agents.runtime import Runtime
from infra.topics import PAYMENT_COMMANDS
from models.codec import dumps, field_errors, loads
from models.commands import RequestPayment
from models.payment import PaymentRecord, payment_id_for

STATEMENT_PAGE_MAX = 500


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


def install(app: faust.App, runtime: Runtime) -> None:
    payments_table = runtime.payments.table
    accounts_table = runtime.accounts.table

    @app.page("/metrics")
    async def metrics(web: Any, request: Request) -> Response:
        body = generate_latest(runtime.metrics.registry)
        return web.bytes(body, content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Request) -> Response:
        status = 200 if ready(app) else 503
        return web.json({"ready": status == 200, "recovering": bool(app.in_recovery)}, status=status)

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
            key = request.headers.get("Idempotency-Key")
            try:
                body = loads(await request.read())
            except ValueError as error:
                return self.json({"error": f"body is not JSON: {error}"}, status=422)
            if not isinstance(body, dict):
                return self.json({"error": "body must be a JSON object"}, status=422)
            try:
                command = RequestPayment.model_validate({**body, "idempotency_key": key})
            except ValidationError as error:
                errors = [{"field": e.field, "message": e.message} for e in field_errors(error)]
                return self.json({"errors": errors}, status=422)
            payment_id = payment_id_for(command.idempotency_key)
            known = runtime.payments.get(payment_id)
            if known is not None:
                if known.fingerprint != command.fingerprint():
                    return self.json({"error": "idempotency key reused with a different body",
                                      "payment_id": payment_id}, status=409)
                return self.json({"payment_id": payment_id, "status": known.status}, status=200)
            topic = runtime.outlet.topic(PAYMENT_COMMANDS)
            await (await topic.send(key=command.idempotency_key.encode(), value=dumps(command)))
            return self.json({"payment_id": payment_id, "status": "pending"}, status=202)
