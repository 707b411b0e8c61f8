"""The PostgreSQL connector against real PostgreSQL, Kafka and the registry; read back with
confluent-kafka's own AvroDeserializer, as any Debezium consumer would."""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from conftest import Record, child_pids, in_thread, wait_children, wait_gone
from simpul.cdc.postgres.connector import PostgresConnector
from simpul.cdc.publisher import dead_letter_topic, heartbeat_topic
from simpul.config import CaptureSettings, SimpulConfig, SourceSettings, write_config
from simpul.shutdown import Shutdown

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent

TABLES = """
CREATE TYPE status_hidup AS ENUM ('HIDUP', 'MATI');
CREATE TABLE public.orang (
    id serial PRIMARY KEY,
    nama text,
    lahir date,
    skor numeric(10, 2),
    saldo numeric,
    aktif boolean,
    dibuat timestamp,
    diubah timestamptz,
    data jsonb,
    foto bytea,
    status status_hidup,
    tags text[]
);
CREATE TABLE public.keluarga (no_kk varchar(16) PRIMARY KEY, alamat text);
ALTER TABLE public.orang REPLICA IDENTITY FULL;
ALTER TABLE public.keluarga REPLICA IDENTITY FULL;
"""


# Tests marked with this run twice: rows encoded in the connector's process, and on two worker
# processes (``capture.workers``), which must change nothing a consumer sees.
BOTH_ENCODINGS = pytest.mark.parametrize("pg", [1, 2], indirect=True, ids=["inline", "2-workers"])


@pytest.fixture
def pg(agency_config: SimpulConfig, unique_name: str, request: pytest.FixtureRequest) -> tuple[SimpulConfig, SourceSettings]:
    """A config with one PostgreSQL source of this test's own: a fresh database with two tables
    (``request.param``: its encoding workers, 1 unless parametrized)."""
    base = agency_config.source("disdukcapil")
    source = base.model_copy(
        update={
            "name": unique_name,
            "topic_prefix": unique_name,
            "tables": ["public.orang", "public.keluarga"],
            "capture": CaptureSettings(heartbeat_interval_ms=200, workers=getattr(request, "param", 1)),
        }
    )
    with psycopg.connect(source.dsn(), autocommit=True) as conn:
        conn.execute(TABLES)
    # The slot goes with the database: agency_config drops both.
    return agency_config.model_copy(update={"sources": [source]}), source


@contextmanager
def running(config: SimpulConfig, source: SourceSettings) -> Iterator[PostgresConnector]:
    shutdown = Shutdown()
    connector = PostgresConnector(config, source, shutdown)
    with in_thread(connector.run, shutdown, 60) as failures:
        connector.streaming.wait(60)
        if failures:
            raise failures[0]
        yield connector


def _values(records):
    return [r.value for r in records if r.value is not None]


@BOTH_ENCODINGS
def test_snapshot_then_stream_with_concurrent_writes(pg, read_topic) -> None:
    config, source = pg
    with psycopg.connect(source.dsn(), autocommit=True) as conn:
        conn.execute("INSERT INTO orang (nama) SELECT 'orang ' || n FROM generate_series(1, 3000) n")
    stop = threading.Event()

    def writer() -> None:
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            for n in range(400):
                conn.execute("INSERT INTO orang (nama) VALUES (%s)", (f"baru {n}",))
                if stop.is_set():
                    break

    with running(config, source):
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join()
        with psycopg.connect(source.dsn()) as conn:
            total = conn.execute("SELECT count(*) FROM orang").fetchone()[0]
        records = read_topic(f"{source.topic_prefix}.public.orang", lambda rs: len(rs) >= total, timeout=90)
    ids = Counter(v["after"]["id"] for v in _values(records))
    assert len(ids) == total, "a row is missing"
    assert max(ids.values()) == 1, "a row arrived twice across the snapshot/stream hand-off"
    ops = Counter(v["op"] for v in _values(records))
    assert ops["r"] >= 3000 and ops["r"] + ops["c"] == total
    assert [v["source"]["snapshot"] for v in _values(records) if v["source"]["snapshot"] == "last"] == ["last"]


