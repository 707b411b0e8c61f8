"""The Faust application: a router and a resolver agent, their durable tables and topics.

- **router** reads the agencies' CDC topics (any partition count), decodes the Debezium Avro
  events and forwards each as a compact :class:`RowChange` to one single-partition changes topic.
  It keeps no state, so it scales with the CDC topics' partitions.
- **resolver** applies the row changes in order to :class:`CitizenResolver`, whose stores are
  durable Faust tables (``rocksdb://``, backed by compacted changelog topics), and writes the
  citizens, links, review items and data-quality issues (Avro, registered) to compacted topics,
  and to each agency's feedback topic what it may hear back about its records.
  The citizen graph is one consistent whole, so the resolver reads one partition; the comparison
  work is near-linear (blocking) and a worker restarts from its local store, not from history.

Each role is its own Faust app and process (``simpul streams run --role``; without it both run
as supervised children): one consumer fetching the CDC backlog and the changes topic together
starved the changes topic, and two processes use two cores.

Delivery is at-least-once (Faust flushes the producer before committing offsets); the resolver
makes the effect exactly-once by source positions (see :mod:`simpul.streams.citizens`). Events
that cannot be read go to the dead-letter topic with the reason in their headers.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from simpul.config import ConfigError, SimpulConfig
from simpul.kafka import client_config, create_topics
from simpul.schemas.resolution import CITIZEN_SCHEMA, FEEDBACK_SCHEMA, KEY_SCHEMA, LINK_SCHEMA, QUALITY_SCHEMA, REVIEW_SCHEMA, SOURCE_TS_HEADER
from simpul.schemas.wire import ConfluentAvroDecoder, SchemaRegistrar, WireFormatError
from simpul.streams import metrics
from simpul.streams.changes import ChangeError, RowChange, row_change, value_converters
from simpul.streams.citizens import (
    CITIZEN,
    FEEDBACK,
    LINK,
    QUALITY,
    REVIEW,
    CitizenResolver,
    Output,
    ResolverState,
    record_source,
    use_resolver_gc_thresholds,
)
from simpul.streams.mapping import Mapping, MappingError, align_databases, load_mapping
from simpul.streams.matching import FellegiSunterModel

log = logging.getLogger("simpul.streams")

_TABLE_NAMES = ("rows", "records", "citizens")


@dataclass(frozen=True)
class SourceTopic:
    """A CDC topic the router reads: which source table it carries and that table's key column."""

    topic: str
    source: str
    table: str
    key_column: str


def load_model(config: SimpulConfig) -> FellegiSunterModel:
    """The trained match settings the resolver scores with; a clear error when not trained yet."""
    path = config.estimates_path
    if not path.is_file():
        raise ConfigError(f"processors.estimates: {path} does not exist (train it with `simpul er train`)")
    try:
        return FellegiSunterModel.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"processors.estimates: {path} is not a trained model ({type(exc).__name__})") from None


def load_resolver_mapping(config: SimpulConfig) -> Mapping:
    """The configured agency mapping, its MySQL tables qualified by the configured databases."""
    try:
        return align_databases(load_mapping(config.mapping_path), config.mysql_databases)
    except MappingError as exc:
        raise ConfigError(f"processors.mapping: {exc}") from None


def source_topics(config: SimpulConfig, mapping: Mapping) -> list[SourceTopic]:
    """The CDC topics of every mapped or joined table whose source is configured."""
    sources = {s.name: s for s in config.sources}
    topics = []
    for source_name, table in mapping.read_tables():
        source = sources.get(source_name)
        if source is not None and table in source.tables:
            topics.append(SourceTopic(f"{source.topic_prefix}.{table}", source_name, table, mapping.key_column(source_name, table)))
    if not topics:
        raise ConfigError("processors: no mapped table belongs to a configured source (check sources[].tables and the mapping)")
    return topics


def feedback_scopes(config: SimpulConfig) -> dict[str, frozenset[str]]:
    """Source name to the golden fields its agency may hear back (every configured source has one)."""
    return {s.name: frozenset(s.feedback.fields) for s in config.sources}


def create_resolver_topics(config: SimpulConfig, topics: list[SourceTopic]) -> None:
    """Create the topics the processors read and write, so nothing relies on broker auto-creation."""
    kafka, p = config.kafka, config.processors
    compacted = {"cleanup.policy": "compact"}
    create_topics(
        client_config(kafka),
        [NewTopic(t.topic, kafka.partitions, kafka.replication_factor) for t in topics]
        + [NewTopic(p.changes_topic, 1, kafka.replication_factor), NewTopic(p.dlq_topic, 1, kafka.replication_factor)]
        + [NewTopic(name, kafka.partitions, kafka.replication_factor, config=compacted)
           for name in (p.citizens_topic, p.links_topic, p.reviews_topic, p.quality_topic, *(s.feedback_topic for s in config.sources))],
    )


