"""The incremental resolver on plain dicts: same citizens as the batch twin, in any order, through
repeats and stale replays; updates and deletes move, merge and split citizens; each agency hears
back about its records only what its feedback scope allows."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import date
from pathlib import Path
from typing import Any, get_args

import fastavro
import pytest

from simpul.config import FeedbackField, load_config
from simpul.schemas.resolution import FEEDBACK_SCHEMA
from simpul.schemas.registrar import SchemaRegistrar
from simpul.seed.agencies import TABLES, table_rows
from simpul.seed.population import generate_population
from simpul.streams.app import OutputEncoders
from simpul.streams.changes import RowChange, plain_value
from simpul.streams.citizens import (
    CITIZEN, FEEDBACK, FEEDBACK_FIELDS, LINK, QUALITY, REVIEW, CitizenResolver, Output, ResolverState, feedback_value, master_id,
)
from simpul.streams.mapping import CanonicalRecord, load_mapping, to_canonical
from simpul.streams.matching import FellegiSunterModel
from simpul.streams.resolve import resolve

TODAY = date(2026, 11, 1)
ID_KEY = b"test master id key"
MAPPING = load_mapping()
# The shipped scopes: what the demo promises each agency is what these tests check.
SHIPPED = Path(__file__).resolve().parents[1] / "simpul.yaml"
SCOPES = {s.name: frozenset(s.feedback.fields) for s in load_config(SHIPPED).sources}
_TABLES = {t.table: t for t in TABLES}


def _source_rows(population: Any, seed: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(source, table, key, JSON-safe values) for every row of every table the mapping reads."""
    out = []
    for table in TABLES:
        for row, _ in table_rows(table, population, seed):
            values = {c: plain_value(v) for c, v in zip(table.columns, row)}
            out.append((table.source, table.table, str(row[0]), values))
    return out


def _batch_records(rows: list[tuple[str, str, str, dict[str, Any]]]) -> list[CanonicalRecord]:
    """The records the batch twin sees: each mapped row with its joined parent."""
    by_table = defaultdict(dict)
    for source, table, key, values in rows:
        by_table[(source, table)][key] = values
    records = []
    for mapped in MAPPING.tables:
        for key, values in by_table[(mapped.source, mapped.table)].items():
            row = dict(values)
            if mapped.join:
                parent = by_table[(mapped.source, mapped.join.table)].get(str(row[mapped.join.using]), {})
                row.update({f"{mapped.join.alias}.{c}": parent.get(c) for c in mapped.join.columns})
            records.append(to_canonical(row, mapped, MAPPING.region_prefix, TODAY))
    return records


@pytest.fixture(scope="module")
def city() -> tuple[list[RowChange], FellegiSunterModel, dict[str, str]]:
    rows = _source_rows(generate_population(600, 5), 5)
    batch = resolve(_batch_records(rows))
    changes = [RowChange(s, t, k, "r", (n,), 1_700_000_000_000 + n, v) for n, (s, t, k, v) in enumerate(rows)]
    return changes, batch.model, batch.clusters


def _run(changes: list[RowChange], model: FellegiSunterModel) -> tuple[CitizenResolver, list[Any]]:
    resolver = CitizenResolver(MAPPING, model, ResolverState(), ID_KEY, today=TODAY, feedback_scopes=SCOPES)
    results = [resolver.apply(change) for change in changes]
    return resolver, results


