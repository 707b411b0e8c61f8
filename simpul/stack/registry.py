"""Simpul's schema registry as a server of the local stack, started once Kafka answers."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from simpul.config import SimpulConfig, write_config
from simpul.stack.process import DetachedProcess, ServiceStatus, check_port_free, wait_until_ready


class RegistryServer:
    """``<home>/registry``: the registry process (``simpul registry run``), its config and log.

    The process reads a copy of the effective config written under the home: its command line
    then names a path under the home, which is how ``down`` recognises it as ours.
    """

    name = "registry"

    def __init__(self, config: SimpulConfig) -> None:
        self.config = config
        self.root = config.home / "registry"
        self.config_file = self.root / "simpul.yaml"
        self.log = self.root / "registry.log"
        self.url = config.schema_registry.url.rstrip("/")
        self.port = urlsplit(self.url).port or 80
        self.process = DetachedProcess(self.name, self.root / "registry.pid", str(self.config_file))

    def preflight(self) -> None:
        """Raise a StackError if the registry's port is busy."""
        if self.process.pid() is None:
            check_port_free(self.port, "the schema registry", "schema_registry.url")

    def processes(self) -> list[DetachedProcess]:
        """The one tracked registry process."""
        return [self.process]

    def start(self) -> list[ServiceStatus]:
        """Start the registry (unless running) and wait until it answers HTTP."""
        if self.process.pid() is None:
            write_config(self.config, self.config_file)
            argv = [sys.executable, "-m", "simpul.cli", "--config", str(self.config_file), "registry", "run"]
            self.process.start(argv, self.log, cwd=self.root)
            wait_until_ready(self._answers, [self.process], "Schema registry", 60, [self.log])
        return self.status()

    def status(self) -> list[ServiceStatus]:
        """Whether it runs, where, and where it stores and logs."""
        pid = self.process.pid()
        detail = f"topic {self.config.schema_registry.topic}, log {self.log}"
        return [ServiceStatus(self.name, pid is not None, pid, self.url, detail)]

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False
