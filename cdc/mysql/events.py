"""Turning row images into Debezium events on Kafka, shared by the snapshot and the binlog reader.

Conversion or encoding problems set the row aside on the dead-letter topic and the connector goes
on; data-quality notes (a zero date became null) count in a metric and log the table and column,
never a value.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from simpul.cdc import metrics
from simpul.cdc.envelope import DEBEZIUM_VERSION
from simpul.cdc.mysql.schema import Note, TableSchema
from simpul.cdc.publisher import DeadLetter, EventPublisher, IncompatibleSchema, PublishError
from simpul.config import SourceSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourcePosition:
    """Where a row came from, as Debezium's MySQL ``source`` block states it."""

    file: str
    pos: int
    row: int = 0
    gtid: str | None = None
    server_id: int = 0
    ts_ms: int = 0
    snapshot: str = "false"
    thread: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The position for a dead letter."""
        return {"file": self.file, "pos": self.pos, "row": self.row, "gtid": self.gtid}


class EventWriter:
    """Publishes a table's row changes as Debezium events (``r``/``c``/``u``/``d``/``t``)."""

    def __init__(self, publisher: EventPublisher, source: SourceSettings) -> None:
        self.publisher = publisher
        self.source = source
        self._noted: set[tuple[str, str, str]] = set()
        self._last_source: tuple[SourcePosition, TableSchema, dict[str, Any]] | None = None

    def read(self, schema: TableSchema, row: dict[str, Any], where: SourcePosition) -> None:
        """A snapshot row (``op: r``)."""
        self._emit(schema, "r", None, row, where)

    def insert(self, schema: TableSchema, row: dict[str, Any], where: SourcePosition, none_sources: dict[str, str] | None = None) -> None:
        """A created row (``op: c``)."""
        self._emit(schema, "c", None, row, where, after_none=none_sources)

    def update(
        self, schema: TableSchema, before: dict[str, Any], after: dict[str, Any], where: SourcePosition,
        before_none: dict[str, str] | None = None, after_none: dict[str, str] | None = None,
    ) -> None:
        """An updated row (``op: u``); a changed primary key becomes ``d`` + tombstone, then ``c``."""
        self._emit(schema, "u", before, after, where, before_none, after_none)

    def delete(self, schema: TableSchema, row: dict[str, Any], where: SourcePosition, none_sources: dict[str, str] | None = None) -> None:
        """A deleted row (``op: d``), then its tombstone."""
        self._emit(schema, "d", row, None, where, before_none=none_sources)

    def truncate(self, schema: TableSchema, where: SourcePosition) -> None:
        """A truncated table (``op: t``, no key, no row images)."""
        envelope = self._envelope(schema, "t", None, None, where)
        try:
            self.publisher.publish(schema.topic, None, None, schema.envelope, envelope, schema.table, "t", where.ts_ms)
        except PublishError:
            raise
        except Exception as exc:  # noqa: BLE001 - any encoding problem sets the event aside
            self._set_aside(schema, exc, where, None, None)

    def _emit(
        self, schema: TableSchema, op: str, before_raw: dict[str, Any] | None, after_raw: dict[str, Any] | None,
        where: SourcePosition, before_none: dict[str, str] | None = None, after_none: dict[str, str] | None = None,
    ) -> None:
        try:
            before = self._record(schema, before_raw, before_none)
            after = self._record(schema, after_raw, after_none)
            key = schema.key_of(after if after is not None else before)  # type: ignore[arg-type]
            old_key = schema.key_of(before) if op == "u" and before is not None else key
            if old_key != key:
                self._publish(schema, old_key, "d", before, None, where)
                self._publish(schema, old_key, None, None, None, where)
                self._publish(schema, key, "c", None, after, where)
                return
            self._publish(schema, key, op, before, after, where)
            if op == "d":
                self._publish(schema, key, None, None, None, where)
        except PublishError:
            raise
        except IncompatibleSchema as exc:
            self._set_aside(schema, exc, where, before_raw, after_raw, reason="incompatible_schema")
        except Exception as exc:  # noqa: BLE001 - any conversion or encoding problem sets the row aside
            self._set_aside(schema, exc, where, before_raw, after_raw)

    def _record(self, schema: TableSchema, raw: dict[str, Any] | None, none_sources: dict[str, str] | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        record, notes = schema.row(raw, none_sources)
        for note in notes:
            self._note(schema, note)
        return record

    def _note(self, schema: TableSchema, note: Note) -> None:
        metrics.DATA_QUALITY.labels(self.source.name, schema.table, note.reason).inc()
        # One warning per column and reason: the metric counts, the log says where to look.
        if (schema.table, note.column, note.reason) not in self._noted:
            self._noted.add((schema.table, note.column, note.reason))
            log.warning("%s: %s.%s: %s value(s) written as null (counted in data_quality_notes_total)",
                        self.source.name, schema.table, note.column, note.reason)

    def _publish(self, schema: TableSchema, key: dict[str, Any] | None, op: str | None,
                 before: dict[str, Any] | None, after: dict[str, Any] | None, where: SourcePosition) -> None:
        if op is None:
            if key is not None:  # a tombstone only makes sense for a keyed table
                self.publisher.publish(schema.topic, schema.key, key, None, None, schema.table, None, where.ts_ms)
            return
        envelope = self._envelope(schema, op, before, after, where)
        self.publisher.publish(schema.topic, schema.key, key, schema.envelope, envelope, schema.table, op, where.ts_ms)

    def _envelope(self, schema: TableSchema, op: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
                  where: SourcePosition) -> dict[str, Any]:
        now_ns = time.time_ns()
        return {
            "before": before,
            "after": after,
            "source": self._source(schema, where),
            "transaction": None,
            "op": op,
            "ts_ms": now_ns // 1_000_000,
            "ts_us": now_ns // 1_000,
            "ts_ns": now_ns,
        }

    def _source(self, schema: TableSchema, where: SourcePosition) -> dict[str, Any]:
        """The ``source`` block of an event of ``schema`` at ``where``: one dict for every row given
        the same position object (a snapshot's rows), which the publisher then encodes once."""
        last = self._last_source
        if last is not None and last[0] is where and last[1] is schema:
            return last[2]
        block = {
            "version": DEBEZIUM_VERSION,
            "connector": "mysql",
            "name": self.source.topic_prefix,
            "ts_ms": where.ts_ms,
            "snapshot": where.snapshot,
            "db": self.source.database,
            "sequence": None,
            "ts_us": where.ts_ms * 1000,
            "ts_ns": where.ts_ms * 1_000_000,
            "table": schema.table.split(".", 1)[1],
            "server_id": where.server_id,
            "gtid": where.gtid,
            "file": where.file,
            "pos": where.pos,
            "row": where.row,
            "thread": where.thread,
            "query": None,
        }
        self._last_source = (where, schema, block)
        return block

    def _set_aside(self, schema: TableSchema, exc: Exception, where: SourcePosition,
                   before: dict[str, Any] | None, after: dict[str, Any] | None, reason: str | None = None) -> None:
        code = reason or getattr(exc, "reason", None) or "encode_error"
        # Column rules apply to set-aside rows too: an excluded or hashed column never leaves in clear.
        row = schema.transform.row(after if after is not None else before)
        key = {name: row[name] for name in schema.key_columns if name in row} if row else None
        log.warning("%s: %s: row set aside (%s) at %s:%d", self.source.name, schema.table, code, where.file, where.pos)
        self.publisher.dead_letter(DeadLetter(code, f"{type(exc).__name__}: {exc}", schema.table, where.as_dict(), key, row))
