"""The synthetic Kota Serang: pure generation rules, and loading and live changes on a real stack."""

from __future__ import annotations

import gzip
import hashlib
import random
import re
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from simpul.seed import agencies
from simpul.seed.agencies import TABLES, ZERO_DATE, realism_report, table_rows
from simpul.databases import mysql_params
from simpul.seed.geography import KECAMATAN, KELURAHAN
from simpul.seed.names import (
    MUHAMMAD_ABBREVIATIONS,
    MUHAMMAD_FAMILY,
    abbreviate_muhammad,
    old_spelling,
    parse_registered,
    typo,
)
from simpul.seed.population import generate_population

CITIZENS = 20_000
SEED = 11


@pytest.fixture(scope="module")
def population():
    return generate_population(CITIZENS, SEED)


@pytest.fixture(scope="module")
def report(population):
    return realism_report(population, SEED)


def _digest(citizens: int, seed: int) -> str:
    population = generate_population(citizens, seed)
    digest = hashlib.sha256()
    for table in TABLES:
        for row, person_id in table_rows(table, population, seed):
            digest.update(repr((row, person_id)).encode())
    return digest.hexdigest()


def test_same_seed_same_city_different_seed_different_city():
    assert _digest(2_000, 5) == _digest(2_000, 5)
    assert _digest(2_000, 5) != _digest(2_000, 6)


def test_population_size_and_households(population):
    assert len(population.persons) == CITIZENS
    assert 3.1 < CITIZENS / len(population.households) < 3.6
    assert [p.person_id for p in population.persons] == list(range(1, CITIZENS + 1))


def test_nik_structure(population):
    niks = [p.nik for p in population.persons]
    assert len(set(niks)) == len(niks)
    for person in population.persons:
        nik = person.nik
        assert re.fullmatch(r"3673(0[1-6])\d{10}", nik), nik
        day = person.birth_date.day + (40 if person.sex == "P" else 0)
        assert nik[6:12] == f"{day:02d}{person.birth_date.month:02d}{person.birth_date.year % 100:02d}"
        assert nik[12:] != "0000"


def test_kk_structure(population):
    numbers = [h.no_kk for h in population.households]
    assert len(set(numbers)) == len(numbers)
    for household in population.households:
        assert re.fullmatch(r"3673(0[1-6])\d{10}", household.no_kk)
        assert household.no_kk[4:6] == household.kecamatan.code
        issued = household.issued
        assert household.no_kk[6:12] == f"{issued.day:02d}{issued.month:02d}{issued.year % 100:02d}"
        head = population.persons[household.members[0]]
        assert head.relation == "KEPALA KELUARGA"
        assert household.kelurahan in household.kecamatan.kelurahan


def test_kelurahan_list():
    assert len(KECAMATAN) == 6
    assert {k.name for k in KECAMATAN} == {"Serang", "Cipocok Jaya", "Walantaka", "Kasemen", "Taktakan", "Curug"}
    assert len(KELURAHAN) == 67
    assert len({(k.name, name) for k, name in KELURAHAN}) == 67
    assert sorted(k.code for k in KECAMATAN) == ["01", "02", "03", "04", "05", "06"]


def test_names_have_muhammad_siti_titles_and_degrees(population):
    men = [p for p in population.persons if p.sex == "L"]
    women = [p for p in population.persons if p.sex == "P"]
    muhammads = Counter(p.name.words[0] for p in men if p.name.words[0] in MUHAMMAD_FAMILY)
    assert 0.08 < sum(muhammads.values()) / len(men) < 0.2
    assert len(muhammads) >= 5  # several spellings, not one
    assert 0.07 < sum(p.name.words[0] == "Siti" for p in women) / len(women) < 0.15
    adults = [p for p in population.persons if p.age() >= 18]
    titled = sum(bool(p.name.title) for p in adults) / len(adults)
    degreed = sum(bool(p.name.degree) for p in adults) / len(adults)
    assert 0.02 < titled < 0.09
    assert 0.02 < degreed < 0.1
    assert all(p.name.title in ("", "H.", "Hj.") for p in population.persons)
    assert all(p.name.title != "Hj." or p.sex == "P" for p in population.persons)
    singles = [p for p in population.persons if len(p.name.words) == 1]
    assert singles and all(p.birth_date.year < 1960 for p in singles)
    assert any("oe" in p.name.core or "dj" in p.name.core.lower() for p in population.persons)


