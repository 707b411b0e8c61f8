"""The connectors' row encoders, pure (no servers): events in order and shape, dead letters and
data-quality notes, as the connectors publish them."""

from __future__ import annotations

import json
import struct
from datetime import date

import pytest
from pymysql import converters
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.table import Table

from simpul.cdc.mysql.row_encoder import MysqlRowEncoder, QualityNote, SourcePosition, TableLayout, _text_converters
from simpul.cdc.mysql.rows_decoder import BinlogRows, BinlogTable
from simpul.cdc.mysql.schema import build_table_schema
from simpul.cdc.mysql.types import MysqlColumn
from simpul.cdc.row_encoding import DeadLetter
from simpul.config import load_config
from simpul.schemas.wire import ConfluentAvroDecoder

COLUMNS = (
    MysqlColumn("id", "int"),
    MysqlColumn("nama", "varchar", length=50),
    MysqlColumn("lahir", "date"),
    MysqlColumn("umur", "bigint", unsigned=True),
)
KEY_ID, VALUE_ID = 7, 8


@pytest.fixture
def encoder_and_decoder() -> tuple[MysqlRowEncoder, ConfluentAvroDecoder]:
    source = next(s for s in load_config().sources if s.kind == "mysql")
    qualified = f"{source.database}.orang"
    schema = build_table_schema(f"{source.topic_prefix}.{qualified}", qualified, COLUMNS, ("id",), _no_rules())
    schemas = {KEY_ID: json.dumps(schema.key), VALUE_ID: json.dumps(schema.envelope)}
    encoder = MysqlRowEncoder(source)
    encoder.describe(TableLayout(1, "orang", COLUMNS, ("id",), KEY_ID, VALUE_ID))
    encoder.describe(TableLayout(2, "orang", COLUMNS, ("id",), None, None, refused="IncompatibleSchema: not BACKWARD compatible"))
    return encoder, ConfluentAvroDecoder(schemas.__getitem__)


def _no_rules():
    from simpul.cdc.transforms import ColumnTransforms

    return ColumnTransforms([], "test").for_table("x.y")


def test_mysql_images_become_debezium_events_in_order(encoder_and_decoder) -> None:
    encoder, decoder = encoder_and_decoder
    at = SourcePosition("mariadb-bin.000001", 400, 0, "0-1-9", 1, 1_700_000_000_000)
    row = {"id": 1, "nama": "Siti", "lahir": date(1990, 1, 5), "umur": 34}
    moved = {**row, "id": 2}
    outcomes = encoder.rows([
        (1, "c", None, row, None, None, at),
        (1, "u", row, moved, None, None, at),  # a key change: d + tombstone + c
        (1, "d", moved, None, None, None, at),
        (1, "t", None, None, None, None, at),
    ])
    kinds = [[(decoder.decode(key)["id"] if key else None, op) for _, key, _, _, op, _ in outcome] for outcome in outcomes]
    assert kinds == [[(1, "c")], [(1, "d"), (1, None), (2, "c")], [(2, "d"), (2, None)], [(None, "t")]]
    created = decoder.decode(outcomes[0][0][2])
    assert created["after"] == {"id": 1, "nama": "Siti", "lahir": 7309, "umur": 34}
    assert created["source"]["file"] == "mariadb-bin.000001" and created["source"]["table"] == "orang"
    assert {event[3] for outcome in outcomes for event in outcome} == {f"{encoder.database}.orang"}
    assert outcomes[1][1][2] is None, "a tombstone has no value"


def test_mysql_bad_rows_become_dead_letters_and_zero_dates_notes(encoder_and_decoder) -> None:
    encoder, decoder = encoder_and_decoder
    at = SourcePosition("mariadb-bin.000001", 500, 1)
    zero = {"id": 3, "nama": "Ucup", "lahir": "0000-00-00", "umur": 1}
    too_big = {"id": 4, "nama": "Ujang", "lahir": None, "umur": 2**64 - 1}  # beyond an Avro long
    refused = {"id": 5, "nama": "Asep", "lahir": None, "umur": 1}
    noted, dead, refusal = encoder.rows([(1, "c", None, zero, None, None, at), (1, "c", None, too_big, None, None, at), (2, "c", None, refused, None, None, at)])
    assert noted[0] == QualityNote(noted[0].table, "lahir", "zero_date")
    assert decoder.decode(noted[1][2])["after"]["lahir"] is None
    (letter,) = dead
    assert isinstance(letter, DeadLetter) and letter.reason == "unsigned_out_of_range" and letter.key == {"id": 4} and letter.position == {"file": "mariadb-bin.000001", "pos": 500, "row": 1, "gtid": None}
    (letter,) = refusal
    assert letter.reason == "incompatible_schema" and "BACKWARD" in letter.message and letter.row["nama"] == "Asep"
    # Snapshot rows come as the server's text, converted as pymysql converts them.
    types = (FIELD_TYPE.LONG, FIELD_TYPE.VAR_STRING, FIELD_TYPE.DATE, FIELD_TYPE.LONGLONG)
    ((read,), (zero_read, zero_event)) = encoder.reads(1, ("id", "nama", "lahir", "umur"), types, [("6", "Euis", "1990-01-05", "2"), ("7", "Asep", "0000-00-00", None)], at)
    assert read[4] == "r" and decoder.decode(read[2])["after"] == {"id": 6, "nama": "Euis", "lahir": 7309, "umur": 2}
    assert zero_read == QualityNote(zero_read.table, "lahir", "zero_date") and decoder.decode(zero_event[2])["after"]["lahir"] is None


