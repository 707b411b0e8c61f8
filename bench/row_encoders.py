"""CPU per snapshot row in the connectors' encoding workers, without servers.

    .venv/bin/python -m bench.row_encoders [--config simpul.yaml] [--rows 2000] [--repeat 15]

The connectors' snapshots are bound by their encoding workers' CPU (every core is busy: workers,
connector, database and Kafka share the machine). This runs each connector's own row encoder, as
a worker runs it, on text rows of the ``cdc_postgres`` / ``cdc_mysql`` benchmark table (id, text,
numeric, a time zone timestamp, JSON, two timestamps) as the server sends them in a snapshot, and
prints the CPU µs per row (the best of ``--repeat`` passes of ``--rows`` rows), written to
``bench/results/row_encoders.json``. Schema ids are made up: nothing is registered or sent.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from pymysql.constants import FIELD_TYPE

from bench.avro_encoding import bench_relation, text_row
from bench.harness import write_results
from simpul.cdc.mysql.row_encoder import MysqlRowEncoder, SourcePosition, TableLayout
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


def mysql_snapshot(config: SimpulConfig, rows: int, repeat: int) -> float:
    """µs of CPU per MySQL snapshot row (the server's text, converted and encoded)."""
    columns = (
        MysqlColumn("id", "int"), MysqlColumn("string_field", "text"), MysqlColumn("numeric_field", "decimal", precision=20, scale=6),
        MysqlColumn("timestamp_field", "timestamp", fsp=6), MysqlColumn("json_field", "json"),
        MysqlColumn("inserted_at", "datetime", fsp=6), MysqlColumn("updated_at", "datetime", fsp=6),
    )
    types = (FIELD_TYPE.LONG, FIELD_TYPE.BLOB, FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.TIMESTAMP, FIELD_TYPE.BLOB, FIELD_TYPE.DATETIME, FIELD_TYPE.DATETIME)
    encoder = MysqlRowEncoder(next(s for s in config.sources if s.kind == "mysql"))
    encoder.describe(TableLayout(1, "bench", columns, ("id",), KEY_ID, VALUE_ID))
    names = tuple(c.name for c in columns)
    text = [(str(i), f"text {i:08d}", "142857.142857", TIMESTAMP, f'{{"n": {i}}}', TIMESTAMP, TIMESTAMP) for i in range(rows)]
    at = SourcePosition("mariadb-bin.000001", 4, 0, snapshot="true")
    return _cpu_us_per_row(lambda: encoder.reads(1, names, types, text, at), rows, repeat)


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
        "postgres_snapshot_us_per_row": postgres_snapshot(config, args.rows, args.repeat),
    }
    for name, value in figures.items():
        print(f"{name:>30}: {value}")
    write_results("row_encoders", figures)


if __name__ == "__main__":
    main()
