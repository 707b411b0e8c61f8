"""Debezium change events as row changes: which table row, what it holds now, and where in the source log.

The resolver does not care how a database spells its log position; it needs one thing from it:
an order. :func:`source_position` turns a Debezium ``source`` block into a tuple that sorts like
the source log (PostgreSQL: the change's LSN; MySQL/MariaDB: binlog file number, position, row),
so a repeated or late event can be recognised by comparing tuples.

Values are converted from Debezium's Connect encodings (days since the epoch for a ``Date``,
microseconds for a ``MicroTimestamp``) to JSON-safe Python values (ISO text), which the mapping's
normalisers read like the values a database cursor gives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

_EPOCH = date(1970, 1, 1)


class ChangeError(ValueError):
    """An event that cannot be read as a row change; the message names the problem, never values."""


@dataclass(frozen=True)
class RowChange:
    """One row's new state: ``values`` is None when the row was deleted."""

    source: str
    table: str
    key: str
    op: str  # c, u, d, r (snapshot read)
    position: tuple[int, ...]
    ts_ms: int
    values: dict[str, Any] | None

    @property
    def row_id(self) -> str:
        """``source:table:key``, as canonical records name theirs."""
        return f"{self.source}:{self.table}:{self.key}"

    def to_plain(self) -> dict[str, Any]:
        """The change as a compact JSON-ready object, how it travels from the router to the resolver."""
        return {"s": self.source, "t": self.table, "k": self.key, "o": self.op, "p": list(self.position), "ts": self.ts_ms, "v": self.values}

    @classmethod
    def from_plain(cls, raw: Any) -> RowChange:
        """Inverse of :meth:`to_plain`."""
        try:
            return cls(raw["s"], raw["t"], str(raw["k"]), raw["o"], tuple(raw["p"]), int(raw["ts"]), raw["v"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ChangeError(f"not a row change ({type(exc).__name__})") from None


def encode_changes(changes: Sequence[RowChange]) -> bytes:
    """Row changes as one message: a JSON array of :meth:`RowChange.to_plain` objects (UTF-8).

    The router sends changes in batches because every Kafka message costs a Faust consumer
    a fixed share of Python work, whatever its size.
    """
    return orjson.dumps([change.to_plain() for change in changes])


def decode_changes(data: bytes | None) -> list[Any]:
    """The plain objects of a message of :func:`encode_changes`, each to be read with
    :meth:`RowChange.from_plain` (so that one bad change can be set aside alone)."""
    try:
        items = orjson.loads(data) if data is not None else None
    except orjson.JSONDecodeError:
        raise ChangeError("not a batch of row changes (JSONDecodeError)") from None
    if not isinstance(items, list):
        raise ChangeError("not a batch of row changes (not a JSON array)")
    return items


def source_position(source: Mapping[str, Any]) -> tuple[int, ...]:
    """The source-log order of an event from its Debezium ``source`` block.

    PostgreSQL events carry ``lsn``; MySQL/MariaDB events ``file`` (``mysql-bin.000042``), ``pos``
    and ``row`` (the row's index within its binlog event).
    """
    lsn = source.get("lsn")
    if lsn is not None:
        return (int(lsn),)
    file, pos = source.get("file"), source.get("pos")
    if file is None or pos is None:
        raise ChangeError("source block has neither lsn nor file/pos")
    suffix = str(file).rpartition(".")[2]
    if not suffix.isdigit():
        raise ChangeError("binlog file name has no sequence number")
    return (int(suffix), int(pos), int(source.get("row") or 0))


def _date(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).isoformat()


def _micro_timestamp(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).replace(tzinfo=None).isoformat()


def _milli_timestamp(ms: int) -> str:
    return _micro_timestamp(ms * 1000)


_CONNECT_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "io.debezium.time.Date": _date,
    "io.debezium.time.MicroTimestamp": _micro_timestamp,
    "io.debezium.time.Timestamp": _milli_timestamp,
}


def plain_value(value: Any) -> Any:
    """A database value as JSON-safe text or number (decimals, dates and bytes as text)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _connect_name(avro_type: Any) -> str | None:
    if isinstance(avro_type, list):
        return next((n for n in (_connect_name(t) for t in avro_type) if n), None)
    if isinstance(avro_type, dict):
        return avro_type.get("connect.name")
    return None


def value_converters(envelope_schema: Mapping[str, Any]) -> dict[str, Callable[[Any], Any]]:
    """Per column of an envelope's row record, the conversion its Connect type needs (if any)."""
    row_schema = None
    # The row record is defined where it first appears (``before``); ``after`` refers to it by name.
    for field in envelope_schema.get("fields", []):
        if field.get("name") in ("before", "after"):
            types = field["type"] if isinstance(field["type"], list) else [field["type"]]
            row_schema = row_schema or next((t for t in types if isinstance(t, dict) and t.get("type") == "record"), None)
    if row_schema is None:
        raise ChangeError("envelope schema defines no row record in 'before' or 'after'")
    converters = {}
    for column in row_schema.get("fields", []):
        name = _connect_name(column["type"])
        if name in _CONNECT_CONVERTERS:
            converters[column["name"]] = _CONNECT_CONVERTERS[name]
    return converters


def row_change(
    source: str,
    table: str,
    key_column: str,
    envelope: Mapping[str, Any],
    converters: Mapping[str, Callable[[Any], Any]],
) -> RowChange:
    """The row change a decoded Debezium envelope describes (create, update, delete or snapshot read)."""
    op = envelope.get("op")
    if op not in ("c", "u", "d", "r"):
        raise ChangeError(f"unsupported operation {op!r}")
    row = envelope.get("before") if op == "d" else envelope.get("after")
    if not isinstance(row, Mapping):
        raise ChangeError(f"operation {op!r} without its row image")
    if row.get(key_column) is None:
        raise ChangeError(f"row has no value in key column {key_column!r}")
    block = envelope.get("source")
    if not isinstance(block, Mapping):
        raise ChangeError("event has no source block")
    values = None
    if op != "d":
        values = {}
        for column, value in row.items():
            convert = converters.get(column)
            values[column] = convert(value) if convert is not None and value is not None else plain_value(value)
    return RowChange(source, table, str(row[key_column]), op, source_position(block), int(block.get("ts_ms") or 0), values)