class OutputEncoders:
    """Avro encoders of every output topic's keys and values, schemas registered once at start."""

    def __init__(self, config: SimpulConfig, registrar: SchemaRegistrar) -> None:
        p = config.processors
        self._by_kind = {CITIZEN: p.citizens_topic, LINK: p.links_topic, REVIEW: p.reviews_topic, QUALITY: p.quality_topic}
        self._feedback = {s.name: s.feedback_topic for s in config.sources}
        schemas = {
            p.citizens_topic: CITIZEN_SCHEMA, p.links_topic: LINK_SCHEMA, p.reviews_topic: REVIEW_SCHEMA, p.quality_topic: QUALITY_SCHEMA,
            **{topic: FEEDBACK_SCHEMA for topic in self._feedback.values()},
        }
        self.topics = list(schemas)
        self._keys = {topic: registrar.encoder(topic, KEY_SCHEMA, is_key=True) for topic in self.topics}
        self._values = {topic: registrar.encoder(topic, schema) for topic, schema in schemas.items()}

    def topic(self, output: Output) -> str:
        """The topic an output goes to: its kind's, or for feedback the feedback topic of the record's source."""
        if output.kind == FEEDBACK:
            # The key is the record id, which a tombstone carries too (its value does not).
            return self._feedback[record_source(output.key)]
        return self._by_kind[output.kind]

    def encode(self, output: Output) -> tuple[str, bytes, bytes | None]:
        """(topic, key bytes, value bytes or None for a tombstone)."""
        topic = self.topic(output)
        value = self._values[topic].encode(output.value) if output.value is not None else None
        return topic, self._keys[topic].encode(output.key), value


ROLES = ("router", "resolver")


