"""The registry process: storage topic + service + HTTP server, started and stopped as one.

The HTTP side is the standard library's ``ThreadingHTTPServer``: every Kafka call the service
makes is blocking (confluent-kafka), writes are rare and reads are dictionary look-ups, so a
thread per connection is simpler to get right than an asyncio server that would have to push
each Kafka call onto an executor. ``/metrics`` is served on the same port, and, as every Simpul
component does, on ``metrics.port`` + the registry's offset.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from simpul.config import SimpulConfig
from simpul.metrics import metrics_port, serve_metrics
from simpul.schemas.registry.api import RegistryMetrics, RegistryRequestHandler
from simpul.schemas.registry.service import RegistryService
from simpul.schemas.registry.state import RegistryState
from simpul.kafka_store import KafkaStore, StoreSettings
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)

DEFAULT_TOPIC = "_schemas"


@dataclass(frozen=True)
class RegistrySettings:
    """Where the registry listens and stores."""

    host: str
    port: int
    store: StoreSettings

    @classmethod
    def from_config(cls, config: SimpulConfig, topic: str = DEFAULT_TOPIC) -> "RegistrySettings":
        """Listen on the host and port of ``schema_registry.url``; store in ``topic`` on the
        configured Kafka cluster with its replication factor."""
        url = urlsplit(config.schema_registry.url)
        return cls(
            host=url.hostname or "127.0.0.1",
            port=url.port or (443 if url.scheme == "https" else 80),
            store=StoreSettings(
                bootstrap_servers=config.kafka.bootstrap_servers,
                topic=topic,
                replication_factor=config.kafka.replication_factor,
                client=dict(config.kafka.client),
            ),
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[RegistryRequestHandler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """End kept-alive connections: a stopped registry must not go on answering on them."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class RegistryServer:
    """A running registry: ``start()`` replays the storage topic and serves; ``stop()`` ends it."""

    def __init__(self, settings: RegistrySettings) -> None:
        self.settings = settings
        self.metrics = RegistryMetrics()
        self._store = KafkaStore(settings.store)
        self.service = RegistryService(self._store, on_change=self._count)
        self._http: _Server | None = None
        self._thread: threading.Thread | None = None

    def _count(self, state: RegistryState) -> None:
        self.metrics.schemas.set(len(state.schemas_by_id))

    @property
    def url(self) -> str:
        """The base URL clients use (the bound port, if 0 was asked for)."""
        port = self._http.server_address[1] if self._http else self.settings.port
        return f"http://{self.settings.host}:{port}"

    def start(self) -> "RegistryServer":
        """Create the storage topic if needed, rebuild the state, then accept requests."""
        self._store.ensure_topic()
        records = self.service.start()
        log.info("registry: %d record(s) replayed from %s", records, self.settings.store.topic)
        handler = type(
            "BoundRegistryRequestHandler",
            (RegistryRequestHandler,),
            {"service": self.service, "metrics": self.metrics},
        )
        self._http = _Server((self.settings.host, self.settings.port), handler)
        self._thread = threading.Thread(target=self._http.serve_forever, name="registry-http", daemon=True)
        self._thread.start()
        log.info("registry: serving on %s", self.url)
        return self

    def stop(self) -> None:
        """Stop accepting, end open connections and release the Kafka clients."""
        if self._http is not None:
            self._http.shutdown()
            self._http.close_connections()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._store.close()

    def __enter__(self) -> "RegistryServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_registry(config: SimpulConfig, shutdown: Shutdown, topic: str = DEFAULT_TOPIC) -> None:
    """Serve the schema registry at ``config.schema_registry.url`` until ``shutdown`` is requested.

    The caller installs the signal handlers (``Shutdown().install()``); SIGTERM then stops the
    server cleanly. One registry process per storage topic (single writer).
    """
    server = RegistryServer(RegistrySettings.from_config(config, topic))
    server.start()
    serve_metrics(config.metrics.host, metrics_port(config, "registry"), server.metrics.registry)
    try:
        while not shutdown.wait(1.0):
            pass
    finally:
        log.info("registry: stopping")
        server.stop()
