"""What ``information_schema`` knows about captured tables and the binlog does not.

The snapshot takes its column layout from here. Streaming takes it from each TableMapEvent
(``binlog_row_metadata=FULL``: names, types, signedness, charsets, ENUM/SET values) and asks here
only for the primary key and what the binlog forgets: ``TINYINT(1)`` display widths and MariaDB's
JSON alias (a ``longtext`` with a ``json_valid`` check).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from simpul.cdc.mysql.types import MysqlColumn, column_from_binlog, column_from_information_schema

_JSON_CHECK = re.compile(r"json_valid\(`([^`]+)`\)", re.IGNORECASE)


@dataclass(frozen=True)
class TableInfo:
    """One table as ``information_schema`` describes it now."""

    columns: tuple[MysqlColumn, ...]
    key_columns: tuple[str, ...]

    @cached_property
    def names(self) -> frozenset[str]:
        """Every column's name."""
        return frozenset(c.name for c in self.columns)

    @cached_property
    def booleans(self) -> frozenset[str]:
        """Columns declared ``TINYINT(1)``/``BOOL``."""
        return frozenset(c.name for c in self.columns if c.boolean)

    @cached_property
    def json_columns(self) -> frozenset[str]:
        """Columns declared ``JSON`` (MariaDB keeps them as checked ``longtext``)."""
        return frozenset(c.name for c in self.columns if c.type_name == "json")


def read_table_info(cursor: Any, database: str, table: str) -> TableInfo | None:
    """The table's columns and primary key, or None when it does not exist."""
    cursor.execute(
        "SELECT COLUMN_NAME, COLUMN_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    rows = cursor.fetchall()
    if not rows:
        return None
    cursor.execute(
        "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
        (database, table),
    )
    json_columns = {name for (clause,) in cursor.fetchall() for name in _JSON_CHECK.findall(clause)}
    cursor.execute(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE"
        " WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
        (database, table),
    )
    key_columns = tuple(name for (name,) in cursor.fetchall())
    columns = tuple(
        column_from_information_schema(name, column_type, charset, json_check=name in json_columns)
        for name, column_type, charset in rows
    )
    return TableInfo(columns, key_columns)


def binlog_columns(columns: list[Any], info: TableInfo | None) -> tuple[MysqlColumn, ...]:
    """A TableMapEvent's columns (mysql-replication ``Column`` objects) with ``info``'s hints."""
    booleans = info.booleans if info else frozenset()
    json_columns = info.json_columns if info else frozenset()
    described = []
    for column in columns:
        # mysql-replication puts "" (MySQL's index 0, the invalid-value marker) before ENUM values.
        enum_values = list(getattr(column, "enum_values", None) or [])[1:]
        values = enum_values or getattr(column, "set_values", None) or ()
        described.append(
            column_from_binlog(
                column.name,
                column.type,
                unsigned=bool(getattr(column, "unsigned", False)),
                charset=getattr(column, "character_set_name", None),
                precision=getattr(column, "precision", None),
                decimals=getattr(column, "decimals", None),
                fsp=getattr(column, "fsp", None),
                bits=getattr(column, "bits", None),
                values=tuple(values),
                boolean=column.name in booleans,
                json_text=column.name in json_columns,
            )
        )
    return tuple(described)
