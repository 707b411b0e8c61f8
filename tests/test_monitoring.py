"""Monitoring: the alert rules (promtool), the metric names the rules and the dashboard use, the
local stack's Prometheus, the Kubernetes manifests and the image they run."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import socket
import subprocess
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dockerfile
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import REGISTRY

from simpul.config import SimpulConfig, parse_config
from simpul.metrics import CDC_PORT_OFFSET, COMPONENT_PORT_OFFSETS, UnlockedCounter, UnlockedHistogram, metrics_port
from simpul.stack import LocalStack, StackError
from simpul.stack.prometheus import RULES_FILE, scrape_config

from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
RULE_TESTS = ROOT / "deploy" / "prometheus" / "simpul-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "simpul-dashboard.json"
KUBERNETES = ROOT / "deploy" / "kubernetes"
CONFIG_IN_POD = ["simpul", "--config", "/etc/simpul/simpul.yaml"]

# Series Prometheus writes itself, whatever it scrapes.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE"}
# The modules that define Simpul's metrics on prometheus_client's global registry.
METRIC_MODULES = ("simpul.cdc.metrics", "simpul.streams.metrics", "simpul.sinks.metrics", "simpul.api.metrics", "simpul.seed.changes")
# What each metric type exposes (prometheus_client keeps a counter's name without `_total`).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "enum": ("",),
}
PERSONAL_LABEL = re.compile(r"nik|name|phone|nama|no_hp|alamat|address|birth|email", re.IGNORECASE)
# The workloads of deploy/kubernetes and the commands they must run.
POD_COMMANDS = {
    ("streams", "run", "--role", "router"),
    ("streams", "run", "--role", "resolver"),
    ("sink", "run", "master-index"),
    ("sink", "run", "writeback"),
    ("api", "run"),
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (deploy/local/install-system-packages.sh installs it)")
    return found


# --- what Simpul defines ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One metric family: its name as registered, its type and its label names."""

    name: str
    type: str
    labels: tuple[str, ...]

    def exposed(self) -> set[str]:
        """The sample names Prometheus sees for this family."""
        return {self.name + suffix for suffix in SUFFIXES[self.type]}


@pytest.fixture(scope="module")
def families() -> list[Family]:
    """Every metric family Simpul defines, from the registries its modules register on."""
    from simpul.schemas.registry.api import RegistryMetrics

    for module in METRIC_MODULES:
        importlib.import_module(module)
    found: list[Family] = []
    for registry in (REGISTRY, RegistryMetrics().registry):
        # prometheus_client has no public way to list the label names of a metric that has no
        # children yet; its collectors keep them in _labelnames.
        for collector in list(registry._collector_to_names):
            if isinstance(collector, MetricWrapperBase):
                found.append(Family(collector._name, collector._type, tuple(collector._labelnames)))
            elif isinstance(collector, (UnlockedCounter, UnlockedHistogram)):
                kind = "counter" if isinstance(collector, UnlockedCounter) else "histogram"
                found.append(Family(collector.name, kind, collector.labelnames))
    return found


@pytest.fixture(scope="module")
def defined(families: list[Family]) -> set[str]:
    """Every sample name a Simpul component can expose, plus Prometheus's own series."""
    return {name for family in families for name in family.exposed()} | PROMETHEUS_SERIES


def test_metric_families_are_found(families: list[Family]) -> None:
    names = {family.name for family in families}
    for expected in ("simpul_cdc_slot_lag_bytes", "simpul_cdc_events", "simpul_cdc_commit_to_ack_seconds", "simpul_resolver_decisions", "simpul_sink_end_to_end_latency_seconds",
                     "simpul_api_requests", "simpul_registry_requests", "simpul_changegen_changes"):
        assert expected in names


def test_no_metric_label_names_personal_data(families: list[Family]) -> None:
    personal = sorted(f"{family.name}{{{label}}}" for family in families for label in family.labels if PERSONAL_LABEL.search(label))
    assert personal == []


# --- PromQL in the rules and the dashboard ---------------------------------------------------------

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and label names left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values, Grafana variables
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w:.])[A-Za-z_:][\w:]*", text):
        is_function = text[match.end():].lstrip().startswith("(")
        if not is_function and match.group().lower() not in _KEYWORDS:
            names.add(match.group())
    return names


