"""Serving the lookup API: uvicorn on ``api.host:api.port`` until a stop is requested.

uvicorn's access log stays off: its request line would be the one place a path or a query string
reaches a log file, and the audit trail records every request anyway. Metrics are served on the
component's own port like every Simpul process (and on the API's ``/metrics``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import uvicorn

from simpul.api.app import build_app
from simpul.config import SimpulConfig
from simpul.metrics import metrics_port, serve_metrics
from simpul.shutdown import Shutdown
from simpul.sinks.master_schema import ensure_schema

log = logging.getLogger(__name__)

GRACEFUL_STOP_S = 10


class _Server(uvicorn.Server):
    """uvicorn, stopped by Simpul's :class:`Shutdown` flag rather than by signal handlers of its own."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown) -> None:
        super().__init__(config)
        self._shutdown = shutdown

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Shutdown owns SIGTERM and SIGINT in every Simpul process (and a thread cannot take them).
        yield

    async def on_tick(self, counter: int) -> bool:
        return self._shutdown.requested or await super().on_tick(counter)


def run_api(config: SimpulConfig, shutdown: Shutdown) -> None:
    """Create whatever of the master index is missing, then serve the API until ``shutdown`` is
    requested; in-flight requests finish (up to 10 s) before it returns."""
    with psycopg.connect(config.sinks.master_index.dsn(), autocommit=True, application_name="simpul-api") as conn:
        ensure_schema(conn)
    app = build_app(config)
    host, port = config.api.host, config.api.port
    # access_log=False only leaves uvicorn's access logger without handlers; disabled, it drops
    # request lines (paths, client addresses) even if a logging setup attaches one later.
    logging.getLogger("uvicorn.access").disabled = True
    serve_metrics(config.metrics.host, metrics_port(config, "api"))
    server = _Server(
        uvicorn.Config(
            app, host=host, port=port, access_log=False, log_config=None, server_header=False, lifespan="on", timeout_graceful_shutdown=GRACEFUL_STOP_S
        ),
        shutdown,
    )
    log.info("lookup API on http://%s:%d for %d agencies (metrics on port %d)", host, port, len(config.api.clients), metrics_port(config, "api"))
    server.run()
    log.info("lookup API stopped")
