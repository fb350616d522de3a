"""`payments bench`: the service against the classic row-lock design, in one run.

The two workloads of the performance issue are shared by both designs, so each measures
the same traffic: `uniform` (random pairs among 40 accounts) and `hot` (one debtor pays
every creditor).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

ACCOUNTS = 40
WORKLOADS = ("uniform", "hot")


@dataclass(frozen=True, slots=True)
class Transfer:
    debtor: str
    creditor: str
    amount: int  # minor units


def account_ids(prefix: str, count: int = ACCOUNTS) -> list[str]:
    return [f"{prefix}-{number:02d}" for number in range(count)]


def transfers(workload: str, accounts: Sequence[str], *, seed: int) -> Iterator[Transfer]:
    """An endless, seeded stream of transfers of the named workload."""
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}: one of {', '.join(WORKLOADS)}")
    draw = random.Random(seed)
    while True:
        if workload == "hot":
            debtor, creditor = accounts[0], draw.choice(accounts[1:])
        else:
            debtor, creditor = draw.sample(accounts, 2)
        yield Transfer(debtor, creditor, draw.randint(1, 10_000))


def check_worker_counts(counts: Sequence[int]) -> None:
    """The service is measured at each count in turn, workers joining the running ones."""
    if not counts or list(counts) != sorted(set(counts)) or counts[0] < 1:
        raise ValueError(f"worker counts must be increasing and at least 1, not {list(counts)}")


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1) of unsorted values; 0.0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]
