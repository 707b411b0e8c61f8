"""Rows events read by :class:`RowImageReader` equal mysql-replication's reading, on events that a
real MariaDB wrote for every column type the reader takes (and the edge values of each)."""

from __future__ import annotations

import uuid
from typing import Any

import pymysql
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from simpul.cdc.mysql.row_encoder import SourcePosition
from simpul.cdc.mysql.row_images import RowImageReader
from simpul.cdc.mysql.rows_decoder import OPS, BinlogRows, BinlogRowsDecoder, BinlogTable, undecoded
from simpul.cdc.mysql.snapshot import current_position
from simpul.config import SimpulConfig
from simpul.databases import mysql_params

pytestmark = pytest.mark.stack

COLUMNS = """
    id INT PRIMARY KEY,
    ti TINYINT, tu TINYINT UNSIGNED, flag TINYINT(1), si SMALLINT, su SMALLINT UNSIGNED,
    mi MEDIUMINT, mu MEDIUMINT UNSIGNED, iu INT UNSIGNED, bi BIGINT, bu BIGINT UNSIGNED,
    f FLOAT, d DOUBLE,
    d20 DECIMAL(20,6), d5 DECIMAL(5,0), d38 DECIMAL(38,10), d10 DECIMAL(10,2), d4 DECIMAL(4,4),
    nama VARCHAR(50) CHARACTER SET utf8mb4, alamat VARCHAR(300) CHARACTER SET latin1, kode CHAR(10),
    raw VARBINARY(20), fixed BINARY(4), catatan TEXT, panjang MEDIUMTEXT, foto BLOB, data JSON,
    lahir DATE, dicatat DATETIME, mikro DATETIME(6), mili DATETIME(3), satu DATETIME(1),
    stempel TIMESTAMP(6) NULL, stempel0 TIMESTAMP NULL, jam TIME, jam4 TIME(4), tahun YEAR,
    status ENUM('aktif', 'pindah', 'meninggal', 'ç'),
    hak SET('baca', 'tulis', 'hapus', 'ç'),
    keterampilan SET('KOMPUTER', 'MENJAHIT', 'MENGEMUDI', 'LAS', 'OTOMOTIF', 'BAHASA INGGRIS', 'TATA BOGA', 'ELEKTRONIK', 'ADMINISTRASI')
"""
ROWS = [
    "(1, -128, 255, 1, -32768, 65535, -8388608, 16777215, 4294967295, -9223372036854775808, 18446744073709551615,"
    " 1.5, -2.25e300, -12345678901234.123456, 99999, 1234567890123456789012345678.0123456789, -0.01, 0.9999,"
    " 'Dédé Ñuñez ✓', 'Jl. Ahmad Yani ÿ', 'ABC', x'00ff10', x'01020304', 'teks', REPEAT('x', 70000), x'89504e47', '{\"a\": [1, 2]}',"
    " '1945-08-17', '1999-12-31 23:59:59', '2026-12-07 09:00:00.123456', '2026-12-07 09:00:00.120', '2026-01-01 00:00:00.5',"
    " '2026-12-07 09:00:00.000001', '2038-01-18 00:00:00', '-838:59:59', '12:34:56.7891', 2155, 'ç',"
    " 'baca,tulis,hapus,ç', 'KOMPUTER,ADMINISTRASI,LAS')",
    "(2, 127, 0, 0, 32767, 0, 8388607, 0, 0, 9223372036854775807, 0, -0.0, 0, 0, -99999, -0.0000000001, 12345678.99, -0.0001,"
    " '', '', '', '', x'00000000', '', '', '', 'null', '0000-00-00', '0000-00-00 00:00:00', '2020-00-15 10:00:00.5',"
    " '2020-02-00 00:00:00', '2001-01-01 00:00:00.000000', '2001-01-01 00:00:01', '2001-01-01 00:00:00', '00:00:00', '-00:00:01.5000', 1901, 'aktif', '', '')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
    " NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '2020-05-00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]


def _events(config: SimpulConfig, table: str, statements: list[str]) -> list[Any]:
    """The rows events the statements make, each with what the connector's reader passes on."""
    source = next(s for s in config.sources if s.kind == "mysql")
    params = mysql_params(source.dsn())
    conn = pymysql.connect(**{**params, "autocommit": True})
    with conn, conn.cursor() as cursor:
        start = current_position(cursor)
        cursor.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")  # zero and partly zero dates, as agencies have them
        for statement in statements:
            cursor.execute(statement)
    stream = BinLogStreamReader(
        connection_settings={k: v for k, v in params.items() if k not in ("local_infile", "autocommit")},
        server_id=4242, resume_stream=True, blocking=False, log_file=start.file, log_pos=start.pos,
        only_tables=[table], only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent], is_mariadb=False, freeze_schema=True,
    )
    events = []
    try:
        for event in stream:
            where = SourcePosition(start.file, event.packet.log_pos, 0, None, 1, 0)
            rows = BinlogRows(0, event.table_id, OPS[type(event)], *undecoded(event), where)
            events.append((BinlogTable.of(event, stream.table_map[event.table_id]), rows))
    finally:
        stream.close()
    return events


