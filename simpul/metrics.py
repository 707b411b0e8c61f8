"""Prometheus metrics, the one way every Simpul component exposes them.

Names follow ``simpul_<component>_<what>_<unit>``; labels carry agencies, tables, operations and
outcomes, never personal data. Each component serves ``/metrics`` on its own port: the base port
from ``metrics.port`` plus the component's fixed offset below, so Prometheus knows where to scrape.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from simpul.config import SimpulConfig

# Fixed offsets from metrics.port, one per long-running component (one per CDC source after 10).
COMPONENT_PORT_OFFSETS: dict[str, int] = {
    "run": 0,
    "registry": 1,
    "changegen": 2,
    "resolver": 3,
    "sink": 4,
    "api": 5,
    "router": 6,
    "writeback": 7,
}
CDC_PORT_OFFSET = 10


def metric_name(component: str, what: str, unit: str = "") -> str:
    """``simpul_<component>_<what>_<unit>`` (``unit`` may be empty for counts of things)."""
    return "_".join(part for part in ("simpul", component, what, unit) if part)


def metrics_port(config: SimpulConfig, component: str, source_index: int | None = None) -> int:
    """The port where ``component`` (or the CDC connector of the ``source_index``-th source) serves."""
    if component == "cdc":
        return config.metrics.port + CDC_PORT_OFFSET + (source_index or 0)
    return config.metrics.port + COMPONENT_PORT_OFFSETS[component]


def serve_metrics(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> None:
    """Serve ``/metrics`` for this process in a background thread; port 0 means do not serve."""
    if port:
        start_http_server(port, addr=host, registry=registry)


class LabelledChildren:
    """A labelled metric's children by label values, each looked up once.

    ``metric.labels(...)`` takes a lock and builds the key on every call, which costs more than
    the increment that follows; per-event code asks this instead.
    """

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        """The child of ``metric`` for these label values."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
