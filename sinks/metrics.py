"""The sinks' Prometheus metrics (labels: sink, topic, kind, reason, issue; never values).

``sink`` is ``master_index`` or ``writeback``; the end-to-end latency runs from the source
database's commit (carried by the resolver's messages) to the sink's own database commit.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from simpul.metrics import metric_name

MESSAGES = Counter(metric_name("sink", "messages_total"), "Messages applied, by topic and kind (upsert, tombstone).", ["sink", "topic", "kind"])
TRANSACTIONS = Counter(metric_name("sink", "transactions_total"), "Database transactions committed (each holds a batch and its offsets).", ["sink"])
TRANSACTION_SECONDS = Histogram(
    metric_name("sink", "transaction", "seconds"),
    "Time to write and commit one batch.",
    ["sink"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
END_TO_END_SECONDS = Histogram(
    metric_name("sink", "end_to_end_latency", "seconds"),
    "From the source database's commit of a change to the sink's commit of its result.",
    ["sink"],
    buckets=(0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600),
)
CONSUMER_LAG = Gauge(metric_name("sink", "consumer_lag_messages"), "Messages on the topic not yet applied, summed over partitions.", ["sink", "topic"])
DEAD_LETTERS = Counter(metric_name("sink", "dead_letters_total"), "Messages set aside (dead-letter table), by reason.", ["sink", "reason"])
CITIZENS = Gauge(metric_name("sink", "citizens"), "Citizens in the master index.")
REVIEW_ITEMS = Gauge(metric_name("sink", "review_items"), "Open review items in the master index.")
QUALITY_ISSUES = Gauge(metric_name("sink", "quality_issues"), "Open data-quality issues in the master index, by issue.", ["issue"])
