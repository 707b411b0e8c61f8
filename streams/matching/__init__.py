"""Probabilistic (Fellegi-Sunter) record matching, modelled on Splink.

Comparisons (:mod:`.comparisons`) turn a record pair into a vector of level indices; blocking
rules (:mod:`.blocking`) choose the pairs worth comparing; :mod:`.em` estimates m, u and lambda;
:class:`FellegiSunterModel` scores pairs with an explanation and a link / review / new outcome;
:mod:`.settings` configures all of it, with :func:`default_settings` for Indonesian citizen data.
"""

from .blocking import BlockingRule, CandidateBlocks, CandidatePairs, KeyPart, SkippedBlock, candidate_pairs
from .comparisons import (
    COMPARISON_TYPES,
    NULL_LEVEL,
    Comparison,
    ComparisonLevel,
    DateComparison,
    ExactMatch,
    KelurahanComparison,
    NameComparison,
    NikComparison,
    PhoneComparison,
    TermFrequencies,
    comparison_from_dict,
    field_value,
)
from .em import (
    EMIteration,
    EMResult,
    Vector,
    comparison_vectors,
    estimate_u,
    expectation_maximisation,
    prepare_estimation,
    sample_random_pairs,
    train,
)
from .model import Contribution, FellegiSunterModel, MatchScore, Outcome, probability_from_weight
from .settings import BlockingRuleSpec, EMSettings, MatchSettings, Thresholds, default_settings

__all__ = [
    "COMPARISON_TYPES",
    "NULL_LEVEL",
    "BlockingRule",
    "BlockingRuleSpec",
    "CandidateBlocks",
    "CandidatePairs",
    "Comparison",
    "ComparisonLevel",
    "Contribution",
    "DateComparison",
    "EMIteration",
    "EMResult",
    "EMSettings",
    "ExactMatch",
    "FellegiSunterModel",
    "KelurahanComparison",
    "KeyPart",
    "MatchScore",
    "MatchSettings",
    "NameComparison",
    "NikComparison",
    "Outcome",
    "PhoneComparison",
    "SkippedBlock",
    "TermFrequencies",
    "Thresholds",
    "candidate_pairs",
    "comparison_from_dict",
    "comparison_vectors",
    "default_settings",
    "estimate_u",
    "Vector",
    "expectation_maximisation",
    "prepare_estimation",
    "field_value",
    "probability_from_weight",
    "sample_random_pairs",
    "train",
]
