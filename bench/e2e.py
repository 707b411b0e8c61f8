"""End-to-end benchmark: agency databases -> CDC -> router -> resolver -> master index (and
write-back) -> lookup API, every part as its own process on this machine's local stack.

    .venv/bin/python -m bench.e2e [--config simpul.yaml] [--citizens 20000] [--rate 500] [--steady-seconds 60]
                                  [--api-rate 200] [--api-seconds 30] [--seed 20250601]

Everything runs on copies of the agency databases (``copy_sources``), with topics, slots, consumer
groups, a master-index database (``mpi_e2e_<run>``), metrics ports and an API port of the run's
own; the copies, the database, the topics, the consumer groups and the processors' local state
are removed at the end. The stack's own (seeded) databases are never touched.

1. **Initial load**: ``--citizens`` residents are seeded into the copies (the full city is 768,377);
   the match model is trained on them (export + resolve, ``train_seconds``); then the four CDC
   connectors, the router, the resolver, the master-index sink and the write-back sink start, and
   ``initial_load_seconds`` runs from starting them until every exported record has its row in
   ``mpi.record_link`` and the sink's stored offsets (``mpi.sink_offset``) equal the end offsets of
   its four topics. ``initial_load_projected_full_city_s`` extrapolates linearly (an estimate).
2. **Steady load**: the change generator commits real transactions into the copies at ``--rate``
   changes/s for ``--steady-seconds``; ``steady_rate_per_s`` is what it achieved. Latency from the
   source commit to the master index's commit, two ways:
   - exact (``p50_ms``/``p99_ms``): every ``mpi.citizen_history`` row caused by a steady-phase change,
     ``recorded_at`` (the sink transaction's clock) minus the source commit time. PostgreSQL sources
     carry their commit time to the millisecond (``source_changed_at``); MariaDB's binlog only to the
     second, so for Disnaker's registrations the generator's own commit time is used (noted when
     its commit returned, paired through the record added to the citizen's members); rows of
     whole-second origin that cannot be paired are counted, not used;
   - from the sink's histogram ``simpul_sink_end_to_end_latency_seconds`` (difference of two
     scrapes, coarse buckets; includes the whole-second MariaDB timestamps):
     ``p50_ms_histogram``/``p99_ms_histogram``.
   While the generator runs, where the CPU goes: each Simpul process in % of one core
   (``steady_cpu_percent_by_process``, at the nice values of ``nice_by_process``) and the
   machine's busy and hypervisor-stolen time (``steady_machine_cpu``), which shows whether the
   stages were short of CPU.
   After the generator stops, up to 120 s for the pipeline to drain: once every stage's lag is
   zero, ``drain_seconds`` runs from the generator's stop to the master index's last write (the
   newest ``recorded_at``/``indexed_at`` in it). The backlog each stage had when the generator
   stopped shows whether the pipeline kept up; the router's and resolver's are read from their
   groups' committed offsets, which Faust commits every ~3 s, so they include up to ~3 s of input
   already processed (the sink's come from its own offsets table, exact).
3. **API**: ``simpul api run`` over the run's master index; keep-alive clients send ``--api-rate``
   requests/s for ``--api-seconds`` (after a 3 s warm-up): 40% by NIK, 40% by master id, 20% by
   name and birth date, for real citizens of the index, each as one of the configured agencies.
   Latency runs from each request's scheduled send (no coordinated omission). The pipeline keeps
   running (idle, or still draining: ``api_pipeline_drained`` says which).

Figures are printed next to the targets and written to ``bench/results/e2e.json`` (also when a
phase fails: then with ``error`` and the children's traceback lines).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.api import Load, plan
from bench.harness import ConnectorProcess, MachineCpu, Offsets, SimpulProcess, delete_topics_and_groups, free_port_range, lag, percentile, write_results
from simpul.config import SimpulConfig, load_config, load_env_file
from simpul.databases import copy_sources
from simpul.er_offline import train_estimates
from simpul.mainjob import histogram_quantile, scrape_samples
from simpul.metrics import CDC_PORT_OFFSET, metrics_port
from simpul.progress import progress
from simpul.seed.changes import ChangeGenerator, ChangeSummary
from simpul.seed.city import seed_city
from simpul.shutdown import Shutdown
from simpul.sinks.master_schema import OFFSETS, ensure_schema
from simpul.stack import LocalStack
from simpul.streams.mapping import align_databases, load_mapping

FULL_CITY = 768_377
INITIAL_TIMEOUT_S = 3600
DRAIN_TIMEOUT_S = 120
WRITEBACK_WAIT_S = 60
API_WARM_UP_S = 3
API_PURPOSE = "benchmark e2e"
LATENCY_BUCKETS = "simpul_sink_end_to_end_latency_seconds_bucket"
TARGETS = {
    "initial_load_projected_full_city_s": ("<=", 600, "full city in at most 10 min"),
    "p50_ms": ("<=", 200, "p50 at most 200 ms at 500 changes/s"),
    "p99_ms": ("<=", 1000, "p99 at most 1,000 ms at 500 changes/s"),
    "api_p99_ms": ("<=", 20, "API p99 at most 20 ms"),
}


class TimedChanges(ChangeGenerator):
    """The change generator, noting when each Disnaker registration's commit returned (MariaDB's
    binlog dates an event to the second only; PostgreSQL's commit times are exact already)."""

    def __init__(self, config: SimpulConfig, seed: int, truth_dir: Path) -> None:
        super().__init__(config, seed, truth_dir)
        self.disnaker_commits: dict[str, float] = {}

    def _disnaker_registration(self) -> None:
        ak1_id = getattr(self, "_next_ak1", None)
        super()._disnaker_registration()
        if ak1_id is not None and self._next_ak1 != ak1_id:
            self.disnaker_commits[str(ak1_id)] = time.time()


