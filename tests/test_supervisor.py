"""The supervisor restarts a child that dies and stops every child with no orphan."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from simpul.supervisor import Child, Supervisor


def test_a_dying_child_is_restarted_with_back_off_and_all_stop(tmp_path: Path) -> None:
    dies = Child("dies", [sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "dies.log", backoff_s=0.2)
    lives = Child("lives", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "lives.log")
    stubborn = Child("stubborn", [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"], tmp_path / "s.log")
    supervisor = Supervisor([dies, lives, stubborn])
    supervisor.start()
    deadline = time.monotonic() + 10
    while dies.restarts < 2 and time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.05)
    assert dies.restarts >= 2 and dies.exits[:2] == [3, 3]
    assert lives.running and lives.restarts == 0
    time.sleep(0.5)  # let the stubborn child install its handler
    killed = supervisor.stop(timeout=2)
    assert killed == ["stubborn"]
    assert not any(child.running for child in (dies, lives, stubborn))


def test_children_stop_when_their_supervisor_is_killed(tmp_path: Path) -> None:
    sleeper = "from simpul.supervisor import die_with_parent; die_with_parent(); import time; time.sleep(120)"
    script = (
        "import sys, time; from pathlib import Path; from simpul.supervisor import Child, Supervisor\n"
        f"s = Supervisor([Child('sleeper', [sys.executable, '-c', {sleeper!r}], Path({str(tmp_path / 'sleeper.log')!r}))])\n"
        "s.start(); print(s.children[0].process.pid, flush=True); time.sleep(120)\n"
    )
    supervisor = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert supervisor.stdout is not None
    child = int(supervisor.stdout.readline())
    time.sleep(1.0)  # the child has called die_with_parent
    os.kill(child, 0)
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and "Z" not in Path(f"/proc/{child}/stat").read_text().split(")")[1][:3]:
        assert time.monotonic() < deadline, "the child outlived its killed supervisor"
        time.sleep(0.1)
