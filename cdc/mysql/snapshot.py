"""The initial snapshot: every captured table read at one binlog position, as ``op: r`` events.

Like Debezium: a short global read lock (``FLUSH TABLES WITH READ LOCK``) while the binlog
position is read and a ``START TRANSACTION WITH CONSISTENT SNAPSHOT`` opens, then the lock is
released and the tables are read inside that transaction. Streaming then starts from exactly that
position, so every change is seen once, either in the snapshot or in the binlog. Without the
RELOAD privilege the captured tables are locked instead (``LOCK TABLES ... READ``), and held until
the read ends, since a transaction cannot be opened under LOCK TABLES without releasing it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.cursors

from simpul.cdc import metrics
from simpul.cdc.errors import ConnectorError
from simpul.cdc.mysql.catalog import read_table_info
from simpul.cdc.mysql.events import EventWriter
from simpul.cdc.mysql.row_encoder import SourcePosition
from simpul.cdc.mysql.schema import SchemaCache
from simpul.cdc.transforms import ColumnTransforms
from simpul.config import SourceSettings
from simpul.progress import progress
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)

# Snapshot rows per call to the encoders.
SNAPSHOT_BATCH_ROWS = 1000
# MySQL error codes meaning "not allowed" (access denied, missing privilege).
_PRIVILEGE_ERRORS = {1044, 1045, 1142, 1227}


class SnapshotInterrupted(Exception):
    """A stop was asked for before the snapshot finished: nothing may be stored as done."""


@dataclass(frozen=True)
class BinlogPosition:
    """A binlog coordinate: file, position and the MariaDB GTID state there."""

    file: str
    pos: int
    gtid: str | None

    def as_offset(self, snapshot_completed: bool) -> dict[str, Any]:
        """The offset stored for this position."""
        return {"file": self.file, "pos": self.pos, "gtid": self.gtid, "snapshot_completed": snapshot_completed}


def current_position(cursor: Any) -> BinlogPosition:
    """Where the binlog ends now (``SHOW MASTER STATUS``) and MariaDB's ``@@gtid_binlog_pos``."""
    cursor.execute("SHOW MASTER STATUS")
    status = cursor.fetchone()
    if status is None:
        raise ConnectorError("the server has no binary log (log_bin is off): MySQL capture needs a ROW binlog")
    cursor.execute("SELECT @@gtid_binlog_pos")
    (gtid,) = cursor.fetchone()
    return BinlogPosition(status[0], int(status[1]), gtid or None)


def _lock(conn: pymysql.connections.Connection, source: SourceSettings) -> bool:
    """Take the global read lock, else read-lock the captured tables; True when the lock is global."""
    with conn.cursor() as cursor:
        try:
            cursor.execute("FLUSH TABLES WITH READ LOCK")
            return True
        except pymysql.err.OperationalError as exc:
            if exc.args[0] not in _PRIVILEGE_ERRORS:
                raise
        log.info("%s: no RELOAD privilege, locking the captured tables for the snapshot", source.name)
        tables = ", ".join(f"`{t.split('.')[0]}`.`{t.split('.')[1]}` READ" for t in source.tables)
        cursor.execute(f"LOCK TABLES {tables}")
        return False


