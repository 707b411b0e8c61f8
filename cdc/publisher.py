"""Publishing change events: Avro in the Confluent wire format, to Kafka, with positions confirmed
only once Kafka has acknowledged everything before them.

Every connector hands its events here. The publisher registers schemas (TopicNameStrategy),
creates topics, produces with an idempotent ``acks=all`` producer partitioned like Java clients
(murmur2, so Kafka Streams and Connect co-partition with us), and keeps the ordered list of
*checkpoints* a connector marks after each source transaction. :meth:`EventPublisher.confirmed`
answers the newest checkpoint whose events have all been acknowledged: the only position a
connector may confirm to its database or store as its offset.

Rows that cannot be encoded, and events whose new schema the registry refuses, go to the source's
dead-letter topic as JSON with the reason and the source position, so the connector keeps going.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time as dtime
from decimal import Decimal
from typing import Any

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from simpul.cdc import metrics
from simpul.config import SimpulConfig, SourceSettings
from simpul.kafka import client_config, create_topics, streaming_producer_config
from simpul.cdc.row_encoding import DeadLetter, EncodedEvent, Position
from simpul.schemas.registrar import SchemaRegistrar
from simpul.schemas.wire import ConfluentAvroEncoder

log = logging.getLogger(__name__)

HEARTBEAT_KEY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ServerNameKey",
    "namespace": "io.debezium.connector.common",
    "fields": [{"name": "serverName", "type": "string"}],
    "connect.name": "io.debezium.connector.common.ServerNameKey",
}
HEARTBEAT_VALUE_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Heartbeat",
    "namespace": "io.debezium.connector.common",
    "fields": [{"name": "ts_ms", "type": "long"}],
    "connect.name": "io.debezium.connector.common.Heartbeat",
}


@dataclass(slots=True)
class _Batch:
    """One topic's events for a single call into librdkafka: the messages, their bytes as
    librdkafka counts them against its queue's limit, and the commit times to time."""

    messages: list[dict[str, bytes | None]] = field(default_factory=list)
    size: int = 0
    commit_times: list[int] = field(default_factory=list)

    def add(self, key: bytes | None, value: bytes | None, commit_ts_ms: int | None) -> None:
        """One more event (``value`` None: a tombstone)."""
        self.messages.append({"key": key, "value": value})
        self.size += (len(key) if key is not None else 0) + (len(value) if value is not None else 0)
        if commit_ts_ms is not None:
            self.commit_times.append(commit_ts_ms)


class IncompatibleSchema(Exception):
    """The registry refused a table's new schema (incompatible or invalid)."""


class PublishError(RuntimeError):
    """Kafka refused an event for good: the connector must stop without confirming past it."""


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    if isinstance(value, (Decimal, set, frozenset)):
        return str(value) if isinstance(value, Decimal) else sorted(value)
    return repr(value)


def heartbeat_topic(source: SourceSettings) -> str:
    """Debezium's heartbeat topic: ``__debezium-heartbeat.<prefix>``."""
    return f"__debezium-heartbeat.{source.topic_prefix}"


def dead_letter_topic(source: SourceSettings) -> str:
    """Where the source's set-aside rows go: ``<prefix>.dlq``."""
    return f"{source.topic_prefix}.dlq"


