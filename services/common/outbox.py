"""What a relay publishes: one Kafka message per public stored event."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: str
    value: bytes


# (domain event, notification id) -> message, or None for events that stay private.
ToWire = Callable[[Any, int], Outgoing | None]
