"""Streaming: the row-based binlog from a stored position, as Debezium change events.

Row events become ``c``/``u``/``d`` events with the layout their TableMapEvent announces
(``binlog_row_metadata=FULL``), so an ``ALTER TABLE`` shows up as a new schema version on the next
row. An XID (or a ``COMMIT`` query, or a DDL statement) ends a source transaction: its end position
becomes a publisher checkpoint, and only positions Kafka has acknowledged are stored as the offset.
The server's replication heartbeat (every half second when idle) keeps the blocking read short,
so a stop request is honoured promptly and idle heartbeats still go out.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pymysql
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from pymysqlreplication.table import Table

from simpul.cdc import metrics
from simpul.cdc.errors import ConnectorError
from simpul.cdc.mysql.catalog import TableInfo, binlog_columns, read_table_info
from simpul.cdc.mysql.events import EventWriter
from simpul.cdc.mysql.row_encoder import SourcePosition
from simpul.cdc.mysql.rows_decoder import OPS, BinlogTable, undecoded
from simpul.cdc.mysql.schema import SchemaCache, TableSchema
from simpul.cdc.mysql.snapshot import BinlogPosition
from simpul.cdc.offsets import OffsetStore
from simpul.cdc.publisher import EventPublisher
from simpul.cdc.transforms import ColumnTransforms
from simpul.config import SourceSettings
from simpul.databases import mysql_params
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)

_TRUNCATE = re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:`?(\w+)`?\s*\.\s*)?`?(\w+)`?", re.IGNORECASE)
_DDL = re.compile(r"^\s*(?:/\*.*?\*/\s*)?(ALTER|CREATE|DROP|RENAME)\b", re.IGNORECASE | re.DOTALL)
# How often acknowledged positions are stored (seconds) and the server heartbeat period (seconds):
# the read blocks until an event comes, so an idle server's heartbeat is also when rows still
# waiting for more go to the encoders (at most this late).
SAVE_EVERY_S = 1.0
SERVER_HEARTBEAT_S = 0.05


def require_full_row_binlog(cursor: Any) -> None:
    """Raise :class:`ConnectorError` unless the server logs whole rows with their column names
    (``binlog_format=ROW``, ``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``)."""
    wanted = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}
    # SHOW VARIABLES rather than @@name: a server too old to have one (binlog_row_metadata came
    # with MySQL 8.0.1 and MariaDB 10.5) leaves it out instead of failing the statement.
    cursor.execute("SHOW VARIABLES WHERE Variable_name IN (%s, %s, %s)", tuple(wanted))
    found = {name: str(value) for name, value in cursor.fetchall()}
    wrong = [f"{name}={found.get(name, '(not on this server)')} (needs {value})" for name, value in wanted.items() if found.get(name, "").upper() != value]
    if wrong:
        raise ConnectorError(f"the server's binlog cannot be captured: {', '.join(wrong)}")


class BinlogStreamer:
    """Reads one source's binlog from a position until a stop is asked for."""

    def __init__(
        self, source: SourceSettings, publisher: EventPublisher, offsets: OffsetStore, writer: EventWriter,
        schemas: SchemaCache, transforms: ColumnTransforms, shutdown: Shutdown,
    ) -> None:
        self.source = source
        self.publisher = publisher
        self.offsets = offsets
        self.writer = writer
        self.schemas = schemas
        self.transforms = transforms
        self.shutdown = shutdown
        self._params = mysql_params(source.dsn())
        self._catalog = pymysql.connect(**{**self._params, "autocommit": True})
        self._infos: dict[str, TableInfo | None] = {}
        # Per table: its latest schema, and the TableMapEvent columns and catalog facts it was made from.
        self._latest: dict[str, tuple[TableSchema, list[Any], TableInfo | None]] = {}
        self._tables = {t.split(".", 1)[1] for t in source.tables}
        # Per table id: the table map the encoders were last told about.
        self._described: dict[int, Table] = {}

    def run(self, start: BinlogPosition) -> None:
        """Stream from ``start`` until a stop is asked for; store the last acknowledged position."""
        stream = BinLogStreamReader(
            connection_settings={k: v for k, v in self._params.items() if k not in ("local_infile", "autocommit")},
            server_id=self.source.server_id,
            resume_stream=True,
            blocking=True,
            log_file=start.file,
            log_pos=start.pos,
            only_schemas=[self.source.database],
            only_tables=sorted(self._tables),
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, QueryEvent, XidEvent, MariadbGtidEvent, HeartbeatLogEvent, RotateEvent],
            # Not is_mariadb: mysql-replication's MariaDB dump ignores log_file/log_pos and starts
            # at the first binlog unless given a GTID state; the classic file/position dump works
            # on MariaDB too, and MariaDB's GTID events are decoded either way.
            is_mariadb=False,
            slave_heartbeat=SERVER_HEARTBEAT_S,
            enable_logging=False,
            # A TableMapEvent precedes every transaction's rows; parsing it again each time took
            # about a third of this process. A table's layout is parsed when its table id is not
            # in the map. Table ids are unique only within one server run, so the map is emptied
            # on every rotation (the protocol announces each binlog file, and a restarted server
            # writes a new one) and on every DDL statement (``_query``; an ALTER also gives the
            # table a new id): rows never decode with another table's or an older layout.
            freeze_schema=True,
        )
        log.info("%s: streaming from %s:%d (server_id %d)", self.source.name, start.file, start.pos, self.source.server_id)
        metrics.CONNECTED.labels(self.source.name).set(1)
        gtid = start.gtid
        row_events = 0
        heartbeat_s = self.source.capture.heartbeat_interval_ms / 1000
        last_save = last_activity = last_heartbeat = time.monotonic()
        try:
            while not self.shutdown.requested:
                event = stream.fetchone()
                now = time.monotonic()
                if event is None:
                    self.writer.send()
                    self.shutdown.wait(0.1)
                elif isinstance(event, HeartbeatLogEvent):
                    # The server is idle: whatever waits for more rows goes now.
                    self.writer.send()
                elif isinstance(event, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                    self._rows(event, stream.table_map, stream.log_file, gtid)
                    row_events += 1
                    last_activity = now
                elif isinstance(event, MariadbGtidEvent):
                    gtid = event.gtid
                elif isinstance(event, RotateEvent):
                    stream.table_map.clear()
                    log.info("%s: binlog %s: table layouts are read anew from their next TableMapEvent", self.source.name, event.next_binlog)
                elif isinstance(event, XidEvent):
                    row_events = self._commit(stream.log_file, event.packet.log_pos, gtid, row_events)
                elif isinstance(event, QueryEvent):
                    if self._query(event, stream, gtid):
                        row_events = self._commit(stream.log_file, event.packet.log_pos, gtid, row_events)
                        last_activity = now
                self.writer.send_if_due()
                if now - last_save >= SAVE_EVERY_S:
                    self._save()
                    last_save = now
                if now - max(last_activity, last_heartbeat) >= heartbeat_s:
                    self.publisher.heartbeat(int(time.time() * 1000))
                    last_heartbeat = now
        finally:
            metrics.CONNECTED.labels(self.source.name).set(0)
            stream.close()
            self._catalog.close()
        self.writer.publish_all()
        self.publisher.flush()
        self._save()
        log.info("%s: stopped streaming", self.source.name)

    def _save(self) -> None:
        confirmed = self.publisher.confirmed()
        if confirmed is not None:
            self.offsets.save(self.source.offset_key, confirmed)

    def _commit(self, log_file: str, pos: int, gtid: str | None, rows: int) -> int:
        self.writer.checkpoint({"file": log_file, "pos": pos, "gtid": gtid, "snapshot_completed": True})
        if rows:
            metrics.TRANSACTIONS.labels(self.source.name).inc()
        self.publisher.poll(0)
        return 0

    def _info(self, table: str, refresh: bool = False) -> TableInfo | None:
        if refresh or table not in self._infos:
            try:
                self._catalog.ping(reconnect=False)
            except pymysql.err.Error:
                # The catalog connection idles between schema changes; the server may have closed it.
                self._catalog = pymysql.connect(**{**self._params, "autocommit": True})
            with self._catalog.cursor() as cursor:
                self._infos[table] = read_table_info(cursor, self.source.database, table)
        return self._infos[table]

    def _schema(self, table: str, columns: list[Any]) -> TableSchema:
        info = self._info(table)
        latest = self._latest.get(table)
        if latest is not None and latest[1] is columns and latest[2] is info:
            # The same parsed TableMapEvent (see ``run``) and catalog facts: the same schema.
            return latest[0]
        if info is None or not {c.name for c in columns} <= info.names:
            # A column the catalog has not seen: the table changed since it was read.
            info = self._info(table, refresh=True)
        key = info.key_columns if info else tuple(c.name for c in columns if getattr(c, "is_primary", False))
        qualified = f"{self.source.database}.{table}"
        schema = self.schemas.get(table, binlog_columns(columns, info), key, self.transforms.for_table(qualified))
        self._latest[table] = (schema, columns, info)
        return schema

    def _rows(self, event: Any, table_map: dict[int, Table], log_file: str, gtid: str | None) -> None:
        """Pass a rows event on undecoded: the encoders decode its rows (see :mod:`.rows_decoder`)."""
        schema = self._schema(event.table, event.columns)
        table = table_map[event.table_id]
        if self._described.get(event.table_id) is not table:
            # Rows collected under the table id's previous layout go first: they decode with it.
            self.writer.send()
            self.writer.binlog_table(BinlogTable.of(event, table))
            self._described[event.table_id] = table
        where = SourcePosition(log_file, event.packet.log_pos, 0, gtid, event.packet.server_id, event.timestamp * 1000)
        self.writer.binlog_rows(schema, event.table_id, OPS[type(event)], *undecoded(event), where)

    def _query(self, event: QueryEvent, stream: BinLogStreamReader, gtid: str | None) -> bool:
        """Handle a statement; True when it ends a source transaction (COMMIT, DDL, TRUNCATE)."""
        query = event.query.strip()
        upper = query[:16].upper()
        if upper.startswith("BEGIN"):
            return False
        if upper.startswith("COMMIT"):
            return True
        default_db = event.schema.decode() if isinstance(event.schema, bytes) else event.schema
        truncate = _TRUNCATE.match(query)
        if truncate:
            database, table = truncate.group(1) or default_db, truncate.group(2)
            if database == self.source.database and table in self._tables:
                latest = self._latest.get(table)
                schema = latest[0] if latest is not None else self._schema_from_catalog(table)
                if schema is not None:
                    where = SourcePosition(stream.log_file, event.packet.log_pos, 0, gtid, event.packet.server_id, event.timestamp * 1000,
                                           thread=event.slave_proxy_id)
                    self.writer.truncate(schema, where)
            return True
        if _DDL.match(query):
            # Layout comes with the next TableMapEvent, parsed anew; the hints (booleans, JSON, key) are re-read.
            self._infos.clear()
            stream.table_map.clear()
            return True
        return False

    def _schema_from_catalog(self, table: str) -> TableSchema | None:
        info = self._info(table, refresh=True)
        if info is None:
            return None
        return self.schemas.get(table, info.columns, info.key_columns, self.transforms.for_table(f"{self.source.database}.{table}"))