@BOTH_ENCODINGS
def test_changes_keys_transactions_and_types(pg, read_topic) -> None:
    config, source = pg
    with running(config, source):
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO orang (id, nama, lahir, skor, saldo, aktif, dibuat, diubah, data, foto, status, tags) VALUES"
                " (1, 'Siti Aminah', '1990-01-05', 1234.5, -0.000123, true, '2024-01-02 03:04:05.123456',"
                " '2024-01-02 10:04:05+07', '{\"a\": [1, 2]}', '\\x00ff', 'MATI', '{x,\"y z\",NULL}')"
            )
            conn.execute("UPDATE orang SET nama = 'Hj. Siti Aminah' WHERE id = 1")
            conn.execute("UPDATE orang SET id = 2 WHERE id = 1")  # primary-key change
            with conn.transaction():  # one transaction over two tables
                conn.execute("INSERT INTO keluarga VALUES ('3673010101200001', 'Kp. Baru RT 001/RW 002')")
                conn.execute("INSERT INTO orang (id, nama) VALUES (3, 'Ucup')")
            conn.execute("DELETE FROM orang WHERE id = 3")
            conn.execute("TRUNCATE keluarga")
        orang = read_topic(f"{source.topic_prefix}.public.orang", lambda rs: len(rs) >= 8)
        keluarga = read_topic(f"{source.topic_prefix}.public.keluarga", lambda rs: len(rs) >= 2)

    by_key: dict[int, list[str | None]] = {}
    for record in orang:
        by_key.setdefault(record.key["id"] if record.key else None, []).append(record.value["op"] if record.value else None)
    assert by_key == {1: ["c", "u", "d", None], 2: ["c"], 3: ["c", "d", None]}

    of_key_1 = [r.value for r in orang if r.key == {"id": 1} and r.value]
    created = of_key_1[0]["after"]
    assert created["nama"] == "Siti Aminah"
    assert created["lahir"] == 7309  # io.debezium.time.Date: days since the epoch
    assert created["skor"] == Decimal("1234.50")
    assert created["saldo"]["scale"] == 6 and int.from_bytes(created["saldo"]["value"], "big", signed=True) == -123
    assert created["aktif"] is True
    assert created["dibuat"] == 1704164645123456
    assert created["diubah"] == "2024-01-02T03:04:05Z"
    assert json.loads(created["data"]) == {"a": [1, 2]}
    assert created["foto"] == b"\x00\xff"
    assert created["status"] == "MATI"
    assert created["tags"] == ["x", "y z", None]
    update = of_key_1[1]
    assert update["before"]["nama"] == "Siti Aminah" and update["after"]["nama"] == "Hj. Siti Aminah"
    source_block = update["source"]
    assert source_block["connector"] == "postgresql" and source_block["table"] == "orang" and source_block["lsn"] > 0
    assert len(json.loads(source_block["sequence"])) == 2

    # a truncate has no key, so like Debezium's it may land on any partition
    assert sorted(r.value["op"] for r in keluarga) == ["c", "t"]
    same_tx = [r.value["source"]["txId"] for r in keluarga if r.value["op"] == "c"] + [v["source"]["txId"] for v in _values(orang) if v["after"] and v["after"]["id"] == 3]
    assert len(set(same_tx)) == 1, "the two tables' rows of one transaction carry one txId"


