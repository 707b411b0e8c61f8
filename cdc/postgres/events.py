"""Decoded pgoutput changes to Debezium change events (pure).

One change becomes one or more events: an insert a ``c``; an update a ``u``, or, when the primary
key changed, a ``d`` and a tombstone for the old key then a ``c`` for the new one; a delete a ``d``
then a tombstone; a truncate one ``t`` per table.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from simpul.cdc.envelope import DEBEZIUM_VERSION
from simpul.cdc.postgres.pgoutput import UNCHANGED_TOAST, Delete, Insert, RawValue, Update, format_lsn
from simpul.cdc.postgres.schema import TableSchema
from simpul.cdc.transforms import TableTransform

PG_EPOCH_OFFSET_US = 946_684_800_000_000  # 2000-01-01 minus 1970-01-01, in microseconds


@dataclass(frozen=True)
class Event:
    """One record for the table's topic: a key and an envelope (None: a tombstone)."""

    key: dict[str, Any] | None
    envelope: dict[str, Any] | None
    op: str | None


@dataclass(frozen=True)
class SourcePosition:
    """Where in the source a change happened: Debezium's PostgreSQL ``source`` block facts."""

    lsn: int
    tx_id: int | None
    commit_time_us: int  # since the Unix epoch
    last_committed_lsn: int | None
    snapshot: str = "false"

    def offset(self) -> dict[str, Any]:
        """The position as stored and written to dead letters."""
        return {"lsn": self.lsn, "lsn_text": format_lsn(self.lsn), "txId": self.tx_id}


def now_us() -> int:
    """Now, in microseconds since the Unix epoch (an event's ``ts_us``)."""
    return time.time_ns() // 1000


def pg_commit_time_us(pg_micros: int) -> int:
    """A pgoutput timestamp (since 2000-01-01) as microseconds since the Unix epoch."""
    return pg_micros + PG_EPOCH_OFFSET_US


def source_block(prefix: str, database: str, table: TableSchema, position: SourcePosition) -> dict[str, Any]:
    """The ``source`` field of every event of ``table`` at ``position``."""
    last = position.last_committed_lsn
    # Debezium's ["<last committed LSN>","<current LSN>"], written directly: json.dumps per event
    # costs more than the rest of this block.
    last_text = "null" if last is None else f'"{last}"'
    return {
        "version": DEBEZIUM_VERSION,
        "connector": "postgresql",
        "name": prefix,
        "ts_ms": position.commit_time_us // 1000,
        "snapshot": position.snapshot,
        "db": database,
        "sequence": f'[{last_text},"{position.lsn}"]',
        "ts_us": position.commit_time_us,
        "ts_ns": position.commit_time_us * 1000,
        "schema": table.relation.namespace,
        "table": table.relation.name,
        "txId": position.tx_id,
        "lsn": position.lsn,
        "xmin": None,
        "origin": None,
        "origin_lsn": None,
    }


def _envelope(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None, source: dict[str, Any], now_us: int) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "source": source,
        "transaction": None,
        "op": op,
        "ts_ms": now_us // 1000,
        "ts_us": now_us,
        "ts_ns": now_us * 1000,
    }


def _fill_unchanged(new: tuple[RawValue, ...], old: tuple[RawValue, ...] | None) -> tuple[RawValue, ...]:
    """Unchanged TOAST values taken from the old row when the server sent a whole one (FULL)."""
    if old is None or UNCHANGED_TOAST not in new:
        return new
    return tuple(o if n is UNCHANGED_TOAST and o is not UNCHANGED_TOAST else n for n, o in zip(new, old))


def change_events(
    table: TableSchema,
    transform: TableTransform,
    change: Insert | Update | Delete,
    source: dict[str, Any],
    now_us: int,
) -> list[Event]:
    """The events of one decoded row change."""
    if isinstance(change, Insert):
        after = transform.row(table.row(change.new))
        return [Event(transform.row(table.key_of(change.new)), _envelope("c", None, after, source, now_us), "c")]
    if isinstance(change, Update):
        new = _fill_unchanged(change.new, change.old if change.old_kind == "O" else None)
        after = transform.row(table.row(new))
        before = transform.row(table.row(change.old)) if change.old is not None else None
        new_key = transform.row(table.key_of(new))
        old_key = transform.row(table.key_of(change.old)) if change.old is not None else None
        if old_key is not None and new_key is not None and old_key != new_key:
            return [
                Event(old_key, _envelope("d", before, None, source, now_us), "d"),
                Event(old_key, None, None),
                Event(new_key, _envelope("c", None, after, source, now_us), "c"),
            ]
        return [Event(new_key, _envelope("u", before, after, source, now_us), "u")]
    before = transform.row(table.row(change.old))
    key = transform.row(table.key_of(change.old))
    return [Event(key, _envelope("d", before, None, source, now_us), "d"), Event(key, None, None)]


def read_event(table: TableSchema, transform: TableTransform, values: tuple[RawValue, ...], source: dict[str, Any], now_us: int) -> Event:
    """The ``r`` event of one snapshot row."""
    return Event(transform.row(table.key_of(values)), _envelope("r", None, transform.row(table.row(values)), source, now_us), "r")


def truncate_event(source: dict[str, Any], now_us: int) -> Event:
    """The ``t`` event of a truncated table (no key, no row images)."""
    return Event(None, _envelope("t", None, None, source, now_us), "t")