@dataclass
class Pipeline:
    """The run's child processes by name; any of them exiting ends the benchmark with its traceback."""

    processes: dict[str, SimpulProcess] = field(default_factory=dict)

    def start(self, name: str, process: SimpulProcess) -> SimpulProcess:
        self.processes[name] = process
        return process

    def check(self) -> None:
        for name, process in self.processes.items():
            if process.process.poll() is not None:
                raise ChildDied(name, process)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def problems(self) -> dict[str, list[str]]:
        """Per child, the traceback and error lines of its log (nothing for a clean log)."""
        found = {}
        for name, process in self.processes.items():
            lines = log_problems(process.log)
            if lines:
                found[name] = lines
        return found


def steady_cpu(pipeline: Pipeline, before: dict[str, float], machine_before: MachineCpu) -> dict[str, Any]:
    """Where the CPU went since ``before`` (each process's CPU seconds) and ``machine_before``:
    each Simpul process in % of one core, and the machine's busy and stolen (hypervisor) time in %
    of all its cores; the rest of the busy time is Kafka, the databases, the registry and this
    benchmark with its change generator."""
    machine = MachineCpu.now()
    cores = os.cpu_count() or 1
    elapsed = max(machine.elapsed - machine_before.elapsed, 1e-9)  # summed over the cores
    by_process = {name: round(100 * cores * (p.cpu_seconds() - before[name]) / elapsed, 1) for name, p in pipeline.processes.items()}
    return {
        "steady_cpu_percent_by_process": by_process,
        # As the processes run (processors.resolver_nice, unless the system refused it).
        "nice_by_process": {name: p.nice() for name, p in pipeline.processes.items()},
        "steady_machine_cpu": {
            "cores": cores,
            "busy_percent": round(100 * (machine.busy - machine_before.busy) / elapsed, 1),
            "stolen_percent": round(100 * (machine.stolen - machine_before.stolen) / elapsed, 1),
            "simpul_processes_percent": round(sum(by_process.values()) / cores, 1),
        },
    }


class ChildDied(RuntimeError):
    def __init__(self, name: str, process: SimpulProcess) -> None:
        super().__init__(f"{name} exited with code {process.process.returncode}; log {process.log}")
        self.name = name


