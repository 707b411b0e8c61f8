"""The one consume loop of every sink: Kafka batches in, one database transaction per batch.

A :class:`SinkTarget` owns a database. It tells where each assigned partition resumes (its own
offsets table, see :mod:`simpul.sinks.offsets`) and writes a batch together with the batch's
offsets in one transaction. Kafka's committed offsets are written too, after the database commit,
but only so that standard tools show the group's lag: the database is the truth.

A failed write (the database restarting, a lost connection) is retried from the database's
offsets after a back-off: nothing is skipped, and nothing is applied twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from simpul.config import SimpulConfig
from simpul.schemas.resolution import SOURCE_TS_HEADER
from simpul.kafka import client_config, committing_consumer_config, consume_available, consumer_lag
from simpul.shutdown import Shutdown
from simpul.sinks import metrics
from simpul.sinks.offsets import Partition, next_offsets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkMessage:
    """One consumed message: position, raw key and value (None: a tombstone), and the source
    commit time of the change behind it (the resolver's ``source_ts_ms`` header), if any."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    source_ts_ms: int | None = None

    @classmethod
    def of(cls, message: Message) -> SinkMessage:
        """From a confluent-kafka message."""
        source_ts = None
        for name, raw in message.headers() or ():
            if name == SOURCE_TS_HEADER and raw:
                source_ts = int(raw)
        return cls(message.topic(), message.partition(), message.offset(), message.key(), message.value(), source_ts)


def utc_from_ms(epoch_ms: int) -> datetime:
    """An epoch-milliseconds time (as the resolver's messages carry them) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC)


@dataclass
class WriteResult:
    """What one committed batch did, for the metrics."""

    applied: int = 0
    skipped: int = 0
    latencies_s: list[float] = field(default_factory=list)


class SinkTarget(Protocol):
    """A database a sink writes to."""

    name: str

    def stored_offsets(self, consumer: str) -> dict[Partition, int]:
        """Next offset per partition, as last committed by ``consumer``."""

    def write(self, consumer: str, messages: Sequence[SinkMessage]) -> WriteResult:
        """Apply the not-yet-consumed ``messages`` and save their offsets, in one transaction."""

    def reconnect(self) -> None:
        """Drop and reopen the database connection (after a failed write)."""


class SinkRunner:
    """Consumes ``topics`` into ``target`` in batches of up to ``batch_size`` messages: each batch
    is what has arrived, written as soon as there is any; ``wait_s`` is how long an idle loop waits
    for a message before it checks for a stop request."""

    def __init__(
        self, config: SimpulConfig, consumer: str, topics: list[str], target: SinkTarget, batch_size: int = 5000, wait_s: float = 0.2
    ) -> None:
        self.consumer_name = consumer
        self.topics = topics
        self.target = target
        self.batch_size = batch_size
        self.wait_s = wait_s
        self.consumer = Consumer(committing_consumer_config(client_config(config.kafka), consumer))
        self._assigned: list[TopicPartition] = []

    def run(self, shutdown: Shutdown) -> None:
        """Consume until ``shutdown`` is requested; every batch commits with its offsets."""
        self.consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        backoff = 0.5
        last_lag = 0.0
        try:
            while not shutdown.requested:
                batch = [m for m in consume_available(self.consumer, self.batch_size, self.wait_s) if self._usable(m)]
                if batch:
                    if not self._write(batch):
                        shutdown.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        self._rewind()
                        continue
                    backoff = 0.5
                if time.monotonic() - last_lag > 2.0:
                    self._report_lag()
                    last_lag = time.monotonic()
        finally:
            self.consumer.close()

    def _write(self, batch: list[Message]) -> bool:
        messages = [SinkMessage.of(m) for m in batch]
        started = time.perf_counter()
        try:
            result = self.target.write(self.consumer_name, messages)
        except Exception as exc:  # noqa: BLE001 - the database may be restarting; retry from its offsets
            log.error("%s: batch of %d not written (%s); retrying from the stored offsets", self.target.name, len(batch), type(exc).__name__)
            try:
                self.target.reconnect()
            except Exception as again:  # noqa: BLE001 - still down: the next attempt reports it
                log.error("%s: reconnect failed (%s)", self.target.name, type(again).__name__)
            return False
        sink = self.target.name
        metrics.TRANSACTIONS.labels(sink).inc()
        metrics.TRANSACTION_SECONDS.labels(sink).observe(time.perf_counter() - started)
        for seconds in result.latencies_s:
            metrics.END_TO_END_SECONDS.labels(sink).observe(seconds)
        # Only for lag tools; the database's offsets are the ones the sink resumes from.
        committed = next_offsets(messages)
        self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in committed.items()], asynchronous=True)
        return True

    def _usable(self, message: Message) -> bool:
        error = message.error()
        if error is None:
            return True
        if error.code() != KafkaError._PARTITION_EOF:
            log.warning("%s: consumer error: %s", self.target.name, error.str())
        return False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.target.stored_offsets(self.consumer_name)
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        self._assigned = list(partitions)
        consumer.assign(partitions)
        log.info("%s: assigned %d partition(s), resuming from the database's offsets", self.target.name, len(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = []
        consumer.unassign()

    def _rewind(self) -> None:
        """Seek every assigned partition back to the database's offsets (after a failed write)."""
        try:
            stored = self.target.stored_offsets(self.consumer_name)
        except Exception as exc:  # noqa: BLE001 - the next write attempt retries
            log.error("%s: offsets not readable (%s)", self.target.name, type(exc).__name__)
            return
        for tp in self._assigned:
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)))

    def _report_lag(self) -> None:
        for topic, value in consumer_lag(self.consumer, self._assigned).items():
            metrics.CONSUMER_LAG.labels(self.target.name, topic).set(value)
