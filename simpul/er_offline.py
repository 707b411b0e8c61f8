"""The I/O around offline entity resolution: export from the agency databases, JSONL files, truth.

The pure parts live in ``simpul.streams`` (mapping, resolve, evaluation); this module only reads
and writes. Nothing here logs or prints record values: the command line reports counts.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pymysql.cursors
import yaml
from pydantic import ValidationError

from simpul.config import ConfigError, SimpulConfig, SourceSettings
from simpul.databases import connect_mysql, connect_postgres
from simpul.progress import progress
from simpul.seed.truth import read_records as read_truth_records
from simpul.streams.mapping import CanonicalRecord, Mapping, TableMapping, align_databases, load_mapping, to_canonical
from simpul.streams.matching import FellegiSunterModel, MatchSettings
from simpul.streams.resolve import Resolution, resolve

_FETCH_ROWS = 5_000  # rows per round trip of a streaming cursor


def _select(mapping: TableMapping, quote: str) -> tuple[str, list[str]]:
    """The SELECT of the mapped columns (joined ones as ``alias.column``) and the result's column names."""

    def q(name: str) -> str:
        return f"{quote}{name}{quote}"

    def table(name: str) -> str:
        return ".".join(q(part) for part in name.split("."))

    own = sorted({mapping.key} | {c for c in mapping.fields.columns() if "." not in c})
    parts = [f"t.{q(c)}" for c in own]
    names = list(own)
    sql_from = f"{table(mapping.table)} t"
    if mapping.join:
        join = mapping.join
        for column in join.columns:
            parts.append(f"j.{q(column)}")
            names.append(f"{join.alias}.{column}")
        sql_from += f" LEFT JOIN {table(join.table)} j ON j.{q(join.using)} = t.{q(join.using)}"
    return f"SELECT {', '.join(parts)} FROM {sql_from}", names


def _count(source: SourceSettings, mapping: TableMapping) -> int:
    sql = f"SELECT count(*) FROM {mapping.table}"
    if source.kind == "postgres":
        with connect_postgres(source, "simpul-er-export") as conn:
            return int(conn.execute(sql).fetchone()[0])  # type: ignore[index]
    conn = connect_mysql(source)
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return int(cursor.fetchone()[0])
    finally:
        conn.close()


def _rows(source: SourceSettings, mapping: TableMapping, limit: int | None) -> Iterator[dict[str, Any]]:
    """The mapped columns of every row (up to ``limit``), streamed with a server-side cursor."""
    quote = '"' if source.kind == "postgres" else "`"
    sql, names = _select(mapping, quote)
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    if source.kind == "postgres":
        with connect_postgres(source, "simpul-er-export") as conn:
            with conn.cursor(name="simpul_er_export") as cursor:
                cursor.itersize = _FETCH_ROWS
                cursor.execute(sql)
                for row in cursor:
                    yield dict(zip(names, row))
        return
    conn = connect_mysql(source)
    try:
        with conn.cursor(pymysql.cursors.SSCursor) as cursor:
            cursor.execute(sql)
            while batch := cursor.fetchmany(_FETCH_ROWS):
                for row in batch:
                    yield dict(zip(names, row))
    finally:
        conn.close()


def export_records(
    config: SimpulConfig, mapping: Mapping, output: Path, limit: int | None = None
) -> dict[str, tuple[int, Counter[str]]]:
    """Write every mapped table of the configured sources as canonical records (JSONL).

    ``limit`` caps the total, shared across tables in proportion to their sizes. Returns per
    table the records written and how often each quality note occurred. MySQL tables are read
    from the databases the sources configure (:func:`align_databases`).
    """
    mapping = align_databases(mapping, config.mysql_databases)
    sources = {s.name: s for s in config.sources}
    tables = [t for t in mapping.tables if t.source in sources and t.table in sources[t.source].tables]
    if not tables:
        raise ConfigError("er export: no mapped table belongs to a configured source")
    sizes = {t.name: _count(sources[t.source], t) for t in tables}
    total = sum(sizes.values())
    share = min(1.0, limit / total) if limit and total else 1.0
    quotas = {name: math.ceil(size * share) if limit else None for name, size in sizes.items()}
    counts: dict[str, tuple[int, Counter[str]]] = {}
    today = date.today()
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as out, progress("exporting canonical records", sum(quotas[n] or sizes[n] for n in sizes), unit="records") as bar:
        for table in tables:
            notes: Counter[str] = Counter()
            written = 0
            for row in _rows(sources[table.source], table, quotas[table.name]):
                record = to_canonical(row, table, mapping.region_prefix, today)
                notes.update(record.quality_notes)
                out.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
                written += 1
                if written % 1000 == 0:
                    bar.advance(1000)
            bar.advance(written % 1000)
            counts[table.name] = (written, notes)
    return counts