def log_problems(log: Path, limit: int = 60) -> list[str]:
    """Traceback blocks and ERROR/CRITICAL lines of a child's log (the last ``limit`` lines of them)."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    picked, in_traceback = [], False
    for line in text:
        if line.startswith("Traceback"):
            in_traceback = True
        if in_traceback or re.search(r"\b(ERROR|CRITICAL)\b", line):
            picked.append(line)
        if in_traceback and line and not line.startswith((" ", "Traceback")) and not line.startswith("During handling"):
            in_traceback = False
    return picked[-limit:]


class Stages:
    """Where each stage of the run's pipeline stands: lags of the router, the resolver, the
    master-index sink (from its own offsets table) and the write-back sink."""

    def __init__(self, config: SimpulConfig, master_dsn: str) -> None:
        self.config = config
        p = config.processors
        mapping = align_databases(load_mapping(config.mapping_path), config.mysql_databases)
        by_name = {s.name: s for s in config.sources}
        self.cdc_topics = sorted({f"{by_name[src].topic_prefix}.{table}" for src, table in mapping.read_tables() if src in by_name and table in by_name[src].tables})
        self.sink_topics = [p.citizens_topic, p.links_topic, p.reviews_topic, p.quality_topic]
        self.writeback = {s.name: s.feedback_topic for s in config.sources if s.feedback.write_back}
        self.sink_consumer = f"{config.sinks.consumer_prefix}-master-index"
        self.offsets = Offsets(config)
        self.conn = psycopg.connect(master_dsn, autocommit=True)

    def sink_positions(self) -> dict[tuple[str, int], int]:
        with self.conn.cursor() as cursor:
            return OFFSETS.load(cursor, self.sink_consumer)

    def sink_lag(self) -> int:
        return lag(self.offsets.ends(self.sink_topics), self.sink_positions())

    def links(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM mpi.record_link").fetchone()[0])  # type: ignore[index]

    def lags(self) -> dict[str, int]:
        """Every stage's lag now (router and resolver from their groups' committed offsets)."""
        p = self.config.processors
        cdc = self.offsets.ends(self.cdc_topics)
        changes = self.offsets.ends([p.changes_topic])
        writeback = 0
        for name, topic in self.writeback.items():
            ends = self.offsets.ends([topic])
            writeback += lag(ends, self.offsets.committed(f"{self.config.sinks.consumer_prefix}-writeback-{name}", list(ends)))
        return {
            "router": lag(cdc, self.offsets.committed(f"{p.app_id}-router", list(cdc))),
            "resolver": lag(changes, self.offsets.committed(p.app_id, list(changes))),
            "master_index": self.sink_lag(),
            "writeback": writeback,
            "cdc_end": sum(cdc.values()),
        }

    def close(self) -> None:
        self.offsets.close()
        self.conn.close()


# --- the lookup API load ------------------------------------------------------------------------


def wait_healthy(server: SimpulProcess, host: str, port: int, timeout: float) -> float:
    """Seconds until ``/health`` answers 200; exits with the log tail if it does not in time."""
    started = time.monotonic()
    while time.monotonic() - started < timeout and server.process.poll() is None:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API did not become healthy within {timeout:.0f} s; log tail:\n{server.log.read_text(errors='replace')[-3000:]}")


# --- helpers ------------------------------------------------------------------------------------


def scrape(config: SimpulConfig, component: str) -> list[Any]:
    return scrape_samples(f"http://{config.metrics.host}:{metrics_port(config, component)}/metrics") or []


def latency_buckets(samples: list[Any]) -> dict[float, float]:
    return {float(s.labels["le"]): s.value for s in samples if s.name == LATENCY_BUCKETS and s.labels.get("sink") == "master_index"}


def total(samples: list[Any], name: str) -> float:
    return sum(s.value for s in samples if s.name == name)


def ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def exact_latencies(conn: psycopg.Connection[Any], since_wall: float, disnaker_commits: dict[str, float]) -> dict[str, list[float]]:
    """Source commit to master-index commit (ms) of every history row caused by a change committed
    since ``since_wall``, by origin: ``postgres`` (commit time from the row), ``disnaker``
    (paired with the generator's commit time), ``unpaired`` (whole-second origin without a pair)."""
    rows = conn.execute(
        "SELECT source_changed_at, recorded_at, changed->'members'->'added' FROM mpi.citizen_history "
        "WHERE source_changed_at >= to_timestamp(%s) ORDER BY id",
        (since_wall - 1.0,),
    ).fetchall()
    record_commits: dict[str, float] = {}
    if disnaker_commits:
        for record_id, key in conn.execute(
            "SELECT record_id, record_key FROM mpi.record_link WHERE source = 'disnaker' AND record_key = ANY(%s)", (list(disnaker_commits),)
        ).fetchall():
            record_commits[record_id] = disnaker_commits[key]
    out: dict[str, list[float]] = {"postgres": [], "disnaker": [], "unpaired": []}
    for source_at, recorded_at, added in rows:
        if source_at.microsecond != 0:
            out["postgres"].append((recorded_at - source_at).total_seconds() * 1000)
            continue
        commits = [record_commits[r] for r in (added or ()) if r in record_commits]
        if commits:
            out["disnaker"].append((recorded_at.timestamp() - min(commits)) * 1000)
        else:
            out["unpaired"].append((recorded_at - source_at).total_seconds() * 1000)
    return out


def quantiles_ms(values: list[float]) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return (round(values[0], 1), round(values[0], 1)) if values else (None, None)
    return round(statistics.median(values), 1), round(percentile(values, 99), 1)


def print_figures(figures: dict[str, Any]) -> None:
    print("\nend-to-end figures (the full city has 768,377 residents; this run seeded "
          f"{figures.get('citizens', 0):,}):", flush=True)
    for name, value in figures.items():
        target = TARGETS.get(name)
        note = ""
        if target is not None and isinstance(value, (int, float)):
            op, limit, text = target
            met = value <= limit if op == "<=" else value >= limit
            note = f"   target: {text} -> {'MET' if met else 'NOT MET'}"
        elif target is not None:
            note = f"   target: {target[2]}"
        shown = json.dumps(value) if isinstance(value, (dict, list)) else value
        print(f"{name:>40}: {shown}{note}", flush=True)


# --- the benchmark ------------------------------------------------------------------------------


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--citizens", type=int, default=20_000, help=f"residents seeded (the full city: {FULL_CITY:,})")
    parser.add_argument("--rate", type=float, default=500, help="live changes per second in the steady phase")
    parser.add_argument("--steady-seconds", type=float, default=60)
    parser.add_argument("--api-rate", type=float, default=200, help="API requests per second")
    parser.add_argument("--api-seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None, help="seed of the city (default: the config's seed.seed)")
    args = parser.parse_args()
    wall_started = time.monotonic()

    base = load_config(Path(args.config))
    LocalStack(base).up()
    load_env_file(base.home / "stack.env")
    seed = args.seed if args.seed is not None else base.seed.seed
    run = f"e2e{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-e2e-"))

    # The run's own master index, on the main PostgreSQL server.
    admin_dsn = base.sinks.master_index.dsn()
    master_db = f"mpi_e2e_{run}"
    master_dsn = f"{admin_dsn.rsplit('/', 1)[0]}/{master_db}"
    master_env = f"SIMPUL_E2E_MASTER_DSN_{run.upper()}"
    os.environ[master_env] = master_dsn

    metrics_base = free_port_range(CDC_PORT_OFFSET + len(base.sources) + 1)
    api_port = free_port_range(1, 40_001, 45_000)
    figures: dict[str, Any] = {
        "citizens": args.citizens, "full_city_citizens": FULL_CITY, "run": run,
        "machine": f"{os.cpu_count()} cores; Kafka, PostgreSQL, MariaDB, every Simpul process and the load generators share it",
    }
    pipeline = Pipeline()
    stages: Stages | None = None
    copies = None
    database_created = False
    shutdown = Shutdown()
    try:
        copies = copy_sources(base.sources, run, lambda name, value: os.environ.__setitem__(name, value))
        sources = [
            s.model_copy(update={
                "topic_prefix": f"{run}-{s.name}",
                "capture": s.capture.model_copy(update={"slot": f"{run}_{s.name}", "publication": f"{run}_{s.name}"}),
                "feedback": s.feedback.model_copy(update={"topic": f"{run}.feedback.{s.name}"}),
            })
            for s in copies.sources
        ]
        processors = base.processors.model_copy(update={
            "app_id": run, "estimates": work / "estimates.json", "changes_topic": f"{run}.changes", "citizens_topic": f"{run}.citizens",
            "links_topic": f"{run}.links", "reviews_topic": f"{run}.reviews", "quality_topic": f"{run}.quality", "dlq_topic": f"{run}.dlq",
        })
        sinks = base.sinks.model_copy(update={
            "master_index": base.sinks.master_index.model_copy(update={"dsn_env": master_env, "database": master_db}),
            "consumer_prefix": f"{run}-sink",
        })
        config = base.model_copy(update={
            "sources": sources, "processors": processors, "sinks": sinks,
            "api": base.api.model_copy(update={"port": api_port}),
            "metrics": base.metrics.model_copy(update={"port": metrics_base}),
        })
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(master_db)))
        database_created = True
        with psycopg.connect(master_dsn, autocommit=True) as conn:
            ensure_schema(conn)
        print(f"run {run}: copies of the agency databases, master index {master_db}, metrics ports {metrics_base}+, API port {api_port}", flush=True)

        # --- 1. initial load ------------------------------------------------------------------------
        seeded = seed_city(config, args.citizens, seed, work / "truth")
        figures["initial_load_rows"] = sum(seeded.records.values())
        print(f"seeded {args.citizens:,} residents (the full city: {FULL_CITY:,}): {figures['initial_load_rows']:,} agency rows", flush=True)

        started = time.perf_counter()
        resolution, records = train_estimates(config, processors.estimates)
        figures["train_seconds"] = round(time.perf_counter() - started, 1)
        figures["initial_load_records"] = records
        print(f"match model trained on {records:,} records ({resolution.cluster_count:,} citizens) in {figures['train_seconds']} s", flush=True)

        stages = Stages(config, master_dsn)
        started = time.perf_counter()
        for source in sources:
            pipeline.start(f"cdc-{source.name}", ConnectorProcess(config, source))
        for role in ("router", "resolver"):
            pipeline.start(role, SimpulProcess(config, ["streams", "run", "--role", role]))
        pipeline.start("sink-master-index", SimpulProcess(config, ["sink", "run", "master-index"]))
        pipeline.start("sink-writeback", SimpulProcess(config, ["sink", "run", "writeback"]))
        with progress("initial load into the master index", records, unit="records") as bar:
            seen = 0
            while True:
                pipeline.check()
                links = stages.links()
                bar.advance(links - seen)
                seen = links
                if links >= records and stages.sink_lag() == 0:
                    break
                if time.perf_counter() - started > INITIAL_TIMEOUT_S:
                    raise RuntimeError(f"initial load: {links:,} of {records:,} records in the master index after {INITIAL_TIMEOUT_S} s")
                time.sleep(0.25)
        figures["initial_load_seconds"] = round(time.perf_counter() - started, 1)
        figures["initial_load_records_per_s"] = round(records / figures["initial_load_seconds"], 1)
        figures["initial_load_projected_full_city_s"] = round(figures["initial_load_seconds"] * FULL_CITY / args.citizens)
        with stages.conn.cursor() as cursor:
            figures["initial_citizens"] = cursor.execute("SELECT count(*) FROM mpi.citizen").fetchone()[0]  # type: ignore[index]
            figures["initial_review_items"] = cursor.execute("SELECT count(*) FROM mpi.review_item").fetchone()[0]  # type: ignore[index]
            figures["initial_dead_letters"] = cursor.execute("SELECT count(*) FROM mpi.dead_letter").fetchone()[0]  # type: ignore[index]
        print(f"initial load: {records:,} records in the master index in {figures['initial_load_seconds']} s "
              f"({figures['initial_load_records_per_s']}/s; linear projection for the full city: "
              f"{figures['initial_load_projected_full_city_s']:,} s)", flush=True)
        while stages.lags()["writeback"] > 0 and time.perf_counter() - started < figures["initial_load_seconds"] + WRITEBACK_WAIT_S:
            pipeline.check()
            time.sleep(0.25)
        writeback_lag = stages.lags()["writeback"]
        figures["initial_writeback_seconds"] = round(time.perf_counter() - started, 1) if writeback_lag == 0 else None
        figures["initial_writeback_lag_left"] = writeback_lag
        for name in ("router", "resolver", "sink-master-index", "sink-writeback"):
            figures[f"{name.replace('-', '_')}_rss_mb_max_initial"] = round(pipeline.processes[name].rss_max_mb)

        # --- 2. steady load ---------------------------------------------------------------------------
        resolver, sink = pipeline.processes["resolver"], pipeline.processes["sink-master-index"]
        for process in pipeline.processes.values():
            process.reset_rss()
        before_sink, before_resolver = scrape(config, "sink"), scrape(config, "resolver")
        generator = TimedChanges(config, seed + 1, work / "truth")
        outcome: list[ChangeSummary | BaseException] = []

        def drive() -> None:
            try:
                outcome.append(generator.run(args.rate, shutdown, args.steady_seconds))
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                outcome.append(exc)

        steady_wall = time.time()
        cpu_before, machine_before = {name: p.cpu_seconds() for name, p in pipeline.processes.items()}, MachineCpu.now()
        thread = threading.Thread(target=drive, name="change-generator", daemon=True)
        thread.start()
        with progress(f"steady load at {args.rate:g} changes/s", int(args.steady_seconds), unit="s") as bar:
            ticked = 0
            steady_started = time.monotonic()
            while thread.is_alive():
                pipeline.check()
                thread.join(0.5)
                now = min(int(time.monotonic() - steady_started), int(args.steady_seconds))
                bar.advance(now - ticked)
                ticked = now
        stopped, stopped_wall = time.monotonic(), time.time()
        figures.update(steady_cpu(pipeline, cpu_before, machine_before))
        print(f"CPU while the changes ran: machine {figures['steady_machine_cpu']}; by process (% of one core) "
              f"{figures['steady_cpu_percent_by_process']}", flush=True)
        if isinstance(outcome[0], BaseException):
            raise RuntimeError(f"the change generator failed: {type(outcome[0]).__name__}") from outcome[0]
        summary = outcome[0]
        after_resolver = scrape(config, "resolver")
        backlog = stages.lags()
        figures.update({
            "steady_rate_target_per_s": args.rate,
            "steady_changes": summary.total,
            "steady_seconds": round(summary.seconds, 1),
            "steady_rate_per_s": round(summary.total / max(summary.seconds, 1e-9), 1),
            "steady_failures": summary.failures,
            "steady_changes_by_kind": {f"{a}/{k}": n for (a, k), n in sorted(summary.counts.items())},
            "resolver_changes_per_s_steady": round(
                (total(after_resolver, "simpul_resolver_records_in_total") - total(before_resolver, "simpul_resolver_records_in_total"))
                / max(summary.seconds, 1e-9), 1),
            "backlog_at_generator_stop": {k: v for k, v in backlog.items() if k != "cdc_end"},
        })
        print(f"steady load: {summary.total:,} changes in {summary.seconds:.1f} s ({figures['steady_rate_per_s']}/s of {args.rate:g}/s asked); "
              f"backlog when it stopped: {figures['backlog_at_generator_stop']}", flush=True)

        # Drain: until every stage's lag is zero and the connectors have published nothing new for 2 s.
        cdc_history: list[tuple[float, int]] = []
        drained = False
        left = backlog["router"] + backlog["resolver"] + backlog["master_index"]
        with progress("draining the pipeline", max(left, 1), unit="messages") as bar:
            reported = 0
            while time.monotonic() - stopped < DRAIN_TIMEOUT_S:
                pipeline.check()
                now_lags = stages.lags()
                now = time.monotonic()
                cdc_history.append((now, now_lags["cdc_end"]))
                quiet = [end for at, end in cdc_history if now - at <= 2.0]
                settled = now - stopped >= 2.0 and len(set(quiet)) == 1
                remaining = now_lags["router"] + now_lags["resolver"] + now_lags["master_index"]
                done = max(0, min(left, left - remaining))
                bar.advance(done - reported)
                reported = done
                if settled and remaining == 0:
                    drained = True
                    break
                time.sleep(0.25)
        figures["drained"] = drained
        # The master index's last write (its rows' own clock) marks the end of the drain.
        last_write = stages.conn.execute(
            "SELECT extract(epoch FROM greatest((SELECT max(recorded_at) FROM mpi.citizen_history), (SELECT max(indexed_at) FROM mpi.record_link), "
            "(SELECT max(indexed_at) FROM mpi.review_item), (SELECT max(indexed_at) FROM mpi.quality_issue)))"
        ).fetchone()[0]  # type: ignore[index]
        figures["drain_seconds"] = round(max(0.0, float(last_write) - stopped_wall), 1) if drained and last_write is not None else None
        figures["backlog_after_drain_wait"] = {k: v for k, v in stages.lags().items() if k != "cdc_end"}
        after_sink = scrape(config, "sink")

        # Latency, exactly (history rows) and from the sink's histogram.
        by_origin = exact_latencies(stages.conn, steady_wall, generator.disnaker_commits)
        exact = by_origin["postgres"] + by_origin["disnaker"]
        figures["p50_ms"], figures["p99_ms"] = quantiles_ms(exact)
        figures["max_ms"] = round(max(exact), 1) if exact else None
        figures["latency_rows"] = len(exact)
        figures["latency_rows_by_origin"] = {k: len(v) for k, v in by_origin.items()}
        figures["latency_p50_p99_ms_by_origin"] = {k: quantiles_ms(v) for k, v in by_origin.items() if v}
        before_b, after_b = latency_buckets(before_sink), latency_buckets(after_sink)
        delta = {le: after_b[le] - before_b.get(le, 0.0) for le in after_b}
        figures["p50_ms_histogram"] = ms(histogram_quantile(0.5, delta))
        figures["p99_ms_histogram"] = ms(histogram_quantile(0.99, delta))
        figures["histogram_observations"] = int(delta.get(float("inf"), 0))
        figures["resolver_rss_mb_max_steady"] = round(resolver.rss_max_mb)
        figures["sink_rss_mb_max_steady"] = round(sink.rss_max_mb)
        figures["router_rss_mb_max_steady"] = round(pipeline.processes["router"].rss_max_mb)
        figures["writeback_rss_mb_max_steady"] = round(pipeline.processes["sink-writeback"].rss_max_mb)
        figures["resolver_rss_mb_end"] = round(resolver.rss_mb())
        figures["sink_rss_mb_end"] = round(sink.rss_mb())
        print(f"latency source commit -> master index: exact p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms over {len(exact):,} history rows "
              f"{figures['latency_rows_by_origin']}; histogram p50 {figures['p50_ms_histogram']} ms, p99 {figures['p99_ms_histogram']} ms; "
              f"drained: {drained} in {figures['drain_seconds']} s", flush=True)

        # --- 3. API -------------------------------------------------------------------------------------
        keys = {c.agency: os.environ.get(c.key_env) or uuid.uuid4().hex for c in config.api.clients}
        if not keys:
            raise RuntimeError(f"{args.config}: api.clients is empty; the benchmark calls as the configured agencies")
        targets = [
            {"master_id": m, "nik": nik, "name": name, "birth_date": born.isoformat()}
            for m, nik, name, born in stages.conn.execute(
                "SELECT master_id, nik, name, birth_date FROM mpi.citizen WHERE nik ~ '^[0-9]{16}$' AND name IS NOT NULL "
                "AND length(name) >= 2 AND birth_date IS NOT NULL ORDER BY random() LIMIT 5000"
            ).fetchall()
        ]
        api = pipeline.start("api", SimpulProcess(config, ["api", "run"], {c.key_env: keys[c.agency] for c in config.api.clients}))
        figures["api_start_seconds"] = round(wait_healthy(api, config.api.host, api_port, 60), 1)
        figures["api_pipeline_drained"] = drained
        rng = random.Random(seed)
        load = Load(config.api.host, api_port, keys, API_PURPOSE)
        agencies = sorted(keys)
        load.run(plan(targets, agencies, int(args.api_rate * API_WARM_UP_S), rng), args.api_rate)
        api.reset_rss()
        calls = plan(targets, agencies, int(args.api_rate * args.api_seconds), rng)
        with progress(f"API load at {args.api_rate:g} requests/s", int(args.api_seconds), unit="s") as bar:
            ticker_stop = threading.Event()

            def tick() -> None:
                ticked, began = 0, time.monotonic()
                while not ticker_stop.wait(1.0):
                    now = min(int(time.monotonic() - began), int(args.api_seconds))
                    bar.advance(now - ticked)
                    ticked = now

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            elapsed = load.run(calls, args.api_rate)
            ticker_stop.set()
            ticker.join()
        everything = [v for values in load.latencies_ms.values() for v in values]
        figures.update({
            "api_rate_target_per_s": args.api_rate,
            "api_requests": len(everything),
            "api_rate_per_s": round(len(everything) / elapsed, 1),
            "api_errors": load.errors,
            "api_statuses": dict(sorted(load.statuses.items())),
            "api_p50_ms": round(percentile(everything, 50), 2),
            "api_p95_ms": round(percentile(everything, 95), 2),
            "api_p99_ms": round(percentile(everything, 99), 2),
            "api_max_ms": round(max(everything), 2),
            "api_p99_ms_by_kind": {kind: round(percentile(v, 99), 2) for kind, v in sorted(load.latencies_ms.items())},
            "api_rss_mb_max": round(api.rss_max_mb),
        })
        print(f"API: {figures['api_rate_per_s']}/s, errors {figures['api_errors']}, p50 {figures['api_p50_ms']} ms, p99 {figures['api_p99_ms']} ms", flush=True)
        pipeline.check()
        for name, process in pipeline.processes.items():
            figures.setdefault("rss_mb_max_by_process", {})[name] = round(process.rss_max_mb)
    except BaseException as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        shutdown.request()
        try:
            found = pipeline.problems()
            if found:
                figures["child_log_problems"] = found
                for name, lines in found.items():
                    print(f"--- {name} ({pipeline.processes[name].log}):", *lines, sep="\n", flush=True)
            pipeline.stop()
            if stages is not None:
                stages.close()
        finally:
            if copies is not None:
                copies.drop()
            if database_created:
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(master_db)))
            try:
                topics, groups = delete_topics_and_groups(base, run)
                print(f"cleaned up: copies and {master_db} dropped, {topics} topics and {groups} consumer groups of the run deleted", flush=True)
            except Exception as exc:  # noqa: BLE001 - leftovers of a benchmark run are harmless
                print(f"cleanup of topics and groups failed: {type(exc).__name__}", flush=True)
            for app_dir in (base.home / "processors" / run, base.home / "processors" / f"{run}-router"):
                shutil.rmtree(app_dir, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            figures["wall_seconds"] = round(time.monotonic() - wall_started, 1)
            figures["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            write_results("e2e", figures)
            print_figures(figures)


if __name__ == "__main__":
    main()
