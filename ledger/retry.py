"""Retrying PostgreSQL work through restarts, failovers and dropped connections.

Everything retried here is idempotent (the ledger's unique keys absorb a repeat), so the
only question is whether an error can pass by itself: those listed below can.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from asyncpg import exceptions as pg

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that say "the connection or the server went away" (asyncpg pools do not always
# notice by themselves: their idle connections must be expired before a retry).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out (TimeoutError is an OSError)
    pg.PostgresConnectionError,  # includes ConnectionDoesNotExistError
    pg.InterfaceError,  # "connection is closed", ...
    pg.OperatorInterventionError,  # admin/crash shutdown, cannot connect now, canceled
    # "cannot switch to state N; another operation is in progress": a connection whose
    # server went away while it was idle is handed out broken (MagicStack/asyncpg#784).
    pg.InternalClientError,
)
# Errors of a healthy server that a second attempt usually gets past.
CONTENTION_ERRORS: tuple[type[BaseException], ...] = (
    pg.TransactionRollbackError,  # serialization failure, deadlock
    pg.TooManyConnectionsError,
)
# InterfaceError subclasses that are bugs in our calls: retrying would only hide them.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    pg.DataError,
    pg.ClientConfigurationError,
    pg.UnsupportedClientFeatureError,
    pg.UnsupportedServerFeatureError,
)


def is_connection_error(error: BaseException) -> bool:
    return isinstance(error, CONNECTION_ERRORS) and not isinstance(error, PERMANENT_ERRORS)


def is_transient(error: BaseException) -> bool:
    return is_connection_error(error) or isinstance(error, CONTENTION_ERRORS)


class Backoff:
    """Capped exponential backoff with jitter, so restarted clients do not retry in step."""

    def __init__(self, initial_seconds: float = 0.05, cap_seconds: float = 2.0) -> None:
        self.initial_seconds = initial_seconds
        self.cap_seconds = cap_seconds
        self.attempt = 0

    def next_delay_seconds(self) -> float:
        ceiling = min(self.cap_seconds, self.initial_seconds * 2.0**self.attempt)
        self.attempt += 1
        return ceiling * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


async def with_retry(
    operation: Callable[[], Awaitable[T]],
    *,
    deadline_seconds: float,
    on_connection_error: Callable[[], Awaitable[None]] | None = None,
    what: str = "ledger operation",
) -> T:
    """Run `operation` until it succeeds, a permanent error, or the deadline passes."""
    deadline = time.monotonic() + deadline_seconds
    backoff = Backoff()
    while True:
        try:
            return await operation()
        except Exception as error:
            if not is_transient(error):
                raise
            delay_seconds = backoff.next_delay_seconds()
            if time.monotonic() + delay_seconds > deadline:
                raise
            logger.warning("%s failed (%r); retrying in %.2fs", what, error, delay_seconds)
            if is_connection_error(error) and on_connection_error is not None:
                await on_connection_error()
            await asyncio.sleep(delay_seconds)


async def expire_pool(pool: asyncpg.Pool) -> None:
    """Make the pool reconnect: its idle connections may point at a server that is gone."""
    await pool.expire_connections()
