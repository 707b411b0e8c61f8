"""The incremental resolver alone, on plain dicts: row changes per second without Kafka or Faust.

    .venv/bin/python -m bench.er_resolver [--citizens 10000] [--seed 5]

Generates the agency rows of a synthetic city in memory, trains the model on them (the batch
twin), then applies every row as a snapshot change to a :class:`CitizenResolver` over dicts and
prints the rate and the peak memory. This is the ceiling the stream processor's Faust overhead
comes on top of (``bench.er`` measures the whole path through Kafka).
"""

from __future__ import annotations

import argparse
import resource
import time
from collections import defaultdict
from datetime import date
from typing import Any

from simpul.seed.agencies import TABLES, table_rows
from simpul.seed.population import generate_population
from simpul.streams.changes import RowChange, plain_value
from simpul.streams.citizens import CitizenResolver, ResolverState, use_resolver_gc_thresholds
from simpul.streams.mapping import Mapping, load_mapping, to_canonical
from simpul.streams.matching import FellegiSunterModel
from simpul.streams.resolve import resolve

# Ids of a throwaway benchmark: any key serves.
BENCH_ID_KEY = b"bench master id key"


def city_changes(citizens: int, seed: int) -> tuple[Mapping, FellegiSunterModel, list[RowChange], date]:
    """A synthetic city's agency rows as snapshot row changes, with the mapping and the model the
    batch twin trains on them (and the day the records were read as of)."""
    mapping = load_mapping()
    today = date.today()
    rows: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(dict)
    changes = []
    for table in TABLES:
        for row, _ in table_rows(table, generate_population(citizens, seed), seed):
            values = {c: plain_value(v) for c, v in zip(table.columns, row)}
            rows[(table.source, table.table)][str(row[0])] = values
            changes.append(RowChange(table.source, table.table, str(row[0]), "r", (len(changes),), 1_700_000_000_000 + len(changes), values))

    records = []
    for mapped in mapping.tables:
        for values in rows[(mapped.source, mapped.table)].values():
            row = dict(values)
            if mapped.join:
                parent = rows[(mapped.source, mapped.join.table)].get(str(row[mapped.join.using]), {})
                row.update({f"{mapped.join.alias}.{c}": parent.get(c) for c in mapped.join.columns})
            records.append(to_canonical(row, mapped, mapping.region_prefix, today))
    return mapping, resolve(records).model, changes, today


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--citizens", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    mapping, model, changes, today = city_changes(args.citizens, args.seed)
    resolver = CitizenResolver(mapping, model, ResolverState(), BENCH_ID_KEY, today=today)
    use_resolver_gc_thresholds()
    started = time.perf_counter()
    for change in changes:
        resolver.apply(change)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{len(changes):,} row changes in {seconds:.1f} s: {len(changes) / seconds:,.0f} changes/s; peak RSS {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
