"""Avro encoding speed: Simpul's encoder against fastavro on the records Simpul writes most.

    .venv/bin/python -m bench.avro_encoding [--config simpul.yaml] [--citizens 5000] [--repeat 3]

Records:
- the resolver's outputs (golden citizens, links, agency feedback) of a synthetic city resolved in
  memory (``bench.er_resolver``'s city);
- Debezium envelopes of a PostgreSQL table of ``cdc_postgres``'s shape, made by the connector's
  own code from text rows: snapshot rows sharing one ``source`` block, and streamed inserts each
  with its own.

For each kind it prints the µs per record through :class:`ConfluentAvroEncoder` (its plain
writers where the schema allows) and through fastavro's ``schemaless_writer`` on the parsed
schema into a reused buffer, the best of ``--repeat`` passes, after checking that both give the
same bytes; and writes them to ``bench/results/avro_encoding.json``.
"""

from __future__ import annotations

import argparse
import io
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import fastavro

from bench.er_resolver import BENCH_ID_KEY, city_changes
from bench.harness import write_results
from simpul.cdc.postgres.events import SourcePosition, change_events, read_event, source_block
from simpul.cdc.postgres.pgoutput import Column, Insert, Relation
from simpul.cdc.postgres.schema import build_table_schema
from simpul.cdc.transforms import TableTransform
from simpul.config import load_config
from simpul.schemas.resolution import CITIZEN_SCHEMA, FEEDBACK_SCHEMA, LINK_SCHEMA
from simpul.schemas.wire import ConfluentAvroEncoder, frame
from simpul.streams.citizens import CitizenResolver, ResolverState
from simpul.streams.topology import feedback_scopes

TOPIC = "bench.public.bench"
SCHEMA_ID = 1
# PostgreSQL type oids of the table's columns.
INT4_OID, TEXT_OID, NUMERIC_OID, TIMESTAMP_OID, TIMESTAMPTZ_OID, JSONB_OID = 23, 25, 1700, 1114, 1184, 3802
# The type modifier of numeric(20,6); -1 is an unconstrained numeric, as in bench.cdc_postgres.
NUMERIC_20_6 = ((20 << 16) | 6) + 4


def bench_relation(numeric_typmod: int) -> Relation:
    """``bench.cdc_postgres``'s table as pgoutput describes it, its numeric column with ``numeric_typmod``."""
    return Relation(1, "public", "bench", "f", (
        Column("id", INT4_OID, -1, True), Column("string_field", TEXT_OID, -1, False),
        Column("numeric_field", NUMERIC_OID, numeric_typmod, False), Column("timestamp_field", TIMESTAMPTZ_OID, -1, False),
        Column("json_field", JSONB_OID, -1, False), Column("inserted_at", TIMESTAMP_OID, -1, False),
        Column("updated_at", TIMESTAMP_OID, -1, False),
    ))


def text_row(i: int) -> tuple[str, ...]:
    """Row ``i`` of that table as the server's text (a snapshot reads ``::text``, pgoutput sends text)."""
    return (str(i), f"{i:032x}", f"{i}.142857", "2026-12-05 09:00:00.123456+00", f'{{"n": {i}}}',
            "2026-12-05 09:00:00.123456", "2026-12-05 09:00:00.123456")


def resolver_outputs(config_path: str, citizens: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    """The values of every citizen, link and feedback output of resolving the city."""
    mapping, model, changes, today = city_changes(citizens, seed)
    resolver = CitizenResolver(mapping, model, ResolverState(), BENCH_ID_KEY, today=today,
                               feedback_scopes=feedback_scopes(load_config(config_path)))
    outputs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for change in changes:
        for output in resolver.apply(change).outputs:
            if output.value is not None:
                outputs[output.kind].append(output.value)
    return outputs


def debezium_envelopes(count: int) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The envelope schema of a table shaped like ``bench.cdc_postgres``'s (with a ``numeric(20,6)``),
    ``count`` snapshot envelopes sharing one source block, and ``count`` streamed inserts each with
    its own: built by the PostgreSQL connector's own code from text rows, as it reads them."""
    relation = bench_relation(NUMERIC_20_6)
    table = build_table_schema(TOPIC, relation)
    transform = TableTransform({})
    now_us = 1_796_452_204_501_000

    shared = source_block("bench", "bench", table, SourcePosition(1_000_000, None, now_us, None, "true"))
    snapshot = [read_event(table, transform, text_row(i), shared, now_us + 37 * i).envelope for i in range(count)]
    streamed = []
    for i in range(count):
        position = SourcePosition(1_000_000 + 120 * i, 1_000 + i // 10, now_us + i, 1_000_000 + 120 * i - 1)
        (event,) = change_events(table, transform, Insert(relation, text_row(i)), source_block("bench", "bench", table, position), now_us + 37 * i)
        streamed.append(event.envelope)
    return table.envelope, snapshot, streamed


def best_us(encode: Callable[[dict[str, Any]], bytes], records: list[dict[str, Any]], repeat: int) -> float:
    """The best of ``repeat`` passes over ``records``, in µs per record."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for record in records:
            encode(record)
        best = min(best, time.perf_counter() - started)
    return round(best / len(records) * 1e6, 2)


def fastavro_encoder(schema: dict[str, Any]) -> Callable[[dict[str, Any]], bytes]:
    """fastavro alone: the schema parsed once, one reused buffer, the wire-format header."""
    parsed = fastavro.parse_schema(schema)
    buffer = io.BytesIO()

    def encode(record: dict[str, Any]) -> bytes:
        buffer.seek(0)
        buffer.truncate()
        fastavro.schemaless_writer(buffer, parsed, record)
        return frame(SCHEMA_ID, buffer.getvalue())

    return encode


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--citizens", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    outputs = resolver_outputs(args.config, args.citizens, args.seed)
    envelope, snapshot, streamed = debezium_envelopes(20_000)
    cases = [
        ("citizen", CITIZEN_SCHEMA, outputs["citizen"], None),
        ("link", LINK_SCHEMA, outputs["link"], None),
        ("feedback", FEEDBACK_SCHEMA, outputs["feedback"], None),
        ("debezium_snapshot_row", envelope, snapshot, "source"),
        ("debezium_streamed_row", envelope, streamed, "source"),
    ]
    figures: dict[str, Any] = {"citizens": args.citizens}
    for name, schema, records, repeated in cases:
        simpul = ConfluentAvroEncoder(schema, SCHEMA_ID, repeated_field=repeated)
        plain = fastavro_encoder(schema)
        for record in records[:2_000]:
            if simpul.encode(record) != plain(record):
                raise SystemExit(f"{name}: the encoder's bytes differ from fastavro's")
        simpul_us = best_us(simpul.encode, records, args.repeat)
        fastavro_us = best_us(plain, records, args.repeat)
        figures[name] = {"records": len(records), "simpul_us": simpul_us, "fastavro_us": fastavro_us}
        print(f"{name:>24}: {len(records):>7,} records, simpul {simpul_us:6.2f} us, fastavro {fastavro_us:6.2f} us per record")
    write_results("avro_encoding", figures)


if __name__ == "__main__":
    main()
