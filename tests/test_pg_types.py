"""PostgreSQL text values to Debezium's Avro values (pure)."""

from __future__ import annotations

import io
from decimal import Decimal

import fastavro
import pytest

from simpul.cdc.postgres.types import (
    PgValueError,
    numeric_type,
    parse_array,
    pg_type,
    to_date,
    to_micro_duration,
    to_micro_time,
    to_micro_timestamp,
    to_variable_scale_decimal,
    to_zoned_time,
    to_zoned_timestamp,
)


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (16, "t", True),
        (16, "f", False),
        (21, "-32768", -32768),
        (23, "2147483647", 2147483647),
        (20, "9223372036854775807", 9223372036854775807),
        (700, "1.5", 1.5),
        (701, "NaN", None),
        (25, "Siti Aminah", "Siti Aminah"),
        (1043, "RT 002/RW 005", "RT 002/RW 005"),
        (17, "\\x00ff10", b"\x00\xff\x10"),
        (1082, "1970-01-02", 1),
        (1082, "1955-11-30", -5146),
        (1114, "2024-01-02 03:04:05.123456", 1704164645123456),
        (1184, "2024-01-02 10:04:05+07", "2024-01-02T03:04:05Z"),
        (1184, "2024-01-02 03:04:05.5-02:30", "2024-01-02T05:34:05.500000Z"),
        (1184, "2024-01-02 03:04:05.5+00", "2024-01-02T03:04:05.500000Z"),
        (1184, "2024-01-02 03:04:05+00", "2024-01-02T03:04:05Z"),
        (1184, "2024-01-02 03:04:05.123456+00", "2024-01-02T03:04:05.123456Z"),
        (1083, "03:04:05.000007", 11045000007),
        (1266, "10:00:00+07", "03:00:00Z"),
        (3802, '{"a": 1}', '{"a": 1}'),
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (1007, "{1,NULL,3}", [1, None, 3]),
        (1009, '{"a b","c\\"d",NULL,e}', ["a b", 'c"d', None, "e"]),
    ],
)
def test_text_values_convert(oid: int, text: str, expected) -> None:
    value = pg_type(oid).convert(text)
    if expected is None:
        assert value != value  # NaN
    else:
        assert value == expected


def test_dates_and_timestamps_are_debezium_logical_types() -> None:
    assert pg_type(1082).avro["connect.name"] == "io.debezium.time.Date"
    assert pg_type(1114).avro["connect.name"] == "io.debezium.time.MicroTimestamp"
    assert pg_type(1184).avro["connect.name"] == "io.debezium.time.ZonedTimestamp"


def test_constrained_numeric_is_avro_decimal_bytes() -> None:
    numeric = numeric_type((12 << 16 | 2) + 4)
    assert numeric.avro["logicalType"] == "decimal" and numeric.avro["precision"] == 12 and numeric.avro["scale"] == 2
    schema = fastavro.parse_schema({"type": "record", "name": "R", "fields": [{"name": "x", "type": numeric.avro}]})
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, {"x": numeric.convert("1234.50")})
    buffer.seek(0)
    assert fastavro.schemaless_reader(buffer, schema) == {"x": Decimal("1234.50")}


@pytest.mark.parametrize(("text", "scale", "unscaled"), [("0", 0, 0), ("-1.25", 2, -125), ("12345678901234567890.5", 1, 123456789012345678905), ("1E+3", 0, 1000)])
def test_unconstrained_numeric_is_variable_scale_decimal(text: str, scale: int, unscaled: int) -> None:
    value = to_variable_scale_decimal(text)
    assert value["scale"] == scale
    assert int.from_bytes(value["value"], "big", signed=True) == unscaled
    assert numeric_type(-1).avro["connect.name"] == "io.debezium.data.VariableScaleDecimal"


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("00:00:01", 1_000_000),
        ("1 day", 86_400_000_000),
        ("-1 days +02:00:00", -86_400_000_000 + 7_200_000_000),
        ("1 mon", round(365.25 / 12 * 86_400_000_000)),
        ("1 year 2 mons 3 days 04:05:06.5", round((365.25 + 2 * 365.25 / 12 + 3) * 86_400_000_000) + 14_706_500_000),
    ],
)
def test_interval_to_micro_duration(text: str, micros: int) -> None:
    assert to_micro_duration(text) == micros


def test_time_edges() -> None:
    assert to_micro_time("24:00:00") == 86_400_000_000
    assert to_zoned_time("23:30:00-01") == "00:30:00Z"
    assert to_micro_timestamp("1969-12-31 23:59:59.999999") == -1


@pytest.mark.parametrize(
    ("convert", "text"),
    [(to_date, "infinity"), (to_micro_timestamp, "infinity"), (to_zoned_timestamp, "2024-01-02 03:04:05"), (to_date, "0044-03-15 BC"), (to_micro_duration, "P1D")],
)
def test_values_without_an_avro_form_raise(convert, text: str) -> None:
    with pytest.raises(PgValueError):
        convert(text)


def test_unknown_type_is_reported_as_unknown() -> None:
    assert pg_type(600) is None  # point
    assert pg_type(99999, enums={99999: ["L", "P"]}).avro["connect.parameters"] == {"allowed": "L,P"}
    with pytest.raises(PgValueError, match="multi-dimensional"):
        parse_array("{{1,2},{3,4}}")
