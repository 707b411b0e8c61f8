"""The Fellegi-Sunter model: per-comparison, per-level m and u probabilities and a prior.

For a pair with comparison levels ``l_1..l_k`` the match weight (log2 Bayes factor) is::

    log2(lambda / (1 - lambda)) + sum_j log2(m_j[l_j] / u_j[l_j])

where ``m`` is the chance of that level among true matches, ``u`` among non-matches, and the
null level contributes 0. Term-frequency adjusted levels add ``tf_weight * log2(u_exact / u_tf)``
(Splink's adjustment): ``u_tf`` is how often the agreeing tokens occur, so agreement on a rare
name counts for more than agreement on ``SITI``. The probability is ``2^w / (1 + 2^w)``; the
settings' thresholds turn it into ``link`` / ``review`` / ``new``.

Every score keeps its per-comparison contributions with level labels: that is the explanation a
data steward reads when asked why two records were linked. The model serialises to a dict
(settings plus estimated parameters and term frequencies) so estimates are stored and reported.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from .comparisons import NULL_LEVEL, Comparison, TermFrequencies, match_values, vector_of_values
from .settings import MatchSettings

_PROBABILITY_FLOOR = 1e-12  # keeps log2 finite when an estimate reaches 0 or 1


class Outcome(StrEnum):
    """What to do with a scored pair."""

    LINK = "link"
    REVIEW = "review"
    NEW = "new"


@dataclass(frozen=True)
class Contribution:
    """One comparison's part in a score: the level reached and the weight it added (bits)."""

    comparison: str
    level: int
    label: str
    m: float | None
    u: float | None
    weight: float
    tf_adjustment: float = 0.0


