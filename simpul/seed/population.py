"""The synthetic residents of Kota Serang: people and households, generated deterministically.

Everything here is pure: the same ``citizens`` and ``seed`` give the same population, field for
field. The civil registry (Disdukcapil) holds this population as it is; the other agencies derive
their noisier records from it (see :mod:`simpul.seed.agencies`).
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from simpul.seed.geography import BIRTH_PLACES, KAMPUNG, KECAMATAN, KECAMATAN_WEIGHTS, PERUMAHAN, REGION_CODE, STREETS, Kecamatan
from simpul.seed.names import PersonName, generate_name

CITY_RESIDENTS = 768_377
CITY_HOUSEHOLDS = 230_100
PERSONS_PER_HOUSEHOLD = CITY_RESIDENTS / CITY_HOUSEHOLDS  # 3.34

# The day the synthetic city is "as of": every age, date and timestamp is relative to it, never to now.
REFERENCE_DATE = date(2025, 6, 30)
WIB = timezone(timedelta(hours=7))

KEPALA, ISTRI, SUAMI, ANAK, ORANG_TUA, CUCU, FAMILI = (
    "KEPALA KELUARGA", "ISTRI", "SUAMI", "ANAK", "ORANG TUA", "CUCU", "FAMILI LAIN",
)
RELIGIONS: tuple[tuple[str, float], ...] = (
    ("ISLAM", 0.965), ("KRISTEN", 0.018), ("KATHOLIK", 0.009), ("BUDHA", 0.005), ("HINDU", 0.002), ("KONGHUCU", 0.001),
)
BLOOD_TYPES: tuple[tuple[str, float], ...] = (("O", 0.37), ("B", 0.29), ("A", 0.26), ("AB", 0.08))
# Household sizes with a mean of about 3.34 persons per KK.
HOUSEHOLD_SIZES: tuple[tuple[int, float], ...] = (
    (1, 0.12), (2, 0.20), (3, 0.24), (4, 0.23), (5, 0.12), (6, 0.06), (7, 0.03),
)
MOBILE_PREFIXES: tuple[str, ...] = (
    "0811", "0812", "0813", "0821", "0822", "0823", "0852", "0853", "0851", "0814", "0815", "0816",
    "0855", "0856", "0857", "0858", "0817", "0818", "0819", "0859", "0877", "0878", "0895", "0896",
    "0897", "0898", "0899", "0881", "0882", "0887", "0888",
)
EDUCATION_LEVELS: tuple[str, ...] = ("TIDAK SEKOLAH", "SD", "SMP", "SMA", "SMK", "D3", "S1", "S2")


@dataclass(slots=True)
class Household:
    """One family card (KK) and where the family lives."""

    household_id: int
    no_kk: str
    kecamatan: Kecamatan
    kelurahan: str
    alamat: str
    rt: str
    rw: str
    issued: date
    religion: str
    members: list[int] = field(default_factory=list)  # indexes into Population.persons, head first


@dataclass(slots=True)
class Person:
    """One resident as the civil registry knows them (``person_id`` exists only in the truth)."""

    person_id: int
    nik: str
    household_id: int
    name: PersonName
    sex: str  # 'L' or 'P'
    birth_date: date
    birth_place: str
    relation: str
    religion: str
    marital: str
    occupation: str
    education: str
    blood_type: str
    phone: str | None
    death_date: date | None
    updated_at: datetime

    @property
    def alive(self) -> bool:
        """Whether the registry still lists this person as living."""
        return self.death_date is None

    def age(self, on: date = REFERENCE_DATE) -> int:
        """Completed years on ``on``."""
        years = on.year - self.birth_date.year
        return years - ((on.month, on.day) < (self.birth_date.month, self.birth_date.day))


@dataclass(slots=True)
class Population:
    """The generated city: persons in household order, each household's head first."""

    seed: int
    households: list[Household]
    persons: list[Person]

    def household_of(self, person: Person) -> Household:
        """The household (KK) ``person`` belongs to."""
        return self.households[person.household_id - 1]


class _Picker:
    """Weighted choice with precomputed cumulative weights (``random.choices`` recomputes them)."""

    def __init__(self, options: tuple[tuple[object, float], ...]) -> None:
        self.values = [value for value, _ in options]
        self.cumulative = list(itertools.accumulate(weight for _, weight in options))
        self.total = self.cumulative[-1]

    def __call__(self, rng: random.Random) -> object:
        return self.values[bisect.bisect_right(self.cumulative, rng.random() * self.total)]


_SIZE = _Picker(HOUSEHOLD_SIZES)
_RELIGION = _Picker(RELIGIONS)
_BLOOD = _Picker(BLOOD_TYPES)
_BIRTH_PLACE = _Picker(BIRTH_PLACES)
_KECAMATAN = _Picker(tuple(zip(KECAMATAN, KECAMATAN_WEIGHTS)))


