"""The sinks: pure folding of citizen changes into history rows, then the master index sink against
real Kafka and PostgreSQL: resolver outputs (created, updated, merged, split, deleted) applied to
the master index; the same load with the sink killed (SIGKILL) mid-way equals an uninterrupted run
row for row, history included; a newer compatible Citizen schema lands in ``attributes``; an
unreadable message becomes a dead-letter row and the sink goes on."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pymysql
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from psycopg import sql

from conftest import free_port, in_thread
from test_citizens import ID_KEY, TODAY, _batch_records, _source_rows
from simpul.config import SimpulConfig, write_config
from simpul.databases import connect_mysql, connect_postgres
from simpul.kafka import client_config, committing_consumer_config, consume_available, create_topics, reliable_producer_config
from simpul.schemas.resolution import CITIZEN_SCHEMA, FEEDBACK_SCHEMA, KEY_SCHEMA, LINK_SCHEMA, QUALITY_SCHEMA, REVIEW_SCHEMA, SOURCE_TS_HEADER
from simpul.schemas.registrar import SchemaRegistrar
from simpul.seed.population import generate_population
from simpul.shutdown import Shutdown
from simpul.sinks.master_index import citizen_change, citizen_row
from simpul.sinks.offsets import next_offsets, unconsumed
from simpul.sinks.runner import SinkMessage
from simpul.sinks.service import run_sink
from simpul.sinks.writeback import record_position, ref_row
from simpul.streams.changes import RowChange
from simpul.streams.citizens import CITIZEN, FEEDBACK_FIELDS, LINK, QUALITY, REVIEW, CitizenResolver, ResolverState
from simpul.streams.mapping import load_mapping
from simpul.streams.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]


# --- pure ---------------------------------------------------------------------------------------


def _citizen(members: list[str], name: str = "SITI AMINAH", **extra: Any) -> dict[str, Any]:
    value = {"master_id": "C1", "anchor_record_id": members[0], "members": members, "name": name, "titles": [],
             "birth_date": "1990-01-02", "lineage": {"name": members[0]}, "updated_ms": 1_700_000_000_000}
    value.update(extra)
    return value


def test_a_citizen_change_names_what_changed_and_a_repeat_changes_nothing() -> None:
    first = citizen_row(_citizen(["a"]))
    kind, changed = citizen_change(None, first)  # type: ignore[misc]
    assert kind == "created" and changed["members"] == {"added": ["a"], "removed": []} and changed["name"]["new"] == "SITI AMINAH"
    assert "phone" not in changed  # an empty field is not news
    merged = citizen_row(_citizen(["a", "b"], name="SITI AMINAH S"))
    kind, changed = citizen_change(first, merged)  # type: ignore[misc]
    assert kind == "updated"
    assert changed == {"members": {"added": ["b"], "removed": []}, "name": {"old": "SITI AMINAH", "new": "SITI AMINAH S"}}
    assert citizen_change(merged, citizen_row(_citizen(["a", "b"], name="SITI AMINAH S", updated_ms=1))) is None
    assert citizen_change(merged, None) == ("removed", {"members": {"added": [], "removed": ["a", "b"]}})


def test_fields_of_a_newer_schema_version_go_to_attributes() -> None:
    row = citizen_row(_citizen(["a"], religion="ISLAM"))
    assert row["attributes"] == {"religion": "ISLAM"} and "religion" not in row


def test_only_messages_after_the_stored_offsets_are_applied() -> None:
    messages = [SinkMessage("t", p, o, b"k", b"v") for p, o in [(0, 3), (0, 4), (1, 0), (1, 1)]]
    fresh, offsets = unconsumed(messages, {("t", 0): 4})
    assert [(m.partition, m.offset) for m in fresh] == [(0, 4), (1, 0), (1, 1)]
    assert offsets == {("t", 0): 5, ("t", 1): 2} == next_offsets(fresh)


def test_a_feedback_value_becomes_a_write_back_row() -> None:
    value = {"record_id": "dinsos:bansos.anggota_penerima:x:1", "table": "bansos.anggota_penerima", "record_key": "x:1",
             "master_id": "C9", "nik": "3673", "titles": ["S.Pd"], "deceased": True, "verified_from": {"nik": "disdukcapil"},
             "updated_ms": 1_700_000_000_000}
    row = ref_row(value)
    assert row[:4] == ("bansos.anggota_penerima", "x:1", "C9", "3673") and row[5] == "S.Pd" and True in row
    assert record_position(value["record_id"]) == ("bansos.anggota_penerima", "x:1")


# --- against real servers ------------------------------------------------------------------------

_SCHEMAS = {CITIZEN: CITIZEN_SCHEMA, LINK: LINK_SCHEMA, REVIEW: REVIEW_SCHEMA, QUALITY: QUALITY_SCHEMA}


def _resolver_outputs(citizens: int, seed: int) -> list[tuple[str, str, dict[str, Any] | None, int]]:
    """(kind, key, value, source ts) of a small city loaded, then renamed and partly deleted."""
    rows = _source_rows(generate_population(citizens, seed), seed)
    model = resolve(_batch_records(rows)).model
    changes = [RowChange(s, t, k, "r", (n,), 1_700_000_000_000 + n, v) for n, (s, t, k, v) in enumerate(rows)]
    rng = random.Random(seed)
    later = len(changes)
    for n, change in enumerate(rng.sample(changes, 60)):
        assert change.values is not None
        values = None if n % 2 else {k: ("X" if k in ("nama_lengkap", "nama") else v) for k, v in change.values.items()}
        changes.append(RowChange(change.source, change.table, change.key, "u" if values else "d", (later + n,), 1_700_000_100_000 + n, values))
    resolver = CitizenResolver(load_mapping(), model, ResolverState(), ID_KEY, today=TODAY)
    outputs = []
    for change in changes:
        for output in resolver.apply(change).outputs:
            if output.kind in _SCHEMAS:
                outputs.append((output.kind, output.key, output.value, change.ts_ms))
    return outputs


class SinkProcess:
    """``simpul sink run master-index`` as a child process on its own master-index database."""

    def __init__(self, config: SimpulConfig, tmp: Path, name: str) -> None:
        metrics = config.metrics.model_copy(update={"port": free_port() - 4})
        self.config = config.model_copy(update={"metrics": metrics})
        self.file = write_config(self.config, tmp / f"{name}.yaml")
        self.log = tmp / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "simpul.cli", "--config", str(self.file), "sink", "run", "master-index"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, env={**os.environ, "SIMPUL_LOG_LEVEL": "WARNING"})

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def ensure_gone(self) -> None:
        """Kill the process if a failed test left it running."""
        if self.process is not None and self.process.poll() is None:
            self.kill()

    def stop(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(60) == 0, self.log.read_text()[-3000:]


@pytest.fixture
def sink_process(tmp_path: Path) -> Iterator[Any]:
    """A factory of :class:`SinkProcess`; whatever is still running at the end is killed."""
    made: list[SinkProcess] = []

    def make(config: SimpulConfig, name: str) -> SinkProcess:
        made.append(SinkProcess(config, tmp_path, name))
        return made[-1]

    yield make
    for process in made:
        process.ensure_gone()


@pytest.fixture
def master_db(stack_config: SimpulConfig, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A factory of fresh master-index databases (each a config whose DSN variable points at it)."""
    admin = stack_config.sinks.master_index.dsn()
    created = []

    def make(suffix: str) -> tuple[SimpulConfig, str]:
        database = f"mpi_{unique_name}_{suffix}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        created.append(database)
        dsn = f"{admin.rsplit('/', 1)[0]}/{database}"
        env = f"SIMPUL_TEST_MPI_{suffix.upper()}_DSN"
        monkeypatch.setenv(env, dsn)
        master = stack_config.sinks.master_index.model_copy(update={"dsn_env": env, "database": database})
        return stack_config.model_copy(update={"sinks": stack_config.sinks.model_copy(update={"master_index": master})}), dsn

    yield make
    with psycopg.connect(admin, autocommit=True) as conn:
        for database in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def _topics_config(config: SimpulConfig, name: str, group: str | None = None) -> SimpulConfig:
    processors = config.processors.model_copy(update={
        "citizens_topic": f"{name}.citizens", "links_topic": f"{name}.links", "reviews_topic": f"{name}.reviews", "quality_topic": f"{name}.quality",
    })
    sinks = config.sinks.model_copy(update={"consumer_prefix": group or name})
    return config.model_copy(update={"processors": processors, "sinks": sinks})


