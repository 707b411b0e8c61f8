"""The master citizen index sink: the resolver's four topics into PostgreSQL, exactly once in effect.

Each batch is one transaction holding the rows it produced and the offsets it consumed (see
:mod:`simpul.sinks.offsets`), so ``kill -9`` at any moment neither loses nor doubles a change.
Within a batch the messages are folded per key in order: the tables get each key's final state
(an upsert, or a delete for a tombstone), and ``citizen_history`` gets one row per message that
really changed a citizen, so a message delivered twice leaves no trace the second time.

Citizen values are read with the schema they were written with (the registry id in each
message), so a newer compatible version of the Citizen schema is applied as it arrives: known
fields go to their columns, added ones to ``attributes``, removed ones become null.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb, set_json_dumps

from simpul.config import SimpulConfig
from simpul.metrics import LabelledChildren
from simpul.schemas.resolution import CITIZEN_SCHEMA
from simpul.schemas.wire import ConfluentAvroDecoder, WireFormatError
from simpul.sinks import metrics
from simpul.sinks.master_schema import GOLDEN_COLUMNS, OFFSETS, SCHEMA, ensure_schema
from simpul.sinks.offsets import Partition, unconsumed
from simpul.sinks.runner import SinkMessage, WriteResult, utc_from_ms

log = logging.getLogger(__name__)

SINK = "master_index"
CITIZEN, LINK, REVIEW, QUALITY = "citizen", "link", "review", "quality"

_CITIZEN_FIELDS = {f["name"] for f in CITIZEN_SCHEMA["fields"]}
_CITIZEN_COLUMNS = ["master_id", "anchor_record_id", "members", *GOLDEN_COLUMNS, "lineage", "attributes"]
# What a history row compares (``version`` and the timestamps change with every write).
_TRACKED = ["anchor_record_id", "members", *GOLDEN_COLUMNS, "lineage", "attributes"]


@dataclass(frozen=True)
class Decoded:
    """One message read: its kind (which topic), key, value (None: tombstone) and position."""

    kind: str
    key: str
    value: dict[str, Any] | None
    message: SinkMessage


def citizen_row(value: dict[str, Any]) -> dict[str, Any]:
    """A Citizen message as the ``citizen`` table's columns (JSON-safe: dates stay ISO text)."""
    row = {name: value.get(name) for name in _CITIZEN_COLUMNS if name != "attributes"}
    row["titles"] = list(value.get("titles") or [])
    row["lineage"] = dict(value.get("lineage") or {})
    row["attributes"] = {k: _json_safe(v) for k, v in value.items() if k not in _CITIZEN_FIELDS}
    row["updated_ms"] = int(value.get("updated_ms") or 0)
    return row


def citizen_change(old: dict[str, Any] | None, new: dict[str, Any] | None) -> tuple[str, dict[str, Any]] | None:
    """The history entry for ``old`` becoming ``new``: (``created``/``updated``/``removed``, what
    changed), or None when nothing tracked changed. Members are reported as added and removed."""
    if old is None and new is None:
        return None
    if new is None:
        assert old is not None
        return "removed", {"members": {"added": [], "removed": sorted(old["members"])}}
    changed: dict[str, Any] = {}
    for name in _TRACKED:
        before = old.get(name) if old is not None else None
        after = new.get(name)
        if name == "members":
            added = sorted(set(after or ()) - set(before or ()))
            removed = sorted(set(before or ()) - set(after or ()))
            if added or removed:
                changed[name] = {"added": added, "removed": removed}
        elif before != after and not (old is None and after in (None, [], {})):
            changed[name] = {"old": before, "new": after}
    if old is None:
        return "created", changed
    return ("updated", changed) if changed else None


