"""The stream processors' Prometheus metrics (labels: source, table, outcome, reason; never values)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from simpul.metrics import UnlockedCounter, metric_name

ROUTED = UnlockedCounter(metric_name("router", "events_total"), "CDC events read and passed to the resolver, by source table.", ["source", "table"])
ROUTER_LAG = Gauge(metric_name("router", "consumer_lag_messages"), "CDC events not yet routed, summed over the partitions this router reads.", ["topic"])
RECORDS_IN = Counter(metric_name("resolver", "records_in_total"), "Row changes applied, by source table.", ["source", "table"])
DECISIONS = Counter(metric_name("resolver", "decisions_total"), "Records decided, by outcome: link, review or new citizen.", ["outcome"])
MERGES = Counter(metric_name("resolver", "merges_total"), "Citizens merged into an older one.")
SPLITS = Counter(metric_name("resolver", "splits_total"), "Citizens split in two or more.")
SKIPPED = Counter(
    metric_name("resolver", "events_skipped_total"),
    "Events with nothing new: stale (older than what was applied) or repeated (applied again, idempotently).",
    ["reason"],
)
DEAD_LETTERS = Counter(metric_name("streams", "dead_letters_total"), "Events set aside on the dead-letter topic, by stage and reason.", ["stage", "reason"])
OUTPUTS = UnlockedCounter(metric_name("resolver", "outputs_total"), "Messages written, by output (citizen, link, review, quality, feedback) and kind (upsert, tombstone).", ["output", "kind"])
APPLY_SECONDS = Histogram(
    metric_name("resolver", "apply", "seconds"),
    "Time to apply one row change (compare, cluster, survivorship).",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SOURCE_TO_OUTPUT_SECONDS = Histogram(
    metric_name("resolver", "source_to_output", "seconds"),
    "From the source database's commit to the resolver's outputs being sent.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
