"""The notify step's second half: send the webhook deliveries that are due, on every worker.

The read side (agents/projection.py) makes a delivery per event and endpoint in
PostgreSQL; here a task claims due ones under a lease (ledger/webhooks.py), POSTs each
event's bytes with Standard Webhooks headers, and settles it: delivered on a 2xx within
the timeout, else tried again after the schedule's next delay, or failed once the
schedule is spent. Delivery is at least once: a worker killed mid-send leaves a lease
that runs out, and the delivery is sent again under the same webhook-id.

Isolation: at most `concurrency` attempts to one endpoint at a time on a worker, and an
endpoint at its limit is left out of the next claim, so a receiver that hangs holds only
its own deliveries; every attempt has a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import faust
from aiohttp.resolver import DefaultResolver
from standardwebhooks.webhooks import Webhook

from agents import pruning
from infra.metrics import Metrics
from ledger.store import LedgerStore
from ledger.webhooks import Due
from models.webhooks import (
    EVENT_TYPES,
    Endpoint,
    address_refusal,
    new_endpoint_id,
    new_secret,
    retry_delay,
    url_refusal,
)

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
BACKLOG_SECONDS = 5.0
IN_FLIGHT_MAX = 64  # attempts at once on a worker, all endpoints together
ANSWER_BYTES_MAX = 64 * 1024  # of a receiver's answer, read and dropped
USER_AGENT = "payments-service-webhooks/1"
RESOLVE_TIMEOUT_SECONDS = 3.0  # at registration


class RefusedAddress(OSError):
    """The URL's host resolves to an address a webhook may not reach."""


