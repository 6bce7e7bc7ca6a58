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


def ensure_topic(settings: Settings, name: str) -> tuple[int, bool]:
    """Create the topic if missing; return its partition count and whether we created it."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10000)
    try:
        created = False
        if name not in set(admin.list_topics()):
            try:
                admin.create_topics(
                    [NewTopic(name, num_partitions=settings.kafka_partitions,
                              replication_factor=1)]
                )
                created = True
                log.info("created topic %s with %d partitions", name, settings.kafka_partitions)
            except TopicAlreadyExistsError:
                pass
        described = admin.describe_topics([name])
        return len(described[0]["partitions"]), created
    finally:
        admin.close()
