"""PostgreSQL column types to Debezium's Avro types, and their text values to Avro values.

pgoutput sends values in PostgreSQL's text output format; each :class:`PgType` knows the Avro
type Debezium gives the column (``time.precision.mode=adaptive_time_microseconds``,
``decimal.handling.mode=precise``) and how to turn the text into that Avro value. The functions
here are pure so every mapping is unit-tested without a server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

from simpul.cdc.envelope import AvroType, connect_decimal, connect_int16, connect_type

EPOCH_DATE = date(1970, 1, 1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# Debezium's MicroDuration: months and years as their average length.
_DAYS_PER_MONTH = 365.25 / 12
_MICROS_PER_DAY = 86_400_000_000


class PgValueError(ValueError):
    """A text value that cannot be converted to its column's Avro type."""


@dataclass(frozen=True)
class PgType:
    """How one PostgreSQL type travels: its Avro type and the conversion of its text form."""

    name: str
    avro: AvroType
    convert: Callable[[str], Any]


# --- conversions of PostgreSQL's text output ---------------------------------------------------


def to_bool(text: str) -> bool:
    """``t``/``f``."""
    return text == "t"


def to_date(text: str) -> int:
    """Days since 1970-01-01 (``io.debezium.time.Date``)."""
    if text in ("infinity", "-infinity"):
        raise PgValueError(f"date {text!r} has no day number")
    bc = text.endswith(" BC")
    day = date.fromisoformat(text.removesuffix(" BC"))
    if bc:
        raise PgValueError(f"BC date {text!r} is outside Avro's range")
    return (day - EPOCH_DATE).days


def _timestamp(text: str, aware: bool) -> datetime:
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        raise PgValueError(f"timestamp {text!r} is outside the supported range")
    value = datetime.fromisoformat(text)
    if aware and value.tzinfo is None:
        raise PgValueError(f"timestamptz {text!r} carries no offset")
    return value


_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def to_micro_timestamp(text: str) -> int:
    """Microseconds since the epoch of a ``timestamp`` read as UTC (``io.debezium.time.MicroTimestamp``)."""
    return (_timestamp(text, aware=False) - _EPOCH_NAIVE) // _MICROSECOND


def to_zoned_timestamp(text: str) -> str:
    """ISO-8601 in UTC (``io.debezium.time.ZonedTimestamp``), e.g. ``2024-01-02T03:04:05.123456Z``."""
    if text.endswith("+00") and len(text) >= 22 and text[10] == " ":
        # The common case with the session in UTC: only the separator and the zone change.
        body = text[:-3]
        if "." in body:
            body = body.rstrip("0").rstrip(".") if body.rsplit(".", 1)[1].strip("0") == "" else body.ljust(26, "0")
        return f"{body[:10]}T{body[11:]}Z"
    value = _timestamp(text, aware=True).astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + (f".{value.microsecond:06d}" if value.microsecond else "") + "Z"


def to_micro_time(text: str) -> int:
    """Microseconds since midnight (``io.debezium.time.MicroTime``); ``24:00:00`` is allowed."""
    if text.startswith("24:00:00"):
        return _MICROS_PER_DAY
    value = time.fromisoformat(text)
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def to_zoned_time(text: str) -> str:
    """A ``timetz`` in UTC (``io.debezium.time.ZonedTime``), e.g. ``03:04:05Z``."""
    value = datetime.fromisoformat("2000-01-01T" + text).astimezone(timezone.utc)
    return value.strftime("%H:%M:%S") + (f".{value.microsecond:06d}" if value.microsecond else "") + "Z"


_INTERVAL_UNITS = {"year": 12 * _DAYS_PER_MONTH, "mon": _DAYS_PER_MONTH, "day": 1.0}
_INTERVAL_PART = re.compile(r"([+-]?\d+) (year|mon|day)s?")
_INTERVAL_TIME = re.compile(r"([+-])?(\d+):(\d{2}):(\d{2})(?:\.(\d{1,6}))?$")


