"""kafka-python clients configured the same way everywhere."""

import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from services.common.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings) -> KafkaProducer:
    # One request in flight per connection keeps each partition in the order we send.
    return KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        acks="all",
        retries=5,
        max_in_flight_requests_per_connection=1,
        linger_ms=5,
        batch_size=262144,
        request_timeout_ms=10000,
        max_block_ms=10000,
        # A topic must only ever be created by ensure_topics, so that a relay notices an
        # emptied broker instead of writing into an auto-created, shorter history.
        allow_auto_create_topics=False,
    )


def consumer(settings: Settings, topic: str, group: str, **extra: Any) -> KafkaConsumer:
    session = settings.session_timeout_ms()
    return KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=session,
        heartbeat_interval_ms=max(300, session // 6),
        max_poll_records=1000,
        allow_auto_create_topics=False,
        **extra,
    )


def ensure_topics(settings: Settings, names: list[str]) -> set[str]:
    """Create the missing topics; return the names it had to create."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        created: set[str] = set()
        for name in names:
            if name in existing:
                continue
            try:
                admin.create_topics(
                    [NewTopic(name, num_partitions=settings.kafka_partitions,
                              replication_factor=1)]
                )
                created.add(name)
                log.info("created topic %s with %d partitions", name, settings.kafka_partitions)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        admin.close()
