"""Simpul's schema registry: the service over an in-memory log (pure), then the real thing
against the test stack's Kafka with confluent-kafka's own client, serializer and deserializer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from conftest import free_port
from simpul.config import SchemaRegistrySettings, SimpulConfig
from simpul.kafka import create_topics
from simpul.schemas.registry import RegistryServer, RegistrySettings
from simpul.schemas.registry.service import RegistryError, RegistryService, SchemaRequest
from simpul.schemas.registry.state import RegistryState
from simpul.kafka_store import Apply
from simpul.schemas.registrar import SchemaRegistrar
from simpul.schemas.wire import ConfluentAvroDecoder

V1 = {"type": "record", "name": "Value", "namespace": "t", "fields": [{"name": "id", "type": "int"}]}
V2 = {
    "type": "record",
    "name": "Value",
    "namespace": "t",
    "fields": [{"name": "id", "type": "int"}, {"name": "nama", "type": ["null", "string"], "default": None}],
}
V_INCOMPATIBLE = {"type": "record", "name": "Value", "namespace": "t", "fields": [{"name": "id", "type": "string"}]}


def avro(schema: dict[str, Any]) -> Schema:
    return Schema(json.dumps(schema), "AVRO")


def request(schema: dict[str, Any]) -> SchemaRequest:
    return SchemaRequest.from_body({"schema": json.dumps(schema)})


# --- the service over an in-memory log ---------------------------------------------------------


class MemoryLog:
    """A single-partition log in memory, read like the storage topic."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes | None]] = []
        self._read = 0

    def end_offset(self, cached: bool = False) -> int:
        return len(self.records)

    def catch_up(self, apply: Apply) -> int:
        return self.read_to(apply, self.end_offset())

    def read_to(self, apply: Apply, end: int) -> int:
        fresh = self.records[self._read : end]
        for key, value in fresh:
            apply(key, value)
        self._read = max(self._read, end)
        return len(fresh)

    def append(self, key: bytes, value: bytes | None) -> int:
        self.records.append((key, value))
        return len(self.records) - 1


def new_service(log: MemoryLog | None = None) -> RegistryService:
    service = RegistryService(log or MemoryLog())
    service.start()
    return service


def test_register_assigns_versions_and_global_ids() -> None:
    service = new_service()
    first = service.register("a-value", request(V1))
    second = service.register("a-value", request(V2))
    shared = service.register("b-value", request(V1))
    assert (first.version, first.schema_id) == (1, 1)
    assert (second.version, second.schema_id) == (2, 2)
    assert (shared.version, shared.schema_id) == (1, 1)  # same schema, same id across subjects
    assert service.register("a-value", request(V1)).version == 1  # idempotent
    assert service.subjects() == ["a-value", "b-value"]
    assert service.schema_count() == 2


def test_identity_ignores_formatting() -> None:
    service = new_service()
    spaced = SchemaRequest.from_body({"schema": json.dumps(V1, indent=4)})
    wrapped = SchemaRequest.from_body({"schema": json.dumps({**V1, "fields": [{"name": "id", "type": {"type": "int"}}]})})
    assert service.register("a", spaced).schema_id == service.register("a", wrapped).schema_id == 1


def test_replaying_the_log_gives_the_same_state() -> None:
    log = MemoryLog()
    service = new_service(log)
    service.register("a", request(V1))
    service.register("a", request(V2))
    service.set_level("a", "FULL")
    service.delete_version("a", 1)
    copy = MemoryLog()
    copy.records = list(log.records)
    replayed = new_service(copy)
    assert replayed.versions("a") == [2]
    assert replayed.versions("a", deleted=True) == [1, 2]
    assert replayed.level("a") == "FULL"
    assert replayed.register("c", request(V_INCOMPATIBLE)).schema_id == 3


def test_incompatible_registration_is_refused_with_409_naming_the_field() -> None:
    service = new_service()
    service.register("a", request(V1))
    with pytest.raises(RegistryError) as refused:
        service.register("a", request(V_INCOMPATIBLE))
    assert (refused.value.status, refused.value.code) == (409, 409)
    assert "id: writer type int cannot be read as string" in refused.value.message
    service.set_level("a", "NONE")
    assert service.register("a", request(V_INCOMPATIBLE)).version == 2


