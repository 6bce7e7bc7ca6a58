"""The public event contract of Régie: what other systems read from Kafka.

Nothing here imports from the services: subscribers may vendor this package alone.
"""

from events.envelope import Envelope, EnvelopeError, decode, encode
from events.registry import REGISTRY, EventType, UnknownEventType
from events.topics import AUDIT_CHAIN_HEADS, BILLING_INVOICES, PAYMENT_PAYMENTS, TOPICS

__all__ = [
    "AUDIT_CHAIN_HEADS",
    "BILLING_INVOICES",
    "PAYMENT_PAYMENTS",
    "REGISTRY",
    "TOPICS",
    "Envelope",
    "EnvelopeError",
    "EventType",
    "UnknownEventType",
    "decode",
    "encode",
]
