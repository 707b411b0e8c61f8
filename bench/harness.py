"""What the CDC benchmarks share: a connector run as its own process (as in production), a topic
watcher that times every event, memory sampling, percentiles and the results file."""

from __future__ import annotations

import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer
from confluent_kafka.admin import NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient

from simpul.config import SimpulConfig, SourceSettings, write_config
from simpul.kafka import client_config, create_topics
from simpul.schemas.wire import ConfluentAvroDecoder

RESULTS = Path(__file__).with_name("results")
# The unit of the CPU times in /proc (USER_HZ).
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class SimpulProcess:
    """A ``simpul`` command in its own process (as in production), with its log kept and its memory sampled."""

    def __init__(self, config: SimpulConfig, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="simpul-bench-"))
        config_file = write_config(config, self.directory / "simpul.yaml")
        self.log = self.directory / "process.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "simpul.cli", "--config", str(config_file), *argv],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "SIMPUL_LOG_LEVEL": "INFO", **(env or {})},
            )
        self._rss_peak_mb = 0.0
        self._cpu_s = 0.0

    def cpu_seconds(self) -> float:
        """CPU time the process has used so far, all its threads (the last value read once it is gone)."""
        fields = self._stat()
        if fields is not None:
            self._cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
        return self._cpu_s

    def nice(self) -> int | None:
        """The process's nice value now (None once it is gone)."""
        fields = self._stat()
        return int(fields[16]) if fields is not None else None

    def _stat(self) -> list[str] | None:
        """The fields of ``/proc/<pid>/stat`` after the command name (state first), None once it is gone."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return fields if len(fields) > 16 else None

    @property
    def rss_max_mb(self) -> float:
        """The peak resident memory since it started or since :meth:`reset_rss`: the process's
        own, plus each child process's (a connector's encoding workers), summed.

        The kernel keeps each peak (``VmHWM``), so nothing samples: a sampling thread per process
        (every 50 ms) took a quarter of the end-to-end benchmark's own CPU time, which the change
        generator and the pipeline then lacked. The last value read is kept once the process is gone.
        """
        return self._read_peak()

    def rss_mb(self) -> float:
        """The resident memory now of the process and its children (0 once it has exited)."""
        return sum(_status_mb(pid, "VmRSS") for pid in self._pids())

    def reset_rss(self) -> None:
        """Start a new peak (e.g. for one phase of the benchmark): Linux resets ``VmHWM`` to the
        current resident memory when 5 is written to a process's ``clear_refs``."""
        for pid in self._pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        self._rss_peak_mb = self.rss_mb()

    def _pids(self) -> list[int]:
        pid = self.process.pid
        try:
            return [pid, *(int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
        except OSError:
            return [pid]

    def _read_peak(self) -> float:
        peak = sum(_status_mb(pid, "VmHWM") for pid in self._pids())
        if peak:
            self._rss_peak_mb = peak
        return self._rss_peak_mb

    def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first log line matching ``pattern``; exits the benchmark if none comes in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log.read_text(errors="replace"))
            if match:
                return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise SystemExit(f"{self.process.args[5:]}: no {pattern!r} within {timeout:.0f} s; log tail:\n{self.log.read_text(errors='replace')[-3000:]}")

    def stop(self) -> float:
        """SIGTERM and wait; the seconds a clean stop took (the memory peak is read first)."""
        self._read_peak()
        started = time.monotonic()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return time.monotonic() - started


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of ``/proc/PID/status`` in MB (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class ConnectorProcess(SimpulProcess):
    """``simpul cdc run --source NAME``."""

    def __init__(self, config: SimpulConfig, source: SourceSettings) -> None:
        super().__init__(config, ["cdc", "run", "--source", source.name], {source.dsn_env: source.dsn()})


TIMED_SAMPLE = 10


class TopicReader:
    """Consumes topics from the start in a thread, handing every message without an error to
    :meth:`handle`; :meth:`close` stops it."""

    poll_s = 0.05

    def __init__(self, config: SimpulConfig, topics: list[str]) -> None:
        self._consumer = Consumer({**client_config(config.kafka), "group.id": f"bench-{time.time_ns()}", "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
        self._consumer.subscribe(topics)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        """Start consuming (subclasses set their own state up first)."""
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(2_000, self.poll_s):
                if message.error() is None:
                    self.handle(message)
        self._consumer.close()

    def handle(self, message: Any) -> None:
        """One consumed message."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop consuming."""
        self._stop.set()
        self._thread.join(10)


def catch_up_rate(watch: TopicWatch, since: float, count_then: int) -> int | None:
    """Events per second that arrived after monotonic time ``since`` (when the load stopped, with
    ``count_then`` events in), until the last one: the connector's rate on its backlog alone. None
    when less than a second of backlog was left, too little to time."""
    seconds = watch.last_arrival - since
    if seconds < 1.0:
        return None
    return round((watch.count - count_then) / seconds)


def catch_up_text(rate: int | None) -> str:
    """:func:`catch_up_rate` for a person: the rate, or that the connector had kept up."""
    return "it had kept up" if rate is None else f"{rate:,} events/s"


class TopicWatch(TopicReader):
    """Consumes topics in a thread; for every ``TIMED_SAMPLE``-th event, the broker's append time
    minus the source commit time (``source.ts_us``): commit-to-Kafka latency, with no consumer
    delay in it. Decoding every event took a third of a core at 12,000 events/s, away from the
    connector being measured; a systematic sample of 1 in 10 gives the same percentiles.

    The topics are created here with ``message.timestamp.type=LogAppendTime`` for that reason.
    """

    def __init__(self, config: SimpulConfig, topics: list[str]) -> None:
        kafka = config.kafka
        create_topics(client_config(kafka), [NewTopic(t, kafka.partitions, kafka.replication_factor, config={"message.timestamp.type": "LogAppendTime"}) for t in topics])
        registry = SchemaRegistryClient({"url": config.schema_registry.url})
        self._decoder = ConfluentAvroDecoder(lambda schema_id: registry.get_schema(schema_id).schema_str)
        super().__init__(config, topics)
        self.count = 0
        self.last_arrival = time.monotonic()
        self.latencies_ms: list[float] = []
        self.timed = False
        # With ``key_field`` set, the broker append time (ms) of the first event seen per value of
        # that key field: for sources whose commit time is too coarse for ``timed`` (MySQL's binlog
        # has whole seconds), the benchmark pairs these with the writer's own commit times.
        self.key_field: str | None = None
        self.key_append_ms: dict[Any, int] = {}
        self.start()

    def handle(self, message: Any) -> None:
        """Count the event; time it (``timed``) and note its key's append time (``key_field``)."""
        if message.value() is None:
            return
        self.count += 1
        self.last_arrival = time.monotonic()
        if self.timed and self.count % TIMED_SAMPLE == 0:
            event = self._decoder.decode(message.value())
            self.latencies_ms.append(message.timestamp()[1] - event["source"]["ts_us"] / 1000)
        if self.key_field is not None and message.key() is not None:
            key = self._decoder.decode(message.key())
            self.key_append_ms.setdefault(key[self.key_field], message.timestamp()[1])

    def wait_for(self, count: int, timeout: float, progress: Any = None) -> float:
        """Wait until ``count`` events arrived; the time that took."""
        started = time.monotonic()
        last = self.count
        while self.count < count:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"only {self.count:,} of {count:,} events arrived within {timeout:.0f} s")
            time.sleep(0.05)
            if progress is not None:
                progress.advance(self.count - last)
                last = self.count
        return time.monotonic() - started

    def wait_quiet(self, quiet_s: float = 3.0, progress: Any = None) -> None:
        """Wait until no event has arrived for ``quiet_s`` seconds: the connector has caught up."""
        last = self.count
        while time.monotonic() - self.last_arrival < quiet_s:
            time.sleep(0.1)
            if progress is not None:
                progress.advance(self.count - last)
                last = self.count


def large_transaction(watch: TopicWatch, connector: ConnectorProcess, rows: int, write: Any) -> dict[str, Any]:
    """Commit one transaction of ``rows`` inserted rows (``write()`` does it), wait until all its
    events are in Kafka, and report the connector's largest RSS meanwhile; then stop it cleanly."""
    from simpul.progress import progress

    print(f"large transaction: {rows:,} rows in one transaction ...", flush=True)
    before = watch.count
    connector.reset_rss()
    write()
    with progress("  streaming the transaction", rows, unit="events") as tracker:
        watch.wait_for(before + rows, 1800, tracker)
    figures = {"large_transaction_rows": rows, "connector_rss_mb_max": round(connector.rss_max_mb)}
    print(f"large transaction: connector RSS max {figures['connector_rss_mb_max']} MB", flush=True)
    figures["sigterm_stop_s"] = round(connector.stop(), 2)
    print(f"stop: exit {connector.process.returncode} on SIGTERM in {figures['sigterm_stop_s']} s", flush=True)
    return figures


@dataclass(frozen=True)
class MachineCpu:
    """The machine's CPU seconds so far, summed over its cores (``/proc/stat``)."""

    busy: float  # user, nice, system, irq, softirq
    stolen: float  # wanted by this virtual machine but given by the hypervisor to another
    elapsed: float

    @classmethod
    def now(cls) -> MachineCpu:
        user, nice, system, idle, iowait, irq, softirq, steal = (int(n) for n in Path("/proc/stat").read_text().split()[1:9])
        busy = user + nice + system + irq + softirq
        return cls(busy / _CLOCK_TICKS, steal / _CLOCK_TICKS, (busy + idle + iowait + steal) / _CLOCK_TICKS)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (1..99) of ``values``."""
    return statistics.quantiles(values, n=100)[q - 1]


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` and print where."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written {path}")
    return path


# --- small helpers for benchmarks that run a whole pipeline (bench.e2e) -------------------------


def free_port_range(count: int, low: int = 20_000, high: int = 40_000) -> int:
    """The first of ``count`` consecutive loopback ports that are all free now (for a metrics base
    port, whose components serve on fixed offsets from it)."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    rng = random.Random()
    for _ in range(500):
        base = rng.randrange(low, high - count)
        if all(free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports between {low} and {high}")


class Offsets:
    """Reads Kafka's end offsets and consumer groups' committed offsets, with one consumer per
    group kept open (cheap enough to poll every fraction of a second)."""

    def __init__(self, config: SimpulConfig) -> None:
        self._config = config
        self._consumers: dict[str, Consumer] = {}

    def _consumer(self, group: str) -> Consumer:
        if group not in self._consumers:
            self._consumers[group] = Consumer({**client_config(self._config.kafka), "group.id": group, "enable.auto.commit": False})
        return self._consumers[group]

    def ends(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """The high watermark (next offset to be written) of every partition of ``topics`` (absent topics: none)."""
        from confluent_kafka import TopicPartition

        consumer = self._consumer(f"bench-watermarks-{id(self)}")
        metadata = consumer.list_topics(timeout=10).topics
        ends = {}
        for topic in topics:
            meta = metadata.get(topic)
            if meta is None or meta.error is not None:
                continue
            for partition in meta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
                ends[(topic, partition)] = high
        return ends

    def committed(self, group: str, partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The offsets consumer group ``group`` has committed in Kafka (partitions without one: absent)."""
        from confluent_kafka import TopicPartition

        if not partitions:
            return {}
        committed = self._consumer(group).committed([TopicPartition(t, p) for t, p in partitions], timeout=10)
        return {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}

    def close(self) -> None:
        """Close every consumer."""
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers.clear()


def lag(ends: dict[tuple[str, int], int], positions: dict[tuple[str, int], int]) -> int:
    """Messages not yet consumed: per partition, its end offset minus the position (none: 0)."""
    return sum(max(0, end - positions.get(tp, 0)) for tp, end in ends.items())


def delete_topics_and_groups(config: SimpulConfig, marker: str) -> tuple[int, int]:
    """Delete every topic and consumer group whose name contains ``marker`` (a benchmark run's own
    name); returns how many of each were asked to go."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(client_config(config.kafka))
    topics = [t for t in admin.list_topics(timeout=10).topics if marker in t]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            try:
                future.result(30)
            except Exception:  # noqa: BLE001 - best effort: an orphan topic is harmless
                pass
    groups: list[str] = []
    try:
        listed = admin.list_consumer_groups().result(30)
        groups = [g.group_id for g in listed.valid if marker in g.group_id]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
                try:
                    future.result(30)
                except Exception:  # noqa: BLE001 - a group still shutting down stays; harmless
                    pass
    except Exception:  # noqa: BLE001
        pass
    return len(topics), len(groups)
