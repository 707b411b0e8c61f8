"""Indonesian personal names as they are registered in Banten, and the noise agencies add to them.

A name is kept in parts (:class:`PersonName`): the religious title before it, the core words, and the
academic degree after a comma. Disdukcapil registers all parts; other agencies type variants of
them with the noise functions below, which are pure given the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

MUHAMMAD_SPELLINGS: tuple[tuple[str, float], ...] = (
    ("Muhammad", 0.46),
    ("Muhamad", 0.18),
    ("Mohammad", 0.08),
    ("Mohamad", 0.07),
    ("Mochamad", 0.05),
    ("Mochammad", 0.04),
    ("Moehamad", 0.02),
    ("Mukhamad", 0.03),
    ("Muchammad", 0.03),
    ("Mohamed", 0.01),
    ("Muchamad", 0.03),
)
MUHAMMAD_FAMILY: frozenset[str] = frozenset(spelling for spelling, _ in MUHAMMAD_SPELLINGS)
MUHAMMAD_ABBREVIATIONS: tuple[str, ...] = ("M.", "Moh.", "Moch.", "Mohd.", "Much.")

MALE_GIVEN: tuple[str, ...] = (
    # Arabic-derived
    "Ahmad", "Abdul", "Abdullah", "Akbar", "Ali", "Anwar", "Arif", "Aziz", "Fadli", "Faisal", "Fauzi",
    "Hamdan", "Hasan", "Husein", "Ibrahim", "Ilham", "Imam", "Irfan", "Ismail", "Jamal", "Khairul",
    "Lukman", "Mahmud", "Malik", "Mansur", "Nasrullah", "Rahmat", "Ridwan", "Rizki", "Saiful", "Salim",
    "Sulaiman", "Syaiful", "Umar", "Usman", "Yusuf", "Zainal", "Zaenal", "Habib", "Hidayat", "Fikri",
    "Haikal", "Alfarizi", "Naufal", "Rafi", "Abdurrahman", "Syamsul", "Nurdin", "Jaenudin", "Khoerudin",
    # Sundanese / Bantenese
    "Asep", "Ujang", "Dadang", "Deden", "Cecep", "Dede", "Encep", "Jajang", "Yayan", "Iwan", "Wawan",
    "Endang", "Engkos", "Aceng", "Ade", "Agus", "Apud", "Ateng", "Dindin", "Enjang", "Udin", "Oman",
    "Tubagus", "Entus", "Ajat", "Dudi", "Eman", "Jaja", "Kosim", "Mamat", "Rohmat", "Sarip", "Sapei",
    # Javanese / general Indonesian
    "Budi", "Bambang", "Joko", "Agung", "Andi", "Bayu", "Dwi", "Eko", "Hendra", "Heru", "Joni", "Kurniawan",
    "Slamet", "Sugeng", "Supriyadi", "Teguh", "Wahyu", "Yudi", "Adi", "Rudi", "Dimas", "Fajar", "Galih",
    "Gilang", "Raka", "Reza", "Rendi", "Satria", "Tri", "Wibowo", "Setiawan", "Saputra", "Pratama",
    "Permana", "Ramadhan", "Hidayatullah", "Firmansyah", "Maulana", "Nugraha", "Santoso", "Prasetyo",
)
FEMALE_GIVEN: tuple[str, ...] = (
    # Arabic-derived
    "Aisyah", "Aminah", "Annisa", "Fatimah", "Khadijah", "Maryam", "Nurul", "Rahmawati", "Siti", "Zahra",
    "Zainab", "Halimah", "Hasanah", "Jamilah", "Khoirunnisa", "Latifah", "Mariam", "Nafisah", "Rohmah",
    "Salamah", "Syarifah", "Umi", "Nur", "Faridah", "Hafsah", "Sholihah", "Azizah", "Nabila", "Salsabila",
    # Sundanese / Bantenese
    "Iis", "Euis", "Neneng", "Enok", "Imas", "Popon", "Ratna", "Tati", "Yeni", "Yanti", "Lilis", "Cucu",
    "Elis", "Entin", "Eneng", "Ai", "Nining", "Oom", "Rohaeni", "Saodah", "Mulyati", "Nurhayati", "Titin",
    "Ineu", "Dedeh", "Eha", "Ela", "Epon", "Kokom", "Nunung", "Ratu", "Tuti", "Wiwin",
    # Javanese / general Indonesian
    "Sri", "Dewi", "Wati", "Lestari", "Rina", "Ani", "Endah", "Fitri", "Indah", "Kartini", "Lina",
    "Mega", "Novi", "Putri", "Rini", "Sari", "Susanti", "Wulan", "Yuli", "Ayu", "Dian", "Intan", "Nadia",
    "Puspita", "Rahayu", "Suryani", "Handayani", "Wahyuni", "Kurniasih", "Maharani", "Anggraini",
)
# Single names common among people born before about 1960.
MALE_OLD_SINGLE: tuple[str, ...] = (
    "Sarmin", "Jumri", "Sanusi", "Marjuki", "Sukarta", "Kasim", "Rasid", "Sainan", "Maryono", "Samsudin",
    "Juhri", "Sarip", "Madsuri", "Rohim", "Suhaemi", "Mursid", "Jahidi", "Saman", "Karta", "Sardi",
)
FEMALE_OLD_SINGLE: tuple[str, ...] = (
    "Rohani", "Saeni", "Juhaeriyah", "Masitoh", "Sarah", "Rukiyah", "Jubaedah", "Saniah", "Sumiati",
    "Maesaroh", "Rumsiah", "Suminah", "Aminah", "Karsih", "Sarinah", "Kuraesin", "Romlah", "Rasminah",
)

DEGREES: tuple[tuple[str, float], ...] = (
    ("S.Pd.", 0.28), ("S.E.", 0.16), ("S.H.", 0.12), ("S.Kom.", 0.1), ("S.T.", 0.08), ("S.Sos.", 0.08),
    ("S.Pd.I.", 0.06), ("M.Pd.", 0.05), ("S.Kep.", 0.04), ("M.M.", 0.02), ("M.Si.", 0.01),
)

# Nicknames people give at a clinic counter instead of their registered name.
NICKNAMES: dict[str, tuple[str, ...]] = {
    "Yusuf": ("Ucup",),
    "Abdullah": ("Dulah", "Abdul"),
    "Abdurrahman": ("Maman", "Rahman"),
    "Rahmat": ("Mamat",),
    "Ahmad": ("Mad", "Amat"),
    "Ismail": ("Mail",),
    "Sulaiman": ("Leman",),
    "Usman": ("Uus",),
    "Iwan": ("Wawan",),
    "Dede": ("Asep",),
    "Hidayat": ("Dayat",),
    "Rizki": ("Kiki",),
    "Fatimah": ("Imah",),
    "Khadijah": ("Ijah",),
    "Aisyah": ("Icah",),
    "Siti": ("Iis", "Neng"),
    "Nurhayati": ("Yati", "Nur"),
    "Halimah": ("Imah",),
    "Rohaeni": ("Eni",),
    "Aminah": ("Minah",),
    "Euis": ("Neng",),
    "Maryam": ("Iyam",),
}


@dataclass(frozen=True, slots=True)
class PersonName:
    """A registered name in its parts; ``full`` is the form Disdukcapil keeps."""

    title: str
    words: tuple[str, ...]
    degree: str

    @property
    def core(self) -> str:
        """The name without title and degree."""
        return " ".join(self.words)

    @property
    def full(self) -> str:
        """Title, core and degree as registered: ``Hj. Siti Aminah, S.Pd.``."""
        name = f"{self.title} {self.core}" if self.title else self.core
        return f"{name}, {self.degree}" if self.degree else name


def _weighted(rng: random.Random, options: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([o for o, _ in options], weights=[w for _, w in options])[0]


def muhammad(rng: random.Random) -> str:
    """One spelling of Muhammad, as often as it is registered."""
    return _weighted(rng, MUHAMMAD_SPELLINGS)


def generate_name(rng: random.Random, sex: str, birth_year: int, age: int) -> PersonName:
    """A registered name for someone of ``sex`` ('L'/'P') born in ``birth_year``, ``age`` now."""
    male = sex == "L"
    if birth_year < 1960 and rng.random() < 0.55:
        words: tuple[str, ...] = (rng.choice(MALE_OLD_SINGLE if male else FEMALE_OLD_SINGLE),)
    else:
        pool = MALE_GIVEN if male else FEMALE_GIVEN
        first: str
        roll = rng.random()
        if male and roll < 0.14:
            first = muhammad(rng)
        elif not male and roll < 0.10:
            first = "Siti"
        elif not male and roll < 0.14:
            first = "Nur"
        else:
            first = rng.choice(pool)
        count = 2 if birth_year < 1990 or rng.random() < 0.55 else 3
        rest = [rng.choice(pool) for _ in range(count - 1)]
        # A repeated word ("Asep Asep") is not a name anyone carries.
        words = tuple(dict.fromkeys([first, *rest]))
        if len(words) == 1:
            words = (first, rng.choice(MALE_OLD_SINGLE if male else FEMALE_OLD_SINGLE))
    if birth_year < 1965 and rng.random() < 0.25:
        words = tuple(old_spelling(w) for w in words)
    title = ""
    if age >= 45 and rng.random() < 0.15:
        title = "H." if male else "Hj."
    degree = ""
    if age >= 24 and rng.random() < 0.075:
        degree = _weighted(rng, DEGREES)
    return PersonName(title, words, degree)


# --- noise agencies apply -------------------------------------------------------------------------

_OLD_SPELLING: dict[str, str] = {"kh": "ch", "u": "oe", "j": "dj", "c": "tj", "y": "j"}
_OLD_SPELLING_PATTERN = re.compile("kh|u|j|c|y")


def old_spelling(word: str) -> str:
    """The Dutch-era spelling of a word: u→oe, j→dj, c→tj, kh→ch, y→j (Yusuf → Joesoef)."""
    # One pass, so the j that y becomes is not turned into dj again.
    out = _OLD_SPELLING_PATTERN.sub(lambda m: _OLD_SPELLING[m.group()], word.lower())
    return out[:1].upper() + out[1:]


def modern_spelling(word: str) -> str:
    """The post-1972 spelling of an old-spelled word: oe→u, dj→j, tj→c, ch→kh."""
    out = word.lower().replace("oe", "u").replace("dj", "j").replace("tj", "c").replace("ch", "kh")
    return out[:1].upper() + out[1:]


def abbreviate_muhammad(name: str, rng: random.Random) -> str:
    """Replace a leading Muhammad (any spelling) with one of its abbreviations."""
    first, sep, rest = name.partition(" ")
    if first.title() in MUHAMMAD_FAMILY and rest:
        return f"{rng.choice(MUHAMMAD_ABBREVIATIONS)} {rest}"
    return name


def nickname(words: tuple[str, ...], rng: random.Random) -> str:
    """What a person might say their name is: a known nickname, or just the first or last word."""
    for word in words:
        if word in NICKNAMES:
            return rng.choice(NICKNAMES[word])
    if len(words) > 1 and rng.random() < 0.5:
        # "Siti" or "Muhammad" alone identify nobody; people give the distinctive word.
        return words[-1] if words[0] in MUHAMMAD_FAMILY or words[0] in ("Siti", "Nur") else words[0]
    return " ".join(words)


_KEYBOARD_NEIGHBOURS: dict[str, str] = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo",
    "j": "hk", "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "w", "r": "et",
    "s": "ad", "t": "ry", "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}


def typo(text: str, rng: random.Random) -> str:
    """One typing mistake: two adjacent letters swapped, a letter dropped, or a neighbour key hit."""
    positions = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(positions) < 3:
        return text
    i = rng.choice(positions[1:-1])
    kind = rng.random()
    if kind < 0.4 and text[i + 1].isalpha():
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind < 0.7:
        return text[:i] + text[i + 1:]
    lower = text[i].lower()
    replacement = rng.choice(_KEYBOARD_NEIGHBOURS.get(lower, "a"))
    return text[:i] + (replacement.upper() if text[i].isupper() else replacement) + text[i + 1:]


def upper(text: str) -> str:
    """How most agency systems store names: all capitals."""
    return text.upper()


def parse_registered(full: str) -> PersonName:
    """Split a registered name (``Hj. Siti Aminah, S.Pd.``) back into title, words and degree."""
    name, _, degree = full.partition(", ")
    title = ""
    first, _, rest = name.partition(" ")
    if first in ("H.", "Hj.") and rest:
        title, name = first, rest
    return PersonName(title, tuple(name.split()), degree)
