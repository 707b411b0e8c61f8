"""Opening a connection to an agency database from its configured source (the one way Simpul does it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql

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
