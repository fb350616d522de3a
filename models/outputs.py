"""What a decision says: events to publish and steps to dispatch. The agents send them."""

from __future__ import annotations

from dataclasses import dataclass

from models.events import Event
from models.steps import OwnerStep


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event


@dataclass(frozen=True, slots=True)
class Dispatch:
    """A step for the owner of `key` (an account id, or a payment id for its directory entry)."""

    key: str
    step: OwnerStep


Output = Publish | Dispatch
