"""Checking a NIK (Nomor Induk Kependudukan) and what it says about its holder.

Layout, 16 digits: ``PP KK CC DDMMYY SSSS`` — province, regency/city, district of first
registration, birth date with 40 added to the day for women, serial from 0001. There is no check
digit, so a typo is only caught when the result is malformed or disagrees with the record's own
birth date and sex; that agreement is what makes a NIK usable as linking evidence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from simpul.seed.geography import KECAMATAN, REGION_CODE
from simpul.streams.normalize.dates import normalize_sex

NIK_LENGTH = 16
FEMALE_DAY_OFFSET = 40

# Kemendagri province codes (Aceh 11 to Papua Barat Daya 96). Codes outside this set are typos.
PROVINCE_CODES = frozenset(
    {*range(11, 20), 21, *range(31, 37), *range(51, 54), *range(61, 66), *range(71, 77), 81, 82, *range(91, 97)}
)
# Kota Serang's own district codes: a NIK first issued in 36.73 carries one of them.
KOTA_SERANG_DISTRICTS = frozenset(k.code for k in KECAMATAN)

_SEPARATORS = re.compile(r"[\s.\-]")


class NikStatus(StrEnum):
    """Whether the field held a NIK at all, and a well-formed one."""

    VALID = "valid"
    INVALID = "invalid"  # something was typed, but it cannot be a NIK
    MISSING = "missing"  # nothing, or a placeholder standing for nothing


class NikIssue(StrEnum):
    """Why a NIK is missing, invalid, or disagrees with its record."""

    EMPTY = "empty"
    PLACEHOLDER = "placeholder"  # sixteen zeros, one digit repeated, 1234567890123456 ...
    NOT_DIGITS = "not_digits"
    WRONG_LENGTH = "wrong_length"
    PROVINCE = "unknown_province"
    REGENCY = "invalid_regency"
    DISTRICT = "invalid_district"
    BIRTH_DATE = "invalid_birth_date"
    SERIAL = "invalid_serial"
    BIRTH_DATE_MISMATCH = "birth_date_mismatch"
    SEX_MISMATCH = "sex_mismatch"


_MISMATCHES = frozenset({NikIssue.BIRTH_DATE_MISMATCH, NikIssue.SEX_MISMATCH})


@dataclass(frozen=True, slots=True)
class NikCheck:
    """The verdict on one NIK field, with what a valid NIK decodes to."""

    nik: str | None  # the 16 digits after removing separators; None when missing
    status: NikStatus
    issues: tuple[NikIssue, ...] = ()
    birth_date: date | None = None  # decoded, century inferred (see decode_birth_date)
    sex: str | None = None  # decoded: 'L' or 'P'
    in_region: bool = False  # starts with the expected region prefix (moving keeps the NIK)

    @property
    def is_usable_for_linking(self) -> bool:
        """Valid, and agreeing with the record's birth date and sex wherever those were given."""
        return self.status is NikStatus.VALID and not _MISMATCHES.intersection(self.issues)


def clean_nik(value: object) -> str:
    """The NIK field as text without spaces, dots and dashes (``3673.01 120590 0001``)."""
    return _SEPARATORS.sub("", str(value)) if value is not None else ""


def is_placeholder(digits: str) -> bool:
    """Whether 16 digits are a stand-in for "unknown" rather than someone's number.

    Placeholders: one digit repeated (0000000000000000, 9999999999999999) and runs that count up or
    down (1234567890123456, 0123456789012345, 9876543210987654).
    """
    if not digits:
        return False
    if digits.count(digits[0]) == len(digits):
        return True
    # A real NIK breaks the run within its first digits, so the scan stops at the first other step.
    step = (int(digits[1]) - int(digits[0])) % 10
    return step in (1, 9) and all((int(b) - int(a)) % 10 == step for a, b in zip(digits[1:], digits[2:]))


