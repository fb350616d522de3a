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
    "accounts.after_send",     # outputs acknowledged, table state not written
    "accounts.after_record",   # state written, batch not acked
    "payments.after_send",
    "payments.after_record",
    "psp.after_capture",       # a background call has the PSP's answer, nothing sent yet
    "psp.after_send",          # outcomes' outputs acknowledged, table state not written
    "psp.after_record",        # in-flight and decided states written, calls not started
    "ledger.after_commit",     # postings committed in PostgreSQL, follow-ups not sent
    "ledger.after_send",
    "relay.after_publish",     # outbox rows published, not yet marked
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
