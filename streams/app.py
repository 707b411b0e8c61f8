"""The resolver: a Faust agent over durable tables, from row changes to golden citizens.

The resolver applies the row changes the router (:mod:`simpul.streams.router`) sends, in order,
to :class:`CitizenResolver`, whose stores are durable Faust tables (``rocksdb://``, backed by
compacted changelog topics), and writes the citizens, links, review items and data-quality issues
(Avro, registered) to compacted topics, and to each agency's feedback topic what it may hear back
about its records. Every message it reads is a batch of changes: its tables are read through a
cache and written once per key per batch (:class:`WriteBehindTable`), and each output key's last
message in the batch is sent (:class:`OutputBatch`), through librdkafka
(:class:`ConfirmedProducer`), before the message's offset may be committed.

The citizen graph is one consistent whole, so the resolver reads one partition; the comparison
work is near-linear (blocking) and a worker restarts from its local store, not from history.
Router and resolver are separate processes (``simpul streams run --role``; without it both run as
supervised children), so they use two cores.

Delivery is at-least-once; the resolver makes the effect exactly-once by source positions (see
:mod:`simpul.streams.citizens`). Changes that cannot be read or applied go to the dead-letter
topic with the reason in their headers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import aiokafka
import faust
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient
from faust.transport.drivers import aiokafka as faust_aiokafka

from simpul.config import ConfigError, SimpulConfig
from simpul.failures import failure_site
from simpul.metrics import LabelledChildren
from simpul.schemas.resolution import CITIZEN_SCHEMA, FEEDBACK_SCHEMA, KEY_SCHEMA, LINK_SCHEMA, QUALITY_SCHEMA, REVIEW_SCHEMA, SOURCE_TS_HEADER
from simpul.schemas.registrar import SchemaRegistrar
from simpul.streams import metrics
from simpul.streams.changes import ChangeError, RowChange, decode_changes
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
from simpul.streams.producer import ConfirmedProducer, dead_letter_reason
from simpul.streams.router import run_router
from simpul.streams.stores import WriteBehindTable
from simpul.streams.tables import LibrdkafkaChangelogTable, changelog_table
from simpul.streams.topology import create_resolver_topics, feedback_scopes, load_model, load_resolver_mapping, source_topics

log = logging.getLogger("simpul.streams")

_TABLE_NAMES = ("rows", "records", "citizens")


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

# How long the broker may hold the resolver's fetch while it has nothing new (Faust fixes 1,500 ms).
FETCH_MAX_WAIT_MS = 100


class PromptFetchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """Faust's consumer thread, its consumer's fetches held by the broker at most ``FETCH_MAX_WAIT_MS``.

    aiokafka leaves a partition out of the next fetch request while records of it are still
    buffered; when that request then names only partitions with nothing new (the tables'
    changelogs), the broker holds it for the whole wait, and changes arriving meanwhile wait too.
    At 300 changes/s (``bench.e2e --rate 300``) some runs settled at a p50 of 1.4–2.8 s with the
    resolver idle a third of the time; with 100 ms the same run gave 200 ms.
    """

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; no public setting reaches it.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class PromptFetchConsumer(faust_aiokafka.Consumer):  # type: ignore[misc]
    """Faust's aiokafka consumer with :class:`PromptFetchConsumerThread`."""

    def _new_consumer_thread(self) -> PromptFetchConsumerThread:
        return PromptFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)


def build_app(config: SimpulConfig, registry: SchemaRegistryClient | None = None) -> faust.App:
    """The resolver's Faust app; topics are created and schemas registered here."""
    p = config.processors
    mapping = load_resolver_mapping(config)
    create_resolver_topics(config)
    client = registry or SchemaRegistryClient({"url": config.schema_registry.url})

    datadir = config.home / "processors" / p.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        p.app_id,
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
    app.transport.Consumer = PromptFetchConsumer
    changes = app.topic(p.changes_topic, partitions=1, key_serializer="raw", value_serializer="raw")
    encoders = OutputEncoders(config, SchemaRegistrar(client))
    producer = ConfirmedProducer(config, "simpul-resolver")
    table_options = {"block_cache_size": p.rocksdb_cache_mb * 1024 * 1024}
    tables = {name: changelog_table(app, f"er-{name}", producer, partitions=1, options=table_options) for name in _TABLE_NAMES}
    stores = {name: WriteBehindTable(table, p.state_cache_entries) for name, table in tables.items()}
    resolver = CitizenResolver(mapping, load_model(config), ResolverState(**stores), p.master_id_key(), feedback_scopes=feedback_scopes(config))
    index_built = False

    skipped, records_in = LabelledChildren(metrics.SKIPPED), LabelledChildren(metrics.RECORDS_IN)
    decisions = LabelledChildren(metrics.DECISIONS)

    def dead_letter(reason: str, message: Any, value: bytes | None) -> None:
        producer.dead_letter("resolver", reason, message.topic, message.partition, message.offset, message.key, value)

    def apply(item: Any, message: Any, batch: OutputBatch) -> None:
        started = time.perf_counter()
        try:
            change = RowChange.from_plain(item)
            result = resolver.apply(change)
        except ChangeError as exc:
            dead_letter(dead_letter_reason(exc), message, orjson.dumps(item))
            return
        except Exception as exc:  # noqa: BLE001 - one bad change must not stop every citizen's updates
            log.error("resolver failed on a change in %s[%d]@%d: %s", message.topic, message.partition, message.offset, failure_site(exc))
            dead_letter(f"internal error: {type(exc).__name__}", message, orjson.dumps(item))
            return
        metrics.APPLY_SECONDS.observe(time.perf_counter() - started)
        if result.stale:
            skipped("stale").inc()
            return
        if result.repeated:
            skipped("repeated").inc()
        records_in(change.source, change.table).inc()
        for outcome, n in result.decisions.items():
            decisions(outcome).inc(n)
        metrics.MERGES.inc(result.merges)
        metrics.SPLITS.inc(result.splits)
        for output in result.outputs:
            batch.add(output, change.ts_ms)
        if change.ts_ms:
            batch.source_ts_ms.append(change.ts_ms)

    confirm_before_commit(app, producer, list(tables.values()))

    @app.agent(changes, name="resolver")
    async def resolve(stream: Any) -> None:
        with exit_on_failure("resolver"):
            await resolve_batches(stream)

    async def resolve_batches(stream: Any) -> None:
        nonlocal index_built
        # Each message is a batch of row changes (see the router); Faust acknowledges it when the
        # next one is asked for, after its state and outputs are written below.
        async for event in stream.events():
            if not index_built:
                # Tables are recovered before the first event arrives; the index derives from them.
                started = time.perf_counter()
                count = resolver.rebuild_index()
                log.info("index rebuilt from %d stored records in %.1fs", count, time.perf_counter() - started)
                index_built = True
            message = event.message
            try:
                items = decode_changes(message.value)
            except ChangeError as exc:
                dead_letter(dead_letter_reason(exc), message, message.value)
                continue
            batch = OutputBatch()
            for item in items:
                apply(item, message, batch)
            # The tables' changelog and the outputs go out through ``producer``, confirmed before
            # Faust commits the message's offset (see ``confirm_before_commit``). Through Faust's own
            # producer the changelog queued in a buffer only a commit drains: ~65 KB per record.
            for store in stores.values():
                store.flush()
            for output, ts_ms in batch.outputs():
                topic, key, value = encoders.encode(output)
                metrics.OUTPUTS.inc((output.kind, "upsert" if value is not None else "tombstone"))
                producer.produce(topic, key, value, {SOURCE_TS_HEADER: str(ts_ms).encode()})
            producer.poll()
            now = time.time()
            for ts_ms in batch.source_ts_ms:
                metrics.SOURCE_TO_OUTPUT_SECONDS.observe(max(0.0, now - ts_ms / 1000))

    return app