class EventPublisher:
    """Produces one source's events and tracks which positions are safe to confirm.

    Single-threaded by design: delivery callbacks run inside :meth:`poll`/:meth:`flush` on the
    caller's thread, so the bookkeeping needs no locks.
    """

    # Bounded memory: a million-row transaction waits on Kafka instead of piling up here.
    local_queue_messages = 100_000
    _local_queue_bytes = 64 * 1024 * 1024

    def __init__(self, config: SimpulConfig, source: SourceSettings, registrar: SchemaRegistrar | None = None) -> None:
        self.config = config
        self.source = source
        base = client_config(config.kafka)
        self._producer = Producer(
            streaming_producer_config(
                {
                    **base,
                    "client.id": f"simpul-cdc-{source.name}",
                    "partitioner": "murmur2_random",
                    "queue.buffering.max.messages": self.local_queue_messages,
                    "queue.buffering.max.kbytes": self._local_queue_bytes // 1024,
                }
            )
        )
        self._registrar = registrar or SchemaRegistrar(SchemaRegistryClient({"url": config.schema_registry.url}))
        self._topics: set[str] = set()
        self._encoders: dict[tuple[int, bool], tuple[object, ConfluentAvroEncoder]] = {}
        self._next_seq = 0
        # Sequence number to the events of it not yet acknowledged (a single event or a topic's batch).
        self._pending: dict[int, int] = {}
        # The bytes of the batches not yet acknowledged (see :meth:`_produce_batch`).
        self._pending_bytes = 0
        self._checkpoints: deque[tuple[int, Position]] = deque()
        self._failure: KafkaError | None = None
        self.dead_letters = 0
        self._commit_to_ack = metrics.COMMIT_TO_ACK.labels(source.name)

    # --- topics and schemas ----------------------------------------------------------------------

    def ensure_topics(self, topics: Iterable[str]) -> None:
        """Create the topics not yet known to exist (partitions and replication from the config)."""
        missing = [t for t in topics if t not in self._topics]
        if not missing:
            return
        kafka = self.config.kafka
        create_topics(client_config(kafka), [NewTopic(t, kafka.partitions, kafka.replication_factor) for t in missing])
        self._topics.update(missing)

    def register_table(self, topic: str, table: str, key_schema: dict[str, Any] | None, value_schema: dict[str, Any]) -> tuple[int | None, int | None, str | None]:
        """Register a table's key and value schemas on ``topic``: (key id, value id, None), or
        (None, None, why) when the registry refuses them, which is logged here: the table's rows
        go to the dead letters until its next description."""
        try:
            key_id = self.encoder(topic, key_schema, True).schema_id if key_schema is not None else None
            return key_id, self.encoder(topic, value_schema, False).schema_id, None
        except IncompatibleSchema as exc:
            log.warning("%s: the registry refused the new schema of %s; its rows go to the dead letters", self.source.name, table)
            return None, None, f"{type(exc).__name__}: {exc}"

    def encoder(self, topic: str, schema: dict[str, Any], is_key: bool) -> ConfluentAvroEncoder:
        """The encoder of ``schema`` on ``topic``, registering it the first time it is seen.

        A value encoder reuses the bytes of a ``source`` block passed again (see
        :class:`ConfluentAvroEncoder`): connectors pass one ``source`` dict for every event at one
        source position (every row of a snapshot's table), and never change it once published.

        Raises :class:`IncompatibleSchema` when the registry refuses it (HTTP 409 or 422).
        """
        cache_key = (id(schema), is_key)
        cached = self._encoders.get(cache_key)
        if cached is not None and cached[0] is schema:
            return cached[1]
        for attempt in range(8):
            try:
                registration = self._registrar.register(topic, schema, is_key)
                break
            except SchemaRegistryError as exc:
                if exc.http_status_code in (409, 422):
                    raise IncompatibleSchema(f"{topic}-{'key' if is_key else 'value'}: {exc.error_message}") from exc
                if attempt == 7:
                    raise
            except OSError:
                if attempt == 7:
                    raise
            # The registry is restarting or briefly unreachable: back off, do not crash-loop.
            time.sleep(min(0.25 * 2**attempt, 8))
        encoder = ConfluentAvroEncoder(schema, registration.schema_id, repeated_field=None if is_key else "source")
        # Holding ``schema`` in the cache keeps its id from being reused by another object.
        self._encoders[cache_key] = (schema, encoder)
        return encoder

    # --- producing -------------------------------------------------------------------------------

    def publish_many(self, events: Iterable[EncodedEvent]) -> None:
        """Produce events encoded with schemas registered through :meth:`encoder` (a value of
        None: a tombstone), in order within each topic, which is the order Kafka keeps.

        Each topic's events go to librdkafka in one call, counted as acknowledged together:
        2.0 against 4.8 µs of this process per event for a call each (a throwaway
        ``produce_batch`` against ``produce`` measurement on the local stack), and producing was a
        third of a snapshot's connector process. An event's commit time, when it has one, times
        its commit-to-acknowledgement lag, taken when its batch is acknowledged.
        """
        most_messages, most_bytes = self.local_queue_messages // 4, self._local_queue_bytes // 4
        batches: dict[str, _Batch] = {}
        counts: dict[tuple[str, str, str], int] = {}
        name = self.source.name
        for topic, key, value, table, op, commit_ts_ms in events:
            batch = batches.get(topic)
            if batch is None:
                batch = batches[topic] = _Batch()
            batch.add(key, value, commit_ts_ms)
            if len(batch.messages) >= most_messages or batch.size >= most_bytes:
                self._produce_batch(topic, batches.pop(topic))
            if op is not None:
                labels = (name, table, op)
                counts[labels] = counts.get(labels, 0) + 1
        for topic, batch in batches.items():
            self._produce_batch(topic, batch)
        for labels, n in counts.items():
            metrics.EVENTS.inc(labels, n)

    def heartbeat(self, ts_ms: int) -> None:
        """A Debezium heartbeat record, so a slot on an idle or filtered database can advance."""
        topic = heartbeat_topic(self.source)
        self.ensure_topics([topic])
        key = self.encoder(topic, HEARTBEAT_KEY_SCHEMA, True).encode({"serverName": self.source.topic_prefix})
        value = self.encoder(topic, HEARTBEAT_VALUE_SCHEMA, False).encode({"ts_ms": ts_ms})
        self._produce(topic, key, value)
        metrics.HEARTBEATS.labels(self.source.name).inc()

    def dead_letter(self, letter: DeadLetter) -> None:
        """Set a row aside on the dead-letter topic, with Kafka Connect's error headers."""
        topic = dead_letter_topic(self.source)
        self.ensure_topics([topic])
        body = {
            "source": self.source.name,
            "table": letter.table,
            "reason": letter.reason,
            "message": letter.message,
            "position": letter.position,
            "key": letter.key,
            "row": letter.row,
            "ts_ms": int(time.time() * 1000),
        }
        headers = [
            ("__connect.errors.topic", letter.table.encode()),
            ("__connect.errors.exception.class.name", letter.reason.encode()),
            ("__connect.errors.exception.message", letter.message.encode()[:4096]),
        ]
        key = json.dumps(letter.key, default=_json_default, sort_keys=True).encode() if letter.key else None
        self._produce(topic, key, json.dumps(body, default=_json_default).encode(), headers)
        metrics.DEAD_LETTERS.labels(self.source.name, letter.table, letter.reason).inc()
        self.dead_letters += 1

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]] | None = None) -> None:
        seq = self._track(1)

        def delivered(error: KafkaError | None, message: Message) -> None:
            del self._pending[seq]
            if error is not None and self._failure is None:
                self._failure = error

        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, on_delivery=delivered)
                break
            except BufferError:
                # The local queue is full: let deliveries drain it (bounded memory, back-pressure).
                self._producer.poll(0.05)
        self._raise_on_failure()

    def _produce_batch(self, topic: str, batch: _Batch) -> None:
        """Queue ``batch`` to ``topic`` in order, as one tracked unit.

        It waits until the local queue has room for all of it (bounded memory, back-pressure):
        librdkafka refuses what does not fit one message at a time, and a smaller message after a
        refused larger one could be queued ahead of it, out of its key's order.
        """
        messages, size, commit_times = batch.messages, batch.size, batch.commit_times
        while self._pending and (len(self._producer) + len(messages) > self.local_queue_messages or self._pending_bytes + size > self._local_queue_bytes):
            self._producer.poll(0.05)
            self._raise_on_failure()
        seq = self._track(len(messages))
        self._pending_bytes += size

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None and self._failure is None:
                self._failure = error
            left = self._pending[seq] - 1
            if left:
                self._pending[seq] = left
                return
            del self._pending[seq]
            self._pending_bytes -= size
            now_ms = time.time() * 1000
            for commit_ts_ms in commit_times:
                self._commit_to_ack.observe(max(now_ms - commit_ts_ms, 0) / 1000)

        if self._producer.produce_batch(topic, messages, on_delivery=delivered) < len(messages) and self._failure is None:
            # Refused messages carry their error (too large, unknown topic ...); the rest may be delivered.
            self._failure = next(m["_error"] for m in messages if "_error" in m)
        self._raise_on_failure()

    def _track(self, events: int) -> int:
        """A sequence number for ``events`` about to be produced, pending until all are acknowledged."""
        seq = self._next_seq
        self._next_seq += 1
        self._pending[seq] = events
        return seq

    # --- positions -------------------------------------------------------------------------------

    def checkpoint(self, position: Position) -> None:
        """Mark that every event published so far belongs at or before ``position``."""
        self._checkpoints.append((self._next_seq, position))

    def confirmed(self) -> Position | None:
        """The newest checkpoint all of whose events Kafka has acknowledged, once; None if no new one."""
        self._producer.poll(0)
        self._raise_on_failure()
        lowest_pending = next(iter(self._pending), self._next_seq)
        newest = None
        while self._checkpoints and self._checkpoints[0][0] <= lowest_pending:
            newest = self._checkpoints.popleft()[1]
        metrics.QUEUE_DEPTH.labels(self.source.name).set(self.in_flight)
        return newest

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports; raise :class:`PublishError` if Kafka refused an event."""
        self._producer.poll(timeout)
        self._raise_on_failure()

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every event is acknowledged (or ``timeout``)."""
        remaining = self._producer.flush(timeout)
        self._raise_on_failure()
        if remaining:
            raise PublishError(f"{remaining} event(s) still unacknowledged after {timeout:.0f} s")

    @property
    def in_flight(self) -> int:
        """Events produced and not yet acknowledged."""
        return len(self._producer)

    def _raise_on_failure(self) -> None:
        if self._failure is not None:
            raise PublishError(f"Kafka refused an event: {self._failure.str()}")

    def close(self) -> None:
        """Flush what is left and release the producer."""
        try:
            self._producer.flush(10)
        finally:
            self._producer.close()