def test_name_noise_functions():
    rng = random.Random(1)
    assert old_spelling("Yusuf") == "Joesoef"
    assert old_spelling("Mahmud") == "Mahmoed"
    assert abbreviate_muhammad("Muhammad Rizki", rng).split()[0] in MUHAMMAD_ABBREVIATIONS
    assert abbreviate_muhammad("Rizki Muhammad", rng) == "Rizki Muhammad"
    assert all(typo("Supriyadi", random.Random(i)) != "Supriyadi" for i in range(50))
    parsed = parse_registered("Hj. Siti Aminah, S.Pd.")
    assert (parsed.title, parsed.words, parsed.degree) == ("Hj.", ("Siti", "Aminah"), "S.Pd.")
    assert parsed.full == "Hj. Siti Aminah, S.Pd."


def test_realism_rates(report):
    overlap = report.agencies_per_resident
    assert abs(sum(overlap.values()) - 1) < 1e-9  # everyone is in Disdukcapil, nobody in more than 4
    assert overlap[1] > 0.3 and overlap[2] > 0.3 and overlap[3] > 0.05 and 0 < overlap[4] < 0.03
    assert 0.08 <= report.disnaker_share <= 0.10
    assert 0.02 <= report.disnaker_nik_typo <= 0.04
    assert 0.03 <= report.disnaker_nik_missing <= 0.05
    assert 0.005 <= report.disnaker_zero_dates <= 0.04
    assert 0.01 <= report.disnaker_duplicates <= 0.03
    assert 0.15 <= report.dinsos_household_share <= 0.20
    assert 0.06 <= report.dinsos_outdated_address <= 0.10
    assert 0.005 <= report.dinsos_deceased_recipients <= 0.02
    assert 0.35 <= report.dinkes_share <= 0.45
    assert 0.12 <= report.dinkes_nik_missing <= 0.18
    assert 0.01 <= report.dinkes_duplicates <= 0.02
    assert 0.003 <= report.deceased_share <= 0.007


def test_agency_habits(population):
    ak1 = [row for row, _ in table_rows(agencies.AK1_PENCARI_KERJA, population, SEED)]
    assert all(row[3] == row[3].upper() for row in ak1)
    assert any(row[3].split()[0] in {a.upper() for a in MUHAMMAD_ABBREVIATIONS} for row in ak1)
    assert [row[0] for row in ak1] == list(range(1, len(ak1) + 1))
    assert any(row[6] == ZERO_DATE for row in ak1)
    pasien = [row for row, _ in table_rows(agencies.PASIEN, population, SEED)]
    assert any(row[7] and row[7].startswith("+62") for row in pasien)
    assert any(row[5] and "/RW" in row[5] for row in pasien)
    anggota = [row for row, _ in table_rows(agencies.ANGGOTA_PENERIMA, population, SEED)]
    assert not any(row[3].startswith(("H. ", "HJ. ")) or ", " in row[3] for row in anggota)


def test_mysql_params_parse_url():
    params = mysql_params("mysql://sim%40pul:p%3Aw@127.0.0.1:3307/disnaker")
    assert (params["user"], params["password"], params["host"], params["port"], params["database"]) == (
        "sim@pul", "p:w", "127.0.0.1", 3307, "disnaker",
    )
    assert params["local_infile"] and params["charset"] == "utf8mb4"


# --- on the real stack ------------------------------------------------------------------------------


def _truth_counts(truth_dir: Path, name: str) -> Counter[str]:
    with gzip.open(truth_dir / name, "rt", encoding="utf-8") as handle:
        next(handle)
        return Counter(line.split(",")[1] for line in handle)


