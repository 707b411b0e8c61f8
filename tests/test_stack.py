"""The local stack against real servers: Kafka (1 and 3 nodes), PostgreSQL and MariaDB.

Each test config has its own home under ``.simpul/test-stack-*`` and ports in 31000-31999, so
these tests never touch the developer's stack or the session stack of ``conftest.py``; the range
is below the kernel's ephemeral ports (32768 up), which any client connection may hold.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import psycopg
import pymysql
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from simpul.config import SimpulConfig, parse_config
from simpul.kafka import create_topics
from simpul.stack import LocalStack, ServiceStatus, StackError

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[1]


def stack_config(name: str, kafka_port: int, controller_port: int, pg_port: int, maria_port: int) -> SimpulConfig:
    """A config with its own home and ports, one source per database kind, and a small heap."""
    raw = {
        "stack": {
            "home": str(ROOT / ".simpul" / f"test-stack-{name}"),
            "kafka": {"port": kafka_port, "controller_port": controller_port, "heap_mb": 256},
            "postgres": {"port": pg_port, "password_env": "TEST_STACK_PG_PASSWORD"},
            "mariadb": {"port": maria_port, "password_env": "TEST_STACK_MARIADB_PASSWORD"},
            "prometheus": {"port": kafka_port - 2},
        },
        "kafka": {"bootstrap_servers": f"127.0.0.1:{kafka_port}"},
        "schema_registry": {"url": f"http://127.0.0.1:{pg_port + 500}"},
        "metrics": {"port": pg_port + 400},
        "sources": [
            {
                "name": "agency_pg", "agency": "Test PG", "kind": "postgres", "dsn_env": "TEST_STACK_PG_DSN",
                "database": "agency_pg", "topic_prefix": "agency_pg", "tables": ["public.people"],
            },
            {
                "name": "agency_my", "agency": "Test MySQL", "kind": "mysql", "dsn_env": "TEST_STACK_MY_DSN",
                "database": "agency_my", "topic_prefix": "agency_my", "tables": ["agency_my.people"],
            },
        ],
        "sinks": {"master_index": {"dsn_env": "TEST_STACK_MASTER_DSN", "database": "test_master"}},
    }
    return parse_config(raw, base_dir=ROOT)


def fresh(config: SimpulConfig) -> LocalStack:
    """A stack on an empty home (a previous, interrupted run's servers are stopped first)."""
    stack = LocalStack(config)
    stack.down()
    shutil.rmtree(config.home, ignore_errors=True)
    return stack


def leftover_processes(home: Path) -> list[str]:
    """Command lines of live processes that mention ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
            except (OSError, IndexError):
                continue
            if str(home) in cmdline and state != "Z":
                found.append(f"{entry.name}: {cmdline}")
    return found


def round_trip(bootstrap: str, topic: str, partitions: int, replication: int, acks: str) -> list[bytes]:
    """Create ``topic``, produce three messages, and consume them back."""
    create_topics({"bootstrap.servers": bootstrap}, [NewTopic(topic, partitions, replication)])
    producer = Producer({"bootstrap.servers": bootstrap, "acks": acks, "enable.idempotence": True})
    for n in range(3):
        producer.produce(topic, key=b"k", value=f"message-{n}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"test-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    received: list[bytes] = []
    try:
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                received.append(message.value())
            if len(received) == 3:
                break
    finally:
        consumer.close()
    return received


@pytest.fixture(scope="module")
def single() -> Iterator[tuple[LocalStack, list[ServiceStatus]]]:
    """One 1-node Kafka + PostgreSQL + MariaDB stack for the module, always brought down."""
    stack = fresh(stack_config("single", 31092, 31192, 31432, 31306))
    try:
        yield stack, stack.up()
    finally:
        stack.down()


def test_up_reports_every_service_running(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, started = single
    by_name = {s.name: s for s in started}
    assert set(by_name) == {"kafka-1", "postgres", "mariadb", "registry", "prometheus"}
    assert by_name["registry"].address == "http://127.0.0.1:31932"
    assert by_name["prometheus"].address == "http://127.0.0.1:31090"
    assert by_name["kafka-1"].address == "127.0.0.1:31092"
    assert by_name["postgres"].address == "127.0.0.1:31432"
    assert by_name["mariadb"].address == "127.0.0.1:31306"
    assert all(s.running and s.pid for s in stack.status())


def test_up_twice_leaves_running_services_alone(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, started = single
    again = stack.up()
    assert {(s.name, s.pid) for s in again} == {(s.name, s.pid) for s in started}


def test_env_file_holds_secrets_and_working_dsns(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, _ = single
    env = stack.env()
    path = stack.config.home / "stack.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert env["TEST_STACK_PG_DSN"].endswith("@127.0.0.1:31432/agency_pg")
    assert env["TEST_STACK_MASTER_DSN"].endswith("@127.0.0.1:31432/test_master")
    assert env["TEST_STACK_MY_DSN"].startswith("mysql://simpul:")
    with psycopg.connect(env["TEST_STACK_MASTER_DSN"]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("test_master",)
    dsn = urlsplit(env["TEST_STACK_MY_DSN"])
    with pymysql.connect(
        host=dsn.hostname, port=dsn.port, user=dsn.username, password=unquote(dsn.password or ""),
        database=dsn.path.lstrip("/"),
    ) as conn, conn.cursor() as cur:
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == ("agency_my",)


def test_kafka_produce_consume_round_trip(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    topic = f"test-stack-{uuid.uuid4().hex[:8]}"
    received = round_trip("127.0.0.1:31092", topic, partitions=1, replication=1, acks="all")
    assert received == [b"message-0", b"message-1", b"message-2"]


def test_postgres_is_ready_for_logical_decoding(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, _ = single
    with psycopg.connect(stack.env()["TEST_STACK_PG_DSN"]) as conn:
        assert conn.execute("SHOW wal_level").fetchone() == ("logical",)
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        names = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        assert {"agency_pg", "test_master"} <= names
        assert conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = 'simpul'").fetchone() == (
            True,
            True,
        )


def test_mariadb_has_a_full_row_binlog(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, _ = single
    password = stack.env()["TEST_STACK_MARIADB_PASSWORD"]
    with pymysql.connect(host="127.0.0.1", port=31306, user="simpul", password=password) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, @@local_infile, "
            "@@bind_address"
        )
        assert cur.fetchone() == (1, "ROW", "FULL", "FULL", 1, "127.0.0.1")
        cur.execute("SHOW DATABASES LIKE 'agency_my'")
        assert cur.fetchone() == ("agency_my",)
        cur.execute("SHOW GRANTS")
        grants = " ".join(row[0] for row in cur.fetchall())
        assert "ALL PRIVILEGES ON *.*" in grants


@pytest.mark.parametrize("service", ["kafka", "postgres", "mariadb", "registry"])
def test_busy_port_is_named(service: str) -> None:
    key = "schema_registry.url" if service == "registry" else f"stack.{service}.port"
    with socket.socket() as squatter:
        # A port the kernel says is free right now: a fixed one may be some client's ephemeral port.
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        ports = {"kafka": (port, 31710, 31720, 31730), "postgres": (31700, 31710, port, 31730),
                 "mariadb": (31700, 31710, 31720, port), "registry": (31700, 31710, port - 500, 31730)}[service]
        config = stack_config("busy", *ports)
        with pytest.raises(StackError, match=rf"port {port} .*in use") as error:
            LocalStack(config).up(services=(service,))
    assert key in str(error.value)
    assert not any(s.running for s in LocalStack(config).status())


def test_up_restarts_a_killed_server_with_its_data(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, _ = single
    (postgres,) = (s for s in stack.status() if s.name == "postgres")
    assert postgres.pid is not None
    os.kill(postgres.pid, signal.SIGKILL)
    for _ in range(50):
        if not next(s for s in stack.status() if s.name == "postgres").running:
            break
        time.sleep(0.1)
    restarted = {s.name: s for s in stack.up()}
    assert restarted["postgres"].running and restarted["postgres"].pid != postgres.pid
    with psycopg.connect(stack.env()["TEST_STACK_MASTER_DSN"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_down_stops_everything(single: tuple[LocalStack, list[ServiceStatus]]) -> None:
    stack, started = single
    stopped = stack.down()
    assert sorted(stopped) == ["kafka-1", "mariadb", "postgres", "prometheus", "registry"]
    assert not any(s.running for s in stack.status())
    assert leftover_processes(stack.config.home) == []
    assert [s.name for s in started if Path(f"/proc/{s.pid}").exists()] == []
    assert stack.down() == []


def test_three_node_kafka_cluster() -> None:
    stack = fresh(stack_config("kraft3", 31500, 31600, 31532, 31506))
    try:
        started = stack.up(services=("kafka",), kafka_nodes=3)
        assert [s.name for s in started] == ["kafka-1", "kafka-2", "kafka-3"]
        assert [s.address for s in started] == ["127.0.0.1:31500", "127.0.0.1:31501", "127.0.0.1:31502"]
        bootstrap = "127.0.0.1:31500,127.0.0.1:31501,127.0.0.1:31502"
        assert set(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).brokers) == {1, 2, 3}

        topic = f"test-stack-rf3-{uuid.uuid4().hex[:8]}"
        received = round_trip(bootstrap, topic, partitions=3, replication=3, acks="all")
        assert sorted(received) == [b"message-0", b"message-1", b"message-2"]
        metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
        partitions = metadata.topics[topic].partitions
        assert len(partitions) == 3
        for partition in partitions.values():
            assert partition.leader in (1, 2, 3)
            assert sorted(partition.replicas) == [1, 2, 3]
    finally:
        stopped = stack.down()
    assert sorted(stopped) == ["kafka-1", "kafka-2", "kafka-3"]
    assert leftover_processes(stack.config.home) == []
