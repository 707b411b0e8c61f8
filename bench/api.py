"""Benchmark of the lookup API: a steady mixed load against a master index of synthetic citizens.

    .venv/bin/python -m bench.api [--config simpul.yaml] [--citizens 20000] [--rate 200] [--seconds 30]

A fresh master-index database is seeded with ``--citizens`` golden records of the synthetic Kota
Serang (a record link and a history row each), ``simpul api run`` serves it as its own process,
and keep-alive clients send ``--rate`` requests/s for ``--seconds``: 40% lookups by NIK, 40% by
master id, 20% searches by name and birth date, each from one of the configured agencies.

Figures (printed, and written to ``bench/results/api.json``):
- ``api_p50_ms``/``api_p95_ms``/``api_p99_ms`` (the key figure; target at most 20 ms): from each
  request's scheduled send time to its whole response, so a slow response also counts against
  the requests queued behind it (no coordinated omission);
- ``api_throughput_per_s``: responses per second over the run; ``api_errors``: responses other
  than 200;
- ``api_rss_mb_max``/``api_rss_mb_end``: the server's resident memory;
- ``api_audit_rows``: rows in ``mpi.api_audit`` afterwards (one per request, warm-up included).
The database, the server and the load generator share this machine.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.harness import SimpulProcess, free_port_range, percentile, write_results
from simpul.config import SimpulConfig, load_config, load_env_file
from simpul.metrics import COMPONENT_PORT_OFFSETS
from simpul.seed.population import generate_population
from simpul.sinks.master_schema import ensure_schema
from simpul.streams.citizens import master_id

WORKERS = 8
WARM_UP_S = 3
PURPOSE = "benchmark"
CITIZEN_COLUMNS = (
    "master_id", "anchor_record_id", "members", "nik", "name", "titles", "birth_date", "birth_place", "sex", "street", "rt", "rw",
    "kelurahan", "kecamatan", "kk", "phone", "deceased", "lineage", "version", "source_updated_at", "indexed_at",
)
LINK_COLUMNS = ("record_id", "source", "table_name", "record_key", "master_id", "rule", "contributions", "source_updated_at", "indexed_at")
HISTORY_COLUMNS = ("master_id", "version", "change", "changed", "kafka_topic", "kafka_partition", "kafka_offset", "source_changed_at")


@dataclass(frozen=True)
class Call:
    """One planned request."""

    kind: str
    method: str
    path: str
    body: bytes | None
    agency: str


def seed(dsn: str, citizens: int, seed_value: int) -> list[dict[str, Any]]:
    """Golden records (one record link, one history row each) of ``citizens`` synthetic residents;
    returns what the load needs of each: NIK, master id, name, birth date."""
    population = generate_population(citizens, seed_value)
    now = datetime.now(timezone.utc)
    targets = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn)
        with conn.transaction():
            with conn.cursor().copy(sql.SQL("COPY mpi.citizen ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, CITIZEN_COLUMNS)))) as copy:
                for person in population.persons:
                    household = population.household_of(person)
                    record_id = f"disdukcapil:public.penduduk:{person.nik}"
                    mid = master_id(record_id, b"bench master id key")
                    name = person.name.core.upper()
                    titles = [t for t in (person.name.title, person.name.degree) if t]
                    lineage = {field: record_id for field in ("nik", "name", "birth_date", "sex", "kk", "street", "deceased")}
                    copy.write_row((
                        mid, record_id, [record_id], person.nik, name, titles, person.birth_date, person.birth_place, person.sex,
                        household.alamat, household.rt, household.rw, household.kelurahan, household.kecamatan.name, household.no_kk,
                        person.phone, not person.alive, Jsonb(lineage), 1, person.updated_at, now,
                    ))
                    targets.append({"nik": person.nik, "master_id": mid, "name": name, "birth_date": person.birth_date.isoformat(), "record_id": record_id})
            with conn.cursor().copy(sql.SQL("COPY mpi.record_link ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, LINK_COLUMNS)))) as copy:
                for target in targets:
                    copy.write_row((target["record_id"], "disdukcapil", "public.penduduk", target["nik"], target["master_id"], "new", Jsonb({}), now, now))
            with conn.cursor().copy(sql.SQL("COPY mpi.citizen_history ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, HISTORY_COLUMNS)))) as copy:
                for offset, target in enumerate(targets):
                    changed = {"nik": {"old": None, "new": target["nik"]}, "name": {"old": None, "new": target["name"]}}
                    copy.write_row((target["master_id"], 1, "created", Jsonb(changed), "simpul.citizens", 0, offset, now))
        conn.execute("ANALYZE")
    return targets


def plan(targets: list[dict[str, Any]], agencies: list[str], count: int, rng: random.Random) -> list[Call]:
    """``count`` requests: 40% by NIK, 40% by master id, 20% search, for random citizens and agencies."""
    calls = []
    for _ in range(count):
        target, agency, draw = rng.choice(targets), rng.choice(agencies), rng.random()
        if draw < 0.4:
            calls.append(Call("by_nik", "POST", "/v1/citizens/lookup", json.dumps({"nik": target["nik"]}).encode(), agency))
        elif draw < 0.8:
            calls.append(Call("by_id", "GET", f"/v1/citizens/{target['master_id']}", None, agency))
        else:
            body = json.dumps({"name": target["name"], "birth_date": target["birth_date"]}).encode()
            calls.append(Call("search", "POST", "/v1/citizens/search", body, agency))
    return calls


class Load:
    """Sends planned calls at a fixed rate from keep-alive connections, one per worker thread;
    worker ``k`` sends calls ``k, k + WORKERS, ...`` each at its scheduled time."""

    def __init__(self, host: str, port: int, keys: dict[str, str], purpose: str = PURPOSE) -> None:
        self.host, self.port, self.keys, self.purpose = host, port, keys, purpose
        self.latencies_ms: dict[str, list[float]] = {}
        self.statuses: dict[str, int] = {}
        self._lock = threading.Lock()

    def run(self, calls: list[Call], rate: float) -> float:
        """Send every call; the seconds from the first scheduled send to the last response."""
        self.latencies_ms, self.statuses = {}, {}
        start = time.perf_counter() + 0.2
        threads = [threading.Thread(target=self._worker, args=(calls[k::WORKERS], start, k, rate)) for k in range(WORKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    @property
    def errors(self) -> int:
        """Calls answered with anything but 200, or not answered."""
        return sum(n for status, n in self.statuses.items() if status != "200")

    def _worker(self, calls: list[Call], start: float, first: int, rate: float) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        for n, call in enumerate(calls):
            scheduled = start + (first + n * WORKERS) / rate
            pause = scheduled - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            headers = {"X-API-Key": self.keys[call.agency], "X-Purpose": self.purpose, "Content-Type": "application/json"}
            try:
                conn.request(call.method, call.path, body=call.body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                status = type(exc).__name__
            elapsed_ms = (time.perf_counter() - scheduled) * 1000
            with self._lock:
                self.latencies_ms.setdefault(call.kind, []).append(elapsed_ms)
                self.statuses[status] = self.statuses.get(status, 0) + 1
        conn.close()


def wait_healthy(server: SimpulProcess, host: str, port: int, timeout: float) -> None:
    """Return once ``/health`` answers 200; exit the benchmark with the log tail if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            conn = http.client.HTTPConnection(host, port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API did not become healthy within {timeout:.0f} s; log tail:\n{server.log.read_text(errors='replace')[-3000:]}")


def api_config(base: SimpulConfig, database: str, dsn_env: str) -> SimpulConfig:
    """``base`` pointed at the benchmark's database, on free API and metrics ports."""
    master = base.sinks.master_index.model_copy(update={"dsn_env": dsn_env, "database": database})
    return base.model_copy(update={
        "sinks": base.sinks.model_copy(update={"master_index": master}),
        "api": base.api.model_copy(update={"port": free_port_range(1, 40_001, 45_000)}),
        "metrics": base.metrics.model_copy(update={"port": free_port_range(len(COMPONENT_PORT_OFFSETS))}),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--citizens", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()

    base = load_config(args.config)
    load_env_file(base.home / "stack.env")
    if not base.api.clients:
        raise SystemExit(f"{args.config}: api.clients is empty; the benchmark calls as the configured agencies")
    admin = base.sinks.master_index.dsn()
    database = f"simpul_master_bench_{uuid.uuid4().hex[:8]}"
    dsn = f"{admin.rsplit('/', 1)[0]}/{database}"
    dsn_env = "SIMPUL_BENCH_API_MASTER_DSN"
    config = api_config(base, database, dsn_env)
    keys = {client.agency: secrets.token_urlsafe(32) for client in config.api.clients}
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    server: SimpulProcess | None = None
    figures: dict[str, Any] = {"server": "PostgreSQL, the API (one uvicorn process) and the load generator on this 2-core machine"}
    try:
        print(f"seeding {args.citizens:,} citizens ...", flush=True)
        targets = seed(dsn, args.citizens, base.seed.seed)
        env = {dsn_env: dsn, **{client.key_env: keys[client.agency] for client in config.api.clients}}
        server = SimpulProcess(config, ["api", "run"], env)
        host, port = config.api.host, config.api.port
        wait_healthy(server, host, port, 60)
        rng = random.Random(1)
        load = Load(host, port, keys)
        agencies = sorted(keys)
        warm_up = plan(targets, agencies, int(args.rate * WARM_UP_S), rng)
        print(f"warm-up: {len(warm_up)} requests ...", flush=True)
        load.run(warm_up, args.rate)
        server.reset_rss()
        calls = plan(targets, agencies, int(args.rate * args.seconds), rng)
        print(f"load: {args.rate:.0f} requests/s for {args.seconds} s ({len(calls):,} requests) ...", flush=True)
        elapsed = load.run(calls, args.rate)
        everything = [ms for values in load.latencies_ms.values() for ms in values]
        figures.update({
            "citizens": args.citizens,
            "api_rate_target_per_s": args.rate,
            "api_requests": len(everything),
            "api_throughput_per_s": round(len(everything) / elapsed, 1),
            "api_errors": load.errors,
            "api_p50_ms": round(percentile(everything, 50), 2),
            "api_p95_ms": round(percentile(everything, 95), 2),
            "api_p99_ms": round(percentile(everything, 99), 2),
            "api_max_ms": round(max(everything), 2),
            "api_p99_ms_by_kind": {kind: round(percentile(values, 99), 2) for kind, values in sorted(load.latencies_ms.items())},
            "api_rss_mb_max": round(server.rss_max_mb),
            "api_rss_mb_end": round(server.rss_mb()),
        })
        with psycopg.connect(dsn) as conn:
            figures["api_audit_rows"] = conn.execute("SELECT count(*) FROM mpi.api_audit").fetchone()[0]  # type: ignore[index]
        print(f"throughput {figures['api_throughput_per_s']}/s, errors {figures['api_errors']}; latency p50 {figures['api_p50_ms']} ms, "
              f"p95 {figures['api_p95_ms']} ms, p99 {figures['api_p99_ms']} ms (by kind {figures['api_p99_ms_by_kind']}), max {figures['api_max_ms']} ms", flush=True)
        print(f"server RSS max {figures['api_rss_mb_max']} MB, at the end {figures['api_rss_mb_end']} MB; "
              f"audit rows {figures['api_audit_rows']:,} for {len(warm_up) + len(calls):,} requests", flush=True)
        figures["sigterm_stop_s"] = round(server.stop(), 2)
        figures["sigterm_exit_code"] = server.process.returncode
        print(f"stop: exit {figures['sigterm_exit_code']} on SIGTERM in {figures['sigterm_stop_s']} s", flush=True)
        write_results("api", figures)
    finally:
        if server is not None:
            server.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


if __name__ == "__main__":
    main()