def test_promql_metric_names_parser() -> None:
    expr = ('histogram_quantile(0.99, sum by (sink, le) (rate(a_bucket{sink=~"$s", x="y z"}[$__rate_interval])))'
            " > 1 and b offset 10m or on (source) c * 1024 unless bool d:e:f")
    assert promql_metric_names(expr) == {"a_bucket", "b", "c", "d:e:f"}


def rules() -> list[dict[str, Any]]:
    """Every rule of deploy/prometheus/simpul-rules.yml."""
    document = yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """Every PromQL expression of the dashboard's panels."""
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([_promtool(), "check", "rules", str(RULES_FILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    # Run from the test file's folder: its rule_files are relative to it.
    result = subprocess.run([_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_labelled() -> None:
    alerts = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    assert set(alerts) == tested
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_rules_cover_the_failure_modes() -> None:
    used = set().union(*(promql_metric_names(rule["expr"]) for rule in rules()))
    assert {
        "up", "simpul_cdc_connected", "simpul_cdc_slot_lag_bytes", "simpul_sink_consumer_lag_messages",
        "simpul_cdc_dead_letters_total", "simpul_streams_dead_letters_total", "simpul_sink_dead_letters_total",
        "simpul_sink_end_to_end_latency_seconds_bucket", "simpul_sink_review_items",
    } <= used


def test_rules_and_dashboard_use_only_defined_metrics(defined: set[str]) -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    used = {
        "rules": set().union(*(promql_metric_names(rule["expr"]) for rule in rules())),
        "dashboard": set().union(*(promql_metric_names(expr) for expr in dashboard_expressions())),
        "dashboard variables": {m for v in variables for m in re.findall(r"label_values\((\w+)\s*,", v)},
    }
    assert all(used.values())
    unknown = {where: sorted(names - defined - recorded) for where, names in used.items() if names - defined - recorded}
    assert unknown == {}


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    # promtool parses rule expressions: the panels' queries become recording rules of a scratch file,
    # Grafana's variables replaced by what they stand for.
    expressions = [expr.replace("$__rate_interval", "1m").replace("$source", ".*") for expr in dashboard_expressions()]
    scratch = tmp_path / "dashboard-rules.yml"
    rules_ = [{"record": f"dashboard:panel_{i}", "expr": expr} for i, expr in enumerate(expressions)]
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules_}]}), encoding="utf-8")
    result = subprocess.run([_promtool(), "check", "rules", str(scratch)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_layout() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert board["schemaVersion"] >= 39
    (datasource,) = (v for v in board["templating"]["list"] if v["type"] == "datasource")
    assert datasource["name"] == "DS_PROMETHEUS" and datasource["query"] == "prometheus"
    rows = [panel["title"] for panel in board["panels"] if panel["type"] == "row"]
    assert rows == ["CDC", "Stream processors", "Master index sink", "API", "Alerts"]
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert all(panel["datasource"]["uid"] == "${DS_PROMETHEUS}" for panel in panels)
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


# --- the local stack's Prometheus ----------------------------------------------------------------


def test_scrape_config_covers_every_component(test_config: SimpulConfig, tmp_path: Path) -> None:
    generated = scrape_config(test_config)
    jobs = {job["job_name"]: job for job in generated["scrape_configs"]}
    assert set(jobs) == {f"simpul-{component}" for component in COMPONENT_PORT_OFFSETS} | {"simpul-cdc"}
    assert {"simpul-run", "simpul-writeback", "simpul-api", "simpul-sink"} <= set(jobs)
    host = test_config.metrics.host
    assert jobs["simpul-resolver"]["static_configs"] == [{"targets": [f"{host}:{metrics_port(test_config, 'resolver')}"]}]
    assert jobs["simpul-cdc"]["static_configs"] == [
        {"targets": [f"{host}:{metrics_port(test_config, 'cdc', i)}"], "labels": {"source": source.name}}
        for i, source in enumerate(test_config.sources)
    ]
    assert generated["global"]["scrape_interval"] == "1000ms"
    # promtool also loads the rule files the config names.
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(generated), encoding="utf-8")
    result = subprocess.run([_promtool(), "check", "config", str(config_file)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _own_config(test_config: SimpulConfig, home: Path, prometheus_port: int, metrics_base: int) -> SimpulConfig:
    """The test config with its own home and ports, so no other stack is touched."""
    raw = test_config.model_dump(mode="json", exclude={"base_dir"})
    raw["stack"]["home"] = str(home)
    raw["stack"]["prometheus"] = {"port": prometheus_port, "scrape_interval_s": 1}
    raw["metrics"]["port"] = metrics_base
    return parse_config(raw, base_dir=ROOT)


def test_busy_prometheus_port_is_named(test_config: SimpulConfig, tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = _own_config(test_config, tmp_path, port, 30400)
        with pytest.raises(StackError, match=rf"port {port} .*in use") as error:
            LocalStack(config).up(["prometheus"])
    assert "stack.prometheus.port" in str(error.value)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["data"]


@pytest.fixture
def connector_endpoint() -> Iterator[int]:
    """A /metrics endpoint like a connector's, on a free port: simpul_cdc_connected{source} = 1."""
    registry = CollectorRegistry()
    Gauge("simpul_cdc_connected", "1 while the connector is connected to its database.", ["source"], registry=registry).labels(
        "disdukcapil"
    ).set(1)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield server.server_port
    server.shutdown()
    thread.join(5)


@pytest.mark.stack
def test_stack_prometheus_scrapes_and_loads_the_rules(test_config: SimpulConfig, tmp_path: Path, connector_endpoint: int) -> None:
    # The endpoint is where the first source's connector serves.
    config = _own_config(test_config, tmp_path, free_port(), connector_endpoint - CDC_PORT_OFFSET)
    assert metrics_port(config, "cdc", 0) == connector_endpoint
    stack = LocalStack(config)
    try:
        (status,) = stack.up(["prometheus"])
        assert status.running and status.address == f"http://127.0.0.1:{config.stack.prometheus.port}"
        api = f"{status.address}/api/v1"

        loaded = {rule["name"] for group in _get(f"{api}/rules")["groups"] for rule in group["rules"]}
        assert loaded == {rule.get("alert") or rule["record"] for rule in rules()}

        # Targets appear once discovery has run, and are "unknown" until their first scrape.
        deadline = time.monotonic() + 30
        while True:
            targets = _get(f"{api}/targets")["activeTargets"]
            connector = [t for t in targets if t["labels"]["job"] == "simpul-cdc" and t["labels"]["source"] == "disdukcapil"]
            if [t["health"] for t in connector] == ["up"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert [t["health"] for t in connector] == ["up"], connector
        assert {t["labels"]["job"] for t in targets} == {job["job_name"] for job in scrape_config(config)["scrape_configs"]}

        (sample,) = _get(f"{api}/query?query=simpul_cdc_connected")["result"]
        # honor_labels: the connector's own `source`, not a renamed `exported_source`.
        assert sample["metric"]["source"] == "disdukcapil" and "exported_source" not in sample["metric"]
    finally:
        stopped = stack.down()
    assert stopped == ["prometheus"]
    assert not any(s.running for s in stack.status())


# --- Kubernetes ----------------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    """Every object of deploy/kubernetes/*.yaml except the kustomization."""
    objects = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects.extend(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    return objects


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return obj["spec"]["template"]["spec"]["containers"]


def _production_config(objects: list[dict[str, Any]]) -> SimpulConfig:
    (config_map,) = (o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "simpul-config")
    return parse_config(yaml.safe_load(config_map["data"]["simpul.yaml"]), origin="configmap.yaml")


def test_kubernetes_manifests_parse_and_are_complete() -> None:
    objects = manifests()
    assert all(isinstance(o, dict) and o["apiVersion"] and o["kind"] and o["metadata"]["name"] for o in objects)
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    assert sorted(kustomization["resources"]) == sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert all(o["metadata"].get("namespace") == "simpul" for o in objects if o["kind"] != "Namespace")
    # Secrets are referenced by name only, never written here.
    assert not [o for o in objects if o["kind"] == "Secret"]
    config = _production_config(objects)

    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    commands = {}
    for workload in workloads:
        (container,) = _containers(workload)
        assert container["command"][:3] == CONFIG_IN_POD, workload["metadata"]["name"]
        commands[tuple(container["command"][3:])] = workload
    expected = POD_COMMANDS | {("cdc", "run", "--source", source.name) for source in config.sources}
    assert set(commands) == expected

    for source in config.sources:
        connector = commands["cdc", "run", "--source", source.name]
        assert connector["kind"] == "Deployment" and connector["spec"]["replicas"] == 1
        assert connector["spec"]["strategy"] == {"type": "Recreate"}
    resolver = commands["streams", "run", "--role", "resolver"]
    assert resolver["kind"] == "StatefulSet" and resolver["spec"]["volumeClaimTemplates"]
    assert commands["api", "run"]["spec"]["replicas"] == 2


def test_kubernetes_metrics_ports_and_jobs_match_the_config() -> None:
    objects = manifests()
    config = _production_config(objects)
    sources = [source.name for source in config.sources]
    jobs = set()
    for service in (o for o in objects if o["kind"] == "Service"):
        labels = service["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        expected = metrics_port(config, "cdc", sources.index(labels["source"])) if component == "cdc" else metrics_port(config, component)
        (port,) = (p for p in service["spec"]["ports"] if p["name"] == "metrics")
        assert port["port"] == expected, service["metadata"]["name"]
        (workload,) = (o for o in objects if o["kind"] in ("Deployment", "StatefulSet")
                       and o["metadata"]["name"] == service["spec"]["selector"]["app.kubernetes.io/name"])
        (container,) = _containers(workload)
        assert {"name": "metrics", "containerPort": expected} in container["ports"]
        jobs.add(labels["simpul.io/job"])
    # The same job names as the local stack's Prometheus, which the rules and the dashboard use.
    assert jobs == {job["job_name"] for job in scrape_config(config)["scrape_configs"]} - {"simpul-run", "simpul-registry", "simpul-changegen"}
    (monitor,) = (o for o in objects if o["kind"] == "ServiceMonitor")
    assert monitor["spec"]["jobLabel"] == "simpul.io/job"


def test_the_image_parses_installs_every_package_and_runs_as_the_manifests_user() -> None:
    """deploy/image/Dockerfile, read by the official Dockerfile parser (no Docker engine runs here)."""
    dockerfile_path = ROOT / "deploy" / "image" / "Dockerfile"
    commands = dockerfile.parse_file(str(dockerfile_path))
    copied = {source.rstrip("/") for c in commands if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags)
              for source in c.value[:-1]}
    assert all((ROOT / source).exists() for source in copied), copied
    # Every folder the distribution maps into the ``simpul`` namespace is in the image.
    package_dirs = set(tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs | {"pyproject.toml", "constraints.txt"} <= copied
    # ... and passes the build context's filter, which lets nothing else through.
    allowed = {line[1:].rstrip("/") for line in (ROOT / "deploy" / "image" / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
               if line.startswith("!")}
    assert copied <= allowed
    assert any(c.cmd == "RUN" and "--constraint constraints.txt" in c.value[0] for c in commands)
    (user,) = (c.value[0] for c in commands if c.cmd == "USER")
    for workload in (o for o in manifests() if o["kind"] in ("Deployment", "StatefulSet")):
        context = workload["spec"]["template"]["spec"]["securityContext"]
        assert user == f"{context['runAsUser']}:{context['runAsGroup']}", workload["metadata"]["name"]
    (entrypoint,) = (c for c in commands if c.cmd == "ENTRYPOINT")
    assert entrypoint.json and entrypoint.value == ("simpul",)


def test_unlocked_metrics_expose_what_prometheus_clients_own_would() -> None:
    """The per-event counter and histogram without locks read exactly as prometheus_client's."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.001, 0.01, 0.1, 1, 10)
    counter = UnlockedCounter("simpul_test_events_total", "Events.", ["source", "op"], registry=ours)
    histogram = UnlockedHistogram("simpul_test_lag_seconds", "Lag.", ["source"], buckets, registry=ours)
    reference_counter = Counter("simpul_test_events_total", "Events.", ["source", "op"], registry=theirs)
    reference_histogram = Histogram("simpul_test_lag_seconds", "Lag.", ["source"], buckets=buckets, registry=theirs)
    for source, op, lag in [("dinsos", "c", 0.0005), ("dinsos", "u", 0.01), ("dinkes", "c", 0.3), ("dinsos", "c", 42.0), ("dinsos", "c", 1.0)]:
        counter.inc((source, op))
        reference_counter.labels(source, op).inc()
        histogram.labels(source).observe(lag)
        reference_histogram.labels(source).observe(lag)

    def samples(registry: CollectorRegistry) -> list[str]:
        return sorted(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line)

    assert samples(ours) == samples(theirs)