def decode_birth_date(ddmmyy: str, today: date) -> tuple[date, str] | None:
    """Birth date and sex from the DDMMYY part, or None if it is no date.

    Century: a two-digit year above ``today``'s is from the 1900s, otherwise from the 2000s (a
    NIK is issued after birth, so a birth year cannot lie in the future). This fails only for
    people over a hundred, whose record's own birth date then settles it (see check_nik).
    """
    day, month, year = int(ddmmyy[:2]), int(ddmmyy[2:4]), int(ddmmyy[4:])
    sex = "P" if day > FEMALE_DAY_OFFSET else "L"
    day -= FEMALE_DAY_OFFSET if sex == "P" else 0
    century = 1900 if year > today.year % 100 else 2000
    try:
        return date(century + year, month, day), sex
    except ValueError:
        return None


def _structure_issues(digits: str) -> list[NikIssue]:
    """Issues with the region, district and serial parts of 16 digits."""
    issues: list[NikIssue] = []
    if int(digits[:2]) not in PROVINCE_CODES:
        issues.append(NikIssue.PROVINCE)
    if digits[2:4] == "00":
        issues.append(NikIssue.REGENCY)
    district = digits[4:6]
    if district == "00" or (digits[:4] == REGION_CODE and district not in KOTA_SERANG_DISTRICTS):
        issues.append(NikIssue.DISTRICT)
    if digits[12:] == "0000":
        issues.append(NikIssue.SERIAL)
    return issues


def _agreement_issues(ddmmyy: str, decoded_sex: str, birth_date: date | None, sex: object) -> list[NikIssue]:
    """Whether the record's own birth date and sex agree with what the NIK encodes.

    The birth date is compared on day, month and two-digit year, so the century guess never
    decides a mismatch.
    """
    issues: list[NikIssue] = []
    record_sex = normalize_sex(sex)
    if birth_date is not None:
        day = birth_date.day + (FEMALE_DAY_OFFSET if decoded_sex == "P" else 0)
        if ddmmyy != f"{day:02d}{birth_date.month:02d}{birth_date.year % 100:02d}":
            issues.append(NikIssue.BIRTH_DATE_MISMATCH)
    if record_sex is not None and record_sex != decoded_sex:
        issues.append(NikIssue.SEX_MISMATCH)
    return issues


def check_nik(
    nik: object,
    birth_date: date | None = None,
    sex: object = None,
    region_prefix: str = "36",
    today: date | None = None,
) -> NikCheck:
    """Check a NIK field and, when given, its agreement with the record's birth date and sex.

    ``region_prefix``: the province (``"36"``, Banten) or province and city (``"3673"``) a local
    NIK starts with; a NIK from elsewhere stays valid (people move, the NIK does not) and is only
    marked ``in_region=False``. ``sex``: any code :func:`normalize_sex` knows. ``today``: for the
    century of the decoded birth date (default: the current date).
    """
    digits = clean_nik(nik)
    if digits in ("", "-"):
        return NikCheck(None, NikStatus.MISSING, (NikIssue.EMPTY,))
    # isdigit() alone accepts other scripts' digits ("²", "٣"), which int() then refuses.
    if not (digits.isascii() and digits.isdigit()):
        return NikCheck(digits, NikStatus.INVALID, (NikIssue.NOT_DIGITS,))
    if is_placeholder(digits):
        return NikCheck(None, NikStatus.MISSING, (NikIssue.PLACEHOLDER,))
    if len(digits) != NIK_LENGTH:
        return NikCheck(digits, NikStatus.INVALID, (NikIssue.WRONG_LENGTH,))
    issues = _structure_issues(digits)
    ddmmyy = digits[6:12]
    decoded = decode_birth_date(ddmmyy, today or date.today())
    if decoded is None:
        issues.append(NikIssue.BIRTH_DATE)
    in_region = digits.startswith(region_prefix)
    if issues or decoded is None:
        return NikCheck(digits, NikStatus.INVALID, tuple(issues), in_region=in_region)
    decoded_date, decoded_sex = decoded
    if birth_date is not None and birth_date.year % 100 == decoded_date.year % 100:
        # The record knows the century the two digits leave open (a centenarian, say).
        decoded_date = _in_year(decoded_date, birth_date.year)
    mismatches = _agreement_issues(ddmmyy, decoded_sex, birth_date, sex)
    return NikCheck(digits, NikStatus.VALID, tuple(mismatches), decoded_date, decoded_sex, in_region)


def _in_year(day: date, year: int) -> date:
    """``day`` moved to ``year``, or unchanged if that year lacks it (29 February)."""
    try:
        return day.replace(year=year)
    except ValueError:
        return day
