"""The stream processors against real Kafka: a seeded city captured by the real CDC connectors,
resolved by a Faust worker process, compared with the batch twin, each agency's feedback topic
agreeing with the links; replays with shuffled, duplicated events on 4 partitions; a worker killed
with SIGKILL mid-stream; live updates and deletes moving records between citizens."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import free_port
from simpul.config import SimpulConfig, write_config
from simpul.er_offline import export_records, read_records
from simpul.kafka import client_config, create_topics
from simpul.mainjob import scrape_sums
from simpul.metrics import metrics_port
from simpul.seed.city import seed_city
from simpul.streams.changes import decode_changes
from simpul.streams.citizens import FEEDBACK_FIELDS
from simpul.streams.mapping import load_mapping
from simpul.streams.resolve import resolve

pytestmark = [pytest.mark.stack, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CITIZENS = 1500


def _with_processors(config: SimpulConfig, name: str, prefix: str | None = None) -> SimpulConfig:
    """A copy whose processors use their own app id and topics (``name``, feedback topics included),
    reading ``prefix``'s CDC topics."""
    sources = [s.model_copy(update={"feedback": s.feedback.model_copy(update={"topic": f"{name}.feedback.{s.name}"})}) for s in config.sources]
    if prefix is not None:
        sources = [s.model_copy(update={"topic_prefix": f"{prefix}-{s.name}"}) for s in sources]
    processors = config.processors.model_copy(update={
        "app_id": name,
        "changes_topic": f"{name}.changes", "citizens_topic": f"{name}.citizens", "links_topic": f"{name}.links",
        "reviews_topic": f"{name}.reviews", "quality_topic": f"{name}.quality", "dlq_topic": f"{name}.dlq",
    })
    return config.model_copy(update={"sources": sources, "processors": processors})


def _end_offsets(config: SimpulConfig, topics: list[str]) -> int:
    consumer = Consumer(client_config(config.kafka, **{"group.id": "offsets-probe"}))
    try:
        total = 0
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=10).topics[topic]
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                total += high - low
        return total
    finally:
        consumer.close()


def _cdc_topics(config: SimpulConfig) -> list[str]:
    return [f"{s.topic_prefix}.{t}" for s in config.sources for t in s.tables]


class Worker:
    """``simpul streams run`` as a child process, with its metrics port."""

    def __init__(self, config: SimpulConfig, tmp: Path) -> None:
        self.config = config.model_copy(update={"metrics": config.metrics.model_copy(update={"port": free_port() - 6})})
        self.file = write_config(self.config, tmp / f"{config.processors.app_id}.yaml")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "SIMPUL_LOG_LEVEL": "WARNING"}
        command = [sys.executable, "-m", "simpul.cli", "--config", str(self.file), "streams", "run"]
        self.process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> str:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        _, stderr = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, stderr.decode()[-3000:]
        return stderr.decode()

    def metrics(self, role: str = "resolver") -> str:
        port = metrics_port(self.config, role)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return response.read().decode()


