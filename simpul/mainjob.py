"""The main job on the local stack (``simpul run``, ``make run``).

Today it brings the stack up, seeds a demo-sized Kota Serang when the agency databases are empty,
and drives live changes into them while showing a live status; the CDC connectors, stream
processors and sinks join it as they are built. ``duration_s`` gives the bounded form that ends by
itself with a summary.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from prometheus_client import REGISTRY
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from simpul.config import SimpulConfig, load_env_file
from simpul.metrics import metrics_port, serve_metrics
from simpul.seed import ChangeGenerator, is_seeded, seed_city
from simpul.shutdown import Shutdown
from simpul.stack import LocalStack, ServiceStatus

CHANGES_METRIC = "simpul_changegen_changes_total"


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
        with Live(console=self.console, refresh_per_second=2, transient=False) as live:
            while not shutdown.wait(1.0):
                live.update(self._status(ChangeCounts.read(), time.monotonic() - live_started, rate))
                if duration_s is not None and time.monotonic() - started >= duration_s:
                    shutdown.request()
                if not worker.is_alive():
                    break
        worker.join(timeout=30)
        counts = ChangeCounts.read()
        elapsed = time.monotonic() - live_started
        self.console.rule("[bold]Summary")
        self.console.print(self._services_table(self.stack.status()))
        self.console.print(self._changes_table(counts))
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

    def _status(self, counts: ChangeCounts, elapsed: float, rate: float) -> Group:
        header = f"running {elapsed:.0f}s · {counts.total:,} changes ({counts.total / max(elapsed, 1e-9):.1f}/s of {rate:g}/s asked) · Ctrl-C stops"
        return Group(header, self._changes_table(counts))

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
