"""The lookup API's request and response bodies, as the OpenAPI description shows them.

Responses omit what the caller's scope does not cover: every golden field except ``master_id``
and ``deceased`` is optional, and absent (not null) when out of scope. Null means in scope but
unknown.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NikLookup(_Body):
    """A lookup by NIK."""

    nik: str = Field(
        pattern=r"^\d{16}$",
        description="The 16-digit NIK. Sent in the body, never in the URL: URLs end up in access logs, proxies and histories.",
    )


class NameSearch(_Body):
    """A search by name and birth date."""

    name: str = Field(min_length=2, max_length=200, description="Full name; compared case-insensitively.")
    birth_date: date = Field(description="YYYY-MM-DD")
    fuzzy: bool = Field(False, description="Also find close spellings among the citizens born that day (score 0-100, at least 85).")
    limit: int = Field(10, ge=1, le=50, description="At most this many citizens.")


class Citizen(BaseModel):
    """A golden record, limited to the caller's scope."""

    master_id: str
    deceased: bool | None = Field(description="Life status, visible to every agency; null when no trusted source says.")
    version: int = Field(description="Increases with every change of the golden record.")
    updated_at: datetime = Field(description="The latest source change among the citizen's records.")
    nik: str | None = None
    name: str | None = None
    titles: list[str] | None = None
    birth_date: date | None = None
    birth_place: str | None = None
    sex: str | None = Field(None, description="L or P")
    street: str | None = None
    rt: str | None = None
    rw: str | None = None
    kelurahan: str | None = None
    kecamatan: str | None = None
    kk: str | None = None
    phone: str | None = None
    match_score: float | None = Field(None, description="Fuzzy search only: name similarity, 0-100.")


class Citizens(BaseModel):
    """Citizens found (a lookup or a search)."""

    citizens: list[Citizen]


class LinkedRecord(BaseModel):
    """An agency record of the citizen and the edge that linked it."""

    record_id: str = Field(description="source:table:key; the key is * when it is a golden value outside the caller's scope (e.g. a NIK).")
    source: str
    table: str
    record_key: str | None = Field(description="Null when hidden (see record_id).")
    rule: str = Field(description="nik, kk_name, score, or new (the record the citizen started from).")
    matched_record_id: str | None = Field(description="The record it was linked to.")
    probability: float | None
    weight: float | None = Field(description="Match weight in bits of the deciding pair.")
    contributions: dict[str, float] = Field(description="Bits per comparison, for the comparisons of fields in the caller's scope.")
    updated_at: datetime


class Lineage(BaseModel):
    """Where a citizen's golden record comes from."""

    master_id: str
    fields: dict[str, str] = Field(description="Golden field (in scope) to the record id that gave its value.")
    records: list[LinkedRecord]


class Change(BaseModel):
    """One change of a golden record."""

    version: int
    change: Literal["created", "updated", "removed"]
    changed: dict[str, Any] = Field(
        description="Golden fields in the caller's scope as {old, new}; members as {added, removed} record ids; "
        "anchor_record_id and lineage as {old, new}. Record ids as in lineage (keys outside the scope are *)."
    )
    source_changed_at: datetime | None
    recorded_at: datetime


class History(BaseModel):
    """A citizen's changes, newest first."""

    master_id: str
    changes: list[Change]


class Problem(BaseModel):
    """Why a request was refused."""

    detail: Any