class MasterIndexSink:
    """The master index database as a :class:`~simpul.sinks.runner.SinkTarget`."""

    name = SINK

    def __init__(self, config: SimpulConfig, decoder: ConfluentAvroDecoder) -> None:
        p = config.processors
        self.kinds = {p.citizens_topic: CITIZEN, p.links_topic: LINK, p.reviews_topic: REVIEW, p.quality_topic: QUALITY}
        self.decoder = decoder
        self._messages = LabelledChildren(metrics.MESSAGES)
        self._dsn = config.sinks.master_index.dsn()
        self.conn = self._connect()
        ensure_schema(self.conn)
        self._count_open()

    @property
    def topics(self) -> list[str]:
        """The topics this sink consumes."""
        return list(self.kinds)

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._dsn, application_name="simpul-sink-master-index")
        # The standard library's encoder took 8% of the sink's time on lineage, history and
        # explanations; orjson writes the same JSON (PostgreSQL stores jsonb parsed either way).
        set_json_dumps(orjson.dumps, conn)
        return conn

    def reconnect(self) -> None:
        """Reopen the connection (after a failed write)."""
        self.conn.close()
        self.conn = self._connect()

    def stored_offsets(self, consumer: str) -> dict[Partition, int]:
        """The next offsets per partition, as committed with the rows."""
        with self.conn.transaction(), self.conn.cursor() as cursor:
            return OFFSETS.load(cursor, consumer)

    def write(self, consumer: str, messages: Sequence[SinkMessage]) -> WriteResult:
        """Apply the messages not yet consumed and save their offsets, in one transaction."""
        result = WriteResult()
        with self.conn.transaction(), self.conn.cursor() as cursor:
            fresh, offsets = unconsumed(messages, OFFSETS.load(cursor, consumer, lock=True))
            result.skipped = len(messages) - len(fresh)
            decoded, dead = self._decode(fresh)
            by_kind: dict[str, list[Decoded]] = {CITIZEN: [], LINK: [], REVIEW: [], QUALITY: []}
            for item in decoded:
                by_kind[item.kind].append(item)
            now = datetime.now(UTC)
            citizens_delta = self._write_citizens(cursor, by_kind[CITIZEN], now)
            self._write_links(cursor, by_kind[LINK], now)
            reviews_delta = self._write_reviews(cursor, by_kind[REVIEW], now)
            quality_delta = self._write_quality(cursor, by_kind[QUALITY], now)
            if dead:
                cursor.executemany(
                    f"INSERT INTO {SCHEMA}.dead_letter (consumer, kafka_topic, kafka_partition, kafka_offset, reason) VALUES (%s, %s, %s, %s, %s)",
                    [(consumer, m.topic, m.partition, m.offset, reason) for m, reason in dead],
                )
            OFFSETS.save(cursor, consumer, offsets)
        committed_s = time.time()
        result.applied = len(decoded)
        result.latencies_s = [max(0.0, committed_s - d.message.source_ts_ms / 1000) for d in by_kind[CITIZEN] if d.message.source_ts_ms]
        self._count(citizens_delta, reviews_delta, quality_delta)
        for item in decoded:
            self._messages(SINK, item.message.topic, "upsert" if item.value is not None else "tombstone").inc()
        for _, reason in dead:
            metrics.DEAD_LETTERS.labels(SINK, reason.split(":")[0]).inc()
        return result

    # --- per table ------------------------------------------------------------------------------

    def _decode(self, messages: Sequence[SinkMessage]) -> tuple[list[Decoded], list[tuple[SinkMessage, str]]]:
        decoded, dead = [], []
        for m in messages:
            kind = self.kinds.get(m.topic)
            try:
                if kind is None:
                    raise ValueError(f"topic {m.topic} is not one of this sink's")
                if m.key is None:
                    raise ValueError("message without a key on a compacted topic")
                key = self.decoder.decode(m.key)
                value = self.decoder.decode(m.value) if m.value is not None else None
                if not isinstance(key, str) or (value is not None and not isinstance(value, dict)):
                    raise ValueError("key is not a string or value is not a record")
            except (WireFormatError, ValueError, EOFError, KeyError, TypeError) as exc:
                # The reason names the error only: a decoder's message never quotes values.
                dead.append((m, f"{type(exc).__name__}: {exc}"[:300]))
                continue
            decoded.append(Decoded(kind, key, value, m))
        return decoded, dead

    def _write_citizens(self, cursor: psycopg.Cursor[Any], items: list[Decoded], now: datetime) -> int:
        if not items:
            return 0
        keys = sorted({d.key for d in items})
        cursor.execute(
            f"SELECT {', '.join(_CITIZEN_COLUMNS)}, source_updated_at, version FROM {SCHEMA}.citizen WHERE master_id = ANY(%s)", (keys,)
        )
        names = [c.name for c in cursor.description or ()]
        rows = cursor.fetchall()
        stored = {row[0]: _from_db(dict(zip(names, row))) for row in rows}
        current: dict[str, dict[str, Any] | None] = dict(stored)
        versions = {row[0]: row[-1] for row in rows}
        history = []
        changed_keys = set()
        for d in items:
            old = current.get(d.key)
            new = citizen_row(d.value) if d.value is not None else None
            change = citizen_change(old, new)
            if change is not None:
                versions[d.key] = versions.get(d.key, 0) + 1
                changed_keys.add(d.key)
                kind, changed = change
                m = d.message
                source_at = utc_from_ms(m.source_ts_ms) if m.source_ts_ms else (utc_from_ms(new["updated_ms"]) if new else None)
                history.append({"master_id": d.key, "version": versions[d.key], "change": kind, "changed": changed, "kafka_topic": m.topic,
                                "kafka_partition": m.partition, "kafka_offset": m.offset, "source_changed_at": source_at})
            current[d.key] = new
        # A message that only moves the source time still updates the row (not the history).
        upserts = [(k, row) for k, row in current.items() if row is not None and (k in changed_keys or stored.get(k) != row)]
        deletes = [k for k, row in current.items() if row is None and k in stored]
        if upserts:
            _upsert(cursor, "citizen", "master_id", [
                {**_citizen_columns(row), "version": versions[k], "source_updated_at": utc_from_ms(row["updated_ms"]), "indexed_at": now}
                for k, row in upserts
            ])
        if deletes:
            cursor.execute(f"DELETE FROM {SCHEMA}.citizen WHERE master_id = ANY(%s)", (deletes,))
        if history:
            _insert(cursor, "citizen_history", history)
        return sum(1 for k, row in current.items() if row is not None and k not in stored) - len(deletes)

    def _write_links(self, cursor: psycopg.Cursor[Any], items: list[Decoded], now: datetime) -> None:
        final = _last_per_key(items)
        upserts = [v for v in final.values() if v is not None]
        deletes = [k for k, v in final.items() if v is None]
        if upserts:
            _upsert(cursor, "record_link", "record_id", [
                {"record_id": v["record_id"], "source": v["source"], "table_name": v["table"], "record_key": v["record_key"],
                 "master_id": v["master_id"], "rule": v["rule"], "matched_record_id": v.get("matched_record_id"),
                 "probability": v.get("probability"), "weight": v.get("weight"), "contributions": v.get("contributions") or {},
                 "source_updated_at": utc_from_ms(v["updated_ms"]), "indexed_at": now}
                for v in upserts
            ])
        if deletes:
            cursor.execute(f"DELETE FROM {SCHEMA}.record_link WHERE record_id = ANY(%s)", (deletes,))

    def _write_reviews(self, cursor: psycopg.Cursor[Any], items: list[Decoded], now: datetime) -> int:
        final = _last_per_key(items)
        if not final:
            return 0
        cursor.execute(f"SELECT pair_key FROM {SCHEMA}.review_item WHERE pair_key = ANY(%s)", (list(final),))
        existed = {row[0] for row in cursor.fetchall()}
        upserts = [(k, v) for k, v in final.items() if v is not None]
        deletes = [k for k, v in final.items() if v is None and k in existed]
        if upserts:
            # A pair's records never change; only its citizens, score and explanation do.
            _upsert(cursor, "review_item", "pair_key", [
                {"pair_key": k, "record_a": v["record_a"], "record_b": v["record_b"], "master_a": v["master_a"], "master_b": v["master_b"],
                 "probability": v["probability"], "weight": v["weight"], "contributions": v.get("contributions") or {},
                 "levels": v.get("levels") or {}, "indexed_at": now}
                for k, v in upserts
            ], unchanged=("record_a", "record_b"))
        if deletes:
            cursor.execute(f"DELETE FROM {SCHEMA}.review_item WHERE pair_key = ANY(%s)", (deletes,))
        return sum(1 for k, _ in upserts if k not in existed) - len(deletes)

    def _write_quality(self, cursor: psycopg.Cursor[Any], items: list[Decoded], now: datetime) -> dict[str, int]:
        final = _last_per_key(items)
        if not final:
            return {}
        cursor.execute(f"SELECT issue_key, issue FROM {SCHEMA}.quality_issue WHERE issue_key = ANY(%s)", (list(final),))
        existed = dict(cursor.fetchall())
        upserts = [(k, v) for k, v in final.items() if v is not None]
        deletes = [k for k, v in final.items() if v is None and k in existed]
        if upserts:
            _upsert(cursor, "quality_issue", "issue_key", [
                {"issue_key": k, "issue": v["issue"], "master_id": v.get("master_id"), "record_ids": list(v["record_ids"]),
                 "detected_at": utc_from_ms(v["detected_ms"]), "indexed_at": now}
                for k, v in upserts
            ])
        if deletes:
            cursor.execute(f"DELETE FROM {SCHEMA}.quality_issue WHERE issue_key = ANY(%s)", (deletes,))
        delta: dict[str, int] = {}
        for k, v in upserts:
            if k not in existed:
                delta[v["issue"]] = delta.get(v["issue"], 0) + 1
        for k in deletes:
            delta[existed[k]] = delta.get(existed[k], 0) - 1
        return delta

    # --- gauges ---------------------------------------------------------------------------------

    def _count_open(self) -> None:
        """Start the gauges from the database; batches then move them by what they changed."""
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {SCHEMA}.citizen")
            self.citizens = int(cursor.fetchone()[0])  # type: ignore[index]
            cursor.execute(f"SELECT count(*) FROM {SCHEMA}.review_item")
            self.reviews = int(cursor.fetchone()[0])  # type: ignore[index]
            cursor.execute(f"SELECT issue, count(*) FROM {SCHEMA}.quality_issue GROUP BY issue")
            self.issues = {issue: int(n) for issue, n in cursor.fetchall()}
        self._count(0, 0, {})

    def _count(self, citizens: int, reviews: int, issues: dict[str, int]) -> None:
        self.citizens += citizens
        self.reviews += reviews
        for issue, n in issues.items():
            self.issues[issue] = self.issues.get(issue, 0) + n
        metrics.CITIZENS.set(self.citizens)
        metrics.REVIEW_ITEMS.set(self.reviews)
        for issue, n in self.issues.items():
            metrics.QUALITY_ISSUES.labels(issue).set(n)


