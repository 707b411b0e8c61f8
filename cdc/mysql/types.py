"""MySQL/MariaDB column types to Debezium's Avro types, and column values to Avro values.

A column is described once, as a :class:`MysqlColumn`, whichever way it was learnt: from
``information_schema.COLUMNS`` (the snapshot, :func:`column_from_information_schema`) or from a
binlog TableMapEvent written with ``binlog_row_metadata=FULL`` (streaming, :func:`column_from_binlog`).
Both give the same Avro type, so the hand-off from snapshot to binlog registers no new schema.

Mappings follow Debezium's MySQL connector with its defaults (``time.precision.mode=adaptive_time_microseconds``,
``decimal.handling.mode=precise``, ``bigint.unsigned.handling.mode=long``). Values arrive either
from pymysql (snapshot: zero dates as strings, SET as ``"a,b"``) or from mysql-replication
(binlog: zero dates as None with a reason, SET as a Python set); :func:`column_converter` accepts both.
Everything here is pure, so every mapping is unit-tested without a server.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from simpul.cdc.envelope import AvroType, connect_decimal, connect_int16, connect_type

EPOCH_DATE = date(1970, 1, 1)
EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
LONG_MAX = 2**63 - 1

# mysql-replication's FIELD_TYPE codes (the binlog's column types), by the type name used here.
_BINLOG_TYPES: dict[int, str] = {
    1: "tinyint", 2: "smallint", 3: "int", 4: "float", 5: "double", 7: "timestamp", 8: "bigint",
    9: "mediumint", 10: "date", 11: "time", 12: "datetime", 13: "year", 14: "date", 16: "bit",
    17: "timestamp", 18: "datetime", 19: "time", 245: "json", 246: "decimal", 247: "enum", 248: "set",
    15: "varchar", 249: "blob", 250: "blob", 251: "blob", 252: "blob", 253: "varchar", 254: "char", 255: "geometry",
}
_BINARY_OF = {"varchar": "varbinary", "char": "binary", "blob": "blob"}
_TEXT_OF = {"blob": "text"}

# Binlog None reasons (mysql-replication's NONE_SOURCE values) that mean "a zero date was written".
ZERO_DATE_SOURCES = frozenset({"out of date range", "out of datetime range", "out of datetime2 range"})
EMPTY_SET_SOURCE = "empty set"


class MysqlValueError(ValueError):
    """A value that cannot travel in its column's Avro type; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedColumnType(ValueError):
    """A column whose MySQL type Simpul cannot map to Avro."""


@dataclass(frozen=True)
class MysqlColumn:
    """One column as far as its Avro type and value conversion need to know it.

    ``type_name`` is MySQL's lower-case type (``int``, ``varchar``, ``datetime``...); ``boolean``
    marks ``TINYINT(1)``/``BOOL``; ``charset`` is None for binary strings; ``values`` are an
    ENUM's or SET's allowed values; ``fsp`` the fractional-second digits of temporal types.
    """

    name: str
    type_name: str
    unsigned: bool = False
    boolean: bool = False
    precision: int | None = None
    scale: int | None = None
    fsp: int = 0
    length: int | None = None
    values: tuple[str, ...] = ()
    charset: str | None = "utf8mb4"

    @property
    def avro(self) -> AvroType:
        """The Avro type Debezium gives this column."""
        return avro_type(self)


# --- describing columns -------------------------------------------------------------------------

_COLUMN_TYPE = re.compile(r"^(?P<name>[a-z ]+?)(?:\((?P<args>.*)\))?(?P<flags>(?: unsigned| zerofill| signed)*)$", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"'((?:[^']|'')*)'")


def parse_enum_values(args: str) -> tuple[str, ...]:
    """The values of ``enum('a','b''c')`` / ``set(...)`` arguments, unquoted."""
    return tuple(value.replace("''", "'") for value in _QUOTED.findall(args))


