"""Loading the agency tables: PostgreSQL COPY and MariaDB LOAD DATA LOCAL INFILE, streamed in batches.

Each table is created bare, loaded, then given its keys and indexes (much faster than loading into
an indexed table), and finally analysed. Tables this package created carry the comment
``simpul-seed``; any other table in the way is an error rather than something to drop.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

import psycopg
import pymysql

from simpul.config import SourceSettings
from simpul.progress import progress
from simpul.seed.agencies import SEED_MARK, AgencyTable, Row
from simpul.databases import connect_mysql, connect_postgres
from simpul.seed.truth import TruthWriter

log = logging.getLogger(__name__)

MYSQL_BATCH_ROWS = 50_000
# Zero dates are a legacy habit of the Disnaker database; they load only without NO_ZERO_DATE.
MYSQL_SEED_SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"


class SeedError(Exception):
    """The agency databases cannot be seeded as asked (for example, a foreign table is in the way)."""


def load_postgres(
    source: SourceSettings, tables: list[tuple[AgencyTable, Iterator[tuple[Row, int]], int | None]], truth: TruthWriter
) -> dict[str, int]:
    """Replace ``tables`` of one PostgreSQL source in a single transaction; rows per table name."""
    counts: dict[str, int] = {}
    with connect_postgres(source) as conn, conn.transaction():
        for table, _, _ in reversed(tables):
            _drop_postgres(conn, table)
        for table, rows, expected in tables:
            for statement in table.create:
                conn.execute(statement)
            columns = ", ".join(table.columns)
            count = 0
            with progress(f"loading {table.name}", expected) as tracker, conn.cursor() as cur:
                with cur.copy(f"COPY {table.table} ({columns}) FROM STDIN") as copy:
                    for row, person_id in rows:
                        copy.write_row(row)
                        truth.record(table.source, table.table, row[0], person_id)
                        count += 1
                        if count % 10_000 == 0:
                            tracker.advance(10_000)
                tracker.advance(count % 10_000)
            for statement in table.finish:
                conn.execute(statement)
            counts[table.name] = count
            log.info("loaded %s: %d rows", table.name, count)
    return counts


def _drop_postgres(conn: psycopg.Connection[Any], table: AgencyTable) -> None:
    found = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL, obj_description(to_regclass(%s), 'pg_class')", (table.table, table.table)
    ).fetchone()
    if found is None or not found[0]:
        return
    if found[1] != SEED_MARK:
        raise SeedError(f"{table.source}: table {table.table} exists and was not created by `simpul seed`; not dropping it")
    conn.execute(f"DROP TABLE {table.table}")


def load_mysql(
    source: SourceSettings, tables: list[tuple[AgencyTable, Iterator[tuple[Row, int]], int | None]], truth: TruthWriter
) -> dict[str, int]:
    """Replace ``tables`` of one MySQL/MariaDB source with LOAD DATA LOCAL INFILE; rows per table name."""
    counts: dict[str, int] = {}
    conn = connect_mysql(source)
    try:
        with conn.cursor() as cur, tempfile.TemporaryDirectory(prefix="simpul-seed-") as tmp:
            cur.execute("SET SESSION sql_mode = %s", (MYSQL_SEED_SQL_MODE,))
            for table, _, _ in reversed(tables):
                _drop_mysql(cur, source, table)
            for table, rows, expected in tables:
                bare = table.table.rsplit(".", 1)[1]
                for statement in table.create:
                    cur.execute(statement)
                count = 0
                batch_file = Path(tmp) / f"{bare}.tsv"
                with progress(f"loading {table.name}", expected) as tracker:
                    for batch in _batches(rows, MYSQL_BATCH_ROWS):
                        with batch_file.open("w", encoding="utf-8", newline="\n") as out:
                            for row, person_id in batch:
                                out.write("\t".join(_mysql_field(v) for v in row))
                                out.write("\n")
                                truth.record(table.source, table.table, row[0], person_id)
                        loaded = cur.execute(
                            f"LOAD DATA LOCAL INFILE %s INTO TABLE {bare} CHARACTER SET utf8mb4 "
                            "FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' "
                            f"({', '.join(table.columns)})",
                            (str(batch_file),),
                        )
                        if loaded != len(batch):
                            raise SeedError(f"{table.name}: LOAD DATA took {loaded} of {len(batch)} rows")
                        conn.commit()
                        count += len(batch)
                        tracker.advance(len(batch))
                for statement in table.finish:
                    cur.execute(statement)
                    cur.fetchall()
                counts[table.name] = count
                log.info("loaded %s: %d rows", table.name, count)
        conn.commit()
    finally:
        conn.close()
    return counts


def _drop_mysql(cur: pymysql.cursors.Cursor, source: SourceSettings, table: AgencyTable) -> None:
    bare = table.table.rsplit(".", 1)[1]
    cur.execute(
        "SELECT table_comment FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s", (bare,)
    )
    found = cur.fetchone()
    if found is None:
        return
    if found[0] != SEED_MARK:
        raise SeedError(f"{source.name}: table {bare} exists and was not created by `simpul seed`; not dropping it")
    cur.execute(f"DROP TABLE {bare}")


def _batches(rows: Iterator[tuple[Row, int]], size: int) -> Iterator[list[tuple[Row, int]]]:
    batch: list[tuple[Row, int]] = []
    for item in rows:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _mysql_field(value: object) -> str:
    """One value in LOAD DATA's default text format."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
    return str(value)
