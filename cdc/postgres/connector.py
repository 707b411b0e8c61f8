"""The PostgreSQL connector: a consistent snapshot, then the slot's changes, into Kafka.

Transport: the streaming replication protocol (``replication.py``); the slot is confirmed only up
to a commit whose events Kafka has acknowledged, so a crash at any point repeats events (with the
same LSN) and never loses one. Changes are handled one message at a time as the server sends them,
so a transaction of a million rows streams through in bounded memory.

The snapshot uses the snapshot the slot exports when it is created, read in one REPEATABLE READ
transaction, so nothing is missed or doubled between the snapshot and the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql

from simpul.cdc import metrics
from simpul.cdc.encoding_pool import EncodingPool, PooledPublishing
from simpul.cdc.errors import ConnectorError
from simpul.cdc.snapshot_modes import needs_snapshot
from simpul.cdc.offsets import OffsetStore
from simpul.cdc.postgres import catalog
from simpul.cdc.postgres.events import now_us, pg_commit_time_us
from simpul.cdc.postgres.pgoutput import Begin, Commit, PgOutputDecoder, Relation, format_lsn, parse_lsn
from simpul.cdc.postgres.replication import ReplicationStream
from simpul.cdc.postgres.row_encoder import ROW_MESSAGE_KINDS, RowEncoder, RowMessage, TableDescription
from simpul.cdc.postgres.schema import TableSchema, build_table_schema
from simpul.cdc.reconnect import run_reconnecting
from simpul.cdc.publisher import EventPublisher
from simpul.cdc.transforms import ColumnTransforms
from simpul.config import SimpulConfig, SourceSettings
from simpul.databases import connect_postgres
from simpul.progress import progress
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)

READ_WAIT_S = 0.01
# The wait for a first message when nothing is pending (no open transaction, nothing to encode,
# publish or have acknowledged): data ends it at once, so it delays nothing, while a 10 ms wait
# woke an idle connector 100 times a second (2% of a core each, three PostgreSQL sources).
IDLE_WAIT_S = 0.25
# How often a busy stream stops to publish what is encoded and serve Kafka's acknowledgements.
SERVE_EVERY_S = 0.01
OFFSET_SAVE_EVERY_S = 1.0
SLOT_LAG_EVERY_S = 5.0
SNAPSHOT_FETCH_ROWS = 5_000
# Rows per call to the encoding pool (at most; a batch goes once its first row has waited
# POOL_BATCH_WAIT_S), and calls in flight per worker before the connector waits.
POOL_BATCH_ROWS = 500
POOL_BATCH_WAIT_S = 0.005
POOL_MAX_OUTSTANDING = 4
SESSION_SETTINGS = "SET TimeZone = 'UTC'; SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'; SET DateStyle = 'ISO, YMD'"


@dataclass
class _Transaction:
    xid: int | None = None
    commit_time_us: int = 0
    events: int = 0


@dataclass
class _Progress:
    last_committed_lsn: int | None = None
    last_saved: float = 0.0
    last_heartbeat: float = field(default_factory=time.monotonic)
    last_lag: float = 0.0


class PostgresConnector:
    """One source's connector; :meth:`run` returns when ``shutdown`` is requested."""

    def __init__(self, config: SimpulConfig, source: SourceSettings, shutdown: Shutdown) -> None:
        if source.kind != "postgres":
            raise ValueError(f"source {source.name} is {source.kind}, not postgres")
        self.config = config
        self.source = source
        self.shutdown = shutdown
        self.dsn = source.dsn()
        self.slot = source.slot_name
        self.transforms = ColumnTransforms(source.capture.columns, f"sources.{source.name}")
        self.topics = {table: f"{source.topic_prefix}.{table}" for table in source.tables}
        self.schemas: dict[int, tuple[Relation, TableSchema]] = {}
        self.pool: EncodingPool | None = None
        self.output: PooledPublishing | None = None
        self.publisher = EventPublisher(config, source)
        self.offsets = OffsetStore(config)
        self.decoder = PgOutputDecoder()
        self.progress = _Progress()
        # Set once the snapshot (if any) is done and changes stream: what a supervisor waits for.
        self.streaming = threading.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    def run(self) -> None:
        """Snapshot if the mode asks for it, then stream until shutdown; reconnects after outages."""
        self.pool = EncodingPool(self.source.name, RowEncoder, (self.source,), self.source.capture.workers)
        self.output = PooledPublishing(self.pool, self.publisher, "changes", POOL_BATCH_ROWS, POOL_MAX_OUTSTANDING)
        try:
            run_reconnecting(self.source.name, self._run_connected, (psycopg.OperationalError,), self.shutdown, log)
        finally:
            metrics.CONNECTED.labels(self.source.name).set(0)
            self.pool.close()
            self.publisher.close()
            self.offsets.close()

    def _save_offset(self, lsn: int | None) -> None:
        """Store that the snapshot is complete, on this slot, and (once known) the confirmed LSN."""
        offset: dict[str, object] = {"snapshot_completed": True, "slot": self.slot}
        if lsn is not None:
            offset.update(lsn=lsn, lsn_text=format_lsn(lsn))
        self.offsets.save(self.source.offset_key, offset)

    def _run_connected(self) -> None:
        with connect_postgres(self.source, f"simpul-cdc-{self.source.name}") as admin:
            admin.autocommit = True
            admin.execute(SESSION_SETTINGS)
            metrics.CONNECTED.labels(self.source.name).set(1)
            for table in catalog.tables_without_full_identity(admin, self.source.tables):
                log.warning(
                    "%s: %s has no REPLICA IDENTITY FULL: updates and deletes will carry only its key in `before`, "
                    "and unchanged TOAST values the placeholder", self.source.name, table
                )
            catalog.ensure_publication(admin, self.source.publication_name, self.source.tables)
            self.publisher.ensure_topics(self.topics.values())
            self._prepare_slot(admin)
            if self.source.capture.snapshot_mode != "initial_only":
                self._stream(admin)

    def _prepare_slot(self, admin: psycopg.Connection[Any]) -> None:
        """Create the slot, and snapshot through its exported snapshot, as the snapshot mode asks."""
        mode = self.source.capture.snapshot_mode
        offset = self.offsets.load(self.source.offset_key) or {}
        completed = bool(offset.get("snapshot_completed"))
        exists = catalog.slot_exists(admin, self.slot)
        lost = f"{self.source.name}: slot {self.slot} is gone although a snapshot completed"
        snapshot = needs_snapshot(mode, offset, exists, lost)
        if not snapshot:
            if not exists:
                self._create_slot(export=False).close()
            if not completed:
                self._save_offset(None)
            return
        catalog.drop_slot(admin, self.slot)
        replication = self._create_slot(export=True)
        try:
            self._snapshot(replication.info["snapshot_name"], parse_lsn(replication.info["consistent_point"]))
        finally:
            replication.close()

    def _create_slot(self, export: bool) -> "_ReplicationSession":
        session = _ReplicationSession(self.dsn)
        session.create_slot(self.slot, export)
        log.info("%s: created slot %s at %s", self.source.name, self.slot, session.info["consistent_point"])
        return session

    # --- snapshot --------------------------------------------------------------------------------

    def _snapshot(self, snapshot_name: str, lsn: int) -> None:
        name = self.source.name
        metrics.SNAPSHOT_RUNNING.labels(name).set(1)
        metrics.SNAPSHOT_TABLES_REMAINING.labels(name).set(len(self.source.tables))
        started = time.monotonic()
        with connect_postgres(self.source, f"simpul-snapshot-{name}") as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            conn.execute(SESSION_SETTINGS)
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name)))
            counts = {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*catalog.split_table(t)))).fetchone()[0] for t in self.source.tables}
            # One row is held back so that the very last one can say snapshot=last.
            held: tuple[int, int, tuple[str | None, ...]] | None = None
            with progress(f"snapshot {name}", sum(counts.values())) as tracker:
                for done, table in enumerate(self.source.tables):
                    schema = self._schema_for(conn, catalog.table_relation(conn, table))
                    oid = schema.relation.oid
                    # Every row of a table shares one source block: the snapshot's position, and
                    # the time its reading of the table began.
                    started_us = now_us()
                    rows_scanned = metrics.SNAPSHOT_ROWS.labels(name, table)
                    columns = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c.name)) for c in schema.relation.columns)
                    with conn.cursor(name=f"simpul_snapshot_{done}") as cursor:
                        cursor.execute(sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(*catalog.split_table(table))))
                        while rows := cursor.fetchmany(SNAPSHOT_FETCH_ROWS):
                            if held is not None:
                                self.output.submit([], "reads", held[0], held[1], lsn, "true", [held[2]])
                            for at in range(0, len(rows) - 1, POOL_BATCH_ROWS):
                                self.output.submit([], "reads", oid, started_us, lsn, "true", rows[at : min(at + POOL_BATCH_ROWS, len(rows) - 1)])
                            held = (oid, started_us, rows[-1])
                            self.output.publish_ready()
                            tracker.advance(len(rows))
                            rows_scanned.inc(len(rows))
                            self.publisher.poll(0)
                            if self.shutdown.requested:
                                raise ConnectorError(f"{name}: stopped during the snapshot; it runs again at the next start")
                    metrics.SNAPSHOT_TABLES_REMAINING.labels(name).set(len(self.source.tables) - done - 1)
            if held is not None:
                self.output.submit([], "reads", held[0], held[1], lsn, "last", [held[2]])
        self.output.publish_ready(wait=True)
        self.publisher.flush(300)
        self._save_offset(lsn)
        metrics.SNAPSHOT_RUNNING.labels(name).set(0)
        log.info("%s: snapshot of %d rows done in %.1fs", name, sum(counts.values()), time.monotonic() - started)

    # --- streaming -------------------------------------------------------------------------------

    def _stream(self, admin: psycopg.Connection[Any]) -> None:
        stream = ReplicationStream(self.dsn, self.slot, self.source.publication_name, f"simpul-stream-{self.source.name}")
        log.info("%s: streaming from slot %s", self.source.name, self.slot)
        self.streaming.set()
        transaction = _Transaction()
        try:
            while not self.shutdown.requested:
                received = 0
                served = time.monotonic()
                first_wait = self._idle_wait(served) if self._is_idle(transaction) else READ_WAIT_S
                for lsn, data in stream.read(self.source.capture.max_batch_events, READ_WAIT_S, first_wait):
                    received += 1
                    now = time.monotonic()
                    if data[0] in ROW_MESSAGE_KINDS:
                        row: RowMessage = (lsn, data, transaction.xid, transaction.commit_time_us, self.progress.last_committed_lsn, transaction.events == 0)
                        self.output.add(row)
                        transaction.events += 1
                    else:
                        self._handle(self.decoder.decode(data), transaction, admin)
                    if self.output.waited(now) >= POOL_BATCH_WAIT_S:
                        self.output.send()
                        self.output.publish_ready()
                    if now - served >= SERVE_EVERY_S:
                        # A steady trickle of messages rarely leaves the stream quiet for READ_WAIT_S:
                        # acknowledgements are served (and the commit-to-ack lag measured) as they come.
                        self.output.publish_ready()
                        self.publisher.poll(0)
                        served = now
                        if self.shutdown.requested:
                            break
                self.output.send()
                self.output.publish_ready()
                self.publisher.poll(0.001 if self.publisher.in_flight or self.pool.outstanding else 0)
                self._confirm(stream)
                if received == 0 and self._is_idle(transaction):
                    # Between transactions with everything acknowledged, nothing before the
                    # server's WAL end concerns this slot: confirming it lets an idle or filtered
                    # database's slot advance, so WAL does not pile up.
                    stream.confirm(stream.server_wal_end)
                    self._maybe_heartbeat()
                self._maybe_report_lag(admin)
            self.output.publish_ready(wait=True)
            self.publisher.flush(60)
            self._confirm(stream)
        finally:
            stream.close()

    def _is_idle(self, transaction: _Transaction) -> bool:
        """Between transactions with every row published and acknowledged."""
        return transaction.xid is None and self.output.idle and self.publisher.in_flight == 0

    def _idle_wait(self, now: float) -> float:
        """How long an idle stream may wait for its next message: :data:`IDLE_WAIT_S`, or less
        when a heartbeat falls due sooner."""
        heartbeat_due = self.progress.last_heartbeat + self.source.capture.heartbeat_interval_ms / 1000
        return max(READ_WAIT_S, min(IDLE_WAIT_S, heartbeat_due - now))

    def _confirm(self, stream: ReplicationStream) -> None:
        confirmed = self.publisher.confirmed()
        if confirmed is None:
            return
        stream.confirm(confirmed["lsn"])
        now = time.monotonic()
        if now - self.progress.last_saved >= OFFSET_SAVE_EVERY_S:
            self._save_offset(confirmed["lsn"])
            self.progress.last_saved = now

    def _handle(self, message: Any, tx: _Transaction, catalog_conn: psycopg.Connection[Any]) -> None:
        """Apply a message other than a row change."""
        if isinstance(message, Begin):
            tx.xid, tx.commit_time_us, tx.events = message.xid, pg_commit_time_us(message.commit_time_us), 0
        elif isinstance(message, Commit):
            self.output.checkpoint({"lsn": message.end_lsn, "txId": tx.xid})
            tx.xid = None
            self.progress.last_committed_lsn = message.commit_lsn
            metrics.TRANSACTIONS.labels(self.source.name).inc()
        elif isinstance(message, Relation):
            # Rows before the new description must be decoded with the old one: they go first.
            self.output.send()
            self._schema_for(catalog_conn, message)

    def _schema_for(self, conn: psycopg.Connection[Any], described: Relation) -> TableSchema:
        """The Avro schemas of a table as ``described`` at this point of the log, registered, and
        the encoding workers told about them.

        Built once per description: the decoder hands out a new Relation object only when the
        server describes the table again (first use in a session, or after ALTER TABLE). A schema
        the registry refuses sets the table's rows aside until the next description.
        """
        cached = self.schemas.get(described.oid)
        if cached is not None and cached[0] is described:
            return cached[1]
        relation = catalog.with_primary_key(conn, described)
        user_types = {c.type_oid for c in relation.columns if c.type_oid >= 16384}
        enums = catalog.enum_labels(conn, user_types) if user_types else None
        transform = self.transforms.for_table(relation.qualified_name)
        schema = build_table_schema(self.topics[relation.qualified_name], relation, enums, transform)
        registered = self.publisher.register_table(schema.topic, relation.qualified_name, schema.key, schema.envelope)
        self.pool.broadcast("describe", TableDescription(described, relation, enums, *registered))
        self.schemas[described.oid] = (described, schema)
        return schema

    def _maybe_heartbeat(self) -> None:
        now = time.monotonic()
        if (now - self.progress.last_heartbeat) * 1000 >= self.source.capture.heartbeat_interval_ms:
            self.publisher.heartbeat(int(time.time() * 1000))
            self.publisher.flush(30)
            self.progress.last_heartbeat = now

    def _maybe_report_lag(self, admin: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        if now - self.progress.last_lag >= SLOT_LAG_EVERY_S:
            lag = catalog.slot_lag_bytes(admin, self.slot)
            if lag is not None:
                metrics.SLOT_LAG.labels(self.source.name).set(lag)
            self.progress.last_lag = now


class _ReplicationSession:
    """A replication-protocol connection that creates the slot and, for a snapshot, keeps the
    exported snapshot alive until it is closed."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg.connect(dsn, replication="database", autocommit=True)
        self.info: dict[str, str] = {}

    def create_slot(self, slot: str, export: bool) -> None:
        """``CREATE_REPLICATION_SLOT`` (simple query protocol, which the walsender requires)."""
        mode = "EXPORT_SNAPSHOT" if export else "NOEXPORT_SNAPSHOT"
        result = self.conn.pgconn.exec_(f'CREATE_REPLICATION_SLOT "{slot}" LOGICAL pgoutput {mode}'.encode())
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise ConnectorError(f"cannot create slot {slot}: {(result.error_message or b'').decode(errors='replace').strip()}")
        values = [result.get_value(0, i) for i in range(result.nfields)]
        names = [result.fname(i).decode() for i in range(result.nfields)]
        self.info = {name: (value.decode() if value is not None else "") for name, value in zip(names, values)}

    def close(self) -> None:
        """Close the connection (ending the exported snapshot)."""
        self.conn.close()


def run_postgres_connector(config: SimpulConfig, source: SourceSettings, shutdown: Shutdown) -> None:
    """Run the PostgreSQL connector of ``source`` until ``shutdown`` is requested."""
    PostgresConnector(config, source, shutdown).run()
