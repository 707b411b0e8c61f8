"""Running one source's connector as a process: metrics endpoint, clean stop, the right connector."""

from __future__ import annotations

from simpul.config import SimpulConfig
from simpul.metrics import metrics_port, serve_metrics
from simpul.shutdown import Shutdown


def run_connector(config: SimpulConfig, source_name: str, shutdown: Shutdown) -> None:
    """Run the connector of ``source_name`` (PostgreSQL or MySQL) until ``shutdown``."""
    source = config.source(source_name)
    index = [s.name for s in config.sources].index(source_name)
    serve_metrics(config.metrics.host, metrics_port(config, "cdc", index))
    if source.kind == "postgres":
        from simpul.cdc.postgres.connector import run_postgres_connector

        run_postgres_connector(config, source, shutdown)
    else:
        from simpul.cdc.mysql.connector import run_mysql_connector

        run_mysql_connector(config, source, shutdown)
