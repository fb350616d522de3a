"""Payment service provider: the port, its retry loop, the simulator and an HTTP adapter."""

from __future__ import annotations

from psp.http import HttpPsp
from psp.port import (
    PaymentServiceProvider,
    PspApproved,
    PspDeclined,
    PspGaveUp,
    PspOutcome,
    PspRequest,
    PspRetryableError,
    PspTimeout,
    RetryPolicy,
    capture_with_retries,
)
from psp.simulator import SimulatedPsp

SIMULATOR_URL = "simulator"

__all__ = [
    "SIMULATOR_URL",
    "HttpPsp",
    "PaymentServiceProvider",
    "PspApproved",
    "PspDeclined",
    "PspGaveUp",
    "PspOutcome",
    "PspRequest",
    "PspRetryableError",
    "PspTimeout",
    "RetryPolicy",
    "SimulatedPsp",
    "build_psp",
    "capture_with_retries",
]


def build_psp(url: str | None) -> PaymentServiceProvider:
    """The simulator unless a provider's base URL is configured (PAYMENTS_PSP_URL)."""
    if url is None or url == SIMULATOR_URL:
        return SimulatedPsp()
    return HttpPsp(url)
