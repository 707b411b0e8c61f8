"""How good a resolution is, against a known truth: pairwise precision, recall and F1.

A pair of records is "predicted" when both land in the same cluster and "true" when both describe
the same person. Pairs are counted per cluster with ``n choose 2``, never enumerated, so a city's
million records cost one pass. Only records present in both the prediction and the truth count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


@dataclass(frozen=True)
class PairCounts:
    """True positive, predicted and true pair counts over the records both sides know."""

    records: int
    true_positive: int
    predicted: int
    actual: int

    @property
    def precision(self) -> float:
        """Share of predicted pairs that are true (1.0 when nothing was predicted)."""
        return self.true_positive / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        """Share of true pairs that were predicted (1.0 when there are none)."""
        return self.true_positive / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def pair_counts(predicted: Mapping[str, Hashable], truth: Mapping[str, Hashable]) -> PairCounts:
    """Pairwise counts of ``predicted`` clusters (record → cluster) against ``truth`` (record → person)."""
    common = [key for key in predicted if key in truth]
    predicted_sizes = Counter(predicted[key] for key in common)
    true_sizes = Counter(truth[key] for key in common)
    both = Counter((predicted[key], truth[key]) for key in common)
    return PairCounts(
        records=len(common),
        true_positive=sum(_pairs(n) for n in both.values()),
        predicted=sum(_pairs(n) for n in predicted_sizes.values()),
        actual=sum(_pairs(n) for n in true_sizes.values()),
    )


@dataclass(frozen=True)
class EdgeCounts:
    """Decisions on individual pairs (links made, or pairs sent to review) that the truth can judge."""

    judged: int
    correct: int

    @property
    def precision(self) -> float:
        """Share of judged pairs that are the same person (1.0 when none were judged)."""
        return self.correct / self.judged if self.judged else 1.0


def edge_counts(edges: Iterable[tuple[str, str]], truth: Mapping[str, Hashable]) -> EdgeCounts:
    """How many of the pairs ``edges`` the truth knows, and how many of those are the same person."""
    judged = correct = 0
    for a, b in edges:
        if a in truth and b in truth:
            judged += 1
            correct += truth[a] == truth[b]
    return EdgeCounts(judged, correct)


@dataclass(frozen=True)
class Evaluation:
    """The figures an analyst reports for one resolution run."""

    pairs: PairCounts
    auto_links: EdgeCounts | None  # every link made by rule or score, judged pair by pair
    reviews: EdgeCounts | None

    @property
    def review_fraction(self) -> float | None:
        """Share of match decisions left to a person: review pairs of (auto links + review pairs)."""
        if self.auto_links is None or self.reviews is None:
            return None
        decided = self.auto_links.judged + self.reviews.judged
        return self.reviews.judged / decided if decided else 0.0


def evaluate(
    predicted: Mapping[str, Hashable],
    truth: Mapping[str, Hashable],
    links: Iterable[tuple[str, str]] | None = None,
    reviews: Iterable[tuple[str, str]] | None = None,
) -> Evaluation:
    """Pairwise cluster metrics, plus auto-link precision and review figures when given the pairs."""
    return Evaluation(
        pairs=pair_counts(predicted, truth),
        auto_links=edge_counts(links, truth) if links is not None else None,
        reviews=edge_counts(reviews, truth) if reviews is not None else None,
    )
