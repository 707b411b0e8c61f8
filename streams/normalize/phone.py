"""Indonesian mobile numbers in one form: ``62`` followed by the national number (``62812…``).

Length rule: an Indonesian mobile number written nationally is ``08`` plus 8 to 11 more digits,
10 to 13 digits in all (the operators' prefixes 0811 … 0899 and 6 to 9 subscriber digits). Without
the trunk ``0`` that is 9 to 12 digits starting with 8, which follow the country code ``62``.
Landlines (Serang's area code 0254 …) are not mobile and give None: only mobiles identify a person.
"""

from __future__ import annotations

import re

COUNTRY_CODE = "62"
MIN_NATIONAL_DIGITS = 9  # without the leading 0: 8xx plus at least 6 digits
MAX_NATIONAL_DIGITS = 12

_FORMATTING = re.compile(r"[\s\-.()/]")


def _national_number(digits: str) -> str:
    """The number without international prefix, country code or trunk zero."""
    for prefix in ("00" + COUNTRY_CODE, COUNTRY_CODE, "0"):
        if digits.startswith(prefix):
            return digits[len(prefix):]
    return digits


def normalize_phone(text: str | None) -> str | None:
    """``62`` + national number for a mobile number written any common way, else None.

    Accepts ``08…``, ``62…``, ``+62…``, ``0062…`` and ``8…`` (a spreadsheet dropped the 0), with
    spaces, dashes, dots and parentheses: ``+62 812-3456-7890`` → ``6281234567890``.
    """
    if not text:
        return None
    compact = _FORMATTING.sub("", str(text))
    digits = compact.removeprefix("+")
    if not digits.isdigit():
        return None
    national = _national_number(digits)
    if not national.startswith("8") or not MIN_NATIONAL_DIGITS <= len(national) <= MAX_NATIONAL_DIGITS:
        return None
    return COUNTRY_CODE + national