def test_row_images_read_as_mysql_replication_reads_them(stack_config: SimpulConfig) -> None:
    table = f"images_{uuid.uuid4().hex[:8]}"
    statements = [
        f"CREATE TABLE {table} ({COLUMNS})",
        f"INSERT INTO {table} VALUES {', '.join(ROWS)}",
        f"UPDATE {table} SET nama = CONCAT(nama, '!'), d20 = -d20, mikro = NULL, lahir = '2000-02-29', status = 'meninggal', hak = 'tulis', keterampilan = 'ADMINISTRASI' WHERE id IN (1, 3)",
        f"UPDATE {table} SET d38 = d38 + 1, jam = '838:59:59', bu = IF(bu > 0, bu - 1, bu)",
        f"DELETE FROM {table} WHERE id = 2",
        f"INSERT INTO {table} (id) SELECT seq FROM seq_10_to_400",  # one event of many rows
        f"DELETE FROM {table} WHERE id >= 10",
    ]
    events = _events(stack_config, table, statements)
    # A big statement's rows come in several events (binlog_row_event_max_size).
    assert [op for i, op in enumerate(rows.op for _, rows in events) if i == 0 or op != events[i - 1][1].op] == ["c", "u", "d", "c", "d"]
    decoder = BinlogRowsDecoder()
    read_rows = {"c": 0, "u": 0, "d": 0}
    for described, rows in events:
        decoder.describe(described)
        reader = RowImageReader.of(described.table.columns)
        assert reader is not None, "every column type of this table is one the reader reads"
        fast = reader.rows(rows.packet, described.post_header_lengths, rows.checksum)
        expected = decoder.decode_with_mysql_replication(rows)
        assert fast is not None
        # repr, not ==: a Decimal's exponent and a value's type must be the same too.
        assert [repr(row) for row in fast] == [repr(row) for row in expected]
        assert decoder.decode(rows) == expected
        read_rows[rows.op] += len(fast)
    assert read_rows == {"c": 3 + 391, "u": 2 + 3, "d": 1 + 391}
    zero = next(row for _, rows in events if rows.op == "c" for row in decoder.decode(rows) if row["values"]["id"] == 2)
    assert zero["values"]["lahir"] is None and zero["none_sources"]["lahir"] == "out of date range"
    assert zero["values"]["hak"] is None and zero["none_sources"]["hak"] == "empty set"


def test_tables_with_other_types_are_left_to_mysql_replication(stack_config: SimpulConfig) -> None:
    table = f"images_{uuid.uuid4().hex[:8]}"
    events = _events(stack_config, table, [
        f"CREATE TABLE {table} (id INT PRIMARY KEY, hak SET('baca', 'tulis'), bits BIT(10))",
        f"INSERT INTO {table} VALUES (1, 'baca,tulis', b'1000000001'), (2, '', NULL)",
    ])  # BIT is not read from the bytes: the whole table goes to mysql-replication
    ((described, rows),) = events
    assert RowImageReader.of(described.table.columns) is None
    decoder = BinlogRowsDecoder()
    decoder.describe(described)
    assert [row["values"] for row in decoder.decode(rows)] == [
        {"id": 1, "hak": {"baca", "tulis"}, "bits": "1000000001"}, {"id": 2, "hak": None, "bits": None},
    ]


def test_a_cut_event_is_refused_not_read_as_rows(stack_config: SimpulConfig) -> None:
    table = f"images_{uuid.uuid4().hex[:8]}"
    ((described, rows),) = _events(stack_config, table, [
        f"CREATE TABLE {table} (id INT PRIMARY KEY, nama VARCHAR(20))", f"INSERT INTO {table} VALUES (1, 'Siti'), (2, 'Budi')",
    ])
    reader = RowImageReader.of(described.table.columns)
    assert reader is not None
    with pytest.raises(ValueError, match="cut short"):
        reader.rows(rows.packet[:-9], described.post_header_lengths, rows.checksum)
