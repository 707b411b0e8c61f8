"""Parameter estimation as Splink does it: u from random pairs, m (and lambda) by EM on blocked pairs.

Random record pairs are almost all non-matches, so the share of each level among them estimates
u directly. m and lambda are then estimated by expectation-maximisation over the candidate pairs
blocking produced, treating match status as the hidden variable of a two-class mixture.

Comparison vectors repeat massively (a few thousand distinct vectors for hundreds of thousands of
pairs), so vectors are counted first and every EM iteration runs over the distinct ones: the cost
per iteration does not depend on the number of pairs. Null levels (index 0) contribute to neither
class. ``lambda`` here is the match rate among the pairs given; the model's prior is the chance
for two random records, which ``streams.resolve`` derives from it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .comparisons import NULL_LEVEL, Comparison, match_values, vector_of_values
from .model import FellegiSunterModel

_FLOOR = 1e-12  # keeps a class likelihood positive when an estimate reaches 0
U_PSEUDO_COUNT = 0.5
"""Added to every level's count when estimating u, so a level never seen among the random pairs
(two random people sharing a NIK) gets a small u instead of 0 and an infinite weight."""

Vector = tuple[int, ...]


@dataclass(frozen=True)
class EMIteration:
    """One EM iteration: lambda after the update, largest parameter change, log-likelihood before it."""

    iteration: int
    lambda_: float
    max_change: float
    log_likelihood: float


@dataclass
class EMResult:
    """Estimated m, u (per comparison, non-null levels) and lambda, with the iteration history."""

    m: list[list[float]]
    u: list[list[float]]
    lambda_: float
    converged: bool
    n_pairs: int
    n_distinct_vectors: int
    history: list[EMIteration] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)  # per training session: pairs, iterations, lambda

    @property
    def iterations(self) -> int:
        """Number of iterations run."""
        return len(self.history)


def comparison_vectors(
    comparisons: Sequence[Comparison], records: Sequence[Any], pairs: Iterable[tuple[int, int]]
) -> list[Vector]:
    """Level-index vectors for index ``pairs`` into ``records``."""
    # A record is in many of the pairs: what the comparisons read from it is taken once.
    values: dict[int, tuple[Any, ...]] = {}
    vectors = []
    for i, j in pairs:
        va = values.get(i)
        if va is None:
            va = values[i] = match_values(comparisons, records[i])
        vb = values.get(j)
        if vb is None:
            vb = values[j] = match_values(comparisons, records[j])
        vectors.append(vector_of_values(comparisons, va, vb))
    return vectors


def sample_random_pairs(n_records: int, n_pairs: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n_pairs`` uniformly random pairs of distinct indices (all pairs when there are fewer)."""
    total = n_records * (n_records - 1) // 2
    if total <= n_pairs:
        return [(i, j) for i in range(n_records) for j in range(i + 1, n_records)]
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n_pairs:
        i = rng.randrange(n_records)
        j = rng.randrange(n_records)
        if i != j:
            pairs.append((i, j) if i < j else (j, i))
    return pairs


def estimate_u(vectors: Iterable[Vector], level_counts: Sequence[int]) -> list[list[float]]:
    """u per comparison and non-null level: level shares among (random, hence non-matching) pairs.

    ``level_counts[j]`` is comparison ``j``'s number of non-null levels. Null levels are left out
    of each comparison's denominator; :data:`U_PSEUDO_COUNT` smooths levels never seen.
    """
    counts = [[U_PSEUDO_COUNT] * k for k in level_counts]
    for vector, n in Counter(vectors).items():
        for j, level in enumerate(vector):
            if level != NULL_LEVEL:
                counts[j][level - 1] += n
    return [[c / sum(row) for c in row] for row in counts]


