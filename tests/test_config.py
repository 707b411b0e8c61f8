"""The configuration file: the shipped ones are valid; every kind of mistake gets one clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
import yaml

from simpul.config import ConfigError, FeedbackField, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent


def _shipped() -> dict:
    return yaml.safe_load((ROOT / "simpul.yaml").read_text())


def test_shipped_config_is_valid() -> None:
    config = load_config(ROOT / "simpul.yaml")
    assert [s.name for s in config.sources] == ["disdukcapil", "disnaker", "dinsos", "dinkes"]
    assert {s.kind for s in config.sources} == {"postgres", "mysql"}
    assert config.home == ROOT / ".simpul"


def test_test_config_is_valid_and_apart_from_the_main_one() -> None:
    main = load_config(ROOT / "simpul.yaml")
    test = load_config(ROOT / "tests" / "simpul.test.yaml")
    assert test.home != main.home
    assert test.stack.kafka.port != main.stack.kafka.port
    assert test.stack.postgres.port != main.stack.postgres.port
    assert test.stack.mariadb.port != main.stack.mariadb.port


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c["kafka"].update(bootstrap_server="x:1"), "kafka.bootstrap_server: unknown key"),
        (lambda c: c["kafka"].update(bootstrap_servers="localhost"), "kafka.bootstrap_servers: expected host:port"),
        (lambda c: c["sources"][1].update(kind="oracle"), "sources.disnaker.kind: Input should be 'postgres' or 'mysql'"),
        (lambda c: c["sources"][0].pop("dsn_env"), "sources.disdukcapil.dsn_env: required key is missing"),
        (lambda c: c["sources"][0].update(dsn_env="postgres://u:secret@h/db"), "sources.disdukcapil.dsn_env: String should match pattern"),
        (lambda c: c["sources"][2].update(tables=["penerima"]), "sources.dinsos.tables: 'penerima' is not <schema>.<table>"),
        (lambda c: c["sources"][3].update(name="dinsos"), "sources: the name 'dinsos' is used twice"),
        (lambda c: c["stack"]["kafka"].update(nodes=9), "stack.kafka.nodes: Input should be less than or equal to 5"),
        (lambda c: c["metrics"].update(port="many"), "metrics.port: Input should be a valid integer"),
        (lambda c: c["sources"][2]["feedback"].update(fields=["nik", "kk", "nik"]), "sources.dinsos.feedback.fields: listed twice: nik"),
        (lambda c: c["sources"][3]["feedback"].update(fields=["nik", "religion"]), "sources.dinkes.feedback.fields.[1]: Input should be 'nik', 'name'"),
        (lambda c: c["sources"][1]["feedback"].update(topic="feedback for disnaker"), "sources.disnaker.feedback.topic: String should match pattern"),
        (lambda c: c["sources"][1]["feedback"].update(table="Ref-Table"), "sources.disnaker.feedback.table: String should match pattern"),
        (lambda c: c["sources"][0].setdefault("capture", {}).update(workers=0), "sources.disdukcapil.capture.workers: Input should be greater than or equal to 1"),
    ],
)
def test_mistakes_name_the_key_and_the_problem(mutate, message: str) -> None:
    raw = _shipped()
    mutate(raw)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert message in str(caught.value)


def test_feedback_scopes_follow_each_agencys_purpose() -> None:
    config = load_config(ROOT / "simpul.yaml")
    feedback = {s.name: s.feedback for s in config.sources}
    # The registry may see every verified field; the others only what their service needs.
    assert set(feedback["disdukcapil"].fields) == set(get_args(FeedbackField))
    assert set(feedback["dinsos"].fields) == {"nik", "name", "birth_date", "sex", "kk", "kelurahan", "kecamatan"}
    assert "phone" not in feedback["dinsos"].fields and "kk" not in feedback["disnaker"].fields
    assert set(feedback["dinkes"].fields) == {"nik", "name", "birth_date", "sex", "phone"}
    assert {name for name, f in feedback.items() if f.write_back} == {"disnaker", "dinsos"}
    assert config.source("dinsos").feedback_topic == "simpul.feedback.dinsos"
    assert feedback["dinsos"].table == "simpul_citizen_ref"
    # The test stack promises the same scopes as the shipped file.
    test = load_config(ROOT / "tests" / "simpul.test.yaml")
    assert {s.name: s.feedback for s in test.sources} == feedback
    # Without a feedback section: master id and life status only, on the default topic.
    raw = _shipped()
    del raw["sources"][3]["feedback"]
    raw["sources"][2]["feedback"]["topic"] = "serang.dinsos.feedback"
    parsed = parse_config(raw)
    assert parsed.source("dinkes").feedback.fields == [] and parsed.source("dinkes").feedback_topic == "simpul.feedback.dinkes"
    assert parsed.source("dinsos").feedback_topic == "serang.dinsos.feedback"


def test_secret_values_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _shipped()
    raw["sources"][0]["dsn_env"] = "postgres://u:hunter2@h/db"
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert "sources.disdukcapil.dsn_env: String should match pattern" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_missing_environment_variable_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(ROOT / "simpul.yaml")
    monkeypatch.delenv("SIMPUL_DINKES_DSN", raising=False)
    with pytest.raises(ConfigError, match=r"sources\.dinkes\.dsn_env: environment variable SIMPUL_DINKES_DSN is not set"):
        config.source("dinkes").dsn()


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMPUL_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.1:9092,10.0.0.2:9092")
    assert load_config(ROOT / "simpul.yaml").kafka.bootstrap_servers == "10.0.0.1:9092,10.0.0.2:9092"


def test_unknown_source_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="no source named 'bapenda' .configured: disdukcapil, disnaker, dinsos, dinkes"):
        load_config(ROOT / "simpul.yaml").source("bapenda")


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "simpul.yaml"
    bad.write_text("kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_prints_one_line_and_no_traceback(tmp_path: Path) -> None:
    raw = _shipped()
    raw["kafka"]["partitions"] = 0
    path = tmp_path / "simpul.yaml"
    path.write_text(yaml.safe_dump(raw))
    result = subprocess.run(
        [sys.executable, "-m", "simpul.cli", "--config", str(path), "config", "check"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "kafka.partitions: Input should be greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_cli_refuses_an_unknown_log_level() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simpul.cli", "--config", str(ROOT / "simpul.yaml"), "config", "check"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SIMPUL_LOG_LEVEL": "chatty"},
    )
    assert result.returncode == 2
    assert "SIMPUL_LOG_LEVEL: unknown level 'CHATTY'" in result.stderr
    assert "Traceback" not in result.stderr
