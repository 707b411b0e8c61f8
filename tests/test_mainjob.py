"""The main job's bounded form ends by itself with a summary and leaves no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simpul.mainjob import histogram_quantile

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
        [sys.executable, "-m", "simpul.cli", "--config", str(ROOT / "tests" / "simpul.test.yaml"), "run", "--for", "90s", "--rate", "15"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    output, _ = process.communicate(timeout=420)
    assert process.returncode == 0, output
    assert "Summary" in output
    for service in ("kafka-1", "postgres", "mariadb", "registry", "cdc-disdukcapil", "cdc-disnaker", "cdc-dinsos", "cdc-dinkes",
                    "streams-router", "streams-resolver", "sink-master-index", "sink-writeback", "api", "prometheus"):
        assert service in output, output
    match = re.search(r"([\d,]+) live changes committed in ([\d.]+)s", output)
    assert match, output
    assert int(match.group(1).replace(",", "")) > 0
    captured = re.search(r"([\d,]+) change events captured into Kafka by (\d) connector", output)
    assert captured and int(captured.group(1).replace(",", "")) > 0 and captured.group(2) == "4", output
    resolved = re.search(r"([\d,]+) row changes resolved into citizens by the stream processors", output)
    assert resolved and int(resolved.group(1).replace(",", "")) > 0, output
    # the agencies connected: a typed registration answered with verified fields, a death reaching aid
    assert re.search(r"Disnaker registration typed with errors.*linked to its Disdukcapil citizen", output), output
    assert re.search(r"Disdukcapil death reaching Dinsos.*deceased", output), output
    assert output.count("s after the source commit") == 2, output
    citizens = re.search(r"citizens ([\d,]+) · auto-links ([\d,]+)", output)
    assert citizens and int(citizens.group(1).replace(",", "")) > 0, output
    # the change generator ran inside the job; nothing the job started outlives it
    assert _children_of(process.pid) == []


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.95)
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