def expectation_maximisation(
    vectors: Iterable[Vector],
    m_start: Sequence[Sequence[float]],
    u_start: Sequence[Sequence[float]],
    lambda_start: float,
    *,
    fix_u: bool = True,
    tolerance: float = 1e-4,
    max_iterations: int = 100,
    min_probability: float = 1e-4,
) -> EMResult:
    """Estimate m and lambda (and u unless ``fix_u``) from candidate pairs' comparison vectors.

    Stops when no parameter moves by more than ``tolerance`` in an iteration, or after
    ``max_iterations``. Runs over distinct vectors with their counts. Estimated probabilities
    are floored at ``min_probability``: a level no true match showed in the sample (sex
    disagreeing) would otherwise get m = 0, an infinite penalty that one miscoded field in
    production could never overcome.
    """
    counted = Counter(vectors)
    n_pairs = sum(counted.values())
    # Per distinct vector: its count and its non-null (comparison, level position) pairs.
    items = [
        (n, tuple((j, level - 1) for j, level in enumerate(vector) if level != NULL_LEVEL))
        for vector, n in counted.items()
    ]
    m = [list(row) for row in m_start]
    u = [list(row) for row in u_start]
    lam = lambda_start
    history: list[EMIteration] = []
    converged = False
    for iteration in range(1, max_iterations + 1):
        acc_m = [[0.0] * len(row) for row in m]
        acc_u = [[0.0] * len(row) for row in u]
        matches = 0.0
        log_likelihood = 0.0
        for n, levels in items:
            pm = lam
            pu = 1.0 - lam
            for j, pos in levels:
                pm *= max(m[j][pos], _FLOOR)
                pu *= max(u[j][pos], _FLOOR)
            total = pm + pu
            log_likelihood += n * math.log(total)
            weight_m = n * pm / total
            weight_u = n - weight_m
            matches += weight_m
            for j, pos in levels:
                acc_m[j][pos] += weight_m
                acc_u[j][pos] += weight_u
        new_m = _normalise(acc_m, m, min_probability)
        new_u = u if fix_u else _normalise(acc_u, u, min_probability)
        new_lam = min(max(matches / n_pairs, _FLOOR), 1.0 - _FLOOR) if n_pairs else lam
        change = max(
            abs(new_lam - lam),
            _max_change(new_m, m),
            _max_change(new_u, u),
        )
        m, u, lam = new_m, new_u, new_lam
        history.append(EMIteration(iteration, lam, change, log_likelihood))
        if change < tolerance:
            converged = True
            break
    return EMResult(m, u, lam, converged, n_pairs, len(counted), history)


def _normalise(acc: list[list[float]], previous: list[list[float]], floor: float) -> list[list[float]]:
    # A comparison null in every pair has no evidence: its previous estimate stands.
    out = []
    for row, prev in zip(acc, previous):
        total = sum(row)
        if total <= 0:
            out.append(list(prev))
            continue
        floored = [max(x / total, floor) for x in row]
        norm = sum(floored)
        out.append([x / norm for x in floored])
    return out


def _max_change(a: list[list[float]], b: list[list[float]]) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)), default=0.0)


def prepare_estimation(model: FellegiSunterModel, records: Sequence[Any]) -> list[list[float]]:
    """The first steps of every estimation: build ``model``'s term-frequency tables from ``records``
    and return u estimated from ``settings.em.random_pairs`` random pairs of them."""
    em = model.settings.em
    model.build_term_frequencies(records)
    level_counts = [len(c.levels) - 1 for c in model.comparisons]
    random_pairs = sample_random_pairs(len(records), em.random_pairs, em.seed)
    return estimate_u(comparison_vectors(model.comparisons, records, random_pairs), level_counts)


def train(
    model: FellegiSunterModel, records: Sequence[Any], pairs: Iterable[tuple[int, int]]
) -> EMResult:
    """Estimate ``model``'s parameters from ``records`` and their candidate ``pairs``, in place.

    Builds the term-frequency tables, estimates u from ``settings.em.random_pairs`` random
    pairs, runs EM from the model's current m and lambda, and stores the estimates in the model.
    """
    em = model.settings.em
    u = prepare_estimation(model, records)
    result = expectation_maximisation(
        comparison_vectors(model.comparisons, records, pairs),
        model.m,
        u,
        model.lambda_,
        tolerance=em.tolerance,
        max_iterations=em.max_iterations,
    )
    model.set_parameters(result.m, result.u, result.lambda_)
    return result