class OutputBatch:
    """The outputs of one batch of changes, the last message per (kind, key) only.

    The output topics are compacted, so a key's earlier messages within a batch would be
    superseded anyway; the sinks see each key's state at the end of the batch, as a Kafka Streams
    table does between cache flushes. Each message carries the source commit time of the change
    that produced it (the ``source_ts_ms`` header).
    """

    def __init__(self) -> None:
        self._latest: dict[tuple[str, str], tuple[Output, int]] = {}
        # The source commit time of every change applied, for the end-to-end latency histogram.
        self.source_ts_ms: list[int] = []

    def add(self, output: Output, source_ts_ms: int) -> None:
        """Keep ``output`` as its key's latest message."""
        key = (output.kind, output.key)
        self._latest.pop(key, None)  # re-inserted last: the batch's messages keep their order
        self._latest[key] = (output, source_ts_ms)

    def outputs(self) -> list[tuple[Output, int]]:
        """(message, source commit time in ms) in the order their final versions were made."""
        return list(self._latest.values())


def confirm_before_commit(app: faust.App, producer: ConfirmedProducer, tables: list[LibrdkafkaChangelogTable]) -> None:
    """Make Faust's flush before every offset commit also wait for ``producer``'s acknowledgements
    (then record the changelog offsets ``tables`` now hold).

    Faust acknowledges a message when its agent asks for the next one, and commits acknowledged
    offsets every ``commit_interval``, flushing its producer first. Confirming ``producer`` there
    instead of after every message keeps at-least-once (whatever a committed message produced was
    acknowledged) without a Kafka round trip per message, which left the resolver idle for a
    good part of the time under a steady load of small batches.
    """
    faust_flush = app.producer.flush

    async def flush() -> None:
        with exit_on_failure("resolver"):
            await producer.confirmed()
        for table in tables:
            table.persist_acknowledged()
        await faust_flush()

    app.producer.flush = flush


@contextmanager
def exit_on_failure(role: str) -> Iterator[None]:
    """End the process when an agent fails outside any one event's handling.

    Faust would log the agent's crash and keep the worker running without it: the stage would
    stop silently. Exiting lets the supervisor restart the worker, which resumes from its committed
    offsets and recovered tables (safe at any moment, as ``kill -9`` is).
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - whatever it was, the stage cannot go on without a restart
        log.critical("%s stopped on %s; exiting so that it restarts from its committed state", role, failure_site(exc))
        logging.shutdown()
        os._exit(70)





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
    """Run one role in this process until SIGTERM or SIGINT."""
    from simpul.metrics import metrics_port, serve_metrics

    if role not in ROLES:
        raise ConfigError(f"streams: unknown role {role!r} (one of {', '.join(ROLES)})")
    if role == "router":
        run_router(config)
        return
    # Before any thread starts: Linux keeps a nice value per thread, and new threads inherit it.
    use_priority(config.processors.resolver_nice)
    app = build_app(config)
    use_resolver_gc_thresholds()
    serve_metrics(config.metrics.host, metrics_port(config, role))
    worker = BoundedWorker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def use_priority(nice: int) -> None:
    """Run this process at ``nice`` (``processors.resolver_nice``); when the system refuses a
    higher priority, say so and go on at the priority it has."""
    if nice == os.getpriority(os.PRIO_PROCESS, 0):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        log.warning("processors.resolver_nice: nice %d needs root or CAP_SYS_NICE; the resolver runs at nice %d",
                    nice, os.getpriority(os.PRIO_PROCESS, 0))


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