def nik_prefix(district: str, birth_date: date, sex: str) -> str:
    """The first 12 digits of a NIK: region, district, and birth date with 40 added to a woman's day."""
    day = birth_date.day + (40 if sex == "P" else 0)
    return f"{REGION_CODE}{district}{day:02d}{birth_date.month:02d}{birth_date.year % 100:02d}"


def kk_prefix(district: str, issued: date) -> str:
    """The first 12 digits of a KK number: region, district and recording date."""
    return f"{REGION_CODE}{district}{issued.day:02d}{issued.month:02d}{issued.year % 100:02d}"


class SerialBook:
    """Hands out the next 4-digit serial per 12-digit prefix, so NIKs and KK numbers stay unique."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def next(self, prefix: str) -> str:
        """``prefix`` followed by its next unused serial from 0001."""
        serial = self._last.get(prefix, 0) + 1
        if serial > 9999:
            raise ValueError(f"more than 9999 numbers share one prefix of district {prefix[4:6]}")
        self._last[prefix] = serial
        return f"{prefix}{serial:04d}"


def generate_population(citizens: int, seed: int, advance: Callable[[int], None] | None = None) -> Population:
    """``citizens`` residents in about ``citizens / 3.34`` households, deterministic for ``seed``.

    ``advance`` is told of every 10,000 residents generated (for a progress bar).
    """
    rng = random.Random(f"simpul-population:{seed}")
    niks, kks = SerialBook(), SerialBook()
    households: list[Household] = []
    persons: list[Person] = []
    while len(persons) < citizens:
        size = min(int(_SIZE(rng)), citizens - len(persons))  # type: ignore[call-overload]
        composition = _composition(rng, size)
        household = _household(rng, len(households) + 1, composition[0][2], kks)
        households.append(household)
        for relation, sex, age in composition:
            person = _person(rng, len(persons) + 1, household, relation, sex, age, niks)
            household.members.append(len(persons))
            persons.append(person)
            if advance is not None and len(persons) % 10_000 == 0:
                advance(10_000)
    if advance is not None:
        advance(len(persons) % 10_000)
    return Population(seed, households, persons)


def _household(rng: random.Random, household_id: int, head_age: int, kks: SerialBook) -> Household:
    kecamatan: Kecamatan = _KECAMATAN(rng)  # type: ignore[assignment]
    kelurahan = rng.choice(kecamatan.kelurahan)
    # A KK is (re)issued while its head is an adult, and not before the 2004 database.
    earliest = max(date(2004, 1, 1), REFERENCE_DATE - timedelta(days=(head_age - 17) * 365))
    issued = earliest + timedelta(days=rng.randrange(max((REFERENCE_DATE - earliest).days, 1)))
    return Household(
        household_id=household_id,
        no_kk=kks.next(kk_prefix(kecamatan.code, issued)),
        kecamatan=kecamatan,
        kelurahan=kelurahan,
        alamat=street_address(rng, kelurahan),
        rt=f"{rng.randint(1, 15):03d}",
        rw=f"{rng.randint(1, 10):03d}",
        issued=issued,
        religion=str(_RELIGION(rng)),
    )


def street_address(rng: random.Random, kelurahan: str) -> str:
    """A kampung, street or housing-estate address as written on a KK (without RT/RW)."""
    roll = rng.random()
    if roll < 0.45:
        return f"Kp. {kelurahan if rng.random() < 0.4 else rng.choice(KAMPUNG)}"
    if roll < 0.8:
        return f"{rng.choice(STREETS)} No. {rng.randint(1, 250)}"
    if roll < 0.92:
        return f"{rng.choice(PERUMAHAN)} Blok {rng.choice('ABCDEFGH')}{rng.randint(1, 20)} No. {rng.randint(1, 40)}"
    return f"Link. {rng.choice(KAMPUNG)}"


def _composition(rng: random.Random, size: int) -> list[tuple[str, str, int]]:
    """(relation, sex, age) for each member, head first."""
    if size == 1:
        sex = "L" if rng.random() < 0.55 else "P"
        return [(KEPALA, sex, rng.randint(19, 88))]
    female_head = rng.random() < 0.09
    head_age = int(rng.triangular(22, 82, 38))
    members: list[tuple[str, str, int]] = []
    if female_head:
        members.append((KEPALA, "P", max(head_age, 30)))
        mother_age = max(head_age, 30)
    else:
        members.append((KEPALA, "L", head_age))
        wife_age = max(18, head_age - rng.randint(-2, 8))
        members.append((ISTRI, "P", wife_age))
        mother_age = wife_age
    while len(members) < size:
        roll = rng.random()
        sex = "L" if rng.random() < 0.51 else "P"
        if roll < 0.06 and head_age < 60:
            members.append((ORANG_TUA, "P" if rng.random() < 0.7 else "L", min(96, head_age + rng.randint(20, 35))))
        elif roll < 0.10 and head_age >= 50:
            members.append((CUCU, sex, rng.randint(0, 12)))
        elif roll < 0.12:
            members.append((FAMILI, sex, rng.randint(5, 40)))
        else:
            oldest = max(0, min(mother_age - 18, 32))
            members.append((ANAK, sex, rng.randint(0, oldest)))
    return members


def _person(
    rng: random.Random, person_id: int, household: Household, relation: str, sex: str, age: int, niks: SerialBook
) -> Person:
    birth_date = REFERENCE_DATE - timedelta(days=age * 365 + age // 4 + rng.randrange(365))
    district = household.kecamatan.code if rng.random() < 0.85 else rng.choice(KECAMATAN).code
    born_here = age < 18 and rng.random() < 0.85
    birth_place = "Serang" if born_here else str(_BIRTH_PLACE(rng))
    name = generate_name(rng, sex, birth_date.year, age)
    death_date = None
    death_risk = 0.055 if age >= 70 else 0.01 if age >= 50 else 0.0008
    if rng.random() < death_risk:
        death_date = REFERENCE_DATE - timedelta(days=rng.randrange(1, 3 * 365))
    phone = None
    if age >= 17 and rng.random() < 0.85:
        phone = rng.choice(MOBILE_PREFIXES) + "".join(str(rng.randrange(10)) for _ in range(rng.randint(6, 9)))
    education = _education(rng, age, name)
    updated = datetime(2018, 1, 1, 8, tzinfo=WIB) + timedelta(seconds=rng.randrange(7 * 365 * 86400))
    return Person(
        person_id=person_id,
        nik=niks.next(nik_prefix(district, birth_date, sex)),
        household_id=household.household_id,
        name=name,
        sex=sex,
        birth_date=birth_date,
        birth_place=birth_place,
        relation=relation,
        religion=household.religion,
        marital=_marital(rng, relation, age),
        occupation=_occupation(rng, sex, age, name, household),
        education=education,
        blood_type=str(_BLOOD(rng)),
        phone=phone,
        death_date=death_date,
        updated_at=updated,
    )


def _marital(rng: random.Random, relation: str, age: int) -> str:
    if relation in (ISTRI, SUAMI):
        return "KAWIN"
    if relation == KEPALA:
        return "KAWIN" if age >= 22 and rng.random() < 0.8 else "BELUM KAWIN" if age < 35 else rng.choice(("CERAI MATI", "CERAI HIDUP"))
    if relation == ORANG_TUA:
        return "CERAI MATI"
    return "BELUM KAWIN" if age < 25 or rng.random() < 0.7 else "KAWIN"


def _education(rng: random.Random, age: int, name: PersonName) -> str:
    if name.degree:
        return "S2" if name.degree.startswith("M.") else "S1"
    if age < 7:
        return "TIDAK SEKOLAH"
    if age < 13:
        return "SD"
    if age < 16:
        return "SMP"
    roll = rng.random()
    if age >= 60:
        return "SD" if roll < 0.55 else "SMP" if roll < 0.75 else "SMA" if roll < 0.92 else "TIDAK SEKOLAH"
    return "SD" if roll < 0.15 else "SMP" if roll < 0.33 else "SMA" if roll < 0.63 else "SMK" if roll < 0.85 else "D3" if roll < 0.91 else "S1"


_MALE_WORK: tuple[tuple[str, float], ...] = (
    ("KARYAWAN SWASTA", 0.24), ("WIRASWASTA", 0.2), ("BURUH HARIAN LEPAS", 0.16), ("PEDAGANG", 0.1),
    ("PETANI/PEKEBUN", 0.07), ("SOPIR", 0.05), ("PEGAWAI NEGERI SIPIL", 0.05), ("BELUM/TIDAK BEKERJA", 0.08),
    ("GURU", 0.02), ("TUKANG BANGUNAN", 0.03),
)
_FEMALE_WORK: tuple[tuple[str, float], ...] = (
    ("MENGURUS RUMAH TANGGA", 0.5), ("KARYAWAN SWASTA", 0.14), ("WIRASWASTA", 0.08), ("PEDAGANG", 0.08),
    ("BELUM/TIDAK BEKERJA", 0.1), ("GURU", 0.04), ("PEGAWAI NEGERI SIPIL", 0.03), ("BURUH HARIAN LEPAS", 0.03),
)
_MALE_WORK_PICK = _Picker(_MALE_WORK)
_FEMALE_WORK_PICK = _Picker(_FEMALE_WORK)


def _occupation(rng: random.Random, sex: str, age: int, name: PersonName, household: Household) -> str:
    if age < 5:
        return "BELUM/TIDAK BEKERJA"
    if age < 19 or (age < 23 and rng.random() < 0.35):
        return "PELAJAR/MAHASISWA"
    if age >= 62:
        return "PENSIUNAN" if rng.random() < 0.15 else "BELUM/TIDAK BEKERJA" if rng.random() < 0.6 else "PETANI/PEKEBUN"
    if name.degree.startswith("S.Pd") or name.degree == "M.Pd.":
        return "GURU"
    if household.kecamatan.name == "Kasemen" and sex == "L" and rng.random() < 0.15:
        return "NELAYAN/PERIKANAN"
    return str((_MALE_WORK_PICK if sex == "L" else _FEMALE_WORK_PICK)(rng))