class GuardedResolver(DefaultResolver):
    """The resolver of the webhook client: a host that resolves to a loopback, private or
    link-local address is refused at connect time, so a DNS answer that changed after
    the endpoint was registered cannot turn a webhook against the service's own network."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__()
        self.allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[dict[str, Any]]:
        found = await super().resolve(host, port, family)
        for entry in found:
            refusal = address_refusal(entry["host"], self.allow_private)
            if refusal is not None:
                raise RefusedAddress(f"{host} resolves to {refusal}")
        return found


def literal_refusal(url: str, allow_private: bool) -> str | None:
    """The resolver is not asked about an IP written in the URL: checked here."""
    host = urlsplit(url).hostname or ""
    try:
        return address_refusal(host, allow_private)
    except ValueError:  # a name, not an address
        return None


def headers_for(due: Due, at: datetime) -> dict[str, str]:
    signature = Webhook(due.secret).sign(due.event_id, at, due.payload.decode())
    return {
        "webhook-id": due.event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


@dataclass
class Dispatcher:
    store: Callable[[], Awaitable[LedgerStore]]
    metrics: Metrics
    schedule: tuple[float, ...]
    timeout_seconds: float
    concurrency: int
    disable_after_seconds: float
    allow_private: bool
    in_flight: Tally[str] = field(default_factory=Tally)
    _slots: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def lease_seconds(self) -> float:
        # Long enough for the attempts claimed for an endpoint to wait for one another
        # (at most `concurrency` more than it is sending) and be sent.
        return 2 * self.timeout_seconds + 15

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow_private), limit=IN_FLIGHT_MAX)
        timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            try:
                while True:
                    try:
                        claimed = await self.claim_and_send(session)
                    except Exception:  # noqa: BLE001 - the deliveries stay due; the next claim finds them
                        log.exception("could not claim webhook deliveries")
                        claimed = 0
                    if not claimed:
                        await asyncio.sleep(POLL_SECONDS)
            finally:
                for task in self._tasks:
                    task.cancel()

    async def claim_and_send(self, session: aiohttp.ClientSession) -> int:
        room = IN_FLIGHT_MAX - sum(self.in_flight.values())
        if room <= 0:
            return 0
        busy = [endpoint for endpoint, count in self.in_flight.items() if count >= self.concurrency]
        store = await self.store()
        claimed = await store.claim_webhook_deliveries(room, busy, self.lease_seconds, self.concurrency)
        for due in claimed:
            self.in_flight[due.endpoint_id] += 1
            task = asyncio.create_task(self.deliver(session, due))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def deliver(self, session: aiohttp.ClientSession, due: Due) -> None:
        slots = self._slots.setdefault(due.endpoint_id, asyncio.Semaphore(self.concurrency))
        try:
            async with slots:
                status, error, latency = await self.attempt(session, due)
            await self.settle(due, status, error, latency)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the lease runs out and another attempt follows
            log.exception("webhook delivery %d to %s could not be settled", due.delivery_id, due.endpoint_id)
        finally:
            self.in_flight[due.endpoint_id] -= 1
            if self.in_flight[due.endpoint_id] <= 0:
                del self.in_flight[due.endpoint_id]
                self._slots.pop(due.endpoint_id, None)

    async def attempt(self, session: aiohttp.ClientSession, due: Due) -> tuple[int | None, str | None, float]:
        """(the receiver's status, why it is not delivered (None: it is), seconds taken)."""
        started = time.monotonic()
        refusal = literal_refusal(due.url, self.allow_private)
        if refusal is not None:
            return None, refusal, 0.0
        try:
            async with session.post(
                due.url, data=due.payload, headers=headers_for(due, datetime.now(UTC)), allow_redirects=False
            ) as response:
                await response.content.read(ANSWER_BYTES_MAX)
                error = None if 200 <= response.status < 300 else f"answered {response.status}"
                return response.status, error, time.monotonic() - started
        except TimeoutError:
            return None, f"no answer within {self.timeout_seconds:g} s", time.monotonic() - started
        except (aiohttp.ClientError, OSError) as failure:
            return None, f"{type(failure).__name__}: {failure}", time.monotonic() - started
        except Exception as failure:  # noqa: BLE001 - a bad secret or URL: a failed attempt, logged, not a stuck one
            log.exception(
                "webhook delivery %d to %s could not be attempted", due.delivery_id, due.endpoint_id
            )
            return None, f"{type(failure).__name__}: {failure}", time.monotonic() - started

    async def settle(self, due: Due, status: int | None, error: str | None, latency: float) -> None:
        delivered = error is None
        retry = None if delivered else retry_delay(self.schedule, due.attempts + 1)
        store = await self.store()
        disabled = await store.settle_webhook_delivery(
            due,
            delivered=delivered,
            status_code=status,
            latency_seconds=latency,
            error=error,
            retry_in_seconds=retry,
            disable_after_seconds=self.disable_after_seconds,
        )
        self.metrics.webhook_attempt.observe(latency)
        result = "delivered" if delivered else ("retry" if retry is not None else "failed")
        self.metrics.webhook_deliveries.labels(result).inc()
        if result == "failed":
            log.warning(
                "webhook delivery of event %s to %s failed after %d attempts: %s",
                due.event_id,
                due.endpoint_id,
                due.attempts + 1,
                error,
            )
        if disabled:
            self.metrics.webhook_endpoints_disabled.inc()
            log.error(
                "webhook endpoint %s (%s) disabled: it has failed for more than %g s without a "
                "success (last: %s); `payments webhooks enable %s` turns it back on",
                due.endpoint_id,
                due.url,
                self.disable_after_seconds,
                error,
                due.endpoint_id,
            )


def install(app: faust.App, dispatcher: Dispatcher, retention_hours: float) -> None:
    """The dispatcher, the backlog's gauges, and the retention of settled deliveries."""

    @app.task
    async def send_webhooks() -> None:
        await dispatcher.run()

    async def prune(older_than_seconds: float, limit: int) -> int:
        return await (await dispatcher.store()).prune_webhook_deliveries(older_than_seconds, limit)

    pruning.install(app, "webhook_deliveries", prune, dispatcher.metrics.webhook_deliveries_pruned,
                    retention_hours)

    @app.timer(BACKLOG_SECONDS)
    async def webhook_backlog() -> None:
        try:
            pending, oldest_due = await (await dispatcher.store()).webhook_backlog()
        except Exception:  # noqa: BLE001 - a gauge missed once; the next tick reads it again
            log.warning("could not read the webhook backlog", exc_info=True)
            return
        dispatcher.metrics.webhook_backlog.set(pending)
        dispatcher.metrics.webhook_oldest_due.set(oldest_due)


# --- registration ------------------------------------------------------------------------------


class EndpointRefused(ValueError):
    """A webhook endpoint that may not be registered; the message says why, `field` which
    of its fields is wrong."""

    def __init__(self, message: str, field: str = "url") -> None:
        super().__init__(message)
        self.field = field


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse a URL that is not https, or whose host resolves to an address a webhook may
    not reach (both allowed only with PAYMENTS_WEBHOOK_ALLOW_PRIVATE=1)."""
    try:
        refusal = url_refusal(url, allow_private) or literal_refusal(url, allow_private)
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        (parts.hostname or "").encode("idna")
    except (ValueError, UnicodeError) as error:
        raise EndpointRefused(f"{url!r} is not a valid URL: {error}") from None
    if refusal is not None:
        raise EndpointRefused(refusal)
    try:
        found = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(
                parts.hostname,
                port,
                type=socket.SOCK_STREAM,
            ),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (socket.gaierror, TimeoutError) as error:
        raise EndpointRefused(f"{parts.hostname} does not resolve: {error or 'no answer in time'}") from None
    for *_, address in found:
        refusal = address_refusal(str(address[0]), allow_private)
        if refusal is not None:
            raise EndpointRefused(f"{parts.hostname} resolves to {refusal}")


async def register(
    store: LedgerStore,
    url: str,
    event_types: list[str],
    accounts: list[str],
    allow_private: bool,
    created_by: str | None,
) -> tuple[Endpoint, str]:
    """A new endpoint and its secret (shown once)."""
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise EndpointRefused(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}",
                              field="event_types")
    await check_url(url, allow_private)
    endpoint = Endpoint(new_endpoint_id(), url, frozenset(event_types) or None, frozenset(accounts) or None)
    secret = new_secret()
    await store.create_webhook_endpoint(endpoint, secret, created_by)
    log.info(
        "webhook endpoint %s registered for %s (events: %s; accounts: %s)",
        endpoint.endpoint_id,
        url,
        ",".join(sorted(endpoint.event_types or ())) or "all",
        ",".join(sorted(endpoint.accounts or ())) or "all",
    )
    return endpoint, secret