def _produce(config: SimpulConfig, outputs: list[tuple[str, str, dict[str, Any] | None, int]]) -> int:
    p = config.processors
    topics = {CITIZEN: p.citizens_topic, LINK: p.links_topic, REVIEW: p.reviews_topic, QUALITY: p.quality_topic}
    create_topics(client_config(config.kafka), [NewTopic(t, 4, 1, config={"cleanup.policy": "compact"}) for t in topics.values()])
    registrar = SchemaRegistrar(SchemaRegistryClient({"url": config.schema_registry.url}))
    keys = {kind: registrar.encoder(topic, KEY_SCHEMA, is_key=True) for kind, topic in topics.items()}
    values = {kind: registrar.encoder(topic, _SCHEMAS[kind]) for kind, topic in topics.items()}
    producer = Producer(reliable_producer_config(client_config(config.kafka)))
    for kind, key, value, ts in outputs:
        producer.produce(topics[kind], key=keys[kind].encode(key), value=values[kind].encode(value) if value is not None else None,
                         headers=[(SOURCE_TS_HEADER, str(ts).encode())])
        producer.poll(0)
    assert producer.flush(60) == 0
    return len(outputs)


def _consumed(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        try:
            row = conn.execute("SELECT coalesce(sum(next_offset), 0) FROM mpi.sink_offset").fetchone()
        except psycopg.errors.UndefinedTable:
            return 0
    return int(row[0]) if row else 0


def _wait_consumed(dsn: str, total: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while _consumed(dsn) < total:
        assert time.monotonic() < deadline, f"the sink consumed {_consumed(dsn)} of {total} messages in {timeout:.0f} s"
        time.sleep(0.5)


_SNAPSHOT = {
    "citizen": "SELECT master_id, anchor_record_id, members, nik, name, birth_date, deceased, lineage, attributes, version, source_updated_at FROM mpi.citizen ORDER BY 1",
    "record_link": "SELECT record_id, master_id, rule, matched_record_id, probability, contributions FROM mpi.record_link ORDER BY 1",
    "review_item": "SELECT pair_key, master_a, master_b, probability FROM mpi.review_item ORDER BY 1",
    "quality_issue": "SELECT issue_key, issue, master_id, record_ids FROM mpi.quality_issue ORDER BY 1",
    "citizen_history": "SELECT master_id, version, change, changed, kafka_topic, kafka_partition, kafka_offset FROM mpi.citizen_history ORDER BY master_id, version",
}


def _snapshot(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        return {name: conn.execute(query).fetchall() for name, query in _SNAPSHOT.items()}


def _expected(outputs: list[tuple[str, str, dict[str, Any] | None, int]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {kind: {} for kind in _SCHEMAS}
    for kind, key, value, _ in outputs:
        if value is None:
            latest[kind].pop(key, None)
        else:
            latest[kind][key] = value
    return latest


@pytest.mark.stack
@pytest.mark.slow
def test_the_master_index_holds_the_latest_state_and_survives_kill_9(
    stack_config: SimpulConfig, master_db: Any, sink_process: Any, unique_name: str
) -> None:
    outputs = _resolver_outputs(400, 11)
    kinds = {kind for kind, _, value, _ in outputs if value is None}
    assert {CITIZEN, LINK} <= kinds, "the load must hold merges (citizen tombstones) and deletes (link tombstones)"
    config = _topics_config(stack_config, unique_name)
    total = _produce(config, outputs)
    expected = _expected(outputs)

    calm_config, calm_dsn = master_db("calm")
    calm = sink_process(_topics_config(calm_config, unique_name, f"{unique_name}-calm"), "calm")
    calm.start()
    _wait_consumed(calm_dsn, total)
    calm.stop()
    calm_state = _snapshot(calm_dsn)

    assert {row[0] for row in calm_state["citizen"]} == set(expected[CITIZEN])
    for master, members, name in ((r[0], r[2], r[4]) for r in calm_state["citizen"]):
        assert members == expected[CITIZEN][master]["members"] and name == expected[CITIZEN][master]["name"]
    assert {row[0]: row[1] for row in calm_state["record_link"]} == {k: v["master_id"] for k, v in expected[LINK].items()}
    assert {row[0] for row in calm_state["review_item"]} == set(expected[REVIEW])
    assert {row[0] for row in calm_state["quality_issue"]} == set(expected[QUALITY])
    history = calm_state["citizen_history"]
    assert {row[2] for row in history} == {"created", "updated", "removed"}
    assert len({(row[0], row[1]) for row in history}) == len(history), "one history row per citizen version"

    # The same load, small batches, the sink killed twice mid-way: the same rows, the same history.
    rough_config, rough_dsn = master_db("rough")
    rough_config = rough_config.model_copy(update={"sinks": rough_config.sinks.model_copy(update={"batch_size": 100})})
    rough = sink_process(_topics_config(rough_config, unique_name, f"{unique_name}-rough"), "rough")
    for fraction in (0.3, 0.7):
        rough.start()
        deadline = time.monotonic() + 120
        while _consumed(rough_dsn) < total * fraction:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rough.kill()
        assert _consumed(rough_dsn) < total, "killed after the end: the test proves nothing"
    rough.start()
    _wait_consumed(rough_dsn, total)
    rough.stop()
    rough_state = _snapshot(rough_dsn)
    for name in _SNAPSHOT:
        assert rough_state[name] == calm_state[name], f"{name} differs after kill -9"


@pytest.mark.stack
def test_a_newer_citizen_schema_and_an_unreadable_message(stack_config: SimpulConfig, master_db: Any, sink_process: Any, unique_name: str) -> None:
    config = _topics_config(stack_config, unique_name)
    _produce(config, [(CITIZEN, "C1", {**_citizen(["disdukcapil:public.penduduk:1"]), "master_id": "C1"}, 1_700_000_000_000)])
    newer = {**CITIZEN_SCHEMA, "fields": [*CITIZEN_SCHEMA["fields"], {"name": "religion", "type": ["null", "string"], "default": None}]}
    registrar = SchemaRegistrar(SchemaRegistryClient({"url": config.schema_registry.url}))
    producer = Producer(client_config(config.kafka))
    topic = config.processors.citizens_topic
    key = registrar.encoder(topic, KEY_SCHEMA, is_key=True)
    producer.produce(topic, key=key.encode("C2"), value=b"not avro")
    producer.produce(topic, key=key.encode("C3"), value=b"\x00\x7f\xff\xff\xffschema id nobody registered")
    producer.produce(topic, key=key.encode("C1"), value=registrar.encoder(topic, newer).encode(
        {**_citizen(["disdukcapil:public.penduduk:1"]), "master_id": "C1", "religion": "ISLAM", "name": "SITI A"}))
    assert producer.flush(30) == 0

    master_config, dsn = master_db("schema")
    sink = sink_process(_topics_config(master_config, unique_name), "schema")
    sink.start()
    _wait_consumed(dsn, 4)
    sink.stop()
    with psycopg.connect(dsn) as conn:
        name, attributes, version = conn.execute("SELECT name, attributes, version FROM mpi.citizen WHERE master_id = 'C1'").fetchone()  # type: ignore[misc]
        dead = conn.execute("SELECT kafka_topic, reason FROM mpi.dead_letter ORDER BY kafka_offset").fetchall()
        changes = conn.execute("SELECT change, changed FROM mpi.citizen_history WHERE master_id = 'C1' ORDER BY version").fetchall()
    assert (name, attributes, version) == ("SITI A", {"religion": "ISLAM"}, 2)
    assert changes[1] == ("updated", {"name": {"old": "SITI AMINAH", "new": "SITI A"}, "attributes": {"old": {}, "new": {"religion": "ISLAM"}}})
    reasons = sorted(reason for _, reason in dead)
    assert len(reasons) == 2 and all(r.startswith("WireFormatError") for r in reasons) and {t for t, _ in dead} == {topic}
    assert any("magic byte" in r for r in reasons) and any("not in the registry" in r for r in reasons)


def _feedback(record_id: str, master: str, **fields: Any) -> dict[str, Any]:
    _, table, key = record_id.split(":", 2)
    value: dict[str, Any] = {name: None for name in FEEDBACK_FIELDS}
    value.update(record_id=record_id, table=table, record_key=key, master_id=master, deceased=False, verified_from={}, updated_ms=1_700_000_000_000)
    value.update(fields)
    return value


@pytest.mark.stack
def test_a_sink_batch_is_what_has_arrived_without_waiting_for_a_full_one(stack_config: SimpulConfig, unique_name: str) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import NewTopic

    topic = f"{unique_name}.arrivals"
    base = client_config(stack_config.kafka)
    create_topics(base, [NewTopic(topic, 1, 1)])
    consumer = Consumer(committing_consumer_config(base, unique_name))
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        started = time.monotonic()
        assert consume_available(consumer, 100, timeout=0.5) == []
        assert time.monotonic() - started >= 0.5

        producer = Producer(reliable_producer_config(base))
        for n in range(3):
            producer.produce(topic, str(n).encode())
        assert producer.flush(30) == 0
        # Three messages and room for 100: handed over when they arrive, not after the 60 s.
        started = time.monotonic()
        batch: list[Any] = []
        while len(batch) < 3:
            batch += [m for m in consume_available(consumer, 100, timeout=60) if m.error() is None]
        assert [m.value() for m in batch] == [b"0", b"1", b"2"]
        assert time.monotonic() - started < 30
    finally:
        consumer.close()


@pytest.mark.stack
def test_feedback_is_written_back_into_each_agency_database(agency_config: SimpulConfig, unique_name: str) -> None:
    sources = [s.model_copy(update={"feedback": s.feedback.model_copy(update={"topic": f"{unique_name}.feedback.{s.name}"})}) for s in agency_config.sources]
    config = agency_config.model_copy(update={"sources": sources, "sinks": agency_config.sinks.model_copy(update={"consumer_prefix": unique_name})})
    dinsos, disnaker = config.source("dinsos"), config.source("disnaker")
    assert dinsos.feedback.write_back and disnaker.feedback.write_back and dinsos.kind == "postgres" and disnaker.kind == "mysql"
    registrar = SchemaRegistrar(SchemaRegistryClient({"url": config.schema_registry.url}))
    producer = Producer(reliable_producer_config(client_config(config.kafka)))
    create_topics(client_config(config.kafka), [NewTopic(s.feedback_topic, 2, 1, config={"cleanup.policy": "compact"}) for s in (dinsos, disnaker)])
    aid = "dinsos:bansos.anggota_penerima:3673:1"
    job = "disnaker:disnaker.ak1_pencari_kerja:77"
    gone = "disnaker:disnaker.ak1_pencari_kerja:78"
    aid_gone = "dinsos:bansos.anggota_penerima:3673:2"
    messages = [
        (dinsos, aid_gone, _feedback(aid_gone, "C4", name="Y")),
        (dinsos, aid_gone, None),
        (dinsos, aid, _feedback(aid, "C1", nik="3673010101900001", name="SITI AMINAH", birth_date="1990-01-01")),
        (dinsos, aid, _feedback(aid, "C1", nik="3673010101900001", name="SITI AMINAH", birth_date="1990-01-01", deceased=True,
                                verified_from={"deceased": "disdukcapil"})),
        (disnaker, job, _feedback(job, "C2", name="BUDI SANTOSO", phone="081234567", titles=["S.T."])),
        (disnaker, gone, _feedback(gone, "C3", name="X")),
        (disnaker, gone, None),
    ]
    for source, key, value in messages:
        topic = source.feedback_topic
        # One partition, so that the last message of each agency is applied after all the others.
        producer.produce(topic, key=registrar.encoder(topic, KEY_SCHEMA, is_key=True).encode(key),
                         value=registrar.encoder(topic, FEEDBACK_SCHEMA).encode(value) if value is not None else None, partition=0)
    assert producer.flush(30) == 0

    def rows() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        with connect_postgres(dinsos) as pg:
            aid_rows = pg.execute("SELECT record_key, master_id, nik, name, deceased, verified_from FROM simpul_citizen_ref").fetchall()
        my = connect_mysql(disnaker)
        with my, my.cursor() as cursor:
            cursor.execute("SELECT record_key, master_id, name, phone, titles, deceased FROM simpul_citizen_ref ORDER BY record_key")
            job_rows = list(cursor.fetchall())
        return aid_rows, job_rows

    shutdown = Shutdown()
    with in_thread(lambda: run_sink(config, "writeback", shutdown), shutdown, 30) as failures:
        deadline = time.monotonic() + 60
        while True:
            assert not failures and time.monotonic() < deadline, "the write-back did not deliver in 60 s"
            try:
                aid_rows, job_rows = rows()
            except (psycopg.errors.UndefinedTable, pymysql.err.ProgrammingError):
                aid_rows, job_rows = [], []
            if len(aid_rows) == 1 and aid_rows[0][4] and len(job_rows) == 1:
                break
            time.sleep(0.3)
    assert aid_rows == [("3673:1", "C1", "3673010101900001", "SITI AMINAH", True, {"deceased": "disdukcapil"})]
    assert [tuple(r) for r in job_rows] == [("77", "C2", "BUDI SANTOSO", "081234567", "S.T.", 0)]