def column_from_information_schema(
    name: str, column_type: str, charset: str | None, json_check: bool = False
) -> MysqlColumn:
    """A column from ``information_schema.COLUMNS``: its ``COLUMN_TYPE`` (``bigint(20) unsigned``,
    ``decimal(12,2)``, ``enum('L','P')``, ``datetime(3)``...) and ``CHARACTER_SET_NAME``.

    ``json_check`` is True when MariaDB's ``JSON`` alias put a ``json_valid()`` check on the
    (``longtext``) column: that is the only trace MariaDB keeps of the JSON type.
    """
    match = _COLUMN_TYPE.match(column_type.strip())
    if match is None:
        raise UnsupportedColumnType(f"{name}: cannot parse column type {column_type!r}")
    # Only the type name and flags are case-insensitive; ENUM/SET values keep their case.
    type_name, args, flags = match["name"].strip().lower(), match["args"], (match["flags"] or "").lower()
    unsigned = "unsigned" in flags
    numbers = [int(a) for a in args.split(",")] if args and type_name not in ("enum", "set") else []
    if type_name in ("tinytext", "mediumtext", "longtext"):
        type_name = "text"
    elif type_name in ("tinyblob", "mediumblob", "longblob"):
        type_name = "blob"
    elif type_name in ("integer",):
        type_name = "int"
    if type_name == "text" and json_check:
        type_name = "json"
    if type_name in ("enum", "set"):
        return MysqlColumn(name, type_name, values=parse_enum_values(args or ""), charset=charset)
    if type_name == "decimal" or type_name == "numeric":
        precision, scale = (numbers + [10, 0])[:2] if numbers else (10, 0)
        return MysqlColumn(name, "decimal", unsigned=unsigned, precision=precision, scale=scale if len(numbers) > 1 else 0)
    if type_name in ("datetime", "timestamp", "time"):
        return MysqlColumn(name, type_name, fsp=numbers[0] if numbers else 0)
    if type_name == "bit":
        return MysqlColumn(name, "bit", length=numbers[0] if numbers else 1)
    if type_name in ("tinyint", "bool", "boolean"):
        # MySQL keeps no boolean type: BOOL is TINYINT(1), and Debezium reads TINYINT(1) as boolean.
        boolean = type_name != "tinyint" or numbers[:1] == [1]
        return MysqlColumn(name, "tinyint", unsigned=unsigned, boolean=boolean)
    is_binary = type_name in ("binary", "varbinary", "blob")
    return MysqlColumn(
        name, type_name, unsigned=unsigned, length=numbers[0] if numbers else None,
        charset=None if is_binary else charset,
    )


def column_from_binlog(
    name: str, field_type: int, *, unsigned: bool = False, charset: str | None = None,
    precision: int | None = None, decimals: int | None = None, fsp: int | None = None,
    bits: int | None = None, values: tuple[str, ...] = (), boolean: bool = False, json_text: bool = False,
) -> MysqlColumn:
    """A column from a binlog TableMapEvent (mysql-replication's ``Column`` attributes).

    The binlog does not keep display widths, nor MariaDB's JSON alias, so ``boolean``
    (``TINYINT(1)``) and ``json_text`` come from ``information_schema``; they apply only when the
    binlog type still agrees (a TINY column, a BLOB column), so a stale hint cannot mistype a column.
    ``charset`` is mysql-replication's ``character_set_name`` (``binary`` or None for binary strings).
    """
    type_name = _BINLOG_TYPES.get(field_type)
    if type_name is None:
        raise UnsupportedColumnType(f"{name}: binlog column type {field_type} has no Avro mapping")
    binary = charset in (None, "binary")
    if type_name in _BINARY_OF and binary:
        type_name = _BINARY_OF[type_name]
        charset = None
    elif type_name in _TEXT_OF:
        type_name = "json" if json_text else _TEXT_OF[type_name]
    if type_name == "decimal":
        return MysqlColumn(name, "decimal", unsigned=unsigned, precision=precision, scale=decimals or 0)
    if type_name in ("datetime", "timestamp", "time"):
        return MysqlColumn(name, type_name, fsp=fsp or 0)
    if type_name == "bit":
        return MysqlColumn(name, "bit", length=bits or 1)
    if type_name in ("enum", "set"):
        return MysqlColumn(name, type_name, values=values, charset=charset)
    if type_name == "tinyint":
        return MysqlColumn(name, "tinyint", unsigned=unsigned, boolean=boolean)
    string_like = type_name in ("varchar", "char", "text")
    return MysqlColumn(name, type_name, unsigned=unsigned, charset=charset if string_like else None)


