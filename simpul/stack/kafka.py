"""A KRaft Kafka cluster (1 to 5 combined broker+controller nodes) run from Maven Central jars.

The jars are resolved once per Kafka version into ``deploy/kafka/target/jars-<version>`` (shared
by every stack home, guarded by a file lock); the cluster's data lives under ``<home>/kafka``.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from confluent_kafka.admin import AdminClient

from simpul.config import SimpulConfig
from simpul.stack.process import (
    DetachedProcess,
    ServiceStatus,
    StackError,
    check_port_free,
    require_binary,
    stop_processes,
    wait_until_ready,
)

KAFKA_DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
_FIX = "run `make deps` (deploy/local/install-system-packages.sh) or `apt-get install -y openjdk-17-jre-headless maven`"
_READY_TIMEOUT = 120.0
_LOG4J2 = """\
# Written by `simpul stack up`. Each node logs to ${sys:kafka.logs.dir}/server.log.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
# Per-request, per-segment and config-dump chatter: only problems are worth a line.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.network.name = kafka.network.RequestChannel$
logger.network.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
logger.config.name = org.apache.kafka.common.config
logger.config.level = WARN
logger.log.name = org.apache.kafka.storage.internals.log
logger.log.level = WARN
logger.unifiedlog.name = kafka.log
logger.unifiedlog.level = WARN
logger.clients.name = org.apache.kafka.clients
logger.clients.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


