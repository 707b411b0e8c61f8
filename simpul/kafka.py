"""Kafka clients and topics, the one way Simpul makes them (confluent-kafka underneath)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from simpul.config import KafkaSettings

ClientConfig = dict[str, Any]


class TopicError(RuntimeError):
    """A topic could not be created, or did not become usable in time."""


def client_config(kafka: KafkaSettings, **overrides: Any) -> ClientConfig:
    """librdkafka settings for a client of ``kafka``: bootstrap servers, the configured extras,
    then ``overrides`` (dots spelled as underscores are not accepted: pass a dict for those)."""
    return {"bootstrap.servers": kafka.bootstrap_servers, **kafka.client, **overrides}


def reliable_producer_config(base: Mapping[str, Any]) -> ClientConfig:
    """A producer that neither loses nor reorders nor duplicates on retry: idempotent, acks=all."""
    return {**base, "enable.idempotence": True, "acks": "all"}


def streaming_producer_config(base: Mapping[str, Any]) -> ClientConfig:
    """A reliable producer for a steady stream of small messages (the CDC connectors' and the
    stream processors'): lz4-compressed, each batch held up to 20 ms to fill (``base`` may say otherwise).

    Under the steady end-to-end load (``bench.e2e``) the broker spent 37-41% of a core on tiny
    produce requests with 5 ms, 27% with 20 ms; a message waits at most that long.
    """
    return reliable_producer_config({"compression.type": "lz4", "linger.ms": 20, **base})


def committing_consumer_config(base: Mapping[str, Any], group: str) -> ClientConfig:
    """A consumer in ``group`` that commits its offsets itself, once what it consumed is safe
    elsewhere, and starts from the beginning when the group has none (reading committed data only)."""
    return {
        **base,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "fetch.wait.max.ms": 50,
        "fetch.min.bytes": 16_384,
    }


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Up to ``max_messages`` messages (and error events): waits up to ``timeout`` for the first,
    then takes only what the client has already fetched.

    ``Consumer.consume(n, timeout)`` returns early only with ``n`` messages: under a light load
    every message waited out the whole timeout (measured: 100-200 ms with 0.2 s). Here a message
    is handed over as soon as it arrives, and under load the batch is whatever piled up meanwhile.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    if max_messages <= 1:
        return [first]
    return [first, *consumer.consume(max_messages - 1, timeout=0)]


def consumer_lag(consumer: Any, partitions: Sequence[TopicPartition]) -> dict[str, int]:
    """Per topic, the messages of ``partitions`` that ``consumer`` has not read yet (from its
    positions and the cached high watermarks, so no broker round trip)."""
    lag: dict[str, int] = {}
    if not partitions:
        return lag
    for tp in consumer.position(list(partitions)):
        low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high >= 0:
            position = tp.offset if tp.offset >= 0 else max(low, 0)
            lag[tp.topic] = lag.get(tp.topic, 0) + max(0, high - position)
    return lag


def create_topics(base: Mapping[str, Any], topics: Sequence[NewTopic], timeout_s: float = 30.0) -> None:
    """Create ``topics`` unless they exist, then wait until every partition has a leader.

    The wait matters: a topic the controller has just created is not yet known to every broker,
    and a client that asks at once gets "unknown partition".
    """
    admin = AdminClient(dict(base))
    futures = admin.create_topics(list(topics), operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise TopicError(f"cannot create topic {name!r}: {exc.args[0].str()}") from exc
    deadline = time.monotonic() + timeout_s
    for topic in topics:
        while not _has_leaders(admin, topic.topic):
            if time.monotonic() > deadline:
                raise TopicError(f"topic {topic.topic!r} has partitions without a leader after {timeout_s:.0f} s")
            time.sleep(0.1)


def _has_leaders(admin: AdminClient, topic: str) -> bool:
    metadata = admin.list_topics(topic, timeout=5).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        return False
    return all(partition.leader >= 0 for partition in metadata.partitions.values())
