"""What the PostgreSQL connector asks the database: table definitions, enums, replica identity,
slots and publications. Each function is one query on a psycopg connection."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from simpul.cdc.postgres.pgoutput import Column, Relation


def split_table(qualified: str) -> tuple[str, str]:
    """``schema.table`` as its two parts."""
    schema, _, table = qualified.partition(".")
    return schema, table


def table_relation(conn: psycopg.Connection[Any], qualified: str) -> Relation:
    """The table's columns as a pgoutput Relation would describe them (key = replica identity)."""
    schema, table = split_table(qualified)
    row = conn.execute(
        "SELECT c.oid, c.relreplident FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        (schema, table),
    ).fetchone()
    if row is None:
        raise LookupError(f"table {qualified} does not exist")
    oid, identity = row
    # Under REPLICA IDENTITY DEFAULT and FULL, pgoutput marks the primary key columns as the key.
    key_index = "i.indisreplident" if identity == "i" else "i.indisprimary"
    columns = conn.execute(
        f"""SELECT a.attname, a.atttypid, a.atttypmod,
                   EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = a.attrelid AND {key_index}
                           AND a.attnum = ANY (i.indkey))
            FROM pg_attribute a
            WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
            ORDER BY a.attnum""",
        (oid,),
    ).fetchall()
    return Relation(oid, schema, table, identity, tuple(Column(n, t, m, k) for n, t, m, k in columns))


def primary_key_columns(conn: psycopg.Connection[Any], table_oid: int) -> set[str]:
    """Names of the table's primary-key columns (empty without a primary key)."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
        " WHERE i.indrelid = %s AND i.indisprimary",
        (table_oid,),
    ).fetchall()
    return {name for (name,) in rows}


def with_primary_key(conn: psycopg.Connection[Any], relation: Relation) -> Relation:
    """``relation`` with the primary key as its key. Under REPLICA IDENTITY FULL pgoutput marks
    every column as part of the identity, but Debezium's key is still the primary key."""
    if relation.replica_identity not in ("f", "n"):
        return relation
    keys = primary_key_columns(conn, relation.oid)
    columns = tuple(Column(c.name, c.type_oid, c.type_modifier, c.name in keys) for c in relation.columns)
    return Relation(relation.oid, relation.namespace, relation.name, relation.replica_identity, columns)


def enum_labels(conn: psycopg.Connection[Any], type_oids: set[int]) -> dict[int, list[str]]:
    """Labels of the user-defined enum types among ``type_oids``, in their declared order."""
    if not type_oids:
        return {}
    rows = conn.execute(
        "SELECT enumtypid, enumlabel FROM pg_enum WHERE enumtypid = ANY(%s) ORDER BY enumtypid, enumsortorder",
        (list(type_oids),),
    ).fetchall()
    labels: dict[int, list[str]] = {}
    for oid, label in rows:
        labels.setdefault(oid, []).append(label)
    return labels


def tables_without_full_identity(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """The captured tables whose updates and deletes will not carry the whole old row."""
    missing = []
    for qualified in tables:
        if table_relation(conn, qualified).replica_identity != "f":
            missing.append(qualified)
    return missing


def ensure_publication(conn: psycopg.Connection[Any], name: str, tables: list[str]) -> None:
    """Create the publication for exactly ``tables``, or make an existing one publish exactly them."""
    identifiers = sql.SQL(", ").join(sql.Identifier(*split_table(t)) for t in tables)
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    verb = "ALTER PUBLICATION {} SET TABLE {}" if exists else "CREATE PUBLICATION {} FOR TABLE {}"
    conn.execute(sql.SQL(verb).format(sql.Identifier(name), identifiers))


def slot_exists(conn: psycopg.Connection[Any], slot: str) -> bool:
    """Whether the logical replication slot exists in this database."""
    return conn.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone() is not None


def drop_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Drop the slot if it exists (it must not be active)."""
    conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s", (slot,))


def slot_lag_bytes(conn: psycopg.Connection[Any], slot: str) -> int | None:
    """WAL the slot holds back: the current WAL position minus what the slot has confirmed."""
    row = conn.execute(
        "SELECT pg_current_wal_lsn() - confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    return int(row[0]) if row and row[0] is not None else None
