"""The lookup API's Prometheus metrics (labels: route template, status, agency; never values).

``route`` is the route's template (``/v1/citizens/{master_id}``), never the filled path, and
``unmatched`` for a path no route serves, so the label's values stay few and carry no ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from simpul.metrics import metric_name

REQUESTS = Counter(metric_name("api", "requests_total"), "API requests answered, by route template, status and agency.", ["route", "status", "agency"])
REQUEST_SECONDS = Histogram(
    metric_name("api", "request_duration", "seconds"),
    "Time from a request's arrival to its response, audit row included.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
AUDIT_FAILURES = Counter(metric_name("api", "audit_failures_total"), "Responses withheld (503) because their audit row could not be written.")
