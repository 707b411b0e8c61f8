"""CPU per row in the connectors' encoding workers, without servers.

    .venv/bin/python -m bench.row_encoders [--config simpul.yaml] [--rows 2000] [--repeat 15]

The connectors' snapshots and MySQL's streaming are bound by their encoding workers' CPU (every
core is busy: workers, connector, database and Kafka share the machine). This runs each
connector's own row encoder, as a worker runs it, on rows of the ``cdc_postgres`` / ``cdc_mysql``
benchmark table (id, text, numeric, a time zone timestamp, JSON, two timestamps): snapshot rows
as the server's text, and MySQL binlog rows events (inserts, and updates with both images) built
byte for byte as MariaDB writes them. It prints the CPU µs per row (the best of ``--repeat``
passes of ``--rows`` rows), written to ``bench/results/row_encoders.json``: whole rows (decoded,
converted, encoded), and the binlog decoding alone by the row-image reader and by
mysql-replication (whose results must be equal). Schema ids are made up: nothing is registered or sent.
"""

from __future__ import annotations

import argparse
import struct
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pymysql.constants import FIELD_TYPE
from pymysqlreplication.column import Column
from pymysqlreplication.constants import FIELD_TYPE as BINLOG_TYPE
from pymysqlreplication.table import Table

from bench.avro_encoding import bench_relation, text_row
from bench.harness import write_results
from simpul.cdc.mysql.row_encoder import MysqlRowEncoder, SourcePosition, TableLayout
from simpul.cdc.mysql.rows_decoder import BinlogRows, BinlogRowsDecoder, BinlogTable
from simpul.cdc.mysql.types import MysqlColumn
from simpul.cdc.postgres.row_encoder import RowEncoder, TableDescription
from simpul.config import SimpulConfig, load_config

KEY_ID, VALUE_ID = 1, 2
TIMESTAMP = "2026-12-07 21:00:01.123456"


