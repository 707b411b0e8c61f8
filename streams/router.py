"""The router: the agencies' Debezium events in, batches of compact row changes out.

It reads every mapped CDC topic (any partition count; router processes share them as one
consumer group), decodes the Avro envelopes and sends the row changes, many to a message, to the
resolver's single-partition changes topic. It keeps no state.

The router is a plain confluent-kafka consume loop rather than a Faust agent: Faust's consumer
alone, doing nothing with the events, read 3,634 messages/s on this machine (a noop agent over
100,000 messages), below the pipeline's target; librdkafka reads tens of thousands. Each batch
is sent and acknowledged before its input offsets are committed (at-least-once); a change sent
twice after a crash carries the same source position, and the resolver drops it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from simpul.config import SimpulConfig
from simpul.kafka import client_config, committing_consumer_config, consumer_lag
from simpul.schemas.wire import ConfluentAvroDecoder, WireFormatError
from simpul.shutdown import Shutdown
from simpul.streams import metrics
from simpul.streams.changes import ChangeError, RowChange, encode_changes, row_change, value_converters
from simpul.streams.producer import ConfirmedProducer, dead_letter_reason
from simpul.streams.topology import SourceTopic, create_router_topics, load_resolver_mapping, source_topics

log = logging.getLogger(__name__)

# A changes message stays well below Kafka's default 1 MiB limit even for wide rows.
_MAX_BATCH_BYTES = 512 * 1024


class SchemaUnavailable(RuntimeError):
    """The registry could not be asked for a writer schema (down or unreachable): retry later."""


class EnvelopeReader:
    """Debezium Avro events to row changes, each writer schema fetched from the registry once."""

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self._registry = registry
        self._decoder = ConfluentAvroDecoder(self._schema_text)
        self._converters: dict[int, dict[str, Callable[[Any], Any]]] = {}

    def row_change(self, where: SourceTopic, value: bytes) -> RowChange:
        """The row change in ``value``, an event of ``where``'s topic.

        Raises :class:`WireFormatError` or :class:`ChangeError` (and the decoder's errors) for an
        event that is not one, :class:`SchemaUnavailable` when the registry cannot be asked.
        """
        schema_id, envelope = self._decoder.decode_with_id(value)
        converters = self._converters.get(schema_id)
        if converters is None:
            converters = self._converters[schema_id] = value_converters(json.loads(self._schema_text(schema_id)))
        return row_change(where.source, where.table, where.key_column, envelope, converters)

    def _schema_text(self, schema_id: int) -> str:
        try:
            return self._registry.get_schema(schema_id).schema_str
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                raise WireFormatError(f"schema id {schema_id} is not in the registry") from None
            raise SchemaUnavailable(f"schema registry error {exc.http_status_code}") from None
        except Exception as exc:  # noqa: BLE001 - the client's transport errors (httpx) are not OSErrors
            raise SchemaUnavailable(f"schema registry unreachable ({type(exc).__name__})") from None


class ChangeRouter:
    """Routes the configured sources' CDC topics to the changes topic until stopped."""

    def __init__(self, config: SimpulConfig, registry: SchemaRegistryClient | None = None) -> None:
        p = config.processors
        self.changes_topic = p.changes_topic
        self.batch_size = p.batch_size
        self.wait_s = p.batch_ms / 1000
        inputs = source_topics(config, load_resolver_mapping(config))
        create_router_topics(config, inputs)
        self.inputs = {t.topic: t for t in inputs}
        self.envelopes = EnvelopeReader(registry or SchemaRegistryClient({"url": config.schema_registry.url}))
        self.producer = ConfirmedProducer(config, "simpul-router")
        self.consumer = Consumer(committing_consumer_config(client_config(config.kafka), f"{p.app_id}-router"))

    def run(self, shutdown: Shutdown) -> None:
        """Route batches until ``shutdown`` is requested; each commits after its changes are acknowledged."""
        self.consumer.subscribe(list(self.inputs))
        backoff = 0.5
        last_lag = 0.0
        try:
            while not shutdown.requested:
                if time.monotonic() - last_lag > 2.0:
                    lag = consumer_lag(self.consumer, self.consumer.assignment())
                    for topic in self.inputs:
                        metrics.ROUTER_LAG.labels(topic).set(lag.get(topic, 0))
                    last_lag = time.monotonic()
                messages = self.consumer.consume(self.batch_size, timeout=self.wait_s)
                if not messages:
                    continue
                try:
                    self.route(messages)
                except SchemaUnavailable as exc:
                    log.error("router: %s; retrying the batch in %.1f s", exc, backoff)
                    self._rewind(messages)
                    shutdown.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
        finally:
            self.consumer.close()

    def route(self, messages: list[Message]) -> None:
        """Send the row changes of ``messages`` (bad ones to the dead-letter topic), wait for
        Kafka's acknowledgement, then commit the messages' offsets."""
        changes: list[RowChange] = []
        for message in messages:
            if message.error() is not None:
                _raise_if_fatal(message.error())
                continue
            if message.value() is None:
                continue  # the tombstone after a delete: the delete event itself carried the change
            where = self.inputs[message.topic()]
            try:
                changes.append(self.envelopes.row_change(where, message.value()))
            except (ChangeError, WireFormatError, ValueError, KeyError, TypeError, EOFError) as exc:
                self.producer.dead_letter("router", dead_letter_reason(exc), message.topic(), message.partition(), message.offset(), message.key(), message.value())
                continue
            metrics.ROUTED.inc((where.source, where.table))
        self._send(changes)
        self.producer.confirm()
        offsets: dict[tuple[str, int], int] = {}
        for message in messages:
            offsets[(message.topic(), message.partition())] = message.offset() + 1
        try:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions away: their new owner repeats these changes, which
            # the resolver recognises by their source positions.
            log.warning("router: offsets not committed (%s)", exc.args[0].name())

    def _send(self, changes: list[RowChange]) -> None:
        if not changes:
            return
        value = encode_changes(changes)
        if len(value) > _MAX_BATCH_BYTES and len(changes) > 1:
            half = len(changes) // 2
            self._send(changes[:half])
            self._send(changes[half:])
            return
        self.producer.produce(self.changes_topic, None, value)

    def _rewind(self, messages: list[Message]) -> None:
        first: dict[tuple[str, int], int] = {}
        for message in messages:
            first.setdefault((message.topic(), message.partition()), message.offset())
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))


def _raise_if_fatal(error: KafkaError) -> None:
    if error.fatal():
        raise KafkaException(error)
    log.warning("router: consumer reported %s", error.name())


def run_router(config: SimpulConfig) -> None:
    """Run the router in this process until SIGTERM or SIGINT."""
    from simpul.metrics import metrics_port, serve_metrics

    shutdown = Shutdown().install()
    router = ChangeRouter(config)
    serve_metrics(config.metrics.host, metrics_port(config, "router"))
    started = time.monotonic()
    router.run(shutdown)
    log.info("router stopped after %.0f s", time.monotonic() - started)
