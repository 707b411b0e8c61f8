"""Benchmark of the MySQL/MariaDB connector against a running stack (default: the test stack).

Prints and writes ``bench/results/cdc_mysql.json``:
- snapshot rows/s of ``--rows`` rows (first to last event seen by a consumer),
- streaming events/s of ``--events`` inserts written as fast as possible in 100-row transactions,
- p50/p99 commit -> consumed latency of paced single-row transactions (an upper bound of
  commit -> Kafka ack: it adds the consumer's fetch),
- the connector process's peak RSS (VmHWM).

The connector runs as its own process (``run_mysql_connector``), as in production. The table is the
one of the published Sequin/Debezium benchmark (``string, numeric, timestamp, json, inserted_at,
updated_at``), in a database of its own that is dropped afterwards.

    .venv/bin/python bench/cdc_mysql.py [--config tests/simpul.test.yaml] [--rows 100000] [--events 50000]
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymysql
from confluent_kafka import Consumer

from simpul.config import CaptureSettings, SimpulConfig, load_config, load_env_file
from simpul.databases import mysql_params

RESULTS = Path(__file__).with_name("results") / "cdc_mysql.json"
RUNNER = (
    "import json, sys\n"
    "from simpul.config import SimpulConfig\n"
    "from simpul.shutdown import Shutdown\n"
    "from simpul.cdc.mysql.connector import run_mysql_connector\n"
    "config = SimpulConfig(**json.loads(sys.argv[1]))\n"
    "run_mysql_connector(config, config.sources[0], Shutdown().install())\n"
)
TABLE = """CREATE TABLE bench (
  id INT AUTO_INCREMENT PRIMARY KEY, string_field VARCHAR(255), numeric_field DECIMAL(12,2),
  timestamp_field TIMESTAMP(6) NULL, json_field JSON, inserted_at DATETIME(6), updated_at DATETIME(6)
) ENGINE=InnoDB"""
ROW_SQL = "(CONCAT('row ', {n}), {n} / 7, NOW(6), JSON_OBJECT('n', {n}), NOW(6), NOW(6))"
COLUMNS = "(string_field, numeric_field, timestamp_field, json_field, inserted_at, updated_at)"


class Counter:
    """Consumes a topic in a thread, timestamping each message (and the id of decoded ones)."""

    def __init__(self, config: SimpulConfig, topic: str) -> None:
        self.times: list[float] = []
        self.by_id: dict[int, float] = {}
        self.decode_ids = False
        self._stop = threading.Event()
        self._consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": f"bench-{uuid.uuid4().hex}",
                                   "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5, "topic.metadata.refresh.interval.ms": 500})
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(1_000, 0.005):
                if message.error() is not None or message.value() is None:
                    continue
                now = time.monotonic()
                self.times.append(now)
                if self.decode_ids:
                    # The key is the Avro record {id: int}: after the 5-byte Confluent header, a zigzag varint.
                    self.by_id[_zigzag(message.key()[5:])] = now
        self._consumer.close()

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        if len(self.times) < count:
            raise SystemExit(f"only {len(self.times)} of {count} events arrived within {timeout:.0f} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _zigzag(data: bytes) -> int:
    shift = result = 0
    for byte in data:
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return (result >> 1) ^ -(result & 1)


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tests/simpul.test.yaml")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--paced", type=int, default=2_000, help="single-row transactions for the latency figure")
    parser.add_argument("--rate", type=int, default=500, help="paced transactions per second")
    args = parser.parse_args()

    base = load_config(args.config)
    load_env_file(base.home / "stack.env")
    template = next(s for s in base.sources if s.kind == "mysql")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = mysql_params(template.dsn())
    database = name
    source = template.model_copy(update={"name": name, "topic_prefix": name, "database": database,
                                         "tables": [f"{database}.bench"], "capture": CaptureSettings()})
    config = base.model_copy(update={"sources": [source]})
    topic = f"{name}.{database}.bench"
    db = pymysql.connect(**{**admin, "database": None, "autocommit": True})
    cursor = db.cursor()
    cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    cursor.execute(f"USE `{database}`")
    connector: subprocess.Popen[bytes] | None = None
    counter: Counter | None = None
    try:
        cursor.execute(TABLE)
        cursor.execute(f"INSERT INTO bench {COLUMNS} SELECT {ROW_SQL.format(n='seq')[1:-1]} FROM seq_1_to_{args.rows}")
        counter = Counter(config, topic)
        connector = subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(config.model_dump(mode="json"))], stderr=subprocess.DEVNULL)

        counter.wait_for(args.rows, 600)
        snapshot_s = counter.times[args.rows - 1] - counter.times[0]
        print(f"snapshot: {args.rows:,} rows in {snapshot_s:.2f} s = {args.rows / snapshot_s:,.0f} rows/s")

        start = time.monotonic()
        for offset in range(0, args.events, 100):
            values = ", ".join(ROW_SQL.format(n=n) for n in range(offset, min(offset + 100, args.events)))
            cursor.execute("BEGIN")
            cursor.execute(f"INSERT INTO bench {COLUMNS} VALUES {values}")
            cursor.execute("COMMIT")
        written_s = time.monotonic() - start
        counter.wait_for(args.rows + args.events, 600)
        streaming_s = counter.times[-1] - start
        print(f"streaming: {args.events:,} inserts written in {written_s:.2f} s, all consumed after {streaming_s:.2f} s"
              f" = {args.events / streaming_s:,.0f} events/s")

        counter.decode_ids = True
        committed: dict[int, float] = {}
        interval = 1 / args.rate
        next_at = time.monotonic()
        for n in range(args.paced):
            cursor.execute(f"INSERT INTO bench {COLUMNS} VALUES {ROW_SQL.format(n=n)}")
            committed[cursor.lastrowid] = time.monotonic()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        counter.wait_for(args.rows + args.events + args.paced, 120)
        latencies = sorted((counter.by_id[i] - t) * 1000 for i, t in committed.items() if i in counter.by_id)
        p50 = statistics.quantiles(latencies, n=100)[49]
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(f"commit -> consumed ({args.paced:,} paced at {args.rate}/s): p50 {p50:.1f} ms, p99 {p99:.1f} ms")

        rss = _peak_rss_mb(connector.pid)
        print(f"connector peak RSS: {rss:.0f} MiB")
        connector.send_signal(signal.SIGTERM)
        stop_start = time.monotonic()
        code = connector.wait(30)
        stop_s = time.monotonic() - stop_start
        print(f"clean stop on SIGTERM: exit {code} in {stop_s:.2f} s")
        result: dict[str, Any] = {
            "snapshot_rows": args.rows, "snapshot_rows_per_s": round(args.rows / snapshot_s),
            "streaming_events": args.events, "streaming_events_per_s": round(args.events / streaming_s),
            "paced_transactions": args.paced, "paced_rate_per_s": args.rate,
            "commit_to_consumed_p50_ms": round(p50, 1), "commit_to_consumed_p99_ms": round(p99, 1),
            "connector_peak_rss_mib": round(rss), "sigterm_stop_s": round(stop_s, 2),
            "server": "MariaDB 10.11, local stack, single Kafka broker", "ts": int(time.time()),
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written {RESULTS}")
    finally:
        if connector is not None and connector.poll() is None:
            connector.kill()
            connector.wait(10)
        if counter is not None:
            counter.close()
        cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        db.close()


if __name__ == "__main__":
    main()
