"""Incremental entity resolution: row changes in, citizens (and why) out, same answer in any order.

:class:`CitizenResolver` keeps four stores (any ``MutableMapping``: plain dicts in unit tests,
durable Faust tables in the worker) and applies one :class:`RowChange` at a time:

1. **Exactly-once effect.** Each source row keeps the source position of the last change applied.
   An older position is stale and dropped; the same position is a repeat, which is applied again
   from the stored state (idempotent), so a crash between writing some state and the rest heals on
   replay. Replaying any topic from any offset therefore leaves the result unchanged.
2. **Records.** The row (and its joined parent row, for tables whose mapping joins one) becomes a
   canonical record through the same mapping as the offline twin. A parent change refreshes its
   children; a change to columns no mapping reads refreshes nothing.
3. **Edges.** A changed record is compared with the records sharing one of its block keys, under
   the same rules as :func:`simpul.streams.resolve.resolve`: a verified NIK or KK-and-name links
   without scoring; other candidates are scored (Fellegi-Sunter) into link, review or nothing. Each
   record stores its link and review edges, so its old decisions are revisited when it changes;
   a block growing past ``max_block_size`` drops its pairs, as the batch resolver skips it.
4. **Citizens.** A citizen is a connected component of link edges, so the citizens depend only on
   the current records, never on arrival order or partitioning. A record is compared with each
   candidate citizen through that citizen's members; when its edges change, the citizens it
   touches are recomputed: the record moves, two citizens merge, or one splits.
5. **Master ids.** A citizen's id is derived from its anchor, the member first seen in the source
   (earliest source timestamp, then record id): updates keep it, a merge keeps the older citizen's
   id, and a split leaves it with the part holding the anchor. Ids are hashes, never NIKs.

Outputs are messages for compacted topics (value None deletes a key): golden citizens with
lineage, links (record to citizen with the deciding score), open review pairs, data-quality
issues, and feedback: for each record of an agency with a feedback scope, its master id, life
status and the golden fields that agency may see (:func:`feedback_value`), sent again only when
that message changes. Likewise a review pair's tombstone goes out only for a pair that was open.
"""

from __future__ import annotations

import gc
import hashlib
from bisect import bisect_left
from collections import Counter, OrderedDict, abc
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from simpul.streams.changes import ChangeError, RowChange
from simpul.streams.mapping import CanonicalRecord, Mapping, TableMapping, to_canonical
from simpul.streams.matching import FellegiSunterModel, MatchScore, Outcome
from simpul.streams.resolve import RULE_KK_NAME, RULE_NIK, RULE_SCORE, PairScorer, deterministic_rule
from simpul.streams.survivorship import GOLDEN_FIELDS, Member, Survivorship, SurvivorshipSettings

CITIZEN, LINK, REVIEW, QUALITY, FEEDBACK = "citizen", "link", "review", "quality", "feedback"
RULE_NEW = "new"

_SEP = "\x1f"
_BLOCK, _NIK, _KK_NAME, _JOIN = "b", "n", "k", "j"
_RULE_STRENGTH = {RULE_NIK: 3, RULE_KK_NAME: 2, RULE_SCORE: 1}
_DEFAULT_SURVIVORSHIP = SurvivorshipSettings(default_sources=["disdukcapil"])

# The golden fields a feedback scope can grant; life status is not among them, every agency gets it.
FEEDBACK_FIELDS: tuple[str, ...] = tuple(f for f in GOLDEN_FIELDS if f != "deceased")


class Output(NamedTuple):
    """One message for an output topic: ``kind`` names the topic; ``value`` None is a tombstone.

    A named tuple rather than a frozen dataclass: a change makes several, and a tuple is made in a
    fifth of the time."""

    kind: str
    key: str
    value: dict[str, Any] | None


@dataclass
class ApplyResult:
    """What applying one change did: its messages and the counts the metrics report."""

    outputs: list[Output] = field(default_factory=list)
    stale: bool = False
    repeated: bool = False
    decisions: Counter[str] = field(default_factory=Counter)
    merges: int = 0
    splits: int = 0


