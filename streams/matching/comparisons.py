"""Comparisons: how two canonical records agree on one aspect, as an ordered list of levels.

Modelled on Splink's comparison library. A comparison maps a pair of records to the index of the
first level that applies. Level 0 is always the *null* level (either side missing): it carries no
evidence, so the model gives it weight 0. The remaining levels run from the strongest agreement to
``else`` (everything else), and each gets its own m and u probability in the model.

Records are plain mappings or objects with attributes (a dataclass); a missing attribute, ``None``,
an empty string or an empty sequence all count as missing. Values are expected to be normalised
already (``streams/normalize``): names upper-case, dates as :class:`datetime.date`, phones as digits.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, ClassVar

from rapidfuzz import fuzz
from rapidfuzz.distance import OSA, JaroWinkler

NULL_LEVEL = 0
"""Index of the null level in every comparison."""


_SIZED = frozenset({str, list, tuple, set, frozenset})


def field_value(record: Any, field: str) -> Any:
    """Return ``record.field`` (object) or ``record[field]`` (mapping), ``None`` when missing or empty."""
    # Attribute access first: it is the hot path (canonical records), and an ABC check is not free.
    try:
        value = getattr(record, field)
    except AttributeError:
        value = record.get(field) if isinstance(record, Mapping) else None
    if value is None or (value.__class__ in _SIZED and not value):
        return None
    return value


@dataclass(frozen=True)
class ComparisonLevel:
    """One level of a comparison: a label a data steward can read, and whether it is the null level."""

    label: str
    is_null: bool = False
    tf_adjusted: bool = False


class Comparison(ABC):
    """A named comparison with ordered levels; ``level(a, b)`` gives the index of the first that applies.

    Subclasses implement :meth:`_compare` for two present values and :meth:`_params` for
    serialisation; ``type_name`` is the name settings use to build them (:func:`comparison_from_dict`).
    """

    type_name: ClassVar[str]
    # Whether comparing two values costs a string similarity rather than a few equality tests.
    costly: ClassVar[bool] = False
    # Term-frequency settings; only comparisons with tf-adjusted levels use them.
    tf_weight: float = 1.0
    tf_minimum_u: float = 0.0

    def __init__(self, name: str, field: str, labels: Iterable[str], tf_levels: Iterable[int] = ()) -> None:
        self.name = name
        self.field = field
        tf = set(tf_levels)
        self.levels: tuple[ComparisonLevel, ...] = (ComparisonLevel("null", is_null=True),) + tuple(
            ComparisonLevel(label, tf_adjusted=index in tf) for index, label in enumerate(labels, start=1)
        )

    @property
    def labels(self) -> tuple[str, ...]:
        """The level labels in order, ``null`` first."""
        return tuple(level.label for level in self.levels)

    def level(self, a: Any, b: Any) -> int:
        """Index of the first level that applies to records ``a`` and ``b`` (0 when either is missing)."""
        return self.level_of_values(self.value(a), self.value(b))

    def level_of_values(self, va: Any, vb: Any) -> int:
        """:meth:`level` from the two records' :meth:`value`, for callers that keep the values per record."""
        if va is None or vb is None:
            return NULL_LEVEL
        return self._compare(va, vb)

    def value(self, record: Any) -> Any:
        """The value compared, ``None`` when missing; subclasses parse or combine fields here."""
        return field_value(record, self.field)

    @abstractmethod
    def _compare(self, va: Any, vb: Any) -> int:
        """Level index (>= 1) for two present values."""

    def _params(self) -> dict[str, Any]:
        return {"field": self.field}

    def to_dict(self) -> dict[str, Any]:
        """Settings form: ``{"type": ..., "name": ..., **parameters}``."""
        return {"type": self.type_name, "name": self.name, **self._params()}

    # Term-frequency adjustment: only comparisons that declare tf-adjusted levels override these.
    def tf_tokens(self, a: Any, b: Any, level: int) -> tuple[str, ...] | None:
        """The agreeing values whose rarity adjusts the weight at ``level``; ``None`` when not adjusted."""
        return None

    def tf_source_tokens(self, record: Any) -> tuple[str, ...]:
        """The values a record contributes to the term-frequency table of this comparison."""
        return ()

    @property
    def tf_adjusted(self) -> bool:
        """Whether any level of this comparison is term-frequency adjusted."""
        return any(level.tf_adjusted for level in self.levels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class ExactMatch(Comparison):
    """Levels: null / ``exact`` / ``else``. For sex, KK number, any code-like field."""

    type_name = "ExactMatch"

    def __init__(self, field: str, name: str | None = None) -> None:
        super().__init__(name or field, field, ("exact", "else"))

    def _compare(self, va: Any, vb: Any) -> int:
        return 1 if va == vb else 2


class NameComparison(Comparison):
    """Full-name comparison: exact, Jaro-Winkler thresholds, and token-set agreement.

    Levels (default thresholds ``(0.95, 0.88)``)::

        null / exact / jaro_winkler>=0.95 / token_set / jaro_winkler>=0.88 / else

    ``token_set`` catches the Indonesian cases Jaro-Winkler on the whole string misses: the same
    tokens in another order (``AMINAH SITI``) and a missing middle token (``SITI AMINAH`` vs
    ``SITI NUR AMINAH``): one side's tokens all appear on the other, with at least
    ``min_set_tokens`` tokens on both sides so a lone ``SITI`` does not count.

    ``exact`` and ``token_set`` are term-frequency adjusted when ``tf_adjustment`` is on: the
    agreeing tokens' frequency replaces the average u, so ``SITI`` weighs less than a rare name.
    Tokens come from ``tokens_field`` (the normaliser's ``name_tokens``) or, failing that, from
    splitting ``field`` on whitespace.
    """

    type_name = "NameComparison"
    costly = True

    def __init__(
        self,
        field: str = "name",
        thresholds: Iterable[float] = (0.95, 0.88),
        *,
        name: str | None = None,
        tokens_field: str | None = "name_tokens",
        min_set_tokens: int = 2,
        tf_adjustment: bool = True,
        tf_weight: float = 1.0,
        tf_minimum_u: float = 1e-6,
    ) -> None:
        self.thresholds = tuple(sorted((float(t) for t in thresholds), reverse=True))
        if not self.thresholds or not all(0.0 < t <= 1.0 for t in self.thresholds):
            raise ValueError("NameComparison thresholds must be in (0, 1]")
        self.tokens_field = tokens_field
        self.min_set_tokens = min_set_tokens
        self.tf_weight = tf_weight
        self.tf_minimum_u = tf_minimum_u
        labels = ["exact", f"jaro_winkler>={self.thresholds[0]:g}", "token_set"]
        labels += [f"jaro_winkler>={t:g}" for t in self.thresholds[1:]]
        labels.append("else")
        # Level 1 is exact, level 3 the token set; both are the agreements tf adjustment applies to.
        super().__init__(name or field, field, labels, tf_levels=(1, 3) if tf_adjustment else ())

    def value(self, record: Any) -> tuple[str, frozenset[str]] | None:
        """The full name and its set of tokens, ``None`` when the record has neither."""
        full = field_value(record, self.field)
        tokens = field_value(record, self.tokens_field) if self.tokens_field else None
        if full is None and tokens is None:
            return None
        if full is None:
            full = " ".join(tokens)
        if tokens is None:
            tokens = full.split()
        return full, frozenset(tokens)

    def _compare(self, va: tuple[str, frozenset[str]], vb: tuple[str, frozenset[str]]) -> int:
        full_a, tokens_a = va
        full_b, tokens_b = vb
        if full_a == full_b:
            return 1
        # Only the thresholds matter, so below the lowest one rapidfuzz may stop early (and give 0).
        similarity = JaroWinkler.similarity(full_a, full_b, score_cutoff=self.thresholds[-1])
        if similarity >= self.thresholds[0]:
            return 2
        if self._token_set_agrees(tokens_a, tokens_b):
            return 3
        for offset, threshold in enumerate(self.thresholds[1:]):
            if similarity >= threshold:
                return 4 + offset
        return len(self.levels) - 1

    def _token_set_agrees(self, tokens_a: frozenset[str], tokens_b: frozenset[str]) -> bool:
        if min(len(tokens_a), len(tokens_b)) < self.min_set_tokens:
            return False
        # token_set_ratio is 100 exactly when one token set contains the other (order ignored).
        return fuzz.token_set_ratio(" ".join(sorted(tokens_a)), " ".join(sorted(tokens_b))) == 100.0

    def tf_tokens(self, a: Any, b: Any, level: int) -> tuple[str, ...] | None:
        """The tokens both names share, at the exact and token-set levels."""
        if level >= len(self.levels) or not self.levels[level].tf_adjusted:
            return None
        va = self.value(a)
        vb = self.value(b)
        if va is None or vb is None:
            return None
        return tuple(sorted(va[1] & vb[1]))

    def tf_source_tokens(self, record: Any) -> tuple[str, ...]:
        """A record's distinct name tokens."""
        value = self.value(record)
        return tuple(sorted(value[1])) if value else ()

    def _params(self) -> dict[str, Any]:
        return {
            "field": self.field,
            "thresholds": list(self.thresholds),
            "tokens_field": self.tokens_field,
            "min_set_tokens": self.min_set_tokens,
            "tf_adjustment": self.tf_adjusted,
            "tf_weight": self.tf_weight,
            "tf_minimum_u": self.tf_minimum_u,
        }


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            return None
    return None


class DateComparison(Comparison):
    """Birth-date comparison. Levels: null / ``exact`` / ``typo`` / ``else``.

    ``typo`` covers the errors clerks make typing a date: one digit of ``YYYYMMDD`` differs
    (which includes a year off by one digit), day and month swapped, or the year off by one with
    day and month equal. Accepts :class:`date`, :class:`datetime` or ISO strings; anything
    unparseable counts as missing.
    """

    type_name = "DateComparison"

    def __init__(self, field: str = "birth_date", name: str | None = None) -> None:
        super().__init__(name or field, field, ("exact", "typo", "else"))

    def value(self, record: Any) -> date | None:
        """The date (parsed from ISO text), ``None`` when missing or unparseable."""
        return _as_date(field_value(record, self.field))

    def _compare(self, va: date, vb: date) -> int:
        if va == vb:
            return 1
        if va.day == vb.month and va.month == vb.day and va.year == vb.year:
            return 2
        if va.month == vb.month and va.day == vb.day and abs(va.year - vb.year) == 1:
            return 2
        # Each of year, month and day that differs holds at least one differing digit of YYYYMMDD:
        # with two of them differing the dates cannot be one digit apart, and most pairs end here.
        if (va.year != vb.year) + (va.month != vb.month) + (va.day != vb.day) > 1:
            return 3
        apart = _digits_apart(va.year, vb.year) + _digits_apart(va.month, vb.month) + _digits_apart(va.day, vb.day)
        return 2 if apart == 1 else 3


def _digits_apart(x: int, y: int) -> int:
    """In how many decimal digits two non-negative numbers differ, both padded to the same width with zeros."""
    count = 0
    while x != y:
        x, digit_x = divmod(x, 10)
        y, digit_y = divmod(y, 10)
        count += digit_x != digit_y
    return count


class NikComparison(Comparison):
    """NIK comparison. Levels: null / ``exact`` / ``one_edit`` / ``else``.

    ``one_edit`` is an optimal-string-alignment distance of 1: one substituted digit, two adjacent
    digits transposed, or one digit dropped or doubled, the typos agency systems show. Placeholders
    and KK numbers typed into the field should be removed by the normaliser (they land in ``else``).
    """

    type_name = "NikComparison"

    def __init__(self, field: str = "nik", name: str | None = None) -> None:
        super().__init__(name or field, field, ("exact", "one_edit", "else"))

    def _compare(self, va: str, vb: str) -> int:
        if va == vb:
            return 1
        return 2 if OSA.distance(va, vb, score_cutoff=1) <= 1 else 3


class PhoneComparison(Comparison):
    """Phone comparison. Levels: null / ``exact`` / ``last_8_digits`` / ``else``.

    Comparing the last eight digits absorbs prefix differences (``0812...`` vs ``62812...``) that
    survive normalisation. Non-digits are ignored; a number shorter than eight digits is missing.
    """

    type_name = "PhoneComparison"

    def __init__(self, field: str = "phone", name: str | None = None, suffix_digits: int = 8) -> None:
        self.suffix_digits = suffix_digits
        super().__init__(name or field, field, ("exact", f"last_{suffix_digits}_digits", "else"))

    def value(self, record: Any) -> str | None:
        """The number's digits, ``None`` when fewer than ``suffix_digits``."""
        raw = field_value(record, self.field)
        if raw is None:
            return None
        digits = "".join(ch for ch in str(raw) if ch.isdigit())
        return digits if len(digits) >= self.suffix_digits else None

    def _compare(self, va: str, vb: str) -> int:
        if va == vb:
            return 1
        return 2 if va[-self.suffix_digits :] == vb[-self.suffix_digits :] else 3

    def _params(self) -> dict[str, Any]:
        return {"field": self.field, "suffix_digits": self.suffix_digits}


class KelurahanComparison(Comparison):
    """Address comparison at the neighbourhood scale.

    Levels: null / ``same_rt_rw`` (same kelurahan, RT and RW) / ``same_kelurahan`` / ``else``.
    Null when the kelurahan is missing on either side; a missing RT or RW only stops the first level.
    """

    type_name = "KelurahanComparison"

    def __init__(
        self, field: str = "kelurahan", rt_field: str = "rt", rw_field: str = "rw", name: str | None = None
    ) -> None:
        self.rt_field = rt_field
        self.rw_field = rw_field
        super().__init__(name or field, field, ("same_rt_rw", "same_kelurahan", "else"))

    def value(self, record: Any) -> tuple[Any, Any, Any] | None:
        """Kelurahan, RT and RW, ``None`` without a kelurahan."""
        kelurahan = field_value(record, self.field)
        if kelurahan is None:
            return None
        return kelurahan, field_value(record, self.rt_field), field_value(record, self.rw_field)

    def _compare(self, va: tuple[Any, Any, Any], vb: tuple[Any, Any, Any]) -> int:
        if va[0] != vb[0]:
            return 3
        if va[1] is not None and va[2] is not None and va[1:] == vb[1:]:
            return 1
        return 2

    def _params(self) -> dict[str, Any]:
        return {"field": self.field, "rt_field": self.rt_field, "rw_field": self.rw_field}


def match_values(comparisons: Sequence[Comparison], record: Any) -> tuple[Any, ...]:
    """Each comparison's :meth:`~Comparison.value` for ``record``: all a comparison vector reads from it.

    A record is compared with many others; keeping these spares parsing it again for every pair.
    """
    return tuple(c.value(record) for c in comparisons)


def vector_of_values(comparisons: Sequence[Comparison], va: Sequence[Any], vb: Sequence[Any]) -> tuple[int, ...]:
    """The comparison vector of two records from their :func:`match_values`."""
    return tuple(c.level_of_values(x, y) for c, x, y in zip(comparisons, va, vb))


COMPARISON_TYPES: dict[str, type[Comparison]] = {
    cls.type_name: cls
    for cls in (ExactMatch, NameComparison, DateComparison, NikComparison, PhoneComparison, KelurahanComparison)
}


def comparison_from_dict(spec: Mapping[str, Any]) -> Comparison:
    """Build a comparison from its settings form (``{"type": "NameComparison", "field": ..., ...}``)."""
    params = dict(spec)
    type_name = params.pop("type")
    try:
        cls = COMPARISON_TYPES[type_name]
    except KeyError:
        raise ValueError(f"unknown comparison type {type_name!r}; known: {sorted(COMPARISON_TYPES)}") from None
    return cls(**params)


class TermFrequencies:
    """How often each value (name token) occurs, for Splink-style term-frequency adjustment.

    For an agreement on specific tokens, ``u`` (the chance two random records agree) is the
    product of the tokens' relative frequencies, floored at ``minimum_u`` so one rare token
    cannot outweigh everything else. Tokens never seen count once (the record itself).
    Stored as counts so the table can be serialised and updated as records arrive.
    """

    # Distinct token sets whose u is kept; the memo starts again past this many.
    memo_size = 200_000

    def __init__(self, counts: Mapping[str, int] | None = None, total: int = 0) -> None:
        self.counts: Counter[str] = Counter(counts or {})
        self.total = total
        # u by (tokens, floor): the same few names are scored again with every change near them.
        self._u: dict[tuple[tuple[str, ...], float], float] = {}

    @classmethod
    def from_records(cls, records: Iterable[Any], comparison: Comparison) -> TermFrequencies:
        """Count the tokens ``comparison`` contributes from each record (each record counted once)."""
        table = cls()
        for record in records:
            table.add(comparison.tf_source_tokens(record))
        return table

    def add(self, tokens: Iterable[str]) -> None:
        """Count one record's tokens."""
        self.total += 1
        self.counts.update(tokens)
        self._u.clear()

    def frequency(self, token: str) -> float:
        """Share of records carrying ``token`` (at least one record's worth)."""
        if self.total == 0:
            return 1.0
        return max(self.counts.get(token, 0), 1) / self.total

    def u_value(self, tokens: Iterable[str], minimum_u: float) -> float:
        """Chance a random record agrees on all ``tokens``, assuming tokens independent, floored."""
        key = (tuple(tokens), minimum_u)
        u = self._u.get(key)
        if u is None:
            if len(self._u) >= self.memo_size:
                self._u.clear()
            u = self._u[key] = max(math.exp(sum(math.log(self.frequency(token)) for token in key[0])), minimum_u)
        return u

    def to_dict(self) -> dict[str, Any]:
        """Serialisable form: total records and per-token counts."""
        return {"total": self.total, "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TermFrequencies:
        """Inverse of :meth:`to_dict`."""
        return cls(data.get("counts", {}), int(data.get("total", 0)))
