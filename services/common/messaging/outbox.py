"""What a relay publishes: the Kafka messages each stored event stands for."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: str
    value: bytes


# (domain event, notification id) -> its messages, in the order they must be published.
# Most public events give one; private ones (a service's own bookkeeping) give none; and
# one stored fact may give two public ones (a confirmed payment that also needs a refund).
ToWire = Callable[[Any, int], list[Outgoing]]