@dataclass(frozen=True)
class MatchScore:
    """A scored pair: total weight (log2 Bayes factor), probability, outcome and the explanation."""

    weight: float
    probability: float
    outcome: Outcome
    prior_weight: float
    contributions: tuple[Contribution, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; contains level labels and numbers only, never record values."""
        return {
            "weight": self.weight,
            "probability": self.probability,
            "outcome": self.outcome.value,
            "prior_weight": self.prior_weight,
            "contributions": [asdict(c) for c in self.contributions],
        }


def probability_from_weight(weight: float) -> float:
    """``2^w / (1 + 2^w)`` computed without overflow."""
    if weight >= 0:
        return 1.0 / (1.0 + 2.0 ** (-weight))
    odds = 2.0**weight
    return odds / (1.0 + odds)


def default_m(levels: int) -> list[float]:
    """Starting m for ``levels`` non-null levels: most true matches agree exactly."""
    if levels == 2:
        return [0.9, 0.1]
    middle = 0.25 / (levels - 2)
    return [0.7] + [middle] * (levels - 2) + [0.05]


def default_u(levels: int) -> list[float]:
    """Starting u for ``levels`` non-null levels: most random pairs land in ``else``."""
    if levels == 2:
        return [0.05, 0.95]
    middle = 0.09 / (levels - 2)
    return [0.01] + [middle] * (levels - 2) + [0.9]


def _clamp(p: float) -> float:
    return min(max(p, _PROBABILITY_FLOOR), 1.0)


class FellegiSunterModel:
    """Comparisons from settings plus their estimated parameters.

    ``m[j]`` and ``u[j]`` list probabilities for comparison ``j``'s non-null levels (level ``l``
    at position ``l - 1``). Start values come from :func:`default_m` / :func:`default_u` and
    the settings' prior until :mod:`~simpul.streams.matching.em` estimates them.
    """

    def __init__(
        self,
        settings: MatchSettings,
        m: Sequence[Sequence[float]] | None = None,
        u: Sequence[Sequence[float]] | None = None,
        lambda_: float | None = None,
        term_frequencies: Mapping[str, TermFrequencies] | None = None,
    ) -> None:
        self.settings = settings
        self.comparisons: list[Comparison] = settings.build_comparisons()
        self.blocking_rules = settings.build_blocking_rules()
        sizes = [len(c.levels) - 1 for c in self.comparisons]
        self.m = [list(x) for x in m] if m is not None else [default_m(k) for k in sizes]
        self.u = [list(x) for x in u] if u is not None else [default_u(k) for k in sizes]
        for name, table in (("m", self.m), ("u", self.u)):
            if [len(row) for row in table] != sizes:
                raise ValueError(f"{name} must give one probability per non-null level: sizes {sizes}")
        self.lambda_ = settings.prior if lambda_ is None else lambda_
        self.term_frequencies: dict[str, TermFrequencies] = dict(term_frequencies or {})
        self._refresh_weights()

    def _refresh_weights(self) -> None:
        # Level weights are looked up per pair, so they are computed once per parameter change.
        self._weights = [
            [0.0] + [math.log2(_clamp(mj) / _clamp(uj)) for mj, uj in zip(m_row, u_row)]
            for m_row, u_row in zip(self.m, self.u)
        ]
        self.prior_weight = math.log2(_clamp(self.lambda_) / _clamp(1.0 - self.lambda_))
        # A level's contribution is the same for every pair but where a term-frequency adjustment
        # applies: made once here, :meth:`score` builds only those (a third of its time went to them).
        self._contributions = [
            [Contribution(c.name, NULL_LEVEL, c.levels[NULL_LEVEL].label, None, None, 0.0)]
            + [Contribution(c.name, level, c.levels[level].label, m_row[level - 1], u_row[level - 1], weights[level])
               for level in range(1, len(c.levels))]
            for c, m_row, u_row, weights in zip(self.comparisons, self.m, self.u, self._weights)
        ]

    def set_parameters(self, m: Sequence[Sequence[float]], u: Sequence[Sequence[float]], lambda_: float) -> None:
        """Replace the parameters (e.g. with EM estimates)."""
        self.m = [list(row) for row in m]
        self.u = [list(row) for row in u]
        self.lambda_ = lambda_
        self._refresh_weights()

    def build_term_frequencies(self, records: Iterable[Any]) -> None:
        """Count tokens for every tf-adjusted comparison from ``records``."""
        records = list(records)
        for comparison in self.comparisons:
            if comparison.tf_adjusted:
                self.term_frequencies[comparison.name] = TermFrequencies.from_records(records, comparison)

    def vector(self, a: Any, b: Any) -> tuple[int, ...]:
        """The comparison vector: each comparison's level index for the pair."""
        return tuple(c.level(a, b) for c in self.comparisons)

    def match_values(self, record: Any) -> tuple[Any, ...]:
        """What this model's comparisons read from ``record`` (:func:`.comparisons.match_values`), to keep per record."""
        return match_values(self.comparisons, record)

    def vector_of_values(self, va: Sequence[Any], vb: Sequence[Any]) -> tuple[int, ...]:
        """:meth:`vector` from the two records' :meth:`match_values`."""
        return vector_of_values(self.comparisons, va, vb)

    @property
    def level_weights(self) -> list[list[float]]:
        """Per comparison, the weight of each level without term-frequency adjustment (the null level's is 0)."""
        return self._weights

    def weight_of_vector(self, vector: Sequence[int]) -> float:
        """Total match weight of a comparison vector, without term-frequency adjustment."""
        return self.prior_weight + sum(w[level] for w, level in zip(self._weights, vector))

    def outcome(self, probability: float) -> Outcome:
        """``link`` / ``review`` / ``new`` by the settings' thresholds."""
        thresholds = self.settings.thresholds
        if probability >= thresholds.link:
            return Outcome.LINK
        if probability >= thresholds.review:
            return Outcome.REVIEW
        return Outcome.NEW

    def score(self, a: Any, b: Any, vector: Sequence[int] | None = None) -> MatchScore:
        """Score a pair of records: weight, probability, outcome and per-comparison contributions.

        ``vector``: the pair's comparison levels when the caller has them already (see :meth:`vector`).
        """
        total = self.prior_weight
        contributions = []
        for j, comparison in enumerate(self.comparisons):
            level = vector[j] if vector is not None else comparison.level(a, b)
            fixed = self._contributions[j][level]
            if level != NULL_LEVEL:
                adjustment = self._tf_adjustment(j, comparison, a, b, level)
                if adjustment:
                    fixed = Contribution(fixed.comparison, level, fixed.label, fixed.m, fixed.u, fixed.weight + adjustment, adjustment)
                total += fixed.weight
            contributions.append(fixed)
        probability = probability_from_weight(total)
        return MatchScore(total, probability, self.outcome(probability), self.prior_weight, tuple(contributions))

    def _tf_adjustment(self, j: int, comparison: Comparison, a: Any, b: Any, level: int) -> float:
        table = self.term_frequencies.get(comparison.name)
        if table is None or not comparison.levels[level].tf_adjusted:
            return 0.0
        tokens = comparison.tf_tokens(a, b, level)
        if not tokens:
            return 0.0
        # Splink's form: the exact level's average u is replaced by the agreeing value's own u.
        u_exact = _clamp(self.u[j][0])
        u_tf = _clamp(table.u_value(tokens, comparison.tf_minimum_u))
        return comparison.tf_weight * math.log2(u_exact / u_tf)

    def parameters(self) -> dict[str, Any]:
        """The estimated parameters with level labels and per-level weights, for storing and reporting."""
        return {
            "lambda": self.lambda_,
            "prior_weight": self.prior_weight,
            "comparisons": {
                c.name: [
                    {"level": level, "label": c.levels[level].label, "m": m, "u": u, "weight": self._weights[j][level]}
                    for level, (m, u) in enumerate(zip(self.m[j], self.u[j]), start=1)
                ]
                for j, c in enumerate(self.comparisons)
            },
        }

    def to_dict(self, include_term_frequencies: bool = True) -> dict[str, Any]:
        """Settings, parameters and (optionally) term-frequency tables as a JSON-ready dict."""
        data: dict[str, Any] = {"settings": self.settings.to_dict(), "parameters": self.parameters()}
        if include_term_frequencies:
            data["term_frequencies"] = {name: t.to_dict() for name, t in self.term_frequencies.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FellegiSunterModel:
        """Inverse of :meth:`to_dict`; level labels must match the settings' comparisons."""
        settings = MatchSettings.from_dict(data["settings"])
        params = data["parameters"]
        m, u = [], []
        for comparison in settings.build_comparisons():
            levels = params["comparisons"][comparison.name]
            labels = tuple(level["label"] for level in levels)
            if labels != comparison.labels[1:]:
                raise ValueError(f"stored levels for {comparison.name!r} do not match its settings: {labels}")
            m.append([level["m"] for level in levels])
            u.append([level["u"] for level in levels])
        tables = {name: TermFrequencies.from_dict(t) for name, t in data.get("term_frequencies", {}).items()}
        return cls(settings, m, u, params["lambda"], tables)

    def to_json(self, include_term_frequencies: bool = True) -> str:
        """:meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(include_term_frequencies), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FellegiSunterModel:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
