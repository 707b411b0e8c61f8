"""A compacted, single-partition Kafka topic used as a small durable store (the schema registry's
state, the CDC connectors' offsets).

Writes are produced idempotently with ``acks=all`` and count once acknowledged; the reader then
reads up to the acknowledged offset, so the in-memory state is always derived from the log alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from simpul.kafka import TopicError, create_topics, reliable_producer_config

Apply = Callable[[bytes, bytes | None], None]

_NOT_YET = (
    KafkaError._UNKNOWN_PARTITION,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
)


class StoreError(RuntimeError):
    """The storage topic could not be created, read or written."""


@dataclass(frozen=True)
class StoreSettings:
    """Where the storage topic lives."""

    bootstrap_servers: str
    topic: str = "_schemas"
    replication_factor: int = 1
    client: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    timeout_s: float = 30.0
    client_id: str = "simpul-registry"


class KafkaStore:
    """Append records to the storage topic and read it to its end. Not thread-safe: the
    registry serialises every call under its own lock."""

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        common = {"bootstrap.servers": settings.bootstrap_servers, **settings.client}
        self._common = common
        self._producer = Producer(
            reliable_producer_config({**common, "linger.ms": 0, "client.id": settings.client_id})
        )
        self._consumer = Consumer(
            {
                **common,
                # Never joins the group (partitions are assigned by hand) and never commits:
                # every start replays the topic from the beginning.
                "group.id": f"{settings.client_id}-reader",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # Each write waits until this reader sees it: the default 500 ms long poll would
                # make every registration take half a second.
                "fetch.wait.max.ms": 50,
                "client.id": f"{settings.client_id}-reader",
            }
        )
        self._partition = TopicPartition(settings.topic, 0)
        self._started = False

    def ensure_topic(self) -> None:
        """Create the storage topic (compacted, one partition) unless it exists."""
        topic = NewTopic(
            self._settings.topic,
            num_partitions=1,
            replication_factor=self._settings.replication_factor,
            config={"cleanup.policy": "compact"},
        )
        try:
            create_topics(self._common, [topic], self._settings.timeout_s)
        except TopicError as exc:
            raise StoreError(f"storage topic: {exc}") from exc

    def end_offset(self, cached: bool = False) -> int:
        """The offset after the last record. ``cached`` answers from the last fetch response
        instead of asking the broker, which would queue behind the reader's long poll."""
        if not self._started:
            self._consumer.assign([TopicPartition(self._settings.topic, 0, OFFSET_BEGINNING)])
            self._started = True
        deadline = time.monotonic() + self._settings.timeout_s
        while True:
            try:
                _, end = self._consumer.get_watermark_offsets(
                    self._partition, timeout=self._settings.timeout_s, cached=cached
                )
                return max(end, 0)
            except KafkaException as exc:
                # A just-created topic, or a broker that has just started and not yet taken the
                # partition's leadership: ask again shortly.
                if exc.args[0].code() not in _NOT_YET or time.monotonic() > deadline:
                    raise StoreError(f"cannot read the end offset of {self._settings.topic!r}: {exc}") from exc
                time.sleep(0.1)

    def catch_up(self, apply: Apply) -> int:
        """Apply every record up to the topic's current end; the number applied."""
        return self.read_to(apply, self.end_offset())

    def read_to(self, apply: Apply, end: int) -> int:
        """Apply every record before offset ``end``; the number applied."""
        if not self._started:
            self.end_offset()
        applied = 0
        position = self._position()
        deadline = time.monotonic() + self._settings.timeout_s
        while position < end:
            if time.monotonic() > deadline:
                raise StoreError(f"storage topic {self._settings.topic!r}: stuck at offset {position} of {end}")
            message = self._consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    position = max(position, message.offset())
                    continue
                raise StoreError(f"storage topic {self._settings.topic!r}: {error}")
            apply(message.key(), message.value())
            applied += 1
            position = message.offset() + 1
        return applied

    def _position(self) -> int:
        offset = self._consumer.position([self._partition])[0].offset
        # Before the first fetch the position is a logical offset (negative): nothing read yet.
        return max(offset, 0)

    def append(self, key: bytes, value: bytes | None) -> int:
        """Write one record, wait until every in-sync replica has it; its offset."""
        failures: list[KafkaError] = []
        offsets: list[int] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error)
            else:
                offsets.append(message.offset())

        self._producer.produce(self._settings.topic, key=key, value=value, partition=0, on_delivery=delivered)
        remaining = self._producer.flush(self._settings.timeout_s)
        if remaining or failures or not offsets:
            reason = failures[0] if failures else "timed out"
            raise StoreError(f"write to storage topic {self._settings.topic!r} failed: {reason}")
        return offsets[0]

    def close(self) -> None:
        """Release the Kafka clients (their connections end now, not when collected)."""
        self._producer.flush(self._settings.timeout_s)
        self._producer.close()
        self._consumer.close()
