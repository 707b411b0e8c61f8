"""Dates and sex codes as the agencies store them, in one form.

Agencies hand dates over as ``date``/``datetime`` values (from CDC) or as strings in several layouts,
and legacy MySQL tables hold the zero date ``0000-00-00`` where nobody knew the date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

# Years a birth or registration date can have; outside them the value is a typing error.
EARLIEST_YEAR = 1880
LATEST_YEAR = 2100


class DateIssue(StrEnum):
    """Why a value gave no date."""

    MISSING = "missing"  # None, empty, '-'
    ZERO_DATE = "zero_date"  # 0000-00-00 and the like: a legacy "unknown"
    UNPARSEABLE = "unparseable"  # no layout this module knows
    IMPOSSIBLE = "impossible_date"  # a known layout, but no such day (31-02-1990) or a far-off year


@dataclass(frozen=True, slots=True)
class ParsedDate:
    """A date, or why there is none."""

    value: date | None
    issue: DateIssue | None = None


_MISSING_TEXT = frozenset({"", "-", "--", "NULL", "NONE", "N/A"})
_INDONESIAN_MONTHS: dict[str, int] = {
    "JAN": 1, "JANUARI": 1, "FEB": 2, "PEB": 2, "FEBRUARI": 2, "PEBRUARI": 2, "MAR": 3, "MARET": 3,
    "APR": 4, "APRIL": 4, "MEI": 5, "JUN": 6, "JUNI": 6, "JUL": 7, "JULI": 7, "AGT": 8, "AGU": 8,
    "AGS": 8, "AGUSTUS": 8, "SEP": 9, "SEPT": 9, "SEPTEMBER": 9, "OKT": 10, "OKTOBER": 10,
    "NOV": 11, "NOP": 11, "NOVEMBER": 11, "NOPEMBER": 11, "DES": 12, "DESEMBER": 12,
}
# Year first (ISO, also with a time after it), day first with - / or . (Indonesian order), compact.
_YEAR_FIRST = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T].*)?")
_DAY_FIRST = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})(?:\s.*)?")
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_MONTH_NAME = re.compile(r"(\d{1,2})[\s-]+([A-Z]+)\.?[\s-]+(\d{4})")


def _make_date(year: int, month: int, day: int) -> ParsedDate:
    """A calendar date from its parts; all-zero parts are the legacy "unknown"."""
    if year == 0 or month == 0 or day == 0:
        return ParsedDate(None, DateIssue.ZERO_DATE)
    if not EARLIEST_YEAR <= year <= LATEST_YEAR:
        return ParsedDate(None, DateIssue.IMPOSSIBLE)
    try:
        return ParsedDate(date(year, month, day))
    except ValueError:
        return ParsedDate(None, DateIssue.IMPOSSIBLE)


def parse_date(value: object) -> ParsedDate:
    """A date from a ``date``, ``datetime`` or string in the agencies' layouts.

    Strings: ``YYYY-MM-DD`` (optionally with a time), ``DD-MM-YYYY``, ``DD/MM/YYYY``,
    ``DD.MM.YYYY``, ``YYYY/MM/DD``, ``YYYYMMDD`` and ``17 Agustus 1945``. A day-first layout is
    always read day first, as Indonesians write it (``03/04/1990`` is 3 April).
    """
    if value is None:
        return ParsedDate(None, DateIssue.MISSING)
    if isinstance(value, datetime):
        return ParsedDate(value.date())
    if isinstance(value, date):
        return ParsedDate(value)
    if not isinstance(value, str):
        return ParsedDate(None, DateIssue.UNPARSEABLE)
    text = value.strip().upper()
    if text in _MISSING_TEXT:
        return ParsedDate(None, DateIssue.MISSING)
    if match := _YEAR_FIRST.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
        return _make_date(year, month, day)
    if match := _DAY_FIRST.fullmatch(text):
        day, month, year = (int(g) for g in match.groups())
        return _make_date(year, month, day)
    if match := _COMPACT.fullmatch(text):
        year, month, day = (int(g) for g in match.groups())
        return _make_date(year, month, day)
    if (match := _MONTH_NAME.fullmatch(text)) and match.group(2) in _INDONESIAN_MONTHS:
        return _make_date(int(match.group(3)), _INDONESIAN_MONTHS[match.group(2)], int(match.group(1)))
    return ParsedDate(None, DateIssue.UNPARSEABLE)


_SEX_CODES: dict[str, str] = {
    "L": "L", "LK": "L", "LAKI": "L", "LAKI-LAKI": "L", "LAKILAKI": "L", "LAKI LAKI": "L", "PRIA": "L",
    "M": "L", "MALE": "L", "1": "L",
    "P": "P", "PR": "P", "PEREMPUAN": "P", "WANITA": "P", "F": "P", "FEMALE": "P", "W": "P", "2": "P",
}


def normalize_sex(value: object) -> str | None:
    """``'L'`` (male) or ``'P'`` (female) from any agency code, or None when unknown.

    Knows L/P, LAKI-LAKI/PEREMPUAN, PRIA/WANITA, M/F, and 1/2 (SIAK's numeric codes).
    """
    if value is None:
        return None
    text = " ".join(str(value).strip().upper().replace(".", "").split())
    return _SEX_CODES.get(text)