def test_soft_delete_hides_versions_and_numbering_continues() -> None:
    service = new_service()
    service.register("a", request(V1))
    service.register("a", request(V2))
    assert service.delete_version("a", "latest") == 2
    assert service.version("a", "latest").version == 1
    with pytest.raises(RegistryError) as missing:
        service.version("a", 2)
    assert missing.value.code == 40402
    assert service.version("a", 2, deleted=True).deleted
    assert service.delete_subject("a") == [1]
    assert service.subjects() == [] and service.subjects(deleted=True) == ["a"]
    with pytest.raises(RegistryError) as gone:
        service.versions("a")
    assert gone.value.code == 40401
    again = service.register("a", request(V1))
    assert (again.version, again.schema_id) == (3, 1)


def test_permanent_delete_is_refused() -> None:
    service = new_service()
    service.register("a", request(V1))
    with pytest.raises(RegistryError) as refused:
        service.delete_subject("a", permanent=True)
    assert refused.value.code == 42205


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"schema": "{not json"}, 42201),
        ({"schema": json.dumps({"type": "record", "name": "R", "fields": [{"name": "a", "type": "Nope"}]})}, 42201),
        ({"schema": "{}", "schemaType": "PROTOBUF"}, 42201),
        ({"nothing": 1}, 42201),
    ],
)
def test_invalid_schemas(body: dict[str, Any], code: int) -> None:
    with pytest.raises(RegistryError) as invalid:
        SchemaRequest.from_body(body)
    assert invalid.value.code == code


@pytest.mark.parametrize("version", ["0", "-2", "abc", str(2**31)])
def test_invalid_versions(version: str) -> None:
    service = new_service()
    service.register("a", request(V1))
    with pytest.raises(RegistryError) as invalid:
        service.version("a", version)
    assert invalid.value.code == 42202


def test_levels_and_compatibility_tests() -> None:
    service = new_service()
    assert service.level(None) == "BACKWARD"
    with pytest.raises(RegistryError) as unset:
        service.level("a", default_to_global=False)
    assert unset.value.code == 40408
    service.register("a", request(V1))
    assert service.test_compatibility("a", request(V2), "latest") == []
    assert service.test_compatibility("a", request(V_INCOMPATIBLE), "1") != []
    assert service.test_compatibility("empty", request(V1), "latest") == []
    service.set_level(None, "NONE")
    assert service.test_compatibility("a", request(V_INCOMPATIBLE), None) == []
    assert service.delete_level(None) == "NONE"
    assert service.level(None) == "BACKWARD"


def test_state_skips_unknown_key_types() -> None:
    state = RegistryState()
    state.apply(b'{"keytype":"NOOP","magic":0}', b"{}")
    assert state.subjects == {} and state.next_id() == 1


# --- the real registry against Kafka ------------------------------------------------------------


def registry_config(config: SimpulConfig, port: int) -> SimpulConfig:
    return config.model_copy(update={"schema_registry": SchemaRegistrySettings(url=f"http://127.0.0.1:{port}")})


@pytest.fixture
def storage_topic(unique_name: str) -> str:
    return f"_schemas_{unique_name}"


@pytest.fixture
def registry(stack_config: SimpulConfig, storage_topic: str) -> Iterator[RegistryServer]:
    server = RegistryServer(RegistrySettings.from_config(registry_config(stack_config, 0), storage_topic))
    with server:
        yield server


