"""Pure normalisers of agency person fields: names, NIKs, addresses, phones, dates and sex codes.

Stream processors use these to bring each agency's person records into the canonical person record
before entity resolution. Every function is pure (no I/O, no logging): personal data never leaves
the value returned.
"""

from simpul.streams.normalize.address import (
    Kelurahan,
    normalize_kecamatan,
    normalize_kelurahan,
    normalize_street,
    parse_rt_rw,
)
from simpul.streams.normalize.dates import DateIssue, ParsedDate, normalize_sex, parse_date
from simpul.streams.normalize.names import NormalizedName, modern_token, name_key, normalize_name, phonetic_key
from simpul.streams.normalize.nik import NikCheck, NikIssue, NikStatus, check_nik
from simpul.streams.normalize.phone import normalize_phone

__all__ = [
    "DateIssue",
    "Kelurahan",
    "NikCheck",
    "NikIssue",
    "NikStatus",
    "NormalizedName",
    "ParsedDate",
    "check_nik",
    "modern_token",
    "name_key",
    "normalize_kecamatan",
    "normalize_kelurahan",
    "normalize_name",
    "normalize_phone",
    "normalize_sex",
    "normalize_street",
    "parse_date",
    "parse_rt_rw",
    "phonetic_key",
]
