"""The stream processors' producer: librdkafka sends, confirmed before the offsets behind them.

Both processors send through confluent-kafka rather than Faust's own producer (aiokafka), which
cost about 170 µs of Python per message on this machine, several times a row change's share of the
resolver's work (``bench.er`` measured the pipeline at 237 records/s with it). Delivery stays
at-least-once: a processor confirms every message of a batch (:meth:`ConfirmedProducer.confirm`
or :meth:`ConfirmedProducer.confirmed`) before it lets the batch's input offsets be committed, and
a message Kafka refuses for good ends the process, which restarts from its committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from functools import partial

from confluent_kafka import KafkaError, Message, Producer

from simpul.config import SimpulConfig
from simpul.kafka import client_config, streaming_producer_config
from simpul.schemas.wire import WireFormatError
from simpul.streams import metrics
from simpul.streams.changes import ChangeError

log = logging.getLogger(__name__)

Headers = dict[str, bytes]

# librdkafka's RD_KAFKA_PARTITION_UA: the partitioner chooses (by the key's hash).
UNASSIGNED_PARTITION = -1


def dead_letter_reason(exc: Exception) -> str:
    """A dead letter's reason: the error's kind, and its message when that by construction names
    no values (a :class:`~simpul.streams.changes.ChangeError` or a wire-format error)."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, (ChangeError, WireFormatError)) else type(exc).__name__


class DeliveryFailed(RuntimeError):
    """Kafka refused a message for good (after librdkafka's retries): the batch cannot be confirmed."""


class ConfirmedProducer:
    """An idempotent, acks=all producer whose sends a batch waits for before its offsets move on."""

    # How often a wait for Kafka's acknowledgements says that it is still waiting.
    warn_every_s = 30.0

    def __init__(self, config: SimpulConfig, client_id: str) -> None:
        self._dlq_topic = config.processors.dlq_topic
        self._producer = Producer(
            streaming_producer_config(
                client_config(config.kafka, **{"client.id": client_id, "queue.buffering.max.messages": 200_000})
            )
        )
        self._failure: KafkaError | None = None

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers | None = None,
        partition: int = UNASSIGNED_PARTITION,
        on_offset: Callable[[int], None] | None = None,
    ) -> None:
        """Queue one message (``value`` None: a tombstone); waits for room when the queue is full.

        ``partition`` unassigned leaves it to the key's hash; ``on_offset`` is called with the
        message's offset once Kafka has acknowledged it (within :meth:`confirm`/:meth:`confirmed`).
        """
        callback = self._delivered if on_offset is None else partial(self._delivered_at, on_offset)
        while True:
            try:
                self._producer.produce(topic, value, key, partition=partition, headers=headers, on_delivery=callback)
                return
            except BufferError:
                self._producer.poll(0.05)

    def dead_letter(self, stage: str, reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None) -> None:
        """Set an input aside on the dead-letter topic, with why and where it came from in its headers."""
        metrics.DEAD_LETTERS.labels(stage, reason.split(":")[0][:60]).inc()
        log.warning("%s set aside %s[%d]@%d: %s", stage, topic, partition, offset, reason)
        headers = {"stage": stage.encode(), "reason": reason.encode(), "topic": topic.encode(),
                   "partition": str(partition).encode(), "offset": str(offset).encode()}
        self.produce(self._dlq_topic, key, value, headers)

    def poll(self) -> None:
        """Serve the acknowledgements that have arrived, without waiting; raises :class:`DeliveryFailed`
        when Kafka refused a message."""
        self._producer.poll(0)
        self._raise_failure()

    def confirm(self) -> None:
        """Block until Kafka has acknowledged every message queued so far."""
        waited_since = time.monotonic()
        while len(self._producer):
            self._producer.flush(1.0)
            waited_since = self._still_waiting(waited_since)
        self._raise_failure()

    async def confirmed(self) -> None:
        """Like :meth:`confirm`, yielding to the event loop (a Faust worker's heartbeats) meanwhile."""
        waited_since = time.monotonic()
        while len(self._producer):
            await asyncio.sleep(0.001)
            self._producer.poll(0)
            waited_since = self._still_waiting(waited_since)
        self._raise_failure()

    def _still_waiting(self, since: float) -> float:
        if time.monotonic() - since < self.warn_every_s:
            return since
        log.warning("still waiting for Kafka to acknowledge %d messages", len(self._producer))
        return time.monotonic()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self._failure is None:
            self._failure = error

    def _delivered_at(self, on_offset: Callable[[int], None], error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._delivered(error, message)
        else:
            on_offset(message.offset())

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise DeliveryFailed(f"Kafka refused a message: {self._failure.str()}")