def client_for(server: RegistryServer) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": server.url, "max.retries": 0})


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.stack
def test_client_registers_looks_up_and_reads_versions(registry: RegistryServer) -> None:
    client = client_for(registry)
    first = client.register_schema("orders-value", avro(V1))
    second = client.register_schema("orders-value", avro(V2))
    assert client.register_schema("customers-value", avro(V1)) == first
    assert client.get_subjects() == ["customers-value", "orders-value"]
    assert client.get_versions("orders-value") == [1, 2]
    latest = client.get_latest_version("orders-value")
    assert (latest.version, latest.schema_id) == (2, second)
    looked_up = client.lookup_schema("orders-value", avro(V1))
    assert (looked_up.version, looked_up.schema_id) == (1, first)
    assert json.loads(client.get_schema(second).schema_str) == V2
    assert client.get_version("orders-value", 1).schema_id == first
    assert client.get_schema_types() == ["AVRO"]
    assert sorted(client.get_subjects_by_schema_id(first)) == ["customers-value", "orders-value"]
    assert {(v.subject, v.version) for v in client.get_schema_versions(first)} == {("customers-value", 1), ("orders-value", 1)}
    assert client.get_compatibility() == "BACKWARD"
    client.set_compatibility("orders-value", "FULL")
    assert client.get_compatibility("orders-value") == "FULL"


@pytest.mark.stack
def test_incompatible_schema_gets_409_and_the_client_raises(registry: RegistryServer) -> None:
    client = client_for(registry)
    client.register_schema("orders-value", avro(V1))
    with pytest.raises(SchemaRegistryError) as refused:
        client.register_schema("orders-value", avro(V_INCOMPATIBLE))
    assert refused.value.http_status_code == 409 and refused.value.error_code == 409
    assert "id: writer type int cannot be read as string" in refused.value.error_message
    assert client.test_compatibility("orders-value", avro(V2)) is True
    status, verdict = http(
        "POST", f"{registry.url}/compatibility/subjects/orders-value/versions/latest?verbose=true",
        {"schema": json.dumps(V_INCOMPATIBLE)},
    )
    assert status == 200 and verdict["is_compatible"] is False
    assert any("id: writer type int" in message for message in verdict["messages"])


@pytest.mark.stack
def test_error_codes_over_http(registry: RegistryServer) -> None:
    base = registry.url
    client_for(registry).register_schema("s", avro(V1))
    assert http("GET", f"{base}/subjects/nope/versions") == (404, {"error_code": 40401, "message": "Subject 'nope' not found."})
    assert http("GET", f"{base}/subjects/s/versions/9")[1]["error_code"] == 40402
    assert http("GET", f"{base}/schemas/ids/999")[1]["error_code"] == 40403
    assert http("POST", f"{base}/subjects/s", {"schema": json.dumps(V2)})[1]["error_code"] == 40403
    assert http("POST", f"{base}/subjects/s/versions", {"schema": "{bad"})[1]["error_code"] == 42201
    assert http("GET", f"{base}/subjects/s/versions/zero")[1]["error_code"] == 42202
    assert http("PUT", f"{base}/config", {"compatibility": "SIDEWAYS"})[1]["error_code"] == 42203
    assert http("GET", f"{base}/subjects/s/versions/1/schema") == (200, V1)
    assert http("GET", f"{base}/")[0] == 200
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'simpul_registry_requests_total{method="GET",route="/subjects/{subject}/versions",status="404"} 1.0' in metrics
    assert "simpul_registry_schemas 1.0" in metrics


@pytest.mark.stack
def test_soft_delete_hides_a_version(registry: RegistryServer) -> None:
    client = client_for(registry)
    client.register_schema("s", avro(V1))
    client.register_schema("s", avro(V2))
    assert client.delete_version("s", 2) == 2
    assert client.get_versions("s") == [1]
    assert client.get_versions("s", deleted=True) == [1, 2]
    assert client.get_latest_version("s").version == 1
    assert http("GET", f"{registry.url}/subjects/s/versions/2")[1]["error_code"] == 40402
    assert client.delete_subject("s") == [1]
    assert client.get_subjects() == []
    with pytest.raises(SchemaRegistryError):
        client.delete_subject("s", permanent=True)


