"""Child processes of the main job, supervised: started, restarted with back-off when they die,
and stopped together (SIGTERM, then SIGKILL after a timeout) so that none outlives the job.

A supervisor killed with SIGKILL cannot stop its children, so each child asks the kernel to send
it SIGTERM when its parent dies (:func:`die_with_parent`, Linux's ``PR_SET_PDEATHSIG``): a
restarted supervisor never finds the old children still running beside the new ones."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MAX_BACKOFF_S = 30.0
PARENT_ENV = "SIMPUL_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In a supervised child: be sent SIGTERM when the supervisor dies, however it dies.

    Does nothing outside a supervisor or off Linux. If the supervisor is already gone (it died
    between starting this process and this call), stop now rather than run as an orphan.
    """
    # Popped, so that a process this one starts does not take this one's parent for its own.
    parent = os.environ.pop(PARENT_ENV, None)
    if not parent or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(parent):
        raise SystemExit("the supervisor is gone; not running as an orphan")


@dataclass
class Child:
    """One supervised command; its output goes to ``log``."""

    name: str
    argv: Sequence[str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    backoff_s: float = 1.0
    restart_at: float = 0.0
    exits: list[int] = field(default_factory=list)

    @classmethod
    def simpul(cls, name: str, config_file: Path, logs: Path, *args: str) -> Child:
        """``simpul --config <config_file> <args>`` with this interpreter, logging to ``<logs>/<name>.log``."""
        return cls(name, [sys.executable, "-m", "simpul.cli", "--config", str(config_file), *args], logs / f"{name}.log")

    @property
    def running(self) -> bool:
        """Whether the process is alive now."""
        return self.process is not None and self.process.poll() is None

    def state(self, stopped: bool) -> str:
        """How a status table shows it (rich markup); ``stopped``: its supervisor has stopped it."""
        if stopped and self.process is not None:
            return f"stopped (exit {self.process.returncode})"
        return "[green]running" if self.running else "[yellow]restarting" if self.process else "[red]not started"


class Supervisor:
    """Keeps its children running until :meth:`stop`."""

    def __init__(self, children: Sequence[Child], env: dict[str, str] | None = None) -> None:
        self.children = list(children)
        self.env = {**(env if env is not None else os.environ), PARENT_ENV: str(os.getpid())}
        self.stopped = False

    def start(self) -> None:
        """Start every child."""
        for child in self.children:
            self._spawn(child)

    def _spawn(self, child: Child) -> None:
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log, "ab") as log:
            child.process = subprocess.Popen(list(child.argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env)

    def check(self) -> None:
        """Restart children that died, each after a back-off that doubles while it keeps dying."""
        now = time.monotonic()
        for child in self.children:
            if child.process is None or child.running:
                continue
            if child.restart_at == 0.0:
                child.exits.append(child.process.returncode)
                child.restart_at = now + child.backoff_s
                child.backoff_s = min(child.backoff_s * 2, MAX_BACKOFF_S)
            elif now >= child.restart_at:
                child.restart_at = 0.0
                child.restarts += 1
                self._spawn(child)

    def stop(self, timeout: float = 30.0) -> list[str]:
        """SIGTERM every child, wait up to ``timeout``, SIGKILL what is left; names of those killed."""
        self.stopped = True
        for child in self.children:
            if child.running:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        killed = []
        for child in self.children:
            if child.process is None:
                continue
            try:
                child.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait(10)
                killed.append(child.name)
        return killed
