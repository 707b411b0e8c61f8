"""The four agencies' tables: their DDL and how each derives its rows, with its own habits.

Every table's rows come from one generator that yields ``(row, person_id)``: the row exactly as it
is loaded (its first value is the primary key) and the resident it describes, which only the truth
file gets. Each agency draws from its own ``random.Random`` seeded from the city seed, so the rows
are identical for the same seed and population, and one agency's habits never shift another's.

Household-level tables (``kartu_keluarga``, ``keluarga_penerima``) name the head of the family as
their person.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from simpul.seed.geography import KELURAHAN
from simpul.seed.names import MUHAMMAD_FAMILY, abbreviate_muhammad, modern_spelling, nickname, typo
from simpul.seed.population import (
    ANAK,
    BLOOD_TYPES,
    CUCU,
    ISTRI,
    KEPALA,
    ORANG_TUA,
    REFERENCE_DATE,
    WIB,
    Household,
    Person,
    Population,
)

Row = tuple[object, ...]
SEED_MARK = "simpul-seed"  # table comment marking tables this package created and may drop
ZERO_DATE = "0000-00-00"
NIK_PLACEHOLDERS: tuple[str | None, ...] = (None, "", "0000000000000000", "-")


@dataclass(frozen=True)
class AgencyTable:
    """One agency table: where it lives, its columns, and the DDL around loading it."""

    source: str  # the config source name
    table: str  # qualified as in the config: <schema>.<table> or <database>.<table>
    columns: tuple[str, ...]
    create: tuple[str, ...]  # before loading: the bare table, so loading is fast
    finish: tuple[str, ...]  # after loading: keys, indexes, replica identity, statistics

    @property
    def name(self) -> str:
        """``<source>.<table>`` without the schema, e.g. ``disnaker.ak1_pencari_kerja``."""
        return f"{self.source}.{self.table.rsplit('.', 1)[1]}"

    @property
    def key(self) -> str:
        """The primary key column (always the first)."""
        return self.columns[0]


def _pg_finish(table: str, key: str, *extra: str) -> tuple[str, ...]:
    return (
        f"ALTER TABLE {table} ADD PRIMARY KEY ({key})",
        *extra,
        # CDC wants whole before-images of updated and deleted rows.
        f"ALTER TABLE {table} REPLICA IDENTITY FULL",
        f"COMMENT ON TABLE {table} IS '{SEED_MARK}'",
        f"ANALYZE {table}",
    )


KARTU_KELUARGA = AgencyTable(
    "disdukcapil",
    "public.kartu_keluarga",
    ("no_kk", "kepala_keluarga", "alamat", "rt", "rw", "kelurahan", "kecamatan", "kode_pos", "tgl_terbit", "updated_at"),
    (
        """CREATE TABLE public.kartu_keluarga (
            no_kk varchar(16) NOT NULL,
            kepala_keluarga varchar(100) NOT NULL,
            alamat varchar(200) NOT NULL,
            rt varchar(3) NOT NULL,
            rw varchar(3) NOT NULL,
            kelurahan varchar(60) NOT NULL,
            kecamatan varchar(60) NOT NULL,
            kode_pos varchar(5) NOT NULL,
            tgl_terbit date NOT NULL,
            updated_at timestamptz NOT NULL
        )""",
    ),
    _pg_finish("public.kartu_keluarga", "no_kk", "CREATE INDEX kartu_keluarga_kelurahan_idx ON public.kartu_keluarga (kecamatan, kelurahan)"),
)

PENDUDUK = AgencyTable(
    "disdukcapil",
    "public.penduduk",
    (
        "nik", "no_kk", "nama_lengkap", "jenis_kelamin", "tempat_lahir", "tanggal_lahir", "agama",
        "status_perkawinan", "pekerjaan", "pendidikan", "golongan_darah", "hubungan_keluarga",
        "status_hidup", "tanggal_kematian", "updated_at",
    ),
    (
        """CREATE TABLE public.penduduk (
            nik varchar(16) NOT NULL,
            no_kk varchar(16) NOT NULL,
            nama_lengkap varchar(100) NOT NULL,
            jenis_kelamin varchar(10) NOT NULL CHECK (jenis_kelamin IN ('LAKI-LAKI', 'PEREMPUAN')),
            tempat_lahir varchar(60) NOT NULL,
            tanggal_lahir date NOT NULL,
            agama varchar(20) NOT NULL,
            status_perkawinan varchar(20) NOT NULL,
            pekerjaan varchar(60) NOT NULL,
            pendidikan varchar(40) NOT NULL,
            golongan_darah varchar(10) NOT NULL,
            hubungan_keluarga varchar(30) NOT NULL,
            status_hidup varchar(5) NOT NULL CHECK (status_hidup IN ('HIDUP', 'MATI')),
            tanggal_kematian date,
            updated_at timestamptz NOT NULL
        )""",
    ),
    _pg_finish(
        "public.penduduk",
        "nik",
        "ALTER TABLE public.penduduk ADD CONSTRAINT penduduk_no_kk_fkey FOREIGN KEY (no_kk) REFERENCES public.kartu_keluarga (no_kk)",
        "CREATE INDEX penduduk_no_kk_idx ON public.penduduk (no_kk)",
    ),
)

AK1_PENCARI_KERJA = AgencyTable(
    "disnaker",
    "disnaker.ak1_pencari_kerja",
    (
        "id", "no_pendaftaran", "nik", "nama", "jk", "tmp_lahir", "tgl_lahir", "alamat", "kelurahan", "kecamatan",
        "no_hp", "pendidikan", "keterampilan", "aktif", "tgl_daftar", "created_at", "updated_at",
    ),
    (
        f"""CREATE TABLE ak1_pencari_kerja (
            id INT UNSIGNED NOT NULL AUTO_INCREMENT,
            no_pendaftaran VARCHAR(30) NOT NULL,
            nik VARCHAR(20) NULL,
            nama VARCHAR(100) CHARACTER SET latin1 COLLATE latin1_swedish_ci NOT NULL,
            jk ENUM('L','P') NOT NULL,
            tmp_lahir VARCHAR(60) NULL,
            tgl_lahir DATE NULL,
            alamat VARCHAR(200) NULL,
            kelurahan VARCHAR(60) NULL,
            kecamatan VARCHAR(60) NULL,
            no_hp VARCHAR(20) NULL,
            pendidikan ENUM('SD','SMP','SMA','SMK','D3','S1','S2') NULL,
            keterampilan SET('KOMPUTER','MENJAHIT','MENGEMUDI','LAS','OTOMOTIF','BAHASA INGGRIS','TATA BOGA','ELEKTRONIK','ADMINISTRASI') NULL,
            aktif TINYINT(1) NOT NULL DEFAULT 1,
            tgl_daftar DATETIME NOT NULL,
            created_at DATETIME NOT NULL,
            updated_at DATETIME NOT NULL,
            PRIMARY KEY (id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci COMMENT='{SEED_MARK}'""",
    ),
    (
        "ALTER TABLE ak1_pencari_kerja ADD INDEX idx_nik (nik), ADD INDEX idx_nama (nama), ADD UNIQUE INDEX uq_no_pendaftaran (no_pendaftaran)",
        "ANALYZE TABLE ak1_pencari_kerja",
    ),
)

KELUARGA_PENERIMA = AgencyTable(
    "dinsos",
    "bansos.keluarga_penerima",
    ("id_keluarga", "no_kk", "nama_kepala", "alamat", "rt", "rw", "kelurahan", "kecamatan", "program", "status_aktif", "tgl_penetapan", "updated_at"),
    (
        "CREATE SCHEMA IF NOT EXISTS bansos",
        """CREATE TABLE bansos.keluarga_penerima (
            id_keluarga serial NOT NULL,
            no_kk varchar(20),
            nama_kepala varchar(100) NOT NULL,
            alamat varchar(200),
            rt varchar(3),
            rw varchar(3),
            kelurahan varchar(60),
            kecamatan varchar(60),
            program varchar(20) NOT NULL,
            status_aktif boolean NOT NULL DEFAULT true,
            tgl_penetapan date NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
    ),
    _pg_finish(
        "bansos.keluarga_penerima",
        "id_keluarga",
        "CREATE INDEX keluarga_penerima_no_kk_idx ON bansos.keluarga_penerima (no_kk)",
        "SELECT setval(pg_get_serial_sequence('bansos.keluarga_penerima', 'id_keluarga'), coalesce(max(id_keluarga), 0) + 1, false) FROM bansos.keluarga_penerima",
    ),
)

ANGGOTA_PENERIMA = AgencyTable(
    "dinsos",
    "bansos.anggota_penerima",
    ("id_anggota", "id_keluarga", "nik", "nama", "tanggal_lahir", "jenis_kelamin", "hubungan", "updated_at"),
    (
        """CREATE TABLE bansos.anggota_penerima (
            id_anggota serial NOT NULL,
            id_keluarga integer NOT NULL,
            nik varchar(20),
            nama varchar(100) NOT NULL,
            tanggal_lahir date,
            jenis_kelamin char(1) CHECK (jenis_kelamin IN ('L', 'P')),
            hubungan varchar(30),
            updated_at timestamptz NOT NULL DEFAULT now()
        )""",
    ),
    _pg_finish(
        "bansos.anggota_penerima",
        "id_anggota",
        "ALTER TABLE bansos.anggota_penerima ADD CONSTRAINT anggota_penerima_id_keluarga_fkey FOREIGN KEY (id_keluarga) REFERENCES bansos.keluarga_penerima (id_keluarga)",
        "CREATE INDEX anggota_penerima_id_keluarga_idx ON bansos.anggota_penerima (id_keluarga)",
        "CREATE INDEX anggota_penerima_nik_idx ON bansos.anggota_penerima (nik)",
        "SELECT setval(pg_get_serial_sequence('bansos.anggota_penerima', 'id_anggota'), coalesce(max(id_anggota), 0) + 1, false) FROM bansos.anggota_penerima",
    ),
)

PASIEN = AgencyTable(
    "dinkes",
    "public.pasien",
    ("no_rm", "nik", "nama_pasien", "tgl_lahir", "jk", "alamat", "kelurahan", "telepon", "gol_darah", "created_at"),
    (
        """CREATE TABLE public.pasien (
            no_rm varchar(12) NOT NULL,
            nik varchar(20),
            nama_pasien varchar(100) NOT NULL,
            tgl_lahir date,
            jk char(1) NOT NULL,
            alamat text,
            kelurahan varchar(60),
            telepon varchar(25),
            gol_darah varchar(3),
            created_at timestamp NOT NULL DEFAULT now()
        )""",
    ),
    _pg_finish("public.pasien", "no_rm", "CREATE INDEX pasien_nik_idx ON public.pasien (nik)"),
)

TABLES: tuple[AgencyTable, ...] = (KARTU_KELUARGA, PENDUDUK, AK1_PENCARI_KERJA, KELUARGA_PENERIMA, ANGGOTA_PENERIMA, PASIEN)


def agency_rng(seed: int, agency: str) -> random.Random:
    """The random stream of one agency's habits for a city seed."""
    return random.Random(f"simpul-{agency}:{seed}")


# --- Disdukcapil: clean and authoritative ---------------------------------------------------------

_PENDIDIKAN_SIAK: dict[str, str] = {
    "TIDAK SEKOLAH": "TIDAK/BELUM SEKOLAH", "SD": "TAMAT SD/SEDERAJAT", "SMP": "SLTP/SEDERAJAT",
    "SMA": "SLTA/SEDERAJAT", "SMK": "SLTA/SEDERAJAT", "D3": "DIPLOMA III", "S1": "DIPLOMA IV/STRATA I", "S2": "STRATA II",
}


def kartu_keluarga_row(population: Population, household: Household) -> Row:
    """One household's KK row as Disdukcapil keeps it."""
    head = population.persons[household.members[0]]
    return (
        household.no_kk, head.name.full, household.alamat, household.rt, household.rw, household.kelurahan,
        household.kecamatan.name, household.kecamatan.postal_code, household.issued,
        datetime.combine(household.issued, datetime.min.time(), WIB) + timedelta(hours=9),
    )


def penduduk_row(population: Population, person: Person) -> Row:
    """One resident's row as Disdukcapil keeps it."""
    return (
        person.nik, population.household_of(person).no_kk, person.name.full,
        "LAKI-LAKI" if person.sex == "L" else "PEREMPUAN", person.birth_place, person.birth_date, person.religion,
        person.marital, person.occupation, _PENDIDIKAN_SIAK[person.education], person.blood_type, person.relation,
        "HIDUP" if person.alive else "MATI", person.death_date, person.updated_at,
    )


def disdukcapil_kartu_keluarga(population: Population) -> Iterator[tuple[Row, int]]:
    """Every household's KK, with its head as the person."""
    for household in population.households:
        yield kartu_keluarga_row(population, household), population.persons[household.members[0]].person_id


def disdukcapil_penduduk(population: Population) -> Iterator[tuple[Row, int]]:
    """Every resident, living or deceased."""
    for person in population.persons:
        yield penduduk_row(population, person), person.person_id


# --- Disnaker: job seekers (AK/1), upper-case names, typed NIKs, legacy zero dates ----------------

_SKILLS = ("KOMPUTER", "MENJAHIT", "MENGEMUDI", "LAS", "OTOMOTIF", "BAHASA INGGRIS", "TATA BOGA", "ELEKTRONIK", "ADMINISTRASI")


def _job_seeker_chance(person: Person, age: int) -> float:
    work = person.occupation
    if work == "BELUM/TIDAK BEKERJA":
        chance = 0.32
    elif work == "PELAJAR/MAHASISWA":
        chance = 0.22
    elif work in ("BURUH HARIAN LEPAS", "TUKANG BANGUNAN", "SOPIR"):
        chance = 0.2
    elif work == "KARYAWAN SWASTA":
        chance = 0.16
    elif work == "MENGURUS RUMAH TANGGA":
        chance = 0.05
    elif work in ("PEGAWAI NEGERI SIPIL", "GURU", "PENSIUNAN"):
        chance = 0.02
    else:
        chance = 0.1
    return chance * (2.1 if age < 30 else 1.35 if age < 40 else 0.75)


def nik_typo(nik: str, no_kk: str, rng: random.Random) -> str:
    """A NIK as mistyped: digits swapped, dropped or replaced, or the KK number in its place."""
    roll = rng.random()
    i = rng.randrange(len(nik) - 1)
    if roll < 0.35:
        out = nik[:i] + nik[i + 1] + nik[i] + nik[i + 2:]
        # Swapping two equal digits changes nothing; the clerk then hit a wrong key instead.
        return out if out != nik else nik[:i] + str((int(nik[i]) + 1) % 10) + nik[i + 1:]
    if roll < 0.6:
        return nik[:i] + nik[i + 1:]
    if roll < 0.85:
        return nik[:i] + str((int(nik[i]) + rng.randint(1, 9)) % 10) + nik[i + 1:]
    return no_kk


def noisy_nik(nik: str, no_kk: str, rng: random.Random, typo_rate: float, missing_rate: float) -> str | None:
    """``nik`` as an agency stored it: usually right, sometimes mistyped, sometimes missing."""
    roll = rng.random()
    if roll < missing_rate:
        return rng.choice(NIK_PLACEHOLDERS)
    if roll < missing_rate + typo_rate:
        return nik_typo(nik, no_kk, rng)
    return nik


def disnaker_name(person: Person, rng: random.Random) -> str:
    """The name as a Disnaker clerk types it: capitals, no title or degree, Muhammad often shortened."""
    words = person.name.words
    if rng.random() < 0.3:
        words = tuple(modern_spelling(w) for w in words)
    name = " ".join(words)
    if words[0] in MUHAMMAD_FAMILY and rng.random() < 0.5:
        name = abbreviate_muhammad(name, rng)
    if rng.random() < 0.02:
        name = typo(name, rng)
    return name.upper()


def _rt_rw(household: Household) -> str:
    return f"RT {household.rt} RW {household.rw}"


def disnaker_registration(person: Person, household: Household, rng: random.Random, registered: datetime, serial: int) -> Row:
    """One AK/1 registration row (without ``id``, which the caller numbers)."""
    legacy = registered.year < 2016
    birth: date | str | None = person.birth_date
    if legacy and rng.random() < 0.12:
        birth = ZERO_DATE
    elif rng.random() < 0.005:
        birth = None
    education = person.education if person.education in ("SD", "SMP", "SMA", "SMK", "D3", "S1", "S2") else "SD"
    skills = ",".join(s for s in _SKILLS if rng.random() < 0.12) or None
    active = 1 if rng.random() < (0.35 if registered.year < 2023 else 0.9) else 0
    updated = registered + timedelta(days=rng.randrange(0, 400))
    return (
        f"AK1/3673/{registered.year}/{serial:06d}",
        noisy_nik(person.nik, household.no_kk, rng, typo_rate=0.03, missing_rate=0.04),
        disnaker_name(person, rng),
        person.sex,
        person.birth_place.upper(),
        birth,
        f"{household.alamat.upper()} {_rt_rw(household)}",
        household.kelurahan.upper(),
        household.kecamatan.name.upper(),
        person.phone,
        education,
        skills,
        active,
        registered,
        registered,
        min(updated, datetime(2025, 6, 30, 16)),
    )


def disnaker_ak1(population: Population, seed: int) -> Iterator[tuple[Row, int]]:
    """Job seekers aged 18-55, about 9% of residents; about 2% registered twice; ids in time order."""
    rng = agency_rng(seed, "disnaker")
    registrations: list[tuple[datetime, int, Person]] = []
    for person in population.persons:
        age = person.age()
        if not (18 <= age <= 55) or not person.alive or rng.random() >= _job_seeker_chance(person, age):
            continue
        adult = max(date(2012, 1, 1), person.birth_date + timedelta(days=18 * 366))
        first = _moment(rng, adult, REFERENCE_DATE)
        registrations.append((first, person.person_id, person))
        if rng.random() < 0.02:
            registrations.append((_moment(rng, first.date() + timedelta(days=30), REFERENCE_DATE + timedelta(days=60)), person.person_id, person))
    registrations.sort(key=lambda r: (r[0], r[1]))
    per_year: dict[int, int] = {}
    for number, (registered, _, person) in enumerate(registrations, start=1):
        per_year[registered.year] = per_year.get(registered.year, 0) + 1
        row = disnaker_registration(person, population.household_of(person), rng, registered, per_year[registered.year])
        yield (number, *row), person.person_id


def _moment(rng: random.Random, start: date, end: date) -> datetime:
    """A working-hours moment between two dates (``start`` if the range is empty)."""
    days = max((end - start).days, 1)
    day = min(start + timedelta(days=rng.randrange(days)), REFERENCE_DATE)
    return datetime(day.year, day.month, day.day, rng.randint(8, 15), rng.randrange(60), rng.randrange(60))


# --- Dinsos: aid recipients, household based, addresses and statuses lag behind ------------------

_POOR_WORK = frozenset({"BURUH HARIAN LEPAS", "BELUM/TIDAK BEKERJA", "PETANI/PEKEBUN", "NELAYAN/PERIKANAN", "TUKANG BANGUNAN", "MENGURUS RUMAH TANGGA"})
_PROGRAMS = ("PKH", "BPNT", "PKH", "BPNT", "BLT", "PBI-JK")
_HUBUNGAN_DINSOS = {KEPALA: "Kepala Keluarga", ISTRI: "Istri", ANAK: "Anak", CUCU: "Cucu", ORANG_TUA: "Orang Tua"}


@dataclass(frozen=True)
class _Recipient:
    id_keluarga: int
    household: Household
    alamat: str
    rt: str
    rw: str
    kelurahan: str
    kecamatan: str
    program: str
    active: bool
    designated: date
    updated_at: datetime


def _dinsos_plan(population: Population, seed: int) -> list[_Recipient]:
    rng = agency_rng(seed, "dinsos")
    plan: list[_Recipient] = []
    for household in population.households:
        head = population.persons[household.members[0]]
        chance = 0.33 if head.occupation in _POOR_WORK else 0.05
        if any(not population.persons[i].alive for i in household.members):
            # A death in the family rarely reaches the aid list, so such families stay listed.
            chance *= 2.2
        if rng.random() >= chance:
            continue
        alamat, rt, rw, kelurahan, kecamatan = household.alamat, household.rt, household.rw, household.kelurahan, household.kecamatan.name
        if rng.random() < 0.08:
            # The family's previous address: another kelurahan and RT, as when it was first listed.
            old_kecamatan, kelurahan = KELURAHAN[rng.randrange(len(KELURAHAN))]
            kecamatan = old_kecamatan.name
            alamat = f"Kp. {kelurahan}" if rng.random() < 0.5 else household.alamat
            rt, rw = f"{rng.randint(1, 15):03d}", f"{rng.randint(1, 10):03d}"
        designated = date(2017, 1, 1) + timedelta(days=rng.randrange((REFERENCE_DATE - date(2017, 1, 1)).days))
        updated = datetime.combine(designated, datetime.min.time(), WIB) + timedelta(days=rng.randrange(0, 300), hours=10)
        plan.append(
            _Recipient(len(plan) + 1, household, alamat.upper(), rt, rw, kelurahan.upper(), kecamatan.upper(), rng.choice(_PROGRAMS), rng.random() < 0.88, designated, updated)
        )
    return plan


def dinsos_keluarga(population: Population, seed: int) -> Iterator[tuple[Row, int]]:
    """Aid-recipient families (about 15-20% of KK, poorer ones first), the head as the person."""
    for r in _dinsos_plan(population, seed):
        head = population.persons[r.household.members[0]]
        yield (
            (r.id_keluarga, r.household.no_kk, " ".join(head.name.words).upper(), r.alamat, r.rt, r.rw, r.kelurahan, r.kecamatan, r.program, r.active, r.designated, r.updated_at),
            head.person_id,
        )


def dinsos_anggota(population: Population, seed: int) -> Iterator[tuple[Row, int]]:
    """Every member of every recipient family, deceased ones included, without titles."""
    rng = agency_rng(seed, "dinsos-anggota")
    number = 0
    for r in _dinsos_plan(population, seed):
        for index in r.household.members:
            person = population.persons[index]
            number += 1
            yield (
                (
                    number, r.id_keluarga, noisy_nik(person.nik, r.household.no_kk, rng, typo_rate=0.01, missing_rate=0.005),
                    " ".join(person.name.words).upper(), person.birth_date, person.sex,
                    _HUBUNGAN_DINSOS.get(person.relation, "Lainnya"), r.updated_at,
                ),
                person.person_id,
            )


# --- Dinkes: patients, nicknames, missing NIKs, free-text addresses and phones --------------------


def _visit_chance(person: Person, age: int) -> float:
    if age < 5:
        return 0.65
    if age < 18:
        return 0.3
    if age < 45:
        return 0.43 if person.sex == "P" else 0.28
    if age < 65:
        return 0.42
    return 0.56


def dinkes_name(person: Person, family: Sequence[Person], rng: random.Random) -> str:
    """The patient's name as the registration desk wrote it (``family``: the KK's members)."""
    if person.age() == 0 and rng.random() < 0.4:
        # Newborns are registered under their mother's name before they have one.
        mothers = [m for m in family if m.relation in (ISTRI, KEPALA) and m.sex == "P"]
        if mothers:
            return f"BY. NY. {mothers[0].name.core}".upper()
    roll = rng.random()
    if roll < 0.06:
        name = nickname(person.name.words, rng)
    else:
        name = person.name.core
        if person.name.title and rng.random() < 0.3:
            name = f"{person.name.title} {name}"
        if rng.random() < 0.15:
            name = abbreviate_muhammad(name, rng)
    if rng.random() < 0.02:
        name = typo(name, rng)
    return name.upper() if rng.random() < 0.6 else name


def dinkes_address(household: Household, rng: random.Random) -> str:
    """A free-text address with one of the many ways of writing RT/RW."""
    rt, rw = int(household.rt), int(household.rw)
    style = rng.randrange(6)
    rtrw = (
        f"RT {rt:03d}/RW {rw:03d}", f"RT {rt:02d}/RW {rw:02d}", f"RT.{rt:02d} RW.{rw:02d}", f"{rt:02d}/{rw:02d}",
        f"Rt {rt} Rw {rw}", f"RT{rt:02d} RW{rw:02d}",
    )[style]
    tail = f", Kel. {household.kelurahan}" if rng.random() < 0.3 else ""
    return f"{household.alamat} {rtrw}{tail}"


def format_phone(phone: str, rng: random.Random) -> str:
    """A mobile number as people write it: 08…, 62…, +62 …, with spaces or dashes."""
    local = phone[1:]
    style = rng.randrange(6)
    if style == 0:
        return phone
    if style == 1:
        return f"62{local}"
    if style == 2:
        return f"+62 {local[:3]}-{local[3:7]}-{local[7:]}"
    if style == 3:
        return f"{phone[:4]} {phone[4:8]} {phone[8:]}"
    if style == 4:
        return f"{phone[:4]}-{phone[4:8]}-{phone[8:]}"
    return f"+62{local}"


def _wrong_birth_date(birth: date, rng: random.Random) -> date:
    if birth.day <= 12 and birth.day != birth.month and rng.random() < 0.6:
        return birth.replace(day=birth.month, month=birth.day)
    return birth.replace(year=birth.year + rng.choice((-1, 1)), day=min(birth.day, 28))


_BLOOD_GROUPS = frozenset(group for group, _ in BLOOD_TYPES)


def dinkes_patient(person: Person, household: Household, family: Sequence[Person], rng: random.Random, registered: datetime) -> Row:
    """One patient row (without ``no_rm``, which the caller numbers); ``family``: the KK's members."""
    age = person.age()
    missing = 0.3 if age < 5 else 0.12
    nik = None if rng.random() < missing else noisy_nik(person.nik, household.no_kk, rng, typo_rate=0.01, missing_rate=0.0)
    phone = person.phone
    if phone is None and age < 17:
        # A child's file carries a parent's number.
        phone = next((m.phone for m in family if m.phone), None)
    birth = person.birth_date if rng.random() >= 0.01 else _wrong_birth_date(person.birth_date, rng)
    kelurahan = household.kelurahan.upper() if rng.random() < 0.5 else household.kelurahan
    return (
        nik,
        dinkes_name(person, family, rng),
        birth,
        person.sex,
        dinkes_address(household, rng),
        kelurahan,
        format_phone(phone, rng) if phone else None,
        # Disdukcapil records a newborn's blood type as TIDAK TAHU; the clinic leaves it empty.
        person.blood_type if person.blood_type in _BLOOD_GROUPS and rng.random() < 0.7 else None,
        registered,
    )


def dinkes_pasien(population: Population, seed: int) -> Iterator[tuple[Row, int]]:
    """Patients, about 40% of residents; about 1.5% registered twice; numbers in time order."""
    rng = agency_rng(seed, "dinkes")
    visits: list[tuple[datetime, int, Person]] = []
    for person in population.persons:
        if rng.random() >= _visit_chance(person, person.age()):
            continue
        start = max(date(2015, 1, 1), person.birth_date)
        end = person.death_date or REFERENCE_DATE
        first = _moment(rng, start, end)
        visits.append((first, person.person_id, person))
        if rng.random() < 0.015:
            visits.append((_moment(rng, first.date() + timedelta(days=1), end + timedelta(days=2)), person.person_id, person))
    visits.sort(key=lambda v: (v[0], v[1]))
    for number, (registered, _, person) in enumerate(visits, start=1):
        household = population.household_of(person)
        family = [population.persons[i] for i in household.members]
        yield (f"RM-{number:06d}", *dinkes_patient(person, household, family, rng, registered)), person.person_id


TABLE_ROWS = {
    KARTU_KELUARGA.name: lambda population, seed: disdukcapil_kartu_keluarga(population),
    PENDUDUK.name: lambda population, seed: disdukcapil_penduduk(population),
    AK1_PENCARI_KERJA.name: disnaker_ak1,
    KELUARGA_PENERIMA.name: dinsos_keluarga,
    ANGGOTA_PENERIMA.name: dinsos_anggota,
    PASIEN.name: dinkes_pasien,
}


def table_rows(table: AgencyTable, population: Population, seed: int) -> Iterator[tuple[Row, int]]:
    """The rows of ``table`` for this population and seed, each with the resident it describes."""
    return TABLE_ROWS[table.name](population, seed)


@dataclass(frozen=True)
class RealismReport:
    """Measured rates of the generated agencies, the numbers the tests hold to their stated ranges."""

    residents: int
    households: int
    rows: dict[str, int]
    agencies_per_resident: dict[int, float]  # share of residents found in 1..4 agencies (Disdukcapil always)
    disnaker_share: float  # distinct residents with an AK/1 card, of all residents
    disnaker_nik_typo: float
    disnaker_nik_missing: float
    disnaker_zero_dates: float
    disnaker_duplicates: float  # registrations beyond a person's first, of all registrations
    dinsos_household_share: float
    dinsos_outdated_address: float
    dinsos_deceased_recipients: float
    dinkes_share: float
    dinkes_nik_missing: float
    dinkes_duplicates: float
    deceased_share: float


def realism_report(population: Population, seed: int) -> RealismReport:
    """Generate every agency table in memory and measure how realistic it is (small cities only)."""
    by_id = {p.person_id: p for p in population.persons}
    rows = {t.name: list(table_rows(t, population, seed)) for t in TABLES}
    agencies: dict[int, set[str]] = {p.person_id: {"disdukcapil"} for p in population.persons}
    for table in TABLES:
        for _, person_id in rows[table.name]:
            agencies[person_id].add(table.source)
    counts = [len(a) for a in agencies.values()]
    residents = len(population.persons)

    def share(n: int, of: int) -> float:
        return n / of if of else 0.0

    ak1 = rows[AK1_PENCARI_KERJA.name]
    ak1_nik = [(row[2], by_id[pid].nik) for row, pid in ak1]
    keluarga = rows[KELUARGA_PENERIMA.name]
    outdated = sum(
        1 for row, pid in keluarga
        if (row[6], row[4]) != (population.household_of(by_id[pid]).kelurahan.upper(), population.household_of(by_id[pid]).rt)
    )
    anggota = rows[ANGGOTA_PENERIMA.name]
    pasien = rows[PASIEN.name]
    return RealismReport(
        residents=residents,
        households=len(population.households),
        rows={name: len(r) for name, r in rows.items()},
        agencies_per_resident={n: share(counts.count(n), residents) for n in range(1, 5)},
        disnaker_share=share(len({pid for _, pid in ak1}), residents),
        disnaker_nik_typo=share(sum(1 for got, true in ak1_nik if got not in NIK_PLACEHOLDERS and got != true), len(ak1)),
        disnaker_nik_missing=share(sum(1 for got, _ in ak1_nik if got in NIK_PLACEHOLDERS), len(ak1)),
        disnaker_zero_dates=share(sum(1 for row, _ in ak1 if row[6] == ZERO_DATE), len(ak1)),
        disnaker_duplicates=share(len(ak1) - len({pid for _, pid in ak1}), len(ak1)),
        dinsos_household_share=share(len(keluarga), len(population.households)),
        dinsos_outdated_address=share(outdated, len(keluarga)),
        dinsos_deceased_recipients=share(sum(1 for _, pid in anggota if not by_id[pid].alive), len(anggota)),
        dinkes_share=share(len({pid for _, pid in pasien}), residents),
        dinkes_nik_missing=share(sum(1 for row, _ in pasien if row[1] is None), len(pasien)),
        dinkes_duplicates=share(len(pasien) - len({pid for _, pid in pasien}), len(pasien)),
        deceased_share=share(sum(1 for p in population.persons if not p.alive), residents),
    )