def _cpu_us_per_row(encode: Callable[[], object], rows: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time()
        encode()
        best = min(best, time.process_time() - started)
    return round(best / rows * 1e6, 1)


MYSQL_COLUMNS = (
    MysqlColumn("id", "int"), MysqlColumn("string_field", "text"), MysqlColumn("numeric_field", "decimal", precision=20, scale=6),
    MysqlColumn("timestamp_field", "timestamp", fsp=6), MysqlColumn("json_field", "json"),
    MysqlColumn("inserted_at", "datetime", fsp=6), MysqlColumn("updated_at", "datetime", fsp=6),
)
# The same columns as MariaDB's table map describes them (a JSON column is a LONGTEXT there).
BINLOG_COLUMNS = [
    Column(type=BINLOG_TYPE.LONG, name="id", unsigned=False, character_set_name=None),
    Column(type=BINLOG_TYPE.VARCHAR, name="string_field", unsigned=False, character_set_name="utf8mb4", max_length=400),
    Column(type=BINLOG_TYPE.NEWDECIMAL, name="numeric_field", unsigned=False, character_set_name=None, precision=20, decimals=6),
    Column(type=BINLOG_TYPE.TIMESTAMP2, name="timestamp_field", unsigned=False, character_set_name=None, fsp=6),
    Column(type=BINLOG_TYPE.BLOB, name="json_field", unsigned=False, character_set_name="utf8mb4", length_size=4),
    Column(type=BINLOG_TYPE.DATETIME2, name="inserted_at", unsigned=False, character_set_name=None, fsp=6),
    Column(type=BINLOG_TYPE.DATETIME2, name="updated_at", unsigned=False, character_set_name=None, fsp=6),
]
TABLE_ID = 42
ROWS_PER_EVENT = 20
WRITE_ROWS_V1, UPDATE_ROWS_V1 = 23, 24


def mysql_snapshot(config: SimpulConfig, rows: int, repeat: int) -> float:
    """µs of CPU per MySQL snapshot row (the server's text, converted and encoded)."""
    types = (FIELD_TYPE.LONG, FIELD_TYPE.BLOB, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.BLOB, FIELD_TYPE.DATETIME, FIELD_TYPE.DATETIME)
    encoder = MysqlRowEncoder(next(s for s in config.sources if s.kind == "mysql"))
    encoder.describe(TableLayout(1, "bench", MYSQL_COLUMNS, ("id",), KEY_ID, VALUE_ID))
    names = tuple(c.name for c in MYSQL_COLUMNS)
    text = [(str(i), f"text {i:08d}", "142857.142857", TIMESTAMP, f'{{"n": {i}}}', TIMESTAMP, TIMESTAMP) for i in range(rows)]
    at = SourcePosition("mariadb-bin.000001", 4, 0, snapshot="true")
    return _cpu_us_per_row(lambda: encoder.reads(1, names, types, text, at), rows, repeat)


def _row_image(i: int, when: datetime) -> bytes:
    """Row ``i`` of the benchmark table as a binlog row image: no nulls, then each value packed."""
    text, document = f"text {i:08d}".encode(), f'{{"n": {i}}}'.encode()
    # DECIMAL(20,6) 142857.142857 + i: 5 leftover integral digits (3 bytes), a group of 9 (4), 6 fraction digits (3).
    whole, fraction = 142_857 + i, 142_857
    number = bytearray((whole // 10**9).to_bytes(3, "big") + (whole % 10**9).to_bytes(4, "big") + fraction.to_bytes(3, "big"))
    number[0] |= 0x80  # the sign bit: not negative
    stamp = int(when.timestamp()).to_bytes(4, "big") + when.microsecond.to_bytes(3, "big")
    packed = 1 << 39 | (when.year * 13 + when.month) << 22 | when.day << 17 | when.hour << 12 | when.minute << 6 | when.second
    moment = packed.to_bytes(5, "big") + when.microsecond.to_bytes(3, "big")
    return (b"\x00" + struct.pack("<i", i) + struct.pack("<H", len(text)) + text + bytes(number) + stamp
            + struct.pack("<I", len(document)) + document + moment + moment)


def _rows_event(event_type: int, body_rows: bytes, columns: int) -> bytes:
    """A v1 rows event of the benchmark table as the server sends it (the OK byte first, no checksum)."""
    present = b"\x7f" * (2 if event_type == UPDATE_ROWS_V1 else 1)  # all 7 columns in each image
    body = TABLE_ID.to_bytes(6, "little") + b"\x00\x00" + bytes([columns]) + present + body_rows
    return b"\x00" + struct.pack("<IBIIIH", 1_700_000_000, event_type, 1, 19 + len(body), 900, 0) + body


def mysql_binlog_events(rows: int) -> list[BinlogRows]:
    """``rows`` inserts then ``rows`` updates (before and after image) of the benchmark table, ROWS_PER_EVENT to an event."""
    when = datetime(2026, 12, 7, 21, 0, 1, 123456)
    at = SourcePosition("mariadb-bin.000001", 900, 0, None, 1, 1_700_000_000_000)
    events = []
    for start in range(0, rows, ROWS_PER_EVENT):
        ids = range(start, min(start + ROWS_PER_EVENT, rows))
        events.append(BinlogRows(1, TABLE_ID, "c", _rows_event(WRITE_ROWS_V1, b"".join(_row_image(i, when) for i in ids), 7), False, at))
    for start in range(0, rows, ROWS_PER_EVENT):
        ids = range(start, min(start + ROWS_PER_EVENT, rows))
        images = b"".join(_row_image(i, when) + _row_image(i + 1, when) for i in ids)
        events.append(BinlogRows(1, TABLE_ID, "u", _rows_event(UPDATE_ROWS_V1, images, 7), False, at))
    return events


def mysql_binlog(config: SimpulConfig, rows: int, repeat: int) -> dict[str, Any]:
    """µs of CPU per streamed MySQL row: whole (decoded, converted, encoded) per kind, and the
    decoding alone by each decoder."""
    described = BinlogTable(Table(TABLE_ID, "bench", "bench", BINLOG_COLUMNS, primary_key="id"), "utf8mb4", "mariadb", None)
    encoder = MysqlRowEncoder(next(s for s in config.sources if s.kind == "mysql"))
    encoder.describe(TableLayout(1, "bench", MYSQL_COLUMNS, ("id",), KEY_ID, VALUE_ID))
    encoder.describe_binlog_table(described)
    decoder = BinlogRowsDecoder()
    decoder.describe(described)
    events = mysql_binlog_events(rows)
    inserts, updates = [e for e in events if e.op == "c"], [e for e in events if e.op == "u"]
    for event in events:
        if decoder.decode(event) != decoder.decode_with_mysql_replication(event):
            raise SystemExit("the row-image reader and mysql-replication read the benchmark's events differently")
    outcomes = encoder.rows(inserts[:1])
    if not all(type(item) is tuple for outcome in outcomes for item in outcome):
        raise SystemExit(f"the benchmark's binlog rows did not encode: {outcomes}")
    return {
        "mysql_binlog_insert_us_per_row": _cpu_us_per_row(lambda: encoder.rows(inserts), rows, repeat),
        "mysql_binlog_update_us_per_row": _cpu_us_per_row(lambda: encoder.rows(updates), rows, repeat),
        "mysql_binlog_decode_us_per_row": _cpu_us_per_row(lambda: [decoder.decode(e) for e in events], 2 * rows, repeat),
        "mysql_binlog_decode_mysql_replication_us_per_row": _cpu_us_per_row(
            lambda: [decoder.decode_with_mysql_replication(e) for e in events], 2 * rows, repeat),
    }


def postgres_snapshot(config: SimpulConfig, rows: int, repeat: int) -> float:
    """µs of CPU per PostgreSQL snapshot row (columns read as ``::text``, converted and encoded)."""
    relation = bench_relation(-1)
    encoder = RowEncoder(next(s for s in config.sources if s.kind == "postgres"))
    encoder.describe(TableDescription(relation, relation, None, KEY_ID, VALUE_ID))
    text = [text_row(i) for i in range(rows)]
    return _cpu_us_per_row(lambda: encoder.reads(relation.oid, 1_700_000_000_000_000, 0x1_6B37_4D48, "true", text), rows, repeat)


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    config = load_config(Path(args.config))
    figures = {
        "rows": args.rows,
        "mysql_snapshot_us_per_row": mysql_snapshot(config, args.rows, args.repeat),
        **mysql_binlog(config, args.rows, args.repeat),
        "postgres_snapshot_us_per_row": postgres_snapshot(config, args.rows, args.repeat),
    }
    for name, value in figures.items():
        print(f"{name:>48}: {value}")
    write_results("row_encoders", figures)


if __name__ == "__main__":
    main()
