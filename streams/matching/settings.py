"""Matching settings: which fields, comparisons, blocking rules and thresholds the matcher uses.

Loadable from a dict or YAML so the same engine can be pointed at other person data;
:func:`default_settings` is the configuration for Indonesian citizen records (NIK, name, birth
date, sex, kelurahan/RT/RW, KK, phone) as produced by ``streams/normalize``.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .blocking import BlockingRule, KeyPart
from .comparisons import COMPARISON_TYPES, Comparison, comparison_from_dict


class Thresholds(BaseModel):
    """Match-probability cut-offs: ``>= link`` links, ``>= review`` goes to a person, else a new entity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    link: float = Field(0.99, gt=0.0, lt=1.0)
    review: float = Field(0.8, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.link:
            raise ValueError("thresholds.review must not exceed thresholds.link")
        return self


class BlockingRuleSpec(BaseModel):
    """A blocking rule: a name and key parts (``field`` or ``field|transform``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    keys: list[str] = Field(min_length=1)

    @field_validator("keys")
    @classmethod
    def _parse(cls, keys: list[str]) -> list[str]:
        for key in keys:
            KeyPart.parse(key)
        return keys

    def build(self) -> BlockingRule:
        """The rule object."""
        return BlockingRule.of(self.name, *self.keys)


class TrainingSession(BaseModel):
    """One EM session, as Splink trains: pairs blocked on ``block_on`` (key parts, as in blocking
    rules), m estimated for every comparison whose field is neither in the key nor in ``exclude``.

    ``exclude`` names fields the blocked pairs agree on for another reason: pairs sharing a valid
    NIK agree on birth date and sex by construction, because a NIK is only kept when it does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    block_on: list[str] = Field(min_length=1)
    exclude: list[str] = Field(default_factory=list)


class EMSettings(BaseModel):
    """How parameters are estimated (see :mod:`simpul.streams.matching.em`): u from random pairs,
    m by EM per training session (averaged over the sessions that estimate it), lambda last."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_iterations: int = Field(100, ge=1)
    tolerance: float = Field(1e-4, gt=0.0)
    random_pairs: int = Field(200_000, ge=1)
    seed: int = 0
    sessions: list[TrainingSession] = Field(default_factory=list, description="EM sessions; none: m stays as given")


class MatchSettings(BaseModel):
    """Everything configurable about the matcher, serialisable to dict/JSON/YAML.

    ``comparisons`` are settings dicts (``{"type": "NameComparison", "field": "name", ...}``),
    validated by building them. ``fields`` lists the record fields the matcher reads; every
    comparison and blocking rule must use only those, so a configuration cannot silently read
    a field the source does not have.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    unique_id_field: str = "record_id"
    source_field: str = "source"
    fields: list[str]
    comparisons: list[dict[str, Any]] = Field(min_length=1)
    blocking_rules: list[BlockingRuleSpec] = Field(min_length=1)
    max_block_size: int = Field(500, ge=2)
    prior: float = Field(1e-4, gt=0.0, lt=1.0, description="starting lambda: prior match probability of a pair")
    thresholds: Thresholds = Thresholds()
    em: EMSettings = EMSettings()

    @field_validator("comparisons")
    @classmethod
    def _known_types(cls, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for spec in specs:
            if spec.get("type") not in COMPARISON_TYPES:
                raise ValueError(f"unknown comparison type {spec.get('type')!r}; known: {sorted(COMPARISON_TYPES)}")
        return specs

    @model_validator(mode="after")
    def _consistent(self) -> MatchSettings:
        comparisons = self.build_comparisons()  # raises on bad parameters
        names = [c.name for c in comparisons]
        if len(set(names)) != len(names):
            raise ValueError("comparison names must be unique")
        known = set(self.fields)
        used = {c.field for c in comparisons}
        for c in comparisons:
            used.update(v for k, v in c.to_dict().items() if k.endswith("_field") and isinstance(v, str))
        used.update(part.field for rule in self.build_blocking_rules() for part in rule.parts)
        unknown = sorted(used - known)
        if unknown:
            raise ValueError(f"comparisons or blocking rules use fields not listed in fields: {unknown}")
        return self

    def build_comparisons(self) -> list[Comparison]:
        """The comparison objects, in settings order (the order of comparison vectors)."""
        return [comparison_from_dict(spec) for spec in self.comparisons]

    def build_blocking_rules(self) -> list[BlockingRule]:
        """The blocking rule objects."""
        return [spec.build() for spec in self.blocking_rules]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MatchSettings:
        """Validate a dict (as from JSON or YAML)."""
        return cls.model_validate(data)

    @classmethod
    def from_yaml(cls, text: str) -> MatchSettings:
        """Validate YAML text."""
        return cls.model_validate(yaml.safe_load(text))


def default_settings() -> MatchSettings:
    """Settings for Indonesian citizen records as normalised by ``streams/normalize``.

    Comparisons: NIK, name (tf adjusted), birth date, sex, kelurahan/RT/RW, phone. The KK number
    is deliberately not compared: it identifies a household, and family members share it *and*
    the address, so scoring both double-counts evidence that cannot tell a person from their
    relatives (it is still a blocking key). Blocking
    rules (union): NIK's first 12 digits; NIK's last 8 + name initial; birth date + first 3 letters of the name;
    name tokens sorted + birth year; phone's last 8 digits; KK + birth year; kelurahan + birth
    year + name initial. The starting prior is about one true pair per
    ten thousand among candidates; training re-estimates it as the chance for two random records.
    """
    return MatchSettings(
        fields=["nik", "name", "name_tokens", "birth_date", "sex", "kelurahan", "rt", "rw", "kk", "phone"],
        comparisons=[
            {"type": "NikComparison", "field": "nik"},
            {"type": "NameComparison", "field": "name", "thresholds": [0.95, 0.88], "tokens_field": "name_tokens"},
            {"type": "DateComparison", "field": "birth_date"},
            {"type": "ExactMatch", "field": "sex"},
            {"type": "KelurahanComparison", "field": "kelurahan", "rt_field": "rt", "rw_field": "rw"},
            {"type": "PhoneComparison", "field": "phone"},
        ],
        blocking_rules=[
            # Two overlapping NIK keys instead of the whole NIK, so one mistyped digit in either
            # half still meets: region+district+DDMMYY, and MMYY+serial with the name's initial.
            # Serials restart at 0001 for every region and birth date, so MMYY+serial alone makes
            # blocks that grow with the population (82 records at 20,000 residents, past the
            # block size limit for a whole city, where they would be skipped).
            BlockingRuleSpec(name="nik_head12", keys=["nik|prefix:12"]),
            BlockingRuleSpec(name="nik_tail8_initial", keys=["nik|last:8", "name|prefix:1"]),
            BlockingRuleSpec(name="birth_date_name3", keys=["birth_date", "name|prefix:3"]),
            BlockingRuleSpec(name="name_sorted_birth_year", keys=["name|sorted", "birth_date|year"]),
            BlockingRuleSpec(name="phone_last8", keys=["phone|last:8"]),
            BlockingRuleSpec(name="kk_birth_year", keys=["kk", "birth_date|year"]),
            BlockingRuleSpec(name="kelurahan_year_initial", keys=["kelurahan", "birth_date|year", "name|prefix:1"]),
        ],
        # Two sessions cover every comparison: the NIK session estimates name, kelurahan and phone;
        # the name-and-kelurahan session estimates NIK, birth date (typos included) and sex.
        em=EMSettings(sessions=[
            TrainingSession(block_on=["nik"], exclude=["birth_date", "sex"]),
            TrainingSession(block_on=["name", "kelurahan"]),
        ]),
    )
