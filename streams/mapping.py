"""Agency tables onto the canonical person record: a declarative mapping, and the pure conversion.

Each agency table is described in YAML (``mappings/kota-serang.yaml``): its source and table as in
``simpul.yaml``, its key column, whether a row describes a person or a household's head, an
optional join to a parent table, and which column holds which canonical field. Adding an agency is
configuration, not code. :func:`to_canonical` turns one row (a dict of column values) into a
:class:`CanonicalRecord` with the ``streams/normalize`` functions, and notes data-quality problems as
reason codes, never as values.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simpul.streams.survivorship import SurvivorshipSettings
from simpul.streams.normalize import (
    NikIssue,
    NikStatus,
    NormalizedName,
    ParsedDate,
    check_nik,
    normalize_kecamatan,
    normalize_kelurahan,
    normalize_name,
    normalize_phone,
    normalize_sex,
    normalize_street,
    parse_date,
    parse_rt_rw,
)

DEFAULT_MAPPING = Path(__file__).parent / "mappings" / "kota-serang.yaml"

_IDENTIFIER = r"^[a-z][a-z0-9_]*$"
_QUALIFIED = r"^[a-zA-Z_][a-zA-Z0-9_]*\.[a-zA-Z_][a-zA-Z0-9_]*$"
_COLUMN = r"^([a-z][a-z0-9_]*\.)?[a-zA-Z_][a-zA-Z0-9_]*$"  # column, or <join alias>.<column>
_KK_DIGITS = 16


class MappingError(Exception):
    """A mapping file that cannot be used, with a message naming the key and what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeceasedRule(_Strict):
    """A column whose listed values mean the person has died (any other value: alive)."""

    column: str = Field(pattern=_COLUMN)
    values: list[str] = Field(min_length=1)


class FieldColumns(_Strict):
    """Which source column holds each canonical field; a field left out is unknown for the table.

    ``address`` is a free-text address from which the street and RT/RW are parsed; ``street``,
    ``rt`` and ``rw`` are separate columns where the agency keeps them apart.
    """

    nik: str | None = Field(None, pattern=_COLUMN)
    name: str = Field(pattern=_COLUMN)
    sex: str | None = Field(None, pattern=_COLUMN)
    birth_date: str | None = Field(None, pattern=_COLUMN)
    birth_place: str | None = Field(None, pattern=_COLUMN)
    address: str | None = Field(None, pattern=_COLUMN)
    street: str | None = Field(None, pattern=_COLUMN)
    rt: str | None = Field(None, pattern=_COLUMN)
    rw: str | None = Field(None, pattern=_COLUMN)
    kelurahan: str | None = Field(None, pattern=_COLUMN)
    kecamatan: str | None = Field(None, pattern=_COLUMN)
    kk: str | None = Field(None, pattern=_COLUMN)
    phone: str | None = Field(None, pattern=_COLUMN)
    deceased: DeceasedRule | None = None

    def columns(self) -> set[str]:
        """Every source column this mapping reads."""
        named = {v for k, v in self.model_dump().items() if isinstance(v, str)}
        return named | ({self.deceased.column} if self.deceased else set())


class JoinSpec(_Strict):
    """A parent table joined on a column both tables share, e.g. a member's family row."""

    table: str = Field(pattern=_QUALIFIED)
    alias: str = Field(pattern=_IDENTIFIER)
    using: str = Field(pattern=_IDENTIFIER)
    columns: list[str] = Field(min_length=1)


class TableMapping(_Strict):
    """One agency table and how its rows become canonical person records."""

    source: str = Field(pattern=_IDENTIFIER)
    table: str = Field(pattern=_QUALIFIED)
    key: str = Field(pattern=_IDENTIFIER)
    entity: Literal["person", "household_head"] = "person"
    join: JoinSpec | None = None
    fields: FieldColumns

    @model_validator(mode="after")
    def _joined_columns_declared(self) -> TableMapping:
        for column in sorted(self.fields.columns()):
            alias, dot, name = column.rpartition(".")
            if not dot:
                continue
            if self.join is None or alias != self.join.alias:
                raise ValueError(f"column {column!r} names a join alias {alias!r} the table does not declare")
            if name not in self.join.columns:
                raise ValueError(f"column {column!r}: {name!r} is not in join.columns")
        return self

    def row_columns(self) -> frozenset[str]:
        """The columns of the table's own rows its records are made from (a joined parent's are
        ``join.columns``): the key, the join column and every field's own column."""
        own = {column for column in self.fields.columns() if "." not in column}
        return frozenset(own | {self.key} | ({self.join.using} if self.join else set()))

    @property
    def name(self) -> str:
        """``<source>.<table>``, how reports name it."""
        return f"{self.source}.{self.table}"