@pytest.mark.stack
def test_restart_serves_the_same_ids_and_versions(stack_config: SimpulConfig, storage_topic: str) -> None:
    settings = RegistrySettings.from_config(registry_config(stack_config, 0), storage_topic)
    with RegistryServer(settings) as first:
        client = client_for(first)
        ids = [client.register_schema("a-value", avro(V1)), client.register_schema("a-value", avro(V2))]
        client.register_schema("b-value", avro(V2))
        client.delete_version("a-value", 1)
        client.set_compatibility("b-value", "NONE")
    with RegistryServer(settings) as second:
        client = client_for(second)
        assert client.get_versions("a-value") == [2]
        assert client.get_versions("a-value", deleted=True) == [1, 2]
        assert client.get_version("a-value", 2).schema_id == ids[1]
        assert client.get_schema(ids[0]).schema_str == json.dumps(V1, separators=(",", ":"))
        assert client.get_compatibility("b-value") == "NONE"
        assert client.register_schema("b-value", avro(V_INCOMPATIBLE)) == ids[1] + 1


@pytest.mark.stack
def test_serializers_round_trip_through_a_real_topic(registry: RegistryServer, stack_config: SimpulConfig, unique_name: str) -> None:
    topic = f"{unique_name}.public.orders"
    bootstrap = stack_config.kafka.bootstrap_servers
    create_topics({"bootstrap.servers": bootstrap}, [NewTopic(topic, 1, stack_config.kafka.replication_factor)])
    client = client_for(registry)
    theirs = AvroSerializer(client, json.dumps(V1))
    ours = SchemaRegistrar(client).encoder(topic, V2)
    value_ctx = SerializationContext(topic, MessageField.VALUE)
    sent = [theirs({"id": 1}, value_ctx), ours.encode({"id": 2, "nama": "Siti"}), ours.encode({"id": 3, "nama": None})]
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for payload in sent:
        producer.produce(topic, value=payload)
    assert producer.flush(30) == 0

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    received: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            received.append(message.value())
    consumer.close()
    assert received == sent

    deserializer = AvroDeserializer(client)
    assert [deserializer(payload, value_ctx) for payload in received] == [
        {"id": 1}, {"id": 2, "nama": "Siti"}, {"id": 3, "nama": None}
    ]
    ours_decoder = ConfluentAvroDecoder(lambda schema_id: client.get_schema(schema_id).schema_str, reader_schema=V2)
    assert [ours_decoder.decode(payload) for payload in received] == [
        {"id": 1, "nama": None}, {"id": 2, "nama": "Siti"}, {"id": 3, "nama": None}
    ]


REGISTRY_PROCESS = """
import logging, sys
from simpul.config import load_config
from simpul.schemas.registry import run_registry
from simpul.shutdown import Shutdown
logging.basicConfig(level=logging.INFO)
run_registry(load_config(sys.argv[1]), Shutdown().install(), topic=sys.argv[2])
"""


def start_registry_process(config: SimpulConfig, url: str, topic: str) -> subprocess.Popen[bytes]:
    config_file = os.path.join(os.path.dirname(__file__), "simpul.test.yaml")
    environment = {
        **os.environ,
        "SIMPUL_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
        "SIMPUL_SCHEMA_REGISTRY__URL": url,
        # The registry serves metrics on metrics.port + 1: point that at a free port too.
        "SIMPUL_METRICS__PORT": str(free_port() - 1),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", REGISTRY_PROCESS, config_file, topic],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"registry exited: {process.stderr.read().decode() if process.stderr else ''}")
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("registry did not start within 60 s")


@pytest.mark.stack
@pytest.mark.slow
def test_kill_9_and_restart_keeps_ids(stack_config: SimpulConfig, storage_topic: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    process = start_registry_process(stack_config, url, storage_topic)
    try:
        client = SchemaRegistryClient({"url": url, "max.retries": 0})
        ids = {subject: client.register_schema(subject, avro(schema)) for subject, schema in (("a", V1), ("b", V2))}
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    process = start_registry_process(stack_config, url, storage_topic)
    try:
        client = SchemaRegistryClient({"url": url, "max.retries": 0})
        assert client.lookup_schema("a", avro(V1)).schema_id == ids["a"]
        assert client.get_latest_version("b").schema_id == ids["b"]
        assert client.register_schema("c", avro(V_INCOMPATIBLE)) == max(ids.values()) + 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
