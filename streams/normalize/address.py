"""Addresses in Kota Serang: RT/RW, kelurahan and kecamatan names, streets and kampung.

Kelurahan and kecamatan are matched to the official list in :mod:`simpul.seed.geography`. A
kelurahan is only identified together with its kecamatan: there are two called Sukawana.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from rapidfuzz import fuzz, process

from simpul.seed.geography import KECAMATAN, KELURAHAN

# Similarity (0-100, rapidfuzz ratio on letters only) a typed name needs to count as an official
# one. 85 takes one typo in a name of seven letters or more ("KARUNDAG" → Karundang) and refuses
# neighbours that merely share a part ("SUKAJAYA" is no "SUKALAKSANA").
MATCH_THRESHOLD = 85.0
MAX_RT_RW = 999

# "RT 002/RW 005", "RT.02 RW.05", "Rt 2 Rw 5", "RT002RW005", "RT:2 / RW:5"
_RT_RW_LABELLED = re.compile(r"\bRT\s*[.:]?\s*(\d{1,3})\s*[/,.\-]?\s*RW\s*[.:]?\s*(\d{1,3})(?!\d)")
# "RT/RW 002/005", "RT/RW: 2/5"
_RT_RW_JOINT = re.compile(r"\bRT\s*/\s*RW\s*[.:]?\s*(\d{1,3})\s*/\s*(\d{1,3})(?!\d)")
# "02/05" on its own, as the last such pair in the text (house numbers come before it).
_RT_RW_BARE = re.compile(r"(?<![\d/])(\d{1,3})\s*/\s*(\d{1,3})(?![\d/])")

_REGION_PREFIX = re.compile(r"^(?:KELURAHAN|KEL|KECAMATAN|KEC|DESA|DS)\b\.?\s*")
_NOT_LETTERS = re.compile(r"[^A-Z]")


class Kelurahan(NamedTuple):
    """An official kelurahan and the kecamatan it lies in (official spellings)."""

    kelurahan: str
    kecamatan: str


def _rt_rw(rt: str, rw: str) -> tuple[str, str] | None:
    """Zero-padded three-digit RT and RW, or None for 0 (no neighbourhood is numbered 0)."""
    rt_number, rw_number = int(rt), int(rw)
    if not (0 < rt_number <= MAX_RT_RW and 0 < rw_number <= MAX_RT_RW):
        return None
    return f"{rt_number:03d}", f"{rw_number:03d}"


def parse_rt_rw(text: str | None) -> tuple[str, str] | None:
    """RT and RW as three-digit strings from any of the ways they are written, e.g. ``("002", "005")``.

    Accepts "RT 002/RW 005", "RT.02 RW.05", "02/05", "Rt 2 Rw 5", "RT002RW005", "RT/RW 2/5",
    alone or inside a free-text address. A bare "a/b" pair counts only when no labelled one exists.
    """
    if not text:
        return None
    upper = text.upper()
    labelled = _RT_RW_LABELLED.search(upper) or _RT_RW_JOINT.search(upper)
    if labelled:
        return _rt_rw(labelled.group(1), labelled.group(2))
    bare = _RT_RW_BARE.findall(upper)
    return _rt_rw(*bare[-1]) if bare else None


def _letters(text: str) -> str:
    """Upper-case letters only: "Kota Baru", "KOTABARU" and "kota-baru" compare equal."""
    return _NOT_LETTERS.sub("", text.upper())


def _strip_region_prefix(text: str) -> str:
    """The name without a leading "Kel.", "Kelurahan", "Kec.", "Desa" ..."""
    return _REGION_PREFIX.sub("", " ".join(text.upper().split()))


_KECAMATAN_BY_LETTERS: dict[str, str] = {_letters(k.name): k.name for k in KECAMATAN}


def normalize_kecamatan(text: str | None) -> str | None:
    """The official kecamatan name ("Cipocok Jaya") for a typed one, or None if none is close."""
    if not text:
        return None
    letters = _letters(_strip_region_prefix(text))
    if not letters:
        return None
    match = process.extractOne(letters, list(_KECAMATAN_BY_LETTERS), scorer=fuzz.ratio, score_cutoff=MATCH_THRESHOLD)
    return _KECAMATAN_BY_LETTERS[match[0]] if match else None


_KELURAHAN_BY_LETTERS: tuple[tuple[str, Kelurahan], ...] = tuple(
    (_letters(name), Kelurahan(name, kecamatan.name)) for kecamatan, name in KELURAHAN
)


def _kelurahan_candidates(letters: str) -> list[Kelurahan]:
    """Every official kelurahan as close to ``letters`` as the best one (several on a tie)."""
    scored = [(fuzz.ratio(letters, official), place) for official, place in _KELURAHAN_BY_LETTERS]
    best = max(score for score, _ in scored)
    if best < MATCH_THRESHOLD:
        return []
    return [place for score, place in scored if score == best]


def normalize_kelurahan(text: str | None, kecamatan: str | None = None) -> Kelurahan | None:
    """The official kelurahan and its kecamatan for a typed name, or None.

    Case, spacing, punctuation and a "Kel."/"Kelurahan"/"Desa" prefix are ignored; a typo is
    forgiven up to :data:`MATCH_THRESHOLD`. When several kelurahan fit equally well (Sukawana is in
    Serang and in Curug), ``kecamatan`` decides; without it, or if it names neither, the answer is
    None rather than a guess. A ``kecamatan`` that disagrees with an unambiguous match does not
    override it (the record's kecamatan may be the wrong field).
    """
    if not text:
        return None
    letters = _letters(_strip_region_prefix(text))
    if not letters:
        return None
    candidates = _kelurahan_candidates(letters)
    if len(candidates) == 1:
        return candidates[0]
    official_kecamatan = normalize_kecamatan(kecamatan)
    in_kecamatan = [c for c in candidates if c.kecamatan == official_kecamatan]
    return in_kecamatan[0] if len(in_kecamatan) == 1 else None


# Street-level words, by their letters, and the full form they stand for.
_STREET_WORDS: dict[str, str] = {
    "JL": "JALAN", "JLN": "JALAN", "JALAN": "JALAN",
    "KP": "KAMPUNG", "KMP": "KAMPUNG", "KAMP": "KAMPUNG", "KAMPUNG": "KAMPUNG",
    "GG": "GANG", "GANG": "GANG",
    "PERUM": "PERUMAHAN", "PERUMAHAN": "PERUMAHAN",
    "KOMP": "KOMPLEK", "KOMPLEK": "KOMPLEK", "KOMPLEKS": "KOMPLEK",
    "LINK": "LINGKUNGAN", "LINGK": "LINGKUNGAN", "LING": "LINGKUNGAN", "LINGKUNGAN": "LINGKUNGAN",
    "BLK": "BLOK", "BLOK": "BLOK", "NO": "NO", "NOMOR": "NO",
}
# From here on a free-text address names the kelurahan or kecamatan, not the street.
_REGION_TAIL = re.compile(r"[,\s]+(?:KELURAHAN|KEL|KECAMATAN|KEC|DESA|DS)\b\.?.*$")
_WORD = re.compile(r"[A-Z0-9]+")


def normalize_street(text: str | None) -> str | None:
    """The street part of an address in one form: upper case, abbreviations spelled out.

    "Jl./Jln./Jalan" → JALAN, "Kp./Kampung" → KAMPUNG, "Gg." → GANG, "Perum" → PERUMAHAN,
    "Link." → LINGKUNGAN, "Komp." → KOMPLEK, "Blk" → BLOK. An RT/RW part and a trailing
    ", Kel. …" are removed (they are parsed separately); punctuation goes.
    "Kp. Kaloran RT 002/RW 005, Kel. Cipare" → "KAMPUNG KALORAN".
    """
    if not text:
        return None
    upper = _REGION_TAIL.sub("", text.upper())
    for pattern in (_RT_RW_LABELLED, _RT_RW_JOINT):
        upper = pattern.sub(" ", upper)
    if not _RT_RW_LABELLED.search(text.upper()):
        upper = _RT_RW_BARE.sub(" ", upper)
    words = [_STREET_WORDS.get(word, word) for word in _WORD.findall(upper)]
    return " ".join(words) or None
