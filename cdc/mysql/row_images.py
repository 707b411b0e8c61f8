"""A binlog rows event's row images read straight from its bytes: :class:`RowImageReader`.

mysql-replication decodes a row column by column through its packet object (a method call, a
struct format chosen anew and a bitmap lookup per value): on a connector's encoding workers that
was more than half of their time while streaming (``bench.cdc_mysql``). This reads the same
events for tables whose columns are all of the common types below, with one reader per column
chosen once per table layout, and gives exactly what mysql-replication gives (the values, their
Python types, the reasons of ``None`` values): the tests compare the two on events from a real
server. Anything else (another column type, a column the table map leaves unnamed, an event kind
other than the plain write, update and delete rows events) returns None from :meth:`RowImageReader.of`
or :meth:`RowImageReader.rows`, and the caller decodes it with mysql-replication.
"""

from __future__ import annotations

import codecs
import datetime
import decimal
import struct
from collections.abc import Callable
from typing import Any

from pymysqlreplication.constants import BINLOG, FIELD_TYPE, NONE_SOURCE
from pymysqlreplication.row_event import RowsEvent

# (value, position after it) of the value starting at a position; a reader that may give None
# for a value that is present (a zero date) says why in its column's ``none_source``.
Reader = Callable[[bytes, int], tuple[Any, int]]

_V1 = (BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.DELETE_ROWS_EVENT_V1)
_V2 = (BINLOG.WRITE_ROWS_EVENT_V2, BINLOG.UPDATE_ROWS_EVENT_V2, BINLOG.DELETE_ROWS_EVENT_V2)
_UPDATES = (BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2)
# The OK byte, then the event header: timestamp, type, server id, size, log position, flags.
_HEADER = struct.Struct("<cIBIIIH")
_TABLE_ID_AND_FLAGS = 8  # the post-header of a v1 rows event; a v2 event adds its extra data's length
_CHECKSUM = 4

_INTEGERS = {
    FIELD_TYPE.TINY: ("<b", "<B"), FIELD_TYPE.SHORT: ("<h", "<H"), FIELD_TYPE.LONG: ("<i", "<I"),
    FIELD_TYPE.LONGLONG: ("<q", "<Q"), FIELD_TYPE.FLOAT: ("<f", "<f"), FIELD_TYPE.DOUBLE: ("<d", "<d"),
}
# Why mysql-replication gives None for a value that is there: a zero or partly zero date, an empty set.
_PRESENT_NONE_SOURCES = {
    FIELD_TYPE.DATE: NONE_SOURCE.OUT_OF_DATE_RANGE, FIELD_TYPE.DATETIME2: NONE_SOURCE.OUT_OF_DATETIME2_RANGE, FIELD_TYPE.SET: NONE_SOURCE.EMPTY_SET,
}
_DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)  # bytes of a group of 0-9 leftover decimal digits
_EPOCH = datetime.datetime(1970, 1, 1)  # TIMESTAMPs read as naive UTC, as mysql-replication gives them


