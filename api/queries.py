"""The lookup API's SQL over the master index (schema ``mpi``, see ``simpul.sinks.master_schema``).

Citizen queries select only the golden columns the caller may see, so data outside its scope never
leaves the database. Every statement has a fixed text per scope, which psycopg prepares on a
connection after a few executions.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import dict_row

from simpul.sinks.master_schema import SCHEMA

CITIZEN = sql.Identifier(SCHEMA, "citizen")
RECORD_LINK = sql.Identifier(SCHEMA, "record_link")
HISTORY = sql.Identifier(SCHEMA, "citizen_history")
AUDIT = sql.Identifier(SCHEMA, "api_audit")


def _citizen_select(columns: tuple[str, ...]) -> sql.Composed:
    # columns come from the scope (names of golden fields), quoted as identifiers all the same.
    golden = [sql.Identifier(name) for name in columns]
    return sql.SQL("SELECT master_id, deceased, version, source_updated_at AS updated_at{} FROM {}").format(
        sql.SQL("").join(sql.SQL(", ") + column for column in golden), CITIZEN
    )


async def citizens_by_nik(conn: AsyncConnection[Any], columns: tuple[str, ...], nik: str, limit: int) -> list[dict[str, Any]]:
    """Citizens whose golden NIK is ``nik`` (normally one; more when the index holds a conflict)."""
    query = _citizen_select(columns) + sql.SQL(" WHERE nik = %s ORDER BY master_id LIMIT %s")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (nik, limit))
        return await cursor.fetchall()


async def citizen_by_id(conn: AsyncConnection[Any], columns: tuple[str, ...], master_id: str) -> dict[str, Any] | None:
    """The citizen ``master_id``, or None."""
    query = _citizen_select(columns) + sql.SQL(" WHERE master_id = %s")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (master_id,))
        return await cursor.fetchone()


async def citizens_by_name(
    conn: AsyncConnection[Any], columns: tuple[str, ...], name: str, birth_date: date, limit: int
) -> list[dict[str, Any]]:
    """Citizens named ``name`` (case-insensitive) born on ``birth_date``: the ``citizen_name_birth`` index."""
    query = _citizen_select(columns) + sql.SQL(" WHERE lower(name) = lower(%s) AND birth_date = %s ORDER BY master_id LIMIT %s")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (name, birth_date, limit))
        return await cursor.fetchall()


async def citizens_born_on(conn: AsyncConnection[Any], columns: tuple[str, ...], birth_date: date, limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` citizens born on ``birth_date``: the candidates of a fuzzy name search."""
    query = _citizen_select(columns) + sql.SQL(" WHERE birth_date = %s AND name IS NOT NULL ORDER BY master_id LIMIT %s")
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (birth_date, limit))
        return await cursor.fetchall()


async def citizen_lineage(conn: AsyncConnection[Any], master_id: str) -> dict[str, str] | None:
    """Golden field to the record id that gave it, or None for an unknown citizen."""
    async with conn.cursor() as cursor:
        await cursor.execute(sql.SQL("SELECT lineage FROM {} WHERE master_id = %s").format(CITIZEN), (master_id,))
        row = await cursor.fetchone()
        return row[0] if row is not None else None


async def record_links(conn: AsyncConnection[Any], master_id: str) -> list[dict[str, Any]]:
    """The agency records of a citizen, each with the edge that linked it."""
    query = sql.SQL(
        "SELECT record_id, source, table_name AS table, record_key, rule, matched_record_id, probability, weight,"
        " contributions, source_updated_at AS updated_at FROM {} WHERE master_id = %s ORDER BY record_id"
    ).format(RECORD_LINK)
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (master_id,))
        return await cursor.fetchall()


async def citizen_history(conn: AsyncConnection[Any], master_id: str, limit: int) -> list[dict[str, Any]]:
    """A citizen's latest ``limit`` changes, newest first."""
    query = sql.SQL(
        "SELECT version, change, changed, source_changed_at, recorded_at FROM {} WHERE master_id = %s ORDER BY id DESC LIMIT %s"
    ).format(HISTORY)
    async with conn.cursor(row_factory=dict_row) as cursor:
        await cursor.execute(query, (master_id, limit))
        return await cursor.fetchall()


async def citizen_exists(conn: AsyncConnection[Any], master_id: str) -> bool:
    """Whether the master index holds ``master_id`` now."""
    async with conn.cursor() as cursor:
        await cursor.execute(sql.SQL("SELECT 1 FROM {} WHERE master_id = %s").format(CITIZEN), (master_id,))
        return await cursor.fetchone() is not None


async def write_audit(
    conn: AsyncConnection[Any], agency: str, purpose: str | None, method: str, route: str, master_ids: list[str], fields: list[str], status: int
) -> None:
    """One row of ``mpi.api_audit`` (committed: the connection is in autocommit)."""
    await conn.execute(
        sql.SQL("INSERT INTO {} (agency, purpose, method, route, master_ids, fields, status) VALUES (%s, %s, %s, %s, %s, %s, %s)").format(AUDIT),
        (agency, purpose, method, route, master_ids, fields, status),
    )
