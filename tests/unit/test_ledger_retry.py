"""Which errors the ledger retries, and how long it waits between attempts."""

from __future__ import annotations

import asyncpg
import pytest

from ledger.journal import decode_headers, encode_headers
from ledger.retry import Backoff, is_connection_error, is_transient, with_retry


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
    asyncpg.exceptions.CannotConnectNowError("starting up"),
    asyncpg.exceptions.AdminShutdownError("terminating connection"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 15"),
])
def test_connection_errors_are_retried_on_a_fresh_connection(error: Exception) -> None:
    assert is_connection_error(error) and is_transient(error)


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.SerializationError("could not serialize"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock"),
    asyncpg.exceptions.TooManyConnectionsError("too many"),
])
def test_contention_is_retried_on_the_same_pool(error: Exception) -> None:
    assert is_transient(error) and not is_connection_error(error)


@pytest.mark.parametrize("error", [
    asyncpg.exceptions.CheckViolationError("does not balance"),
    asyncpg.exceptions.ForeignKeyViolationError("no such account"),
    asyncpg.exceptions.DataError("invalid input for query argument"),
    ValueError("bug"),
])
def test_bugs_and_refusals_are_not_retried(error: Exception) -> None:
    assert not is_transient(error)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial_seconds=0.1, cap_seconds=1.0)
    delays = [backoff.next_delay_seconds() for _ in range(8)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(0.5 <= delay <= 1.0 for delay in delays[4:])
    backoff.reset()
    assert backoff.next_delay_seconds() <= 0.1


async def test_with_retry_gives_up_at_the_deadline() -> None:
    attempts = 0

    async def always_refused() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionRefusedError(111, "refused")

    with pytest.raises(ConnectionRefusedError):
        await with_retry(always_refused, deadline_seconds=0.3)
    assert 2 <= attempts <= 10


async def test_with_retry_raises_a_permanent_error_at_once() -> None:
    attempts = 0

    async def refused_by_a_check() -> None:
        nonlocal attempts
        attempts += 1
        raise asyncpg.exceptions.CheckViolationError("does not balance")

    with pytest.raises(asyncpg.exceptions.CheckViolationError):
        await with_retry(refused_by_a_check, deadline_seconds=5)
    assert attempts == 1


def test_outbox_headers_round_trip_binary_values() -> None:
    headers = [("ce_id", b"abc"), ("binary", b"\x00\xff"), ("empty", b"")]
    assert decode_headers(encode_headers(headers)) == headers
