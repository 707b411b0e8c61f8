"""The main job on the local stack (``simpul run``, ``make run``).

It brings the stack up (Kafka, PostgreSQL, MariaDB, the schema registry and Prometheus), seeds a
demo-sized Kota Serang when the agency databases are empty, runs a CDC connector per agency source,
the stream processors (router and resolver, after training the match model once), the sinks
(master index and write-back) and the lookup API as supervised processes, and drives live changes
into the agency databases while showing what each stage does. Once citizens are in the master
index it plays the two stories of agencies connected (:mod:`simpul.seed.stories`) and times them.
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
from prometheus_client.samples import Sample
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from simpul.config import SimpulConfig, load_env_file, write_config
from simpul.metrics import metrics_port, serve_metrics
from simpul.seed import ChangeGenerator, is_seeded, seed_city
from simpul.seed.stories import AgencyStories, StoryResult
from simpul.shutdown import Shutdown
from simpul.stack import LocalStack, ServiceStatus
from simpul.supervisor import Child, Supervisor

CHANGES_METRIC = "simpul_changegen_changes_total"
EVENTS_METRIC = "simpul_cdc_events_total"


def scrape_samples(url: str) -> list[Sample] | None:
    """Every sample on a ``/metrics`` page (one fetch); None while the page does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def scrape_sums(url: str, *sample_names: str) -> dict[str, float] | None:
    """Per sample name, the sum of its samples on a ``/metrics`` page (one fetch); None while the page does not answer."""
    samples = scrape_samples(url)
    if samples is None:
        return None
    sums = dict.fromkeys(sample_names, 0.0)
    for sample in samples:
        if sample.name in sums:
            sums[sample.name] += sample.value
    return sums


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram (upper bound to count), interpolated inside its
    bucket as Prometheus's ``histogram_quantile`` does; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = bound, count
    return lower


