"""The main job's bounded form ends by itself with a summary and leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.stack
def test_bounded_run_ends_with_a_summary(stack_config) -> None:
    env = {**os.environ, "COLUMNS": "160"}
    process = subprocess.Popen(
        [sys.executable, "-m", "simpul.cli", "--config", str(ROOT / "tests" / "simpul.test.yaml"), "run", "--for", "60s", "--rate", "15"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "Summary" in output
    for service in ("kafka-1", "postgres", "mariadb", "registry", "cdc-disdukcapil", "cdc-disnaker", "cdc-dinsos", "cdc-dinkes",
                    "streams-router", "streams-resolver"):
        assert service in output, output
    match = re.search(r"([\d,]+) live changes committed in ([\d.]+)s", output)
    assert match, output
    assert int(match.group(1).replace(",", "")) > 0
    captured = re.search(r"([\d,]+) change events captured into Kafka by (\d) connector", output)
    assert captured and int(captured.group(1).replace(",", "")) > 0 and captured.group(2) == "4", output
    resolved = re.search(r"([\d,]+) row changes resolved into citizens by the stream processors", output)
    assert resolved and int(resolved.group(1).replace(",", "")) > 0, output
    # the change generator ran inside the job; nothing the job started outlives it
    assert _children_of(process.pid) == []
