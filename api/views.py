"""The HTTP API on Faust's web server: each operation of api/routes.py, answered where its
state lives.

State lives in the owners' table, on the worker holding the key's partition
(`routing`): an account at its home; a payment at its debtor's home, found through its
directory entry (the partition its id hashes to); a new payment at its debtor's home,
where its record will appear. A request arriving elsewhere is forwarded once to the
worker that can answer it. The gate (api/gate.py) has authenticated the caller; a view
checks that the key covers the accounts the request involves before it reads or sends.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import aiohttp
import faust
import msgspec
from aiohttp.web import Request, Response
from faust.web import View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from yarl import URL

from agents import notify
from agents.monitor import steps_held
from api import openapi, routes
from api.gate import API_KEY, Gate, audit
from api.problems import invalid, problem
from api.routing import KeyedLocks, OwnerUnknown, forward, owner_of, unavailable
from infra.metrics import Metrics
from infra.producer import Outgoing
from infra.topics import ACCOUNT_COMMANDS, PAYMENT_COMMANDS
from ledger.reads import StatementEntry
from ledger.store import LedgerStore
from ledger.webhooks import EndpointRow
from models.account import Account
from models.api_keys import ApiKey, outside_accounts
from models.codec import dumps, field_errors, loads
from models.commands import Command, FundAccount, OpenAccount, RefundPayment, RequestPayment
from models.events import FieldError
from models.http import (
    AccountPending,
    AccountView,
    AttemptView,
    DeliveryList,
    DeliveryView,
    FundingView,
    Health,
    HistoryItem,
    PaymentAccepted,
    PaymentList,
    PaymentSummaryView,
    PaymentView,
    RefundView,
    StatementEntryView,
    StatementPage,
    WebhookEndpointBody,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointView,
)
from models.intake import KeyUse, key_use, reuse_detail
from models.ledger import EntryKind, transaction_id_for
from models.payment import Payment, RefundRecord, has_event, payment_id_for, refund_id_for
from tables.owners import Value, account_key, home_key, payment_key
from tables.state import StateTable

CommandT = TypeVar("CommandT", bound=Command)
ModelT = TypeVar("ModelT", bound=BaseModel)

# How long the first POST of a command waits for its effect to be recorded (its command
# goes through the intake first), so that a repeat sees it: past this, 202.
RECORD_WAIT_SECONDS = 5.0
RECORD_POLL_SECONDS = 0.01
LEDGER_POLL_SECONDS = 0.05
INTERNAL_TIMEOUT_SECONDS = 2.0
# What workers ask each other (the gate lets only workers in).
KEY_USE_PATH = "/internal/idempotency-keys"
RECORD_PATH = "/internal/payments"
KEY_USE = msgspec.json.Decoder(KeyUse)
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)
PAYMENT = msgspec.json.Decoder(Payment)


def json_answer(body: BaseModel | dict[str, Any], status: int = 200) -> Response:
    """Ledger sums are unbounded (a settlement account can pass 2^64): the standard
    encoder writes any integer, where Faust's 64-bit one would fail."""
    value = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
    return Response(body=json.dumps(value).encode(), status=status, content_type="application/json")


def ready(app: faust.App) -> bool:
    return bool(app.consumer.assignment()) and not app.rebalancing and not app.in_recovery


# --- reading requests -----------------------------------------------------------------------------


def read_command(model: type[CommandT], raw: bytes, given: dict[str, Any]) -> CommandT | Response:
    """The command of a request body with the fields the path and headers give, or the
    422 that says what is wrong with it. The operation names the command: a `type` in the
    body is not the caller's to choose."""
    return read_body(model, raw, {**given, "type": model.model_fields["type"].default})


def query_errors(request: Request, parse: Callable[[dict[str, Any]], Any]) -> Any:
    try:
        return parse(dict(request.query))
    except ValueError as error:
        name, _, message = str(error).partition(": ")
        return invalid([FieldError(field=name, message=message)])


