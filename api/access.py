"""Who may call the lookup API, and what each caller may see.

- Keys: each agency in ``api.clients`` has its own API key, read from the environment variable its
  ``key_env`` names (never from a file in the repository). Keys are compared in constant time
  against every configured key, so the time taken says nothing about which one nearly matched.
- Scope: an agency sees ``master_id`` and ``deceased`` always, and of the other golden fields only
  those in its ``fields``. Whatever is outside is omitted: from citizens, from lineage's per-field
  map and comparison weights, from history's changes. A record id whose key *is* a golden
  value (Disdukcapil's ``penduduk`` is keyed by NIK, ``kartu_keluarga`` by KK) has that key hidden
  from an agency that may not see the field.
- Purpose: every call says why (``X-Purpose``); it is stored in the audit table, so it must not
  carry personal data itself.

Everything here is pure (the environment comes in as a mapping), so it is unit-tested directly.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args

from simpul.config import ApiSettings, ConfigError, FeedbackField
from simpul.streams.mapping import Mapping as AgencyMapping

# The golden fields an agency can be given, in the Citizen schema's order.
SCOPED_FIELDS: tuple[str, ...] = get_args(FeedbackField)
ALWAYS_VISIBLE: tuple[str, ...] = ("master_id", "deceased")
UNKNOWN_AGENCY = "unknown"
MIN_KEY_LENGTH = 16
PURPOSE_MAX_LENGTH = 200
REDACTED_KEY = "*"

# Eight digits in a row look like a NIK, a KK number or a phone number: not a purpose.
_PERSONAL_NUMBER = re.compile(r"\d{8}")

# (source, table) -> the golden fields a record key of that table is the value of.
KeyFields = Mapping[tuple[str, str], frozenset[str]]


class ScopeError(Exception):
    """A request needs fields outside the caller's scope; the message names them."""


class PurposeError(Exception):
    """The ``X-Purpose`` header is missing or unusable; the message says why."""