def to_micro_duration(text: str) -> int:
    """An ``interval`` (IntervalStyle postgres) as approximate microseconds (``io.debezium.time.MicroDuration``)."""
    days = 0.0
    for amount, unit in _INTERVAL_PART.findall(text):
        days += int(amount) * _INTERVAL_UNITS[unit]
    micros = round(days * _MICROS_PER_DAY)
    clock = _INTERVAL_TIME.search(text)
    if clock:
        sign, hours, minutes, seconds, fraction = clock.groups()
        part = ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1_000_000 + int((fraction or "0").ljust(6, "0"))
        micros += -part if sign == "-" else part
    elif not _INTERVAL_PART.search(text) and text.strip() not in ("00:00:00", "0"):
        raise PgValueError(f"interval {text!r} is not in IntervalStyle postgres")
    return micros


def to_bytes(text: str) -> bytes:
    """A ``bytea`` in hex output format (``\\x0a0b``)."""
    if not text.startswith("\\x"):
        raise PgValueError("bytea is not in hex output format (set bytea_output = hex)")
    return bytes.fromhex(text[2:])


def to_decimal(text: str) -> Decimal:
    """A ``numeric`` with declared scale, as a Decimal for Avro's decimal logical type."""
    value = Decimal(text)
    if not value.is_finite():
        raise PgValueError(f"numeric {text!r} has no decimal representation")
    return value


_PLAIN_DECIMAL = re.compile(r"-?\d+(?:\.\d+)?")


