"""The MySQL/MariaDB connector against the real stack: MariaDB 10.11 (ROW binlog, FULL metadata),
Kafka and Simpul's schema registry. Events are read back with confluent-kafka's AvroDeserializer."""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import child_pids, in_thread, wait_gone
from simpul.cdc import metrics
from simpul.cdc.errors import ConnectorError
from simpul.cdc.mysql.binlog import require_full_row_binlog
from simpul.cdc.mysql.connector import run_mysql_connector
from simpul.cdc.offsets import OffsetStore
from simpul.cdc.publisher import dead_letter_topic, heartbeat_topic
from simpul.config import CaptureSettings, ColumnRule, SimpulConfig, SourceSettings
from simpul.databases import mysql_params
from simpul.shutdown import Shutdown

pytestmark = pytest.mark.stack

Event = tuple[str, Any, Any]  # topic, key, value (None: tombstone)
# Tests marked with this run twice: rows encoded in the connector's process, and on two worker
# processes (``capture.workers``), which must change nothing a consumer sees.
BOTH_ENCODINGS = pytest.mark.parametrize("workers", [1, 2], ids=["inline", "2-workers"])


def _source(config: SimpulConfig, name: str, tables: list[str], **capture: Any) -> tuple[SimpulConfig, SourceSettings]:
    base = next(s for s in config.sources if s.kind == "mysql")
    source = base.model_copy(update={
        "name": name, "topic_prefix": name, "tables": [f"{base.database}.{t}" for t in tables],
        "capture": CaptureSettings(heartbeat_interval_ms=500, **capture),
    })
    return config.model_copy(update={"sources": [source]}), source


def _db(source: SourceSettings) -> pymysql.connections.Connection:
    return pymysql.connect(**{**mysql_params(source.dsn()), "autocommit": True})


def _sql(source: SourceSettings, *statements: str) -> None:
    conn = _db(source)
    with conn, conn.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)


@contextmanager
def _running(config: SimpulConfig, source: SourceSettings) -> Iterator[Shutdown]:
    """The connector in a thread until the block ends (then a clean stop)."""
    shutdown = Shutdown()
    with in_thread(lambda: run_mysql_connector(config, source, shutdown), shutdown, 30):
        yield shutdown


