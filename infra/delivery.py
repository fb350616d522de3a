"""Waiting for the broker to acknowledge what was sent."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

# EX_TEMPFAIL: the supervisor (or operator) restarts the worker, which redelivers.
DELIVERY_FAILED_EXIT_CODE = 75
# Longer than any broker retry we configure: past it, the worker is stuck, not slow.
DELIVERY_TIMEOUT_SECONDS = 120.0


async def confirm(futures: Sequence[asyncio.Future[Any]]) -> None:
    """Wait for every acknowledgement. A message that cannot be delivered must never be
    acked past, so the process stops and its uncommitted batch is redelivered on restart."""
    if not futures:
        return
    try:
        await asyncio.wait_for(asyncio.gather(*futures), DELIVERY_TIMEOUT_SECONDS)
    except Exception:  # noqa: BLE001 - any delivery failure or a hang is fatal for the batch
        log.critical("a message could not be delivered; exiting so the batch is redelivered",
                     exc_info=True)
        os._exit(DELIVERY_FAILED_EXIT_CODE)
