"""The main job on the local stack (``simpul run``, ``make run``).

It brings the stack up (with the schema registry), seeds a demo-sized Kota Serang when the agency
databases are empty, runs a CDC connector per agency source and the stream processors (router and
resolver, after training the match model once) as supervised processes, and drives live changes
into the agency databases while showing what each stage does; the sinks join it as they are built.
``duration_s`` gives the bounded form that ends by itself with a summary.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from simpul.config import SimpulConfig, load_env_file, write_config
from simpul.metrics import metrics_port, serve_metrics
from simpul.seed import ChangeGenerator, is_seeded, seed_city
from simpul.shutdown import Shutdown
from simpul.stack import LocalStack, ServiceStatus
from simpul.supervisor import Child, Supervisor

CHANGES_METRIC = "simpul_changegen_changes_total"
EVENTS_METRIC = "simpul_cdc_events_total"


def scrape_sums(url: str, *sample_names: str) -> dict[str, float] | None:
    """Per sample name, the sum of its samples on a ``/metrics`` page (one fetch); None while the page does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    sums = dict.fromkeys(sample_names, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in sums:
                sums[sample.name] += sample.value
    return sums


@dataclass
class ChangeCounts:
    """Live changes applied so far, by (agency, kind), read from the change generator's counter."""

    by_kind: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def read(cls) -> "ChangeCounts":
        """The counter's current values in this process."""
        counts: dict[tuple[str, str], float] = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name == CHANGES_METRIC:
                    counts[(sample.labels["agency"], sample.labels["kind"])] = sample.value
        return cls(counts)

    @property
    def total(self) -> int:
        """All changes applied."""
        return int(sum(self.by_kind.values()))


class MainJob:
    """Supervises the parts of the pipeline that exist and shows what they do."""

    def __init__(self, config: SimpulConfig, console: Console) -> None:
        self.config = config
        self.console = console
        self.stack = LocalStack(config)

    def run(self, rate: float, duration_s: float | None) -> None:
        """Run until Ctrl-C/SIGTERM or until ``duration_s`` has passed, then print a summary."""
        shutdown = Shutdown().install()
        started = time.monotonic()
        self.console.rule("[bold]Simpul on the local stack")
        services = self.stack.up()
        load_env_file(self.config.home / "stack.env")
        self.console.print(self._services_table(services))

        truth_dir = self.config.home / "truth"
        if is_seeded(self.config):
            self.console.print("agency databases already seeded")
        else:
            citizens = self.config.seed.demo_citizens
            self.console.print(f"seeding a demo-sized Kota Serang ({citizens:,} citizens)")
            summary = seed_city(self.config, citizens=citizens, seed=self.config.seed.seed, truth_dir=truth_dir)
            self.console.print(self._seed_table(summary.records))

        port = metrics_port(self.config, "run")
        serve_metrics(self.config.metrics.host, port)
        self.console.print(f"metrics: http://{self.config.metrics.host}:{port}/metrics")

        config_file = write_config(self.config, self.config.home / "run" / "simpul.yaml")
        supervisor = Supervisor(self._connectors(config_file))
        supervisor.start()
        self.console.print(f"CDC connectors: {', '.join(s.name for s in self.config.sources)} (logs in {self.config.home / 'logs'})")
        self._ensure_estimates()
        processors = Supervisor(self._processors(config_file))
        processors.start()
        self.console.print("stream processors: router and resolver (citizens on topic " f"{self.config.processors.citizens_topic})")

        generator = ChangeGenerator(self.config, seed=int(time.time()), truth_dir=truth_dir)
        failure: list[BaseException] = []

        def drive_changes() -> None:
            try:
                generator.run(rate, shutdown, None)
            except BaseException as exc:  # reported below; the job must not hide a dead worker
                failure.append(exc)

        worker = threading.Thread(target=drive_changes, name="change-generator", daemon=True)
        worker.start()
        live_started = time.monotonic()
        previous: dict[str, float] = {}
        with Live(console=self.console, refresh_per_second=2, transient=False) as live:
            while not shutdown.wait(1.0):
                supervisor.check()
                processors.check()
                events = self._captured()
                live.update(self._status(ChangeCounts.read(), time.monotonic() - live_started, rate, supervisor, events, previous, processors, self._resolved()))
                previous = events
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    shutdown.request()
                if not worker.is_alive():
                    break
        worker.join(timeout=30)
        events = self._captured()
        resolved = self._resolved()
        killed = processors.stop() + supervisor.stop()
        counts = ChangeCounts.read()
        elapsed = time.monotonic() - live_started
        self.console.rule("[bold]Summary")
        self.console.print(self._services_table(self.stack.status()))
        self.console.print(self._changes_table(counts))
        self.console.print(self._connectors_table(supervisor, events, {}))
        self.console.print(f"{int(sum(events.values())):,} change events captured into Kafka by {len(events)} connector(s)")
        self.console.print(self._processors_table(processors, resolved))
        self.console.print(f"{int(resolved.get('applied', 0)):,} row changes resolved into citizens by the stream processors")
        if killed:
            self.console.print(f"[red]did not stop on SIGTERM within 30 s and were killed: {', '.join(killed)}")
        self.console.print(
            f"{counts.total:,} live changes committed in {elapsed:.1f}s "
            f"({counts.total / max(elapsed, 1e-9):.1f}/s, asked for {rate:g}/s); "
            f"the stack keeps running: `make stop` stops it"
        )
        if worker.is_alive():
            self.console.print("[red]the change generator did not stop within 30 s")
            raise SystemExit(1)
        if failure:
            # The class only: a database error's text can quote row values (personal data).
            self.console.print(f"[red]the change generator stopped early: {type(failure[0]).__name__}")
            raise SystemExit(1)

    def _connectors(self, config_file: Path) -> list[Child]:
        logs = self.config.home / "logs"
        return [Child.simpul(f"cdc-{source.name}", config_file, logs, "cdc", "run", "--source", source.name) for source in self.config.sources]

    def _ensure_estimates(self) -> None:
        """Train the match model once, on up to 200,000 records of the agency databases."""
        from simpul.er_offline import train_estimates

        target = self.config.estimates_path
        if target.is_file():
            self.console.print(f"match model: {target}")
            return
        self.console.print("training the match model on the agency databases (up to 200,000 records)")
        resolution, records = train_estimates(self.config, target, limit=200_000)
        self.console.print(f"match model trained on {records:,} records ({resolution.cluster_count:,} citizens): {target}")

    def _processors(self, config_file: Path) -> list[Child]:
        logs = self.config.home / "logs"
        return [Child.simpul(f"streams-{role}", config_file, logs, "streams", "run", "--role", role) for role in ("router", "resolver")]

    _RESOLVER_FIGURES = {
        "applied": "simpul_resolver_records_in_total", "decisions": "simpul_resolver_decisions_total",
        "merges": "simpul_resolver_merges_total", "splits": "simpul_resolver_splits_total",
    }

    def _resolved(self) -> dict[str, float]:
        """What the resolver has done so far (from its own /metrics, one fetch); empty until it answers."""
        url = f"http://{self.config.metrics.host}:{metrics_port(self.config, 'resolver')}/metrics"
        sums = scrape_sums(url, *self._RESOLVER_FIGURES.values())
        return {name: sums[sample] for name, sample in self._RESOLVER_FIGURES.items()} if sums is not None else {}

    @staticmethod
    def _processors_table(processors: Supervisor, resolved: dict[str, float]) -> Table:
        table = Table("processor", "state", "restarts", title="stream processors")
        for child in processors.children:
            table.add_row(child.name, child.state(processors.stopped), str(child.restarts))
        figures = ", ".join(f"{name} {int(value):,}" for name, value in resolved.items()) or "starting"
        table.caption = f"resolver: {figures}"
        return table

    def _captured(self) -> dict[str, float]:
        """Events each connector has published so far (from its own /metrics)."""
        captured = {}
        for index, source in enumerate(self.config.sources):
            url = f"http://{self.config.metrics.host}:{metrics_port(self.config, 'cdc', index)}/metrics"
            sums = scrape_sums(url, EVENTS_METRIC)
            if sums is not None:
                captured[source.name] = sums[EVENTS_METRIC]
        return captured

    def _status(
        self, counts: ChangeCounts, elapsed: float, rate: float, supervisor: Supervisor, events: dict[str, float], previous: dict[str, float],
        processors: Supervisor, resolved: dict[str, float],
    ) -> Group:
        header = f"running {elapsed:.0f}s · {counts.total:,} changes ({counts.total / max(elapsed, 1e-9):.1f}/s of {rate:g}/s asked) · Ctrl-C stops"
        return Group(
            header, self._connectors_table(supervisor, events, previous), self._processors_table(processors, resolved), self._changes_table(counts)
        )

    def _connectors_table(self, supervisor: Supervisor, events: dict[str, float], previous: dict[str, float]) -> Table:
        table = Table("connector", "agency", "state", "events", "events/s", "restarts", title="CDC connectors")
        for source, child in zip(self.config.sources, supervisor.children):
            total = events.get(source.name)
            per_second = total - previous[source.name] if total is not None and source.name in previous else None
            table.add_row(
                child.name, source.agency, child.state(supervisor.stopped),
                f"{int(total):,}" if total is not None else "-",
                f"{per_second:,.0f}" if per_second is not None else "-",
                str(child.restarts),
            )
        return table

    @staticmethod
    def _services_table(services: list[ServiceStatus]) -> Table:
        table = Table("service", "state", "address", "detail", title="local stack")
        for s in services:
            table.add_row(s.name, "[green]running" if s.running else "[red]stopped", s.address, s.detail)
        return table

    @staticmethod
    def _seed_table(records: dict[str, int]) -> Table:
        table = Table("agency table", "rows", title="seeded")
        for name, rows in records.items():
            table.add_row(name, f"{rows:,}")
        return table

    @staticmethod
    def _changes_table(counts: ChangeCounts) -> Table:
        table = Table("agency", "change", "committed", title="live changes")
        for (agency, kind), value in sorted(counts.by_kind.items()):
            table.add_row(agency, kind, f"{int(value):,}")
        return table