@dataclass
class ResolverState:
    """The resolver's stores: source rows, records with their edges, citizens, and the key index.

    ``rows``, ``records`` and ``citizens`` are the durable state. The index (block, rule and join
    key to the records holding it) is derived from the records, each of which lists its keys, so
    it lives in memory and :meth:`CitizenResolver.rebuild_index` recreates it at start: a write per
    key per change would be most of the durable writes, and a derived index cannot disagree with
    the records after a crash.
    """

    rows: MutableMapping[str, Any] = field(default_factory=dict)
    records: MutableMapping[str, Any] = field(default_factory=dict)
    citizens: MutableMapping[str, Any] = field(default_factory=dict)
    index: dict[str, list[str]] = field(default_factory=dict)


# The collector's thresholds in a process running a resolver; CPython's default is (700, 10, 10).
RESOLVER_GC_THRESHOLDS = (50_000, 20, 10)


def use_resolver_gc_thresholds() -> None:
    """Set this process's garbage-collector thresholds for running a :class:`CitizenResolver`.

    A change allocates hundreds of small containers (records, edges, outputs) that are mostly freed
    or kept for good, never in cycles; at the default the youngest generation was collected every
    few changes for nothing. Measured at 10,000 residents (bench.er_resolver): 8 to 15% more changes
    per second than the default with (10,000, 10, 10). Replaying the end-to-end benchmark's changes
    at 20,000 residents, (50,000, 20, 10) then took another 10% off a steady change (616 to 528 µs;
    with no collection at all, 544): the older generations are scanned far less often, and the
    resolver's heap (1.5 million objects) held no cyclic garbage to find. The stream processor's
    resolver and the benchmark both call this, so the figure the benchmark gives is the one the
    processor runs at.
    """
    gc.set_threshold(*RESOLVER_GC_THRESHOLDS)


def master_id(anchor_record_id: str, key: bytes) -> str:
    """The id of a citizen anchored at this record: a keyed hash (``processors.master_id_key_env``).

    Unkeyed, the id could be reversed: a record id often holds a NIK, and NIKs are few enough to
    hash them all. The key must never change, or every master id would.
    """
    return "C" + hashlib.blake2b(anchor_record_id.encode(), digest_size=10, key=key).hexdigest()


def _named(source: str, named: abc.Set[str]) -> str:
    return source if source in named else OTHER_AGENCY


def record_source(record_id: str) -> str:
    """The source a record id (``source:table:key``) belongs to."""
    return record_id.split(":", 1)[0]


OTHER_AGENCY = "another_agency"


def feedback_value(
    citizen: abc.Mapping[str, Any], record_id: str, record: abc.Mapping[str, Any], scope: abc.Set[str], registry: str,
    member_ts: abc.Mapping[str, int],
) -> dict[str, Any]:
    """What the agency holding ``record`` hears back about it from its citizen's message.

    Fields outside ``scope`` are null whatever the golden record holds; life status is always
    delivered; ``verified_from`` says where each delivered field came from, naming only the
    ``registry`` or the agency itself: that a clinic gave a job seeker's phone would tell the
    job agency the person is a patient, so any other source is ``another_agency``.
    ``updated_ms`` is the latest change (``member_ts``: member record id to its last change) among
    the records that gave the delivered fields, the citizen's when none did: so the message stays
    the same while what the agency sees does, however often other members change.
    """
    lineage = citizen["lineage"]
    named = {registry, record["source"]}
    delivered = _delivered_fields(frozenset(scope))
    givers = [member_ts[lineage[name]] for name in delivered if lineage.get(name) in member_ts]
    return {
        "record_id": record_id,
        "table": record["table"],
        "record_key": record["record_key"],
        "master_id": citizen["master_id"],
        **{name: citizen[name] if name in scope else None for name in FEEDBACK_FIELDS},
        "deceased": citizen["deceased"],
        "verified_from": {name: _named(record_source(lineage[name]), named) for name in delivered if name in lineage},
        "updated_ms": max(givers) if givers else citizen["updated_ms"],
    }


@lru_cache(maxsize=64)
def _delivered_fields(scope: frozenset[str]) -> tuple[str, ...]:
    """The fields a feedback scope delivers, life status always among them, in the golden record's order."""
    return (*(name for name in FEEDBACK_FIELDS if name in scope), "deceased")


