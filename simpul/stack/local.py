"""The local stack as one thing: Kafka, PostgreSQL, MariaDB, the schema registry and Prometheus
under one stack home."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from simpul.config import SimpulConfig
from simpul.stack.envfile import ensure_stack_env
from simpul.stack.kafka import KafkaCluster
from simpul.stack.mariadb import MariaDBServer
from simpul.stack.postgres import PostgresServer
from simpul.stack.process import ServiceStatus, StackError, stop_processes
from simpul.stack.prometheus import PrometheusServer
from simpul.stack.registry import RegistryServer

SERVICES = ("kafka", "postgres", "mariadb", "registry", "prometheus")


class LocalStack:
    """Starts, reports and stops the servers of ``config.home`` on loopback ports from the config."""

    def __init__(self, config: SimpulConfig) -> None:
        self.config = config

    def up(self, services: Sequence[str] = SERVICES, kafka_nodes: int | None = None) -> list[ServiceStatus]:
        """Start the named services (those already running are left alone) and wait until each
        answers. Everything is checked (binaries, ports) before anything starts."""
        unknown = sorted(set(services) - set(SERVICES))
        if unknown:
            raise StackError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(SERVICES)}")
        self.config.home.mkdir(parents=True, exist_ok=True)
        env = ensure_stack_env(self.config)
        kafka = KafkaCluster(self.config, kafka_nodes)
        postgres = PostgresServer(self.config)
        mariadb = MariaDBServer(self.config)
        registry = RegistryServer(self.config)
        prometheus = PrometheusServer(self.config)
        starters: dict[str, tuple[Callable[[], None], Callable[[], list[ServiceStatus]]]] = {
            "kafka": (kafka.preflight, kafka.start),
            "postgres": (postgres.preflight, lambda: postgres.start(env[self.config.stack.postgres.password_env])),
            "mariadb": (mariadb.preflight, lambda: mariadb.start(env[self.config.stack.mariadb.password_env])),
            # Prometheus needs nothing else running: a component not started yet is a target down.
            "prometheus": (prometheus.preflight, prometheus.start),
        }
        chosen = [name for name in SERVICES if name in services and name != "registry"]
        for name in chosen:
            starters[name][0]()
        if "registry" in services:
            registry.preflight()
        # The servers are independent, so they start side by side (the JVM start dominates).
        with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
            futures = [pool.submit(starters[name][1]) for name in chosen]
        errors = [error for future in futures if (error := future.exception()) is not None]
        for error in errors:
            if not isinstance(error, StackError):
                raise error  # a bug, not a setup problem: keep its traceback
        if errors:
            raise StackError("\n\n".join(str(error) for error in errors))
        statuses = [status for future in futures for status in future.result()]
        # The registry keeps its schemas in Kafka, so it starts once Kafka answers.
        return statuses + (registry.start() if "registry" in services else [])

    def down(self) -> list[str]:
        """Stop everything this stack home started (and nothing else); names of what was stopped."""
        processes = [
            *RegistryServer(self.config).processes(),
            *PrometheusServer(self.config).processes(),
            *KafkaCluster(self.config).processes(),
            *PostgresServer(self.config).processes(),
            *MariaDBServer(self.config).processes(),
        ]
        return stop_processes(processes, timeout=60)

    def status(self) -> list[ServiceStatus]:
        """Every service of this home: running or not, where, and where its data and logs are."""
        return [
            *KafkaCluster(self.config).status(),
            *PostgresServer(self.config).status(),
            *MariaDBServer(self.config).status(),
            *RegistryServer(self.config).status(),
            *PrometheusServer(self.config).status(),
        ]

    def env(self) -> dict[str, str]:
        """The generated secrets and connection strings (``<home>/stack.env``, created if missing)."""
        return ensure_stack_env(self.config)