def read_latest(config: SimpulConfig, topic: str, until: Callable[[dict[Any, Any]], bool], timeout: float = 180) -> dict[Any, Any]:
    """The latest value per key of a compacted topic (tombstones remove the key), read until ``until``."""
    deserialize = AvroDeserializer(SchemaRegistryClient({"url": config.schema_registry.url}))
    consumer = Consumer(client_config(config.kafka, **{"group.id": f"latest-{time.monotonic_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
    consumer.subscribe([topic])
    latest: dict[Any, Any] = {}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if until(latest):
                    break
                continue
            if message.error() is not None:
                continue
            key = deserialize(message.key(), SerializationContext(topic, MessageField.KEY))
            if message.value() is None:
                latest.pop(key, None)
            else:
                latest[key] = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE))
    finally:
        consumer.close()
    return latest


def _groups(assignment: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for record_id, cluster in assignment.items():
        groups[cluster].add(record_id)
    return {frozenset(g) for g in groups.values()}


@pytest.fixture(scope="module")
def city(module_agency_config: SimpulConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A seeded city captured to Kafka by the real connectors, the trained model, and the batch answer."""
    tmp = tmp_path_factory.mktemp("streams")
    name = f"s{random.randrange(16**8):08x}"
    base = module_agency_config
    sources = [s.model_copy(update={"topic_prefix": f"{name}-{s.name}", "capture": s.capture.model_copy(update={"slot": f"{name}_{s.name}"})})
               for s in base.sources]
    processors = base.processors.model_copy(update={"estimates": tmp / "estimates.json", "session_timeout_s": 6.0})
    config = base.model_copy(update={"sources": sources, "processors": processors})
    seed_city(config, CITIZENS, 17, tmp / "truth")

    records_file = tmp / "records.jsonl"
    export_records(config, load_mapping(), records_file)
    records = read_records(records_file)
    batch = resolve(records)
    (tmp / "estimates.json").write_text(batch.model.to_json(), encoding="utf-8")

    config_file = write_config(config, tmp / "cdc.yaml")
    env = {**os.environ, "SIMPUL_LOG_LEVEL": "WARNING"}
    connectors = [
        subprocess.Popen([sys.executable, "-m", "simpul.cli", "--config", str(config_file), "cdc", "run", "--source", s.name],
                         env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for s in sources
    ]
    captured = False
    try:
        deadline = time.monotonic() + 120
        # Every captured table is a mapped one, so the snapshot is done when there is an event per record.
        while time.monotonic() < deadline and not captured:
            captured = _topics_exist(config) and _end_offsets(config, _cdc_topics(config)) >= len(records)
            time.sleep(0.5)
    finally:
        for connector in connectors:
            connector.send_signal(signal.SIGTERM)
        errors = [connector.communicate(timeout=60)[1].decode()[-1500:] for connector in connectors]
    assert captured, f"the connectors did not capture the seeded city in time: {errors}"
    yield {"config": config, "tmp": tmp, "records": records, "batch": batch.clusters}


def _topics_exist(config: SimpulConfig) -> bool:
    consumer = Consumer(client_config(config.kafka, **{"group.id": "topics-probe"}))
    try:
        listed = consumer.list_topics(timeout=10).topics
        return all(t in listed for t in _cdc_topics(config))
    finally:
        consumer.close()


def _run_until_resolved(config: SimpulConfig, tmp: Path, records: int, kill_at: float | None = None) -> tuple[dict[str, Any], Worker]:
    """Run a worker until every record has its link; with ``kill_at``, SIGKILL it once that share
    of the records is linked, and start it again."""
    worker = Worker(config, tmp)
    worker.start()
    if kill_at is not None:
        deadline = time.monotonic() + 120
        applied = 0.0
        while applied < records * kill_at and time.monotonic() < deadline:
            sums = scrape_sums(f"http://127.0.0.1:{metrics_port(worker.config, 'resolver')}/metrics", "simpul_resolver_records_in_total")
            applied = sums["simpul_resolver_records_in_total"] if sums is not None else 0.0
            time.sleep(0.05)
        assert records * kill_at <= applied < records, f"not killed mid-stream: {applied} of {records} applied"
        worker.kill()
        worker.start()
    links = read_latest(config, config.processors.links_topic, lambda latest: len(latest) >= records)
    return links, worker


def test_worker_resolves_the_captured_city_like_the_batch_twin(city: dict[str, Any]) -> None:
    config = _with_processors(city["config"], f"{city['config'].sources[0].topic_prefix}-a")
    links, worker = _run_until_resolved(config, city["tmp"], len(city["records"]))
    aid = config.source("dinsos")
    aid_links = {record_id: link["master_id"] for record_id, link in links.items() if link["source"] == aid.name}
    try:
        citizens = read_latest(config, config.processors.citizens_topic, lambda latest: sum(len(c["members"]) for c in latest.values()) >= len(links))
        feedback = read_latest(config, aid.feedback_topic,
                               lambda latest: all(r in latest and latest[r]["master_id"] == m for r, m in aid_links.items()))
        exposed = worker.metrics()
    finally:
        worker.stop()
    streamed = {record_id: link["master_id"] for record_id, link in links.items()}
    assert set(streamed) == set(city["batch"])
    differ = _groups(streamed) ^ _groups(city["batch"])
    assert not differ, f"{len(differ)} groups differ, e.g. {sorted(sorted(g) for g in differ)[:6]}"
    # The citizens topic agrees with the links, and every golden field names the record it came from.
    assert {m for m in streamed.values()} == set(citizens)
    for master, citizen in citizens.items():
        assert sorted(citizen["members"]) == sorted(r for r, m in streamed.items() if m == master)
        assert set(citizen["lineage"].values()) <= set(citizen["members"])
    # The aid agency hears back about exactly its records, each with the master id its link has,
    # and nothing outside its scope.
    assert aid_links, "the seeded city has no Dinsos records"
    assert {record_id: value["master_id"] for record_id, value in feedback.items()} == aid_links
    for value in feedback.values():
        assert all(value[f] is None for f in FEEDBACK_FIELDS if f not in aid.feedback.fields)
        assert set(value["verified_from"]) <= {*aid.feedback.fields, "deceased"}
    for name in ("simpul_resolver_records_in_total", "simpul_resolver_decisions_total", "simpul_router_events_total", "simpul_resolver_apply_seconds_bucket"):
        assert name in exposed, name
    assert 'output="feedback"' in exposed
    city["masters"] = streamed


def _copy_shuffled(config: SimpulConfig, target_prefix: str, partitions: int, seed: int) -> SimpulConfig:
    """Copy every CDC message, shuffled, every fifth one twice, into new topics of ``partitions`` partitions."""
    copied = config.model_copy(update={"sources": [s.model_copy(update={"topic_prefix": f"{target_prefix}-{s.name}"}) for s in config.sources]})
    pairs = list(zip(_cdc_topics(config), _cdc_topics(copied)))
    create_topics(client_config(config.kafka), [NewTopic(target, partitions, 1) for _, target in pairs])
    messages = []
    for source_topic, target_topic in pairs:
        consumer = Consumer(client_config(config.kafka, **{"group.id": f"copy-{time.monotonic_ns()}", "auto.offset.reset": "earliest", "enable.auto.commit": False}))
        consumer.subscribe([source_topic])
        expected = _end_offsets(config, [source_topic])
        got = 0
        deadline = time.monotonic() + 60
        while got < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            got += 1
            messages.append((target_topic, message.key(), message.value()))
        consumer.close()
    rng = random.Random(seed)
    rng.shuffle(messages)
    messages += rng.sample(messages, len(messages) // 5)
    rng.shuffle(messages)
    producer = Producer(client_config(config.kafka))
    for topic, key, value in messages:
        # Random partitions: per-key order is lost on purpose; the source positions must restore it.
        producer.produce(topic, key=key, value=value, partition=rng.randrange(partitions))
    producer.flush(30)
    return copied


def test_shuffled_duplicated_events_on_4_partitions_give_the_same_citizens_and_ids(city: dict[str, Any]) -> None:
    if "masters" not in city:
        pytest.skip("needs the first run's citizens")
    name = f"{city['config'].sources[0].topic_prefix}-b"
    copied = _copy_shuffled(city["config"], name, 4, seed=5)
    config = _with_processors(copied, name)
    links, worker = _run_until_resolved(config, city["tmp"], len(city["records"]))
    try:
        exposed = worker.metrics()
    finally:
        worker.stop()
    assert {r: link["master_id"] for r, link in links.items()} == city["masters"]
    assert 'simpul_resolver_events_skipped_total{reason="stale"}' in exposed or 'reason="repeated"' in exposed


def test_worker_killed_mid_stream_then_restarted_gives_the_same_result(city: dict[str, Any]) -> None:
    if "masters" not in city:
        pytest.skip("needs the first run's citizens")
    config = _with_processors(city["config"], f"{city['config'].sources[0].topic_prefix}-c")
    links, worker = _run_until_resolved(config, city["tmp"], len(city["records"]), kill_at=0.15)
    worker.stop()
    assert {r: link["master_id"] for r, link in links.items()} == city["masters"]


def test_a_worker_without_its_local_state_recovers_it_from_the_changelog(city: dict[str, Any]) -> None:
    if "masters" not in city:
        pytest.skip("needs the first run's citizens")
    config = _with_processors(city["config"], f"{city['config'].sources[0].topic_prefix}-d")
    links, worker = _run_until_resolved(config, city["tmp"], len(city["records"]))
    worker.stop()
    assert {r: link["master_id"] for r, link in links.items()} == city["masters"]
    shutil.rmtree(config.home / "processors" / config.processors.app_id)
    # Every change once more, with its source position: only a recovered state knows them all.
    replayed = _append_again(config, config.processors.changes_topic)
    metrics_url = f"http://127.0.0.1:{metrics_port(worker.config, 'resolver')}/metrics"
    worker.start()
    try:
        deadline = time.monotonic() + 120
        skipped = 0.0
        while skipped < replayed and time.monotonic() < deadline:
            sums = scrape_sums(metrics_url, "simpul_resolver_events_skipped_total", "simpul_resolver_records_in_total")
            skipped = sums["simpul_resolver_events_skipped_total"] if sums is not None else 0.0
            time.sleep(0.2)
        # More than the replay when the first run's last changes were applied but their offset not
        # yet committed: those come again too, and a recovered state knows them as well.
        assert skipped >= replayed
        assert sums is not None and sums["simpul_resolver_records_in_total"] == skipped
    finally:
        worker.stop()
    after = read_latest(config, config.processors.links_topic, lambda latest: len(latest) >= len(links))
    assert {r: link["master_id"] for r, link in after.items()} == city["masters"]


def _append_again(config: SimpulConfig, topic: str) -> int:
    """Append a copy of every message of ``topic`` (one partition) to it; returns how many row changes they hold."""
    consumer = Consumer(client_config(config.kafka, **{"group.id": f"again-{time.monotonic_ns()}", "enable.auto.commit": False}))
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    consumer.assign([TopicPartition(topic, 0, low)])
    producer = Producer(client_config(config.kafka))
    changes = 0
    try:
        offset = low
        while offset < high:
            message = consumer.poll(5)
            assert message is not None and message.error() is None
            offset = message.offset() + 1
            changes += len(decode_changes(message.value()))
            producer.produce(topic, message.value(), message.key())
    finally:
        consumer.close()
    producer.flush(30)
    return changes


def test_live_update_and_delete_move_a_record_between_citizens(city: dict[str, Any]) -> None:
    if "masters" not in city:
        pytest.skip("needs the first run's citizens")
    config = _with_processors(city["config"], f"{city['config'].sources[0].topic_prefix}-a")
    masters: dict[str, str] = city["masters"]
    sizes: dict[str, int] = defaultdict(int)
    for master in masters.values():
        sizes[master] += 1
    patient = next(r for r, m in sorted(masters.items()) if r.startswith("dinkes:") and sizes[m] == 1)
    person = next(r for r, m in sorted(masters.items()) if r.startswith("disdukcapil:public.penduduk:") and sizes[m] == 1)
    registry = next(s for s in config.sources if s.name == "disdukcapil")
    clinic = next(s for s in config.sources if s.name == "dinkes")
    with psycopg.connect(registry.dsn()) as conn:
        nik, name, sex, born = conn.execute(
            "SELECT nik, nama_lengkap, jenis_kelamin, tanggal_lahir FROM penduduk WHERE nik = %s", (person.rsplit(":", 1)[1],)).fetchone()

    config_file = write_config(config, city["tmp"] / "live.yaml")
    connector = subprocess.Popen([sys.executable, "-m", "simpul.cli", "--config", str(config_file), "cdc", "run", "--source", "dinkes"],
                                 env=os.environ.copy(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    worker = Worker(config, city["tmp"])
    worker.start()
    links_topic = config.processors.links_topic
    try:
        # The clinic finds the patient's NIK card: the patient is that registry resident now (a merge).
        with psycopg.connect(clinic.dsn(), autocommit=True) as conn:
            conn.execute("UPDATE pasien SET nik = %s, nama_pasien = %s, jk = %s, tgl_lahir = %s WHERE no_rm = %s",
                         (nik, name, "L" if sex.upper().startswith("L") else "P", born, patient.rsplit(":", 1)[1]))
        def joined(latest: dict[Any, Any]) -> bool:
            return patient in latest and person in latest and latest[patient]["master_id"] == latest[person]["master_id"]

        merged = read_latest(config, links_topic, joined, timeout=90)
        assert joined(merged) and merged[patient]["rule"] == "nik"
        # The merged citizen keeps the id of the one first seen in the sources; the other is gone.
        kept = merged[person]["master_id"]
        gone = ({masters[person], masters[patient]} - {kept}).pop()
        assert kept in (masters[person], masters[patient])
        citizens = read_latest(config, config.processors.citizens_topic, lambda latest: gone not in latest and kept in latest, timeout=60)
        assert gone not in citizens and sorted(citizens[kept]["members"]) == sorted([person, patient])

        # The record is deleted at the clinic: its link goes, the resident's citizen keeps its id.
        with psycopg.connect(clinic.dsn(), autocommit=True) as conn:
            conn.execute("DELETE FROM pasien WHERE no_rm = %s", (patient.rsplit(":", 1)[1],))
        after = read_latest(config, links_topic, lambda latest: patient not in latest, timeout=90)
        assert patient not in after and after[person]["master_id"] == masters[person]

        # Bytes that are no Avro event are set aside with the reason, and the stream goes on.
        producer = Producer(client_config(config.kafka))
        producer.produce(f"{clinic.topic_prefix}.public.pasien", key=b"k", value=b"not an event")
        producer.flush(10)
        dead = _dead_letters(config)
        assert dead and dead[-1][0] == b"not an event"
        assert dead[-1][1]["stage"] == b"router" and dead[-1][1]["reason"].startswith(b"WireFormatError")
        router_metrics = worker.metrics("router")
        assert 'simpul_streams_dead_letters_total{reason="WireFormatError",stage="router"} 1.0' in router_metrics
        assert f'simpul_router_consumer_lag_messages{{topic="{clinic.topic_prefix}.public.pasien"}}' in router_metrics
    finally:
        worker.stop()
        connector.send_signal(signal.SIGTERM)
        connector.communicate(timeout=60)


def _dead_letters(config: SimpulConfig, timeout: float = 60) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = Consumer(client_config(config.kafka, **{"group.id": f"dlq-{time.monotonic_ns()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([config.processors.dlq_topic])
    found: list[tuple[bytes, dict[str, bytes]]] = []
    deadline = time.monotonic() + timeout
    try:
        while not found and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append((message.value(), dict(message.headers() or [])))
    finally:
        consumer.close()
    return found