class RowImageReader:
    """Reads the rows of one table layout's rows events (see the module docstring)."""

    def __init__(self, columns: tuple[tuple[str, Reader, str], ...]) -> None:
        self._columns = columns  # (name, reader, why a present value read as None)

    @classmethod
    def of(cls, columns: list[Any]) -> RowImageReader | None:
        """The reader of a table with mysql-replication's ``columns``, or None when some column is
        of a kind this does not read."""
        readers = []
        for column in columns:
            reader = _reader(column)
            if reader is None or not column.name:
                return None
            readers.append((column.name, reader, _PRESENT_NONE_SOURCES.get(column.type, NONE_SOURCE.NULL)))
        return cls(tuple(readers))

    def rows(self, packet: bytes, post_header_lengths: Any, checksum: bool) -> list[dict[str, Any]] | None:
        """The rows of a rows event's ``packet`` (the OK byte first) as mysql-replication gives
        them, or None for an event kind this does not read."""
        _, _, event_type, _, event_size, _, _ = _HEADER.unpack_from(packet)
        if event_type not in _V1 and event_type not in _V2:
            return None
        end = 1 + event_size - (_CHECKSUM if checksum else 0)
        if len(packet) < end:
            raise ValueError(f"a rows event of {event_size} bytes cut short at {len(packet) - 1}")
        v2 = event_type in _V2
        known = _TABLE_ID_AND_FLAGS + (2 if v2 else 0)
        declared = post_header_lengths[event_type - 1] if post_header_lengths and event_type - 1 < len(post_header_lengths) else known
        pos = _HEADER.size + max(declared, known)  # a server may declare a longer post-header
        if v2:  # extra data follows, its length (its own two bytes included) the post-header's last field
            pos += int.from_bytes(packet[_HEADER.size + _TABLE_ID_AND_FLAGS : _HEADER.size + known], "little") - 2
        count, pos = _length_coded(packet, pos)
        if count != len(self._columns):
            return None  # not the layout described: mysql-replication's to make of it
        width = (count + 7) // 8
        present = int.from_bytes(packet[pos : pos + width], "little")
        pos += width
        update = event_type in _UPDATES
        if update:
            present_after = int.from_bytes(packet[pos : pos + width], "little")
            pos += width
        rows = []
        while pos < end:
            if update:
                before, before_none, pos = self._image(packet, pos, present)
                after, after_none, pos = self._image(packet, pos, present_after)
                rows.append({"before_values": before, "before_none_sources": before_none, "after_values": after, "after_none_sources": after_none})
            else:
                values, none_sources, pos = self._image(packet, pos, present)
                rows.append({"values": values, "none_sources": none_sources})
        if pos != end:  # slices past the end read as empty: a malformed event must not pass as rows
            raise ValueError(f"the rows of an event end at byte {pos}, the event at {end}")
        return rows

    def _image(self, packet: bytes, pos: int, present: int) -> tuple[dict[str, Any], dict[str, str], int]:
        """One row image: its values, the reasons of its None values, and where the next starts."""
        nulls_width = (present.bit_count() + 7) // 8
        nulls = int.from_bytes(packet[pos : pos + nulls_width], "little")
        pos += nulls_width
        values: dict[str, Any] = {}
        none_sources: dict[str, str] = {}
        bit = 0
        for index, (name, read, none_source) in enumerate(self._columns):
            if not present >> index & 1:  # a minimal row image leaves the column out
                values[name] = None
                none_sources[name] = NONE_SOURCE.COLS_BITMAP
                continue
            if nulls >> bit & 1:
                values[name] = None
                none_sources[name] = NONE_SOURCE.NULL
            else:
                value, pos = read(packet, pos)
                values[name] = value
                if value is None:
                    none_sources[name] = none_source
            bit += 1
        return values, none_sources, pos


