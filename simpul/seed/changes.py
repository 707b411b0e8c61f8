"""Live changes: real transactions in the agency databases at a steady rate.

Births, deaths, moves (sometimes into a new KK) and name corrections in Disdukcapil; new AK/1
registrations in Disnaker; status and address updates in Dinsos; new patients in Dinkes. Every
record it creates gets a truth row (``*.live.csv.gz``, see :mod:`simpul.seed.truth`), so scoring
still works after live changes. Counts go to ``simpul_changegen_changes_total{agency,kind}``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pymysql
from prometheus_client import Counter

from simpul.config import SimpulConfig
from simpul.metrics import metric_name
from simpul.seed import agencies
from simpul.databases import connect_mysql, connect_postgres
from simpul.seed.geography import KECAMATAN, KELURAHAN
from simpul.seed.loader import MYSQL_SEED_SQL_MODE, SeedError
from simpul.seed.names import PersonName, generate_name, parse_registered
from simpul.seed.population import (
    ANAK,
    ISTRI,
    KEPALA,
    MOBILE_PREFIXES,
    WIB,
    Household,
    Person,
    kk_prefix,
    nik_prefix,
    street_address,
)
from simpul.seed.truth import TruthPerson, TruthRecord, append_live, read_persons
from simpul.shutdown import Shutdown

log = logging.getLogger(__name__)

CHANGES = Counter(
    metric_name("changegen", "changes"), "Live changes committed to the agency databases.", ["agency", "kind"]
)
FAILURES = Counter(
    metric_name("changegen", "failures"), "Live changes rolled back on a conflict.", ["agency", "kind"]
)

# (agency source, kind, relative weight)
KINDS: tuple[tuple[str, str, float], ...] = (
    ("disdukcapil", "birth", 14),
    ("disdukcapil", "death", 5),
    ("disdukcapil", "move", 10),
    ("disdukcapil", "new_kk", 4),
    ("disdukcapil", "name_correction", 8),
    ("disnaker", "registration", 20),
    ("dinsos", "status", 8),
    ("dinsos", "address", 6),
    ("dinkes", "registration", 25),
)
SAMPLE_SIZE = 20_000
TRUTH_FLUSH_S = 1.0
# Days after a birth within which it must be reported to Disdukcapil.
BIRTH_REPORT_DAYS = 60
_SIAK_EDUCATION = {label: code for code, label in agencies._PENDIDIKAN_SIAK.items() if code != "SMK"}
_KECAMATAN_BY_NAME = {k.name: k for k in KECAMATAN}


@dataclass
class ChangeSummary:
    """Changes committed by one :meth:`ChangeGenerator.run`, by ``(agency, kind)``."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    failures: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        """All changes committed."""
        return sum(self.counts.values())


@dataclass
class _Resident:
    person: Person
    household: Household


class ChangeGenerator:
    """Applies live changes to a seeded city; needs the seed's truth files in ``truth_dir``."""

    def __init__(self, config: SimpulConfig, seed: int, truth_dir: Path) -> None:
        self.config = config
        self.truth_dir = truth_dir
        self.rng = random.Random(f"simpul-changes:{seed}")
        self.seed = seed
        self._kinds = [(agency, kind) for agency, kind, _ in KINDS]
        self._cumulative = list(itertools.accumulate(weight for _, _, weight in KINDS))
        self._records: list[TruthRecord] = []
        self._persons: list[TruthPerson] = []

    def run(self, rate_per_s: float, shutdown: Shutdown, duration_s: float | None = None) -> ChangeSummary:
        """Commit about ``rate_per_s`` changes a second until ``shutdown`` or ``duration_s``."""
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        summary = ChangeSummary()
        self._pg = {name: connect_postgres(self.config.source(name)) for name in ("disdukcapil", "dinsos", "dinkes")}
        self._my = connect_mysql(self.config.source("disnaker"))
        try:
            self._load_state()
            # The duration counts from the first change, not from connecting and sampling.
            started = time.monotonic()
            interval = 1.0 / rate_per_s
            next_at = time.monotonic()
            last_flush = next_at
            while not shutdown.requested:
                now = time.monotonic()
                if duration_s is not None and now - started >= duration_s:
                    break
                if now - last_flush >= TRUTH_FLUSH_S:
                    self._flush_truth()
                    last_flush = now
                if now < next_at:
                    shutdown.wait(min(next_at - now, 0.25))
                    continue
                agency, kind = self._kinds[bisect.bisect_right(self._cumulative, self.rng.random() * self._cumulative[-1])]
                if self._apply(agency, kind):
                    CHANGES.labels(agency, kind).inc()
                    summary.counts[(agency, kind)] = summary.counts.get((agency, kind), 0) + 1
                else:
                    summary.failures += 1
                # A backlog of at most a second is caught up; longer stalls are not made up in a burst.
                next_at = max(next_at + interval, now - 1.0)
            summary.seconds = time.monotonic() - started
        finally:
            self._flush_truth()
            for conn in self._pg.values():
                conn.close()
            self._my.close()
        log.info("live changes: %d committed, %d rolled back, in %.1fs", summary.total, summary.failures, summary.seconds)
        return summary

    # --- state --------------------------------------------------------------------------------

    def _load_state(self) -> None:
        conn = self._pg["disdukcapil"]
        rows = conn.execute(
            "SELECT p.nik, p.nama_lengkap, p.jenis_kelamin, p.tempat_lahir, p.tanggal_lahir, p.agama, p.status_perkawinan,"
            " p.pekerjaan, p.pendidikan, p.golongan_darah, p.hubungan_keluarga, p.updated_at,"
            " k.no_kk, k.alamat, k.rt, k.rw, k.kelurahan, k.kecamatan, k.tgl_terbit"
            " FROM public.penduduk p JOIN public.kartu_keluarga k USING (no_kk)"
            " WHERE p.status_hidup = 'HIDUP' ORDER BY md5(p.nik || %s) LIMIT %s",
            (str(self.seed), SAMPLE_SIZE),
        ).fetchall()
        conn.commit()
        wanted = {row[0] for row in rows}
        person_ids: dict[str, int] = {}
        self._next_person_id = 1
        for person in read_persons(self.truth_dir):
            self._next_person_id = max(self._next_person_id, person.person_id + 1)
            if person.nik in wanted:
                person_ids[person.nik] = person.person_id
        if not person_ids:
            raise SeedError(f"no truth for the seeded residents in {self.truth_dir}; run `simpul seed` first")
        self._residents = [self._resident(row, person_ids[row[0]]) for row in rows if row[0] in person_ids]
        self._dinsos_ids = [r[0] for r in self._pg["dinsos"].execute("SELECT id_keluarga FROM bansos.keluarga_penerima ORDER BY 1").fetchall()]
        self._pg["dinsos"].commit()
        last_rm = self._pg["dinkes"].execute("SELECT max(no_rm) FROM public.pasien").fetchone()
        self._pg["dinkes"].commit()
        self._next_rm = int(last_rm[0][3:]) + 1 if last_rm and last_rm[0] else 1
        with self._my.cursor() as cur:
            cur.execute("SET SESSION sql_mode = %s", (MYSQL_SEED_SQL_MODE,))
            cur.execute("SELECT COALESCE(MAX(id), 0) FROM ak1_pencari_kerja")
            self._next_ak1 = int(cur.fetchone()[0]) + 1
        self._my.commit()
        log.info("change generator ready: %d residents sampled, %d aid families", len(self._residents), len(self._dinsos_ids))

    @staticmethod
    def _resident(row: tuple[Any, ...], person_id: int) -> _Resident:
        (nik, nama, jk, tempat, lahir, agama, kawin, kerja, didik, darah, hubungan, updated,
         no_kk, alamat, rt, rw, kelurahan, kecamatan, terbit) = row
        household = Household(0, no_kk, _KECAMATAN_BY_NAME[kecamatan], kelurahan, alamat, rt, rw, terbit, agama)
        person = Person(
            person_id, nik, 0, parse_registered(nama), "L" if jk == "LAKI-LAKI" else "P", lahir, tempat, hubungan,
            agama, kawin, kerja, _SIAK_EDUCATION.get(didik, "SMA"), darah, None, None, updated,
        )
        return _Resident(person, household)

    def _pick(self, predicate: Any = None) -> _Resident | None:
        index = self._pick_index(predicate)
        return None if index is None else self._residents[index]

    def _pick_index(self, predicate: Any = None) -> int | None:
        """Where in ``_residents`` a random resident for whom ``predicate`` holds is (50 tries), or None."""
        for _ in range(50):
            index = self.rng.randrange(len(self._residents))
            if predicate is None or predicate(self._residents[index].person):
                return index
        return None

    def _phone(self) -> str | None:
        if self.rng.random() < 0.15:
            return None
        return self.rng.choice(MOBILE_PREFIXES) + "".join(str(self.rng.randrange(10)) for _ in range(self.rng.randint(6, 9)))

    # --- changes ------------------------------------------------------------------------------

    def _apply(self, agency: str, kind: str) -> bool:
        try:
            getattr(self, f"_{agency}_{kind}")()
            return True
        except (psycopg.Error, pymysql.err.MySQLError) as exc:
            # One change the database refuses (another writer took the key, a value it rejects)
            # is rolled back and counted; the generator goes on with the next one. The error's
            # class and SQLSTATE are logged, never its detail, which can quote row values.
            for conn in self._pg.values():
                conn.rollback()
            self._my.rollback()
            FAILURES.labels(agency, kind).inc()
            code = getattr(exc, "sqlstate", None) or (exc.args[0] if exc.args else "")
            log.warning("live change %s/%s rolled back: %s (%s)", agency, kind, type(exc).__name__, code)
            return False

    def _disdukcapil_birth(self) -> None:
        parent = self._pick(lambda p: p.sex == "P" and p.relation in (ISTRI, KEPALA) and 18 <= p.age(date.today()) <= 45)
        if parent is None:
            return
        # A birth is registered within the 60 days the law allows (UU 24/2013, Pasal 27), not
        # on the day: a whole run's newborns sharing one birth date would share NIK and
        # birth-date blocks hundreds strong, a load no city produces.
        born = date.today() - timedelta(days=self.rng.randrange(BIRTH_REPORT_DAYS + 1))
        sex = "L" if self.rng.random() < 0.51 else "P"
        name = generate_name(self.rng, sex, born.year, 0)
        conn = self._pg["disdukcapil"]
        prefix = nik_prefix(parent.household.kecamatan.code, born, sex)
        last = conn.execute(
            "SELECT max(nik) FROM public.penduduk WHERE nik BETWEEN %s AND %s", (prefix + "0000", prefix + "9999")
        ).fetchone()
        nik = f"{prefix}{(int(last[0][12:]) if last and last[0] else 0) + 1:04d}"
        now = datetime.now(WIB)
        conn.execute(
            "INSERT INTO public.penduduk (nik, no_kk, nama_lengkap, jenis_kelamin, tempat_lahir, tanggal_lahir, agama,"
            " status_perkawinan, pekerjaan, pendidikan, golongan_darah, hubungan_keluarga, status_hidup, updated_at)"
            " VALUES (%s, %s, %s, %s, 'Serang', %s, %s, 'BELUM KAWIN', 'BELUM/TIDAK BEKERJA', 'TIDAK/BELUM SEKOLAH',"
            " 'TIDAK TAHU', 'ANAK', 'HIDUP', %s)",
            (nik, parent.household.no_kk, name.full, "LAKI-LAKI" if sex == "L" else "PEREMPUAN", born, parent.person.religion, now),
        )
        conn.commit()
        person_id = self._next_person_id
        self._next_person_id += 1
        self._persons.append(TruthPerson(person_id, nik, sex, born))
        self._records.append(TruthRecord("disdukcapil", "public.penduduk", nik, person_id))

    def _disdukcapil_death(self) -> None:
        index = self._pick_index(lambda p: p.age(date.today()) >= 60 or self.rng.random() < 0.1)
        if index is None:
            return
        resident = self._residents[index]
        conn = self._pg["disdukcapil"]
        conn.execute(
            "UPDATE public.penduduk SET status_hidup = 'MATI', tanggal_kematian = %s, updated_at = %s WHERE nik = %s",
            (date.today(), datetime.now(WIB), resident.person.nik),
        )
        conn.commit()
        # By position: ``remove`` compared it field by field with every resident before it.
        del self._residents[index]

    def _new_address(self) -> tuple[str, str, str, str, str, str]:
        kecamatan, kelurahan = KELURAHAN[self.rng.randrange(len(KELURAHAN))]
        return (
            street_address(self.rng, kelurahan), f"{self.rng.randint(1, 15):03d}", f"{self.rng.randint(1, 10):03d}",
            kelurahan, kecamatan.name, kecamatan.postal_code,
        )

    def _disdukcapil_move(self) -> None:
        resident = self._pick()
        if resident is None:
            return
        alamat, rt, rw, kelurahan, kecamatan, kode_pos = self._new_address()
        conn = self._pg["disdukcapil"]
        conn.execute(
            "UPDATE public.kartu_keluarga SET alamat = %s, rt = %s, rw = %s, kelurahan = %s, kecamatan = %s,"
            " kode_pos = %s, updated_at = %s WHERE no_kk = %s",
            (alamat, rt, rw, kelurahan, kecamatan, kode_pos, datetime.now(WIB), resident.household.no_kk),
        )
        conn.commit()
        household = resident.household
        household.alamat, household.rt, household.rw, household.kelurahan = alamat, rt, rw, kelurahan
        household.kecamatan = _KECAMATAN_BY_NAME[kecamatan]

    def _disdukcapil_new_kk(self) -> None:
        resident = self._pick(lambda p: p.relation == ANAK and p.age(date.today()) >= 20)
        if resident is None:
            return
        alamat, rt, rw, kelurahan, kecamatan, kode_pos = self._new_address()
        district = _KECAMATAN_BY_NAME[kecamatan]
        today = date.today()
        conn = self._pg["disdukcapil"]
        prefix = kk_prefix(district.code, today)
        last = conn.execute(
            "SELECT max(no_kk) FROM public.kartu_keluarga WHERE no_kk BETWEEN %s AND %s", (prefix + "0000", prefix + "9999")
        ).fetchone()
        no_kk = f"{prefix}{(int(last[0][12:]) if last and last[0] else 0) + 1:04d}"
        now = datetime.now(WIB)
        conn.execute(
            "INSERT INTO public.kartu_keluarga (no_kk, kepala_keluarga, alamat, rt, rw, kelurahan, kecamatan, kode_pos,"
            " tgl_terbit, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (no_kk, resident.person.name.full, alamat, rt, rw, kelurahan, kecamatan, kode_pos, today, now),
        )
        conn.execute(
            "UPDATE public.penduduk SET no_kk = %s, hubungan_keluarga = %s, updated_at = %s WHERE nik = %s",
            (no_kk, KEPALA, now, resident.person.nik),
        )
        conn.commit()
        resident.person.relation = KEPALA
        resident.household = Household(0, no_kk, district, kelurahan, alamat, rt, rw, today, resident.person.religion)
        self._records.append(TruthRecord("disdukcapil", "public.kartu_keluarga", no_kk, resident.person.person_id))

    def _disdukcapil_name_correction(self) -> None:
        resident = self._pick(lambda p: p.age(date.today()) >= 24)
        if resident is None:
            return
        person = resident.person
        old = person.name
        if not old.title and person.age(date.today()) >= 40 and self.rng.random() < 0.5:
            new = PersonName("H." if person.sex == "L" else "Hj.", old.words, old.degree)
        elif not old.degree:
            new = PersonName(old.title, old.words, self.rng.choice(("S.Pd.", "S.E.", "S.H.", "S.Kom.")))
        else:
            new = PersonName(old.title, old.words, "")
        conn = self._pg["disdukcapil"]
        now = datetime.now(WIB)
        conn.execute("UPDATE public.penduduk SET nama_lengkap = %s, updated_at = %s WHERE nik = %s", (new.full, now, person.nik))
        if person.relation == KEPALA:
            conn.execute(
                "UPDATE public.kartu_keluarga SET kepala_keluarga = %s, updated_at = %s WHERE no_kk = %s",
                (new.full, now, resident.household.no_kk),
            )
        conn.commit()
        person.name = new

    def _disnaker_registration(self) -> None:
        resident = self._pick(lambda p: 18 <= p.age(date.today()) <= 55)
        if resident is None:
            return
        person = resident.person
        person.phone = person.phone or self._phone()
        now = datetime.now(WIB).replace(tzinfo=None, microsecond=0)
        ak1_id = self._next_ak1
        row = list(agencies.disnaker_registration(person, resident.household, self.rng, now, ak1_id))
        row[-1] = now  # a new registration is last updated when it is made
        columns = agencies.AK1_PENCARI_KERJA.columns
        with self._my.cursor() as cur:
            cur.execute(
                f"INSERT INTO ak1_pencari_kerja ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})",
                (ak1_id, *row),
            )
        self._my.commit()
        self._next_ak1 += 1
        self._records.append(TruthRecord("disnaker", agencies.AK1_PENCARI_KERJA.table, str(ak1_id), person.person_id))

    def _dinsos_status(self) -> None:
        if not self._dinsos_ids:
            return
        conn = self._pg["dinsos"]
        conn.execute(
            "UPDATE bansos.keluarga_penerima SET status_aktif = NOT status_aktif, updated_at = %s WHERE id_keluarga = %s",
            (datetime.now(WIB), self.rng.choice(self._dinsos_ids)),
        )
        conn.commit()

    def _dinsos_address(self) -> None:
        if not self._dinsos_ids:
            return
        alamat, rt, rw, kelurahan, kecamatan, _ = self._new_address()
        conn = self._pg["dinsos"]
        conn.execute(
            "UPDATE bansos.keluarga_penerima SET alamat = %s, rt = %s, rw = %s, kelurahan = %s, kecamatan = %s,"
            " updated_at = %s WHERE id_keluarga = %s",
            (alamat.upper(), rt, rw, kelurahan.upper(), kecamatan.upper(), datetime.now(WIB), self.rng.choice(self._dinsos_ids)),
        )
        conn.commit()

    def _dinkes_registration(self) -> None:
        resident = self._pick()
        if resident is None:
            return
        person = resident.person
        person.phone = person.phone or (self._phone() if person.age(date.today()) >= 17 else None)
        now = datetime.now(WIB).replace(tzinfo=None, microsecond=0)
        no_rm = f"RM-{self._next_rm:06d}"
        row = agencies.dinkes_patient(person, resident.household, (person,), self.rng, now)
        columns = agencies.PASIEN.columns
        conn = self._pg["dinkes"]
        conn.execute(
            f"INSERT INTO public.pasien ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})", (no_rm, *row)
        )
        conn.commit()
        self._next_rm += 1
        self._records.append(TruthRecord("dinkes", agencies.PASIEN.table, no_rm, person.person_id))

    def _flush_truth(self) -> None:
        if self._records or self._persons:
            append_live(self.truth_dir, self._records, self._persons)
            self._records, self._persons = [], []
