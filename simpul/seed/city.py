"""Seeding the whole synthetic Kota Serang: generate, load every agency, write the truth."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pymysql

from simpul.config import SimpulConfig
from simpul.progress import progress
from simpul.seed.agencies import TABLES, AgencyTable, table_rows
from simpul.databases import connect_mysql, connect_postgres
from simpul.seed.loader import load_mysql, load_postgres
from simpul.seed.population import Population, generate_population
from simpul.seed.truth import TruthWriter

log = logging.getLogger(__name__)

# The agency sources in load order; each must be configured under its name.
SOURCES: tuple[str, ...] = ("disdukcapil", "disnaker", "dinsos", "dinkes")


@dataclass(frozen=True)
class SeedSummary:
    """What ``seed_city`` loaded: rows per agency table (``<source>.<table>``) and where the truth is."""

    citizens: int
    households: int
    records: dict[str, int]
    truth_path: Path
    seconds: float


def seed_city(config: SimpulConfig, citizens: int, seed: int, truth_dir: Path) -> SeedSummary:
    """Create the agency tables (dropping earlier Simpul-seeded ones), load them, write the truth.

    The same ``citizens`` and ``seed`` always give the same rows and truth files.
    """
    started = time.monotonic()
    with progress("generating residents", citizens, unit="residents") as tracker:
        population = generate_population(citizens, seed, advance=tracker.advance)
    log.info("generated %d residents in %d households", len(population.persons), len(population.households))
    truth = TruthWriter(truth_dir)
    records: dict[str, int] = {}
    try:
        for person in population.persons:
            truth.person(person.person_id, person.nik, person.sex, person.birth_date)
        for name in SOURCES:
            source = config.source(name)
            tables = [(t, table_rows(t, population, seed), _expected(t, population)) for t in TABLES if t.source == name]
            load = load_postgres if source.kind == "postgres" else load_mysql
            records.update(load(source, tables, truth))
    except BaseException:
        truth.abort()
        raise
    truth_path = truth.commit()
    return SeedSummary(len(population.persons), len(population.households), records, truth_path, time.monotonic() - started)


def _expected(table: AgencyTable, population: Population) -> int | None:
    if table.table == "public.penduduk":
        return len(population.persons)
    if table.table == "public.kartu_keluarga":
        return len(population.households)
    return None


def is_seeded(config: SimpulConfig) -> bool:
    """True when every agency table exists and holds rows."""
    for name in SOURCES:
        source = config.source(name)
        tables = [t.table for t in TABLES if t.source == name]
        if source.kind == "postgres":
            with connect_postgres(source) as conn:
                for table in tables:
                    if not _pg_has_rows(conn, table):
                        return False
        else:
            conn = connect_mysql(source)
            try:
                with conn.cursor() as cur:
                    for table in tables:
                        if not _mysql_has_rows(cur, table.rsplit(".", 1)[1]):
                            return False
            finally:
                conn.close()
    return True


def _pg_has_rows(conn: psycopg.Connection[object], table: str) -> bool:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if not exists or not exists[0]:
        return False
    return conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone() == (True,)


def _mysql_has_rows(cur: pymysql.cursors.Cursor, table: str) -> bool:
    cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = %s", (table,))
    if cur.fetchone() is None:
        return False
    cur.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
    found = cur.fetchone()
    return bool(found and found[0])