def integer(query: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: must be between {low} and {high}")
    return value


def moment(query: dict[str, Any], name: str) -> datetime | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not an RFC 3339 time") from None
    if value.tzinfo is None:
        raise ValueError(f"{name}: {raw!r} has no time zone offset")
    if not in_range(value):
        raise ValueError(f"{name}: {raw!r} is outside the years 1970 to 9000")
    return value


def in_range(value: datetime) -> bool:
    """PostgreSQL converts to UTC: a time at the edge of datetime's range would overflow."""
    return EARLIEST <= value <= LATEST


def refused(key: ApiKey, *account_ids: str, what: str | None = None) -> Response | None:
    """403 when the key covers none of the accounts; `what` names the thing refused instead
    of the accounts (a payment's parties are not the caller's to learn)."""
    reason = outside_accounts(key, *account_ids)
    if reason is None:
        return None
    return problem(403, reason if what is None else f"the API key {key.name!r} is not allowed for {what}")


# --- answers --------------------------------------------------------------------------------------


def refund_view(payment_id: str, key: str, refund: RefundRecord) -> RefundView:
    reason = detail = None
    if refund.status == "failed" and has_event(refund.outcome):
        failed = json.loads(bytes(refund.outcome))
        reason, detail = failed.get("reason"), failed.get("detail")
    return RefundView(
        refund_id=refund.refund_id,
        payment_id=payment_id,
        idempotency_key=key,
        amount=refund.amount,
        status=refund.status,
        reason=reason,
        detail=detail,
    )


def payment_view(record: Payment) -> PaymentView:
    request = record.request
    return PaymentView(
        payment_id=record.payment_id,
        idempotency_key=request.idempotency_key,
        status=record.status,
        reason=record.reason,
        detail=record.detail,
        debtor_account_id=request.debtor_account_id,
        creditor_account_id=request.creditor_account_id,
        amount=request.amount,
        currency=request.currency,
        description=request.description,
        metadata=dict(request.metadata),
        refunded=record.refunded_total,
        psp_reference=record.psp_reference,
        refunds=[refund_view(record.payment_id, key, refund) for key, refund in record.refunds.items()],
        history=[HistoryItem(step=h.step, at=h.at, detail=h.detail) for h in record.history],
    )


def account_view(account: Account) -> AccountView:
    return AccountView(
        account_id=account.account_id,
        currency=account.currency,
        posted=account.posted,
        pending=account.pending,
        available=account.available,
    )


def statement_entry(entry: StatementEntry) -> StatementEntryView:
    return StatementEntryView(
        posting_id=entry.posting_id,
        transaction_id=str(entry.transaction_id),
        amount=entry.amount,
        currency=entry.currency,
        payment_id=entry.payment_id,
        posted_at=entry.posted_at,
        balance_after=entry.balance_after,
    )


def conflict(detail: str, **about: str) -> Response:
    return problem(409, detail, **about)


def known_payment_answer(record: Payment, fingerprint: str, status: int) -> Response:
    """`status` when the record was made by this body, 409 when by another one."""
    if record.fingerprint != fingerprint:
        return conflict("idempotency key reused with a different body", payment_id=record.payment_id)
    return json_answer(PaymentAccepted(payment_id=record.payment_id, status=record.status), status)


class OpenPages:
    """What every worker answers without a key, a read side worker included."""

    def __init__(self, app: faust.App, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def health(self, request: Request) -> Response:
        status = 200 if ready(self.app) else 503
        body = Health(ready=status == 200, recovering=bool(self.app.in_recovery))
        if status == 200:
            return json_answer(body)
        return problem(
            503,
            "the worker is not ready: its partitions are being assigned or recovered",
            **body.model_dump(),
        )

    async def metrics_page(self, request: Request) -> Response:
        return Response(
            body=generate_latest(self.metrics.registry), content_type=CONTENT_TYPE_LATEST.split(";")[0]
        )


class Api:
    def __init__(
        self,
        app: faust.App,
        owners: StateTable[Value],
        keys: StateTable[KeyUse],
        send: Callable[[list[Outgoing]], Awaitable[None]],
        store: Callable[[], Awaitable[LedgerStore]],
        metrics: Metrics,
        gate: Gate,
        webhook_allow_private: bool = False,
    ) -> None:
        self.app = app
        self.owners = owners
        self.keys = keys
        self.send = send
        self.store = store
        self.metrics = metrics
        self.gate = gate
        self.webhook_allow_private = webhook_allow_private
        self.in_flight = KeyedLocks()
        self.pages = OpenPages(app, metrics)

    # --- where things are ---------------------------------------------------------------------

    def owner(self, key: str) -> URL | None:
        """The worker holding `key`'s partition of the owners' table; None: this one."""
        return owner_of(self.app, self.owners.name, key)

    async def elsewhere(self, request: Request, key: str, raw: bytes = b"") -> Response | None:
        """The answer of the worker that holds `key`, when that is another one."""
        owner = self.owner(key)
        if owner is None:
            return None
        return await forward(self.app, request, raw, owner, self.gate.internal_headers())

    async def ask(self, owner: URL, path: str, query: dict[str, str] | None = None) -> bytes | None:
        """A worker's answer to an internal GET; None for a 404. OwnerUnknown for any other
        answer, or none."""
        url = owner.with_path(path).with_query(query or {})
        timeout = aiohttp.ClientTimeout(total=INTERNAL_TIMEOUT_SECONDS)
        try:
            async with self.app.http_client.get(
                url, headers=self.gate.internal_headers(), timeout=timeout
            ) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise OwnerUnknown(f"{owner} answered {response.status}")
                return await response.read()
        except (TimeoutError, aiohttp.ClientError) as error:
            raise OwnerUnknown(f"{owner} did not answer") from error

    def local_record(self, payment_id: str) -> Payment | None:
        """The payment's record, if its home is one of the partitions this worker processes."""
        return self.owners.get_in(payment_key(payment_id), steps_held(self.app))  # type: ignore[return-value]

    async def record(self, payment_id: str) -> Payment | None:
        """A payment's record, from its home; only where its directory entry is held."""
        home = self.owners.get(home_key(payment_id))
        if home is None:
            # The directory entry is a step of its own, and can trail the payment (its
            # partition busy, or just reassigned): a payment answered 202 must not be a 404
            # meanwhile. Every home is asked, which an unknown id costs too.
            return await self.search(payment_id)
        at_home = self.owner(str(home))
        if at_home is None:
            return self.local_record(payment_id)
        raw = await self.ask(at_home, f"{RECORD_PATH}/{quote(payment_id, safe='')}", {"home": str(home)})
        return None if raw is None else self.decoded_record(raw)

    async def search(self, payment_id: str) -> Payment | None:
        """The payment's record from whichever worker holds its home; None only when every
        worker answered that it holds no such payment."""
        if (here := self.local_record(payment_id)) is not None:
            return here
        generation = self.app.consumer_generation_id
        path = f"{RECORD_PATH}/{quote(payment_id, safe='')}"
        asked = await asyncio.gather(*(self.ask(peer, path) for peer in self.peers()), return_exceptions=True)
        for answer in asked:
            if isinstance(answer, bytes):
                return self.decoded_record(answer)
        if self.app.consumer_generation_id != generation or self.app.rebalancing:
            # Partitions moved while the workers were asked: this worker's look and theirs
            # may each have missed the payment on its way between them.
            raise OwnerUnknown("partitions were reassigned while the workers were asked")
        for answer in asked:
            if isinstance(answer, BaseException):
                raise OwnerUnknown(f"a worker did not answer where payment {payment_id} is") from answer
        return None

    def peers(self) -> list[URL]:
        """The other workers holding partitions of the owners' table, from the last assignment."""
        here = URL(str(self.app.conf.canonical_url))
        urls = (URL(url) for url in self.app.router.table_metadata(self.owners.name))
        return [url for url in urls if (url.host, url.port) != (here.host, here.port)]

    def decoded_record(self, raw: bytes) -> Payment:
        try:
            return PAYMENT.decode(raw)
        except msgspec.DecodeError as error:  # a worker of another version, mid-upgrade
            raise OwnerUnknown("a worker answered a record this worker cannot read") from error

    async def first_use(self, key: str) -> KeyUse | None:
        """What the key was first used for, from the intake's registry on whichever worker
        holds its partition. None when unknown, or when no answer comes now: the intake still
        refuses a reuse on the command topic, so this check only makes the answer quicker."""
        try:
            owner = owner_of(self.app, self.keys.name, key)
            if owner is None:
                return self.keys.get(key.encode())
            raw = await self.ask(owner, f"{KEY_USE_PATH}/{quote(key, safe='')}")
            return None if raw is None else KEY_USE.decode(raw)
        except (OwnerUnknown, msgspec.DecodeError, msgspec.ValidationError):
            return None

    async def wait_for(self, probe: Callable[[], Any], every_seconds: float) -> Any:
        """The probe's first answer that is not None, or None after RECORD_WAIT_SECONDS. Polled:
        the table has no change notification, and a look is cheap next to the command's trip
        through two topics. The probe is a look at a table here, or a coroutine (a question to
        another worker, or to PostgreSQL)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RECORD_WAIT_SECONDS
        while True:
            found = probe()
            found = await found if inspect.isawaitable(found) else found
            if found is not None or loop.time() >= deadline:
                return found
            await asyncio.sleep(every_seconds)

    async def publish(self, topic: str, key: str, command: Command) -> None:
        # Sent here, not through the loop's confirmation: a send that fails answers this
        # request with an error; it is no reason to stop the worker.
        await self.send([Outgoing(topic, key.encode(), dumps(command))])

    # --- payments -----------------------------------------------------------------------------

    async def create_payment(self, request: Request) -> Response:
        raw = await request.read()
        command = read_command(
            RequestPayment, raw, {"idempotency_key": request.headers.get("Idempotency-Key")}
        )
        if isinstance(command, Response):
            return command
        if (refusal := refused(request[API_KEY], command.debtor_account_id)) is not None:
            return refusal
        if (answer := await self.elsewhere(request, command.debtor_account_id, raw)) is not None:
            return answer
        payment_id = payment_id_for(command.idempotency_key)
        fingerprint = command.fingerprint()
        # POSTs of one payment go one at a time, and the first waits for the record it caused:
        # a repeat right behind it then finds the record and gets 200 or 409, not a second 202.
        async with self.in_flight.hold(payment_id):
            known = self.local_record(payment_id)
            if known is not None:
                return known_payment_answer(known, fingerprint, 200)
            first = await self.first_use(command.idempotency_key)
            if first is not None and first != key_use(command, fingerprint):  # e.g. the key names a refund
                return conflict(reuse_detail(command.idempotency_key, first), payment_id=payment_id)
            await self.publish(PAYMENT_COMMANDS, command.idempotency_key, command)
            audit(
                request,
                "createPayment",
                payment_id=payment_id,
                debtor=command.debtor_account_id,
                amount=command.amount,
                currency=command.currency,
            )
            record = await self.wait_for(lambda: self.local_record(payment_id), RECORD_POLL_SECONDS)
        if record is None:
            # Accepted all the same: the command is durably on the topic and will be
            # processed (slowly: a backlog, or the partition moved to another worker). A
            # repeat meanwhile publishes it again, which its home recognises.
            return json_answer(PaymentAccepted(payment_id=payment_id, status="pending"), 202)
        # Another body may have got there first, sent straight to the command topic.
        return known_payment_answer(record, fingerprint, 202)

    async def get_payment(self, request: Request, payment_id: str) -> Response:
        if (answer := await self.elsewhere(request, payment_id)) is not None:
            return answer
        record = await self.record(payment_id)
        if record is None:
            return problem(404, f"payment {payment_id} not found")
        involved = (record.request.debtor_account_id, record.request.creditor_account_id)
        if (refusal := refused(request[API_KEY], *involved, what=f"payment {payment_id}")) is not None:
            return refusal
        return json_answer(payment_view(record))

    async def create_refund(self, request: Request, payment_id: str) -> Response:
        raw = await request.read()
        key = request.headers.get("Idempotency-Key")
        command = read_command(RefundPayment, raw, {"idempotency_key": key, "payment_id": payment_id})
        if isinstance(command, Response):
            return command
        if (answer := await self.elsewhere(request, payment_id, raw)) is not None:
            return answer
        key = command.idempotency_key
        record = await self.record(payment_id)
        if record is None:
            return problem(404, f"payment {payment_id} not found")
        # The refund takes the money back from the creditor: the key must act for it.
        if (
            refusal := refused(
                request[API_KEY], record.request.creditor_account_id, what=f"payment {payment_id}"
            )
        ) is not None:
            return refusal
        fingerprint = command.fingerprint()
        async with self.in_flight.hold(refund_id_for(payment_id, key)):
            if (known := record.refunds.get(key)) is not None:
                return self.known_refund(payment_id, key, known, fingerprint, 200)
            first = await self.first_use(key)
            if first is not None and first != key_use(command, fingerprint):
                return conflict(reuse_detail(key, first), payment_id=payment_id)
            await self.publish(PAYMENT_COMMANDS, key, command)
            audit(request, "createRefund", payment_id=payment_id, idempotency_key=key, amount=command.amount)

            async def recorded() -> RefundRecord | None:
                try:
                    current = await self.record(payment_id)
                except OwnerUnknown:  # the command is on its way: answered as pending
                    return None
                return None if current is None else current.refunds.get(key)

            refund = await self.wait_for(recorded, LEDGER_POLL_SECONDS)
        if refund is None:
            pending = RefundRecord(
                refund_id=refund_id_for(payment_id, key),
                fingerprint=fingerprint,
                amount=command.amount or record.refundable,
            )
            return json_answer(refund_view(payment_id, key, pending), 202)
        return self.known_refund(payment_id, key, refund, fingerprint, 202)

    def known_refund(
        self, payment_id: str, key: str, refund: RefundRecord, fingerprint: str, status: int
    ) -> Response:
        if refund.fingerprint != fingerprint:
            return conflict(
                f"idempotency key {key!r} was used before with a different payload", payment_id=payment_id
            )
        return json_answer(refund_view(payment_id, key, refund), status)

    # --- accounts -----------------------------------------------------------------------------

    def local_account(self, account_id: str) -> Account | None:
        return self.owners.get(account_key(account_id))  # type: ignore[return-value]

    async def open_account(self, request: Request) -> Response:
        raw = await request.read()
        command = read_command(OpenAccount, raw, {})
        if isinstance(command, Response):
            return command
        account_id = command.account_id
        if (refusal := refused(request[API_KEY], account_id)) is not None:
            return refusal
        if (answer := await self.elsewhere(request, account_id, raw)) is not None:
            return answer
        fingerprint = command.fingerprint()
        async with self.in_flight.hold(f"account/{account_id}"):
            if (known := self.local_account(account_id)) is not None:
                return self.known_account(known, fingerprint, 200)
            await self.publish(ACCOUNT_COMMANDS, account_id, command)
            audit(request, "openAccount", account_id=account_id, currency=command.currency)
            opened = await self.wait_for(lambda: self.local_account(account_id), RECORD_POLL_SECONDS)
        if opened is None:
            return json_answer(AccountPending(account_id=account_id, status="pending"), 202)
        return self.known_account(opened, fingerprint, 201)

    def known_account(self, account: Account, fingerprint: str, status: int) -> Response:
        if account.fingerprint != fingerprint:
            return conflict(
                f"account {account.account_id} was opened before with a different payload",
                account_id=account.account_id,
            )
        return json_answer(account_view(account), status)

    async def get_account(self, request: Request, account_id: str) -> Response:
        if (refusal := refused(request[API_KEY], account_id)) is not None:
            return refusal
        if (answer := await self.elsewhere(request, account_id)) is not None:
            return answer
        account = self.local_account(account_id)
        if account is None:
            return problem(404, f"account {account_id} not found")
        return json_answer(account_view(account))

    async def fund_account(self, request: Request, account_id: str) -> Response:
        raw = await request.read()
        command = read_command(
            FundAccount,
            raw,
            {"idempotency_key": request.headers.get("Idempotency-Key"), "account_id": account_id},
        )
        if isinstance(command, Response):
            return command
        if (refusal := refused(request[API_KEY], account_id)) is not None:
            return refusal
        if (answer := await self.elsewhere(request, account_id, raw)) is not None:
            return answer
        account = self.local_account(account_id)
        if account is None:
            return problem(404, f"account {account_id} not found")
        if account.currency != command.currency:
            return invalid(
                [FieldError(field="currency", message=f"account {account_id} holds {account.currency}")]
            )
        key, fingerprint = command.idempotency_key, command.fingerprint()
        transaction_id = transaction_id_for(EntryKind.FUNDING, key)
        store = await self.store()

        async def in_ledger() -> str | None:
            stored = (await store.stored_entries([transaction_id])).get(transaction_id)
            return None if stored is None else stored.fingerprint

        def answer(status: int, state: str) -> Response:
            return json_answer(
                FundingView(
                    account_id=account_id,
                    idempotency_key=key,
                    amount=command.amount,
                    currency=command.currency,
                    transaction_id=str(transaction_id),
                    status=state,
                ),
                status,
            )  # type: ignore[arg-type]

        async with self.in_flight.hold(f"funding/{key}"):
            if (stored := await in_ledger()) is not None:
                return (
                    answer(200, "funded")
                    if stored == fingerprint
                    else conflict(
                        f"idempotency key {key!r} was used before with a different payload",
                        account_id=account_id,
                    )
                )
            await self.publish(ACCOUNT_COMMANDS, account_id, command)
            audit(
                request,
                "fundAccount",
                account_id=account_id,
                idempotency_key=key,
                amount=command.amount,
                currency=command.currency,
            )
            stored = await self.wait_for(in_ledger, LEDGER_POLL_SECONDS)
        if stored is None:
            return answer(202, "pending")
        if stored != fingerprint:
            return conflict(
                f"idempotency key {key!r} was used before with a different payload", account_id=account_id
            )
        return answer(201, "funded")

    async def known_in_ledger(self, account_id: str) -> bool:
        return await (await self.store()).get_account(account_id) is not None

    async def statement(self, request: Request, account_id: str) -> Response:
        if (refusal := refused(request[API_KEY], account_id)) is not None:
            return refusal
        window = query_errors(
            request,
            lambda q: (
                integer(q, "after", 0, 0, 2**63 - 1),
                integer(q, "limit", 100, 1, routes.PAGE_SIZE_MAX),
                moment(q, "since"),
                moment(q, "until"),
            ),
        )
        if isinstance(window, Response):
            return window
        after, limit, since, until = window
        if not await self.known_in_ledger(account_id):
            return problem(404, f"account {account_id} not found")
        entries = await (await self.store()).statement(
            account_id, after_posting_id=after, limit=limit, since=since, until=until
        )
        items = [statement_entry(e) for e in entries]
        next_after = items[-1].posting_id if len(items) == limit else None
        return json_answer(StatementPage(account_id=account_id, entries=items, next_after=next_after))

    async def list_payments(self, request: Request, account_id: str) -> Response:
        if (refusal := refused(request[API_KEY], account_id)) is not None:
            return refusal
        statuses = request.query.getall("status", [])
        unknown = sorted(set(statuses) - set(routes.STATUSES))
        if unknown:
            return invalid(
                [
                    FieldError(
                        field="status",
                        message=f"unknown status {', '.join(unknown)}; known: {', '.join(routes.STATUSES)}",
                    )
                ]
            )
        window = query_errors(
            request,
            lambda q: (
                integer(q, "limit", 100, 1, routes.PAGE_SIZE_MAX),
                moment(q, "since"),
                moment(q, "until"),
                cursor(q),
            ),
        )
        if isinstance(window, Response):
            return window
        limit, since, until, before = window
        if not await self.known_in_ledger(account_id):
            return problem(404, f"account {account_id} not found")
        found = await (await self.store()).account_payments(
            account_id,
            statuses=frozenset(statuses) or None,
            since=since,
            until=until,
            before=before,
            limit=limit,
        )
        items = [PaymentSummaryView(**asdict(summary)) for summary in found]
        last = items[-1] if len(items) == limit else None
        next_cursor = None if last is None else f"{last.created_at.isoformat()}|{last.payment_id}"
        return json_answer(PaymentList(account_id=account_id, items=items, next_cursor=next_cursor))

    # --- webhook endpoints (shared in PostgreSQL: any worker answers) ---------------------------

    def visible(self, key: ApiKey, row: EndpointRow) -> bool:
        """A key limited to accounts sees only the endpoints limited to some of its accounts."""
        return key.accounts is None or (row.accounts is not None and set(row.accounts) <= key.accounts)

    async def create_webhook_endpoint(self, request: Request) -> Response:
        key = request[API_KEY]
        body = read_body(WebhookEndpointBody, await request.read())
        if isinstance(body, Response):
            return body
        if key.accounts is not None and (not body.accounts or not set(body.accounts) <= key.accounts):
            return problem(
                403,
                f"the API key {key.name!r} is limited to accounts: the endpoint's accounts "
                "must be some of them",
            )
        store = await self.store()
        try:
            endpoint, secret = await notify.register(
                store,
                body.url,
                list(body.event_types),
                list(body.accounts),
                self.webhook_allow_private,
                created_by=key.name,
            )
        except notify.EndpointRefused as error:
            return invalid([FieldError(field=error.field, message=str(error))])
        audit(request, "createWebhookEndpoint", endpoint_id=endpoint.endpoint_id, url=endpoint.url)
        row = await store.webhook_endpoint(endpoint.endpoint_id)
        assert row is not None
        return json_answer(WebhookEndpointCreated(**endpoint_view(row).model_dump(), secret=secret), 201)

    async def list_webhook_endpoints(self, request: Request) -> Response:
        rows = await (await self.store()).webhook_endpoints()
        items = [endpoint_view(row) for row in rows if self.visible(request[API_KEY], row)]
        return json_answer(WebhookEndpointList(items=items))

    async def own_endpoint(self, request: Request, endpoint_id: str) -> EndpointRow | Response:
        row = await (await self.store()).webhook_endpoint(endpoint_id)
        if row is None or not self.visible(request[API_KEY], row):
            return problem(404, f"webhook endpoint {endpoint_id} not found")
        return row

    async def delete_webhook_endpoint(self, request: Request, endpoint_id: str) -> Response:
        row = await self.own_endpoint(request, endpoint_id)
        if isinstance(row, Response):
            return row
        await (await self.store()).remove_webhook_endpoint(endpoint_id)
        audit(request, "deleteWebhookEndpoint", endpoint_id=endpoint_id)
        return Response(status=204)

    async def list_webhook_deliveries(self, request: Request, endpoint_id: str) -> Response:
        window = query_errors(
            request, lambda q: (integer(q, "limit", 100, 1, routes.PAGE_SIZE_MAX), flag(q, "failed"))
        )
        if isinstance(window, Response):
            return window
        limit, failed = window
        row = await self.own_endpoint(request, endpoint_id)
        if isinstance(row, Response):
            return row
        found = await (await self.store()).webhook_deliveries(
            endpoint_id=endpoint_id, failed_only=failed, limit=limit
        )
        items = [
            DeliveryView(**{**asdict(d), "log": [AttemptView(**asdict(a)) for a in d.log]}) for d in found
        ]
        return json_answer(DeliveryList(endpoint_id=endpoint_id, items=items))

    # --- open pages and what workers ask each other ------------------------------------------------

    async def openapi_page(self, request: Request) -> Response:
        return Response(body=openapi.rendered(), content_type="application/json")

    async def internal_record(self, request: Request, payment_id: str) -> Response:
        """The record of a payment whose home (`?home=`, its debtor) the asker believes is
        here, or (no home) that the asker looks for everywhere. Answered only while this
        worker holds its partitions: a worker that has begun a rebalance the asker has not
        yet heard of has closed them, and its "not held here" would reach the client as a
        404 for a payment that exists."""
        home = request.query.get("home")
        if home is None:  # asked by a search (see `record`)
            if not ready(self.app):
                raise OwnerUnknown("partitions are being reassigned")
        elif self.owner(home) is not None:  # OwnerUnknown mid-rebalance: a 503 too
            raise OwnerUnknown(f"the home of payment {payment_id} is not held here")
        record = self.local_record(payment_id)
        if record is None:
            return problem(404, f"payment {payment_id} not held here")
        return Response(body=msgspec.json.encode(record), content_type="application/json")

    async def internal_key_use(self, request: Request, key: str) -> Response:
        """What an idempotency key was first used for, answered only where its partition is
        held (see internal_record)."""
        if owner_of(self.app, self.keys.name, key) is not None:
            raise OwnerUnknown(f"idempotency key {key!r} is not held here")
        use = self.keys.get(key.encode())
        if use is None:
            return problem(404, f"idempotency key {key!r} not registered")
        return Response(body=msgspec.json.encode(use), content_type="application/json")


def flag(query: dict[str, Any], name: str) -> bool:
    raw = query.get(name, "false")
    if raw not in ("true", "false"):
        raise ValueError(f"{name}: {raw!r} is not true or false")
    return raw == "true"


def endpoint_view(row: EndpointRow) -> WebhookEndpointView:
    return WebhookEndpointView(
        endpoint_id=row.endpoint_id,
        url=row.url,
        event_types=None if row.event_types is None else list(row.event_types),
        accounts=None if row.accounts is None else list(row.accounts),
        created_at=row.created_at,
        disabled_at=row.disabled_at,
        disabled_reason=row.disabled_reason,
    )


def read_body(model: type[ModelT], raw: bytes, given: dict[str, Any] | None = None) -> ModelT | Response:
    """The model of a JSON object body, with `given` over its fields, or the 422 that says
    what is wrong with it."""
    try:
        body = loads(raw) if raw.strip() else {}
    except ValueError as error:
        return invalid([FieldError(field="body", message=f"not JSON: {error}")])
    if not isinstance(body, dict):
        return invalid([FieldError(field="body", message="must be a JSON object")])
    try:
        return model.model_validate({**body, **(given or {})})
    except ValidationError as error:
        return invalid(list(field_errors(error)))


def cursor(query: dict[str, Any]) -> tuple[datetime, str] | None:
    raw = query.get("cursor")
    if raw is None:
        return None
    created, _, payment_id = raw.partition("|")
    try:
        at = datetime.fromisoformat(created)
    except ValueError:
        raise ValueError(f"cursor: {raw!r} is not a cursor this API gave") from None
    if not payment_id or at.tzinfo is None or not in_range(at):
        raise ValueError(f"cursor: {raw!r} is not a cursor this API gave")
    return at, payment_id



def install(app: faust.App, api: Api) -> None:
    handlers: dict[str, Callable[..., Awaitable[Response]]] = {
        "createPayment": api.create_payment,
        "getPayment": api.get_payment,
        "createRefund": api.create_refund,
        "openAccount": api.open_account,
        "getAccount": api.get_account,
        "fundAccount": api.fund_account,
        "getStatement": api.statement,
        "listPayments": api.list_payments,
        "health": api.pages.health,
        "metrics": api.pages.metrics_page,
        "createWebhookEndpoint": api.create_webhook_endpoint,
        "listWebhookEndpoints": api.list_webhook_endpoints,
        "deleteWebhookEndpoint": api.delete_webhook_endpoint,
        "listWebhookDeliveries": api.list_webhook_deliveries,
        "openapi": api.openapi_page,
    }
    assert handlers.keys() == routes.BY_OPERATION.keys(), "every operation has its view, and only those"
    for path, methods in routes.METHODS.items():
        by_method = {
            method: handlers[routes.find(method, path).operation]  # type: ignore[union-attr]
            for method in methods
        }
        _page(app, path, by_method)

    _page(app, KEY_USE_PATH + "/{key}", {"GET": api.internal_key_use})
    _page(app, RECORD_PATH + "/{payment_id}", {"GET": api.internal_record})


def install_open_pages(app: faust.App, pages: OpenPages) -> None:
    """/healthz and /metrics only: a read side worker's web server."""
    for operation, handler in (("health", pages.health), ("metrics", pages.metrics_page)):
        route = routes.BY_OPERATION[operation]
        _page(app, route.path, {route.method: handler})


def _page(app: faust.App, path: str, by_method: dict[str, Callable[..., Awaitable[Response]]]) -> None:
    """A Faust view answering `path` with one handler per method."""

    def method(handler: Callable[..., Awaitable[Response]]) -> Callable[..., Awaitable[Response]]:
        async def call(self: View, request: Request, **match: str) -> Response:
            try:
                return await handler(request, **match)
            except OwnerUnknown as error:
                return unavailable(str(error))

        return call

    view = type(
        f"View{path}", (View,), {name.lower(): method(handler) for name, handler in by_method.items()}
    )
    app.page(path)(view)
