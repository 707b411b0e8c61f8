"""The MySQL/MariaDB connector: snapshot when the snapshot mode says so, then stream the binlog.

Offsets (``{file, pos, gtid, snapshot_completed}``) live in the :class:`OffsetStore`; a snapshot's
position is stored only once Kafka has acknowledged every snapshot row, and a streamed position
only once every event before it is acknowledged. After a crash the connector resumes from the
last stored position: events after it may be published again, with the same source positions.
"""

from __future__ import annotations

import logging

import pymysql

from simpul.cdc.encoding_pool import EncodingPool
from simpul.cdc.mysql.binlog import BinlogStreamer, require_full_row_binlog
from simpul.cdc.mysql.events import EventWriter
from simpul.cdc.mysql.row_encoder import MysqlRowEncoder
from simpul.cdc.mysql.schema import SchemaCache
from simpul.cdc.mysql.snapshot import BinlogPosition, SnapshotInterrupted, current_position, take_snapshot
from simpul.cdc.offsets import OffsetStore
from simpul.cdc.publisher import EventPublisher
from simpul.cdc.reconnect import run_reconnecting
from simpul.cdc.snapshot_modes import needs_snapshot
from simpul.cdc.transforms import ColumnTransforms
from simpul.config import ConfigError, SimpulConfig, SourceSettings
from simpul.databases import connect_mysql
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)


class MySqlConnector:
    """One MySQL/MariaDB source captured into Kafka until ``shutdown`` is requested."""

    def __init__(self, config: SimpulConfig, source: SourceSettings, shutdown: Shutdown) -> None:
        self.config = config
        self.source = source
        if self.source.kind != "mysql":
            raise ConfigError(f"sources.{source.name}: expected kind mysql, got {self.source.kind}")
        elsewhere = [t for t in self.source.tables if t.split(".", 1)[0] != self.source.database]
        if elsewhere:
            # Topics are <prefix>.<database>.<table> and the binlog is filtered on that one database.
            raise ConfigError(f"sources.{source.name}.tables: {', '.join(elsewhere)} not in database {self.source.database}")
        self.shutdown = shutdown
        self.transforms = ColumnTransforms(self.source.capture.columns, f"sources.{self.source.name}")
        self.schemas = SchemaCache(self.source.topic_prefix, self.source.database)

    def run(self) -> None:
        """Snapshot if needed, then stream until a stop is asked for; reconnects after outages
        (see :func:`run_reconnecting`)."""
        source = self.source
        publisher = EventPublisher(self.config, source)
        offsets = OffsetStore(self.config)
        pool = EncodingPool(source.name, MysqlRowEncoder, (source,), source.capture.workers)
        try:
            publisher.ensure_topics([self.schemas.topic(t.split(".", 1)[1]) for t in source.tables])
            writer = EventWriter(publisher, source, pool)
            lost = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
            run_reconnecting(source.name, lambda: self._capture(publisher, offsets, writer), lost, self.shutdown, log)
        finally:
            pool.close()
            publisher.close()
            offsets.close()

    def _capture(self, publisher: EventPublisher, offsets: OffsetStore, writer: EventWriter) -> None:
        """One connected run: from the stored position (after a snapshot if one is needed) until a stop."""
        start = self._start(publisher, offsets, writer)
        if start is None or self.source.capture.snapshot_mode == "initial_only" or self.shutdown.requested:
            return
        BinlogStreamer(self.source, publisher, offsets, writer, self.schemas, self.transforms, self.shutdown).run(start)

    def _start(self, publisher: EventPublisher, offsets: OffsetStore, writer: EventWriter) -> BinlogPosition | None:
        """Where streaming starts, after a snapshot if one is needed; None if stopped during it."""
        source = self.source
        offset = offsets.load(source.offset_key)
        conn = connect_mysql(source)
        try:
            with conn.cursor() as cursor:
                require_full_row_binlog(cursor)
                cursor.execute("SHOW BINARY LOGS")
                files = [row[0] for row in cursor.fetchall()]
            mode = source.capture.snapshot_mode
            if not needs_snapshot(mode, offset, offset is not None and offset.get("file") in files, f"binlog file {(offset or {}).get('file')} is no longer on the server"):
                if offset is not None and offset.get("snapshot_completed"):
                    log.info("%s: resuming from the stored offset %s:%d", source.name, offset["file"], offset["pos"])
                    return BinlogPosition(offset["file"], int(offset["pos"]), offset.get("gtid"))
                # no_data without an offset: stream from now on.
                with conn.cursor() as cursor:
                    position = current_position(cursor)
                offsets.save(source.offset_key, position.as_offset(True))
                return position
            try:
                position = take_snapshot(conn, source, writer, self.schemas, self.transforms, self.shutdown,
                                         batch_rows=min(source.capture.max_batch_events, 10_000))
            except SnapshotInterrupted:
                log.info("%s: snapshot interrupted by a stop request; it starts again next time", source.name)
                return None
            # Stored only once Kafka holds every snapshot row: a crash before this snapshots again.
            publisher.flush()
            offsets.save(source.offset_key, position.as_offset(True))
            return position
        finally:
            conn.close()


def run_mysql_connector(config: SimpulConfig, source: SourceSettings, shutdown: Shutdown) -> None:
    """Entry point of ``simpul cdc run --source NAME`` for a MySQL/MariaDB source."""
    MySqlConnector(config, source, shutdown).run()
