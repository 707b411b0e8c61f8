"""Benchmark of entity resolution on the synthetic city: accuracy against the truth, streaming
throughput through Kafka, and Splink 5 (DuckDB) on the same records.

    .venv/bin/python -m bench.er [--config simpul.yaml] [--citizens 100000] [--seed 20250601]

Steps, all on this machine's local stack:
1. a city of ``--citizens`` residents is seeded into databases of the benchmark's own;
2. the four real CDC connectors snapshot it into Kafka;
3. the records are exported and resolved in batch (``simpul er train``'s path), which estimates
   the model the stream processors use (its parameters are written to the results);
4. the stream processors (router and resolver, two processes) resolve the CDC topics from the
   start; ``simpul_seconds`` runs from starting them until every record has its link, so
   ``records_per_s`` includes the workers' start;
5. Splink 5 resolves the exported records (``bench.splink_baseline``).

Figures (printed, and written to ``bench/results/er.json``): ``records``, pairwise ``precision``,
``recall`` and ``f1`` of the streamed citizens over all agency records, ``auto_link_precision``
(every link edge judged against the truth), ``review_fraction`` (open review pairs per record),
``records_per_s``, ``simpul_seconds``, ``splink_f1``, ``splink_seconds``, and the same accuracy
figures for the batch twin.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from bench.harness import ConnectorProcess, SimpulProcess, TopicReader, TopicWatch, delete_topics_and_groups, write_results
from bench.splink_baseline import run_splink
from simpul.config import SimpulConfig, load_config, load_env_file
from simpul.databases import copy_sources
from simpul.er_offline import export_records, read_records, read_truth
from simpul.progress import progress
from simpul.seed.city import seed_city
from simpul.stack import LocalStack
from simpul.streams.evaluation import evaluate, pair_counts
from simpul.streams.mapping import load_mapping
from simpul.streams.resolve import resolve


class LatestLinks(TopicReader):
    """Reads the links and reviews topics: each record's latest link, the open review items."""

    poll_s = 0.1

    def __init__(self, config: SimpulConfig) -> None:
        p = config.processors
        self.topics = (p.links_topic, p.reviews_topic)
        self.links: dict[str, dict[str, Any]] = {}
        self.reviews: dict[str, dict[str, Any]] = {}
        self._deserialize = AvroDeserializer(SchemaRegistryClient({"url": config.schema_registry.url}))
        super().__init__(config, list(self.topics))
        self.start()

    def handle(self, message: Any) -> None:
        """Keep the latest value per key; a tombstone removes the key."""
        topic = message.topic()
        key = self._deserialize(message.key(), SerializationContext(topic, MessageField.KEY))
        target = self.links if topic == self.topics[0] else self.reviews
        if message.value() is None:
            target.pop(key, None)
        else:
            target[key] = self._deserialize(message.value(), SerializationContext(topic, MessageField.VALUE))


def _figures(clusters: dict[str, str], truth: dict[str, int], links: list[tuple[str, str]], reviews: list[tuple[str, str]]) -> dict[str, Any]:
    result = evaluate(clusters, truth, links, reviews)
    return {
        "precision": round(result.pairs.precision, 4),
        "recall": round(result.pairs.recall, 4),
        "f1": round(result.pairs.f1, 4),
        "auto_link_precision": round(result.auto_links.precision, 5) if result.auto_links else None,
        "review_fraction": round(len(reviews) / max(len(clusters), 1), 5),
    }


