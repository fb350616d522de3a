"""A LISTEN connection that stays open: reconnected with backoff whenever it is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import asyncpg

from ledger.retry import Backoff

logger = logging.getLogger(__name__)


class Listener:
    """Calls `on_wake` on every NOTIFY of `channel`, and once after each (re)connect.

    The call after connecting covers notifications sent while nobody was listening; the
    caller's own polling covers the time the connection is down.
    """

    def __init__(
        self, database_url: str, channel: str, on_wake: Callable[[], None], *,
        health_check_interval_seconds: float = 5.0,
    ) -> None:
        self._database_url = database_url
        self._channel = channel
        self._on_wake = on_wake
        self.health_check_interval_seconds = health_check_interval_seconds
        self.listening = False

    async def run(self) -> None:
        """Listen until cancelled."""
        backoff = Backoff(initial_seconds=0.1, cap_seconds=5.0)
        while True:
            try:
                await self._listen_until_lost(backoff)
            except Exception as error:
                delay_seconds = backoff.next_delay_seconds()
                logger.warning("%s listener lost (%r); reconnecting in %.2fs",
                               self._channel, error, delay_seconds)
                await asyncio.sleep(delay_seconds)

    async def _listen_until_lost(self, backoff: Backoff) -> None:
        connection = await asyncpg.connect(self._database_url, timeout=10)
        try:
            lost = asyncio.Event()
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(self._channel, lambda *_notification: self._on_wake())
            self.listening = True
            backoff.reset()
            logger.info("%s listener connected", self._channel)
            self._on_wake()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self.health_check_interval_seconds)
                # Raises once the connection is gone, even a half-open one that sent no FIN.
                await connection.execute("SELECT 1", timeout=self.health_check_interval_seconds)
        finally:
            self.listening = False
            connection.terminate()