def _length_coded(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    if first < 251:
        return first, pos + 1
    size = {252: 2, 253: 3, 254: 8}[first]
    return int.from_bytes(data[pos + 1 : pos + 1 + size], "little"), pos + 1 + size


def _reader(column: Any) -> Reader | None:
    """The reader of one column's values, or None for a kind this does not read."""
    kind = column.type
    if kind in _INTEGERS:
        layout = struct.Struct(_INTEGERS[kind][1 if column.unsigned else 0])
        unpack, size = layout.unpack_from, layout.size
        return lambda data, pos: (unpack(data, pos)[0], pos + size)
    if kind == FIELD_TYPE.INT24:
        signed = not column.unsigned
        return lambda data, pos: (int.from_bytes(data[pos : pos + 3], "little", signed=signed), pos + 3)
    if kind in (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING):
        return _text_reader(2 if column.max_length > 255 else 1, column.character_set_name)
    if kind == FIELD_TYPE.BLOB:
        return _text_reader(column.length_size, column.character_set_name)
    if kind == FIELD_TYPE.NEWDECIMAL:
        return _decimal_reader(column.precision, column.decimals)
    if kind == FIELD_TYPE.DATE:
        return _read_date
    if kind == FIELD_TYPE.DATETIME2:
        return _datetime2_reader(column.fsp)
    if kind == FIELD_TYPE.TIMESTAMP2:
        return _timestamp2_reader(column.fsp)
    if kind == FIELD_TYPE.TIME2:
        return _time2_reader(column.fsp)
    if kind == FIELD_TYPE.YEAR:
        return lambda data, pos: (data[pos] + 1900, pos + 1)
    if kind == FIELD_TYPE.ENUM and column.enum_values:
        symbols, size = column.enum_values, column.size
        return lambda data, pos: (symbols[int.from_bytes(data[pos : pos + size], "little")], pos + size)
    if kind == FIELD_TYPE.SET and column.set_values:
        return _set_reader(tuple(column.set_values), column.size)
    return None


def _set_reader(members: tuple[str, ...], size: int) -> Reader:
    """A SET's members as mysql-replication gives them: a set built in the members' declared order
    (so it iterates as theirs does), None for the empty set."""

    def read_set(data: bytes, pos: int) -> tuple[set[str] | None, int]:
        chosen = int.from_bytes(data[pos : pos + size], "little")
        return {member for index, member in enumerate(members) if chosen >> index & 1} or None, pos + size

    return read_set


def _text_reader(length_size: int, charset: str | None) -> Reader:
    """Text after its length, decoded as mysql-replication decodes it (the column's charset, or
    UTF-8 without one; a charset Python does not know leaves the bytes as they are)."""
    encoding = RowsEvent.charset_to_encoding(charset) if charset is not None else "utf-8"
    try:
        codecs.lookup(encoding)
        decodable = True
    except LookupError:
        decodable = False

    def read_text(data: bytes, pos: int) -> tuple[Any, int]:
        start = pos + length_size
        end = start + int.from_bytes(data[pos:start], "little")
        raw = data[start:end]
        # Python decodes empty bytes to "" before it looks a codec up: so does mysql-replication.
        return (raw.decode(encoding) if decodable else raw or ""), end

    return read_text


def _decimal_reader(precision: int, scale: int) -> Reader:
    """MySQL's packed decimal: groups of nine digits in four big-endian bytes, the leftover digits
    of each side in fewer; the sign in the first bit, a negative number's bytes inverted.

    The bytes are read as one number and its digit groups taken from it by shifts, rather than
    each group's bytes read and their text joined: 1.7 against 3.7 µs a ``DECIMAL(20,6)``.
    """
    integral = precision - scale
    whole_integral, left_integral = divmod(integral, 9)
    whole_fraction, left_fraction = divmod(scale, 9)
    # (bytes, digits) of each group, most significant first.
    groups = [(_DECIMAL_BYTES[left_integral], left_integral)] + [(4, 9)] * (whole_integral + whole_fraction)
    groups.append((_DECIMAL_BYTES[left_fraction], left_fraction))
    groups = [(size, digits) for size, digits in groups if size]
    size = sum(group_size for group_size, _ in groups)
    bits = 8 * size
    sign_bit, all_ones = 1 << (bits - 1), (1 << bits) - 1
    # Per group: how far to shift the whole number right, the group's mask, 10 ** its digits.
    steps, shift = [], bits
    for group_size, digits in groups:
        shift -= 8 * group_size
        steps.append((shift, (1 << 8 * group_size) - 1, 10**digits))
    exponent = f"E-{scale}"

    def read_decimal(data: bytes, pos: int) -> tuple[Any, int]:
        raw = int.from_bytes(data[pos : pos + size], "big") ^ sign_bit
        sign = ""
        if raw & sign_bit:  # the sign bit was clear: negative, every bit inverted
            raw ^= all_ones
            sign = "-"
        unscaled = 0
        for group_shift, mask, power in steps:
            unscaled = unscaled * power + (raw >> group_shift & mask)
        # From text, which Decimal reads exactly: the coefficient and exponent MySQL's text gives.
        return decimal.Decimal(f"{sign}{unscaled}{exponent}"), pos + size

    return read_decimal


def _read_date(data: bytes, pos: int) -> tuple[Any, int]:
    packed = int.from_bytes(data[pos : pos + 3], "little")
    year, month, day = packed >> 9 & 0x7FFF, packed >> 5 & 0xF, packed & 0x1F
    if not (year and month and day):  # 0000-00-00 and partly zero dates
        return None, pos + 3
    return datetime.date(year, month, day), pos + 3


def _fraction_layout(fsp: int) -> tuple[int, bool, int]:
    """How a temporal value's fractional seconds (``fsp`` digits) are stored: (bytes, whether the
    digit count is odd (the stored number then has one digit too many), microseconds per unit)."""
    return (fsp + 1) // 2, bool(fsp % 2), 10 ** (6 - fsp)


def _fraction_reader(fsp: int) -> Callable[[bytes, int], tuple[int, int]]:
    """(microseconds, position after) of a temporal value's fractional seconds (``fsp`` digits)."""
    size, odd, scale = _fraction_layout(fsp)

    def read_fraction(data: bytes, pos: int) -> tuple[int, int]:
        if not size:
            return 0, pos
        fraction = int.from_bytes(data[pos : pos + size], "big", signed=True)
        return (int(fraction / 10) if odd else fraction) * scale, pos + size

    return read_fraction


def _datetime2_reader(fsp: int) -> Reader:
    """DATETIME(fsp): 40 big-endian bits (sign, year * 13 + month, day, hour, minute, second), then
    the fraction; a zero or partly zero date reads as None, its fraction skipped.

    The fraction is read inline (as :func:`_fraction_reader` reads it) and the datetime made whole:
    1.3 against 2.5 µs a ``DATETIME(6)`` with a call to read the fraction and a ``replace`` for it
    (a row often has two or three).
    """
    size, odd, scale = _fraction_layout(fsp)
    end = 5 + size

    def read_datetime2(data: bytes, pos: int) -> tuple[Any, int]:
        packed = int.from_bytes(data[pos : pos + 5], "big")
        microsecond = 0
        if size:
            fraction = int.from_bytes(data[pos + 5 : pos + end], "big", signed=True)
            microsecond = (int(fraction / 10) if odd else fraction) * scale
        year_month = packed >> 22 & 0x1FFFF
        try:
            return datetime.datetime(year_month // 13, year_month % 13, packed >> 17 & 0x1F, packed >> 12 & 0x1F,
                                     packed >> 6 & 0x3F, packed & 0x3F, microsecond if microsecond > 0 else 0), pos + end
        except ValueError:  # a zero or partly zero date
            return None, pos + end

    return read_datetime2


def _timestamp2_reader(fsp: int) -> Reader:
    """TIMESTAMP(fsp): big-endian seconds since the epoch, then the fraction: a naive UTC datetime,
    the epoch plus the seconds (``utcfromtimestamp``'s value, deprecated since Python 3.12; 1.4
    against 2.2 µs a ``TIMESTAMP(6)`` with it; the fraction read inline as in :func:`_datetime2_reader`)."""
    size, odd, scale = _fraction_layout(fsp)
    end = 4 + size

    def read_timestamp2(data: bytes, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(data[pos : pos + 4], "big", signed=True)
        microsecond = 0
        if size:
            fraction = int.from_bytes(data[pos + 4 : pos + end], "big", signed=True)
            microsecond = (int(fraction / 10) if odd else fraction) * scale
        return _EPOCH + datetime.timedelta(0, seconds, microsecond if microsecond > 0 else 0), pos + end

    return read_timestamp2


def _time2_reader(fsp: int) -> Reader:
    """TIME(fsp): 24 big-endian bits (sign set for non-negative, hour, minute, second), a negative
    time in two's complement, then the fraction."""
    read_fraction = _fraction_reader(fsp)

    def read_time2(data: bytes, pos: int) -> tuple[Any, int]:
        packed = int.from_bytes(data[pos : pos + 3], "big", signed=True)
        sign = 1 if packed >> 23 & 1 else -1
        if sign == -1:
            packed = ~packed + 1
        microsecond, pos = read_fraction(data, pos + 3)
        value = datetime.timedelta(hours=packed >> 12 & 0x3FF, minutes=packed >> 6 & 0x3F, seconds=packed & 0x3F, microseconds=microsecond)
        return value * sign, pos

    return read_time2
