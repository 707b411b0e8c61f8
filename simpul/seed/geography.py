"""Kota Serang's administrative geography and street names, as the generator uses them.

District codes follow Kemendagri's numbering of Kota Serang (36.73.01 to 36.73.06).
"""

from __future__ import annotations

from dataclasses import dataclass

REGION_CODE = "3673"


@dataclass(frozen=True, slots=True)
class Kecamatan:
    """One district: its two-digit code within 36.73 and its kelurahan."""

    code: str
    name: str
    kelurahan: tuple[str, ...]
    postal_code: str


# Note: there are two kelurahan called Sukawana, one in Kecamatan Serang and one in Curug, so a
# kelurahan is only identified together with its kecamatan.
KECAMATAN: tuple[Kecamatan, ...] = (
    Kecamatan(
        "01",
        "Serang",
        (
            "Cimuncang", "Cipare", "Kagungan", "Kaligandu", "Kota Baru", "Lontar Baru",
            "Lopang", "Serang", "Sukawana", "Sumur Pecung", "Terondol", "Unyur",
        ),
        "42111",
    ),
    Kecamatan(
        "02",
        "Kasemen",
        (
            "Banten", "Bendung", "Kasemen", "Kasunyatan", "Kilasah", "Margaluyu",
            "Mesjid Priyayi", "Sawah Luhur", "Terumbu", "Warung Jaud",
        ),
        "42191",
    ),
    Kecamatan(
        "03",
        "Walantaka",
        (
            "Cigoong", "Cikulur", "Kalodran", "Kapuren", "Kiara", "Lebakwangi", "Nyapah",
            "Pabuaran", "Pager Agung", "Pasuluhan", "Pipitan", "Tegalsari", "Teritih", "Walantaka",
        ),
        "42183",
    ),
    Kecamatan(
        "04",
        "Curug",
        (
            "Cilaku", "Cipete", "Curug", "Curug Manis", "Kemanisan", "Pancalaksana",
            "Sukajaya", "Sukalaksana", "Sukawana", "Tinggar",
        ),
        "42171",
    ),
    Kecamatan(
        "05",
        "Cipocok Jaya",
        ("Banjar Agung", "Banjarsari", "Cipocok Jaya", "Dalung", "Gelam", "Karundang", "Panancangan", "Tembong"),
        "42121",
    ),
    Kecamatan(
        "06",
        "Taktakan",
        (
            "Cibendung", "Cilowong", "Drangong", "Kalang Anyar", "Kuranji", "Lialang", "Pancur",
            "Panggung Jati", "Sayar", "Sepang", "Taman Baru", "Taktakan", "Umbul Tengah",
        ),
        "42162",
    ),
)

# Share of the city's residents per kecamatan (roughly the 2020 census shares).
KECAMATAN_WEIGHTS: tuple[float, ...] = (0.31, 0.14, 0.13, 0.08, 0.16, 0.18)

KELURAHAN: tuple[tuple[Kecamatan, str], ...] = tuple((k, name) for k in KECAMATAN for name in k.kelurahan)

STREETS: tuple[str, ...] = (
    "Jl. Ahmad Yani", "Jl. Veteran", "Jl. Diponegoro", "Jl. Jenderal Sudirman", "Jl. KH. Abdul Fatah Hasan",
    "Jl. Maulana Hasanudin", "Jl. Maulana Yusuf", "Jl. Trip Jamaksari", "Jl. Tb. Suwandi", "Jl. Raya Pandeglang",
    "Jl. Raya Cilegon", "Jl. Raya Jakarta", "Jl. Syekh Nawawi Al-Bantani", "Jl. Kitapa", "Jl. Lingkar Selatan",
    "Jl. Raya Taktakan", "Jl. Raya Petir", "Jl. Bhayangkara", "Jl. Letnan Jidun", "Jl. Sultan Ageng Tirtayasa",
    "Jl. Kapten Tendean", "Jl. Mayor Safei", "Jl. Ki Mas Jong", "Jl. Lopang Gede", "Jl. Cipocok Raya",
)

# A kampung name is mostly the kelurahan's own or a nearby hamlet's name.
KAMPUNG: tuple[str, ...] = (
    "Kaloran", "Kebon Jahe", "Pegantungan", "Kalilarangan", "Sukadiri", "Pekapuran", "Kepandean",
    "Kebalen", "Sempu", "Cijawa", "Cilampang", "Kubang", "Warung Pojok", "Kebon Kubil", "Pabuaran",
    "Sumur Bor", "Tegal", "Kadu", "Kareo", "Sukamanah", "Karang Tumaritis", "Cibogo", "Legok",
    "Bendung", "Pasar Lama", "Kebon Sayur", "Kaujon", "Benggala", "Ciracas", "Pasanggrahan",
)

PERUMAHAN: tuple[str, ...] = (
    "Perum Bumi Ciruas Permai", "Perum Taman Widya Asri", "Perum Griya Serang Asri", "Perum Puri Serang Hijau",
    "Perum Ciracas Indah", "Perum Banjar Indah Permai", "Perum Graha Cisait", "Perum Serang Baru",
)

# Where people who were not born in Kota Serang come from, with rough weights.
BIRTH_PLACES: tuple[tuple[str, float], ...] = (
    ("Serang", 0.72),
    ("Jakarta", 0.05),
    ("Pandeglang", 0.05),
    ("Lebak", 0.035),
    ("Tangerang", 0.035),
    ("Cilegon", 0.03),
    ("Bandung", 0.015),
    ("Bogor", 0.01),
    ("Sukabumi", 0.008),
    ("Cirebon", 0.008),
    ("Tasikmalaya", 0.006),
    ("Garut", 0.006),
    ("Semarang", 0.005),
    ("Brebes", 0.005),
    ("Tegal", 0.004),
    ("Lampung", 0.006),
    ("Palembang", 0.004),
    ("Surabaya", 0.003),
    ("Medan", 0.003),
    ("Padang", 0.003),
)
