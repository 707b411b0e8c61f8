"""Turning row images into Debezium events on Kafka, shared by the snapshot and the binlog reader.

:class:`EventWriter` takes row images in log order and registers each table layout's schemas;
a :class:`~simpul.cdc.mysql.row_encoder.MysqlRowEncoder` (in this process, or on worker processes
with ``capture.workers`` above 1) converts and encodes them, and the events are published in the
order the images came, with the binlog checkpoints between them.

Conversion or encoding problems set the row aside on the dead-letter topic and the connector goes
on; data-quality notes (a zero date became null) count in a metric and log the table and column,
never a value.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from simpul.cdc import metrics
from simpul.cdc.encoding_pool import EncodingPool, PooledPublishing
from simpul.cdc.mysql.row_encoder import QualityNote, SourcePosition, TableLayout
from simpul.cdc.mysql.rows_decoder import BinlogRows, BinlogTable
from simpul.cdc.mysql.schema import TableSchema
from simpul.cdc.publisher import EventPublisher
from simpul.config import SourceSettings

log = logging.getLogger(__name__)

# Row images per call to the encoding pool (at most), how long the first may wait for more, and
# calls in flight per worker before the writer waits. An undecoded binlog rows event counts as a
# row per ``BINLOG_BYTES_PER_ROW`` of its packet: a call carries at most ~128 KB of them, so
# memory stays bounded in a million-row transaction too.
BATCH_ROWS = 500
BINLOG_BYTES_PER_ROW = 256
BATCH_WAIT_S = 0.005
MAX_OUTSTANDING = 4


class EventWriter:
    """Publishes row changes as Debezium events (``r``/``c``/``u``/``d``/``t``), in the order given."""

    def __init__(self, publisher: EventPublisher, source: SourceSettings, pool: EncodingPool) -> None:
        self.publisher = publisher
        self.source = source
        self.pool = pool
        self.output = PooledPublishing(pool, publisher, "rows", BATCH_ROWS, MAX_OUTSTANDING, on_other=self._note)
        self._layouts: dict[int, TableSchema] = {}
        self._noted: set[tuple[str, str, str]] = set()

    # --- row images, in log order ----------------------------------------------------------------

    def reads(self, schema: TableSchema, names: tuple[str, ...], types: tuple[int, ...], rows: list[tuple[Any, ...]], where: SourcePosition) -> None:
        """Snapshot rows (``op: r``), value tuples in ``names`` order as the server sent them
        (text, or bytes for binary columns; ``types`` are their MySQL field types), all at ``where``."""
        ref = self._layout(schema)
        self.send()
        self.output.submit([], "reads", ref, names, types, rows, where)

    def binlog_table(self, table: BinlogTable) -> None:
        """A table's TableMapEvent, before the first of its rows events that :meth:`binlog_rows` gives."""
        self.pool.broadcast("describe_binlog_table", table)

    def binlog_rows(self, schema: TableSchema, table_id: int, op: str, packet: bytes, checksum: bool, where: SourcePosition) -> None:
        """A binlog rows event's rows (``op`` ``c``, ``u`` or ``d``), from its undecoded ``packet``:
        the encoders decode them, numbering their ``row`` from ``where`` on."""
        self.output.add(BinlogRows(self._layout(schema), table_id, op, packet, checksum, where), 1 + len(packet) // BINLOG_BYTES_PER_ROW)

    def truncate(self, schema: TableSchema, where: SourcePosition) -> None:
        """A truncated table (``op: t``, no key, no row images)."""
        self.output.add((self._layout(schema), "t", None, None, None, None, where))

    def checkpoint(self, position: dict[str, Any]) -> None:
        """Every row given so far is at or before ``position`` (a source transaction ended)."""
        self.output.checkpoint(position)

    # --- getting them out ------------------------------------------------------------------------

    def send_if_due(self) -> None:
        """Hand the rows collected so far to the encoders when it is time, and publish what is
        encoded: in this process, once a transaction ended (one call per transaction); on
        workers, once the first row has waited ``BATCH_WAIT_S`` (batches of several transactions)."""
        rows, checkpoints = self.output.collected
        if self.pool.workers == 1 or not rows:
            due = checkpoints > 0
        else:
            due = self.output.waited(time.monotonic()) >= BATCH_WAIT_S
        if due:
            self.send()
        self.output.publish_ready()

    def send(self) -> None:
        """Hand every row collected so far to the encoders (and the checkpoints among them)."""
        self.output.send()

    def publish_all(self) -> None:
        """Send, then wait until every row given so far is published (not yet acknowledged)."""
        self.send()
        self.output.publish_ready(wait=True)

    def _layout(self, schema: TableSchema) -> int:
        """The encoders' name for ``schema``, its Avro schemas registered and the encoders told
        the first time it is seen. A schema the registry refuses sets its rows aside."""
        ref = id(schema)
        if self._layouts.get(ref) is schema:
            return ref
        registered = self.publisher.register_table(schema.topic, schema.table, schema.key, schema.envelope)
        table = schema.table.split(".", 1)[1]
        self.pool.broadcast("describe", TableLayout(ref, table, schema.columns, schema.key_columns, *registered))
        # Held here, the schema object keeps its id, so the ref never names another layout.
        self._layouts[ref] = schema
        return ref

    def _note(self, note: QualityNote) -> None:
        metrics.DATA_QUALITY.labels(self.source.name, note.table, note.reason).inc()
        # One warning per column and reason: the metric counts, the log says where to look.
        if (note.table, note.column, note.reason) not in self._noted:
            self._noted.add((note.table, note.column, note.reason))
            log.warning("%s: %s.%s: %s value(s) written as null (counted in data_quality_notes_total)",
                        self.source.name, note.table, note.column, note.reason)
