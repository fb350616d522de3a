"""Crash points: make a worker exit abruptly at a named point, to test every window
between two writes (fault injection; never set in production).

PAYMENTS_CRASH_AT=<point>[:<n>] exits the process with os._exit (no shutdown, no
final commit, like kill -9) the n-th time (default 1st) the point is reached.
"""

from __future__ import annotations

import os

CRASH_ENV = "PAYMENTS_CRASH_AT"
CRASH_EXIT_CODE = 137

POINTS = frozenset({
    "owner.after_commit",      # journal entries committed in PostgreSQL, nothing sent
    "owner.after_send",        # outputs (hand-overs, outbox rows) acknowledged, no state written
    "owner.after_record",      # state (key registry, owners' table) written, batch not acked
    "psp.after_capture",       # a background call has the PSP's answer, nothing sent yet
    "relay.after_publish",     # outbox rows published by the relay, not yet marked
})


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, nth = value.partition(":")
    if point not in POINTS:
        raise ValueError(f"{CRASH_ENV}={value!r}: unknown point; expected one of {sorted(POINTS)}")
    return point, int(nth or "1")


_armed = _parse(os.environ.get(CRASH_ENV))
_hits = 0


def crash_point(point: str) -> None:
    global _hits
    if _armed is None or _armed[0] != point:
        return
    _hits += 1
    if _hits >= _armed[1]:
        os._exit(CRASH_EXIT_CODE)
