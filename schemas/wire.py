"""The Confluent wire format: magic byte 0, the 4-byte big-endian schema id, the Avro binary body.

:class:`ConfluentAvroEncoder` is the fast path of every producer. A schema built only of records,
``null`` unions, arrays, maps, primitives and decimals (the resolver's outputs, keys, and the
Debezium envelopes of tables without other logical types) is written by plain Python writers made
once per schema (:class:`PlainWriterBuilder`): a call into fastavro costs more than the writing
for such records (a golden citizen 21 → 13 µs, a Debezium snapshot envelope with its repeated
``source`` 22 → 10 µs, measured on this machine). Other schemas go to fastavro, parsed
once, into a reused buffer, with top-level fields whose type is a union of ``null`` and one record
(``before``/``after``) in its tuple notation ``(record name, value)``, which spares fastavro
validating the whole nested record against each union branch (an envelope 27.0 → 18.9 µs). The
bytes are identical either way, and a value the plain writers refuse is handed to fastavro.

:class:`ConfluentAvroDecoder` reads the format back for tests and consumers. Registering schemas
is :mod:`simpul.schemas.registrar`'s: a connector's encoding workers import this module, and the
registry client's imports would add some 20 MB to each of them.
"""

from __future__ import annotations

import io
import json
import struct
import threading
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import fastavro

MAGIC_BYTE = 0
HEADER = struct.Struct(">bI")
_PRIMITIVE_NAMES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class WireFormatError(ValueError):
    """The bytes are not in the Confluent wire format."""


def frame(schema_id: int, body: bytes) -> bytes:
    """``body`` (Avro binary) prefixed with the wire-format header for ``schema_id``."""
    return HEADER.pack(MAGIC_BYTE, schema_id) + body


