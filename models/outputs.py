"""What a decision says: events to publish and steps to dispatch. The agents send them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.events import Event
from models.steps import Step

Route = Literal["payment", "account", "psp", "ledger"]


@dataclass(frozen=True, slots=True)
class Publish:
    event: Event


@dataclass(frozen=True, slots=True)
class Dispatch:
    route: Route
    key: str
    step: Step


Output = Publish | Dispatch