class KafkaCluster:
    """``<home>/kafka``: cluster id, logging config and one ``node-<i>`` folder per node."""

    def __init__(self, config: SimpulConfig, nodes: int | None = None) -> None:
        self.settings = config.stack.kafka
        self.root = config.home / "kafka"
        self.cluster_id_file = self.root / "cluster-id"
        self.nodes_file = self.root / "nodes"
        self.log4j2 = self.root / "log4j2.properties"
        self.jars = KAFKA_DEPLOY / "target" / f"jars-{self.settings.version}"
        self.nodes = nodes or self.settings.nodes

    def node_dir(self, node: int) -> Path:
        """Config, data, logs and pid file of node ``node`` (1-based)."""
        return self.root / f"node-{node}"

    def port(self, node: int) -> int:
        """The client (PLAINTEXT) port of node ``node``."""
        return self.settings.port + node - 1

    def controller_port(self, node: int) -> int:
        """The KRaft controller port of node ``node``."""
        return self.settings.controller_port + node - 1

    @property
    def bootstrap_servers(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(f"127.0.0.1:{self.port(i)}" for i in self._ids())

    def process(self, node: int) -> DetachedProcess:
        """The tracked JVM of node ``node``; its command line names its server.properties."""
        properties = self.node_dir(node) / "server.properties"
        return DetachedProcess(f"kafka-{node}", self.node_dir(node) / "kafka.pid", str(properties))

    def preflight(self) -> None:
        """Raise a StackError if Java/Maven are missing, the recorded node count differs, or a
        port is busy."""
        recorded = self._recorded_nodes()
        if recorded and recorded != self.nodes:
            raise StackError(
                f"Kafka under {self.root} was formatted as a {recorded}-node cluster, not {self.nodes}. "
                f"Fix: use {recorded} node(s) (stack.kafka.nodes), or `simpul stack down` and remove "
                f"{self.root} (its topics are lost)."
            )
        if all(self.process(i).pid() is not None for i in self._ids()):
            return
        self._java()
        if not self._jars_complete():
            require_binary("mvn", "Maven (to fetch the Kafka jars)", _FIX)
        for i in self._ids():
            if self.process(i).pid() is None:
                check_port_free(self.port(i), f"Kafka node {i}", "stack.kafka.port")
                check_port_free(self.controller_port(i), f"Kafka controller {i}", "stack.kafka.controller_port")

    def start(self) -> list[ServiceStatus]:
        """Fetch jars (first time), format storage (first time), start the nodes that are not
        running, and wait until every broker is in the cluster and the quorum has a leader."""
        to_start = [i for i in self._ids() if self.process(i).pid() is None]
        if to_start:
            java = self._java()
            self._ensure_jars()
            self.root.mkdir(parents=True, exist_ok=True)
            self.log4j2.write_text(_LOG4J2, encoding="utf-8")
            cluster_id = self._cluster_id(java)
            for i in self._ids():
                self._write_properties(i)
            unformatted = [i for i in to_start if not (self.node_dir(i) / "data" / "meta.properties").is_file()]
            with ThreadPoolExecutor(max_workers=len(self._ids())) as pool:
                list(pool.map(lambda i: self._format(java, cluster_id, i), unformatted))
            self.nodes_file.write_text(f"{self.nodes}\n", encoding="ascii")
            for i in to_start:
                self.process(i).start(self._command(java, i), self.node_dir(i) / "stdout.log", cwd=self.node_dir(i))
            try:
                self._wait_ready()
            except StackError:
                stop_processes([self.process(i) for i in to_start])
                raise
        return self.status()

    def processes(self) -> list[DetachedProcess]:
        """Every node of this home, whatever node count it was started with."""
        return [self.process(int(d.name.removeprefix("node-"))) for d in sorted(self.root.glob("node-*"))]

    def status(self) -> list[ServiceStatus]:
        """One entry per node (as many as the cluster was formatted with): running or not, its
        address, its log."""
        statuses = []
        nodes = self._recorded_nodes() or self.nodes
        for i in range(1, nodes + 1):
            pid = self.process(i).pid()
            detail = f"KRaft broker+controller, node {i} of {nodes}, log {self.node_dir(i) / 'server.log'}"
            statuses.append(ServiceStatus(f"kafka-{i}", pid is not None, pid, f"127.0.0.1:{self.port(i)}", detail))
        return statuses

    def _ids(self) -> range:
        return range(1, self.nodes + 1)

    def _recorded_nodes(self) -> int | None:
        try:
            return int(self.nodes_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _java(self) -> str:
        java = require_binary("java", "Java 17+ (to run Kafka)", _FIX)
        banner = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
        match = re.search(r'version "(\d+)', banner)
        if not match or int(match.group(1)) < 17:
            raise StackError(
                f"Kafka {self.settings.version} needs Java 17 or newer; {java} is: {banner.strip()}. Fix: {_FIX}"
            )
        return java

    def _jars_complete(self) -> bool:
        return (self.jars / ".complete").is_file()

    def _ensure_jars(self) -> None:
        """Resolve the Kafka jars with Maven unless a complete copy is already there."""
        if self._jars_complete():
            return
        mvn = require_binary("mvn", "Maven (to fetch the Kafka jars)", _FIX)
        self.jars.parent.mkdir(parents=True, exist_ok=True)
        # Two stack homes (the CLI and a test run) may resolve at once; one waits for the other.
        with open(self.jars.parent / ".resolve.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self._jars_complete():
                return
            shutil.rmtree(self.jars, ignore_errors=True)
            result = subprocess.run(
                [
                    mvn, "-q", "-B", "-Dstyle.color=never",
                    "-f", str(KAFKA_DEPLOY / "pom.xml"),
                    f"-Dkafka.version={self.settings.version}",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={self.jars}",
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                output = "\n".join((result.stdout + result.stderr).splitlines()[-25:])
                raise StackError(
                    f"Maven could not fetch Kafka {self.settings.version} (stack.kafka.version) from Maven "
                    f"Central:\n{output}"
                )
            (self.jars / ".complete").write_text(f"kafka {self.settings.version}\n", encoding="ascii")

    def _cluster_id(self, java: str) -> str:
        if self.cluster_id_file.is_file():
            return self.cluster_id_file.read_text().strip()
        result = self._tool(java, ["random-uuid"])
        cluster_id = result.stdout.strip().splitlines()[-1]
        self.cluster_id_file.write_text(cluster_id + "\n", encoding="ascii")
        return cluster_id

    def _format(self, java: str, cluster_id: str, node: int) -> None:
        self._tool(java, ["format", "-t", cluster_id, "-c", str(self.node_dir(node) / "server.properties")], node)

    def _tool(self, java: str, args: list[str], node: int = 1) -> subprocess.CompletedProcess[str]:
        command = [*self._jvm(java, node, heap_mb=128), "kafka.tools.StorageTool", *args]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"Kafka StorageTool {args[0]} failed:\n{result.stdout}{result.stderr}")
        return result

    def _jvm(self, java: str, node: int, heap_mb: int) -> list[str]:
        return [
            java,
            f"-Xms{heap_mb}m",
            f"-Xmx{heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j2}",
            f"-Dkafka.logs.dir={self.node_dir(node)}",
            "-cp",
            f"{self.jars}/*",
        ]

    def _command(self, java: str, node: int) -> list[str]:
        return [
            *self._jvm(java, node, self.settings.heap_mb),
            "kafka.Kafka",
            str(self.node_dir(node) / "server.properties"),
        ]

    def _write_properties(self, node: int) -> None:
        replication = min(self.nodes, 3)
        min_isr = 2 if replication >= 3 else 1
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_port(i)}" for i in self._ids())
        properties = {
            "process.roles": "broker,controller",
            "node.id": node,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port(node)},CONTROLLER://127.0.0.1:{self.controller_port(node)}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port(node)}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": self.node_dir(node) / "data",
            "default.replication.factor": replication,
            "min.insync.replicas": min_isr,
            "offsets.topic.replication.factor": replication,
            "transaction.state.log.replication.factor": replication,
            "transaction.state.log.min.isr": min_isr,
            "share.coordinator.state.topic.replication.factor": replication,
            "share.coordinator.state.topic.min.isr": min_isr,
            # KRaft's 3 s default delays every consumer group's first rebalance.
            "group.initial.rebalance.delay.ms": 0,
            # Topics are created explicitly with the partition count Faust expects.
            "auto.create.topics.enable": "false",
        }
        text = "# Written by `simpul stack up` on every start; edit simpul.yaml instead.\n"
        text += "".join(f"{key}={value}\n" for key, value in properties.items())
        self.node_dir(node).mkdir(parents=True, exist_ok=True)
        (self.node_dir(node) / "server.properties").write_text(text, encoding="utf-8")

    def _wait_ready(self) -> None:
        # log_level 0: connection-refused lines while the JVM starts are expected, not news.
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 3000, "log_level": 0})
        expected = set(self._ids())
        logs = [self.node_dir(i) / name for i in self._ids() for name in ("server.log", "stdout.log")]

        def ready() -> bool:
            try:
                brokers = set(admin.list_topics(timeout=3).brokers)
            except Exception:  # noqa: BLE001 - any client error just means "not yet"
                return False
            return brokers == expected and self._quorum_has_leader()

        wait_until_ready(ready, [self.process(i) for i in self._ids()], "Kafka", _READY_TIMEOUT, logs)

    def _quorum_has_leader(self) -> bool:
        """Whether every node's persisted KRaft quorum state names the same elected leader."""
        leaders = set()
        for i in self._ids():
            state_file = self.node_dir(i) / "data" / "__cluster_metadata-0" / "quorum-state"
            try:
                leaders.add(json.loads(state_file.read_text()).get("leaderId", -1))
            except (OSError, ValueError):
                return False
        return len(leaders) == 1 and leaders.pop() in self._ids()