@dataclass(frozen=True)
class Caller:
    """An authenticated agency and the golden fields it may see (besides the always-visible ones)."""

    agency: str
    fields: frozenset[str]

    @property
    def columns(self) -> tuple[str, ...]:
        """The golden fields in scope, in schema order (``deceased`` excluded: it is always read)."""
        return tuple(name for name in SCOPED_FIELDS if name in self.fields)

    def sees(self, name: str) -> bool:
        """Whether a response to this caller may carry field ``name``."""
        return name in ALWAYS_VISIBLE or name in self.fields

    def require(self, needed: Iterable[str], what: str) -> None:
        """Raise :class:`ScopeError` unless every field in ``needed`` is in scope; ``what`` names the request."""
        missing = [name for name in needed if not self.sees(name)]
        if missing:
            raise ScopeError(
                f"{what} needs the field(s) {', '.join(missing)}, outside the scope of agency {self.agency} "
                "(api.clients[].fields)"
            )

    def visible(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of a field-keyed map (lineage, changed fields, comparison weights) this caller
        may see; keys that are not golden fields are dropped too, so an unexpected key fails closed."""
        return {name: value for name, value in values.items() if self.sees(name)}


class Keyring:
    """The configured agencies by API key."""

    def __init__(self, callers: list[tuple[bytes, Caller]]) -> None:
        self._callers = callers

    @classmethod
    def from_settings(cls, api: ApiSettings, environ: Mapping[str, str]) -> Keyring:
        """Read each client's key from ``environ``; a :class:`ConfigError` names a missing, short
        or shared key (a shared key would make two agencies indistinguishable in the audit)."""
        callers: list[tuple[bytes, Caller]] = []
        owners: dict[bytes, str] = {}
        for client in api.clients:
            where = f"api.clients.{client.agency}.key_env"
            key = environ.get(client.key_env)
            if not key:
                raise ConfigError(f"{where}: environment variable {client.key_env} is not set (it must hold the agency's API key)")
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(f"{where}: the key in {client.key_env} is shorter than {MIN_KEY_LENGTH} characters")
            digest = _digest(key)
            if digest in owners:
                raise ConfigError(f"{where}: agencies {owners[digest]} and {client.agency} have the same key")
            owners[digest] = client.agency
            callers.append((digest, Caller(client.agency, frozenset(client.fields))))
        return cls(callers)

    def authenticate(self, key: str | None) -> Caller | None:
        """The agency whose key this is, or None (no key, or an unknown one)."""
        if not key:
            return None
        presented = _digest(key)
        found = None
        for digest, caller in self._callers:
            # No early exit: every key is compared, whichever matches.
            if hmac.compare_digest(presented, digest):
                found = caller
        return found


def _digest(key: str) -> bytes:
    # Fixed-length digests make compare_digest's time independent of the keys' lengths too.
    return hashlib.sha256(key.encode()).digest()


def check_purpose(raw: str | None) -> str:
    """The stated purpose, whitespace collapsed; :class:`PurposeError` if missing, too long, or
    holding what looks like a NIK, KK or phone number (the purpose is stored in the audit table)."""
    purpose = " ".join((raw or "").split())
    if not purpose:
        raise PurposeError("the X-Purpose header is required: say why this record is read (e.g. 'verifikasi pendaftaran AK/1')")
    if len(purpose) > PURPOSE_MAX_LENGTH:
        raise PurposeError(f"X-Purpose is longer than {PURPOSE_MAX_LENGTH} characters")
    if _PERSONAL_NUMBER.search(purpose):
        raise PurposeError("X-Purpose must not hold personal data: a run of 8 or more digits looks like a NIK, KK or phone number")
    return purpose


def record_key_fields(mapping: AgencyMapping) -> dict[tuple[str, str], frozenset[str]]:
    """For every mapped table, the golden fields its record key is the value of (often none)."""
    keyed: dict[tuple[str, str], frozenset[str]] = {}
    for table in mapping.tables:
        keyed[(table.source, table.table)] = frozenset(
            name for name in SCOPED_FIELDS if getattr(table.fields, name, None) == table.key
        )
    return keyed


def shown_record_id(record_id: str, caller: Caller, key_fields: KeyFields) -> str:
    """``source:table:key``, with the key replaced by ``*`` when it is the value of a golden field
    the caller may not see, or when the table is not in the mapping (nothing known: fail closed)."""
    source, _, rest = record_id.partition(":")
    table, _, key = rest.partition(":")
    carried = key_fields.get((source, table))
    if carried is not None and all(caller.sees(name) for name in carried):
        return record_id
    return f"{source}:{table}:{REDACTED_KEY}" if key else record_id


def shown_lineage(lineage: Mapping[str, str], caller: Caller, key_fields: KeyFields) -> dict[str, str]:
    """Golden field to the record id that gave it, for the fields in scope (record ids as shown)."""
    return {name: shown_record_id(record_id, caller, key_fields) for name, record_id in caller.visible(lineage).items()}


def visible_changes(changed: Mapping[str, Any], caller: Caller, key_fields: KeyFields) -> dict[str, Any]:
    """One history row's changes as the caller may see them: golden fields in scope; member,
    anchor and lineage changes with record ids as shown; anything else (new attributes) dropped."""
    shown = caller.visible(changed)
    if "members" in changed:
        shown["members"] = {side: [shown_record_id(r, caller, key_fields) for r in ids] for side, ids in changed["members"].items()}
    if "anchor_record_id" in changed:
        shown["anchor_record_id"] = {
            side: shown_record_id(r, caller, key_fields) if r is not None else None for side, r in changed["anchor_record_id"].items()
        }
    if "lineage" in changed:
        sides = {side: shown_lineage(m or {}, caller, key_fields) for side, m in changed["lineage"].items()}
        # Provenance that moved only among fields out of scope is no change to this caller.
        if sides.get("old") != sides.get("new"):
            shown["lineage"] = sides
    return shown


def visible_history(changes: list[dict[str, Any]], caller: Caller, key_fields: KeyFields) -> list[dict[str, Any]]:
    """History rows with ``changed`` as the caller may see it (:func:`visible_changes`); an update
    that changed nothing it may see is left out (that something changed there is not its business)."""
    shown = []
    for change in changes:
        changed = visible_changes(change["changed"], caller, key_fields)
        if change["change"] == "updated" and not changed:
            continue
        shown.append({**change, "changed": changed})
    return shown
