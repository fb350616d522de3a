"""Retention, as a timer of every worker: what a table keeps only for a while (published
outbox rows, settled webhook deliveries) is deleted once it is older than its retention,
a chunk at a time, so each statement is a short transaction whatever the backlog. Every
worker runs it; two at once delete disjoint rows or nothing (each statement deletes what
it found, and a row deleted is not found again)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import faust
from prometheus_client import Counter

PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_CHUNK = 10_000  # rows per statement

Prune = Callable[[float, int], Awaitable[int]]  # (older than seconds, at most) -> rows deleted


def install(app: faust.App, name: str, prune: Prune, pruned: Counter, retention_hours: float) -> None:
    """Every PRUNE_INTERVAL_SECONDS, `prune` until it finds less than a chunk; 0 hours keeps all."""
    if retention_hours <= 0:
        return

    async def prune_past_retention() -> None:
        while (count := await prune(retention_hours * 3600, PRUNE_CHUNK)):
            pruned.inc(count)
            if count < PRUNE_CHUNK:
                break

    app.timer(interval=PRUNE_INTERVAL_SECONDS, name=f"prune_{name}")(prune_past_retention)
