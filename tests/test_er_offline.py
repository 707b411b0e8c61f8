"""Offline entity resolution, pure parts: mapping, canonical records, resolution, evaluation, CLI."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from simpul.seed.agencies import TABLES, table_rows
from simpul.seed.population import generate_population
from simpul.streams.evaluation import edge_counts, evaluate, pair_counts
from simpul.streams.mapping import CanonicalRecord, MappingError, load_mapping, parse_mapping, to_canonical
from simpul.streams.matching import BlockingRuleSpec, default_settings
from simpul.streams.resolve import RULE_KK_NAME, RULE_NIK, resolve

TODAY = date(2025, 6, 30)
MAPPING = load_mapping()


def _table(name: str) -> Any:
    return next(t for t in MAPPING.tables if t.table.endswith("." + name))


# --- mapping ------------------------------------------------------------------------------------


def test_shipped_mapping_reads_only_columns_the_agency_tables_have() -> None:
    by_name = {t.table: t for t in TABLES}
    assert {(t.source, t.table) for t in MAPPING.tables} == {(t.source, t.table) for t in TABLES}
    for mapped in MAPPING.tables:
        columns = set(by_name[mapped.table].columns)
        assert mapped.key == by_name[mapped.table].key
        for column in mapped.fields.columns():
            alias, dot, name = column.rpartition(".")
            if dot:
                assert mapped.join is not None and name in by_name[mapped.join.table].columns
            else:
                assert column in columns, (mapped.name, column)


def _minimal(**table: Any) -> dict[str, Any]:
    return {"tables": [{"source": "dinkes", "table": "public.pasien", "key": "no_rm", "fields": {"name": "nama_pasien"}, **table}]}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**_minimal(), "colour": "red"}, "colour: unknown key"),
        (_minimal(fields={"name": "nama_pasien", "nickname": "x"}), "[dinkes.public.pasien].fields.nickname: unknown key"),
        (_minimal(fields={"nik": "nik"}), "fields.name: required key is missing"),
        (_minimal(entity="family"), "entity"),
        (_minimal(fields={"name": "kk.nama"}), "join alias 'kk'"),
        ({"tables": _minimal()["tables"] * 2}, "mapped twice"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_mapping_errors_name_the_key(raw: Any, message: str) -> None:
    with pytest.raises(MappingError) as caught:
        parse_mapping(raw)
    assert message in str(caught.value)


# --- rows to canonical records ------------------------------------------------------------------


def test_penduduk_row_with_its_family_card() -> None:
    row = {
        "nik": "3673014501900003", "no_kk": "3673012001150007", "nama_lengkap": "Hj. Siti Aminah, S.Pd.",
        "jenis_kelamin": "PEREMPUAN", "tempat_lahir": "Serang", "tanggal_lahir": date(1990, 1, 5), "status_hidup": "MATI",
        "kk.alamat": "Jl. Ki Mas Jong No. 4", "kk.rt": "002", "kk.rw": "005", "kk.kelurahan": "Cipare", "kk.kecamatan": "Serang",
    }
    record = to_canonical(row, _table("penduduk"), today=TODAY)
    assert (record.nik, record.nik_raw_status, record.name, record.titles) == ("3673014501900003", "valid", "SITI AMINAH", ("Hj.", "S.Pd."))
    assert (record.sex, record.birth_date, record.kk, record.deceased) == ("P", date(1990, 1, 5), "3673012001150007", True)
    assert (record.street, record.rt, record.rw, record.kelurahan, record.kecamatan) == ("JALAN KI MAS JONG NO 4", "002", "005", "Cipare", "Serang")
    assert record.nik_verified and record.quality_notes == []


def test_disnaker_row_with_zero_date_placeholder_nik_and_free_text_address() -> None:
    row = {
        "id": 17, "nik": "0000000000000000", "nama": "M. JOESOEF", "jk": "L", "tmp_lahir": "SERANG", "tgl_lahir": "0000-00-00",
        "alamat": "KP. KALORAN RT 002 RW 005", "kelurahan": "CIPARE", "kecamatan": "SERANG", "no_hp": "0812-3456-7890",
    }
    record = to_canonical(row, _table("ak1_pencari_kerja"), today=TODAY)
    assert (record.record_key, record.nik, record.nik_raw_status, record.name) == ("17", None, "missing", "MUHAMMAD YUSUF")
    assert (record.birth_date, record.rt, record.rw, record.street, record.phone) == (None, "002", "005", "KAMPUNG KALORAN", "6281234567890")
    assert set(record.quality_notes) == {"nik_placeholder", "birth_date_zero_date"}


def test_nik_disagreeing_with_birth_date_and_sex_is_not_used() -> None:
    row = {"id": 1, "nik": "3673014501900003", "nama": "SITI AMINAH", "jk": "L", "tgl_lahir": date(1991, 1, 5)}
    record = to_canonical(row, _table("ak1_pencari_kerja"), today=TODAY)
    assert (record.nik, record.nik_raw_status) == (None, "disagrees")
    assert {"nik_birth_date_mismatch", "nik_sex_mismatch"} <= set(record.quality_notes)
    # Reason codes only: no value of the row appears in the notes.
    assert not any("3673" in note or "AMINAH" in note for note in record.quality_notes)


def test_dinsos_member_with_family_join_and_household_rows() -> None:
    member = {
        "id_anggota": 5, "nik": "3673011203850002", "nama": "AHMAD FAUZI", "tanggal_lahir": date(1985, 3, 12), "jenis_kelamin": "L",
        "keluarga.no_kk": "3673012001150007", "keluarga.alamat": "KP. BARU", "keluarga.rt": "001", "keluarga.rw": "002",
        "keluarga.kelurahan": "CIPARE", "keluarga.kecamatan": "SERANG",
    }
    record = to_canonical(member, _table("anggota_penerima"), today=TODAY)
    assert (record.nik_raw_status, record.kk, record.kelurahan, record.rt) == ("valid", "3673012001150007", "Cipare", "001")
    family = {"id_keluarga": 9, "no_kk": "3673012001150007", "nama_kepala": "AHMAD FAUZI", "alamat": "KP. BARU", "rt": "1", "rw": "2", "kelurahan": "CIPARE", "kecamatan": "SERANG"}
    head = to_canonical(family, _table("keluarga_penerima"), today=TODAY)
    assert (head.name, head.kk, head.rt, head.rw, head.nik, head.birth_date) == ("AHMAD FAUZI", "3673012001150007", "001", "002", None, None)
    card = {"no_kk": "3673012001150007", "kepala_keluarga": "Ahmad Fauzi", "alamat": "Kp. Baru", "rt": "001", "rw": "002", "kelurahan": "Cipare", "kecamatan": "Serang"}
    assert to_canonical(card, _table("kartu_keluarga"), today=TODAY).record_key == "3673012001150007"


def test_dinkes_newborn_under_mothers_name_gets_no_name() -> None:
    row = {"no_rm": "RM-000001", "nik": None, "nama_pasien": "BY. NY. SITI AMINAH", "tgl_lahir": date(2025, 5, 1), "jk": "P", "alamat": "Kp. Baru 02/05", "kelurahan": "cipare", "telepon": "+62 812-3456-7890"}
    record = to_canonical(row, _table("pasien"), today=TODAY)
    assert record.name is None and "name_newborn_placeholder" in record.quality_notes
    assert (record.rt, record.rw, record.phone, record.nik_raw_status) == ("002", "005", "6281234567890", "missing")


def test_canonical_record_json_round_trip() -> None:
    record = CanonicalRecord("dinkes", "public.pasien", "RM-1", name="A B", name_tokens=("A", "B"), birth_date=date(2000, 1, 2), quality_notes=["x"])
    assert CanonicalRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


# --- resolution on a small synthetic city -------------------------------------------------------


def _joined_rows(population: Any, seed: int) -> list[tuple[CanonicalRecord, int]]:
    """Every agency row of a small city as the export would read it (joins included), with its person."""
    tables = {t.table: t for t in TABLES}
    rows = {t.table: list(table_rows(t, population, seed)) for t in TABLES}
    cards = {row[0]: dict(zip(tables["public.kartu_keluarga"].columns, row)) for row, _ in rows["public.kartu_keluarga"]}
    families = {row[0]: dict(zip(tables["bansos.keluarga_penerima"].columns, row)) for row, _ in rows["bansos.keluarga_penerima"]}
    out = []
    for mapped in MAPPING.tables:
        for row, person_id in rows[mapped.table]:
            values: dict[str, Any] = dict(zip(tables[mapped.table].columns, row))
            if mapped.join:
                parent = (cards if mapped.join.alias == "kk" else families)[values[mapped.join.using]]
                values.update({f"{mapped.join.alias}.{c}": parent[c] for c in mapped.join.columns})
            out.append((to_canonical(values, mapped, today=TODAY), person_id))
    return out


@pytest.fixture(scope="module")
def city() -> list[tuple[CanonicalRecord, int]]:
    return _joined_rows(generate_population(2000, 11), 11)


def test_resolution_of_a_small_city_is_accurate(city: list[tuple[CanonicalRecord, int]]) -> None:
    records = [r for r, _ in city]
    truth = {r.record_id: person for r, person in city}
    resolution = resolve(records)
    result = evaluate(resolution.clusters, truth, [(k.a, k.b) for k in resolution.links], [(p.a, p.b) for p in resolution.reviews])
    assert result.pairs.precision > 0.97 and result.pairs.recall > 0.9, result
    assert result.auto_links is not None and result.auto_links.precision > 0.97
    assert resolution.links_by_rule[RULE_NIK] > 0 and resolution.links_by_rule[RULE_KK_NAME] > 0


def test_same_clusters_whatever_the_input_order(city: list[tuple[CanonicalRecord, int]]) -> None:
    records = [r for r, _ in city]
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    first, second = resolve(records), resolve(shuffled)
    assert first.clusters == second.clusters
    assert [(p.a, p.b) for p in first.reviews] == [(p.a, p.b) for p in second.reviews]
    # A cluster's id is its smallest member.
    members: dict[str, list[str]] = {}
    for record_id, cluster in first.clusters.items():
        members.setdefault(cluster, []).append(record_id)
    assert all(cluster == min(ids) for cluster, ids in members.items())


def test_the_prior_does_not_depend_on_which_blocking_rules_found_the_pairs(city: list[tuple[CanonicalRecord, int]]) -> None:
    # A rule that adds mostly easy non-matches (everyone born the same year) multiplies the candidate
    # pairs by thirty; the prior, the chance that two random records match, must stay where it is.
    records = [r for r, _ in city]
    settings = default_settings()
    wide = settings.model_copy(update={"blocking_rules": [*settings.blocking_rules, BlockingRuleSpec(name="birth_year", keys=["birth_date|year"])]})
    narrow_run, wide_run = resolve(records, settings), resolve(records, wide)
    assert wide_run.candidate_pairs > 20 * narrow_run.candidate_pairs
    assert abs(math.log(wide_run.model.lambda_ / narrow_run.model.lambda_)) < 0.05
    # About one true pair per record among all n(n-1)/2 pairs.
    assert 0.2 < narrow_run.model.lambda_ * len(records) < 2


def test_verified_nik_links_deterministically_and_contradictions_do_not() -> None:
    base = dict(nik="3673014501900003", nik_raw_status="valid", name="SITI AMINAH", name_tokens=("SITI", "AMINAH"), birth_date=date(1990, 1, 5), sex="P")
    same_nik_other_name = CanonicalRecord("dinkes", "public.pasien", "RM-2", **{**base, "name": "ENENG", "name_tokens": ("ENENG",)})
    records = [
        CanonicalRecord("disdukcapil", "public.penduduk", "1", **base),
        same_nik_other_name,
        # Same KK and name, but another birth date: a namesake relative, not the same person.
        CanonicalRecord("dinsos", "bansos.anggota_penerima", "7", name="ASEP", name_tokens=("ASEP",), kk="3673012001150007", birth_date=date(1950, 1, 1)),
        CanonicalRecord("dinsos", "bansos.anggota_penerima", "8", name="ASEP", name_tokens=("ASEP",), kk="3673012001150007", birth_date=date(1980, 6, 1)),
    ]
    resolution = resolve(records)
    clusters = resolution.clusters
    assert clusters["dinkes:public.pasien:RM-2"] == clusters["disdukcapil:public.penduduk:1"] == "dinkes:public.pasien:RM-2"
    assert clusters["dinsos:bansos.anggota_penerima:7"] != clusters["dinsos:bansos.anggota_penerima:8"]
    assert resolution.links_by_rule[RULE_NIK] == 1


# --- evaluation ---------------------------------------------------------------------------------


def test_pair_counting_on_a_hand_example() -> None:
    truth = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 2, "f": 3}
    predicted = {"a": "x", "b": "x", "c": "y", "d": "y", "e": "y", "f": "z", "unknown": "z"}
    counts = pair_counts(predicted, truth)
    # Predicted pairs: ab, cd, ce, de = 4; true pairs: ab, ac, bc, de = 4; both: ab, de = 2.
    assert (counts.records, counts.true_positive, counts.predicted, counts.actual) == (6, 2, 4, 4)
    assert counts.precision == counts.recall == counts.f1 == 0.5
    edges = edge_counts([("a", "b"), ("c", "d"), ("a", "unknown")], truth)
    assert (edges.judged, edges.correct, edges.precision) == (2, 1, 0.5)
    result = evaluate(predicted, truth, links=[("a", "b"), ("d", "e"), ("c", "d")], reviews=[("a", "c")])
    assert result.review_fraction == 0.25 and result.auto_links is not None and result.auto_links.precision == pytest.approx(2 / 3)


def test_nothing_predicted_or_true_is_perfect_not_a_division_by_zero() -> None:
    counts = pair_counts({"a": 1, "b": 2}, {"a": 1, "b": 2})
    assert (counts.precision, counts.recall, counts.f1) == (1.0, 1.0, 1.0)


# --- the command line ---------------------------------------------------------------------------


def test_cli_resolve_round_trip(tmp_path: Path, city: list[tuple[CanonicalRecord, int]]) -> None:
    records = [r for r, _ in city][:400]
    source = tmp_path / "records.jsonl"
    source.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records), encoding="utf-8")
    env = {**os.environ, "SIMPUL_CONFIG": str(Path(__file__).parent / "simpul.test.yaml"), "TERM": "dumb", "COLUMNS": "200"}
    run = [sys.executable, "-m", "simpul.cli", "er", "resolve", "--input", str(source), "--output", str(tmp_path / "clusters.jsonl"),
           "--reviews", str(tmp_path / "reviews.jsonl"), "--estimates", str(tmp_path / "estimates.json")]
    done = subprocess.run(run, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "clusters" in done.stdout and "birth_date" in done.stdout
    assert not any(r.name and r.name in done.stdout for r in records), "the summary must not print names"
    lines = [json.loads(line) for line in (tmp_path / "clusters.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) and {"source", "table", "record_key", "cluster_id"} <= set(lines[0])
    # The written estimates are settings with estimates: resolving with them skips training.
    again = subprocess.run(run[:-2] + ["--settings", str(tmp_path / "estimates.json")], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "estimated on the input" in done.stdout and "estimated on the input" not in again.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "x", "colour": 1}\n', encoding="utf-8")
    failed = subprocess.run(run[:5] + ["--input", str(bad), "--output", str(tmp_path / "o.jsonl")], capture_output=True, text=True, env=env, timeout=60)
    assert failed.returncode == 2 and "line 1" in failed.stderr and "Traceback" not in failed.stderr