@BOTH_ENCODINGS
def test_schema_change_mid_stream(pg, read_topic) -> None:
    config, source = pg
    topic = f"{source.topic_prefix}.public.orang"
    with running(config, source):
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO orang (id, nama) VALUES (1, 'a')")
            conn.execute("ALTER TABLE orang ADD COLUMN telepon text")
            conn.execute("INSERT INTO orang (id, nama, telepon) VALUES (2, 'b', '0812')")
            conn.execute("ALTER TABLE orang DROP COLUMN telepon")
            conn.execute("INSERT INTO orang (id, nama) VALUES (3, 'c')")
            # An incompatible change: the column's type becomes one old readers cannot read.
            conn.execute("ALTER TABLE orang ALTER COLUMN nama TYPE integer USING 0")
            conn.execute("INSERT INTO orang (id, nama) VALUES (4, 7)")
            conn.execute("ALTER TABLE orang ALTER COLUMN nama TYPE text")
            conn.execute("INSERT INTO orang (id, nama) VALUES (5, 'e')")
        records = read_topic(topic, lambda rs: len(rs) >= 4)
    afters = sorted((v["after"] for v in _values(records)), key=lambda a: a["id"])
    assert [a["id"] for a in afters] == [1, 2, 3, 5]
    assert afters[1]["telepon"] == "0812" and "telepon" not in afters[2]
    with urllib.request.urlopen(f"{config.schema_registry.url}/subjects/{topic}-value/versions") as response:
        # the first shape and the one with telepon; dropping it again is the first shape once more
        assert len(json.load(response)) == 2


@BOTH_ENCODINGS
def test_incompatible_change_goes_to_the_dead_letter_topic(pg) -> None:
    from confluent_kafka import Consumer

    config, source = pg
    with running(config, source):
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO orang (id, nama, lahir) VALUES (1, 'a', 'infinity')")  # no Avro date for infinity
            conn.execute("INSERT INTO orang (id, nama) VALUES (2, 'b')")
            conn.execute("ALTER TABLE orang ALTER COLUMN nama TYPE integer USING 0")
            conn.execute("INSERT INTO orang (id, nama) VALUES (3, 7)")
        consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": source.name, "auto.offset.reset": "earliest"})
        consumer.subscribe([dead_letter_topic(source)])
        letters, deadline = [], time.monotonic() + 60
        while len(letters) < 2 and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                letters.append(json.loads(message.value()))
        consumer.close()
    letters.sort(key=lambda letter: letter["row"]["id"])
    assert [(letter["reason"], letter["row"]["id"]) for letter in letters] == [("encode_error", "1"), ("incompatible_schema", "3")]
    assert letters[0]["position"]["lsn"] > 0 and "infinity" in letters[0]["message"]


