"""Opening a connection to an agency database from its configured source (the one way Simpul does it),
and copies of the sources in empty databases of their own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql
from psycopg import sql

from simpul.config import ConfigError, SourceSettings


def mysql_params(dsn: str) -> dict[str, Any]:
    """pymysql connection arguments from ``mysql://user:password@host:port/database``."""
    url = urlsplit(dsn)
    if url.scheme not in ("mysql", "mariadb") or not url.hostname:
        raise ConfigError(f"expected mysql://user:password@host:port/database, got scheme {url.scheme!r}")
    return {
        "host": url.hostname,
        "port": url.port or 3306,
        "user": unquote(url.username or ""),
        "password": unquote(url.password or ""),
        "database": unquote(url.path.lstrip("/")) or None,
        "charset": "utf8mb4",
        # The seed loads Disnaker with LOAD DATA LOCAL INFILE.
        "local_infile": True,
        "autocommit": False,
    }


def connect_postgres(source: SourceSettings, application_name: str = "simpul") -> psycopg.Connection[Any]:
    """A psycopg connection to a PostgreSQL source (not in autocommit)."""
    if source.kind != "postgres":
        raise ConfigError(f"sources.{source.name}: expected kind postgres, got {source.kind}")
    return psycopg.connect(source.dsn(), application_name=application_name)


def connect_mysql(source: SourceSettings) -> pymysql.connections.Connection:
    """A pymysql connection to a MySQL/MariaDB source (not in autocommit)."""
    if source.kind != "mysql":
        raise ConfigError(f"sources.{source.name}: expected kind mysql, got {source.kind}")
    return pymysql.connect(**mysql_params(source.dsn()))


@dataclass
class SourceCopies:
    """Every configured source pointed at a new, empty database of its own (for tests and benchmarks)."""

    sources: list[SourceSettings]
    created: list[tuple[str, str, str]]  # (kind, admin DSN, database)

    def drop(self) -> None:
        """Drop the databases, and first any replication slot on them (PostgreSQL refuses otherwise)."""
        for kind, admin_dsn, database in self.created:
            if kind == "postgres":
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s AND NOT active", (database,))
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            else:
                conn = pymysql.connect(**{**mysql_params(admin_dsn), "autocommit": True})
                with conn, conn.cursor() as cur:
                    cur.execute(f"DROP DATABASE IF EXISTS `{database}`")


def copy_sources(sources: list[SourceSettings], name: str, setenv: Callable[[str, str], None]) -> SourceCopies:
    """Each source with a new, empty database ``<database>_<name>`` on the same server.

    The copy's DSN goes into a new environment variable (through ``setenv``), never into the
    config; MySQL tables are requalified with the new database. Topic prefixes and slots are kept.
    """
    copies, created = [], []
    for source in sources:
        database = f"{source.database}_{name}"
        dsn = f"{source.dsn().rsplit('/', 1)[0]}/{database}"
        env = f"SIMPUL_COPY_{source.name.upper()}_{name.upper()}_DSN"
        if source.kind == "postgres":
            with psycopg.connect(source.dsn(), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        else:
            conn = pymysql.connect(**{**mysql_params(source.dsn()), "autocommit": True})
            with conn, conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
        created.append((source.kind, source.dsn(), database))
        setenv(env, dsn)
        tables = source.tables
        if source.kind == "mysql":
            tables = [f"{database}.{table.split('.', 1)[1]}" for table in tables]
        copies.append(source.model_copy(update={"database": database, "dsn_env": env, "tables": tables}))
    return SourceCopies(copies, created)
