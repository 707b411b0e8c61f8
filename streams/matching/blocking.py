"""Blocking: which record pairs are worth comparing at all.

Comparing every pair is quadratic; a blocking rule gives each record a key, and only records
sharing a key are compared. Several rules are combined (union of their pairs), so a duplicate
missed by one rule (a NIK typo) is caught by another (same birth date and name prefix).
A block larger than ``max_block_size`` (a placeholder NIK shared by thousands, an empty-ish key)
is skipped and reported, which keeps the total work near-linear in the number of records.

A rule's key is built from parts written ``field`` or ``field|transform|...``, transforms applied
left to right: ``year`` (of a date or ISO string), ``sorted`` (name tokens in alphabetical
order), ``prefix:N`` (first N characters, spaces removed), ``last:N`` (last N digits). Sequence
values (name tokens) are joined with spaces first. A record missing any part gets no key under
that rule.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any

from .comparisons import field_value


Transform = Callable[[Any, int], Any]
"""A key transform: the value and the transform's length argument (0 for those taking none)."""


@dataclass(frozen=True)
class KeyPart:
    """One part of a block key: a record field and the transforms that cut it down, in order."""

    field: str
    transforms: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> KeyPart:
        """Parse ``field`` or ``field|transform|...`` (``year``, ``sorted``, ``prefix:N``, ``last:N``)."""
        name, *transforms = (piece.strip() for piece in text.split("|"))
        for transform in transforms:
            _check_transform(transform)
        return cls(name, tuple(transforms))

    def __str__(self) -> str:
        return "|".join((self.field, *self.transforms))

    @cached_property
    def _steps(self) -> tuple[tuple[Transform, int], ...]:
        # Parsed once per part, not per record: every record's key applies all the transforms.
        return tuple(_step(transform) for transform in self.transforms)

    def apply(self, value: Any) -> str | None:
        """The key fragment for ``value``; ``None`` when it cannot be formed."""
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        for transform, length in self._steps:
            value = transform(value, length)
            if value is None:
                return None
        text = value.isoformat() if isinstance(value, date) else str(value)
        return text or None


def _year(value: Any, _: int) -> str | None:
    if isinstance(value, date):
        return f"{value.year:04d}"
    text = str(value)
    return text[:4] if len(text) >= 4 and text[:4].isdigit() else None


def _sorted(value: Any, _: int) -> str:
    # Token order varies between agencies (AMINAH SITI / SITI AMINAH); sorting removes it.
    return " ".join(sorted(str(value).split()))


def _prefix(value: Any, n: int) -> str | None:
    text = str(value).replace(" ", "")
    return text[:n] if len(text) >= n else None


def _last(value: Any, n: int) -> str | None:
    # Suffixes are for phone- and NIK-like values: formatting characters would shift them.
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return digits[-n:] if len(digits) >= n else None


_TRANSFORMS: dict[str, Transform] = {"year": _year, "sorted": _sorted, "prefix": _prefix, "last": _last}


def _check_transform(transform: str) -> None:
    kind, _, arg = transform.partition(":")
    takes_length = kind in ("prefix", "last")
    if kind not in _TRANSFORMS or takes_length != bool(arg) or (takes_length and not (arg.isdigit() and int(arg) > 0)):
        raise ValueError(f"unknown block key transform {transform!r}")


def _step(transform: str) -> tuple[Transform, int]:
    kind, _, arg = transform.partition(":")
    return _TRANSFORMS[kind], int(arg) if arg else 0


@dataclass(frozen=True)
class BlockingRule:
    """A named rule: records whose key parts all agree land in the same block."""

    name: str
    parts: tuple[KeyPart, ...]

    @classmethod
    def of(cls, name: str, *parts: str) -> BlockingRule:
        """Build a rule from part strings, e.g. ``BlockingRule.of("dob_name3", "birth_date", "name|prefix:3")``."""
        if not parts:
            raise ValueError(f"blocking rule {name!r} has no key parts")
        return cls(name, tuple(KeyPart.parse(p) for p in parts))

    def key(self, record: Any) -> str | None:
        """The record's block key under this rule, ``None`` when a part is missing."""
        fragments = []
        for part in self.parts:
            value = field_value(record, part.field)
            if value is None:
                return None
            fragment = part.apply(value)
            if fragment is None:
                return None
            fragments.append(fragment)
        # The unit separator cannot occur in normalised values, so distinct fragments never collide.
        return "\x1f".join(fragments)

    def to_dict(self) -> dict[str, Any]:
        """Settings form: name and part strings."""
        return {"name": self.name, "keys": [str(p) for p in self.parts]}