def test_idle_database_heartbeats_and_the_slot_advances(pg, read_topic, stack_config) -> None:
    config, source = pg
    other = stack_config.source("dinkes").dsn()  # WAL written elsewhere, nothing for this slot
    with running(config, source):
        time.sleep(1.0)
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            before = conn.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (source.slot_name,)).fetchone()[0]
        with psycopg.connect(other, autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE sampah AS SELECT generate_series(1, 50000) n")
            conn.execute("CREATE TABLE IF NOT EXISTS simpul_wal_test (n int)")
            conn.execute("INSERT INTO simpul_wal_test SELECT generate_series(1, 20000)")
            conn.execute("DROP TABLE simpul_wal_test")
        time.sleep(1.5)
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            after = conn.execute("SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = %s", (source.slot_name,)).fetchone()[0]
        beats = read_topic(heartbeat_topic(source), lambda rs: len(rs) >= 2, timeout=20)
    assert after > before, "the slot of an idle database did not advance"
    assert len(beats) >= 2 and beats[0].key == {"serverName": source.topic_prefix}


def _every_id_arrived(ids: set[int]) -> Callable[[list[Record]], bool]:
    """A ``read_topic`` condition: an event has arrived for each row id of ``ids``.

    It looks at each record once. ``read_topic`` asks after every record, and rebuilding the set
    of ids each time made reading 25,000 events take minutes on a loaded machine."""
    missing = set(ids)
    checked = 0

    def arrived(records: list[Record]) -> bool:
        nonlocal checked
        missing.difference_update(r.value["after"]["id"] for r in records[checked:] if r.value)
        checked = len(records)
        return not missing

    return arrived


@BOTH_ENCODINGS
def test_kill_9_then_restart_loses_nothing(pg, read_topic, tmp_path: Path) -> None:
    config, source = pg
    # the connector serves its metrics on port + 10 + its index
    config = config.model_copy(update={"metrics": config.metrics.model_copy(update={"port": 29_600})})
    config_file = write_config(config, tmp_path / "simpul.yaml")
    env = {**os.environ, source.dsn_env: source.dsn(), "SIMPUL_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "simpul.cli", "--config", str(config_file), "cdc", "run", "--source", source.name]
    stop = threading.Event()
    committed: list[int] = []

    def writer() -> None:
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            n = 0
            while not stop.is_set():
                with conn.transaction():
                    ids = [row[0] for row in conn.execute(
                        "INSERT INTO orang (nama) SELECT 'w' || g FROM generate_series(1, 5) g RETURNING id").fetchall()]
                committed.extend(ids)
                n += 1
                time.sleep(0.002)

    rng = random.Random(7)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(3):
            connector = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            # From the moment its workers run, at a random time: mid-snapshot as well as mid-stream.
            # A fixed delay from the start killed a connector still importing on a loaded machine.
            wait_children(connector.pid, source.capture.workers - 1, 60)
            time.sleep(rng.uniform(0.2, 2.5))
            children = child_pids(connector.pid)
            connector.send_signal(signal.SIGKILL)
            connector.wait(10)
            wait_gone(children, 10)
        assert len(children) >= source.capture.workers - 1, "the encoding workers were not running"
    finally:
        stop.set()
        thread.join()
    connector = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        records = read_topic(f"{source.topic_prefix}.public.orang", _every_id_arrived(set(committed)), timeout=120)
        with urllib.request.urlopen("http://127.0.0.1:29610/metrics", timeout=10) as response:
            exposed = response.read().decode()
    finally:
        connector.send_signal(signal.SIGTERM)
        _, stderr = connector.communicate(timeout=60)
    assert connector.returncode == 0, stderr.decode()[-2000:]
    for name in ("simpul_cdc_events_total", "simpul_cdc_commit_to_ack_seconds_bucket", "simpul_cdc_connected", "simpul_cdc_queue_depth", "simpul_cdc_slot_lag_bytes"):
        assert f"{name}{{" in exposed, name
    assert f'simpul_cdc_connected{{source="{source.name}"}} 1.0' in exposed
    seen = Counter(r.value["after"]["id"] for r in records if r.value)
    assert set(committed) <= set(seen), f"{len(set(committed) - set(seen))} committed rows never reached Kafka"
    _assert_repeats_keep_their_position(records)


def _assert_repeats_keep_their_position(records: list[Record]) -> None:
    """At-least-once, as Debezium: a streamed row may repeat after a crash, but only at its own
    position. A snapshot cut off by the crash starts again on a new slot, at that slot's consistent
    point, so its rows are read again at the new point: they may repeat, as reads (op ``r``) only,
    one position per started snapshot, and are never also streamed."""
    events: dict[int, set[tuple[str, int]]] = {}
    for r in records:
        if r.value:
            events.setdefault(r.value["after"]["id"], set()).add((r.value["op"], r.value["source"]["lsn"]))
    snapshot_points = {lsn for seen in events.values() for op, lsn in seen if op == "r"}
    assert len(snapshot_points) <= 4, f"{len(snapshot_points)} snapshot positions from 4 starts"
    for row_id, seen in events.items():
        ops = {op for op, _ in seen}
        assert ops == {"r"} or (ops == {"c"} and len(seen) == 1), f"row {row_id} was read as {sorted(seen)}"


def test_a_server_crash_under_a_running_connector_loses_nothing(pg, read_topic, stack_config: SimpulConfig, caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL stops at once, without a checkpoint (as after a crash), while a writer runs, and
    starts again with crash recovery: the connector reconnects on its own and resumes from the slot."""
    from simpul.stack import LocalStack
    from simpul.stack.postgres import PostgresServer

    config, source = pg
    server = PostgresServer(stack_config)
    stop = threading.Event()
    committed: list[int] = []

    def writer() -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(source.dsn(), autocommit=True) as conn:
                    while not stop.is_set():
                        committed.extend(row[0] for row in conn.execute("INSERT INTO orang (nama) VALUES ('w') RETURNING id").fetchall())
                        time.sleep(0.005)
            except psycopg.Error:
                time.sleep(0.2)  # the server is down: an insert that failed was never committed

    caplog.set_level(logging.WARNING, logger="simpul.cdc.postgres.connector")
    thread = threading.Thread(target=writer)
    try:
        with running(config, source):
            thread.start()
            time.sleep(1.5)
            pid = server.process.pid()
            assert pid is not None
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: no checkpoint, crash recovery at the next start
            wait_gone([pid], 30)
            LocalStack(stack_config).up()
            time.sleep(2)
            stop.set()
            thread.join(30)
            records = read_topic(f"{source.topic_prefix}.public.orang", _every_id_arrived(set(committed)), timeout=120)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(30)
        if server.process.pid() is None:
            LocalStack(stack_config).up()
    by_id: dict[int, set[int]] = {}
    for r in records:
        if r.value:
            by_id.setdefault(r.value["after"]["id"], set()).add(r.value["source"]["lsn"])
    assert set(committed) <= set(by_id), f"{len(set(committed) - set(by_id))} committed rows never reached Kafka"
    assert all(len(lsns) == 1 for lsns in by_id.values()), "a replayed event repeats its source position"
    assert any("database connection lost" in r.getMessage() for r in caplog.records)


def test_column_rules_hash_mask_and_exclude_before_kafka(pg, read_topic, monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from simpul.config import ColumnRule

    config, source = pg
    monkeypatch.setenv("SIMPUL_TEST_NIK_KEY", "rahasia-kota-serang")
    rules = [
        ColumnRule(column="public.orang.nama", action="hash", secret_env="SIMPUL_TEST_NIK_KEY"),
        ColumnRule(column="public.orang.data", action="mask", mask_chars=3),
        ColumnRule(column="public.orang.foto", action="exclude"),
    ]
    source = source.model_copy(update={"capture": source.capture.model_copy(update={"columns": rules})})
    config = config.model_copy(update={"sources": [source]})
    with running(config, source):
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO orang (id, nama, data, foto) VALUES (1, 'Siti Aminah', '{\"hp\": \"0812\"}', '\\x00')")
        records = read_topic(f"{source.topic_prefix}.public.orang", lambda rs: len(rs) >= 1)
        events = REGISTRY.get_sample_value("simpul_cdc_events_total", {"source": source.name, "table": "public.orang", "op": "c"})
        connected = REGISTRY.get_sample_value("simpul_cdc_connected", {"source": source.name})
    after = records[0].value["after"]
    assert "foto" not in after and after["data"] == "***"
    assert len(after["nama"]) == 64 and "Siti" not in after["nama"]
    assert events == 1 and connected == 1


def test_unchanged_toast_under_replica_identity_default_gets_the_placeholder(pg, read_topic, caplog: pytest.LogCaptureFixture) -> None:
    config, source = pg
    with psycopg.connect(source.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.dokumen (id int PRIMARY KEY, judul text, isi text)")
        conn.execute("ALTER TABLE public.dokumen ALTER COLUMN isi SET STORAGE EXTERNAL")  # stored out of line, uncompressed
    source = source.model_copy(update={"tables": [*source.tables, "public.dokumen"]})
    config = config.model_copy(update={"sources": [source]})
    with caplog.at_level("WARNING"), running(config, source):
        with psycopg.connect(source.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO dokumen VALUES (1, 'a', repeat('x', 10000))")
            conn.execute("UPDATE dokumen SET judul = 'b' WHERE id = 1")
        records = read_topic(f"{source.topic_prefix}.public.dokumen", lambda rs: len(rs) >= 2)
    insert, update = (r.value for r in records)
    assert insert["after"]["isi"] == "x" * 10000
    assert update["after"]["judul"] == "b" and update["after"]["isi"] == "__debezium_unavailable_value"
    assert any("public.dokumen has no REPLICA IDENTITY FULL" in message for message in caplog.messages)
