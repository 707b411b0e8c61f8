"""Shared fixtures: the test stack (real Kafka, PostgreSQL and MariaDB) started once per session.

The stack uses its own home and ports (``tests/simpul.test.yaml``) so it never touches the one
``make run`` uses. Set ``SIMPUL_KEEP_TEST_STACK=1`` to leave it running between runs while
developing; ``make stop`` stops it.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from simpul.config import SimpulConfig, load_config, load_env_file
from simpul.databases import copy_sources

TEST_CONFIG = Path(__file__).with_name("simpul.test.yaml")


@pytest.fixture(scope="session")
def test_config() -> SimpulConfig:
    """The test suite's configuration (no servers needed)."""
    return load_config(TEST_CONFIG)


@pytest.fixture(scope="session")
def stack_config(test_config: SimpulConfig) -> Iterator[SimpulConfig]:
    """The test config with its stack up and the generated secrets in the environment."""
    from simpul.stack import LocalStack

    stack = LocalStack(test_config)
    stack.up()
    load_env_file(test_config.home / "stack.env")
    yield test_config
    if not os.environ.get("SIMPUL_KEEP_TEST_STACK"):
        stack.down()


@contextmanager
def in_thread(target: Callable[[], None], shutdown: Any, stop_timeout_s: float) -> Iterator[list[BaseException]]:
    """Run ``target`` in a thread while the block runs (yielding what it has raised so far); then
    request a stop, require it within ``stop_timeout_s``, and re-raise what the thread raised."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield failures
    finally:
        shutdown.request()
        thread.join(stop_timeout_s)
        assert not thread.is_alive(), f"the connector did not stop within {stop_timeout_s:.0f} s of a stop request"
    if failures:
        raise failures[0]


def free_port() -> int:
    """A loopback port the kernel says is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses, for topics, databases, slots and consumer groups."""
    return f"t_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def agency_config(stack_config: SimpulConfig, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpulConfig]:
    """The test config with every agency database replaced by a new, empty one of this test's
    own (dropped afterwards), so tests that seed or capture never see each other's rows."""
    copies = copy_sources(stack_config.sources, unique_name, monkeypatch.setenv)
    yield stack_config.model_copy(update={"sources": copies.sources})
    copies.drop()


@pytest.fixture(scope="module")
def module_agency_config(stack_config: SimpulConfig) -> Iterator[SimpulConfig]:
    """Like ``agency_config``, shared by one module's tests (for an expensive setup done once)."""
    with pytest.MonkeyPatch.context() as patch:
        copies = copy_sources(stack_config.sources, f"m_{uuid.uuid4().hex[:10]}", patch.setenv)
        yield stack_config.model_copy(update={"sources": copies.sources})
    copies.drop()


@dataclass(frozen=True)
class Record:
    """A record read back from a topic: key and value decoded with confluent-kafka's AvroDeserializer."""

    key: Any
    value: Any
    partition: int
    offset: int


@pytest.fixture
def read_topic(stack_config: SimpulConfig) -> Callable[..., list[Record]]:
    """``read_topic(topic, until, timeout=60)``: records of ``topic`` from the beginning, read
    until ``until(records)`` holds (or the timeout), decoded the way any Debezium consumer would."""
    from confluent_kafka import Consumer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    deserialize = AvroDeserializer(SchemaRegistryClient({"url": stack_config.schema_registry.url}))

    def read(topic: str, until: Callable[[list[Record]], bool], timeout: float = 60) -> list[Record]:
        consumer = Consumer({"bootstrap.servers": stack_config.kafka.bootstrap_servers, "group.id": f"reader-{uuid.uuid4().hex}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        consumer.subscribe([topic])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        try:
            while not until(records) and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                key = deserialize(message.key(), SerializationContext(topic, MessageField.KEY)) if message.key() else None
                value = deserialize(message.value(), SerializationContext(topic, MessageField.VALUE)) if message.value() is not None else None
                records.append(Record(key, value, message.partition(), message.offset()))
        finally:
            consumer.close()
        return records

    return read


def child_pids(pid: int) -> list[int]:
    """The process ids of ``pid``'s children."""
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as listing:
        return [int(child) for child in listing.read().split()]


def wait_children(pid: int, count: int, timeout: float) -> None:
    """Wait until ``pid`` has at least ``count`` children; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while len(child_pids(pid)) < count:
        assert time.monotonic() < deadline, f"process {pid} did not start {count} child process(es)"
        time.sleep(0.05)


def wait_gone(pids: list[int], timeout: float) -> None:
    """Wait until none of ``pids`` runs any more (zombies count as gone); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                    running = stat.read().rsplit(")", 1)[1].split()[0] != "Z"
            except FileNotFoundError:
                running = False
            if not running:
                break
            assert time.monotonic() < deadline, f"process {pid} outlived its killed connector"
            time.sleep(0.1)
