"""What the registry does, independent of HTTP: register, look up, delete, check, configure.

Single writer: one registry process owns a storage topic. A registration first reads what the
topic held at the reader's last fetch (so a second instance started by mistake most likely sees
what the first wrote before it allocates an id; this narrows the race, it does not close it), then
produces, then applies the topic up to its own acknowledged record. One lock serialises everything in the
process; reads are dictionary look-ups and writes are rare, so the lock is never contended for long.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from simpul.schemas.compatibility import CompatibilityLevel, check_compatibility
from simpul.schemas.registry.canonical import InvalidSchema, canonical_schema
from simpul.schemas.registry.state import (
    RegistryState,
    SchemaVersion,
    config_key,
    config_value,
    schema_key,
    schema_value,
)
from simpul.kafka_store import Apply

MAX_VERSION = 2**31 - 1


class RegistryError(Exception):
    """An API error with Confluent's HTTP status and error code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def version_not_found(subject: str, version: object) -> RegistryError:
    return RegistryError(404, 40402, f"Version {version} not found for subject '{subject}'.")


def schema_not_found(detail: str = "Schema not found") -> RegistryError:
    return RegistryError(404, 40403, detail)


class Store(Protocol):
    """What the service needs from the storage topic (``KafkaStore`` in production)."""

    def end_offset(self, cached: bool = False) -> int:
        """The offset after the last record (``cached``: as last seen, without asking)."""

    def catch_up(self, apply: Apply) -> int:
        """Apply every record up to the topic's end; the number applied."""

    def read_to(self, apply: Apply, end: int) -> int:
        """Apply every record before offset ``end``; the number applied."""

    def append(self, key: bytes, value: bytes | None) -> int:
        """Write one record durably; its offset."""


@dataclass(frozen=True)
class SchemaRequest:
    """A schema as submitted in a request body."""

    schema: str
    schema_type: str = "AVRO"

    @classmethod
    def from_body(cls, body: Any) -> "SchemaRequest":
        """Validate a ``{"schema": ..., "schemaType": ..., "references": [...]}`` body."""
        if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
            raise RegistryError(422, 42201, "Invalid schema: the body needs a 'schema' string")
        schema_type = body.get("schemaType") or "AVRO"
        if schema_type != "AVRO":
            raise RegistryError(422, 42201, f"Invalid schema: schemaType {schema_type} is not supported (only AVRO)")
        if body.get("references"):
            raise RegistryError(422, 42201, "Invalid schema: schema references are not supported")
        try:
            return cls(canonical_schema(body["schema"]), schema_type)
        except InvalidSchema as exc:
            raise RegistryError(422, 42201, f"Invalid schema: {exc}") from None


def parse_version(text: str | int) -> int | None:
    """A version number, or ``None`` for ``latest`` (or ``-1``); 42202 otherwise."""
    if str(text) in ("latest", "-1"):
        return None
    try:
        version = int(str(text))
    except ValueError:
        version = 0
    if not 1 <= version <= MAX_VERSION:
        raise RegistryError(
            422, 42202, f"The specified version '{text}' is not a valid version id. "
            "Allowed values are between [1, 2^31-1] and the string \"latest\""
        )
    return version


def parse_level(body: Any) -> str:
    """The compatibility level in a ``{"compatibility": L}`` body; 42203 if none is valid."""
    level = (body.get("compatibility") or body.get("compatibilityLevel")) if isinstance(body, dict) else None
    try:
        return CompatibilityLevel(str(level).upper()).value
    except ValueError:
        raise RegistryError(422, 42203, f"Invalid compatibility level: {level}") from None