@dataclass
class PipelineFigures:
    """One reading of every stage's metrics: totals per stage and the master index's figures."""

    stages: dict[str, float | None]
    citizens: float | None = None
    auto_links: float | None = None
    review_items: float | None = None
    quality_issues: float | None = None
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None


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

        config_file = write_config(self.config, self.config.home / "run" / "simpul.yaml")
        supervisor = Supervisor(self._connectors(config_file))
        supervisor.start()
        self.console.print(f"CDC connectors: {', '.join(s.name for s in self.config.sources)} (logs in {self.config.home / 'logs'})")
        self._ensure_estimates()
        processors = Supervisor(self._processors(config_file) + self._sinks(config_file))
        processors.start()
        self.console.print(self._where())

        generator = ChangeGenerator(self.config, seed=int(time.time()), truth_dir=truth_dir)
        failure: list[BaseException] = []

        def drive_changes() -> None:
            try:
                generator.run(rate, shutdown, None)
            except BaseException as exc:  # reported below; the job must not hide a dead worker
                failure.append(exc)

        worker = threading.Thread(target=drive_changes, name="change-generator", daemon=True)
        worker.start()
        stories: list[StoryResult] = []
        storyteller = threading.Thread(target=self._tell_stories, args=(stories, shutdown), name="stories", daemon=True)
        live_started = time.monotonic()
        previous: dict[str, float] = {}
        figures = self._figures()
        with Live(console=self.console, refresh_per_second=2, transient=False) as live:
            while not shutdown.wait(1.0):
                supervisor.check()
                processors.check()
                events = self._captured()
                now_figures = self._figures(events)
                live.update(self._status(ChangeCounts.read(), time.monotonic() - live_started, rate, supervisor, events, previous, processors, now_figures, figures))
                previous, figures = events, now_figures
                if not storyteller.is_alive() and not stories and self._ready_for_stories(figures, time.monotonic() - live_started, duration_s):
                    storyteller.start()
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    shutdown.request()
                if not worker.is_alive():
                    break
        worker.join(timeout=30)
        if storyteller.is_alive():
            self.console.print("waiting for the agency stories to finish")
            storyteller.join(timeout=2 * self.STORY_TIMEOUT_S)
        events = self._captured()
        figures = self._figures(events)
        killed = processors.stop() + supervisor.stop()
        counts = ChangeCounts.read()
        elapsed = time.monotonic() - live_started
        self.console.rule("[bold]Summary")
        self.console.print(self._services_table(self.stack.status()))
        self.console.print(self._changes_table(counts))
        self.console.print(self._connectors_table(supervisor, events, {}))
        self.console.print(f"{int(sum(events.values())):,} change events captured into Kafka by {len(events)} connector(s)")
        self.console.print(self._processors_table(processors))
        self.console.print(self._stages_table(figures, None))
        self.console.print(f"{int(figures.stages.get('resolved') or 0):,} row changes resolved into citizens by the stream processors")
        self.console.print(self._stories_table(stories))
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

    STORY_TIMEOUT_S = 60.0

    def _ready_for_stories(self, figures: PipelineFigures, elapsed_s: float, duration_s: float | None) -> bool:
        """Tell the stories once citizens are in the master index and the initial load has had a
        third of a bounded run (at most 30 s) to settle."""
        settle = min(30.0, duration_s / 3) if duration_s is not None else 30.0
        return bool(figures.citizens) and elapsed_s >= settle

    def _tell_stories(self, results: list[StoryResult], shutdown: Shutdown) -> None:
        stories = AgencyStories(self.config, seed=int(time.time()))
        for tell in (stories.registration, stories.death):
            if shutdown.requested and results:
                break
            try:
                results.append(tell(self.STORY_TIMEOUT_S))
            except Exception as exc:  # noqa: BLE001 - a story failing must show in the summary, not end the job
                results.append(StoryResult(tell.__name__, f"failed: {type(exc).__name__}"))

    def _where(self) -> Table:
        host = self.config.metrics.host
        table = Table("what", "where", title="pipeline")
        table.add_row("stream processors", f"router and resolver; citizens on topic {self.config.processors.citizens_topic}")
        table.add_row("master index", f"PostgreSQL database {self.config.sinks.master_index.database} (schema mpi)")
        write_back = [s.name for s in self.config.sources if s.feedback.write_back]
        table.add_row("agencies hear back", f"topics simpul.feedback.<agency>; written back into {', '.join(write_back) or 'none'}")
        table.add_row("lookup API", f"http://{self.config.api.host}:{self.config.api.port}/docs (keys in {self.config.home / 'stack.env'})")
        table.add_row("metrics", f"http://{host}:{metrics_port(self.config, 'run')}/metrics and one port per component")
        table.add_row("Prometheus", f"http://127.0.0.1:{self.config.stack.prometheus.port} (alert rules from deploy/prometheus)")
        return table

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

    def _sinks(self, config_file: Path) -> list[Child]:
        logs = self.config.home / "logs"
        children = [Child.simpul("sink-master-index", config_file, logs, "sink", "run", "master-index")]
        if any(s.feedback.write_back for s in self.config.sources):
            children.append(Child.simpul("sink-writeback", config_file, logs, "sink", "run", "writeback"))
        return children + [Child.simpul("api", config_file, logs, "api", "run")]

    def _figures(self, captured: dict[str, float] | None = None) -> PipelineFigures:
        """Every stage's totals and the master index's figures, one fetch per component page."""
        def page(component: str) -> list[Sample]:
            return scrape_samples(f"http://{self.config.metrics.host}:{metrics_port(self.config, component)}/metrics") or []

        def total(samples: list[Sample], name: str, **labels: str) -> float | None:
            values = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
            return sum(values) if values else None

        router, resolver, sink, writeback = page("router"), page("resolver"), page("sink"), page("writeback")
        buckets = {float(s.labels["le"]): s.value for s in sink if s.name == "simpul_sink_end_to_end_latency_seconds_bucket"}
        return PipelineFigures(
            stages={
                "captured": sum(captured.values()) if captured else None,
                "routed": total(router, "simpul_router_events_total"),
                "resolved": total(resolver, "simpul_resolver_records_in_total"),
                "master index": total(sink, "simpul_sink_messages_total"),
                "written back": total(writeback, "simpul_sink_messages_total"),
            },
            citizens=total(sink, "simpul_sink_citizens"),
            auto_links=total(resolver, "simpul_resolver_decisions_total", outcome="link"),
            review_items=total(sink, "simpul_sink_review_items"),
            quality_issues=total(sink, "simpul_sink_quality_issues"),
            latency_p50_s=histogram_quantile(0.5, buckets),
            latency_p99_s=histogram_quantile(0.99, buckets),
        )

    @staticmethod
    def _processors_table(processors: Supervisor) -> Table:
        table = Table("process", "state", "restarts", title="stream processors, sinks and API")
        for child in processors.children:
            table.add_row(child.name, child.state(processors.stopped), str(child.restarts))
        return table

    @staticmethod
    def _stages_table(figures: PipelineFigures, previous: PipelineFigures | None) -> Table:
        table = Table("stage", "total", "per second", title="pipeline")
        for stage, value in figures.stages.items():
            before = previous.stages.get(stage) if previous is not None else None
            rate = f"{value - before:,.0f}" if value is not None and before is not None else "-"
            table.add_row(stage, f"{int(value):,}" if value is not None else "-", rate)

        def show(value: float | None) -> str:
            return f"{int(value):,}" if value is not None else "-"

        latency = (
            f"p50 {figures.latency_p50_s * 1000:,.0f} ms, p99 {figures.latency_p99_s * 1000:,.0f} ms"
            if figures.latency_p50_s is not None and figures.latency_p99_s is not None else "-"
        )
        table.caption = (
            f"citizens {show(figures.citizens)} · auto-links {show(figures.auto_links)} · review items {show(figures.review_items)} · "
            f"data-quality issues {show(figures.quality_issues)} · source commit to master index {latency}"
        )
        return table

    @staticmethod
    def _stories_table(stories: list[StoryResult]) -> Table:
        table = Table("story", "result", "latency", title="agencies connected")
        for story in stories:
            latency = f"{story.latency_s:.2f} s after the source commit" if story.latency_s is not None else "[red]not delivered"
            table.add_row(story.story, story.detail, latency)
        if not stories:
            table.caption = "the stories did not run (no citizens in the master index before the end)"
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
        processors: Supervisor, figures: PipelineFigures, previous_figures: PipelineFigures,
    ) -> Group:
        header = f"running {elapsed:.0f}s · {counts.total:,} changes ({counts.total / max(elapsed, 1e-9):.1f}/s of {rate:g}/s asked) · Ctrl-C stops"
        return Group(
            header, self._connectors_table(supervisor, events, previous), self._processors_table(processors),
            self._stages_table(figures, previous_figures), self._changes_table(counts),
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