class QualityRules(_Strict):
    """Which tables mean what for the data-quality checks on citizens."""

    aid_tables: list[str] = Field(default_factory=list, description="<source>.<table> of social-aid recipients")


class Mapping(_Strict):
    """The whole mapping file: the region a local NIK starts with, the tables, and how golden
    records are assembled from them (survivorship) and checked (quality)."""

    version: Literal[1] = 1
    region_prefix: str = Field("36", pattern=r"^\d{2}(\d{2})?$")
    tables: list[TableMapping] = Field(min_length=1)
    survivorship: SurvivorshipSettings | None = None
    quality: QualityRules = QualityRules()

    @model_validator(mode="after")
    def _unique_tables(self) -> Mapping:
        names = [t.name for t in self.tables]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"table {name!r} is mapped twice")
        return self

    def read_tables(self) -> list[tuple[str, str]]:
        """Every (source, table) whose rows the mapping reads: the mapped tables and the joined ones."""
        joined = {(t.source, t.join.table) for t in self.tables if t.join is not None}
        return sorted({(t.source, t.table) for t in self.tables} | joined)

    def key_column(self, source: str, table: str) -> str:
        """The column identifying a row of a read table: its key, or for a joined table the join column."""
        for t in self.tables:
            if (t.source, t.table) == (source, table):
                return t.key
        for t in self.tables:
            if t.join is not None and (t.source, t.join.table) == (source, table):
                return t.join.using
        raise MappingError(f"table {source}.{table} is not in the mapping")

    def table(self, source: str, table: str) -> TableMapping:
        """The mapping of one table, or a :class:`MappingError` naming what is mapped."""
        for mapped in self.tables:
            if (mapped.source, mapped.table) == (source, table):
                return mapped
        raise MappingError(f"no mapping for {source}.{table} (mapped: {', '.join(t.name for t in self.tables)})")