def _groups(mapping: dict[str, str]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = defaultdict(set)
    for record_id, cluster in mapping.items():
        groups[cluster].add(record_id)
    return {frozenset(g) for g in groups.values()}


def _masters(resolver: CitizenResolver) -> dict[str, str]:
    return {record_id: entry["m"] for record_id, entry in resolver.state.records.items()}


def _latest(outputs: list[Output], kind: str) -> dict[str, Any]:
    """What a compacted topic of this kind holds after these messages: the last value per key."""
    latest: dict[str, Any] = {}
    for output in outputs:
        if output.kind != kind:
            continue
        if output.value is None:
            latest.pop(output.key, None)
        else:
            latest[output.key] = output.value
    return latest


def _all_outputs(results: list[Any]) -> list[Output]:
    return [output for result in results for output in result.outputs]


def test_streaming_citizens_equal_the_batch_twin(city: Any) -> None:
    changes, model, batch_clusters = city
    resolver, results = _run(changes, model)
    masters = _masters(resolver)
    assert set(masters) == set(batch_clusters)
    assert _groups(masters) == _groups(batch_clusters)
    decided = sum((r.decisions for r in results), start=Counter())
    assert decided[LINK] > 0 and decided["new"] > 0
    # Every citizen entry lists exactly the records pointing at it.
    for master, citizen in resolver.state.citizens.items():
        assert citizen["members"] == sorted(r for r, m in masters.items() if m == master)


def test_any_order_with_repeats_and_stale_replays_gives_the_same_citizens_and_ids(city: Any) -> None:
    changes, model, _ = city
    reference, reference_results = _run(changes, model)
    rng = random.Random(8)
    shuffled = changes[:]
    rng.shuffle(shuffled)
    # Every tenth change is delivered twice, some of them again much later (after newer ones).
    noisy = []
    for n, change in enumerate(shuffled):
        noisy.append(change)
        if n % 10 == 0:
            noisy.insert(rng.randrange(len(noisy)), change)
    resolver, results = _run(noisy, model)
    assert sum(r.repeated for r in results) > 0
    assert _masters(resolver) == _masters(reference)
    assert {m: c["value"] for m, c in resolver.state.citizens.items()} == {m: c["value"] for m, c in reference.state.citizens.items()}
    assert _latest(_all_outputs(results), FEEDBACK) == _latest(_all_outputs(reference_results), FEEDBACK)
    assert _latest(_all_outputs(results), REVIEW) == _latest(_all_outputs(reference_results), REVIEW)


def test_a_review_tombstone_follows_only_an_open_review(city: Any) -> None:
    changes, model, _ = city
    resolver, results = _run(changes, model)
    # Changes that touch review-range pairs without opening them (birth dates gone), then the
    # deletion of one record of each open pair, which closes it.
    later = [RowChange(c.source, c.table, c.key, "u", (len(changes) + n,), c.ts_ms + 10**9, {**c.values, "tanggal_lahir": None})
             for n, c in enumerate(changes) if c.table == "public.penduduk" and n % 3 == 0]
    results += [resolver.apply(change) for change in later]
    still_open = _latest(_all_outputs(results), REVIEW)
    assert still_open
    for n, pair in enumerate(still_open):
        source, table, key = pair.split("|")[1].split(":", 2)
        results.append(resolver.apply(RowChange(source, table, key, "d", (2 * len(changes) + n,), 1_800_000_000_000, None)))
    published: dict[str, bool] = {}
    for output in (o for o in _all_outputs(results) if o.kind == REVIEW):
        assert output.value is not None or published.get(output.key), f"a tombstone for {output.key}, which was never open"
        published[output.key] = output.value is not None
    assert not any(published.values()) and set(still_open) <= set(published)


def _penduduk(nik: str, name: str, born: str, sex: str = "LAKI-LAKI", kk: str = "3673010101100001") -> dict[str, Any]:
    return {"nik": nik, "no_kk": kk, "nama_lengkap": name, "jenis_kelamin": sex, "tanggal_lahir": born,
            "tempat_lahir": "SERANG", "status_hidup": "HIDUP"}


def _pasien(no_rm: str, nik: str | None, name: str, born: str, sex: str = "L") -> dict[str, Any]:
    return {"no_rm": no_rm, "nik": nik, "nama_pasien": name, "jk": sex, "tgl_lahir": born,
            "alamat": "KP. BENGGALA RT 01 RW 02", "kelurahan": "Unyur", "telepon": "081234567890"}


class _Feed:
    """Row changes with increasing positions and timestamps, as one source log would give them."""

    def __init__(self, resolver: CitizenResolver) -> None:
        self.resolver = resolver
        self.n = 0

    def put(self, source: str, table: str, key: str, values: dict[str, Any] | None) -> Any:
        self.n += 1
        op = "d" if values is None else "u"
        self.last = RowChange(source, table, key, op, (self.n,), 1_000 * self.n, values)
        return self.resolver.apply(self.last)

    def again(self) -> Any:
        """The last change delivered once more (as after a crash)."""
        return self.resolver.apply(self.last)


@pytest.fixture()
def feed(city: Any) -> _Feed:
    return _Feed(CitizenResolver(MAPPING, city[1], ResolverState(), ID_KEY, today=TODAY, feedback_scopes=SCOPES))


PD = ("disdukcapil", "public.penduduk")
PS = ("dinkes", "public.pasien")
NIK_A = "3673011104840002"  # born 1984-04-11, male
NIK_B = "3673015512900003"  # born 1990-12-15, female


def test_update_merges_then_splits_and_ids_follow_the_anchor(feed: _Feed) -> None:
    feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    feed.put(*PS, "RM1", _pasien("RM1", None, "SITI AMINAH", "1990-12-15", "P"))
    records = feed.resolver.state.records
    citizen_a = records[f"disdukcapil:public.penduduk:{NIK_A}"]["m"]
    assert citizen_a == master_id(f"disdukcapil:public.penduduk:{NIK_A}", ID_KEY)
    assert records["dinkes:public.pasien:RM1"]["m"] != citizen_a

    # The clinic corrects its patient to the registry's man: the record moves, the citizens merge.
    merged = feed.put(*PS, "RM1", _pasien("RM1", NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    assert merged.merges == 1
    assert records["dinkes:public.pasien:RM1"]["m"] == citizen_a  # the older citizen's id survives
    tombstones = [o.key for o in merged.outputs if o.kind == CITIZEN and o.value is None]
    assert tombstones == [master_id("dinkes:public.pasien:RM1", ID_KEY)]
    link = next(o.value for o in merged.outputs if o.kind == LINK and o.key == "dinkes:public.pasien:RM1")
    assert link["rule"] == "nik" and link["master_id"] == citizen_a and link["contributions"]

    # And back: the citizen splits; the registry record keeps the id, the patient regains its own.
    split = feed.put(*PS, "RM1", _pasien("RM1", None, "SITI AMINAH", "1990-12-15", "P"))
    assert split.splits == 1
    assert records[f"disdukcapil:public.penduduk:{NIK_A}"]["m"] == citizen_a
    assert records["dinkes:public.pasien:RM1"]["m"] == master_id("dinkes:public.pasien:RM1", ID_KEY)


def test_a_change_to_columns_no_mapping_reads_refreshes_nothing_but_moves_the_position(feed: _Feed) -> None:
    kk = "3673010101100001"
    household = {"no_kk": kk, "kepala_keluarga": "SUGENG SANTOSO", "alamat": "KP. BENGGALA", "rt": "1", "rw": "2",
                 "kelurahan": "Unyur", "kecamatan": "Serang"}
    feed.put("disdukcapil", "public.kartu_keluarga", kk, household)
    feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11", kk=kk))
    record_id = f"disdukcapil:public.penduduk:{NIK_A}"
    before = feed.resolver.state.records[record_id]

    # A column neither the member's mapping nor its join reads, on the member and on its family.
    own = feed.put(*PD, NIK_A, {**_penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11", kk=kk), "updated_at": "2026-11-02"})
    parent = feed.put("disdukcapil", "public.kartu_keluarga", kk, {**household, "updated_at": "2026-11-02"})
    assert own.outputs == [] and parent.outputs == [] and not own.decisions and not parent.decisions
    assert feed.resolver.state.records[record_id] == before
    assert feed.resolver.state.rows[record_id]["p"] == [feed.n - 1]  # the position still moved on
    # Delivered again, it is a repeat and rebuilt in full, as after a crash.
    assert feed.again().repeated and feed.resolver.state.records[record_id] == before

    # A column the join does read reaches the member.
    moved = feed.put("disdukcapil", "public.kartu_keluarga", kk, {**household, "alamat": "JL. TRIP JAMAKSARI"})
    assert feed.resolver.state.records[record_id]["rec"]["street"] == "JALAN TRIP JAMAKSARI"
    assert any(o.kind == LINK and o.key == record_id for o in moved.outputs)


def test_golden_record_follows_survivorship_with_lineage(feed: _Feed) -> None:
    feed.put(*PS, "RM7", _pasien("RM7", NIK_B, "SITI AMINAH", "1990-12-15", "P"))
    result = feed.put(*PD, NIK_B, _penduduk(NIK_B, "Hj. Siti Aminah", "1990-12-15", "PEREMPUAN"))
    citizen = [o.value for o in result.outputs if o.kind == CITIZEN and o.value is not None][-1]
    registry_id = f"disdukcapil:public.penduduk:{NIK_B}"
    # Identity from the civil registry, the phone from the clinic (the only one who has it).
    assert citizen["name"] == "SITI AMINAH" and citizen["titles"] == ["Hj."]
    assert citizen["lineage"]["name"] == registry_id
    assert citizen["lineage"]["phone"] == "dinkes:public.pasien:RM7"
    # The clinic was first seen earlier: it anchors the citizen.
    assert citizen["master_id"] == master_id("dinkes:public.pasien:RM7", ID_KEY)
    assert citizen["deceased"] is False and citizen["lineage"]["deceased"] == registry_id


def test_deleted_record_leaves_its_citizen_and_stale_events_are_ignored(feed: _Feed) -> None:
    feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    feed.put(*PS, "RM1", _pasien("RM1", NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    stale = RowChange(*PS, "RM1", "c", (1,), 1, _pasien("RM1", None, "OTHER NAME", "1970-01-01"))
    deleted = feed.put(*PD, NIK_A, None)
    records = feed.resolver.state.records
    assert f"disdukcapil:public.penduduk:{NIK_A}" not in records
    # The anchor went with the registry record: the patient is now its own citizen.
    assert records["dinkes:public.pasien:RM1"]["m"] == master_id("dinkes:public.pasien:RM1", ID_KEY)
    assert any(o.kind == LINK and o.value is None for o in deleted.outputs)
    assert feed.resolver.apply(stale).stale
    # A replay of the delete itself is a repeat and changes nothing.
    again = feed.resolver.apply(RowChange(*PD, NIK_A, "d", (3,), 3000, None))
    assert again.repeated and f"disdukcapil:public.penduduk:{NIK_A}" not in records


def test_one_nik_with_two_birth_dates_and_deceased_aid_recipients_are_quality_issues(feed: _Feed) -> None:
    feed.put("disdukcapil", "public.kartu_keluarga", "3673010101100001", {"no_kk": "3673010101100001", "kepala_keluarga": "SUGENG SANTOSO",
             "alamat": "KP. BENGGALA", "rt": "1", "rw": "2", "kelurahan": "Unyur", "kecamatan": "Serang"})
    feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    # The clinic typed the birth day one off: still him (name, address, a birth date one keystroke
    # away), but two birth dates for one NIK. Its NIK, contradicting its birth date, is not compared.
    result = feed.put(*PS, "RM2", _pasien("RM2", NIK_A, "SUGENG SANTOSO", "1984-04-12"))
    records = feed.resolver.state.records
    master = records[f"disdukcapil:public.penduduk:{NIK_A}"]["m"]
    assert records["dinkes:public.pasien:RM2"]["m"] == master
    issues = {o.key: o.value for o in result.outputs if o.kind == QUALITY}
    assert issues[f"{master}|nik_birth_date_conflict"]["record_ids"] == sorted([f"disdukcapil:public.penduduk:{NIK_A}", "dinkes:public.pasien:RM2"])
    assert "nik_birth_date_mismatch" in {k.split("|")[1] for k in issues if k.startswith("dinkes:")}
    # Corrected at the clinic: the issue is withdrawn (a tombstone for its key).
    fixed = feed.put(*PS, "RM2", _pasien("RM2", NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    assert any(o.kind == QUALITY and o.key == f"{master}|nik_birth_date_conflict" and o.value is None for o in fixed.outputs)

    # The registry records his death while social aid still lists him.
    feed.put("dinsos", "bansos.keluarga_penerima", "77", {"id_keluarga": 77, "no_kk": "3673010101100001", "nama_kepala": "SUGENG SANTOSO",
             "alamat": "KP. BENGGALA", "rt": "1", "rw": "2", "kelurahan": "Unyur", "kecamatan": "Serang"})
    feed.put("dinsos", "bansos.anggota_penerima", "9", {"id_anggota": 9, "id_keluarga": 77, "nik": NIK_A, "nama": "SUGENG SANTOSO",
             "jenis_kelamin": "L", "tanggal_lahir": "1984-04-11"})
    died = feed.put(*PD, NIK_A, {**_penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"), "status_hidup": "MATI"})
    aid = next(o.value for o in died.outputs if o.kind == QUALITY and o.key == f"{master}|deceased_receiving_aid")
    assert "dinsos:bansos.anggota_penerima:9" in aid["record_ids"]


def test_an_index_rebuilt_from_the_records_continues_like_the_original(city: Any) -> None:
    changes, model, _ = city
    half = len(changes) // 2
    reference, _ = _run(changes, model)
    resolver, _ = _run(changes[:half], model)
    # A restarted worker keeps rows, records and citizens, and rebuilds the index from the records.
    restarted = CitizenResolver(MAPPING, model, ResolverState(resolver.state.rows, resolver.state.records, resolver.state.citizens), ID_KEY, today=TODAY)
    assert restarted.rebuild_index() == len(resolver.state.records)
    assert restarted.state.index == resolver.state.index
    for change in changes[half:]:
        restarted.apply(change)
    assert _masters(restarted) == _masters(reference)


# --- feedback to the agencies ---------------------------------------------------------------------

_CITIZEN = {
    "master_id": "C1", "anchor_record_id": "disdukcapil:public.penduduk:1", "members": ["disdukcapil:public.penduduk:1", "dinkes:public.pasien:RM1"],
    "nik": NIK_A, "name": "SUGENG SANTOSO", "titles": ["H."], "birth_date": "1984-04-11", "birth_place": "SERANG", "sex": "L",
    "street": "KP. BENGGALA", "rt": "001", "rw": "002", "kelurahan": "Unyur", "kecamatan": "Serang", "kk": "3673010101100001",
    "phone": "6281234567890", "deceased": True,
    "lineage": {**{f: "disdukcapil:public.penduduk:1" for f in FEEDBACK_FIELDS if f != "phone"},
                "phone": "dinkes:public.pasien:RM1", "deceased": "disdukcapil:public.penduduk:1"},
    "updated_ms": 1_700_000_000_123,
}
# When each member last changed: the registry record before the clinic's.
_MEMBER_TS = {"disdukcapil:public.penduduk:1": 1_700_000_000_100, "dinkes:public.pasien:RM1": 1_700_000_000_123}


def test_feedback_value_carries_the_scope_life_status_and_lineage_of_delivered_fields_only() -> None:
    record = {"source": "dinsos", "table": "bansos.anggota_penerima", "record_key": "9"}
    value = feedback_value(_CITIZEN, "dinsos:bansos.anggota_penerima:9", record, frozenset({"nik", "name", "kk"}), "disdukcapil", _MEMBER_TS)
    assert value["record_id"] == "dinsos:bansos.anggota_penerima:9" and value["table"] == "bansos.anggota_penerima" and value["record_key"] == "9"
    # Dated by the records that gave what is delivered: the clinic's later change is not among them.
    assert value["master_id"] == "C1" and value["updated_ms"] == 1_700_000_000_100
    assert {f: value[f] for f in FEEDBACK_FIELDS if value[f] is not None} == {"nik": NIK_A, "name": "SUGENG SANTOSO", "kk": "3673010101100001"}
    assert value["deceased"] is True
    # The phone's source (a clinic) is not said to an agency that may not see the phone.
    assert value["verified_from"] == {"nik": "disdukcapil", "name": "disdukcapil", "kk": "disdukcapil", "deceased": "disdukcapil"}
    # No scope: only the master id and life status.
    bare = feedback_value(_CITIZEN, "dinsos:bansos.anggota_penerima:9", record, frozenset(), "disdukcapil", _MEMBER_TS)
    assert all(bare[f] is None for f in FEEDBACK_FIELDS) and bare["verified_from"] == {"deceased": "disdukcapil"}
    assert bare["updated_ms"] == 1_700_000_000_100
    # The message is exactly what the registered schema describes.
    everything = feedback_value(_CITIZEN, "dinsos:bansos.anggota_penerima:9", record, frozenset(FEEDBACK_FIELDS), "disdukcapil", _MEMBER_TS)
    assert everything["updated_ms"] == 1_700_000_000_123
    assert [f["name"] for f in FEEDBACK_SCHEMA["fields"]] == list(everything)
    # A field from an agency other than the registry and the receiver does not name that agency.
    assert everything["verified_from"]["phone"] == "another_agency" and everything["titles"] == ["H."]
    patient = feedback_value(_CITIZEN, "dinkes:public.pasien:RM1", {**record, "source": "dinkes"}, frozenset(FEEDBACK_FIELDS), "disdukcapil", _MEMBER_TS)
    assert patient["verified_from"]["phone"] == "dinkes"
    for message in (value, bare, everything):
        assert fastavro.validate(message, fastavro.parse_schema(FEEDBACK_SCHEMA), raise_errors=True)


def test_feedback_fields_are_the_configurable_ones() -> None:
    assert FEEDBACK_FIELDS == get_args(FeedbackField)


def _ak1(key: int, nik: str | None, name: str, born: str, sex: str = "L") -> dict[str, Any]:
    return {"id": key, "no_pendaftaran": f"AK1-{key}", "nik": nik, "nama": name, "jk": sex, "tmp_lahir": "SRG", "tgl_lahir": born,
            "alamat": "KP. BENGGALA RT 01 RW 02", "kelurahan": "Unyur", "kecamatan": "Serang", "no_hp": "0812-3456-7890"}


AK = ("disnaker", "disnaker.ak1_pencari_kerja")


def test_a_linked_registration_hears_back_its_citizen_within_its_scope(feed: _Feed) -> None:
    registry_id, job_id = f"disdukcapil:public.penduduk:{NIK_A}", "disnaker:disnaker.ak1_pencari_kerja:5"
    first = feed.put(*PD, NIK_A, _penduduk(NIK_A, "H. Sugeng Santoso", "1984-04-11"))
    assert _latest(first.outputs, FEEDBACK)[registry_id]["titles"] == ["H."]  # the registry sees everything
    linked = feed.put(*AK, "5", _ak1(5, NIK_A, "SUGENG SANTOSA", "1984-04-11"))
    feedback = _latest(linked.outputs, FEEDBACK)
    master = master_id(registry_id, ID_KEY)
    assert feedback[job_id]["master_id"] == feedback[registry_id]["master_id"] == master
    job = feedback[job_id]
    # Verified by the registry: its name and birth place, not the job centre's own spelling.
    assert job["name"] == "SUGENG SANTOSO" and job["birth_place"] == "SERANG"
    assert job["verified_from"]["name"] == job["verified_from"]["birth_place"] == "disdukcapil"
    assert job["deceased"] is False and job["verified_from"]["deceased"] == "disdukcapil"
    # Outside the kartu kuning's purpose: the family card and titles stay unsaid.
    assert job["kk"] is None and job["titles"] is None
    assert set(job["verified_from"]) <= SCOPES["disnaker"] | {"deceased"}
    assert feedback[registry_id]["kk"] == "3673010101100001"


def test_merged_records_hear_their_new_master_id_and_a_deleted_one_a_tombstone(feed: _Feed) -> None:
    registry_id, patient_id = f"disdukcapil:public.penduduk:{NIK_A}", "dinkes:public.pasien:RM1"
    outputs = _all_outputs([
        feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11")),
        feed.put(*PS, "RM1", _pasien("RM1", None, "SUGENG SANTOSO", "1970-01-01")),
    ])
    assert _latest(outputs, FEEDBACK)[patient_id]["master_id"] == master_id(patient_id, ID_KEY)
    merged = feed.put(*PS, "RM1", _pasien("RM1", NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    assert merged.merges == 1
    outputs += merged.outputs
    latest = _latest(outputs, FEEDBACK)
    assert latest[patient_id]["master_id"] == latest[registry_id]["master_id"] == master_id(registry_id, ID_KEY)
    # The clinic may see the phone and the birth date, not the address the registry holds.
    patient = latest[patient_id]
    assert patient["phone"] == "6281234567890" and patient["birth_date"] == "1984-04-11"
    assert patient["street"] is None and patient["kelurahan"] is None
    assert patient["updated_ms"] == feed.resolver.state.citizens[master_id(registry_id, ID_KEY)]["value"]["updated_ms"]

    deleted = feed.put(*PS, "RM1", None)
    assert Output(FEEDBACK, patient_id, None) in deleted.outputs
    outputs += deleted.outputs
    assert set(_latest(outputs, FEEDBACK)) == {registry_id}


def test_a_registry_death_reaches_the_aid_agency(feed: _Feed) -> None:
    member_id = "dinsos:bansos.anggota_penerima:9"
    outputs = _all_outputs([
        feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11")),
        feed.put("dinsos", "bansos.keluarga_penerima", "77", {"id_keluarga": 77, "no_kk": "3673010101100001", "nama_kepala": "SUGENG SANTOSO",
                 "alamat": "KP. BENGGALA", "rt": "1", "rw": "2", "kelurahan": "Unyur", "kecamatan": "Serang"}),
        feed.put("dinsos", "bansos.anggota_penerima", "9", {"id_anggota": 9, "id_keluarga": 77, "nik": NIK_A, "nama": "SUGENG SANTOSO",
                 "jenis_kelamin": "L", "tanggal_lahir": "1984-04-11"}),
    ])
    assert _latest(outputs, FEEDBACK)[member_id]["deceased"] is False
    died = feed.put(*PD, NIK_A, {**_penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"), "status_hidup": "MATI"})
    member = _latest(died.outputs, FEEDBACK)[member_id]
    assert member["deceased"] is True and member["verified_from"]["deceased"] == "disdukcapil"
    assert member["master_id"] == master_id(f"disdukcapil:public.penduduk:{NIK_A}", ID_KEY)
    assert member["updated_ms"] == feed.n * 1_000  # the death's own commit: the delay is measured from it
    assert member["kk"] == "3673010101100001" and member["phone"] is None and member["street"] is None


def test_an_agency_hears_again_only_when_what_it_sees_changes(feed: _Feed) -> None:
    registry_id, job_id = f"disdukcapil:public.penduduk:{NIK_A}", "disnaker:disnaker.ak1_pencari_kerja:5"
    feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    feed.put(*AK, "5", _ak1(5, NIK_A, "SUGENG SANTOSA", "1984-04-11"))
    # A clinic's record without address or phone joins the citizen: the citizen's message changes
    # (its members), but nothing the others see does, so only the clinic hears back.
    joined = feed.put(*PS, "RM1", {**_pasien("RM1", NIK_A, "SUGENG SANTOSO", "1984-04-11"), "telepon": None, "alamat": None, "kelurahan": None})
    assert any(o.kind == CITIZEN for o in joined.outputs)
    assert {o.key for o in joined.outputs if o.kind == FEEDBACK} == {"dinkes:public.pasien:RM1"}
    # A death changes what everyone sees.
    died = feed.put(*PD, NIK_A, {**_penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"), "status_hidup": "MATI"})
    heard = _latest(died.outputs, FEEDBACK)
    assert set(heard) == {registry_id, job_id, "dinkes:public.pasien:RM1"} and all(m["deceased"] for m in heard.values())
    # A repeated event sends everything again (a crash may have lost the first sending).
    assert {o.key for o in feed.again().outputs if o.kind == FEEDBACK} == set(heard)


def test_a_source_without_a_scope_hears_nothing(city: Any) -> None:
    feed = _Feed(CitizenResolver(MAPPING, city[1], ResolverState(), ID_KEY, today=TODAY, feedback_scopes={"disdukcapil": frozenset()}))
    first = feed.put(*PD, NIK_A, _penduduk(NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    linked = feed.put(*PS, "RM1", _pasien("RM1", NIK_A, "SUGENG SANTOSO", "1984-04-11"))
    deleted = feed.put(*PS, "RM1", None)
    assert {o.key for o in first.outputs if o.kind == FEEDBACK} == {f"disdukcapil:public.penduduk:{NIK_A}"}
    # The clinic hears nothing, and its record coming and going changes nothing the registry sees.
    assert [o for o in linked.outputs + deleted.outputs if o.kind == FEEDBACK] == []
    registry = _latest(first.outputs, FEEDBACK)[f"disdukcapil:public.penduduk:{NIK_A}"]
    assert all(registry[f] is None for f in FEEDBACK_FIELDS) and registry["deceased"] is False


def test_every_record_of_the_city_hears_its_master_id_and_nothing_outside_its_scope(city: Any) -> None:
    changes, model, _ = city
    resolver, results = _run(changes, model)
    outputs = _all_outputs(results)
    assert _latest(outputs, FEEDBACK).keys() == _latest(outputs, LINK).keys()
    assert {r: v["master_id"] for r, v in _latest(outputs, FEEDBACK).items()} == _masters(resolver)
    for output in outputs:
        if output.kind == FEEDBACK and output.value is not None:
            scope = SCOPES[output.key.split(":", 1)[0]]
            assert all(output.value[f] is None for f in FEEDBACK_FIELDS if f not in scope)
            assert set(output.value["verified_from"]) <= scope | {"deceased"}


def test_feedback_goes_to_the_topic_of_the_records_source_tombstones_included() -> None:
    class Registry:
        def register_schema(self, subject: str, schema: Any) -> int:
            return 1

    config = load_config(SHIPPED)
    encoders = OutputEncoders(config, SchemaRegistrar(Registry()))
    record = {"source": "dinsos", "table": "bansos.anggota_penerima", "record_key": "9"}
    value = feedback_value(_CITIZEN, "dinsos:bansos.anggota_penerima:9", record, SCOPES["dinsos"], "disdukcapil", _MEMBER_TS)
    topic, key, encoded = encoders.encode(Output(FEEDBACK, "dinsos:bansos.anggota_penerima:9", value))
    assert topic == config.source("dinsos").feedback_topic == "simpul.feedback.dinsos" and key and encoded
    assert encoders.encode(Output(FEEDBACK, "disnaker:disnaker.ak1_pencari_kerja:5", None))[::2] == ("simpul.feedback.disnaker", None)
    assert {s.feedback_topic for s in config.sources} <= set(encoders.topics)