def test_mysql_snapshot_dates_read_as_pymysql_reads_them() -> None:
    """The snapshot's own date parsing gives pymysql's values for every text the server sends."""
    datetime_of, timestamp_of, date_of = _text_converters((FIELD_TYPE.DATETIME, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.DATE))
    for text in ("2024-01-02 03:04:05", "2024-01-02 03:04:05.5", "2024-01-02 03:04:05.123", "2024-01-02 03:04:05.000000",
                 "1000-01-01 00:00:00", "9999-12-31 23:59:59.999999", "0000-00-00 00:00:00", "2024-00-00 00:00:00", b"2024-01-02 03:04:05"):
        assert datetime_of(text) == timestamp_of(text) == converters.convert_datetime(text), text
    for text in ("2024-01-02", "1000-01-01", "0000-00-00", "2024-02-00", b"2024-01-02"):
        assert date_of(text) == converters.convert_date(text), text
    assert _text_converters((FIELD_TYPE.LONG,)) == (converters.decoders[FIELD_TYPE.LONG],)


def test_mysql_source_position_at_another_row_keeps_every_other_field() -> None:
    at = SourcePosition("mariadb-bin.000003", 1234, 0, "0-1-77", 9, 1_700_000_000_123, "last", 42)
    assert at.at_row(5) == SourcePosition("mariadb-bin.000003", 1234, 5, "0-1-77", 9, 1_700_000_000_123, "last", 42)


def _write_rows_packet(table_id: int, rows: list[tuple[int, str, int]]) -> bytes:
    """A WRITE_ROWS_EVENT_V1 as the server sends it, of ``orang`` rows (id, nama, lahir NULL, umur)."""
    body = table_id.to_bytes(6, "little") + b"\x00\x00" + bytes([4]) + b"\x0f"
    for row_id, name, age in rows:
        encoded = name.encode()
        body += b"\x04" + struct.pack("<i", row_id) + bytes([len(encoded)]) + encoded + struct.pack("<Q", age)
    return b"\x00" + struct.pack("<IBIIIH", 1_700_000_000, 23, 1, 19 + len(body), 900, 0) + body


def test_mysql_binlog_rows_events_decode_on_the_encoder(encoder_and_decoder) -> None:
    encoder, decoder = encoder_and_decoder
    columns = [
        Column(type=FIELD_TYPE.LONG, name="id", unsigned=False, character_set_name=None),
        Column(type=FIELD_TYPE.VARCHAR, name="nama", unsigned=False, character_set_name="utf8mb4", max_length=200),
        Column(type=FIELD_TYPE.DATE, name="lahir", unsigned=False, character_set_name=None),
        Column(type=FIELD_TYPE.LONGLONG, name="umur", unsigned=True, character_set_name=None),
    ]
    encoder.describe_binlog_table(BinlogTable(Table(42, "db", "orang", columns, primary_key="id"), "utf8mb4", "mariadb", None))
    at = SourcePosition("mariadb-bin.000002", 900, 0, None, 1, 1_700_000_000_000)
    packet = _write_rows_packet(42, [(1, "Dédé", 2**63), (2, "Siti", 30)])
    (outcome, undecodable) = encoder.rows([BinlogRows(1, 42, "c", packet, False, at), BinlogRows(1, 42, "c", packet[:30], False, at)])
    dead = [item for item in outcome if isinstance(item, DeadLetter)]
    assert [d.reason for d in dead] == ["unsigned_out_of_range"] and dead[0].position["row"] == 0, "an unsigned beyond a long is set aside, by row"
    (event,) = [decoder.decode(item[2]) for item in outcome if isinstance(item, tuple)]
    assert event["after"] == {"id": 2, "nama": "Siti", "lahir": None, "umur": 30} and event["op"] == "c"
    assert (event["source"]["pos"], event["source"]["row"]) == (900, 1), "rows are numbered within their event"
    (letter,) = undecodable
    assert letter.reason == "undecodable_rows_event" and letter.position == {"file": "mariadb-bin.000002", "pos": 900, "row": 0, "gtid": None}
    assert letter.row is None, "nothing of an undecodable event travels"
