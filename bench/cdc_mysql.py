"""Benchmark of the MySQL/MariaDB connector on the table of the published Debezium/Sequin comparison.

    .venv/bin/python -m bench.cdc_mysql [--config simpul.yaml] [--rows 1000000] [--rate 10000] [--seconds 30] [--writers 4] [--workers 2]

Figures (printed, and written to ``bench/results/cdc_mysql.json``):
- ``snapshot_rows_per_s``: initial snapshot of ``--rows`` rows into acknowledged Kafka, timed from
  the connector's start (process launch) to the broker append of the last snapshot event seen by
  the topic watcher. The connector's own log line (``snapshot done in N s``) has no row count and
  comes before the final flush to Kafka, so it is only kept as the extra ``snapshot_connector_log_s``;
- ``stream_max_events_per_s``: ``--writers`` processes, each with its own connection, write a mixed
  insert/update/delete load (transactions of 40 row operations: 50% inserts, 30% updates, 20%
  deletes) as fast as they can for ``--seconds``; events published divided by the time until the
  connector has caught up (no event for 3 s); ``stream_catch_up_events_per_s``: the connector's
  own rate once the writers have stopped (the events still to come, over the time they took: no
  database load then; None when it had kept up);
- ``stream_rate_ops_per_s``, ``stream_p50_ms``/``stream_p99_ms``: the same writers paced to a
  steady ``--rate`` row operations/s in transactions of 10 operations, for ``--seconds``. Binlog
  timestamps are whole seconds, so ``source.ts_ms`` cannot time a commit: latency is the broker's
  LogAppendTime of a row's insert event minus the wall-clock time its writer's ``COMMIT`` returned,
  for every row inserted in this phase (rows found by their ids: the transaction's
  ``LAST_INSERT_ID()`` and row count; events by their Avro key ``{id}``). Updates and deletes are
  part of the load but not of the latency sample, as their rows carry no commit time of their own;
- ``stream_half_rate_ops_per_s``, ``stream_half_p50_ms``/``stream_half_p99_ms``: the same at half
  ``--rate`` (the issue asks MySQL for at least half of the PostgreSQL connector's figures);
- ``connector_rss_mb_max``: the connector's largest resident memory while it streams one
  transaction of ``--rows`` inserted rows, its encoding workers' (``--workers``) included;
- ``sigterm_stop_s``: how long the streaming connector takes to stop cleanly on SIGTERM.
The database (a database of its own on the MariaDB of the config's mysql source, dropped
afterwards, with its topics), Kafka and the connector share this machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pymysql
from pymysql.constants import CLIENT

from bench.harness import ConnectorProcess, TopicWatch, catch_up_rate, catch_up_text, delete_topics_and_groups, large_transaction, percentile, write_results
from simpul.config import CaptureSettings, load_config, load_env_file
from simpul.databases import mysql_params
from simpul.progress import progress

TABLE = """CREATE TABLE bench (
  id INT AUTO_INCREMENT PRIMARY KEY,
  string_field TEXT,
  numeric_field DECIMAL(20,6),
  timestamp_field TIMESTAMP(6) NULL,
  json_field JSON,
  inserted_at DATETIME(6) DEFAULT NOW(6),
  updated_at DATETIME(6) DEFAULT NOW(6)
) ENGINE=InnoDB"""
COLUMNS = "(string_field, numeric_field, timestamp_field, json_field)"
# MariaDB's sequence engine gives the rows in one statement (one transaction).
ROWS = f"INSERT INTO bench {COLUMNS} SELECT MD5(seq), seq / 7, NOW(6), JSON_OBJECT('n', seq) FROM seq_1_to_{{n}}"
ROW = "(MD5(RAND()), RAND() * 1000, NOW(6), JSON_OBJECT('a', 1))"
# One round trip per transaction (multi-statement): the writer's Python stays out of the way.
MIXED = ("START TRANSACTION; INSERT INTO bench " + COLUMNS + " VALUES {values}; "
         "UPDATE bench SET string_field = MD5(RAND()), updated_at = NOW(6) WHERE id BETWEEN %d AND %d; "
         "DELETE FROM bench WHERE id BETWEEN %d AND %d; COMMIT")
# Deadlock, lock wait timeout: the transaction is retried with other rows.
_RETRY = {1205, 1213}


def write_load(params: dict[str, Any], ops: int, seconds: float, tx_per_s: float | None, maxid: int, start_at: float, seed: int) -> dict[str, Any]:
    """One writer process: mixed transactions of ``ops`` row operations from ``start_at`` (epoch s)
    for ``seconds``, paced to ``tx_per_s`` if given; what it committed.

    Returns the transactions and row operations (affected rows) committed and, per transaction,
    ``(first inserted id, inserted rows, commit time in epoch ms)``.
    """
    inserts, updates = ops // 2, ops * 3 // 10
    deletes = ops - inserts - updates
    sql = MIXED.format(values=", ".join([ROW] * inserts))
    conn = pymysql.connect(**{**params, "autocommit": True, "client_flag": CLIENT.MULTI_STATEMENTS})
    cursor = conn.cursor()
    # Row-based binlog: READ COMMITTED is safe and takes no gap locks between the writers.
    cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    rng = random.Random(seed)
    interval = 1 / tx_per_s if tx_per_s else 0.0
    transactions = rows = retries = 0
    inserted: list[tuple[int, int, float]] = []
    time.sleep(max(0.0, start_at - time.time()))
    end = start_at + seconds
    next_at = start_at
    try:
        while True:
            now = time.time()
            if now >= end:
                break
            if interval:
                if next_at > now:
                    time.sleep(next_at - now)
                next_at += interval
            first = rng.randint(1, max(1, maxid - ops))
            try:
                cursor.execute(sql % (first, first + updates - 1, first + updates, first + updates + deletes - 1))
                cursor.nextset()
                insert_id, inserted_rows = cursor.lastrowid, cursor.rowcount
                cursor.nextset()
                changed = cursor.rowcount
                cursor.nextset()
                changed += cursor.rowcount
                cursor.nextset()  # COMMIT
                committed_ms = time.time() * 1000
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in _RETRY:
                    raise
                conn.rollback()
                retries += 1
                continue
            transactions += 1
            rows += inserted_rows + changed
            inserted.append((insert_id, inserted_rows, committed_ms))
    finally:
        conn.close()
    return {"transactions": transactions, "rows": rows, "retries": retries, "inserted": inserted}


def run_writers(pool: Any, params: dict[str, Any], writers: int, ops: int, seconds: float, rate: int | None,
                maxid: int, watch: TopicWatch, label: str) -> tuple[float, dict[str, Any]]:
    """Run the load on every writer process, with progress; (its monotonic start, the totals)."""
    start_at = time.time() + 1.0
    started = time.monotonic() + (start_at - time.time())
    tx_per_s = rate / ops / writers if rate else None
    pending = pool.starmap_async(write_load, [(params, ops, seconds, tx_per_s, maxid, start_at, n) for n in range(writers)])
    last = watch.count
    with progress(label, None, unit="events") as tracker:
        while not pending.ready():
            pending.wait(0.2)
            tracker.advance(watch.count - last)
            last = watch.count
    results = pending.get()
    totals = {k: sum(r[k] for r in results) for k in ("transactions", "rows", "retries")}
    totals["inserted"] = [item for r in results for item in r["inserted"]]
    return started, totals


def _database_dsn(dsn: str, database: str) -> str:
    url = urlsplit(dsn)
    return urlunsplit(url._replace(path=f"/{database}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=10_000, help="row operations/s of the latency phase")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--writers", type=int, default=4, help="writer processes, each with its own connection")
    parser.add_argument("--workers", type=int, default=2, help="the connector's encoding workers (capture.workers)")
    args = parser.parse_args()

    base = load_config(args.config)
    load_env_file(base.home / "stack.env")
    template = next(s for s in base.sources if s.kind == "mysql")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    dsn = _database_dsn(template.dsn(), name)
    os.environ[f"SIMPUL_{name.upper()}_DSN"] = dsn
    source = template.model_copy(update={
        "name": name, "topic_prefix": name, "database": name, "dsn_env": f"SIMPUL_{name.upper()}_DSN",
        "tables": [f"{name}.bench"], "capture": CaptureSettings(max_batch_events=20_000, workers=args.workers),
    })
    config = base.model_copy(update={"sources": [source]})
    topic = f"{name}.{name}.bench"
    params = mysql_params(dsn)
    admin = pymysql.connect(**{**params, "database": None, "autocommit": True})
    with admin.cursor() as cursor:
        cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@sync_binlog")
        version, flush_log, sync_binlog = cursor.fetchone()
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    connector: ConnectorProcess | None = None
    watch: TopicWatch | None = None
    # Spawned, not forked: the parent runs librdkafka threads.
    pool = multiprocessing.get_context("spawn").Pool(args.writers)
    figures: dict[str, object] = {
        "server": f"MariaDB {version.split('-')[0]} (ROW binlog, innodb_flush_log_at_trx_commit={flush_log}, sync_binlog={sync_binlog}), "
                  f"Kafka {base.stack.kafka.version} single broker, all on this {os.cpu_count()}-core machine",
        "connector_workers": args.workers,
    }
    try:
        db = pymysql.connect(**{**params, "autocommit": True})
        with db.cursor() as cursor:
            cursor.execute(TABLE)
            print(f"loading {args.rows:,} rows ...", flush=True)
            cursor.execute(ROWS.format(n=args.rows))
        watch = TopicWatch(config, [topic])

        started = time.monotonic()
        connector = ConnectorProcess(config, source)
        with progress("  snapshot into Kafka", args.rows, unit="events") as tracker:
            watch.wait_for(args.rows, 1800, tracker)
        snapshot_s = watch.last_arrival - started
        figures["snapshot_rows"] = watch.count
        figures["snapshot_rows_per_s"] = round(watch.count / snapshot_s)
        logged = connector.wait_for_log(r"snapshot done in ([\d.]+) s", 60)
        figures["snapshot_connector_log_s"] = float(logged.group(1))
        figures["snapshot_rss_mb_max"] = round(connector.rss_max_mb)
        print(f"snapshot: {watch.count:,} rows in {snapshot_s:.1f}s from connector start = {figures['snapshot_rows_per_s']:,} rows/s "
              f"(connector log: read in {logged.group(1)} s)", flush=True)
        connector.wait_for_log(r"streaming from ", 60)

        with db.cursor() as cursor:
            cursor.execute("SELECT MAX(id) FROM bench")
            (maxid,) = cursor.fetchone()
        before = watch.count
        print(f"streaming: {args.writers} writers unthrottled for {args.seconds}s (transactions of 40 row operations) ...", flush=True)
        started, load = run_writers(pool, params, args.writers, 40, args.seconds, None, maxid, watch, "  writing")
        writers_done, behind = time.monotonic(), watch.count
        with progress("  catching up", load["rows"], unit="events") as tracker:
            tracker.advance(watch.count - before)
            watch.wait_quiet(progress=tracker)
        elapsed = watch.last_arrival - started
        streamed = watch.count - before
        figures["stream_max_events_per_s"] = round(streamed / elapsed)
        figures["stream_catch_up_events_per_s"] = catch_up_rate(watch, writers_done, behind)
        figures["stream_max_events"] = streamed
        figures["stream_max_source_ops_per_s"] = round(load["rows"] / args.seconds)
        print(f"streaming: {streamed:,} events in {elapsed:.1f}s = {figures['stream_max_events_per_s']:,} events/s "
              f"(writers committed {load['rows'] / args.seconds:,.0f} row operations/s, {load['retries']} retried transactions; "
              f"the connector alone after them: {catch_up_text(figures['stream_catch_up_events_per_s'])})", flush=True)

        def latency(rate: int, prefix: str) -> None:
            """Commit-to-acknowledgement latency of the rows inserted at ``rate`` row operations/s."""
            with db.cursor() as cursor:
                cursor.execute("SELECT MAX(id) FROM bench")
                (maxid,) = cursor.fetchone()
            print(f"latency: {args.writers} writers at {rate:,} row operations/s for {args.seconds}s (transactions of 10) ...", flush=True)
            watch.key_append_ms.clear()
            watch.key_field = "id"
            _, load = run_writers(pool, params, args.writers, 10, args.seconds, rate, maxid, watch, "  writing")
            watch.wait_quiet()
            watch.key_field = None
            appended = watch.key_append_ms
            latencies: list[float] = []
            missing = 0
            for first, count, committed_ms in load["inserted"]:
                for row_id in range(first, first + count):
                    if row_id in appended:
                        latencies.append(appended[row_id] - committed_ms)
                    else:
                        missing += 1
            figures[f"{prefix}_rate_ops_per_s"] = round(load["rows"] / args.seconds)
            figures[f"{prefix}_p50_ms"] = round(percentile(latencies, 50), 1)
            figures[f"{prefix}_p99_ms"] = round(percentile(latencies, 99), 1)
            figures[f"{prefix}_latency_events"] = len(latencies)
            if missing:
                figures[f"{prefix}_latency_missing"] = missing
            print(f"latency: {load['rows'] / args.seconds:,.0f} ops/s achieved, p50 {figures[f'{prefix}_p50_ms']} ms, p99 {figures[f'{prefix}_p99_ms']} ms "
                  f"over {len(latencies):,} inserted rows{f' ({missing:,} never seen)' if missing else ''}", flush=True)

        latency(args.rate, "stream")
        # The issue asks MySQL for at least half the PostgreSQL figures: its latency at half the rate too.
        latency(args.rate // 2, "stream_half")

        def insert_rows() -> None:
            with db.cursor() as cursor:
                cursor.execute(ROWS.format(n=args.rows))

        figures.update(large_transaction(watch, connector, args.rows, insert_rows))
        db.close()
        write_results("cdc_mysql", figures)
    finally:
        pool.terminate()
        pool.join()
        if connector is not None:
            connector.stop()
        if watch is not None:
            watch.close()
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()
        delete_topics_and_groups(config, name)


if __name__ == "__main__":
    main()