class RegistryService:
    """The registry over one storage topic."""

    def __init__(self, store: Store, on_change: Callable[[RegistryState], None] | None = None) -> None:
        self._store = store
        self._state = RegistryState()
        self._lock = threading.RLock()
        self._on_change = on_change or (lambda state: None)

    def start(self) -> int:
        """Rebuild the state from the whole storage topic; the number of records read."""
        with self._lock:
            count = self._store.catch_up(self._state.apply)
            self._on_change(self._state)
            return count

    def _write(self, key: bytes, value: bytes | None) -> None:
        offset = self._store.append(key, value)
        self._store.read_to(self._state.apply, offset + 1)
        self._on_change(self._state)

    # --- subjects and versions ------------------------------------------------------------

    def subjects(self, deleted: bool = False, prefix: str = "") -> list[str]:
        """Subject names (with soft-deleted ones if ``deleted``), optionally by prefix."""
        with self._lock:
            return [s for s in self._state.subject_names(deleted) if s.startswith(prefix)]

    def versions(self, subject: str, deleted: bool = False) -> list[int]:
        """Version numbers of ``subject``; 40401 if it has none."""
        with self._lock:
            entries = self._state.versions(subject, deleted)
        if not entries:
            raise subject_not_found(subject)
        return [entry.version for entry in entries]

    def version(self, subject: str, version: str | int, deleted: bool = False) -> SchemaVersion:
        """One version (``latest`` allowed); 40401 or 40402 if missing."""
        number = parse_version(version)
        with self._lock:
            entries = self._state.versions(subject, deleted=True)
            if not entries:
                raise subject_not_found(subject)
            visible = [e for e in entries if deleted or not e.deleted]
            if number is None:
                if not visible:
                    raise subject_not_found(subject)
                return visible[-1]
            match = next((e for e in visible if e.version == number), None)
        if match is None:
            raise version_not_found(subject, version)
        return match

    def register(self, subject: str, request: SchemaRequest) -> SchemaVersion:
        """Register ``request`` under ``subject``: the existing version for an identical schema,
        else a new version after the compatibility check (409 if it fails)."""
        with self._lock:
            self._store.read_to(self._state.apply, self._store.end_offset(cached=True))
            live = self._state.versions(subject)
            for entry in live:
                if entry.schema == request.schema and entry.schema_type == request.schema_type:
                    return entry
            reasons = self._incompatibilities(subject, request.schema, live, self._state.level(subject))
            if reasons:
                raise RegistryError(
                    409, 409, "Schema being registered is incompatible with an earlier schema for subject "
                    f"\"{subject}\", details: [{'; '.join(reasons)}]"
                )
            schema_id = self._state.id_by_schema.get((request.schema_type, request.schema)) or self._state.next_id()
            entry = SchemaVersion(subject, self._state.next_version(subject), schema_id, request.schema, request.schema_type)
            self._write(schema_key(subject, entry.version), schema_value(entry))
            return entry

    def lookup(self, subject: str, request: SchemaRequest, deleted: bool = False) -> SchemaVersion:
        """The version of ``subject`` holding exactly this schema; 40401 or 40403 if none."""
        with self._lock:
            entries = self._state.versions(subject, deleted)
        if not entries:
            raise subject_not_found(subject)
        for entry in reversed(entries):
            if entry.schema == request.schema and entry.schema_type == request.schema_type:
                return entry
        raise schema_not_found()

    def delete_version(self, subject: str, version: str | int, permanent: bool = False) -> int:
        """Soft-delete one version; its number. Permanent deletes are refused (ids are never reused)."""
        self._refuse_permanent(permanent)
        with self._lock:
            entry = self.version(subject, version)
            self._write(schema_key(subject, entry.version), schema_value(_deleted(entry)))
            return entry.version

    def delete_subject(self, subject: str, permanent: bool = False) -> list[int]:
        """Soft-delete every live version of ``subject``; their numbers."""
        self._refuse_permanent(permanent)
        with self._lock:
            entries = self._state.versions(subject)
            if not entries:
                raise subject_not_found(subject)
            for entry in entries:
                self._write(schema_key(subject, entry.version), schema_value(_deleted(entry)))
            return [entry.version for entry in entries]

    @staticmethod
    def _refuse_permanent(permanent: bool) -> None:
        if permanent:
            raise RegistryError(
                422, 42205, "Permanent deletes are not supported by Simpul's registry: "
                "a removed schema id could be handed out again after compaction"
            )

    # --- schemas by id --------------------------------------------------------------------

    def schema_by_id(self, schema_id: int) -> tuple[str, str]:
        """``(schema type, schema text)`` of a global id; 40403 if unknown."""
        with self._lock:
            found = self._state.schemas_by_id.get(schema_id)
        if found is None:
            raise schema_not_found(f"Schema {schema_id} not found")
        return found

    def usages(self, schema_id: int, deleted: bool = False) -> list[SchemaVersion]:
        """Every subject version that holds the schema ``schema_id``; 40403 if unknown."""
        self.schema_by_id(schema_id)
        with self._lock:
            return [
                entry
                for subject in sorted(self._state.subjects)
                for entry in self._state.versions(subject, deleted)
                if entry.schema_id == schema_id
            ]

    def schema_count(self) -> int:
        """How many distinct schemas (global ids) the registry holds."""
        with self._lock:
            return len(self._state.schemas_by_id)

    # --- compatibility --------------------------------------------------------------------

    def test_compatibility(self, subject: str, request: SchemaRequest, version: str | int | None) -> list[str]:
        """Reasons ``request`` would be refused: against one version (``version``) or, with
        ``None``, against the versions the subject's level compares with."""
        with self._lock:
            level = self._state.level(subject)
            live = self._state.versions(subject)
            if version is None:
                return self._incompatibilities(subject, request.schema, live, level)
            if parse_version(version) is None and not live:
                return []
            target = self.version(subject, version)
            single_level = level.removesuffix("_TRANSITIVE")
            return self._incompatibilities(subject, request.schema, [target], single_level)

    @staticmethod
    def _incompatibilities(subject: str, schema: str, previous: list[SchemaVersion], level: str) -> list[str]:
        return check_compatibility(level, schema, [(f"version {e.version}", e.schema) for e in previous])

    # --- configuration --------------------------------------------------------------------

    def level(self, subject: str | None, default_to_global: bool = True) -> str:
        """The compatibility level of ``subject`` (global if ``None``); 40408 if the subject has
        none of its own and ``default_to_global`` is false (Confluent's behaviour)."""
        with self._lock:
            if subject is not None and subject not in self._state.levels and not default_to_global:
                raise RegistryError(
                    404, 40408, f"Subject '{subject}' does not have subject-level compatibility configured"
                )
            return self._state.level(subject)

    def set_level(self, subject: str | None, level: str) -> str:
        """Set the compatibility level of ``subject`` (global if ``None``)."""
        with self._lock:
            self._write(config_key(subject), config_value(level))
            return level

    def delete_level(self, subject: str | None) -> str:
        """Remove the level of ``subject`` (global: back to the default); the level it had."""
        with self._lock:
            previous = self.level(subject, default_to_global=subject is None)
            self._write(config_key(subject), None)
            return previous


def _deleted(entry: SchemaVersion) -> SchemaVersion:
    return SchemaVersion(entry.subject, entry.version, entry.schema_id, entry.schema, entry.schema_type, True)
