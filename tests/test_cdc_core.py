"""The connectors' shared core: column rules (pure), the publisher and the offset store (real Kafka)."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from simpul.cdc.envelope import field, key_schema, value_schema
from simpul.cdc.offsets import OffsetStore
from simpul.cdc.publisher import EventPublisher, IncompatibleSchema, PublishError, dead_letter_topic, heartbeat_topic
from simpul.cdc.row_encoding import DeadLetter
from simpul.cdc.transforms import ColumnTransforms
from simpul.config import ColumnRule, ConfigError, SimpulConfig, parse_config


def test_column_rules_shape_schema_and_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NIK_KEY", "rahasia")
    rules = [
        ColumnRule(column="public.penduduk.nik", action="hash", secret_env="NIK_KEY"),
        ColumnRule(column="public.penduduk.no_hp", action="mask", mask_chars=4),
        ColumnRule(column="public.penduduk.foto", action="exclude"),
    ]
    table = ColumnTransforms(rules, "sources.x").for_table("public.penduduk")
    fields = table.fields([field("nik", "string", False), field("no_hp", "string", True), field("foto", "bytes", True), field("umur", "int", True)])
    assert [f["name"] for f in fields] == ["nik", "no_hp", "umur"]
    assert fields[1]["type"] == ["null", "string"]
    row = table.row({"nik": "3673014501900001", "no_hp": "0812", "foto": b"x", "umur": 30})
    assert row["no_hp"] == "****" and "foto" not in row and row["umur"] == 30
    assert len(row["nik"]) == 64 and "3673" not in row["nik"]
    # a keyed hash: stable for the same secret, different for another
    assert table.row({"nik": "3673014501900001"})["nik"] == row["nik"]
    monkeypatch.setenv("NIK_KEY", "lain")
    other = ColumnTransforms(rules, "sources.x").for_table("public.penduduk")
    assert other.row({"nik": "3673014501900001"})["nik"] != row["nik"]
    assert not ColumnTransforms(rules, "sources.x").for_table("public.kartu_keluarga")


def test_hash_without_its_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NIK_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"sources.x.capture.columns\[0\].secret_env: environment variable NIK_KEY is not set"):
        ColumnTransforms([ColumnRule(column="a.b.c", action="hash", secret_env="NIK_KEY")], "sources.x")
    with pytest.raises(ValueError, match="action hash needs secret_env"):
        ColumnRule(column="a.b.c", action="hash")


def test_column_rule_must_name_a_captured_table() -> None:
    raw = {"sources": [{"name": "s", "agency": "A", "kind": "postgres", "dsn_env": "X", "database": "d", "topic_prefix": "s",
                        "tables": ["public.a"], "capture": {"columns": [{"column": "public.b.nik", "action": "exclude"}]}}]}
    with pytest.raises(ConfigError, match="sources.s: Value error, capture.columns: 'public.b.nik' is not a column of a captured table|capture.columns: 'public.b.nik'"):
        parse_config(raw)


def _source_config(config: SimpulConfig, prefix: str) -> SimpulConfig:
    source = config.sources[0].model_copy(update={"name": prefix, "topic_prefix": prefix})
    return config.model_copy(update={"sources": [source]})


def _consume(config: SimpulConfig, topic: str, count: int, group: str) -> list:
    consumer = Consumer({"bootstrap.servers": config.kafka.bootstrap_servers, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    messages, deadline = [], time.monotonic() + 30
    try:
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()
    return messages


@pytest.mark.stack
def test_publisher_confirms_only_acknowledged_positions_and_sets_bad_rows_aside(stack_config: SimpulConfig, unique_name: str) -> None:
    config = _source_config(stack_config, unique_name)
    source = config.sources[0]
    topic = f"{unique_name}.public.orang"
    key = key_schema(topic, [field("id", "int", False)])
    value = value_schema(topic, [field("id", "int", True), field("nama", "string", True)])
    envelope = {"type": "record", "name": "Envelope", "namespace": topic, "fields": [
        {"name": "after", "type": ["null", value], "default": None}, {"name": "op", "type": "string"}]}
    publisher = EventPublisher(config, source)
    try:
        publisher.ensure_topics([topic])
        assert publisher.confirmed() is None
        keys, values = publisher.encoder(topic, key, True), publisher.encoder(topic, envelope, False)
        events = [(topic, keys.encode({"id": n}), values.encode({"after": {"id": n, "nama": f"orang {n}"}, "op": "c"}), "public.orang", "c",
                   int(time.time() * 1000)) for n in range(100)]
        publisher.publish_many(events)
        publisher.checkpoint({"lsn": 100})
        publisher.publish_many([(topic, keys.encode({"id": 1}), None, "public.orang", None, None)])  # tombstone
        publisher.checkpoint({"lsn": 101})
        publisher.heartbeat(int(time.time() * 1000))
        publisher.dead_letter(DeadLetter("encode_error", "value out of range", "public.orang", {"lsn": 102}, {"id": 7}, {"id": 7, "nama": b"\xff"}))
        publisher.flush()
        assert publisher.confirmed() == {"lsn": 101}
        assert publisher.confirmed() is None
        bad = {"type": "record", "name": "Envelope", "namespace": topic, "fields": [{"name": "op", "type": "int"}]}
        with pytest.raises(IncompatibleSchema, match=f"{topic}-value"):
            publisher.encoder(topic, bad, False)
    finally:
        publisher.close()

    client = SchemaRegistryClient({"url": config.schema_registry.url})
    deserialize = AvroDeserializer(client)
    messages = _consume(config, topic, 101, unique_name)
    assert len(messages) == 101
    values = [deserialize(m.value(), SerializationContext(topic, MessageField.VALUE)) for m in messages if m.value() is not None]
    keys = [deserialize(m.key(), SerializationContext(topic, MessageField.KEY)) for m in messages]
    assert sorted(v["after"]["id"] for v in values) == list(range(100))
    assert {"after": {"id": 0, "nama": "orang 0"}, "op": "c"} in values
    tombstones = [k for k, m in zip(keys, messages) if m.value() is None]
    assert tombstones == [{"id": 1}]
    # murmur2 partitioning: every event of one key lands on one partition, after its create
    assert len({m.partition() for k, m in zip(keys, messages) if k == {"id": 1}}) == 1
    letters = _consume(config, dead_letter_topic(source), 1, unique_name + "dlq")
    body = json.loads(letters[0].value())
    assert body["reason"] == "encode_error" and body["position"] == {"lsn": 102} and body["row"]["nama"] == {"base64": "/w=="}
    assert dict(letters[0].headers())["__connect.errors.exception.message"] == b"value out of range"
    beats = _consume(config, heartbeat_topic(source), 1, unique_name + "hb")
    assert deserialize(beats[0].key(), SerializationContext(heartbeat_topic(source), MessageField.KEY)) == {"serverName": unique_name}


class SmallQueuePublisher(EventPublisher):
    local_queue_messages = 40


@pytest.mark.stack
def test_publisher_batches_wait_for_room_in_a_full_local_queue_and_keep_each_keys_order(stack_config: SimpulConfig, unique_name: str) -> None:
    config = _source_config(stack_config, unique_name)
    topic = f"{unique_name}.public.orang"
    publisher = SmallQueuePublisher(config, config.sources[0])
    try:
        publisher.ensure_topics([topic])
        for round_ in range(3):  # 3 x 100 events, each round more than the queue holds
            publisher.publish_many([(topic, b"%d" % (n % 10), b"%d:%d" % (round_, n), "public.orang", "u", None) for n in range(100)])
            publisher.checkpoint({"lsn": round_})
        publisher.flush()
        assert publisher.confirmed() == {"lsn": 2} and publisher.in_flight == 0
        with pytest.raises(PublishError, match="too large|MSG_SIZE"):
            publisher.publish_many([(topic, b"big", b"x" * 2_000_000, "public.orang", "c", None)])
    finally:
        publisher.close()
    messages = _consume(config, topic, 300, unique_name)
    assert len(messages) == 300
    by_key: dict[bytes, list[tuple[int, int]]] = {}
    for message in messages:
        round_, n = map(int, message.value().split(b":"))
        by_key.setdefault(message.key(), []).append((round_, n))
    assert all(values == sorted(values) and len(values) == 30 for values in by_key.values())


@pytest.mark.stack
def test_offset_store_survives_a_new_instance(stack_config: SimpulConfig, unique_name: str) -> None:
    topic = f"{unique_name}.offsets"
    store = OffsetStore(stack_config, topic)
    assert store.load("disdukcapil") is None
    store.save("disdukcapil", {"lsn": 42, "snapshot_completed": True})
    store.save("disnaker", {"file": "mariadb-bin.000001", "pos": 4})
    store.forget("disnaker")
    store.close()
    again = OffsetStore(stack_config, topic)
    try:
        assert again.load("disdukcapil") == {"lsn": 42, "snapshot_completed": True}
        assert again.load("disnaker") is None
    finally:
        again.close()