@dataclass(frozen=True)
class SkippedBlock:
    """A block left out for being too large. Carries no key value: keys are personal data."""

    rule: str
    size: int


@dataclass
class CandidatePairs:
    """The unique candidate pairs (index pairs ``i < j`` into the record sequence) and what blocking did."""

    pairs: set[tuple[int, int]]
    pairs_per_rule: dict[str, int] = field(default_factory=dict)
    skipped: list[SkippedBlock] = field(default_factory=list)

    @property
    def skipped_records(self) -> int:
        """Records sitting in skipped blocks, counted once per rule."""
        return sum(block.size for block in self.skipped)


def rule_blocks(records: Sequence[Any], rule: BlockingRule) -> dict[str, list[int]]:
    """The indices of ``records`` per block key under ``rule`` (records without a key left out)."""
    blocks: defaultdict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        key = rule.key(record)
        if key is not None:
            blocks[key].append(index)
    return blocks


def candidate_pairs(
    records: Sequence[Any], rules: Iterable[BlockingRule], max_block_size: int = 500
) -> CandidatePairs:
    """Unique pairs of record indices sharing a block key under at least one rule.

    The pairs of :class:`CandidateBlocks`, gathered in a set; blocks above ``max_block_size``
    records are skipped and listed in the result, so a degenerate key cannot make the run quadratic. ``pairs_per_rule`` counts the pairs each rule generated
    (before removing pairs already found by an earlier rule).
    """
    blocks = CandidateBlocks(records, rules, max_block_size)
    return CandidatePairs({pair for pairs in blocks for pair in pairs}, blocks.pairs_per_rule, blocks.skipped)


class CandidateBlocks:
    """The same unique candidate pairs as :func:`candidate_pairs`, block by block, never all at once.

    Memory is proportional to the records (per rule, each record's block and the kept blocks'
    members as flat integer arrays), not to the pairs. Iterating yields, for each kept block of
    each rule in turn, the list of its pairs ``(i, j)``, ``i < j``, that no earlier rule has
    already yielded, so every unique pair comes exactly once; it can be iterated again (each pass
    yields the same blocks in the same order). ``pairs_per_rule`` and ``skipped`` are as in
    :class:`CandidatePairs`; ``pair_count`` is the number of unique pairs.
    """

    def __init__(self, records: Sequence[Any], rules: Iterable[BlockingRule], max_block_size: int = 500) -> None:
        self.pairs_per_rule: dict[str, int] = {}
        self.skipped: list[SkippedBlock] = []
        self._block_of: list[array] = []  # per rule: each record's kept block number, -1 for none
        self._members: list[array] = []  # per rule: the kept blocks' members, block after block
        self._starts: list[array] = []  # per rule: where each kept block starts in _members (plus the end)
        n = len(records)
        for rule in rules:
            blocks = rule_blocks(records, rule)
            block_of = array("i", [-1]) * n
            members = array("i")
            starts = array("q", [0])
            generated = 0
            for block in blocks.values():
                size = len(block)
                if size < 2:
                    continue
                if size > max_block_size:
                    self.skipped.append(SkippedBlock(rule.name, size))
                    continue
                generated += size * (size - 1) // 2
                number = len(starts) - 1
                for i in block:
                    block_of[i] = number
                members.extend(block)
                starts.append(len(members))
            del blocks
            self.pairs_per_rule[rule.name] = generated
            self._block_of.append(block_of)
            self._members.append(members)
            self._starts.append(starts)
        self._pair_count: int | None = None

    @property
    def pair_count(self) -> int:
        """The number of unique candidate pairs (known after one full pass, counted by one otherwise)."""
        if self._pair_count is None:
            self._pair_count = sum(len(pairs) for pairs in self)
        return self._pair_count

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        count = 0
        for r, (members, starts) in enumerate(zip(self._members, self._starts)):
            earlier = self._block_of[:r]
            for b in range(len(starts) - 1):
                block = members[starts[b] : starts[b + 1]]
                pairs: list[tuple[int, int]] = []
                for position, i in enumerate(block):
                    seen = [(of, of[i]) for of in earlier if of[i] != -1]
                    for j in block[position + 1 :]:
                        # A pair an earlier rule also blocks together was yielded there.
                        if not any(of[j] == number for of, number in seen):
                            pairs.append((i, j))
                if pairs:
                    count += len(pairs)
                    yield pairs
        self._pair_count = count