def _digest(message: abc.Mapping[str, Any]) -> str:
    """A short fingerprint of a message (stable across processes), to tell whether it changed."""
    return hashlib.blake2b(orjson.dumps(message, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


class CitizenResolver:
    """Applies row changes to the citizen graph (see the module docstring)."""

    def __init__(
        self,
        mapping: Mapping,
        model: FellegiSunterModel,
        state: ResolverState,
        id_key: bytes,
        today: date | None = None,
        cache_size: int = 300_000,
        feedback_scopes: abc.Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        """``id_key``: the secret key of :func:`master_id`; ``feedback_scopes``: source name to the
        golden fields its agency may see; a source missing from it gets no feedback."""
        if not id_key:
            raise ValueError("the master id key is empty")
        self.id_key = id_key
        self.mapping = mapping
        self.model = model
        self.state = state
        self.today = today or date.today()
        self.scorer = PairScorer(model)
        self.survivorship = Survivorship(mapping.survivorship or _DEFAULT_SURVIVORSHIP)
        # The most trusted source: the one a feedback message may name as having verified a field.
        self.registry = (mapping.survivorship or _DEFAULT_SURVIVORSHIP).default_sources[0]
        self.max_block_size = model.settings.max_block_size
        # Parsed records by id, most recently used last: a candidate is read for every change in
        # its blocks, and a store read plus parsing costs more than the comparison itself.
        self._parsed: OrderedDict[str, _Parsed] = OrderedDict()
        self.cache_size = cache_size
        self.feedback_scopes = dict(feedback_scopes or {})
        self._aid_tables = set(mapping.quality.aid_tables)
        self._mapped = {(t.source, t.table): t for t in mapping.tables}
        # A change to none of these columns leaves the table's record as it was: skipping it saves
        # the normalising (a status flag on a household row was a third of the steady refreshes).
        self._row_columns = {where: t.row_columns() for where, t in self._mapped.items()}
        self._children: dict[tuple[str, str], list[TableMapping]] = {}
        for t in mapping.tables:
            if t.join is not None:
                self._children.setdefault((t.source, t.join.table), []).append(t)

    def rebuild_index(self) -> int:
        """Recreate the in-memory index from the records' own keys; returns the records read."""
        index: dict[str, list[str]] = {}
        count = 0
        for record_id, entry in self.state.records.items():
            count += 1
            for key in entry["keys"]:
                index.setdefault(key, []).append(record_id)
            if entry.get("j") is not None:
                index.setdefault(_key(_JOIN, entry["j"]), []).append(record_id)
        for members in index.values():
            members.sort()
        self.state.index = index
        return count

    # --- applying a change ----------------------------------------------------------------------

    def apply(self, change: RowChange) -> ApplyResult:
        """Apply one row change; stale changes do nothing, repeats are applied again idempotently."""
        result = ApplyResult()
        where = (change.source, change.table)
        if where not in self._mapped and where not in self._children:
            raise ChangeError(f"table {change.source}.{change.table} is not in the mapping")
        rows = self.state.rows
        row_id = change.row_id
        stored = rows.get(row_id)
        position = list(change.position)
        if stored is not None and position < stored["p"]:
            result.stale = True
            return result
        result.repeated = stored is not None and position == stored["p"]
        first = min(stored["f"], change.ts_ms) if stored is not None else change.ts_ms
        rows[row_id] = {"p": position, "ts": change.ts_ms, "f": first, "v": change.values}

        work = _Work(force=result.repeated)
        before = stored["v"] if stored is not None else None
        mapped = self._mapped.get(where)
        if mapped is not None and (work.force or _differs(before, change.values, self._row_columns[where])):
            self._refresh(row_id, mapped, work, result)
        for child_mapping in self._children.get(where, []):
            if not work.force and not _differs(before, change.values, child_mapping.join.columns):  # type: ignore[union-attr]
                continue
            for child in list(self.state.index.get(_key(_JOIN, row_id), [])):
                if child.startswith(f"{child_mapping.source}:{child_mapping.table}:"):
                    self._refresh(child, child_mapping, work, result)
        while work.reedge:
            self._reedge(work.reedge.pop(), work)
        self._recluster(work, result)
        return result

    # --- records and their edges ----------------------------------------------------------------

    def _canonical(self, row_id: str, mapping: TableMapping) -> tuple[CanonicalRecord | None, str | None]:
        """The record a row makes now (None when deleted) and the parent row it joins."""
        row = self.state.rows.get(row_id)
        if row is None or row["v"] is None:
            return None, None
        values = dict(row["v"])
        parent_id = None
        if mapping.join is not None and values.get(mapping.join.using) is not None:
            parent_id = f"{mapping.source}:{mapping.join.table}:{values[mapping.join.using]}"
            parent = self.state.rows.get(parent_id)
            parent_values = parent["v"] if parent is not None and parent["v"] is not None else {}
            for column in mapping.join.columns:
                values[f"{mapping.join.alias}.{column}"] = parent_values.get(column)
        values.setdefault(mapping.key, row_id.rsplit(":", 1)[1])
        return to_canonical(values, mapping, self.mapping.region_prefix, self.today), parent_id

    def _keys(self, record: CanonicalRecord) -> list[str]:
        keys = []
        for rule in self.model.blocking_rules:
            value = rule.key(record)
            if value is not None:
                keys.append(_key(_BLOCK, rule.name, value))
        if record.nik_verified:
            keys.append(_key(_NIK, record.nik))  # type: ignore[arg-type]
        if record.kk and record.name:
            keys.append(_key(_KK_NAME, record.kk, record.name))
        return keys

    def _refresh(self, record_id: str, mapping: TableMapping, work: _Work, result: ApplyResult) -> None:
        """Bring one record, its index entries and its edges up to date with its rows."""
        records, index = self.state.records, self.state.index
        record, parent_id = self._canonical(record_id, mapping)
        stored = records.get(record_id)
        old_parent = stored.get("j") if stored is not None else None
        if old_parent != parent_id:
            if old_parent is not None:
                _index_remove(index, _key(_JOIN, old_parent), record_id)
            if parent_id is not None:
                _index_add(index, _key(_JOIN, parent_id), record_id)
        if record is None:
            if stored is not None:
                self._remove(record_id, stored, work, result)
            return
        as_dict = record.to_dict()
        row = self.state.rows[record_id]
        if stored is not None and stored["rec"] == as_dict and stored.get("j") == parent_id and not work.force:
            return
        updated = row["ts"] if stored is None or stored["rec"] != as_dict else stored["ts"]
        old_keys = stored["keys"] if stored is not None else []
        new_keys = self._keys(record)
        self._move_keys(record_id, old_keys, new_keys, work)
        entry = {
            "rec": as_dict,
            "f": row["f"],
            "ts": updated,
            "keys": new_keys,
            "j": parent_id,
            "l": stored["l"] if stored is not None else {},
            "r": stored["r"] if stored is not None else {},
            "m": stored["m"] if stored is not None else None,
        }
        # Open review pairs sent with this record as the first id (see ``_publish_reviews``);
        # an entry stored before that bookkeeping existed has none, so all its tombstones are sent.
        if stored is None or "ro" in stored:
            entry["ro"] = stored["ro"] if stored is not None else {}
        links = self._set_edges(record_id, self._remember(record_id, record), entry, work)  # stores the entry
        result.decisions[LINK if links else (REVIEW if entry["r"] else RULE_NEW)] += 1
        work.changed.add(record_id)
        old_notes = set(stored["rec"]["quality_notes"]) if stored is not None else set()
        for note in sorted(old_notes - set(record.quality_notes)):
            result.outputs.append(Output(QUALITY, f"{record_id}|{note}", None))
        if work.force or set(record.quality_notes) != old_notes:
            for note in record.quality_notes:
                result.outputs.append(Output(QUALITY, f"{record_id}|{note}", _record_issue(record, note, updated)))

    def _remove(self, record_id: str, stored: dict[str, Any], work: _Work, result: ApplyResult) -> None:
        """Take a deleted record out of the index, its neighbours' edges and its citizen."""
        self._move_keys(record_id, stored["keys"], [], work)
        for other in set(stored["l"]) | set(stored["r"]):
            self._set_neighbour_edge(other, record_id, None, None, work)
        del self.state.records[record_id]
        self._parsed.pop(record_id, None)
        if stored["m"] is not None:
            work.old_masters.add(stored["m"])
        work.seeds.update(stored["l"])
        result.outputs.append(Output(LINK, record_id, None))
        if stored["rec"]["source"] in self.feedback_scopes:
            result.outputs.append(Output(FEEDBACK, record_id, None))
        for note in stored["rec"]["quality_notes"]:
            result.outputs.append(Output(QUALITY, f"{record_id}|{note}", None))

    def _move_keys(self, record_id: str, old: list[str], new: list[str], work: _Work) -> None:
        """Update the index; blocks crossing ``max_block_size`` get all their members re-compared."""
        index = self.state.index
        old_set, new_set = set(old), set(new)
        for key in old_set - new_set:
            members = _index_remove(index, key, record_id)
            if key.startswith(_BLOCK) and len(members) == self.max_block_size:
                work.reedge.update(m for m in members if m != record_id)
        for key in new_set - old_set:
            members = _index_add(index, key, record_id)
            if key.startswith(_BLOCK) and len(members) == self.max_block_size + 1:
                work.reedge.update(m for m in members if m != record_id)

    def _candidates(self, record_id: str, keys: Iterable[str]) -> tuple[set[str], set[str]]:
        """Records sharing a kept block with this one, and those sharing a rule key (NIK, KK+name)."""
        blocked: set[str] = set()
        ruled: set[str] = set()
        for key in keys:
            members = self.state.index.get(key) or []
            if len(members) < 2:
                continue
            if key.startswith(_BLOCK):
                if len(members) <= self.max_block_size:
                    blocked.update(members)
            else:
                ruled.update(members)
        blocked.discard(record_id)
        ruled.discard(record_id)
        return blocked, ruled

    def _decide(self, record: _Parsed, other: _Parsed, blocked: bool, ruled: bool) -> tuple[str, float] | tuple[None, float] | None:
        """(rule, probability) for a link, (None, probability) for review, None for neither.

        ``ruled``: the two share a rule key (verified NIK, KK and name); without one no
        deterministic rule can hold, so it is not tested."""
        if ruled:
            rule = deterministic_rule(record.record, other.record)
            if rule is not None:
                return rule, 1.0
        if not blocked:
            return None
        score = self.scorer.score_values(record.record, other.record, record.match_values, other.match_values)
        if score is None or score.outcome is Outcome.NEW:
            return None
        if score.outcome is Outcome.LINK:
            return RULE_SCORE, score.probability
        return None, score.probability

    def _set_edges(self, record_id: str, record: _Parsed, entry: dict[str, Any], work: _Work) -> int:
        """Recompute a record's edges against its candidates, updating both ends; returns its link count."""
        blocked, ruled = self._candidates(record_id, entry["keys"])
        links: dict[str, list[Any]] = {}
        reviews: dict[str, float] = {}
        for other_id in blocked | ruled:
            other = self._parsed_record(other_id)
            if other is None:
                continue
            decision = self._decide(record, other, other_id in blocked, other_id in ruled)
            if decision is None:
                continue
            rule, probability = decision
            if rule is None:
                reviews[other_id] = probability
            else:
                links[other_id] = [rule, probability]
        old_links, old_reviews = entry["l"], entry["r"]
        for other_id in set(old_links) | set(links) | set(old_reviews) | set(reviews):
            if old_links.get(other_id) != links.get(other_id) or old_reviews.get(other_id) != reviews.get(other_id) or work.force:
                self._set_neighbour_edge(other_id, record_id, links.get(other_id), reviews.get(other_id), work)
        work.seeds.update(old_links)
        work.seeds.update(links)
        work.seeds.add(record_id)
        work.review_pairs.update(_pair(record_id, o) for o in set(old_reviews) | set(reviews))
        entry["l"], entry["r"] = links, reviews
        self.state.records[record_id] = entry
        return len(links)

    def _set_neighbour_edge(self, other_id: str, record_id: str, link: list[Any] | None, review: float | None, work: _Work) -> None:
        other = self.state.records.get(other_id)
        if other is None:
            return
        changed = False
        for edges, value in ((other["l"], link), (other["r"], review)):
            if value is None:
                changed |= edges.pop(record_id, None) is not None
            elif edges.get(record_id) != value:
                edges[record_id] = value
                changed = True
        if changed:
            self.state.records[other_id] = other
        work.review_pairs.add(_pair(record_id, other_id))

    def _record(self, record_id: str) -> CanonicalRecord | None:
        """The current record with this id (None when there is none), parsed once and cached."""
        parsed = self._parsed_record(record_id)
        return parsed.record if parsed is not None else None

    def _parsed_record(self, record_id: str) -> _Parsed | None:
        """The current record with this id and its match values (None when there is none), cached."""
        parsed = self._parsed.get(record_id)
        if parsed is not None:
            self._parsed.move_to_end(record_id)
            return parsed
        entry = self.state.records.get(record_id)
        if entry is None:
            return None
        return self._remember(record_id, CanonicalRecord.from_dict(entry["rec"]))

    def _score(self, a: str, b: str) -> MatchScore:
        """The model's score of two current records, their comparison vector from the kept match values."""
        parsed_a, parsed_b = self._parsed_record(a), self._parsed_record(b)
        vector = self.model.vector_of_values(parsed_a.match_values, parsed_b.match_values)  # type: ignore[union-attr]
        return self.model.score(parsed_a.record, parsed_b.record, vector)  # type: ignore[union-attr]

    def _remember(self, record_id: str, record: CanonicalRecord) -> _Parsed:
        parsed = _Parsed(record, self.model.match_values(record))
        self._parsed[record_id] = parsed
        self._parsed.move_to_end(record_id)
        if len(self._parsed) > self.cache_size:
            self._parsed.popitem(last=False)
        return parsed

    def _reedge(self, record_id: str, work: _Work) -> None:
        """Recompute the edges of an unchanged record (its block crossed the size limit)."""
        entry = self.state.records.get(record_id)
        if entry is not None:
            self._set_edges(record_id, self._parsed_record(record_id), entry, work)  # type: ignore[arg-type]

    # --- citizens -------------------------------------------------------------------------------

    def _recluster(self, work: _Work, result: ApplyResult) -> None:
        """Recompute the citizens around the changed records and emit what changed."""
        records, citizens = self.state.records, self.state.citizens
        frontier = {r for r in work.seeds if r in records}
        before: dict[str, str | None] = {}
        for record_id in frontier:
            master = records[record_id]["m"]
            before[record_id] = master
            if master is not None:
                work.old_masters.add(master)
        for master in work.old_masters:
            citizen = citizens.get(master)
            if citizen is not None:
                frontier.update(m for m in citizen["members"] if m in records)
        components: list[list[str]] = []
        seen: set[str] = set()
        for start in sorted(frontier):
            if start in seen:
                continue
            component, stack = [], [start]
            seen.add(start)
            while stack:
                node = stack.pop()
                component.append(node)
                for other in records[node]["l"]:
                    if other not in seen and other in records:
                        seen.add(other)
                        stack.append(other)
            components.append(sorted(component))

        new_masters: set[str] = set()
        parts_of: Counter[str] = Counter()
        for component in components:
            entries = {r: records[r] for r in component}
            anchor = min(component, key=lambda r: (entries[r]["f"], r))
            master = master_id(anchor, self.id_key)
            new_masters.add(master)
            previous = {entries[r]["m"] for r in component if entries[r]["m"] is not None}
            if len([m for m in previous if m in citizens]) >= 2:
                result.merges += 1
            for old in previous:
                parts_of[old] += 1
            for record_id in component:
                entry = entries[record_id]
                if entry["m"] != master:
                    entry["m"] = master
                    records[record_id] = entry
                    work.changed.add(record_id)
            for record_id in component:
                if record_id in work.changed or work.force:
                    result.outputs.append(Output(LINK, record_id, self._link(record_id, master, entries)))
            self._emit_citizen(master, anchor, entries, work, result)
        result.splits += sum(1 for master, parts in parts_of.items() if parts >= 2)
        for master in work.old_masters - new_masters:
            citizen = citizens.get(master)
            if citizen is None:
                continue
            del citizens[master]
            result.outputs.append(Output(CITIZEN, master, None))
            for issue in citizen["issues"]:
                result.outputs.append(Output(QUALITY, f"{master}|{issue}", None))
        for changed in work.changed:
            entry = records.get(changed)
            if entry is not None:
                work.review_pairs.update(_pair(changed, o) for o in entry["r"])
        self._publish_reviews(work, result)

    def _publish_reviews(self, work: _Work, result: ApplyResult) -> None:
        """The review messages of the pairs a change touched: each open pair's, and a tombstone for
        each pair that was open until now. A pair that scored in the review range between two
        records already in one citizen was never open, so it gets no tombstone (without the
        bookkeeping, most changes would send one for nothing); a repeated event sends them all."""
        records = self.state.records
        for a, b in sorted(work.review_pairs):
            value = self._review(a, b)
            entry = records.get(a)
            opened = entry.get("ro") if entry is not None else None
            if opened is not None:
                if value is None and b not in opened and not work.force:
                    continue
                if (value is not None) != (b in opened):
                    if value is None:
                        del opened[b]
                    else:
                        opened[b] = 1
                    records[a] = entry
            result.outputs.append(Output(REVIEW, f"{a}|{b}", value))

    def _link(self, record_id: str, master: str, entries: dict[str, Any]) -> dict[str, Any]:
        """The link message: the record's citizen and the strongest edge that put it there."""
        entry = entries[record_id]
        best = max(entry["l"].items(), key=lambda item: (_RULE_STRENGTH[item[1][0]], item[1][1], item[0]), default=None)
        record = self._record(record_id)
        value: dict[str, Any] = {
            "record_id": record_id, "source": record.source, "table": record.table, "record_key": record.record_key,
            "master_id": master, "rule": RULE_NEW, "matched_record_id": None, "probability": None, "weight": None,
            "contributions": {}, "updated_ms": entry["ts"],
        }
        if best is not None:
            other_id, (rule, probability) = best
            score = self._score(record_id, other_id)
            value.update(rule=rule, matched_record_id=other_id, probability=probability, weight=score.weight, contributions=_contributions(score))
        return value

    def _review(self, a: str, b: str) -> dict[str, Any] | None:
        """An open review pair's message, or None when the pair is no longer a question."""
        records = self.state.records
        ea, eb = records.get(a), records.get(b)
        if ea is None or eb is None or b not in ea["r"] or ea["m"] == eb["m"]:
            return None
        score = self._score(a, b)
        return {
            "record_a": a, "record_b": b, "master_a": ea["m"], "master_b": eb["m"],
            "probability": score.probability, "weight": score.weight, "contributions": _contributions(score),
            "levels": {c.comparison: c.label for c in score.contributions},
        }

    def _emit_citizen(self, master: str, anchor: str, entries: dict[str, Any], work: _Work, result: ApplyResult) -> None:
        members = sorted(entries)
        golden = self.survivorship.golden([
            Member(r, entries[r]["rec"]["source"], entries[r]["ts"], entries[r]["rec"]) for r in members
        ])
        issues = self._issues(entries, golden.values)
        value = {
            "master_id": master,
            "anchor_record_id": anchor,
            "members": members,
            **{name: _golden_value(name, v) for name, v in golden.values.items()},
            "lineage": golden.lineage,
            "updated_ms": max(entries[r]["ts"] for r in members),
        }
        stored = self.state.citizens.get(master)
        sent = stored.get("fb", {}) if stored is not None else {}
        digests, feedback = self._feedback(value, entries, sent, work.force)
        changed = stored is None or stored["value"] != value or work.force
        if not changed and digests == sent:
            return
        self.state.citizens[master] = {"members": members, "value": value, "issues": sorted(issues), "fb": digests}
        if changed:
            result.outputs.append(Output(CITIZEN, master, value))
        result.outputs.extend(feedback)
        if not changed:
            return
        old_issues = set(stored["issues"]) if stored is not None else set()
        for kind in sorted(old_issues - set(issues)):
            result.outputs.append(Output(QUALITY, f"{master}|{kind}", None))
        for kind, record_ids in sorted(issues.items()):
            result.outputs.append(Output(QUALITY, f"{master}|{kind}", {
                "issue": kind, "master_id": master, "record_ids": record_ids, "detected_ms": value["updated_ms"],
            }))

    def _feedback(self, citizen: dict[str, Any], entries: dict[str, Any], sent: dict[str, str], force: bool) -> tuple[dict[str, str], list[Output]]:
        """Each scoped member's feedback digest, and the messages whose digest differs from the one
        ``sent`` last (kept with the citizen), or all of them with ``force``."""
        digests: dict[str, str] = {}
        outputs: list[Output] = []
        member_ts = {r: entry["ts"] for r, entry in entries.items()}
        for record_id in citizen["members"]:
            record = entries[record_id]["rec"]
            scope = self.feedback_scopes.get(record["source"])
            if scope is None:
                continue
            message = feedback_value(citizen, record_id, record, scope, self.registry, member_ts)
            digests[record_id] = digest = _digest(message)
            if force or sent.get(record_id) != digest:
                outputs.append(Output(FEEDBACK, record_id, message))
        return digests, outputs

    def _issues(self, entries: dict[str, Any], golden: dict[str, Any]) -> dict[str, list[str]]:
        """Citizen-level conflicts, each with the records involved (ids only)."""
        issues: dict[str, list[str]] = {}
        dates: dict[str, list[str]] = {}
        niks: dict[str, list[str]] = {}
        for record_id, entry in sorted(entries.items()):
            rec = entry["rec"]
            if rec["birth_date"]:
                dates.setdefault(rec["birth_date"], []).append(record_id)
            if rec["nik"]:
                niks.setdefault(rec["nik"], []).append(record_id)
        if golden.get("nik") and len(dates) > 1:
            # One NIK, several birth dates: a typo somewhere, for a person to correct at the source.
            issues["nik_birth_date_conflict"] = sorted(r for rs in dates.values() for r in rs)
        if len(niks) > 1:
            issues["multiple_niks"] = sorted(r for rs in niks.values() for r in rs)
        if golden.get("deceased"):
            aid = [r for r, e in sorted(entries.items()) if f"{e['rec']['source']}.{e['rec']['table']}" in self._aid_tables]
            if aid:
                issues["deceased_receiving_aid"] = aid
        return issues


@dataclass(frozen=True, slots=True)
class _Parsed:
    """A record as matching reads it: parsed, with what the model's comparisons take from it, both done once."""

    record: CanonicalRecord
    match_values: tuple[Any, ...]


@dataclass
class _Work:
    """What one change touched, gathered while applying it."""

    force: bool
    seeds: set[str] = field(default_factory=set)
    changed: set[str] = field(default_factory=set)
    old_masters: set[str] = field(default_factory=set)
    reedge: set[str] = field(default_factory=set)
    review_pairs: set[tuple[str, str]] = field(default_factory=set)


def _differs(before: abc.Mapping[str, Any] | None, after: abc.Mapping[str, Any] | None, columns: Iterable[str]) -> bool:
    """Whether two versions of a row (None: deleted or unseen) differ in any of ``columns``."""
    if before is None or after is None:
        return True
    return any(before.get(column) != after.get(column) for column in columns)


def _key(kind: str, *parts: str) -> str:
    return _SEP.join((kind, *parts))


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _index_add(index: dict[str, list[str]], key: str, record_id: str) -> list[str]:
    """Add ``record_id`` to the key's sorted members, in place; returns the members."""
    members = index.setdefault(key, [])
    position = bisect_left(members, record_id)
    if position == len(members) or members[position] != record_id:
        members.insert(position, record_id)
    return members


def _index_remove(index: dict[str, list[str]], key: str, record_id: str) -> list[str]:
    """Remove ``record_id`` from the key's members, in place (a key left empty goes); returns the members."""
    members = index.get(key, [])
    position = bisect_left(members, record_id)
    if position < len(members) and members[position] == record_id:
        del members[position]
    if not members:
        index.pop(key, None)
    return members


def _contributions(score: MatchScore) -> dict[str, float]:
    return {c.comparison: c.weight + c.tf_adjustment for c in score.contributions}


def _golden_value(name: str, value: Any) -> Any:
    if name == "titles":
        return list(value or [])
    return value


def _record_issue(record: CanonicalRecord, note: str, updated_ms: int) -> dict[str, Any]:
    return {"issue": note, "master_id": None, "record_ids": [record.record_id], "detected_ms": updated_ms}
