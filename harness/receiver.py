"""A webhook receiver on loopback (an aiohttp server), for the demo and the tests: it
records every request and answers as its behaviour says."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from harness.processes import free_port

Behaviour = Callable[[int], Awaitable[int]]  # the n-th request (from 1) -> the status to answer


async def healthy(_: int) -> int:
    return 200


@dataclass
class Receiver:
    behaviour: Behaviour = healthy
    port: int = field(default_factory=free_port)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def start(self) -> Receiver:
        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            self.received.append((dict(request.headers), body))
            return web.Response(status=await self.behaviour(len(self.received)))

        app = web.Application()
        app.router.add_post("/hooks", hook)
        # Stopped at once, whatever a hanging behaviour is still doing.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def ids(self) -> Counter[str]:
        """How many times each webhook-id arrived."""
        return Counter(headers["webhook-id"] for headers, _ in self.received)

    def events(self) -> dict[str, dict[str, Any]]:
        return {headers["webhook-id"]: json.loads(body) for headers, body in self.received}

    def unverified(self, secret: str) -> list[str]:
        """The webhook-ids whose signature the Standard Webhooks verifier refuses."""
        refused = []
        for headers, body in self.received:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                refused.append(headers.get("webhook-id", "?"))
        return refused