def main() -> None:
    """Run the benchmark (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="simpul.yaml")
    parser.add_argument("--citizens", type=int, default=100_000, help="residents of the benchmark city (the full city: 768,377)")
    parser.add_argument("--seed", type=int, default=20250601)
    args = parser.parse_args()

    base = load_config(Path(args.config))
    LocalStack(base).up()
    load_env_file(base.home / "stack.env")
    run = f"erbench{uuid.uuid4().hex[:6]}"
    work = Path(tempfile.mkdtemp(prefix="simpul-bench-er-"))
    copies = copy_sources(base.sources, run, lambda name, value: os.environ.__setitem__(name, value))
    sources = [s.model_copy(update={"topic_prefix": f"{run}-{s.name}", "capture": s.capture.model_copy(update={"slot": f"{run}_{s.name}"})})
               for s in copies.sources]
    processors = base.processors.model_copy(update={
        "app_id": run, "estimates": work / "estimates.json", "changes_topic": f"{run}.changes", "citizens_topic": f"{run}.citizens",
        "links_topic": f"{run}.links", "reviews_topic": f"{run}.reviews", "quality_topic": f"{run}.quality", "dlq_topic": f"{run}.dlq",
    })
    config = base.model_copy(update={"sources": sources, "processors": processors})
    figures: dict[str, Any] = {"citizens": args.citizens, "full_city_citizens": 768_377}
    try:
        seeded = seed_city(config, args.citizens, args.seed, work / "truth")
        rows = sum(seeded.records.values())
        print(f"seeded {args.citizens:,} residents: {rows:,} agency rows", flush=True)

        watch = TopicWatch(config, [f"{s.topic_prefix}.{t}" for s in sources for t in s.tables])
        connectors = [ConnectorProcess(config, s) for s in sources]
        with progress("capturing the city into Kafka", rows, unit="events") as bar:
            figures["capture_seconds"] = round(watch.wait_for(rows, 1800, bar), 1)
        for connector in connectors:
            connector.stop()
        watch.close()

        records_file = work / "records.jsonl"
        export_records(config, load_mapping(), records_file)
        records = read_records(records_file)
        truth = read_truth(work / "truth")
        started = time.perf_counter()
        batch = resolve(records)
        figures["batch_seconds"] = round(time.perf_counter() - started, 1)
        processors.estimates.write_text(batch.model.to_json(), encoding="utf-8")
        figures["records"] = len(records)
        figures["batch"] = _figures(batch.clusters, truth, [(k.a, k.b) for k in batch.links], [(r.a, r.b) for r in batch.reviews])
        print(f"batch twin: {figures['batch']} in {figures['batch_seconds']} s", flush=True)

        latest = LatestLinks(config)
        started = time.perf_counter()
        workers = [SimpulProcess(config, ["streams", "run", "--role", role]) for role in ("router", "resolver")]
        with progress("resolving through Kafka", len(records), unit="records") as bar:
            seen = 0
            while len(latest.links) < len(records):
                if time.perf_counter() - started > 7200:
                    raise SystemExit(f"only {len(latest.links):,} of {len(records):,} records linked in 2 h")
                if any(w.process.poll() is not None for w in workers):
                    raise SystemExit(f"a stream processor exited; logs: {[str(w.log) for w in workers]}")
                time.sleep(0.2)
                bar.advance(len(latest.links) - seen)
                seen = len(latest.links)
        figures["simpul_seconds"] = round(time.perf_counter() - started, 1)
        figures["records_per_s"] = round(len(records) / figures["simpul_seconds"], 1)
        time.sleep(3)  # let review items written with the last links arrive
        figures["router_rss_mb_max"] = round(workers[0].rss_max_mb, 1)
        figures["resolver_rss_mb_max"] = round(workers[1].rss_max_mb, 1)
        for worker in workers:
            worker.stop()
        latest.close()
        streamed = {record_id: link["master_id"] for record_id, link in latest.links.items()}
        edges = [(r, link["matched_record_id"]) for r, link in latest.links.items() if link["matched_record_id"]]
        reviews = [(item["record_a"], item["record_b"]) for item in latest.reviews.values()]
        figures.update(_figures(streamed, truth, edges, reviews))
        figures["same_citizens_as_batch"] = _groups(streamed) == _groups(batch.clusters)

        splink = run_splink(records_file, work / "splink")
        counts = pair_counts(splink.clusters, truth)
        figures.update({"splink_f1": round(counts.f1, 4), "splink_precision": round(counts.precision, 4),
                        "splink_recall": round(counts.recall, 4), "splink_seconds": round(splink.seconds, 1)})
        figures["model"] = batch.model.parameters()
    finally:
        copies.drop()
        delete_topics_and_groups(config, run)
    write_results("er", figures)
    for name in ("records", "precision", "recall", "f1", "auto_link_precision", "review_fraction", "records_per_s", "simpul_seconds",
                 "splink_f1", "splink_seconds", "same_citizens_as_batch"):
        print(f"{name:>24}: {figures.get(name)}")


def _groups(assignment: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for record_id, cluster in assignment.items():
        groups.setdefault(cluster, set()).add(record_id)
    return {frozenset(g) for g in groups.values()}


if __name__ == "__main__":
    main()
