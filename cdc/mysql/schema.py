"""The MySQL connector's schema builder: a table's columns to Key, Value and Envelope schemas, and
row images (column name -> value) to the Avro records that fill them, column rules applied."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from simpul.cdc.envelope import envelope_schema, field, key_schema, source_schema, value_schema
from simpul.cdc.mysql.types import Converter, MysqlColumn, column_converter
from simpul.cdc.transforms import TableTransform

MYSQL_SOURCE_SCHEMA = source_schema(
    "mysql",
    [
        field("table", "string", nullable=True),
        {"name": "server_id", "type": "long"},
        field("gtid", "string", nullable=True),
        {"name": "file", "type": "string"},
        {"name": "pos", "type": "long"},
        {"name": "row", "type": "int"},
        field("thread", "long", nullable=True),
        field("query", "string", nullable=True),
    ],
)


@dataclass(frozen=True)
class Note:
    """A value changed on the way (e.g. a zero date became null): which column and why, never the value."""

    column: str
    reason: str


@dataclass(frozen=True)
class TableSchema:
    """Everything needed to encode one table's events with one column layout."""

    topic: str
    table: str
    columns: tuple[MysqlColumn, ...]
    key_columns: tuple[str, ...]
    transform: TableTransform
    key: dict[str, Any] | None
    value: dict[str, Any]
    envelope: dict[str, Any]

    def row(self, values: dict[str, Any], none_sources: dict[str, str] | None = None) -> tuple[dict[str, Any], list[Note]]:
        """A row image as the ``Value`` record (rules applied) and the data-quality notes it raised.

        Raises :class:`~simpul.cdc.mysql.types.MysqlValueError` for a value that cannot travel.
        """
        record: dict[str, Any] = {}
        notes: list[Note] = []
        sources = none_sources or {}
        for name, convert in self._converters:
            value, note = convert(values.get(name), sources.get(name))
            record[name] = value
            if note is not None:
                notes.append(Note(name, note))
        shaped = self.transform.row(record)
        assert shaped is not None
        return shaped, notes

    @cached_property
    def _converters(self) -> tuple[tuple[str, Converter], ...]:
        return tuple((column.name, column_converter(column)) for column in self.columns)

    def key_of(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The ``Key`` record of a converted row, or None for a table without a primary key.

        Taken from the converted (and rule-shaped) row so a hashed key column stays hashed.
        """
        if self.key is None:
            return None
        return {name: record[name] for name in self.key_columns if name in record}


def build_table_schema(
    topic: str, table: str, columns: tuple[MysqlColumn, ...], key_columns: tuple[str, ...], transform: TableTransform
) -> TableSchema:
    """The schemas of a table as Debezium would register them for ``topic``.

    Key columns are required in ``Key``; every ``Value`` field is nullable, so adding or relaxing
    a column stays BACKWARD compatible. Excluded key columns leave the key.
    """
    value_fields = transform.fields([field(column.name, column.avro, nullable=True) for column in columns])
    by_name = {column.name: column for column in columns}
    raw_key_fields = [field(name, by_name[name].avro, nullable=False) for name in key_columns if name in by_name]
    key_fields = transform.fields(raw_key_fields)
    value = value_schema(topic, value_fields)
    return TableSchema(
        topic=topic,
        table=table,
        columns=columns,
        key_columns=tuple(f["name"] for f in key_fields),
        transform=transform,
        key=key_schema(topic, key_fields) if key_fields else None,
        value=value,
        envelope=envelope_schema(topic, value, MYSQL_SOURCE_SCHEMA),
    )


class SchemaCache:
    """One :class:`TableSchema` object per distinct Avro shape of a table.

    The publisher caches encoders by schema object, so the binlog's TableMapEvent before every
    row batch must map back to the same object while the table's layout is unchanged.
    """

    def __init__(self, topic_prefix: str, database: str) -> None:
        self._prefix = topic_prefix
        self._database = database
        self._by_layout: dict[tuple[str, tuple[MysqlColumn, ...], tuple[str, ...]], TableSchema] = {}
        self._by_shape: dict[tuple[str, str], TableSchema] = {}

    def topic(self, table: str) -> str:
        """``<prefix>.<database>.<table>`` (``table`` without its database)."""
        return f"{self._prefix}.{self._database}.{table}"

    def get(self, table: str, columns: tuple[MysqlColumn, ...], key_columns: tuple[str, ...], transform: TableTransform) -> TableSchema:
        """The schema of ``table`` (unqualified) with this layout, built the first time it is seen."""
        layout = (table, columns, key_columns)
        cached = self._by_layout.get(layout)
        if cached is not None:
            return cached
        built = build_table_schema(self.topic(table), f"{self._database}.{table}", columns, key_columns, transform)
        shape = (table, json.dumps([built.key, built.value], sort_keys=True))
        same_shape = self._by_shape.get(shape)
        if same_shape is not None:
            # Same Avro shape, other column details (snapshot vs binlog, a charset): keep the schema
            # objects already registered, convert with these columns.
            built = TableSchema(built.topic, built.table, columns, built.key_columns, transform, same_shape.key, same_shape.value, same_shape.envelope)
        else:
            self._by_shape[shape] = built
        self._by_layout[layout] = built
        return built