def unframe(data: bytes) -> tuple[int, memoryview]:
    """The schema id and the Avro body of a wire-format message."""
    if len(data) < HEADER.size:
        raise WireFormatError(f"message of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC_BYTE:
        raise WireFormatError(f"unknown magic byte {magic} (expected {MAGIC_BYTE})")
    return schema_id, memoryview(data)[HEADER.size :]


def subject_name(topic: str, is_key: bool) -> str:
    """Confluent's TopicNameStrategy: ``<topic>-key`` or ``<topic>-value``."""
    return f"{topic}-{'key' if is_key else 'value'}"


def _schema_object(schema: str | Mapping[str, Any] | list[Any]) -> Any:
    return json.loads(schema) if isinstance(schema, str) else schema


def _record_union_fields(parsed: Any) -> tuple[tuple[str, str], ...]:
    """``(field, record name)`` for each top-level field typed as a union of one record and
    non-record branches: those can be tagged so fastavro skips its branch search."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return ()
    tagged = []
    for field in parsed["fields"]:
        branches = field["type"]
        if not isinstance(branches, list):
            continue
        records = [b for b in branches if isinstance(b, dict) and b.get("type") in ("record", "error")]
        named_refs = [b for b in branches if isinstance(b, str) and b not in _PRIMITIVE_NAMES]
        if len(records) == 1 and not named_refs:
            tagged.append((field["name"], records[0]["name"]))
        elif not records and len(named_refs) == 1 and _is_record_ref(named_refs[0], parsed):
            tagged.append((field["name"], named_refs[0]))
    return tuple(tagged)


def _is_record_ref(name: str, parsed: dict[str, Any]) -> bool:
    named = parsed.get("__named_schemas", {})
    target = named.get(name)
    return isinstance(target, dict) and target.get("type") in ("record", "error")


def _unsigned_varint_loop(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints 14 bits at a time: a number below 2**14 whole, and two full 7-bit groups (each with its
# continuation bit) per step above it. Above 2**28 the bytes of ``n >> 28`` are remembered: an
# event's large numbers are timestamps and log positions, which share their high bits with the
# previous events' for seconds to days (a timestamp's varint 886 -> 574 ns, measured; the 7-bit loop before).
_VARINT_BELOW_2_14 = tuple(_unsigned_varint_loop(n) for n in range(1 << 14))
_VARINT_GROUP_PAIRS = tuple(bytes([(n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80]) for n in range(1 << 14))
_VARINT_HIGH_PARTS: dict[int, bytes] = {}
_VARINT_HIGH_PARTS_MAX = 4096
_SMALL_COUNT = 1 << 13  # numbers whose zigzag varint is one lookup


def _unsigned_varint(n: int) -> bytes:
    if n < 16384:
        return _VARINT_BELOW_2_14[n]
    if n < 268435456:
        return _VARINT_GROUP_PAIRS[n & 0x3FFF] + _VARINT_BELOW_2_14[n >> 14]
    high = n >> 28
    tail = _VARINT_HIGH_PARTS.get(high)
    if tail is None:
        if len(_VARINT_HIGH_PARTS) >= _VARINT_HIGH_PARTS_MAX:
            _VARINT_HIGH_PARTS.clear()
        tail = _VARINT_HIGH_PARTS[high] = _unsigned_varint(high)
    return _VARINT_GROUP_PAIRS[n & 0x3FFF] + _VARINT_GROUP_PAIRS[(n >> 14) & 0x3FFF] + tail


def _zigzag_varint(value: int) -> bytes:
    if value.__class__ is not int:
        raise TypeError(f"expected an int, got {type(value).__name__}")
    if 0 <= value < _SMALL_COUNT:
        return _VARINT_BELOW_2_14[value << 1]
    if not -(1 << 63) <= value < (1 << 63):
        raise ValueError(f"{value} does not fit in an Avro long")
    return _unsigned_varint((value << 1) ^ (value >> 63))


def _write_int(value: int) -> bytes:
    if value.__class__ is int and not -(1 << 31) <= value < (1 << 31):
        raise ValueError(f"{value} does not fit in an Avro int")
    return _zigzag_varint(value)


def _write_string(value: str) -> bytes:
    if value.__class__ is not str:
        raise TypeError(f"expected a str, got {type(value).__name__}")
    data = value.encode("utf-8")
    n = len(data)
    return (_VARINT_BELOW_2_14[n << 1] if n < _SMALL_COUNT else _zigzag_varint(n)) + data


def _write_bytes(value: bytes) -> bytes:
    if value.__class__ is not bytes:
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    n = len(value)
    return (_VARINT_BELOW_2_14[n << 1] if n < _SMALL_COUNT else _zigzag_varint(n)) + value


_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


def _write_float(value: float) -> bytes:
    if value.__class__ is not float and value.__class__ is not int:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return _FLOAT.pack(value)


def _write_double(value: float) -> bytes:
    if value.__class__ is not float and value.__class__ is not int:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    return _DOUBLE.pack(value)


def _write_boolean(value: bool) -> bytes:
    if value is True:
        return b"\x01"
    if value is False:
        return b"\x00"
    raise TypeError(f"expected a bool, got {type(value).__name__}")


Writer = Callable[[Any], bytes]
_PRIMITIVE_WRITERS: dict[str, Writer] = {
    "boolean": _write_boolean, "int": _write_int, "long": _zigzag_varint, "float": _write_float, "double": _write_double,
    "bytes": _write_bytes, "string": _write_string,
}
# Keys a type's dict may carry without changing its encoding: Kafka Connect's annotations, which
# fastavro ignores (unlike ``logicalType``, which makes it convert the value).
_PLAIN_ANNOTATIONS = frozenset({"type", "connect.type", "connect.name", "connect.version", "connect.parameters", "connect.default", "doc"})
_DECIMAL_KEYS = _PLAIN_ANNOTATIONS | {"logicalType", "precision", "scale"}


class _NotPlain(Exception):
    """The schema has a part :class:`PlainWriterBuilder` does not write."""


class PlainWriterBuilder:
    """Pure-Python writers of schemas built only of records, ``null`` unions, arrays, maps, the
    primitives above and the ``decimal`` logical type (the resolver's outputs, keys, and the
    Debezium envelopes of most tables): for such records a call into fastavro costs more than the
    writing (a golden citizen 21 → 13 µs, a streamed Debezium envelope 29 → 16 µs).

    Each writer accepts only values fastavro would write the same way and raises ``KeyError``,
    ``TypeError``, ``ValueError`` or ``OverflowError`` on anything else (a missing field, another
    type, a number out of range): the caller then lets fastavro encode the value, or say why not.
    """

    def __init__(self, parsed: Any) -> None:
        self._named: dict[str, Any] = parsed.get("__named_schemas", {}) if isinstance(parsed, dict) else {}
        self._by_name: dict[str, Writer] = {}
        self._building: set[str] = set()

    def writer(self, schema: Any, identity_cached_field: str | None = None) -> Writer | None:
        """The writer of ``schema`` (parsed), or None when it has a part this does not write.

        ``identity_cached_field`` names a top-level field whose value the caller often passes again,
        the same object, for many records in a row: its bytes are then reused, not written again.
        The caller must not change such a value once it has been written.
        """
        try:
            if identity_cached_field is not None and isinstance(schema, dict) and schema.get("type") == "record":
                return self._record(schema, identity_cached_field)
            return self._writer(schema)
        except _NotPlain:
            return None

    def _writer(self, schema: Any) -> Writer:
        if isinstance(schema, str):
            primitive = _PRIMITIVE_WRITERS.get(schema)
            return primitive if primitive is not None else self._named_type(schema)
        if isinstance(schema, list):
            return self._union(schema)
        if not isinstance(schema, dict):
            raise _NotPlain
        kind = schema.get("type")
        if kind == "record":
            return self._record(schema)
        if kind == "array":
            return _array_writer(self._writer(schema["items"]))
        if kind == "map":
            return _map_writer(self._writer(schema["values"]))
        if isinstance(kind, str) and set(schema) <= _PLAIN_ANNOTATIONS and kind in _PRIMITIVE_WRITERS:
            return _PRIMITIVE_WRITERS[kind]
        if kind == "bytes" and schema.get("logicalType") == "decimal" and set(schema) <= _DECIMAL_KEYS:
            return _decimal_writer(schema["precision"], schema.get("scale", 0))
        raise _NotPlain

    def _named_type(self, name: str) -> Writer:
        """A reference to a record defined earlier in the schema (``after`` names the ``Value`` that ``before`` defines)."""
        if name in self._by_name:
            return self._by_name[name]
        if name not in self._named or name in self._building:  # unknown, or recursive
            raise _NotPlain
        self._building.add(name)
        write = self._by_name[name] = self._writer(self._named[name])
        self._building.discard(name)
        return write

    def _record(self, schema: dict[str, Any], identity_cached_field: str | None = None) -> Writer:
        fields = []
        for field in schema["fields"]:
            write = self._writer(field["type"])
            fields.append((field["name"], _identity_cached(write) if field["name"] == identity_cached_field else write))
        fields_tuple = tuple(fields)

        def write_record(record: Any) -> bytes:
            return b"".join([write(record[name]) for name, write in fields_tuple])

        return write_record

    def _union(self, branches: list[Any]) -> Writer:
        """Unions of ``null`` and one other type, in either order (fastavro picks ``null`` for None
        and the other branch for anything else)."""
        if len(branches) != 2 or "null" not in branches:
            raise _NotPlain
        null_index = branches.index("null")
        write_other = self._writer(branches[1 - null_index])
        null_tag, other_tag = _zigzag_varint(null_index), _zigzag_varint(1 - null_index)

        def write_optional(value: Any) -> bytes:
            return null_tag if value is None else other_tag + write_other(value)

        return write_optional


def _decimal_writer(precision: int, scale: int) -> Writer:
    """Avro's ``decimal`` logical type on ``bytes``, written from a :class:`~decimal.Decimal` as
    fastavro writes it: the unscaled number, big-endian two's complement, one byte longer than its
    magnitude needs (so a value and its negation have the same length)."""
    power = 10**scale

    def write_decimal(value: Any) -> bytes:
        if value.__class__ is not Decimal:
            raise TypeError(f"expected a Decimal, got {type(value).__name__}")
        _, digits, exponent = value.as_tuple()
        if len(digits) > precision:
            raise ValueError("The decimal precision is bigger than allowed by schema")
        if exponent.__class__ is not int or exponent + scale < 0:  # NaN and infinities have no exponent
            raise ValueError("Scale provided in schema does not match the decimal")
        numerator, denominator = value.as_integer_ratio()
        unscaled = numerator * power // denominator
        return _write_bytes(unscaled.to_bytes((abs(unscaled).bit_length() + 8) // 8, byteorder="big", signed=True))

    return write_decimal


def _identity_cached(write: Writer) -> Writer:
    """``write``, reusing the bytes of the last value when it is passed again (the same object)."""
    last: list[Any] = [None, None]

    def write_cached(value: Any) -> bytes:
        if value is not last[0] or last[1] is None:
            last[1] = write(value)
            last[0] = value
        return last[1]  # type: ignore[no-any-return]

    return write_cached


def _array_writer(write_item: Writer) -> Writer:
    def write_array(values: Any) -> bytes:
        if values.__class__ is not list:  # a tuple may be fastavro's (name, value) notation
            raise TypeError(f"expected a list, got {type(values).__name__}")
        if not values:
            return b"\x00"
        return _zigzag_varint(len(values)) + b"".join([write_item(v) for v in values]) + b"\x00"

    return write_array


def _map_writer(write_value: Writer) -> Writer:
    def write_map(mapping: Any) -> bytes:
        if mapping.__class__ is not dict:
            raise TypeError(f"expected a dict, got {type(mapping).__name__}")
        if not mapping:
            return b"\x00"
        return _zigzag_varint(len(mapping)) + b"".join([_write_string(k) + write_value(v) for k, v in mapping.items()]) + b"\x00"

    return write_map


def _tag(record: Mapping[str, Any], tagged: tuple[tuple[str, str], ...]) -> Mapping[str, Any]:
    """``record`` with the values of its ``tagged`` fields in fastavro's tuple notation."""
    if not tagged:
        return record
    copy = dict(record)
    for field, name in tagged:
        value = copy.get(field)
        if isinstance(value, dict):
            copy[field] = (name, value)
    return copy


class ConfluentAvroEncoder:
    """Encodes records of one schema, already registered under ``schema_id``, to wire format.

    ``repeated_field`` names a top-level field whose value the caller often passes again, the same
    object, for many records in a row (the ``source`` block of every row of a snapshot): the plain
    writers reuse its bytes from the second time on (a snapshot envelope 17 → 10 µs). The caller
    must not change such a value once it has been encoded. (Every schema the connectors make is
    plain; one fastavro writes is written whole each time.)

    Not thread-safe (it reuses one buffer): give each producing thread its own encoder.
    """

    def __init__(self, schema: str | Mapping[str, Any], schema_id: int, repeated_field: str | None = None) -> None:
        self.schema_id = schema_id
        self._parsed = fastavro.parse_schema(_schema_object(schema))
        self._tagged = _record_union_fields(self._parsed)
        self._buffer = io.BytesIO()
        self._header = HEADER.pack(MAGIC_BYTE, schema_id)
        self._buffer.write(self._header)
        self._plain = PlainWriterBuilder(self._parsed).writer(self._parsed, repeated_field)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """The wire-format bytes of ``record`` (a dict shaped like the schema)."""
        if self._plain is not None:
            try:
                return self._header + self._plain(record)
            except (KeyError, TypeError, ValueError, OverflowError):
                pass  # not the plain shape after all: let fastavro encode it, or say why not
        buffer = self._buffer
        buffer.seek(HEADER.size)
        buffer.truncate()
        fastavro.schemaless_writer(buffer, self._parsed, _tag(record, self._tagged))
        return buffer.getvalue()


class ConfluentAvroDecoder:
    """Decodes wire-format messages, fetching each writer schema once by id.

    ``schema_for_id`` returns the schema text for an id (for example
    ``lambda i: client.get_schema(i).schema_str`` with confluent-kafka's client). With
    ``reader_schema`` the data is resolved to that schema (Avro schema resolution).
    """

    def __init__(self, schema_for_id: Callable[[int], str], reader_schema: str | Mapping[str, Any] | None = None) -> None:
        self._schema_for_id = schema_for_id
        self._reader = fastavro.parse_schema(_schema_object(reader_schema)) if reader_schema is not None else None
        self._writers: dict[int, Any] = {}
        self._lock = threading.Lock()

    def decode(self, data: bytes) -> Any:
        """The record in ``data``."""
        return self.decode_with_id(data)[1]

    def decode_with_id(self, data: bytes) -> tuple[int, Any]:
        """The writer schema id and the record in ``data``."""
        schema_id, body = unframe(data)
        writer = self._writer(schema_id)
        record = fastavro.schemaless_reader(io.BytesIO(body), writer, self._reader)
        return schema_id, record

    def _writer(self, schema_id: int) -> Any:
        with self._lock:
            writer = self._writers.get(schema_id)
        if writer is None:
            writer = fastavro.parse_schema(json.loads(self._schema_for_id(schema_id)))
            with self._lock:
                self._writers[schema_id] = writer
        return writer
