"""Prometheus metrics, the one way every Simpul component exposes them.

Names follow ``simpul_<component>_<what>_<unit>``; labels carry agencies, tables, operations and
outcomes, never personal data. Each component serves ``/metrics`` on its own port: the base port
from ``metrics.port`` plus the component's fixed offset below, so Prometheus knows where to scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

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


class UnlockedCounter(Collector):
    """A labelled counter for a per-event path: an increment is a plain dict update, read when scraped.

    prometheus_client's counters take a lock on every increment, and with the child lookup that
    cost a connector's main process about a tenth of its time during a snapshot. The counts live
    in this process's memory and are exposed like any counter (``<name>_total``). Each label set
    must be incremented from one thread only (the increment is not atomic across threads).
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name = name.removesuffix("_total")
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._counts: dict[tuple[str, ...], float] = {}
        if registry is not None:
            registry.register(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1.0) -> None:
        """Add ``amount`` to the count of these label values (in ``labelnames`` order)."""
        counts = self._counts
        counts[labels] = counts.get(labels, 0.0) + amount

    def collect(self) -> Iterator[Metric]:
        """The counter family, one sample per label set seen."""
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in self._counts.copy().items():  # a dict copy is atomic under the GIL
            family.add_metric(labels, value)
        yield family


class UnlockedHistogram(Collector):
    """A labelled histogram for a per-event path, without prometheus_client's lock per observation
    (see :class:`UnlockedCounter`); each child must be observed from one thread only."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float], registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], HistogramCounts] = {}
        if registry is not None:
            registry.register(self)

    def labels(self, *values: str) -> HistogramCounts:
        """The child of these label values (kept: look it up once, observe many times)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = HistogramCounts(self.bounds)
        return child

    def collect(self) -> Iterator[Metric]:
        """The histogram family: cumulative buckets, ``+Inf``, count and sum per label set."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [floatToGoString(bound) for bound in (*self.bounds, float("inf"))]
        for values, child in list(self._children.items()):
            total = child.sum
            family.add_metric(list(values), list(zip(bounds, accumulate(child.counts))), total)
        yield family


class HistogramCounts:
    """One label set's bucket counts (the last one ``+Inf``) and sum of an :class:`UnlockedHistogram`."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose upper bound is at least ``value``."""
        self.counts[bisect_left(self._bounds, value)] += 1
        self.sum += value
