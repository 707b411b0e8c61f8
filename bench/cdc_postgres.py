"""Benchmark of the PostgreSQL connector on the table of the published Debezium/Sequin comparison.

    .venv/bin/python -m bench.cdc_postgres [--config simpul.yaml] [--rows 1000000] [--rate 10000] [--seconds 30] [--workers 2]

Figures (printed, and written to ``bench/results/cdc_postgres.json``):
- ``snapshot_rows_per_s``: initial snapshot of ``--rows`` rows into acknowledged Kafka (the
  connector's own measure, from the snapshot's start to the last acknowledgement);
- ``stream_max_events_per_s``: pgbench writes a mixed insert/update/delete load (transactions of
  40 row operations) as fast as it can for ``--seconds``; events published divided by the time
  until the connector has caught up; ``stream_catch_up_events_per_s``: the connector's own rate
  once pgbench has stopped (the events still to come, over the time they took: no database load
  then; None when it had kept up);
- ``stream_p50_ms``/``stream_p99_ms``: commit to Kafka append for every 10th event of a steady
  ``--rate`` row operations/s mixed load (pgbench ``-R`` with transactions of 10 operations:
  single-row transactions at 10,000/s exceed what PostgreSQL commits with fsync on 2 cores);
- ``connector_rss_mb_max``: the connector's largest resident memory while it streams one
  transaction of ``--rows`` inserted rows, its encoding workers' (``--workers``) included.
The database, Kafka and the connector share this machine. The run's database and topics are
dropped afterwards.
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

from bench.harness import TIMED_SAMPLE, ConnectorProcess, TopicWatch, catch_up_rate, catch_up_text, delete_topics_and_groups, large_transaction, percentile, write_results
from simpul.config import CaptureSettings, load_config, load_env_file
from simpul.progress import progress

TABLE = """CREATE TABLE bench (
    id serial PRIMARY KEY,
    string_field text,
    numeric_field numeric,
    timestamp_field timestamptz,
    json_field jsonb,
    inserted_at timestamp DEFAULT now(),
    updated_at timestamp DEFAULT now()
); ALTER TABLE bench REPLICA IDENTITY FULL"""
ROWS = "INSERT INTO bench (string_field, numeric_field, timestamp_field, json_field) SELECT md5(g::text), g / 7.0, now(), jsonb_build_object('n', g) FROM generate_series(1, {n}) g"
# A mixed transaction of ``ops`` row operations: half inserts, 30% updates, 20% deletes.
MIXED = """\\set id random(1, {maxid})
BEGIN;
INSERT INTO bench (string_field, numeric_field, timestamp_field, json_field) SELECT md5(random()::text), random() * 1000, now(), '{{"a": 1}}' FROM generate_series(1, {inserts});
UPDATE bench SET string_field = md5(random()::text), updated_at = now() WHERE id BETWEEN :id AND :id + {updates} - 1;
DELETE FROM bench WHERE id BETWEEN :id + {updates} AND :id + {updates} + {deletes} - 1;
END;
"""


def mixed_script(directory: Path, ops: int, maxid: int) -> Path:
    """A pgbench script whose every transaction changes ``ops`` rows (mostly existing ones)."""
    path = directory / f"mixed-{ops}.sql"
    path.write_text(MIXED.format(maxid=maxid, inserts=ops // 2, updates=ops * 3 // 10, deletes=ops - ops // 2 - ops * 3 // 10))
    return path


def pgbench() -> str:
    """The pgbench of the installed PostgreSQL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    if not found:
        raise SystemExit("pgbench is missing: apt-get install postgresql-contrib")
    return found[-1]