# --- Avro types ---------------------------------------------------------------------------------


def avro_type(column: MysqlColumn) -> AvroType:
    """The Avro type of ``column`` (Debezium's MySQL mapping)."""
    t = column.type_name
    if t == "tinyint":
        return "boolean" if column.boolean else connect_int16()
    if t == "smallint":
        return "int" if column.unsigned else connect_int16()
    if t == "mediumint":
        return "int"
    if t == "int":
        return "long" if column.unsigned else "int"
    if t == "bigint":
        # bigint.unsigned.handling.mode=long: values above 2^63-1 cannot travel (dead letter).
        return "long"
    if t == "float":
        return "float"
    if t == "double":
        return "double"
    if t == "decimal":
        return connect_decimal(column.precision or 10, column.scale or 0)
    if t == "bit":
        if (column.length or 1) == 1:
            return "boolean"
        return connect_type("bytes", "io.debezium.data.Bits", 1, length=str(column.length))
    if t == "date":
        return connect_type("int", "io.debezium.time.Date", 1)
    if t == "datetime":
        if column.fsp <= 3:
            return connect_type("long", "io.debezium.time.Timestamp", 1)
        return connect_type("long", "io.debezium.time.MicroTimestamp", 1)
    if t == "timestamp":
        return connect_type("string", "io.debezium.time.ZonedTimestamp", 1)
    if t == "time":
        return connect_type("long", "io.debezium.time.MicroTime", 1)
    if t == "year":
        return connect_type("int", "io.debezium.time.Year", 1)
    if t in ("char", "varchar", "text"):
        return "string"
    if t in ("binary", "varbinary", "blob"):
        return "bytes"
    if t == "enum":
        return connect_type("string", "io.debezium.data.Enum", 1, allowed=",".join(column.values))
    if t == "set":
        return connect_type("string", "io.debezium.data.EnumSet", 1, allowed=",".join(column.values))
    if t == "json":
        return connect_type("string", "io.debezium.data.Json", 1)
    raise UnsupportedColumnType(f"{column.name}: MySQL type {t} has no Avro mapping")


# --- values -------------------------------------------------------------------------------------


def is_zero_date(value: Any) -> bool:
    """A zero or partly zero date/datetime as pymysql hands it over (it cannot build a ``date``)."""
    return isinstance(value, str) and (value.startswith("0000-") or "-00" in value[:10])


def _epoch_micros(value: datetime) -> int:
    # Floor division by a microsecond is exact and done in C: a quarter of the time of summing the parts.
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return (value - EPOCH) // _MICROSECOND


