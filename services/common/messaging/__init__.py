"""Publishing stored events and consuming them: relay, consumer, the Kafka adapter, positions, dead
letters, chain heads on the wire, and the embedded broker."""
