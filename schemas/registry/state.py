"""The registry's state, and the records of the storage topic it is rebuilt from.

The storage topic uses the record layout of Confluent's registry (``_schemas``):

- key ``{"keytype":"SCHEMA","subject":S,"version":V,"magic":1}`` → value
  ``{"subject":S,"version":V,"id":N,"schema":TEXT,"deleted":false}`` (``schemaType`` only when
  not AVRO). A soft delete writes the same key again with ``"deleted":true``.
- key ``{"keytype":"CONFIG","subject":S or null,"magic":0}`` → ``{"compatibilityLevel":L}``;
  a tombstone removes the subject's level.

Other key types (Confluent's NOOP, MODE, DELETE_SUBJECT...) are skipped. :meth:`RegistryState.apply`
is the only way state changes, so a registry that replays the topic from the start, even after
``kill -9``, serves exactly what was acknowledged before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

DEFAULT_COMPATIBILITY = "BACKWARD"


@dataclass(frozen=True)
class SchemaVersion:
    """One version of a subject."""

    subject: str
    version: int
    schema_id: int
    schema: str
    schema_type: str = "AVRO"
    deleted: bool = False


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def schema_key(subject: str, version: int) -> bytes:
    """The storage key of ``subject`` version ``version``."""
    return _json({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})


def schema_value(entry: SchemaVersion) -> bytes:
    """The storage value of ``entry``."""
    value: dict[str, object] = {
        "subject": entry.subject,
        "version": entry.version,
        "id": entry.schema_id,
        "schema": entry.schema,
        "deleted": entry.deleted,
    }
    if entry.schema_type != "AVRO":
        value["schemaType"] = entry.schema_type
    return _json(value)


def config_key(subject: str | None) -> bytes:
    """The storage key of the compatibility level of ``subject`` (``None``: the global level)."""
    return _json({"keytype": "CONFIG", "subject": subject, "magic": 0})


def config_value(level: str) -> bytes:
    """The storage value of a compatibility level."""
    return _json({"compatibilityLevel": level})


@dataclass
class RegistryState:
    """Subjects, versions, global ids and compatibility levels, as the storage topic says."""

    subjects: dict[str, dict[int, SchemaVersion]] = field(default_factory=dict)
    schemas_by_id: dict[int, tuple[str, str]] = field(default_factory=dict)
    id_by_schema: dict[tuple[str, str], int] = field(default_factory=dict)
    levels: dict[str | None, str] = field(default_factory=dict)

    def apply(self, key: bytes, value: bytes | None) -> None:
        """Apply one record of the storage topic (replays and fresh writes alike)."""
        parsed_key = json.loads(key)
        keytype = parsed_key.get("keytype")
        if keytype == "SCHEMA":
            self._apply_schema(parsed_key, value)
        elif keytype == "CONFIG":
            subject = parsed_key.get("subject")
            if value is None:
                self.levels.pop(subject, None)
            else:
                self.levels[subject] = json.loads(value)["compatibilityLevel"]

    def _apply_schema(self, key: dict[str, object], value: bytes | None) -> None:
        subject, version = str(key["subject"]), int(str(key["version"]))
        if value is None:
            # A hard delete written by another registry; ids stay known so none is ever reused.
            self.subjects.get(subject, {}).pop(version, None)
            return
        data = json.loads(value)
        entry = SchemaVersion(
            subject=subject,
            version=version,
            schema_id=int(data["id"]),
            schema=data["schema"],
            schema_type=data.get("schemaType", "AVRO"),
            deleted=bool(data.get("deleted", False)),
        )
        self.subjects.setdefault(subject, {})[version] = entry
        self.schemas_by_id[entry.schema_id] = (entry.schema_type, entry.schema)
        self.id_by_schema.setdefault((entry.schema_type, entry.schema), entry.schema_id)

    # --- queries --------------------------------------------------------------------------

    def versions(self, subject: str, deleted: bool = False) -> list[SchemaVersion]:
        """The versions of ``subject``, oldest first; soft-deleted ones only if ``deleted``."""
        entries = self.subjects.get(subject, {})
        return [entries[v] for v in sorted(entries) if deleted or not entries[v].deleted]

    def subject_names(self, deleted: bool = False) -> list[str]:
        """Subjects with at least one live version (any version if ``deleted``), sorted."""
        return sorted(s for s in self.subjects if self.versions(s, deleted))

    def next_id(self) -> int:
        """The id a new schema gets: one more than any id seen."""
        return max(self.schemas_by_id, default=0) + 1

    def next_version(self, subject: str) -> int:
        """The version a new registration in ``subject`` gets (deleted versions count too)."""
        return max(self.subjects.get(subject, {}), default=0) + 1

    def level(self, subject: str | None) -> str:
        """The compatibility level in force for ``subject``: its own, else the global one."""
        if subject is not None and subject in self.levels:
            return self.levels[subject]
        return self.levels.get(None, DEFAULT_COMPATIBILITY)
