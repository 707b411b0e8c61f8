"""The PostgreSQL schema builder: Debezium's names and shapes, and rows that encode (pure)."""

from __future__ import annotations

import io

import fastavro
import pytest

from simpul.cdc.postgres.pgoutput import UNCHANGED_TOAST, Column, Relation
from simpul.cdc.postgres.schema import TableSchemaError, build_table_schema

RELATION = Relation(
    oid=1,
    namespace="public",
    name="penduduk",
    replica_identity="d",
    columns=(
        Column("nik", 1043, 20, True),
        Column("nama_lengkap", 25, -1, False),
        Column("tanggal_lahir", 1082, -1, False),
        Column("saldo", 1700, -1, False),
        Column("iuran", 1700, -1, False),
        Column("gaji", 1700, (10 << 16 | 2) + 4, False),
        Column("updated_at", 1184, -1, False),
        Column("foto", 17, -1, False),
    ),
)


def _round_trip(schema: dict, record: dict) -> dict:
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, record)
    buffer.seek(0)
    return fastavro.schemaless_reader(buffer, parsed)


def test_debezium_names() -> None:
    table = build_table_schema("disdukcapil.public.penduduk", RELATION)
    assert table.envelope["connect.name"] == "disdukcapil.public.penduduk.Envelope"
    assert table.value["connect.name"] == "disdukcapil.public.penduduk.Value"
    assert table.key["connect.name"] == "disdukcapil.public.penduduk.Key"
    assert [f["name"] for f in table.envelope["fields"]] == ["before", "after", "source", "transaction", "op", "ts_ms", "ts_us", "ts_ns"]
    source = table.envelope["fields"][2]["type"]
    assert source["name"] == "Source" and source["namespace"] == "io.debezium.connector.postgresql"
    assert {"schema", "table", "txId", "lsn", "xmin", "snapshot", "sequence"} <= {f["name"] for f in source["fields"]}


def test_envelope_round_trips_through_avro() -> None:
    table = build_table_schema("disdukcapil.public.penduduk", RELATION)
    row = table.row(("3673014501900001", "Siti Aminah", "1990-01-05", "12.5", "-3", "100.25", "2024-01-02 03:04:05+07", UNCHANGED_TOAST))
    assert row["foto"] == b"__debezium_unavailable_value"
    event = {
        "before": None,
        "after": row,
        "source": {
            "version": "x", "connector": "postgresql", "name": "disdukcapil", "ts_ms": 1, "snapshot": "false",
            "db": "disdukcapil", "schema": "public", "table": "penduduk", "txId": 7, "lsn": 99, "xmin": None,
        },
        "transaction": None,
        "op": "c",
        "ts_ms": 2,
    }
    decoded = _round_trip(table.envelope, event)
    assert decoded["after"]["nik"] == "3673014501900001"
    assert decoded["after"]["tanggal_lahir"] == 7309
    assert decoded["after"]["updated_at"] == "2024-01-01T20:04:05Z"
    assert str(decoded["after"]["gaji"]) == "100.25"
    assert _round_trip(table.key, table.key_of(("3673014501900001",) + (None,) * 7)) == {"nik": "3673014501900001"}


def test_table_without_key_has_no_key_schema() -> None:
    relation = Relation(2, "public", "log", "n", (Column("pesan", 25, -1, False),))
    table = build_table_schema("x.public.log", relation)
    assert table.key is None and table.key_of(("hi",)) is None


def test_unknown_type_names_table_and_column() -> None:
    relation = Relation(3, "public", "peta", "d", (Column("id", 23, -1, True), Column("titik", 600, -1, False)))
    with pytest.raises(TableSchemaError, match="public.peta.titik: PostgreSQL type oid 600"):
        build_table_schema("x.public.peta", relation)
