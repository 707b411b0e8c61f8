"""A Prometheus server under the stack home that scrapes every Simpul component's metrics port and
evaluates Simpul's alert rules (``deploy/prometheus/simpul-rules.yml``)."""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from simpul.config import SimpulConfig
from simpul.metrics import COMPONENT_PORT_OFFSETS, metrics_port
from simpul.stack.process import (
    DetachedProcess,
    ServiceStatus,
    check_port_free,
    require_binary,
    wait_until_ready,
)

RULES_FILE = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "simpul-rules.yml"
_FIX = "run `make deps` (deploy/local/install-system-packages.sh) or `apt-get install -y prometheus`"
# A local stack wants recent history only; the TSDB stays small on a laptop.
_RETENTION = "2d"


def scrape_config(config: SimpulConfig, rules_file: Path = RULES_FILE) -> dict[str, Any]:
    """The ``prometheus.yml`` for ``config``: one job per component (``simpul-<component>``) on its
    metrics port, one ``simpul-cdc`` target per source (labelled ``source``), and Simpul's rules."""
    # Prometheus durations take whole numbers of a unit only ("5s", "500ms", never "0.5s").
    interval = f"{round(config.stack.prometheus.scrape_interval_s * 1000)}ms"
    host = config.metrics.host
    jobs: list[dict[str, Any]] = [
        {"job_name": f"simpul-{component}", "static_configs": [{"targets": [f"{host}:{metrics_port(config, component)}"]}]}
        for component in COMPONENT_PORT_OFFSETS
    ]
    if config.sources:
        jobs.append({
            "job_name": "simpul-cdc",
            # The connectors label their own series with `source` too (the same value): keep theirs
            # rather than have Prometheus rename it to `exported_source`.
            "honor_labels": True,
            "static_configs": [
                {"targets": [f"{host}:{metrics_port(config, 'cdc', index)}"], "labels": {"source": source.name}}
                for index, source in enumerate(config.sources)
            ],
        })
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "scrape_configs": jobs,
    }


class PrometheusServer:
    """``<home>/prometheus``: the generated ``prometheus.yml``, the TSDB, the log and the pid file."""

    name = "prometheus"

    def __init__(self, config: SimpulConfig) -> None:
        self.config = config
        self.settings = config.stack.prometheus
        self.root = config.home / "prometheus"
        self.data = self.root / "data"
        self.config_file = self.root / "prometheus.yml"
        self.log = self.root / "prometheus.log"
        self.url = f"http://127.0.0.1:{self.settings.port}"
        self.process = DetachedProcess(self.name, self.root / "prometheus.pid", str(self.config_file))

    def preflight(self) -> None:
        """Raise a StackError if the binary is missing or the port is busy."""
        if self.process.pid() is not None:
            return
        require_binary("prometheus", "Prometheus", _FIX)
        check_port_free(self.settings.port, "Prometheus", "stack.prometheus.port")

    def processes(self) -> list[DetachedProcess]:
        """The one tracked server process."""
        return [self.process]

    def start(self) -> list[ServiceStatus]:
        """Write ``prometheus.yml``, start Prometheus (unless running) and wait until it is ready.

        A running server whose scrape config changed (a source added, a port moved) reloads it.
        """
        changed = self._write_config()
        pid = self.process.pid()
        if pid is None:
            binary = require_binary("prometheus", "Prometheus", _FIX)
            argv = [
                binary,
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.data}",
                f"--storage.tsdb.retention.time={_RETENTION}",
                f"--web.listen-address=127.0.0.1:{self.settings.port}",
            ]
            self.process.start(argv, self.log, cwd=self.root)
            wait_until_ready(self._ready, [self.process], "Prometheus", 60, [self.log])
        elif changed:
            # SIGHUP is Prometheus's reload: config and rule files, without losing the TSDB.
            os.kill(pid, signal.SIGHUP)
        return self.status()

    def status(self) -> list[ServiceStatus]:
        """Whether it runs, where, and where its data and log are."""
        pid = self.process.pid()
        return [ServiceStatus(self.name, pid is not None, pid, self.url, f"data {self.data}, log {self.log}")]

    def _write_config(self) -> bool:
        """Write the scrape config; True if it differs from what was there."""
        self.root.mkdir(parents=True, exist_ok=True)
        text = "# Written by `simpul stack up` on every start; edit simpul.yaml instead.\n" + yaml.safe_dump(
            scrape_config(self.config), sort_keys=False
        )
        if self.config_file.is_file() and self.config_file.read_text(encoding="utf-8") == text:
            return False
        self.config_file.write_text(text, encoding="utf-8")
        return True

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