def parse_mapping(raw: Any, origin: str = "mapping") -> Mapping:
    """Validate an already-parsed mapping; a :class:`MappingError` names the first problem's key."""
    if not isinstance(raw, dict):
        raise MappingError(f"{origin}: expected a mapping with 'tables' at the top, got {type(raw).__name__}")
    try:
        return Mapping.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(_loc_name(part, raw) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
        raise MappingError(f"{origin}: {key}: {message}{more}") from None


def _loc_name(part: Any, raw: dict[str, Any]) -> str:
    # A table is easier to find by its name than by its list index.
    if isinstance(part, int):
        tables = raw.get("tables")
        if isinstance(tables, list) and part < len(tables) and isinstance(tables[part], dict):
            return f"[{tables[part].get('source', '?')}.{tables[part].get('table', '?')}]"
    return str(part)


def align_databases(mapping: Mapping, databases: dict[str, str]) -> Mapping:
    """The mapping with the tables of each source in ``databases`` qualified by that database.

    MySQL qualifies a table by its database, so a mapping written for ``disnaker.ak1_pencari_kerja``
    follows a source configured with another database (a test's or another city's copy).
    """

    def moved(source: str, table: str) -> str:
        database = databases.get(source)
        return f"{database}.{table.split('.', 1)[1]}" if database else table

    tables = []
    for t in mapping.tables:
        join = t.join.model_copy(update={"table": moved(t.source, t.join.table)}) if t.join else None
        tables.append(t.model_copy(update={"table": moved(t.source, t.table), "join": join}))
    aid = []
    for name in mapping.quality.aid_tables:
        source, table = name.split(".", 1)
        aid.append(f"{source}.{moved(source, table)}")
    return mapping.model_copy(update={"tables": tables, "quality": mapping.quality.model_copy(update={"aid_tables": aid})})


def load_mapping(path: Path | None = None) -> Mapping:
    """Read and validate a mapping file (default: the shipped Kota Serang mapping)."""
    path = path or DEFAULT_MAPPING
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MappingError(f"{path}: mapping file not found") from None
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    return parse_mapping(raw, origin=str(path))


# --- the canonical record -----------------------------------------------------------------------


@dataclass(slots=True)
class CanonicalRecord:
    """One agency record as a person record in canonical form (what matching compares)."""

    source: str
    table: str
    record_key: str
    nik: str | None = None  # 16 digits, only when valid (never a placeholder or malformed value)
    nik_raw_status: str = "missing"  # valid / disagrees / invalid / missing
    name: str | None = None
    name_tokens: tuple[str, ...] = ()
    titles: tuple[str, ...] = ()
    birth_date: date | None = None
    sex: str | None = None
    birth_place: str | None = None
    street: str | None = None
    rt: str | None = None
    rw: str | None = None
    kelurahan: str | None = None
    kecamatan: str | None = None
    kk: str | None = None
    phone: str | None = None
    deceased: bool | None = None
    quality_notes: list[str] = field(default_factory=list)

    @property
    def record_id(self) -> str:
        """``source:table:record_key``, unique across agencies."""
        return f"{self.source}:{self.table}:{self.record_key}"

    @property
    def nik_verified(self) -> bool:
        """A valid NIK whose birth date and sex were checked against the record's own and agree."""
        return self.nik is not None and self.nik_raw_status == "valid" and self.birth_date is not None and self.sex is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (dates as ISO text, tuples as lists)."""
        # Field by field rather than dataclasses.asdict, which deep-copies recursively: this runs per change.
        return {
            "source": self.source, "table": self.table, "record_key": self.record_key,
            "nik": self.nik, "nik_raw_status": self.nik_raw_status, "name": self.name,
            "name_tokens": list(self.name_tokens), "titles": list(self.titles),
            "birth_date": self.birth_date.isoformat() if self.birth_date else None,
            "sex": self.sex, "birth_place": self.birth_place, "street": self.street, "rt": self.rt, "rw": self.rw,
            "kelurahan": self.kelurahan, "kecamatan": self.kecamatan, "kk": self.kk, "phone": self.phone,
            "deceased": self.deceased, "quality_notes": list(self.quality_notes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CanonicalRecord:
        """Inverse of :meth:`to_dict`; unknown keys are refused (a typo would silently drop a field)."""
        values = dict(data)
        birth = values.get("birth_date")
        values["birth_date"] = date.fromisoformat(birth) if isinstance(birth, str) else birth
        values["name_tokens"] = tuple(values.get("name_tokens") or ())
        values["titles"] = tuple(values.get("titles") or ())
        values["record_key"] = str(values.get("record_key"))
        return cls(**values)


# --- rows to records ----------------------------------------------------------------------------

_NOT_DIGITS = re.compile(r"\D")


@functools.lru_cache(maxsize=4096)
def _kelurahan(text: str, kecamatan: str | None) -> tuple[str, str] | None:
    # Agencies repeat the same few hundred spellings of 67 names; fuzzy matching each row again is waste.
    found = normalize_kelurahan(text, kecamatan)
    return (found.kelurahan, found.kecamatan) if found else None


@functools.lru_cache(maxsize=256)
def _kecamatan(text: str) -> str | None:
    return normalize_kecamatan(text)


@functools.lru_cache(maxsize=65_536)
def _street(text: str | None) -> str | None:
    # The members of a family card share its address, and a change to the card re-reads them all.
    return normalize_street(text)


@functools.lru_cache(maxsize=4096)
def _rt_rw(text: str | None) -> tuple[str, str] | None:
    return parse_rt_rw(text)


@functools.lru_cache(maxsize=65_536)
def _date_text(text: str) -> ParsedDate:
    # Birth dates repeat (a city's residents were born on some 30,000 days); ``ParsedDate`` is immutable.
    return parse_date(text)


def _birth_date(value: object) -> ParsedDate:
    return _date_text(value) if isinstance(value, str) else parse_date(value)


@functools.lru_cache(maxsize=65_536)
def _name(text: str | None) -> NormalizedName:
    # A record is normalised again at every change to it or to its family card, and namesakes
    # are many: most names have been normalised before (``NormalizedName`` is immutable). The
    # end-to-end benchmark's 20,000 residents hold 32,700 spellings: at 16,384 entries half the
    # lookups of its steady changes missed, at 65,536 a third did, and a change took 6% less time
    # (a full cache holds about 48 MB).
    return normalize_name(text)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text or None


def _nik_fields(raw: Any, birth_date: date | None, sex: str | None, region_prefix: str, today: date | None, notes: list[str]) -> tuple[str | None, str]:
    check = check_nik(raw, birth_date, sex, region_prefix=region_prefix, today=today)
    if check.status is NikStatus.MISSING:
        notes.append("nik_placeholder" if NikIssue.PLACEHOLDER in check.issues else "nik_missing")
        return None, "missing"
    if check.status is NikStatus.INVALID:
        notes.extend(f"nik_invalid_{issue.value}" for issue in check.issues)
        return None, "invalid"
    if not check.is_usable_for_linking:
        # Well formed but contradicting the record: a mistyped NIK or the KK number in its field.
        notes.extend(f"nik_{issue.value}" for issue in check.issues)
        return None, "disagrees"
    return check.nik, "valid"


def to_canonical(row: dict[str, Any], mapping: TableMapping, region_prefix: str = "36", today: date | None = None) -> CanonicalRecord:
    """The canonical person record of one agency row (column name → value) under its table mapping.

    ``today`` fixes the century guess of NIK birth dates (default: the current date). Pure: the
    only output is the record, whose ``quality_notes`` hold reason codes, never values.
    """
    cols = mapping.fields
    notes: list[str] = []

    def get(column: str | None) -> Any:
        return row.get(column) if column else None

    record = CanonicalRecord(mapping.source, mapping.table, str(row[mapping.key]))

    name = _name(_text(get(cols.name)))
    if name.is_newborn_placeholder:
        # "By. Ny. <mother>" is the mother's name on a newborn's file: it would match the mother.
        notes.append("name_newborn_placeholder")
    elif name.is_empty:
        notes.append("name_empty")
    else:
        record.name, record.name_tokens = name.full, name.tokens
    record.titles = name.titles

    if cols.birth_date:
        parsed = _birth_date(get(cols.birth_date))
        record.birth_date = parsed.value
        if parsed.issue is not None:
            notes.append(f"birth_date_{parsed.issue.value}")
    if cols.sex:
        record.sex = normalize_sex(get(cols.sex))
        if record.sex is None:
            notes.append("sex_unknown")
    if cols.nik:
        record.nik, record.nik_raw_status = _nik_fields(get(cols.nik), record.birth_date, record.sex, region_prefix, today, notes)

    record.birth_place = _text(get(cols.birth_place))
    record.birth_place = record.birth_place.upper() if record.birth_place else None
    _address(record, row, cols, notes)

    if cols.kk:
        digits = _NOT_DIGITS.sub("", str(get(cols.kk) or ""))
        record.kk = digits if len(digits) == _KK_DIGITS and len(set(digits)) > 1 else None
        if record.kk is None:
            notes.append("kk_missing" if not digits else "kk_invalid")
    if cols.phone:
        raw_phone = _text(get(cols.phone))
        record.phone = normalize_phone(raw_phone)
        if raw_phone and record.phone is None:
            notes.append("phone_not_mobile")
    if cols.deceased:
        status = _text(get(cols.deceased.column))
        record.deceased = None if status is None else status.upper() in {v.upper() for v in cols.deceased.values}
    record.quality_notes = notes
    return record


def _address(record: CanonicalRecord, row: dict[str, Any], cols: FieldColumns, notes: list[str]) -> None:
    """Street, RT/RW, kelurahan and kecamatan, from separate columns or a free-text address."""
    address = _text(row.get(cols.address)) if cols.address else None
    record.street = _street(_text(row.get(cols.street)) if cols.street else address)
    rt_rw = None
    if cols.rt and cols.rw:
        rt, rw = _text(row.get(cols.rt)), _text(row.get(cols.rw))
        rt_rw = _rt_rw(f"RT {rt} RW {rw}") if rt and rw else None
    elif address:
        rt_rw = _rt_rw(address)
    if rt_rw is None and (address or cols.rt):
        notes.append("rt_rw_missing")
    record.rt, record.rw = rt_rw if rt_rw else (None, None)
    typed_kecamatan = _text(row.get(cols.kecamatan)) if cols.kecamatan else None
    typed_kelurahan = _text(row.get(cols.kelurahan)) if cols.kelurahan else None
    found = _kelurahan(typed_kelurahan, typed_kecamatan) if typed_kelurahan else None
    if found:
        record.kelurahan, record.kecamatan = found
    else:
        if cols.kelurahan:
            notes.append("kelurahan_unknown")
        record.kecamatan = _kecamatan(typed_kecamatan) if typed_kecamatan else None