def _last_per_key(items: list[Decoded]) -> dict[str, dict[str, Any] | None]:
    final: dict[str, dict[str, Any] | None] = {}
    for d in items:
        final[d.key] = d.value
    return final


def _citizen_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in _CITIZEN_COLUMNS}


def _upsert(cursor: psycopg.Cursor[Any], table: str, key: str, rows: list[dict[str, Any]], unchanged: Sequence[str] = ()) -> None:
    """Insert ``rows`` (column -> value, every row the same columns, one per ``key``) into
    ``table``, updating those whose ``key`` is there already (but not their ``unchanged`` columns).

    One statement for the whole batch, the rows passed as one JSON array and typed by the table's
    own row type (``jsonb_populate_recordset``): psycopg's pipelined ``executemany`` handled each
    row in Python, a third of the sink's time at 500 changes/s (``bench.e2e``).
    """
    columns = list(rows[0])
    listed = ", ".join(columns)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c != key and c not in unchanged)
    cursor.execute(
        f"INSERT INTO {SCHEMA}.{table} ({listed}) SELECT {listed} FROM jsonb_populate_recordset(NULL::{SCHEMA}.{table}, %s) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}",
        (Jsonb(rows),),
    )


def _insert(cursor: psycopg.Cursor[Any], table: str, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (column -> value, every row the same columns) to ``table`` in one statement;
    the columns not given take their defaults."""
    listed = ", ".join(rows[0])
    cursor.execute(
        f"INSERT INTO {SCHEMA}.{table} ({listed}) SELECT {listed} FROM jsonb_populate_recordset(NULL::{SCHEMA}.{table}, %s)",
        (Jsonb(rows),),
    )


def _from_db(row: dict[str, Any]) -> dict[str, Any]:
    """A stored citizen row in the same JSON-safe form as :func:`citizen_row`, for comparing."""
    out = {name: row.get(name) for name in _CITIZEN_COLUMNS}
    out["members"] = list(out["members"] or [])
    out["titles"] = list(out["titles"] or [])
    if isinstance(out["birth_date"], date):
        out["birth_date"] = out["birth_date"].isoformat()
    out["updated_ms"] = round(row["source_updated_at"].timestamp() * 1000)
    return out


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