def _text(column: MysqlColumn, value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        # mysql-replication leaves strings of charsets Python lacks undecoded.
        return bytes(value).decode(_python_encoding(column.charset))
    return str(value)


def _python_encoding(charset: str | None) -> str:
    # MySQL's latin1 is Windows-1252, not ISO-8859-1.
    return {"latin1": "cp1252", "utf8mb4": "utf-8", "utf8mb3": "utf-8", "utf8": "utf-8", None: "utf-8"}.get(charset, charset or "utf-8")


def _bits(column: MysqlColumn, value: Any) -> bytes | bool:
    if isinstance(value, str):  # mysql-replication: "0101", most significant bit first
        number = int(value, 2) if value else 0
    elif isinstance(value, (bytes, bytearray)):  # pymysql: big-endian bytes
        number = int.from_bytes(value, "big")
    else:
        number = int(value)
    if (column.length or 1) == 1:
        return bool(number)
    # Debezium's Bits are little-endian.
    return number.to_bytes(((column.length or 1) + 7) // 8, "little")


Converter = Callable[[Any, Any], tuple[Any, Any]]


def column_converter(column: MysqlColumn) -> Converter:
    """The conversion of ``column``'s values: ``(value, none_source)`` to its Avro value and a
    data-quality note (a reason code) or None.

    ``none_source`` is mysql-replication's reason for a None it produced (a zero date, an empty
    SET). The converter raises :class:`MysqlValueError` when a value cannot travel in the column's
    type. The type's branch is chosen here, once per column, not per value.
    """
    convert_value = _value_converter(column)
    is_set = column.type_name == "set"
    has_zero_dates = column.type_name in ("date", "datetime")

    def convert_column(value: Any, none_source: str | None = None) -> tuple[Any, str | None]:
        if value is None:
            if none_source in ZERO_DATE_SOURCES:
                return None, "zero_date"
            if is_set and none_source == EMPTY_SET_SOURCE:
                return "", None
            return None, None
        if has_zero_dates and is_zero_date(value):
            return None, "zero_date"
        return convert_value(value), None

    return convert_column


def _value_converter(column: MysqlColumn) -> Callable[[Any], Any]:
    """The conversion of one column's non-null, non-zero-date values (see :func:`column_converter`)."""
    t = column.type_name
    if t == "tinyint":
        return bool if column.boolean else int
    if t in ("smallint", "mediumint", "int", "year"):
        return int
    if t == "bigint":
        return lambda v: _long(column, v)
    if t in ("float", "double"):
        return float
    if t == "decimal":
        quantum = Decimal(1).scaleb(-(column.scale or 0))
        return lambda v: _decimal(column, v, quantum)
    if t == "bit":
        return lambda v: _bits(column, v)
    if t == "date":
        return lambda v: ((v.date() if isinstance(v, datetime) else v) - EPOCH_DATE).days
    if t == "datetime":
        return (lambda v: _epoch_micros(v) // 1000) if column.fsp <= 3 else _epoch_micros
    if t == "timestamp":
        return zoned_timestamp
    if t == "time":
        return micro_time
    if t in ("char", "varchar", "text", "enum"):
        return lambda v: _text(column, v)
    if t == "set":
        # Debezium lists a SET's members in their declared order.
        return lambda v: ",".join(m for m in column.values if m in v) if isinstance(v, (set, frozenset)) else _text(column, v)
    if t == "json":
        return lambda v: v if isinstance(v, str) else _text(column, v) if isinstance(v, bytes) else json.dumps(v, default=_json_bytes)
    if t in ("binary", "varbinary", "blob"):
        encoding = _python_encoding(column.charset)
        return lambda v: bytes(v) if isinstance(v, (bytes, bytearray)) else str(v).encode(encoding)

    def unsupported(value: Any) -> Any:
        raise UnsupportedColumnType(f"{column.name}: MySQL type {t} has no conversion")

    return unsupported


def _long(column: MysqlColumn, value: Any) -> int:
    number = int(value)
    if number > LONG_MAX:
        raise MysqlValueError("unsigned_out_of_range", f"{column.name}: BIGINT UNSIGNED value above 2^63-1 does not fit a long")
    return number


def _decimal(column: MysqlColumn, value: Any, quantum: Decimal) -> Decimal:
    number = Decimal(value) if not isinstance(value, Decimal) else value
    if not number.is_finite():
        raise MysqlValueError("conversion_error", f"{column.name}: decimal is not finite")
    # fastavro refuses a Decimal with more fraction digits than the schema's scale.
    return number.quantize(quantum)


def _json_bytes(value: Any) -> Any:
    # MySQL's binary JSON decoded by mysql-replication keeps keys and strings as bytes.
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def zoned_timestamp(value: datetime) -> str:
    """A TIMESTAMP (naive, in UTC) as ``io.debezium.time.ZonedTimestamp``: ``2024-01-02T03:04:05[.ffffff]Z``."""
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    # isoformat, not strftime (a third of the time): it writes the microseconds only when there are some.
    return value.isoformat() + "Z"


def micro_time(value: timedelta | Any) -> int:
    """A TIME (``timedelta``, may be negative or above 24 h in MySQL) as ``io.debezium.time.MicroTime``."""
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