class Reader:
    """Reads and decodes a source's topics from the beginning."""

    def __init__(self, config: SimpulConfig, topics: list[str], group: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": group,
                                  "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
        self.consumer.subscribe(topics)
        self.deserialize = AvroDeserializer(SchemaRegistryClient({"url": config.schema_registry.url}))

    def read(self, count: int, timeout: float = 30) -> list[Event]:
        events: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(events) < count and time.monotonic() < deadline:
            message = self.consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            topic = message.topic()
            if topic.endswith(".dlq"):
                events.append((topic, message.key(), json.loads(message.value())))
                continue
            key = self.deserialize(message.key(), SerializationContext(topic, MessageField.KEY)) if message.key() else None
            value = self.deserialize(message.value(), SerializationContext(topic, MessageField.VALUE)) if message.value() else None
            events.append((topic, key, value))
        return events

    def close(self) -> None:
        self.consumer.close()


@BOTH_ENCODINGS
def test_snapshot_hand_off_changes_and_restart(agency_config: SimpulConfig, unique_name: str, caplog: pytest.LogCaptureFixture, workers: int) -> None:
    config, source = _source(agency_config, unique_name, ["orang"], workers=workers)
    topic = f"{unique_name}.{source.database}.orang"
    _sql(source, "CREATE TABLE orang (id INT PRIMARY KEY, nama VARCHAR(50) NOT NULL) ENGINE=InnoDB",
         "INSERT INTO orang (id, nama) SELECT seq, CONCAT('orang ', seq) FROM seq_1_to_20000")
    reader = Reader(config, [topic], unique_name)
    try:
        with _running(config, source):
            # writes racing the snapshot: each row must arrive exactly once, as r or c
            running = metrics.SNAPSHOT_RUNNING.labels(unique_name)
            conn = _db(source)
            next_id, during, after = 20001, 0, 0
            with conn, conn.cursor() as cursor:
                deadline = time.monotonic() + 30
                while after < 50 and time.monotonic() < deadline:
                    was_running = running._value.get() == 1
                    cursor.execute("INSERT INTO orang VALUES (%s, %s)", (next_id, f"orang {next_id}"))
                    next_id += 1
                    during += was_running
                    after += bool(during) and not was_running
            assert during > 0, "some rows were written while the snapshot ran"
            events = reader.read(next_id - 1)
            ids = [value["after"]["id"] for _, _, value in events]
            assert sorted(ids) == list(range(1, next_id)), "every row exactly once across the hand-off"
            ops = collections.Counter(value["op"] for _, _, value in events)
            assert set(ops) == {"r", "c"} and ops["r"] >= 20000
            snapshot = [value for _, _, value in events if value["op"] == "r"]
            markers = collections.Counter(value["source"]["snapshot"] for value in snapshot)
            assert markers == {"true": len(snapshot) - 1, "last": 1}
            first = snapshot[0]
            assert first["source"]["connector"] == "mysql" and first["source"]["name"] == unique_name and first["source"]["db"] == source.database
            assert first["source"]["table"] == "orang" and first["source"]["file"] and first["source"]["pos"] > 0

            conn = _db(source)
            with conn, conn.cursor() as cursor:
                cursor.execute("UPDATE orang SET nama = 'baru' WHERE id = 1")
                cursor.execute("DELETE FROM orang WHERE id = 2")
                cursor.execute("UPDATE orang SET id = 800003 WHERE id = 3")
                conn.begin()
                cursor.execute("INSERT INTO orang VALUES (900001, 'a'), (900002, 'b')")
                cursor.execute("UPDATE orang SET nama = 'c' WHERE id = 900001")
                conn.commit()
                cursor.execute("TRUNCATE TABLE orang")
            changes = reader.read(10)
            # Kafka orders events per key (partition), so compare each key's own sequence
            per_key: dict[str, list[str | None]] = collections.defaultdict(list)
            by_op: dict[tuple[str, str], dict[str, Any]] = {}
            for _, key, value in changes:
                per_key[json.dumps(key)].append(value["op"] if value else None)
                if value:
                    by_op[(json.dumps(key), value["op"])] = value
            assert per_key == {
                '{"id": 1}': ["u"], '{"id": 2}': ["d", None], '{"id": 3}': ["d", None], '{"id": 800003}': ["c"],
                '{"id": 900001}': ["c", "u"], '{"id": 900002}': ["c"], "null": ["t"],
            }
            update = by_op[('{"id": 1}', "u")]
            assert update["before"]["nama"] == "orang 1" and update["after"]["nama"] == "baru"
            assert update["source"]["snapshot"] == "false" and update["source"]["server_id"] > 0 and update["source"]["gtid"]
            assert by_op[('{"id": 3}', "d")]["before"]["id"] == 3 and by_op[('{"id": 3}', "d")]["after"] is None
            assert by_op[('{"id": 800003}', "c")]["after"] == {"id": 800003, "nama": "orang 3"}
            txn = [by_op[(k, op)]["source"] for k, op in (('{"id": 900001}', "c"), ('{"id": 900002}', "c"), ('{"id": 900001}', "u"))]
            assert len({s["gtid"] for s in txn}) == 1, "one source transaction, one GTID"
            assert [s["row"] for s in txn[:2]] == [0, 1] and txn[0]["pos"] == txn[1]["pos"] < txn[2]["pos"]
            assert metrics.TRANSACTIONS.labels(unique_name)._value.get() >= 4
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (metrics.CONNECTED.labels(unique_name)._value.get() != 1):
                time.sleep(0.1)
            assert metrics.CONNECTED.labels(unique_name)._value.get() == 1
            beats = Reader(config, [heartbeat_topic(source)], unique_name + "hb")
            try:
                (beat,) = beats.read(1, timeout=15)
                assert beat[1] == {"serverName": unique_name} and beat[2]["ts_ms"] > 0
            finally:
                beats.close()

            # a new binlog file: table layouts are forgotten (table ids do not outlive a server
            # run) and the next rows decode with the layout read anew
            with caplog.at_level(logging.INFO, logger="simpul.cdc.mysql.binlog"):
                _sql(source, "FLUSH BINARY LOGS", "INSERT INTO orang VALUES (8, 'setelah rotasi')")
                rotated = reader.read(1)
            assert [(k, v["op"], v["after"]["nama"]) for _, k, v in rotated] == [({"id": 8}, "c", "setelah rotasi")]
            assert "table layouts are read anew" in caplog.text

        store = OffsetStore(config)
        offset = store.load(unique_name)
        store.close()
        assert offset is not None and offset["snapshot_completed"] is True and offset["file"] and offset["pos"] > 4

        # stopped: a change made now is picked up after the restart, without a new snapshot
        _sql(source, "INSERT INTO orang VALUES (7, 'sesudah restart')")
        with _running(config, source):
            again = reader.read(1)
            assert [(k, v["op"], v["after"]["nama"]) for _, k, v in again] == [({"id": 7}, "c", "sesudah restart")]
            assert reader.read(1, timeout=2) == [], "nothing replayed or re-snapshotted"
    finally:
        reader.close()


LEGACY_TABLE = """
CREATE TABLE legacy (
  id INT UNSIGNED PRIMARY KEY,
  nama_latin VARCHAR(50) CHARACTER SET latin1,
  nama_utf VARCHAR(50) CHARACTER SET utf8mb4,
  lahir DATE,
  waktu DATETIME(3),
  waktu6 DATETIME(6),
  dicatat TIMESTAMP NULL,
  jam TIME,
  tahun YEAR,
  aktif TINYINT(1),
  besar BIGINT UNSIGNED,
  kecil TINYINT,
  saldo DECIMAL(12,2),
  status ENUM('L','P'),
  hobi SET('baca','masak','lari'),
  data JSON,
  foto BLOB,
  kode BINARY(4)
) ENGINE=InnoDB
"""
LEGACY_ROW = (
    "'Günter Straße', 'Ñoño 😀 Bandung', '0000-00-00', '2024-01-02 03:04:05.123', '2024-01-02 03:04:05.123456',"
    " '2024-01-02 03:04:05', '12:34:56', 2024, 1, 18446744073709551, -5, 12345.60, 'P', 'baca,lari', '{\"a\": [1, 2]}',"
    " X'00FF10', X'DEADBEEF'"
)
LEGACY_AFTER = {
    "nama_latin": "Günter Straße", "nama_utf": "Ñoño 😀 Bandung", "lahir": None, "waktu": 1704164645123,
    "waktu6": 1704164645123456, "dicatat": "2024-01-02T03:04:05Z", "jam": 45_296_000_000, "tahun": 2024, "aktif": True,
    "besar": 18446744073709551, "kecil": -5, "status": "P", "hobi": "baca,lari", "data": '{"a": [1, 2]}',
    "kode": b"\xde\xad\xbe\xef",
}


@BOTH_ENCODINGS
def test_legacy_types_dead_letters_and_schema_change(agency_config: SimpulConfig, unique_name: str, workers: int) -> None:
    database = next(s for s in agency_config.sources if s.kind == "mysql").database
    # a column rule: the photo never leaves the agency, not even in a dead letter
    rules = [ColumnRule(column=f"{database}.legacy.foto", action="exclude")]
    config, source = _source(agency_config, unique_name, ["legacy"], columns=rules, workers=workers)
    topic = f"{unique_name}.{source.database}.legacy"
    dlq = dead_letter_topic(source)
    session = "SET SESSION sql_mode = '', time_zone = '+00:00'"
    _sql(source, LEGACY_TABLE, session,
         f"INSERT INTO legacy VALUES (1, {LEGACY_ROW})",
         f"INSERT INTO legacy VALUES (2, {LEGACY_ROW.replace('18446744073709551', '18446744073709551615')})")
    reader = Reader(config, [topic, dlq], unique_name)
    try:
        with _running(config, source):
            events = reader.read(2)  # the snapshot: row 1, and row 2 set aside
            _sql(source, session,
                 f"INSERT INTO legacy VALUES (3, {LEGACY_ROW})",
                 f"INSERT INTO legacy VALUES (4, {LEGACY_ROW.replace('18446744073709551', '18446744073709551615')})")
            events += reader.read(2)
            rows = {value["after"]["id"]: value for t, _, value in events if t == topic}
            letters = [value for t, _, value in events if t == dlq]
            assert sorted(rows) == [1, 3]
            for row_id, event in rows.items():
                after = dict(event["after"])
                assert after.pop("id") == row_id
                assert str(after.pop("saldo")) == "12345.60"
                assert after == LEGACY_AFTER, event["op"]
            assert rows[1]["op"] == "r" and rows[3]["op"] == "c"
            assert sorted(letter["key"]["id"] for letter in letters) == [2, 4]
            assert {letter["reason"] for letter in letters} == {"unsigned_out_of_range"}
            assert all("foto" not in letter["row"] for letter in letters)
            assert letters[0]["position"]["file"] and letters[0]["table"] == f"{source.database}.legacy"
            assert metrics.DATA_QUALITY.labels(unique_name, f"{source.database}.legacy", "zero_date")._value.get() >= 2

            # a compatible change: a new nullable column, events keep flowing with it
            _sql(source, "ALTER TABLE legacy ADD COLUMN catatan VARCHAR(20)", "INSERT INTO legacy (id, nama_utf, catatan) VALUES (5, 'x', 'baru')")
            (event,) = reader.read(1)
            assert event[2]["after"]["catatan"] == "baru" and event[2]["after"]["id"] == 5
            registry = SchemaRegistryClient({"url": config.schema_registry.url})
            assert registry.get_versions(f"{topic}-value") == [1, 2]

            # an incompatible change: the row is set aside, the connector goes on
            _sql(source, "ALTER TABLE legacy MODIFY COLUMN kecil VARCHAR(10)", "INSERT INTO legacy (id, kecil) VALUES (6, 'tujuh')",
                 session, "ALTER TABLE legacy MODIFY COLUMN kecil TINYINT", "INSERT INTO legacy (id, kecil) VALUES (7, 7)")
            # two topics: which of the two a consumer sees first is not defined
            later = {t: value for t, _, value in reader.read(2)}
            assert later[dlq]["reason"] == "incompatible_schema" and later[dlq]["key"] == {"id": 6}
            assert later[topic]["after"]["kecil"] == 7
    finally:
        reader.close()


RUNNER = (
    "import json, logging, sys\n"
    "from simpul.config import SimpulConfig\n"
    "from simpul.shutdown import Shutdown\n"
    "from simpul.cdc.mysql.connector import run_mysql_connector\n"
    "logging.basicConfig(level=logging.INFO)\n"
    "config = SimpulConfig(**json.loads(sys.argv[1]))\n"
    "run_mysql_connector(config, config.sources[0], Shutdown().install())\n"
)


def _spawn(config: SimpulConfig) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", RUNNER, json.dumps(config.model_dump(mode="json"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _assert_each_row_once_at_one_position(reader: Reader, expected: set[int], after: str) -> None:
    """Every committed id (1 came from the snapshot, the rest streamed) is read, and an event read
    twice carries the same binlog position both times."""
    seen: dict[int, set[tuple[str, int, int]]] = collections.defaultdict(set)
    seen[1].add(("snapshot", 0, 0))
    deadline = time.monotonic() + 60
    while not expected <= set(seen) and time.monotonic() < deadline:
        for _, _, value in reader.read(len(expected) - len(seen), timeout=2):
            src = value["source"]
            seen[value["after"]["id"]].add((src["file"], src["pos"], src["row"]))
    assert expected <= set(seen), f"{len(expected - set(seen))} committed row(s) missing after {after}"
    assert all(len(positions) == 1 for positions in seen.values()), "a replayed event repeats its source position"


@BOTH_ENCODINGS
def test_kill_9_mid_stream_then_restart_loses_no_committed_row(agency_config: SimpulConfig, unique_name: str, workers: int) -> None:
    config, source = _source(agency_config, unique_name, ["orang"], workers=workers)
    topic = f"{unique_name}.{source.database}.orang"
    _sql(source, "CREATE TABLE orang (id INT PRIMARY KEY, nama VARCHAR(50) NOT NULL) ENGINE=InnoDB", "INSERT INTO orang VALUES (1, 'awal')")
    committed: list[int] = []
    stop_writing = threading.Event()

    def writer() -> None:
        conn = _db(source)
        with conn, conn.cursor() as cursor:
            next_id = 2
            while not stop_writing.is_set():
                conn.begin()
                cursor.executemany("INSERT INTO orang VALUES (%s, 'x')", [(i,) for i in range(next_id, next_id + 5)])
                conn.commit()
                committed.extend(range(next_id, next_id + 5))
                next_id += 5
                time.sleep(0.002)

    reader = Reader(config, [topic], unique_name)
    first = _spawn(config)
    writing = threading.Thread(target=writer)
    try:
        (snapshot,) = reader.read(1, timeout=60)
        assert snapshot[2]["op"] == "r" and snapshot[2]["after"]["id"] == 1
        writing.start()
        time.sleep(2)
        children = child_pids(first.pid)
        first.kill()  # kill -9: no flush, no offset saved on the way out
        first.wait(10)
        wait_gone(children, 10)
        assert len(children) >= workers - 1, "the encoding workers were not running"
        time.sleep(0.5)
        second = _spawn(config)
        try:
            time.sleep(1.5)
            stop_writing.set()
            writing.join(10)
            _assert_each_row_once_at_one_position(reader, set(committed) | {1}, "kill -9 and restart")
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0, second.stderr.read().decode()[-2000:] if second.stderr else ""
        finally:
            if second.poll() is None:
                second.kill()
                second.wait(10)
    finally:
        stop_writing.set()
        if first.poll() is None:
            first.kill()
            first.wait(10)
        reader.close()


def test_a_server_restart_under_a_running_connector_loses_no_committed_row(
    agency_config: SimpulConfig, stack_config: SimpulConfig, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server is killed (as a crash or an out-of-memory kill would) while a writer runs, and
    comes back: the connector reconnects on its own and resumes from its stored position."""
    from simpul.stack import LocalStack
    from simpul.stack.mariadb import MariaDBServer

    config, source = _source(agency_config, unique_name, ["orang"])
    topic = f"{unique_name}.{source.database}.orang"
    _sql(source, "CREATE TABLE orang (id INT PRIMARY KEY, nama VARCHAR(50) NOT NULL) ENGINE=InnoDB", "INSERT INTO orang VALUES (1, 'awal')")
    committed: list[int] = []
    stop_writing = threading.Event()

    def writer() -> None:
        next_id = 2
        while not stop_writing.is_set():
            try:
                conn = _db(source)
                with conn, conn.cursor() as cursor:
                    while not stop_writing.is_set():
                        cursor.execute("INSERT INTO orang VALUES (%s, 'x')", (next_id,))
                        committed.append(next_id)  # autocommit: committed once execute returns
                        next_id += 1
                        time.sleep(0.005)
            except pymysql.err.Error:
                time.sleep(0.2)  # the server is down: a row whose insert failed was never committed

    reader = Reader(config, [topic], unique_name)
    server = MariaDBServer(stack_config)
    writing = threading.Thread(target=writer)
    caplog.set_level(logging.WARNING, logger="simpul.cdc.mysql.connector")
    try:
        with _running(config, source):
            (snapshot,) = reader.read(1, timeout=60)
            assert snapshot[2]["op"] == "r"
            writing.start()
            time.sleep(1.5)
            pid = server.process.pid()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            wait_gone([pid], 30)
            time.sleep(2)
            LocalStack(stack_config).up()
            time.sleep(2)
            stop_writing.set()
            writing.join(30)
            _assert_each_row_once_at_one_position(reader, set(committed) | {1}, "the server restart")
        assert any("database connection lost" in r.getMessage() for r in caplog.records)
    finally:
        stop_writing.set()
        if writing.is_alive():
            writing.join(30)
        reader.close()
        if server.process.pid() is None:
            LocalStack(stack_config).up()


def test_snapshot_without_reload_privilege_locks_the_tables(
    agency_config: SimpulConfig, unique_name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config, source = _source(agency_config, unique_name, ["orang"], snapshot_mode="initial_only")
    _sql(source, "CREATE TABLE orang (id INT PRIMARY KEY, nama VARCHAR(50))", "INSERT INTO orang SELECT seq, 'x' FROM seq_1_to_100")
    # an agency account without RELOAD: no global read lock, so LOCK TABLES ... READ instead
    admin_dsn = source.dsn()
    params = mysql_params(admin_dsn)
    password = uuid.uuid4().hex
    _sql(source, f"CREATE USER '{unique_name}'@'%' IDENTIFIED BY '{password}'",
         f"GRANT SELECT, LOCK TABLES ON `{source.database}`.* TO '{unique_name}'@'%'",
         f"GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{unique_name}'@'%'")
    try:
        monkeypatch.setenv(source.dsn_env, f"mysql://{unique_name}:{password}@{params['host']}:{params['port']}/{source.database}")
        reader = Reader(config, [f"{unique_name}.{source.database}.orang"], unique_name)
        try:
            with caplog.at_level(logging.INFO, logger="simpul.cdc.mysql.snapshot"):
                run_mysql_connector(config, source, Shutdown())  # initial_only: returns after the snapshot
            assert "no RELOAD privilege, locking the captured tables" in caplog.text
            events = reader.read(100)
            assert sorted(v["after"]["id"] for _, _, v in events) == list(range(1, 101)) and {v["op"] for _, _, v in events} == {"r"}
        finally:
            reader.close()
        store = OffsetStore(config)
        assert store.load(unique_name)["snapshot_completed"] is True
        store.close()
    finally:
        monkeypatch.setenv(source.dsn_env, admin_dsn)
        _sql(source, f"DROP USER '{unique_name}'@'%'")


def test_a_binlog_without_full_row_images_is_refused_with_what_to_change(agency_config: SimpulConfig, unique_name: str) -> None:
    _, source = _source(agency_config, unique_name, ["orang"])
    conn = _db(source)
    try:
        with conn.cursor() as cursor:
            require_full_row_binlog(cursor)  # the stack's server: ROW, FULL images, FULL metadata
            cursor.execute("SET SESSION binlog_row_image = 'MINIMAL'")
            with pytest.raises(ConnectorError, match=r"binlog_row_image=MINIMAL \(needs FULL\)") as refused:
                require_full_row_binlog(cursor)
            assert "binlog_format" not in str(refused.value) and "binlog_row_metadata" not in str(refused.value)
    finally:
        conn.close()