@pytest.mark.stack
def test_seed_loads_city_and_truth_and_live_changes(agency_config, tmp_path):
    from simpul.seed import ChangeGenerator, is_seeded, seed_city
    from simpul.databases import connect_mysql, connect_postgres
    from simpul.seed.changes import BIRTH_REPORT_DAYS
    from simpul.seed.truth import read_persons, read_records
    from simpul.shutdown import Shutdown

    truth_dir = tmp_path / "truth"
    summary = seed_city(agency_config, citizens=3_000, seed=SEED, truth_dir=truth_dir)
    assert summary.citizens == 3_000 and is_seeded(agency_config)
    truth_counts = _truth_counts(truth_dir, "records.csv.gz")

    for table in TABLES:
        source = agency_config.source(table.source)
        if source.kind == "postgres":
            with connect_postgres(source) as conn:
                (count,) = conn.execute(f"SELECT count(*) FROM {table.table}").fetchone()
                (identity,) = conn.execute(
                    "SELECT relreplident FROM pg_class WHERE oid = to_regclass(%s)", (table.table,)
                ).fetchone()
                assert identity == "f"
        else:
            conn = connect_mysql(source)
            with conn.cursor() as cur:
                cur.execute(f"SELECT count(*) FROM {table.table.rsplit('.', 1)[1]}")
                (count,) = cur.fetchone()
            conn.close()
        assert count == summary.records[table.name] == truth_counts[table.table], table.name

    # Truth rows name real rows: a Disdukcapil NIK is the resident's NIK, a Dinkes record is theirs.
    records = list(read_records(truth_dir))
    persons = {}
    with gzip.open(truth_dir / "persons.csv.gz", "rt", encoding="utf-8") as handle:
        next(handle)
        for line in handle:
            person_id, nik, sex, birth = line.strip().split(",")
            persons[int(person_id)] = (nik, sex, date.fromisoformat(birth))
    with connect_postgres(agency_config.source("disdukcapil")) as conn:
        for record in [r for r in records if r.table == "public.penduduk"][:50]:
            row = conn.execute("SELECT nik, tanggal_lahir FROM public.penduduk WHERE nik = %s", (record.record_key,)).fetchone()
            assert row == (persons[record.person_id][0], persons[record.person_id][2])
    with connect_postgres(agency_config.source("dinkes")) as conn:
        for record in [r for r in records if r.table == "public.pasien"][:50]:
            row = conn.execute("SELECT jk FROM public.pasien WHERE no_rm = %s", (record.record_key,)).fetchone()
            assert row == (persons[record.person_id][1],)

    conn = connect_mysql(agency_config.source("disnaker"))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM ak1_pencari_kerja WHERE CAST(tgl_lahir AS CHAR) = '0000-00-00'")
        assert cur.fetchone()[0] > 0
    conn.close()

    generator = ChangeGenerator(agency_config, seed=SEED, truth_dir=truth_dir)
    changes = generator.run(50.0, Shutdown(), duration_s=3.0)
    assert 100 <= changes.total <= 160
    live = list(read_records(truth_dir))[len(records):]
    created = sum(n for (agency, kind), n in changes.counts.items() if kind in ("birth", "new_kk", "registration"))
    assert len(live) == created
    with connect_postgres(agency_config.source("disdukcapil")) as conn:
        (count,) = conn.execute("SELECT count(*) FROM public.penduduk").fetchone()
        assert count == 3_000 + changes.counts.get(("disdukcapil", "birth"), 0)
    # Births are registered within the legal 60 days, their NIK encoding the birth date.
    births = list(read_persons(truth_dir))[len(persons):]
    assert len(births) == changes.counts.get(("disdukcapil", "birth"), 0) >= 5
    assert len({birth.birth_date for birth in births}) > 1, "every newborn of the run was born on one day"
    for birth in births:
        assert 0 <= (date.today() - birth.birth_date).days <= BIRTH_REPORT_DAYS
        day = birth.birth_date.day + (40 if birth.sex == "P" else 0)
        assert birth.nik[6:12] == f"{day:02d}{birth.birth_date.month:02d}{birth.birth_date.year % 100:02d}"
