"""MySQL/MariaDB column types to Debezium's Avro types and values (pure: no server)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from simpul.cdc.mysql.catalog import TableInfo, binlog_columns
from simpul.cdc.mysql.schema import SchemaCache, build_table_schema
from simpul.cdc.mysql.types import (
    MysqlColumn,
    MysqlValueError,
    UnsupportedColumnType,
    avro_type,
    column_from_binlog,
    column_converter,
    column_from_information_schema,
    parse_enum_values,
)
from simpul.cdc.transforms import ColumnTransforms, TableTransform
from simpul.config import ColumnRule
from pymysqlreplication.column import Column


def convert(column: MysqlColumn, value: Any, none_source: str | None = None) -> tuple[Any, str | None]:
    return column_converter(column)(value, none_source)


def col(column_type: str, charset: str | None = "utf8mb4", json_check: bool = False) -> MysqlColumn:
    return column_from_information_schema("c", column_type, charset, json_check)


@pytest.mark.parametrize(
    ("column_type", "expected"),
    [
        ("tinyint(1)", "boolean"),
        ("tinyint(4)", {"type": "int", "connect.type": "int16"}),
        ("tinyint(3) unsigned", {"type": "int", "connect.type": "int16"}),
        ("smallint(6)", {"type": "int", "connect.type": "int16"}),
        ("smallint(5) unsigned", "int"),
        ("mediumint(8) unsigned", "int"),
        ("int(11)", "int"),
        ("int(10) unsigned", "long"),
        ("bigint(20)", "long"),
        ("bigint(20) unsigned", "long"),
        ("float", "float"),
        ("double", "double"),
        ("bit(1)", "boolean"),
        ("varchar(100)", "string"),
        ("char(16)", "string"),
        ("longtext", "string"),
        ("varbinary(16)", "bytes"),
        ("binary(4)", "bytes"),
        ("blob", "bytes"),
        ("mediumblob", "bytes"),
    ],
)
def test_plain_types(column_type: str, expected: object) -> None:
    assert avro_type(col(column_type)) == expected


def test_logical_types() -> None:
    assert avro_type(col("date")) == {"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Date"}
    # adaptive: DATETIME(0-3) in milliseconds, (4-6) in microseconds
    assert avro_type(col("datetime"))["connect.name"] == "io.debezium.time.Timestamp"
    assert avro_type(col("datetime(3)"))["connect.name"] == "io.debezium.time.Timestamp"
    assert avro_type(col("datetime(6)"))["connect.name"] == "io.debezium.time.MicroTimestamp"
    assert avro_type(col("timestamp")) == {"type": "string", "connect.version": 1, "connect.name": "io.debezium.time.ZonedTimestamp"}
    assert avro_type(col("time(3)"))["connect.name"] == "io.debezium.time.MicroTime"
    assert avro_type(col("year(4)")) == {"type": "int", "connect.version": 1, "connect.name": "io.debezium.time.Year"}
    assert avro_type(col("longtext", json_check=True))["connect.name"] == "io.debezium.data.Json"
    assert avro_type(col("json"))["connect.name"] == "io.debezium.data.Json"
    assert avro_type(col("bit(10)")) == {"type": "bytes", "connect.version": 1, "connect.parameters": {"length": "10"}, "connect.name": "io.debezium.data.Bits"}
    decimal = avro_type(col("decimal(12,2) unsigned"))
    assert decimal["logicalType"] == "decimal" and decimal["precision"] == 12 and decimal["scale"] == 2
    assert decimal["connect.name"] == "org.apache.kafka.connect.data.Decimal"
    assert decimal["connect.parameters"] == {"scale": "2", "connect.decimal.precision": "12"}
    assert avro_type(col("decimal(10)"))["scale"] == 0


def test_enum_and_set() -> None:
    assert parse_enum_values("'L','P','it''s'") == ("L", "P", "it's")
    enum = col("enum('L','P')")
    assert avro_type(enum) == {"type": "string", "connect.version": 1, "connect.parameters": {"allowed": "L,P"}, "connect.name": "io.debezium.data.Enum"}
    assert avro_type(col("set('a','b','c')"))["connect.name"] == "io.debezium.data.EnumSet"
    assert convert(enum, "P") == ("P", None)
    member = col("set('a','b','c')")
    assert convert(member, {"c", "a"}) == ("a,c", None)  # binlog: a set, in declared order
    assert convert(member, "a,c") == ("a,c", None)  # snapshot: pymysql's text
    assert convert(member, None, "empty set") == ("", None)
    assert convert(member, None, "null") == (None, None)


def test_binlog_and_information_schema_agree() -> None:
    pairs = [
        (column_from_binlog("c", 1, boolean=True), col("tinyint(1)")),
        (column_from_binlog("c", 1), col("tinyint(4)")),
        (column_from_binlog("c", 8, unsigned=True), col("bigint(20) unsigned")),
        (column_from_binlog("c", 3, unsigned=True), col("int(10) unsigned")),
        (column_from_binlog("c", 246, precision=12, decimals=2), col("decimal(12,2)")),
        (column_from_binlog("c", 18, fsp=6), col("datetime(6)")),
        (column_from_binlog("c", 18, fsp=0), col("datetime")),
        (column_from_binlog("c", 17, fsp=0), col("timestamp")),
        (column_from_binlog("c", 19, fsp=0), col("time")),
        (column_from_binlog("c", 14), col("date")),
        (column_from_binlog("c", 13), col("year(4)")),
        (column_from_binlog("c", 15, charset="cp1252"), col("varchar(40)", "latin1")),
        (column_from_binlog("c", 15, charset="binary"), col("varbinary(40)", None)),
        (column_from_binlog("c", 254, charset="binary"), col("binary(4)", None)),
        (column_from_binlog("c", 252, charset="utf8"), col("text")),
        (column_from_binlog("c", 252, charset="utf8", json_text=True), col("longtext", json_check=True)),
        (column_from_binlog("c", 252, charset="binary"), col("blob", None)),
        (column_from_binlog("c", 247, values=("L", "P")), col("enum('L','P')")),
        (column_from_binlog("c", 248, values=("a", "b")), col("set('a','b')")),
        (column_from_binlog("c", 16, bits=1), col("bit(1)")),
    ]
    for from_binlog, from_catalog in pairs:
        assert avro_type(from_binlog) == avro_type(from_catalog), from_catalog
    # a stale hint cannot make a non-TINY column boolean
    assert avro_type(column_from_binlog("c", 3, boolean=True)) == "int"
    with pytest.raises(UnsupportedColumnType):
        avro_type(column_from_binlog("c", 255))


def test_numbers() -> None:
    assert convert(col("tinyint(1)"), 1) == (True, None)
    assert convert(col("tinyint(1)"), 0) == (False, None)
    assert convert(col("tinyint(4)"), -5) == (-5, None)
    assert convert(col("int(10) unsigned"), 4_294_967_295) == (4_294_967_295, None)
    assert convert(col("bigint(20) unsigned"), 2**63 - 1) == (2**63 - 1, None)
    with pytest.raises(MysqlValueError) as too_big:
        convert(col("bigint(20) unsigned"), 2**64 - 1)
    assert too_big.value.reason == "unsigned_out_of_range"
    assert convert(col("decimal(12,2)"), Decimal("12.5")) == (Decimal("12.50"), None)
    assert str(convert(col("decimal(12,2)"), Decimal("-0.01"))[0]) == "-0.01"
    assert convert(col("double"), 1.5) == (1.5, None)
    assert convert(col("bit(1)"), b"\x01") == (True, None)
    assert convert(col("bit(10)"), b"\x02\x01") == (b"\x01\x02", None)  # pymysql big-endian -> Debezium little-endian
    assert convert(col("bit(10)"), "1000000001") == (b"\x01\x02", None)  # binlog bit string


def test_temporal_values() -> None:
    assert convert(col("date"), date(1970, 1, 2)) == (1, None)
    assert convert(col("date"), date(1969, 12, 31)) == (-1, None)
    assert convert(col("datetime"), datetime(1970, 1, 1, 0, 0, 1)) == (1000, None)
    assert convert(col("datetime(3)"), datetime(2024, 1, 2, 3, 4, 5, 123000)) == (1704164645123, None)
    assert convert(col("datetime(6)"), datetime(2024, 1, 2, 3, 4, 5, 123456)) == (1704164645123456, None)
    assert convert(col("timestamp"), datetime(2024, 1, 2, 3, 4, 5)) == ("2024-01-02T03:04:05Z", None)
    assert convert(col("timestamp(6)"), datetime(2024, 1, 2, 3, 4, 5, 7)) == ("2024-01-02T03:04:05.000007Z", None)
    assert convert(col("time"), timedelta(hours=25, seconds=1)) == (90_001_000_000, None)
    assert convert(col("time"), timedelta(hours=-1)) == (-3_600_000_000, None)
    assert convert(col("year(4)"), 2024) == (2024, None)


def test_zero_dates_become_null_with_a_note() -> None:
    # snapshot: pymysql hands zero dates over as text
    assert convert(col("date"), "0000-00-00") == (None, "zero_date")
    assert convert(col("date"), "2020-00-15") == (None, "zero_date")
    assert convert(col("datetime"), "0000-00-00 00:00:00") == (None, "zero_date")
    # binlog: mysql-replication gives None and says why
    assert convert(col("date"), None, "out of date range") == (None, "zero_date")
    assert convert(col("datetime"), None, "out of datetime2 range") == (None, "zero_date")
    assert convert(col("date"), None, "null") == (None, None)


def test_strings_and_bytes() -> None:
    assert convert(col("varchar(10)", "latin1"), "Günter") == ("Günter", None)
    latin1 = column_from_binlog("c", 15, charset="cp1252")
    assert convert(latin1, "Günter".encode("cp1252")) == ("Günter", None)
    assert convert(col("varchar(10)"), "Ñoño 😀") == ("Ñoño 😀", None)
    assert convert(col("blob", None), b"\x00\xff") == (b"\x00\xff", None)
    assert convert(col("longtext", json_check=True), '{"a": 1}') == ('{"a": 1}', None)
    assert convert(col("json"), {"a": [1, 2]}) == ('{"a": [1, 2]}', None)


def test_table_schema_key_rules_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIK_KEY", "rahasia")
    columns = (
        column_from_information_schema("nik", "varchar(16)", "utf8mb4"),
        column_from_information_schema("nama", "varchar(80)", "latin1"),
        column_from_information_schema("foto", "blob", None),
        column_from_information_schema("lahir", "date", None),
    )
    rules = ColumnTransforms(
        [ColumnRule(column="db.orang.nik", action="hash", secret_env="NIK_KEY"), ColumnRule(column="db.orang.foto", action="exclude")], "sources.x"
    )
    schema = build_table_schema("p.db.orang", "db.orang", columns, ("nik",), rules.for_table("db.orang"))
    assert schema.key == {"type": "record", "name": "Key", "namespace": "p.db.orang", "connect.name": "p.db.orang.Key",
                          "fields": [{"name": "nik", "type": "string"}]}
    assert [f["name"] for f in schema.value["fields"]] == ["nik", "nama", "lahir"]
    assert all(f["type"][0] == "null" for f in schema.value["fields"])
    assert schema.envelope["name"] == "Envelope" and schema.envelope["namespace"] == "p.db.orang"
    source_fields = {f["name"]: f["type"] for f in schema.envelope["fields"][2]["type"]["fields"]}
    assert source_fields["server_id"] == "long" and source_fields["pos"] == "long" and source_fields["row"] == "int"
    assert source_fields["file"] == "string" and source_fields["gtid"] == ["null", "string"] and source_fields["table"] == ["null", "string"]
    row, notes = schema.row({"nik": "3673014501900001", "nama": "Ani", "foto": b"x", "lahir": "0000-00-00"})
    assert "foto" not in row and row["lahir"] is None and len(row["nik"]) == 64 and row["nama"] == "Ani"
    assert [(n.column, n.reason) for n in notes] == [("lahir", "zero_date")]
    assert schema.key_of(row) == {"nik": row["nik"]}

    cache = SchemaCache("p", "db")
    first = cache.get("orang", columns, ("nik",), TableTransform({}))
    binlog = (
        column_from_binlog("nik", 15, charset="utf8"),
        column_from_binlog("nama", 15, charset="cp1252"),
        column_from_binlog("foto", 252, charset="binary"),
        column_from_binlog("lahir", 10),
    )
    second = cache.get("orang", binlog, ("nik",), TableTransform({}))
    # same Avro shape from the binlog: the very same schema objects (no new registration)
    assert second.value is first.value and second.envelope is first.envelope and second.columns == binlog
    wider = cache.get("orang", binlog + (column_from_binlog("umur", 3),), ("nik",), TableTransform({}))
    assert wider.value is not first.value and wider.value["fields"][-1]["name"] == "umur"


def test_binlog_columns_take_hints_from_the_catalog() -> None:
    # mysql-replication's Column objects as a TableMapEvent with binlog_row_metadata=FULL makes them
    table_map = [
        Column(name="aktif", type=1, unsigned=False, character_set_name=None),
        Column(name="status", type=247, enum_values=["", "L", "P"], character_set_name="utf8"),
        Column(name="hobi", type=248, set_values=["a", "b"], character_set_name="utf8"),
        Column(name="data", type=252, character_set_name="utf8"),
        Column(name="saldo", type=246, precision=12, decimals=2),
    ]
    info = TableInfo((column_from_information_schema("aktif", "tinyint(1)", None),
                      column_from_information_schema("data", "longtext", "utf8mb4", json_check=True)), ("aktif",))
    aktif, status, hobi, data, saldo = binlog_columns(table_map, info)
    assert aktif.boolean and data.type_name == "json"
    assert status.values == ("L", "P") and hobi.values == ("a", "b")  # the "" placeholder is not a value
    assert convert(status, "P") == ("P", None)
    assert saldo.precision == 12 and saldo.scale == 2
    plain = binlog_columns(table_map, None)
    assert avro_type(plain[0]) == {"type": "int", "connect.type": "int16"} and plain[3].type_name == "text"