def run_pgbench(dsn: str, script: Path, seconds: int, rate: int | None) -> int:
    """Run the mixed load; the number of transactions pgbench committed."""
    command = [pgbench(), "-n", "-f", str(script), "-c", "8", "-j", "2", "-T", str(seconds), dsn]
    if rate:
        command[-1:-1] = ["-R", str(rate)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    for line in result.stdout.splitlines():
        if line.startswith("number of transactions actually processed"):
            return int(line.split(":")[1].split("/")[0])
    raise SystemExit(f"pgbench printed no count:\n{result.stdout}\n{result.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2, help="the connector's encoding workers (capture.workers)")
    args = parser.parse_args()

    base = load_config(args.config)
    load_env_file(base.home / "stack.env")
    template = next(s for s in base.sources if s.kind == "postgres")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin_dsn = template.dsn()
    dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{name}"
    os.environ[f"SIMPUL_{name.upper()}_DSN"] = dsn
    source = template.model_copy(update={
        "name": name, "topic_prefix": name, "database": name, "dsn_env": f"SIMPUL_{name.upper()}_DSN",
        "tables": ["public.bench"], "capture": CaptureSettings(max_batch_events=20_000, workers=args.workers),
    })
    config = base.model_copy(update={"sources": [source]})
    topic = f"{name}.public.bench"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    connector: ConnectorProcess | None = None
    watch: TopicWatch | None = None
    figures: dict[str, object] = {"server": "PostgreSQL 15 (pgoutput), Kafka 4.1 single broker, all on this 2-core machine", "connector_workers": args.workers}
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(TABLE)
            print(f"loading {args.rows:,} rows ...", flush=True)
            conn.execute(ROWS.format(n=args.rows))
        watch = TopicWatch(config, [topic])

        connector = ConnectorProcess(config, source)
        match = connector.wait_for_log(r"snapshot of (\d+) rows done in ([\d.]+)s", 1800)
        snapshot_s = float(match.group(2))
        figures["snapshot_rows"] = int(match.group(1))
        figures["snapshot_rows_per_s"] = round(int(match.group(1)) / snapshot_s)
        figures["snapshot_rss_mb_max"] = round(connector.rss_max_mb)
        print(f"snapshot: {figures['snapshot_rows']:,} rows in {snapshot_s:.1f}s = {figures['snapshot_rows_per_s']:,} rows/s", flush=True)
        connector.wait_for_log(r"streaming from slot", 60)
        watch.wait_for(args.rows, 600)

        scripts = Path(tempfile.mkdtemp())
        before = watch.count
        started = time.monotonic()
        print(f"streaming: pgbench unthrottled for {args.seconds}s ...", flush=True)
        committed = 40 * run_pgbench(dsn, mixed_script(scripts, 40, args.rows), args.seconds, None)
        writers_done, behind = time.monotonic(), watch.count
        with progress("  catching up", None, unit="events") as tracker:
            watch.wait_quiet(progress=tracker)
        elapsed = watch.last_arrival - started
        streamed = watch.count - before
        figures["stream_max_events_per_s"] = round(streamed / elapsed)
        figures["stream_catch_up_events_per_s"] = catch_up_rate(watch, writers_done, behind)
        figures["stream_max_source_ops_per_s"] = round(committed / args.seconds)
        print(f"streaming: {streamed:,} events in {elapsed:.1f}s = {figures['stream_max_events_per_s']:,} events/s "
              f"(pgbench committed {committed / args.seconds:,.0f} row operations/s; the connector alone after it: "
              f"{catch_up_text(figures['stream_catch_up_events_per_s'])})", flush=True)

        print(f"latency: pgbench at {args.rate:,} operations/s for {args.seconds}s ...", flush=True)
        watch.timed = True
        done = 10 * run_pgbench(dsn, mixed_script(scripts, 10, args.rows), args.seconds, args.rate // 10)
        watch.wait_quiet()
        watch.timed = False
        latencies = watch.latencies_ms
        figures["stream_rate_ops_per_s"] = round(done / args.seconds)
        figures["stream_p50_ms"] = round(percentile(latencies, 50), 1)
        figures["stream_p99_ms"] = round(percentile(latencies, 99), 1)
        figures["stream_latency_events"] = len(latencies)
        figures["stream_latency_sample"] = f"1 in {TIMED_SAMPLE} events"
        print(f"latency: {done / args.seconds:,.0f} ops/s achieved, p50 {figures['stream_p50_ms']} ms, p99 {figures['stream_p99_ms']} ms over {len(latencies):,} events (1 in {TIMED_SAMPLE})", flush=True)

        def insert_rows() -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(ROWS.format(n=args.rows))

        figures.update(large_transaction(watch, connector, args.rows, insert_rows))
        write_results("cdc_postgres", figures)
    finally:
        if connector is not None:
            connector.stop()
        if watch is not None:
            watch.close()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active", (source.slot_name,))
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        delete_topics_and_groups(config, name)


if __name__ == "__main__":
    main()
