"""The connectors' Prometheus metrics, named after Debezium's (labels: source, table, op, reason)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from simpul.metrics import UnlockedCounter, UnlockedHistogram, metric_name

EVENTS = UnlockedCounter(metric_name("cdc", "events_total"), "Change events published, by operation (Debezium: TotalNumberOf*EventsSeen).", ["source", "table", "op"])
TRANSACTIONS = Counter(metric_name("cdc", "committed_transactions_total"), "Source transactions fully published.", ["source"])
COMMIT_TO_ACK = UnlockedHistogram(
    metric_name("cdc", "commit_to_ack", "seconds"),
    "From the source commit to Kafka's acknowledgement of the event (Debezium: MilliSecondsBehindSource).",
    ["source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SNAPSHOT_ROWS = Counter(metric_name("cdc", "snapshot_rows_scanned_total"), "Rows read by snapshots.", ["source", "table"])
SNAPSHOT_TABLES_REMAINING = Gauge(metric_name("cdc", "snapshot_tables_remaining"), "Tables the running snapshot has still to read.", ["source"])
SNAPSHOT_RUNNING = Gauge(metric_name("cdc", "snapshot_running"), "1 while a snapshot runs.", ["source"])
CONNECTED = Gauge(metric_name("cdc", "connected"), "1 while the connector is connected to its database.", ["source"])
DEAD_LETTERS = Counter(metric_name("cdc", "dead_letters_total"), "Rows set aside on the dead-letter topic, by reason.", ["source", "table", "reason"])
QUEUE_DEPTH = Gauge(metric_name("cdc", "queue_depth"), "Events produced but not yet acknowledged by Kafka.", ["source"])
SLOT_LAG = Gauge(metric_name("cdc", "slot_lag", "bytes"), "WAL the slot holds back: current LSN minus confirmed flush LSN.", ["source"])
HEARTBEATS = Counter(metric_name("cdc", "heartbeats_total"), "Heartbeat events published.", ["source"])
DATA_QUALITY = Counter(metric_name("cdc", "data_quality_notes_total"), "Values changed on the way for a stated reason (e.g. zero date to null).", ["source", "table", "reason"])
