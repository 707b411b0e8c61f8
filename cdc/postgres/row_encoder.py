"""The CPU-heavy half of the PostgreSQL connector: pgoutput row messages and snapshot rows to
encoded Kafka records (:class:`RowEncoder`).

The connector's own process reads the replication stream, keeps transactions, positions and
schemas, and produces; a :class:`RowEncoder` decodes rows, converts them to Debezium's types and
encodes the events in Avro. It does no I/O, so the connector can run it in its own process or in
worker processes (:mod:`simpul.cdc.encoding_pool`), one copy per process, each told about every
table description in log order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from simpul.cdc.postgres.events import Event, SourcePosition, change_events, now_us, read_event, source_block, truncate_event
from simpul.cdc.postgres.pgoutput import Delete, Insert, PgOutputDecoder, RawValue, Relation, Truncate, Update
from simpul.cdc.postgres.schema import TableSchema, build_table_schema
from simpul.cdc.row_encoding import DeadLetter, EncodedEvent, registered_encoders
from simpul.cdc.transforms import ColumnTransforms, TableTransform
from simpul.config import SourceSettings
from simpul.schemas.wire import ConfluentAvroEncoder

# pgoutput message kinds whose work a RowEncoder does: insert, update, delete, truncate.
ROW_MESSAGE_KINDS = frozenset(b"IUDT")

# One streamed row message: (data start LSN, pgoutput message, txId, commit time in µs since the
# Unix epoch, LSN of the last commit before it, whether to time its commit-to-acknowledgement lag).
RowMessage = tuple[int, bytes, Union[int, None], int, Union[int, None], bool]
# What one input message or row became: its records, or the dead letter that set it aside (a
# truncate of several tables may have both).
RowOutcome = list[Union[EncodedEvent, DeadLetter]]


@dataclass(frozen=True)
class TableDescription:
    """A table as the log describes it at one point, with what the encoder needs besides."""

    described: Relation  # as pgoutput described it: how its row messages decode
    keyed: Relation  # with the primary key from the catalog: how its schemas are built
    enums: dict[int, list[str]] | None
    key_schema_id: int | None
    value_schema_id: int | None
    refused: str | None = None  # the registry refused its schema: its rows go to the dead letters


@dataclass
class _Table:
    schema: TableSchema
    transform: TableTransform
    key: ConfluentAvroEncoder | None
    value: ConfluentAvroEncoder | None
    refused: str | None


class RowEncoder:
    """Turns one source's row messages and snapshot rows into encoded records (no I/O)."""

    def __init__(self, source: SourceSettings) -> None:
        self.prefix = source.topic_prefix
        self.database = source.database
        self.transforms = ColumnTransforms(source.capture.columns, f"sources.{source.name}")
        self.decoder = PgOutputDecoder()
        self._tables: dict[int, _Table] = {}
        self._snapshot_sources: dict[tuple[int, str, int], dict[str, Any]] = {}

    def describe(self, table: TableDescription) -> None:
        """Take a table's (new) description: later rows of it decode and encode with it."""
        relation = table.keyed
        transform = self.transforms.for_table(relation.qualified_name)
        schema = build_table_schema(f"{self.prefix}.{relation.qualified_name}", relation, table.enums, transform)
        key, value = registered_encoders(schema.key, table.key_schema_id, schema.envelope, table.value_schema_id)
        self.decoder.relations[table.described.oid] = table.described
        self._tables[table.described.oid] = _Table(schema, transform, key, value, table.refused)

    def changes(self, messages: list[RowMessage]) -> list[RowOutcome]:
        """The outcome of each streamed row message, in order."""
        outcomes: list[RowOutcome] = []
        for lsn, data, tx_id, commit_time_us, last_committed_lsn, timed in messages:
            change = self.decoder.decode(data)
            position = SourcePosition(lsn, tx_id, commit_time_us, last_committed_lsn)
            commit_ms = commit_time_us // 1000 if timed else None
            if isinstance(change, Truncate):
                truncated: RowOutcome = []
                for relation in change.relations:
                    table = self._tables[relation.oid]
                    source = source_block(self.prefix, self.database, table.schema, position)
                    truncated.extend(self._encode(table, position, None, [truncate_event(source, now_us())], commit_ms))
                outcomes.append(truncated)
                continue
            assert isinstance(change, (Insert, Update, Delete))
            table = self._tables[change.relation.oid]
            raw = change.new if isinstance(change, (Insert, Update)) else change.old
            try:
                source = source_block(self.prefix, self.database, table.schema, position)
                built = change_events(table.schema, table.transform, change, source, now_us())
            except (ValueError, TypeError, OverflowError, KeyError) as exc:
                outcomes.append([self._dead_letter("encode_error", f"{type(exc).__name__}: {exc}", table, position, raw)])
                continue
            outcomes.append(self._encode(table, position, raw, built, commit_ms))
        return outcomes

    def reads(self, oid: int, started_us: int, lsn: int, marker: str, rows: list[tuple[RawValue, ...]]) -> list[RowOutcome]:
        """The ``r`` event of each snapshot row of table ``oid``, whose reading began at
        ``started_us``; ``marker`` is the source block's ``snapshot`` value (``true``, ``last``)."""
        table = self._tables[oid]
        # Every row of a table read by the snapshot shares one source block, built once.
        position = SourcePosition(lsn, None, started_us, None, marker)
        source = self._snapshot_sources.get((oid, marker, started_us))
        if source is None:
            source = source_block(self.prefix, self.database, table.schema, position)
            self._snapshot_sources[(oid, marker, started_us)] = source
        outcomes: list[RowOutcome] = []
        for values in rows:
            try:
                built = [read_event(table.schema, table.transform, values, source, now_us())]
            except (ValueError, TypeError, OverflowError, KeyError) as exc:
                outcomes.append([self._dead_letter("encode_error", f"{type(exc).__name__}: {exc}", table, position, values)])
                continue
            outcomes.append(self._encode(table, position, values, built, None))
        return outcomes

    def _encode(self, table: _Table, position: SourcePosition, raw: Any, events: list[Event], commit_ms: int | None) -> RowOutcome:
        """All events of one row encoded, or its dead letter: a row goes out whole or not at all."""
        if table.refused is not None or table.value is None:
            return [self._dead_letter("incompatible_schema", table.refused or "no registered schema", table, position, raw)]
        name = table.schema.relation.qualified_name
        topic = table.schema.topic
        encoded: RowOutcome = []
        try:
            for event in events:
                key = table.key.encode(event.key) if table.key is not None and event.key is not None else None
                value = table.value.encode(event.envelope) if event.envelope is not None else None
                encoded.append((topic, key, value, name, event.op, commit_ms))
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            return [self._dead_letter("encode_error", f"{type(exc).__name__}: {exc}", table, position, raw)]
        return encoded

    def _dead_letter(self, reason: str, message: str, table: _Table, position: SourcePosition, raw: Any) -> DeadLetter:
        name = table.schema.relation.qualified_name
        row = None
        if raw is not None:
            row = table.transform.row({c.name: (v if isinstance(v, (str, bytes)) or v is None else repr(v)) for c, v in zip(table.schema.relation.columns, raw)})
        return DeadLetter(reason, message, name, position.offset(), None, row)