def to_variable_scale_decimal(text: str) -> dict[str, Any]:
    """An unconstrained ``numeric`` as Debezium's ``VariableScaleDecimal`` {scale, value}."""
    if _PLAIN_DECIMAL.fullmatch(text):
        # PostgreSQL's own output (no exponent): scale and digits read straight off the text.
        whole, _, fraction = text.partition(".")
        unscaled, scale = int(whole + fraction), len(fraction)
    else:
        value = to_decimal(text)
        sign, digits, exponent = value.as_tuple()
        assert isinstance(exponent, int)
        unscaled = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        scale = max(-exponent, 0)
        if exponent > 0:
            unscaled *= 10**exponent
    length = max(1, (unscaled.bit_length() + 8) // 8)
    return {"scale": scale, "value": unscaled.to_bytes(length, "big", signed=True)}


def parse_array(text: str) -> list[str | None]:
    """A one-dimensional array literal (``{1,2,NULL}``, ``{"a b","c\\"d"}``) into its element texts."""
    if not (text.startswith("{") and text.endswith("}")):
        raise PgValueError(f"not an array literal: {text[:40]!r}")
    body, items, i = text[1:-1], [], 0
    if not body:
        return []
    while i <= len(body):
        if i < len(body) and body[i] == "{":
            raise PgValueError("multi-dimensional arrays are not supported")
        if i < len(body) and body[i] == '"':
            i += 1
            chars = []
            while body[i] != '"':
                if body[i] == "\\":
                    i += 1
                chars.append(body[i])
                i += 1
            items.append("".join(chars))
            i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            token = body[i:end]
            items.append(None if token == "NULL" else token)
            i = end
        i += 1
    return items


# --- the type table ------------------------------------------------------------------------------


def _string(name: str | None = None, version: int | None = None, **parameters: str) -> AvroType:
    return connect_type("string", name, version, **parameters)


_SIMPLE: dict[int, PgType] = {
    16: PgType("bool", "boolean", to_bool),
    17: PgType("bytea", "bytes", to_bytes),
    18: PgType("char", "string", str),
    19: PgType("name", "string", str),
    20: PgType("int8", "long", int),
    21: PgType("int2", connect_int16(), int),
    23: PgType("int4", "int", int),
    25: PgType("text", "string", str),
    26: PgType("oid", "long", int),
    114: PgType("json", _string("io.debezium.data.Json", 1), str),
    700: PgType("float4", "float", float),
    701: PgType("float8", "double", float),
    790: PgType("money", "string", str),
    869: PgType("inet", "string", str),
    650: PgType("cidr", "string", str),
    829: PgType("macaddr", "string", str),
    1042: PgType("bpchar", "string", str),
    1043: PgType("varchar", "string", str),
    1082: PgType("date", connect_type("int", "io.debezium.time.Date", 1), to_date),
    1083: PgType("time", connect_type("long", "io.debezium.time.MicroTime", 1), to_micro_time),
    1114: PgType("timestamp", connect_type("long", "io.debezium.time.MicroTimestamp", 1), to_micro_timestamp),
    1184: PgType("timestamptz", _string("io.debezium.time.ZonedTimestamp", 1), to_zoned_timestamp),
    1186: PgType("interval", connect_type("long", "io.debezium.time.MicroDuration", 1), to_micro_duration),
    1266: PgType("timetz", _string("io.debezium.time.ZonedTime", 1), to_zoned_time),
    2950: PgType("uuid", _string("io.debezium.data.Uuid", 1), str),
    3802: PgType("jsonb", _string("io.debezium.data.Json", 1), str),
    142: PgType("xml", _string("io.debezium.data.Xml", 1), str),
}

# Array type OID -> element type OID (the common ones).
_ARRAYS: dict[int, int] = {1000: 16, 1005: 21, 1007: 23, 1016: 20, 1009: 25, 1015: 1043, 1014: 1042, 1021: 700, 1022: 701, 1182: 1082, 2951: 2950}

_VARIABLE_SCALE_DECIMAL: AvroType = {
    "type": "record",
    "name": "VariableScaleDecimal",
    "namespace": "io.debezium.data",
    "fields": [{"name": "scale", "type": "int"}, {"name": "value", "type": "bytes"}],
    "connect.doc": "Variable scaled decimal",
    "connect.version": 1,
    "connect.name": "io.debezium.data.VariableScaleDecimal",
}

NUMERIC_OID = 1700


def numeric_type(type_modifier: int, first_use: bool = True) -> PgType:
    """``numeric(p, s)`` as Avro decimal bytes; unconstrained ``numeric`` as ``VariableScaleDecimal``.

    ``first_use`` is False when the named VariableScaleDecimal record was already defined earlier in
    the same schema (Avro allows a named type to be defined once, then referenced by name).
    """
    if type_modifier < 0:
        avro = _VARIABLE_SCALE_DECIMAL if first_use else "io.debezium.data.VariableScaleDecimal"
        return PgType("numeric", avro, to_variable_scale_decimal)
    precision = ((type_modifier - 4) >> 16) & 0xFFFF
    scale = (type_modifier - 4) & 0xFFFF
    avro = connect_decimal(precision, scale)
    return PgType("numeric", avro, to_decimal)


def enum_type(labels: list[str]) -> PgType:
    """A user-defined enum as Debezium's ``io.debezium.data.Enum`` string with its allowed values."""
    return PgType("enum", _string("io.debezium.data.Enum", 1, allowed=",".join(labels)), str)


def array_type(element: PgType) -> PgType:
    """A one-dimensional array of ``element``."""
    def convert(text: str) -> list[Any]:
        return [None if item is None else element.convert(item) for item in parse_array(text)]

    return PgType(f"{element.name}[]", {"type": "array", "items": ["null", element.avro]}, convert)


def pg_type(type_oid: int, type_modifier: int = -1, enums: dict[int, list[str]] | None = None) -> PgType | None:
    """The mapping of one column type, or None when Simpul does not know the type."""
    if type_oid in _SIMPLE:
        return _SIMPLE[type_oid]
    if type_oid == NUMERIC_OID:
        return numeric_type(type_modifier)
    if type_oid in _ARRAYS:
        return array_type(_SIMPLE[_ARRAYS[type_oid]])
    if enums and type_oid in enums:
        return enum_type(enums[type_oid])
    return None
