"""Write-back: each agency's feedback topic into a table Simpul owns in the agency's own database.

An existing agency application reads verified data with a plain SQL join on its own key, e.g.
``JOIN simpul_citizen_ref r ON r.record_table = 'bansos.anggota_penerima' AND r.record_key = a.nik``,
without any change to its own tables. The table holds one row per agency record: its master id,
the verified fields the agency may see (the feedback topic already carries only those), its life
status and which source verified each field. The consumed offsets live in the same database
and commit with the rows (``simpul_sink_offsets``), so the write-back is exactly once in effect.
The CDC connectors capture only the tables a source lists, so these tables never flow back in.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from simpul.config import SourceSettings
from simpul.databases import connect_mysql, connect_postgres
from simpul.metrics import LabelledChildren
from simpul.schemas.wire import ConfluentAvroDecoder, WireFormatError
from simpul.sinks import metrics
from simpul.sinks.offsets import Partition, SinkOffsets, unconsumed
from simpul.sinks.runner import SinkMessage, WriteResult, utc_from_ms

log = logging.getLogger(__name__)

SINK = "writeback"
OFFSETS_TABLE = "simpul_sink_offsets"
# The feedback's scoped fields, in the Citizen schema's order.
FIELDS = ("nik", "name", "titles", "birth_date", "birth_place", "sex", "street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone")


def ref_table_ddl(table: str, dialect: str) -> str:
    """CREATE TABLE IF NOT EXISTS for the write-back table in ``dialect`` (postgres or mysql)."""
    text = "text" if dialect == "postgres" else "VARCHAR(255)"
    key = "text" if dialect == "postgres" else "VARCHAR(191)"
    ts = "timestamptz" if dialect == "postgres" else "DATETIME(3)"
    json_type = "jsonb" if dialect == "postgres" else "JSON"
    columns = ", ".join(f"{name} {'date' if name == 'birth_date' else text}" for name in FIELDS)
    return (
        f"CREATE TABLE IF NOT EXISTS {table} (record_table {key} NOT NULL, record_key {key} NOT NULL, master_id {key} NOT NULL, "
        f"{columns}, deceased boolean, verified_from {json_type}, source_updated_at {ts}, written_at {ts} NOT NULL, "
        f"PRIMARY KEY (record_table, record_key))"
    )


def ref_row(value: dict[str, Any]) -> tuple[Any, ...]:
    """A feedback value as the write-back table's row (without ``written_at``)."""
    fields = [", ".join(value.get("titles") or []) or None if name == "titles" else value.get(name) for name in FIELDS]
    return (
        value["table"], value["record_key"], value["master_id"], *fields, value.get("deceased"),
        json.dumps(value.get("verified_from") or {}, sort_keys=True), utc_from_ms(value["updated_ms"]),
    )


def record_position(record_id: str) -> tuple[str, str]:
    """(table, key) of a record id ``source:table:key`` (the key may itself hold colons)."""
    _, table, key = record_id.split(":", 2)
    return table, key


class AgencyWriteBack:
    """One agency database as a :class:`~simpul.sinks.runner.SinkTarget` for its feedback topic."""

    name = SINK

    def __init__(self, source: SourceSettings, decoder: ConfluentAvroDecoder) -> None:
        self.source = source
        self.table = source.feedback.table
        self.dialect = source.kind
        self.offsets = SinkOffsets(OFFSETS_TABLE, self.dialect)
        self.decoder = decoder
        self._messages = LabelledChildren(metrics.MESSAGES)
        self.conn: Any = self._connect()
        with self._transaction() as cursor:
            cursor.execute(ref_table_ddl(self.table, self.dialect))
            cursor.execute(self.offsets.ddl())

    def _connect(self) -> Any:
        if self.dialect == "postgres":
            return connect_postgres(self.source, application_name="simpul-writeback")
        return connect_mysql(self.source)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self.dialect == "postgres":
            with self.conn.transaction(), self.conn.cursor() as cursor:
                yield cursor
            return
        self.conn.begin()
        try:
            with self.conn.cursor() as cursor:
                yield cursor
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise

    def reconnect(self) -> None:
        """Reopen the connection (after a failed write)."""
        try:
            self.conn.close()
        finally:
            self.conn = self._connect()

    def stored_offsets(self, consumer: str) -> dict[Partition, int]:
        """The next offsets per partition, as committed with the rows."""
        with self._transaction() as cursor:
            return self.offsets.load(cursor, consumer)

    def write(self, consumer: str, messages: Sequence[SinkMessage]) -> WriteResult:
        """Upsert or delete each record's row (last state per record wins) with the offsets, in one transaction."""
        result = WriteResult()
        topic = self.source.feedback_topic
        with self._transaction() as cursor:
            fresh, offsets = unconsumed(messages, self.offsets.load(cursor, consumer, lock=True))
            result.skipped = len(messages) - len(fresh)
            final: dict[tuple[str, str], tuple[Any, ...] | None] = {}
            kinds: list[str] = []
            for m in fresh:
                try:
                    record_id = self.decoder.decode(m.key) if m.key is not None else None
                    if not isinstance(record_id, str):
                        raise ValueError("key is not a record id")
                    value = self.decoder.decode(m.value) if m.value is not None else None
                    final[record_position(record_id)] = ref_row(value) if value is not None else None
                except (WireFormatError, ValueError, EOFError, KeyError, TypeError) as exc:
                    reason = type(exc).__name__
                    log.warning("%s: %s[%d]@%d set aside: %s", self.source.name, m.topic, m.partition, m.offset, reason)
                    metrics.DEAD_LETTERS.labels(SINK, reason).inc()
                    continue
                kinds.append("upsert" if m.value is not None else "tombstone")
                if m.source_ts_ms:
                    result.latencies_s.append(m.source_ts_ms / 1000)
            now = datetime.now(UTC)
            upserts = [(*row, now) for row in final.values() if row is not None]
            deletes = [position for position, row in final.items() if row is None]
            if upserts:
                cursor.executemany(self._upsert_sql(), upserts)
            if deletes:
                cursor.executemany(f"DELETE FROM {self.table} WHERE record_table = %s AND record_key = %s", deletes)
            self.offsets.save(cursor, consumer, offsets)
        committed_s = time.time()
        result.latencies_s = [max(0.0, committed_s - ts) for ts in result.latencies_s]
        result.applied = len(kinds)
        for kind in kinds:
            self._messages(SINK, topic, kind).inc()
        return result

    def _upsert_sql(self) -> str:
        columns = ["record_table", "record_key", "master_id", *FIELDS, "deceased", "verified_from", "source_updated_at", "written_at"]
        values = ", ".join(["%s"] * len(columns))
        updates = columns[2:]
        if self.dialect == "postgres":
            return (f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({values}) ON CONFLICT (record_table, record_key) DO UPDATE SET "
                    + ", ".join(f"{c} = EXCLUDED.{c}" for c in updates))
        return (f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({values}) ON DUPLICATE KEY UPDATE "
                + ", ".join(f"{c} = VALUES({c})" for c in updates))