def read_records(path: Path) -> list[CanonicalRecord]:
    """Canonical records from a JSONL file, one object per line."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(CanonicalRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                # The message names the line and the problem's kind, never the record's values.
                raise ConfigError(f"{path}: line {number} is not a canonical record ({type(exc).__name__})") from None
    return records


def load_model(path: Path | None) -> FellegiSunterModel | None:
    """A model from ``--settings``: estimates written by ``--estimates``, or settings to train from.

    None when no file is given (the resolver then trains default settings on the input).
    """
    if path is None:
        return None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except FileNotFoundError:
        raise ConfigError(f"{path}: settings file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML or JSON: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings")
    try:
        if "parameters" in raw:
            return FellegiSunterModel.from_dict(raw)
        return FellegiSunterModel(MatchSettings.from_dict(raw))
    except (ValidationError, ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: invalid match settings: {str(exc).splitlines()[0]}") from None


def _write_jsonl(path: Path, rows: Iterator[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_resolution(
    resolution: Resolution,
    records: list[CanonicalRecord],
    output: Path,
    reviews: Path | None = None,
    links: Path | None = None,
    estimates: Path | None = None,
) -> None:
    """Write each record's cluster, and optionally the review pairs, the links and the estimates."""
    _write_jsonl(
        output,
        (
            {"source": r.source, "table": r.table, "record_key": r.record_key, "cluster_id": resolution.clusters[r.record_id]}
            for r in sorted(records, key=lambda r: r.record_id)
        ),
    )
    if reviews:
        _write_jsonl(
            reviews,
            ({"a": p.a, "b": p.b, "probability": p.probability, "weight": p.weight, "explanation": p.explanation} for p in resolution.reviews),
        )
    if links:
        _write_jsonl(links, ({"a": k.a, "b": k.b, "rule": k.rule, "probability": k.probability} for k in resolution.links))
    if estimates:
        estimates.parent.mkdir(parents=True, exist_ok=True)
        estimates.write_text(resolution.model.to_json(), encoding="utf-8")


def read_clusters(path: Path) -> dict[str, str]:
    """Record id → cluster id from a clusters JSONL file."""
    clusters = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                clusters[f"{row['source']}:{row['table']}:{row['record_key']}"] = row["cluster_id"]
    return clusters


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """The ``(a, b)`` record-id pairs of a links or reviews JSONL file."""
    with path.open(encoding="utf-8") as handle:
        return [(row["a"], row["b"]) for row in (json.loads(line) for line in handle if line.strip())]


def read_truth(truth_dir: Path) -> dict[str, int]:
    """Record id → person id from the seed's truth files (seed and live)."""
    truth = {f"{r.source}:{r.table}:{r.record_key}": r.person_id for r in read_truth_records(truth_dir)}
    if not truth:
        raise ConfigError(f"{truth_dir}: no truth records found (run `simpul seed` first)")
    return truth


def train_estimates(config: SimpulConfig, target: Path, limit: int | None = None, settings: Path | None = None) -> tuple[Resolution, int]:
    """Export the agency databases (up to ``limit`` records), resolve them, and write the estimated
    model to ``target`` for the stream processors. Returns the resolution and the record count."""
    records_file = target.parent / "train-records.jsonl"
    export_records(config, load_mapping(config.mapping_path), records_file, limit)
    records = read_records(records_file)
    resolution = resolve(records, model=load_model(settings))
    write_resolution(resolution, records, target.parent / "train-clusters.jsonl", estimates=target)
    return resolution, len(records)