def take_snapshot(
    conn: pymysql.connections.Connection,
    source: SourceSettings,
    writer: EventWriter,
    schemas: SchemaCache,
    transforms: ColumnTransforms,
    shutdown: Shutdown,
    batch_rows: int = 2000,
) -> BinlogPosition:
    """Read every captured table consistently and publish its rows; the binlog position they match.

    Raises :class:`SnapshotInterrupted` if a stop is asked for part-way.
    """
    name = source.name
    started = time.monotonic()
    metrics.SNAPSHOT_RUNNING.labels(name).set(1)
    metrics.SNAPSHOT_TABLES_REMAINING.labels(name).set(len(source.tables))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION time_zone = '+00:00'")
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        global_lock = _lock(conn, source)
        with conn.cursor() as cursor:
            position = current_position(cursor)
            if global_lock:
                cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            # The layouts are read under the lock, so they match the position.
            infos = {t: read_table_info(cursor, *t.split(".", 1)) for t in source.tables}
            if global_lock:
                cursor.execute("UNLOCK TABLES")
        log.info("%s: snapshot at %s:%d (gtid %s), %d table(s)", name, position.file, position.pos, position.gtid, len(source.tables))
        _read_tables(conn, source, writer, schemas, transforms, shutdown, infos, position, batch_rows)
        conn.commit()
        if not global_lock:
            with conn.cursor() as cursor:
                cursor.execute("UNLOCK TABLES")
        log.info("%s: snapshot done in %.1f s", name, time.monotonic() - started)
        return position
    finally:
        metrics.SNAPSHOT_RUNNING.labels(name).set(0)


def _read_tables(
    conn: pymysql.connections.Connection, source: SourceSettings, writer: EventWriter, schemas: SchemaCache,
    transforms: ColumnTransforms, shutdown: Shutdown, infos: dict[str, Any], position: BinlogPosition, batch_rows: int,
) -> None:
    name = source.name
    ts_ms = int(time.time() * 1000)
    # Every row shares one position (the encoders write its source block once per batch).
    where = SourcePosition(position.file, position.pos, 0, position.gtid, 0, ts_ms, "true")
    # Debezium marks the very last snapshot row "last": hold one row back to know which it is.
    held: tuple[Any, tuple[str, ...], tuple[int, ...], list[tuple[Any, ...]]] | None = None
    for index, qualified in enumerate(source.tables):
        database, table = qualified.split(".", 1)
        info = infos[qualified]
        if info is None:
            log.warning("%s: captured table %s does not exist; skipped in the snapshot", name, qualified)
            metrics.SNAPSHOT_TABLES_REMAINING.labels(name).set(len(source.tables) - index - 1)
            continue
        schema = schemas.get(table, info.columns, info.key_columns, transforms.for_table(qualified))
        with conn.cursor() as cursor:
            cursor.execute("SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s", (database, table))
            estimate = (cursor.fetchone() or (None,))[0]
        names = tuple(c.name for c in info.columns)
        select = ", ".join(f"`{n}`" for n in names)
        with progress(f"snapshot {qualified}", estimate or None) as tracker, conn.cursor(pymysql.cursors.SSCursor) as cursor:
            # Unbuffered: rows stream from the server, memory stays flat on large tables. Values
            # stay the server's text here (no decoders while the result's columns are described):
            # the encoders convert them with pymysql's own converters, off this busy process.
            decoders, conn.decoders = conn.decoders, {}
            try:
                cursor.execute(f"SELECT {select} FROM `{database}`.`{table}`")
            finally:
                conn.decoders = decoders
            types = tuple(column[1] for column in cursor.description)
            while True:
                rows = cursor.fetchmany(batch_rows)
                if not rows:
                    break
                if shutdown.requested:
                    raise SnapshotInterrupted(f"stopped during the snapshot of {qualified}")
                if held is not None:
                    writer.reads(*held, where)
                for at in range(0, len(rows) - 1, SNAPSHOT_BATCH_ROWS):
                    writer.reads(schema, names, types, list(rows[at : min(at + SNAPSHOT_BATCH_ROWS, len(rows) - 1)]), where)
                held = (schema, names, types, [rows[-1]])
                writer.output.publish_ready()
                tracker.advance(len(rows))
                metrics.SNAPSHOT_ROWS.labels(name, qualified).inc(len(rows))
                writer.publisher.poll(0)
        metrics.SNAPSHOT_TABLES_REMAINING.labels(name).set(len(source.tables) - index - 1)
    if held is not None:
        writer.reads(*held, where._replace(snapshot="last"))
    writer.publish_all()
