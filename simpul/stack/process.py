"""The one way the local stack starts, finds, waits for and stops its server processes.

Every server runs detached (its own session) so it outlives the command that started it. A pid
file under the stack home remembers it, and a pid only counts as ours while its command line
still contains a path under that home: a recycled pid never makes ``down`` kill a stranger.
The pid file also records the server's executable and working directory: helpers it forked
(PostgreSQL's backends, which start their own sessions) are found by those and never outlive it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class StackError(Exception):
    """A local-stack problem, with a message that says what is missing or busy and how to fix it."""


@dataclass(frozen=True)
class ServiceStatus:
    """What runs where: one server process of the local stack."""

    name: str
    running: bool
    pid: int | None
    address: str
    detail: str


class DetachedProcess:
    """One long-running server started by this stack home and tracked by ``pid_file``.

    ``marker`` is a string (a path under the home) that the process's command line must contain
    for the pid to count as ours. ``stop_signal`` is the server's own "clean but prompt" stop
    (PostgreSQL's plain SIGTERM would wait for every client to disconnect, so it uses SIGINT).
    """

    def __init__(self, name: str, pid_file: Path, marker: str, stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.pid_file = pid_file
        self.marker = marker
        self.stop_signal = stop_signal

    def pid(self) -> int | None:
        """The pid if our process runs; a stale pid file (crash, reboot, recycled pid) is removed."""
        try:
            pid = int(self.pid_file.read_text(encoding="utf-8").split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid) and self.marker in _cmdline(pid):
            return pid
        if not _alive(pid):
            # Our server died (kill -9, OOM killer); helpers it forked would keep holding its port
            # and shared memory, so they go too.
            self.kill_leftovers()
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(
        self,
        argv: Sequence[str],
        log_path: Path,
        cwd: Path,
        user: str | None = None,
    ) -> int:
        """Start ``argv`` (as ``user`` if given) in a new session, with stdout and stderr appended
        to ``log_path``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
                **run_as(user),
            )
        self.pid_file.write_text(f"{child.pid}\n{os.path.realpath(argv[0])}\n{cwd.resolve()}\n", encoding="utf-8")
        return child.pid

    def kill_leftovers(self) -> None:
        """SIGKILL every live process still running the server's executable in its working
        directory (helpers it forked) and wait, briefly, until they are gone."""
        try:
            _, exe, workdir = self.pid_file.read_text(encoding="utf-8").splitlines()[:3]
        except (FileNotFoundError, ValueError):
            return
        leftovers = [pid for pid in _pids() if _link(pid, "exe") == exe and _link(pid, "cwd") == workdir]
        for pid in leftovers:
            _kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for pid in leftovers:
            _wait_gone(pid, deadline)

    def signal_stop(self) -> int | None:
        """Send the stop signal; the pid it went to, or None if nothing of ours ran."""
        pid = self.pid()
        if pid is not None:
            _kill(pid, self.stop_signal)
        return pid


def run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with that account's groups only
    (not root's group), or nothing when ``user`` is None."""
    if user is None:
        return {}
    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def stop_processes(processes: Iterable[DetachedProcess], timeout: float = 30.0) -> list[str]:
    """Stop several servers at once and wait until they and everything in their sessions are gone.

    All get their stop signal first, so a Kafka cluster shuts down together instead of the last
    broker waiting for a quorum that is already gone. Whatever still runs after ``timeout``
    seconds is killed, with everything it forked. Returns the names of what was stopped.
    """
    signalled = [(process, pid) for process in processes if (pid := process.signal_stop()) is not None]
    deadline = time.monotonic() + timeout
    for process, pid in signalled:
        if not _wait_gone(pid, deadline):
            _kill(pid, signal.SIGKILL)
            _wait_gone(pid, time.monotonic() + 10)
        # No helper the server forked (PostgreSQL backends, ...) may outlive it.
        process.kill_leftovers()
        process.pid_file.unlink(missing_ok=True)
    return [process.name for process, _ in signalled]


def wait_until_ready(
    ready: Callable[[], bool],
    processes: Sequence[DetachedProcess],
    what: str,
    timeout: float,
    logs: Sequence[Path],
) -> None:
    """Poll ``ready`` until it is true; raise a StackError with the logs' tails if one of the
    processes exits or ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        exited = [process.name for process in processes if process.pid() is None]
        if exited:
            raise StackError(f"{what}: {', '.join(exited)} exited during start-up.\n{log_tails(logs)}")
        if ready():
            return
        if time.monotonic() > deadline:
            raise StackError(f"{what} did not become ready within {timeout:.0f} s.\n{log_tails(logs)}")
        time.sleep(0.25)


def log_tails(paths: Sequence[Path], lines: int = 25) -> str:
    """The last lines of each existing log file, headed by its path, for error messages."""
    parts = []
    for path in paths:
        if path.is_file():
            tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            parts.append(f"--- last lines of {path} ---\n" + "\n".join(tail))
    return "\n".join(parts) or "(no log written)"


def check_port_free(port: int, service: str, config_key: str) -> None:
    """Raise a StackError naming the port, the service, who holds it and the fix, if
    127.0.0.1:``port`` cannot be listened on."""
    deadline = time.monotonic() + 5
    while not _bindable(port):
        holder = _listener(port)
        # A listener no live process holds belongs to one that is exiting (a server just killed):
        # it goes away by itself within moments.
        if holder or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    else:
        return
    raise StackError(
        f"port {port} for {service} is already in use{f' by {holder}' if holder else ''}. "
        f"Stop that process, or pick a free port with `{config_key}` in simpul.yaml."
    )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR like the servers themselves: a port in TIME_WAIT after our own stop is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            return False
    return True


def require_binary(name: str, what: str, fix: str, extra_dirs: Sequence[str] = ()) -> str:
    """The full path of executable ``name`` (searched on PATH, then ``extra_dirs``), else a
    StackError saying what is missing and ``fix``."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(extra_dirs))
    if not found:
        raise StackError(f"{what} is missing: `{name}` was not found. Fix: {fix}")
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    if state in ("Z", "X"):
        # A child of this very process (a test that called up() then down()) is reaped here. A
        # multi-threaded one (the JVM) shows Z while its other threads still exit: not yet gone.
        try:
            return os.waitpid(pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False  # someone else's zombie: dead, its parent reaps it
    return True


def _cmdline(pid: int) -> str:
    # While a child is inside execve (Popen returns as soon as the exec begins), its cmdline reads
    # empty for a moment: wait for the new program's, or a fresh server would look like a stranger.
    deadline = time.monotonic() + 1.0
    while True:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return ""
        if cmdline or time.monotonic() > deadline:
            return cmdline.replace(b"\0", b" ").decode(errors="replace")
        time.sleep(0.01)


def _kill(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, deadline: float) -> bool:
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _link(pid: int, name: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return ""


def _listener(port: int) -> str:
    """``pid N (command)`` of the live process listening on ``port``, or "" if none is found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    if not inodes:
        return ""
    for pid in _pids():
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                    return f"pid {pid} ({_cmdline(pid)[:120].strip()})"
        except OSError:
            continue
    return ""