def build_app(config: SimpulConfig, role: str, registry: SchemaRegistryClient | None = None) -> faust.App:
    """The Faust app of one role (``router`` or ``resolver``); topics are created and schemas registered here."""
    if role not in ROLES:
        raise ConfigError(f"streams: unknown role {role!r} (one of {', '.join(ROLES)})")
    p = config.processors
    mapping = load_resolver_mapping(config)
    inputs = source_topics(config, mapping)
    create_resolver_topics(config, inputs)
    client = registry or SchemaRegistryClient({"url": config.schema_registry.url})

    app_id = p.app_id if role == "resolver" else f"{p.app_id}-router"
    datadir = config.home / "processors" / app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=[f"kafka://{server}" for server in config.kafka.bootstrap_servers.split(",")],
        store=p.store,
        datadir=str(datadir),
        topic_partitions=1,
        topic_replication_factor=config.kafka.replication_factor,
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=p.session_timeout_s,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=p.session_timeout_s,
        producer_acks=-1,
    )
    changes = app.topic(p.changes_topic, partitions=1, key_serializer="raw", value_serializer="raw")
    dlq = app.topic(p.dlq_topic, partitions=1, key_serializer="raw", value_serializer="raw")

    async def dead_letter(stage: str, reason: str, event: Any) -> None:
        message = event.message
        metrics.DEAD_LETTERS.labels(stage, reason.split(":")[0][:60]).inc()
        log.warning("%s set aside %s[%d]@%d: %s", stage, message.topic, message.partition, message.offset, reason)
        headers = {"stage": stage.encode(), "reason": reason.encode(), "topic": message.topic.encode(),
                   "partition": str(message.partition).encode(), "offset": str(message.offset).encode()}
        await dlq.send(key=message.key, value=message.value, headers=headers)

    if role == "router":
        by_topic = {t.topic: t for t in inputs}
        cdc_topics = app.topic(*by_topic, key_serializer="raw", value_serializer="raw")
        decoder = ConfluentAvroDecoder(lambda schema_id: client.get_schema(schema_id).schema_str)
        converters: dict[int, dict[str, Callable[[Any], Any]]] = {}

        @app.agent(cdc_topics, name="router")
        async def route(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                if message.value is None:
                    continue  # the tombstone after a delete: the delete event itself carried the change
                where = by_topic[message.topic]
                try:
                    schema_id, envelope = decoder.decode_with_id(message.value)
                    if schema_id not in converters:
                        converters[schema_id] = value_converters(_json_schema(client, schema_id))
                    change = row_change(where.source, where.table, where.key_column, envelope, converters[schema_id])
                    encoded = change.to_json()
                except (ChangeError, WireFormatError, ValueError, KeyError, TypeError, EOFError) as exc:
                    await dead_letter("router", _reason(exc), event)
                    continue
                metrics.ROUTED.labels(where.source, where.table).inc()
                await changes.send(key=change.row_id.encode(), value=encoded)

        return app

    encoders = OutputEncoders(config, SchemaRegistrar(client))
    outputs = {topic: app.topic(topic, key_serializer="raw", value_serializer="raw") for topic in encoders.topics}
    table_options = {"block_cache_size": p.rocksdb_cache_mb * 1024 * 1024}
    tables = {name: app.Table(f"er-{name}", partitions=1, options=table_options) for name in _TABLE_NAMES}
    resolver = CitizenResolver(mapping, load_model(config), ResolverState(**tables), p.master_id_key(), feedback_scopes=feedback_scopes(config))

    index_built = False

    @app.agent(changes, name="resolver")
    async def resolve(stream: Any) -> None:
        nonlocal index_built
        async for event in stream.events():
            if not index_built:
                # Tables are recovered before the first event arrives; the index derives from them.
                started = time.perf_counter()
                count = resolver.rebuild_index()
                log.info("index rebuilt from %d stored records in %.1fs", count, time.perf_counter() - started)
                index_built = True
            started = time.perf_counter()
            try:
                change = RowChange.from_json(event.message.value)
                result = resolver.apply(change)
            except ChangeError as exc:
                await dead_letter("resolver", _reason(exc), event)
                continue
            except Exception as exc:  # noqa: BLE001 - one bad change must not stop every citizen's updates
                log.exception("resolver failed on %s[%d]@%d", event.message.topic, event.message.partition, event.message.offset)
                await dead_letter("resolver", f"internal error: {type(exc).__name__}", event)
                continue
            metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
            if result.stale:
                metrics.SKIPPED.labels("stale").inc()
                continue
            if result.repeated:
                metrics.SKIPPED.labels("repeated").inc()
            metrics.RECORDS_IN.labels(change.source, change.table).inc()
            for outcome, n in result.decisions.items():
                metrics.DECISIONS.labels(outcome).inc(n)
            metrics.MERGES.inc(result.merges)
            metrics.SPLITS.inc(result.splits)
            headers = {SOURCE_TS_HEADER: str(change.ts_ms).encode()}
            for output in result.outputs:
                topic, key, value = encoders.encode(output)
                metrics.OUTPUTS.labels(output.kind, "upsert" if value is not None else "tombstone").inc()
                await outputs[topic].send(key=key, value=value, headers=headers)
            if change.ts_ms:
                metrics.SOURCE_TO_OUTPUT_SECONDS.observe(max(0.0, time.time() - change.ts_ms / 1000))

    return app


def _json_schema(client: SchemaRegistryClient, schema_id: int) -> dict[str, Any]:
    return json.loads(client.get_schema(schema_id).schema_str)


def _reason(exc: Exception) -> str:
    """A dead letter's reason: the error's kind and message, which by construction name no values."""
    return f"{type(exc).__name__}: {exc}" if isinstance(exc, (ChangeError, WireFormatError)) else type(exc).__name__



class BoundedWorker(faust.Worker):
    """A Faust worker whose stop is bounded: Faust's shutdown can hang (a known, still-reported
    bug), so a stop signal also arms a timer that ends the process. That is safe by design: the
    processors survive ``kill -9`` at any moment."""

    stop_timeout_s = 30.0

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Keep the root logger at the chosen level, without Faust's terminal spinner.

        The spinner sets the root logger to DEBUG so that every log call spins it: aiokafka and
        Faust then build a debug record (quoting key and value) for every message sent, which
        cost about a tenth of the resolver's time, and one handler away from writing values.
        """
        self.spinner = None
        logger.setLevel(level)

    def _arm(self) -> None:
        def force() -> None:
            log.error("did not stop within %.0f s of the signal; exiting now", self.stop_timeout_s)
            os._exit(70)

        timer = threading.Timer(self.stop_timeout_s, force)
        timer.daemon = True
        timer.start()

    def _on_sigterm(self) -> None:
        self._arm()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm()
        super()._on_sigint()


def run_worker(config: SimpulConfig, role: str, loglevel: str = "warn") -> None:
    """Run one role's worker in this process until SIGTERM or SIGINT."""
    from simpul.metrics import metrics_port, serve_metrics

    app = build_app(config, role)
    if role == "resolver":
        use_resolver_gc_thresholds()
    serve_metrics(config.metrics.host, metrics_port(config, role))
    worker = BoundedWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def run_all(config: SimpulConfig, loglevel: str = "warn") -> None:
    """Run both roles as supervised child processes (restarted if they die) until SIGTERM or SIGINT."""
    from simpul.config import write_config
    from simpul.shutdown import Shutdown
    from simpul.supervisor import Child, Supervisor

    # Fail here, with the config's own message, rather than in a child's log.
    source_topics(config, load_resolver_mapping(config))
    load_model(config)
    shutdown = Shutdown().install()
    config_file = write_config(config, config.home / "run" / "streams.yaml")
    logs = config.home / "logs"
    supervisor = Supervisor([Child.simpul(f"streams-{role}", config_file, logs, "streams", "run", "--role", role, "--loglevel", loglevel) for role in ROLES])
    supervisor.start()
    while not shutdown.wait(1.0):
        supervisor.check()
    killed = supervisor.stop()
    if killed:
        raise SystemExit(f"did not stop on SIGTERM in time and were killed: {', '.join(killed)}")
