"""Avro schema compatibility: the "Schema Resolution" rules of the Avro specification, and the
Confluent compatibility levels built on them.

Everything here is pure: schemas go in as parsed JSON (``str``/``list``/``dict``, or the JSON
text), reasons come out as human-readable strings that name the field path, so a rejected schema
change mid-stream can be explained in one log line. An empty list means compatible.

Rules applied (reader = the schema that decodes, writer = the schema the data was written with):
records match by unqualified name (or a reader alias); a reader field missing from the writer
needs a default; writer fields unknown to the reader are skipped. Enums match by name; every
writer symbol must be a reader symbol unless the reader has a default. Fixed types match by name
and size. Arrays and maps compare their items and values. Unions: every writer branch must be
readable by some reader branch. Promotions int→long→float→double and string↔bytes are allowed.
Logical types are annotations: a change on the same physical type is compatible, except that a
decimal's precision and scale must stay the same when both sides are decimals.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum
from typing import Any

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
NAMED = frozenset({"record", "error", "enum", "fixed"})

# Writer type -> reader types that may read it (besides itself), from the Avro specification.
_PROMOTIONS: dict[str, frozenset[str]] = {
    "int": frozenset({"long", "float", "double"}),
    "long": frozenset({"float", "double"}),
    "float": frozenset({"double"}),
    "string": frozenset({"bytes"}),
    "bytes": frozenset({"string"}),
}


class SchemaError(ValueError):
    """The schema is not a valid Avro schema (unknown type, reference to an undefined name...)."""


class CompatibilityLevel(str, Enum):
    """Confluent Schema Registry compatibility levels."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"


def can_read(reader: Any, writer: Any) -> list[str]:
    """Why data written with ``writer`` cannot be decoded with ``reader``; empty if it can.

    Both schemas may be JSON text or parsed JSON. Each reason starts with the field path
    (``after.age``; ``[]`` marks array items, ``{}`` map values, ``(root)`` the top level).
    """
    return _Checker(_resolve(reader), _resolve(writer)).check()


def check_compatibility(
    level: CompatibilityLevel | str, new: Any, previous: Sequence[tuple[str, Any]]
) -> list[str]:
    """Why ``new`` may not follow ``previous`` under ``level``; empty if it may.

    ``previous`` lists ``(label, schema)`` oldest first (the label, e.g. ``"version 3"``, names
    the schema in the reasons). Non-transitive levels only compare with the last one.
    """
    level = CompatibilityLevel(level)
    if level is CompatibilityLevel.NONE or not previous:
        return []
    transitive = level.value.endswith("_TRANSITIVE")
    against = list(previous) if transitive else [previous[-1]]
    base = level.value.removesuffix("_TRANSITIVE")
    reasons: list[str] = []
    for label, old in against:
        if base in ("BACKWARD", "FULL"):
            reasons += [f"new schema cannot read data written with {label}: {r}" for r in can_read(new, old)]
        if base in ("FORWARD", "FULL"):
            reasons += [f"{label} cannot read data written with the new schema: {r}" for r in can_read(old, new)]
    return reasons


# --- name resolution --------------------------------------------------------------------------


def _resolve(schema: Any) -> Any:
    """The schema with every named-type reference replaced by its definition (a shared object,
    so recursive types become cyclic) and every named type carrying its full name in ``"__name"``."""
    if isinstance(schema, (str, bytes)) and not _is_primitive_name(schema):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"not valid JSON: {exc}") from None
    named: dict[str, dict[str, Any]] = {}
    return _walk(schema, None, named)


def _is_primitive_name(value: Any) -> bool:
    return isinstance(value, str) and value in PRIMITIVES


def _fullname(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _walk(schema: Any, namespace: str | None, named: dict[str, dict[str, Any]]) -> Any:
    if isinstance(schema, str):
        if schema in PRIMITIVES:
            return schema
        for candidate in (_fullname(schema, namespace), schema):
            if candidate in named:
                return named[candidate]
        raise SchemaError(f"unknown type {schema!r}")
    if isinstance(schema, list):
        return [_walk(branch, namespace, named) for branch in schema]
    if not isinstance(schema, dict) or "type" not in schema:
        raise SchemaError(f"not a schema: {schema!r}")
    kind = schema["type"]
    if kind in NAMED:
        if not isinstance(schema.get("name"), str):
            raise SchemaError(f"a {kind} needs a name")
        fullname = _fullname(schema["name"], schema.get("namespace", namespace))
        inner_namespace = fullname.rpartition(".")[0] or None
        resolved: dict[str, Any] = {**schema, "__name": fullname}
        # Registered before the fields are walked so that a record may refer to itself.
        named[fullname] = resolved
        if kind in ("record", "error"):
            resolved["fields"] = [
                {**field, "type": _walk(field["type"], inner_namespace, named)} for field in schema.get("fields", [])
            ]
        return resolved
    if kind == "array":
        return {**schema, "items": _walk(schema["items"], namespace, named)}
    if kind == "map":
        return {**schema, "values": _walk(schema["values"], namespace, named)}
    if kind in PRIMITIVES:
        return schema
    # {"type": "SomeNamedType"} or {"type": {...}}: a wrapped type.
    return _walk(kind, namespace, named)


# --- the checker ------------------------------------------------------------------------------


def _type_of(schema: Any) -> str:
    if isinstance(schema, str):
        return schema
    if isinstance(schema, list):
        return "union"
    kind = schema["type"]
    return "record" if kind == "error" else kind


def _describe(schema: Any) -> str:
    kind = _type_of(schema)
    if kind == "union":
        return "union [" + ", ".join(_describe(branch) for branch in schema) + "]"
    if isinstance(schema, dict) and "__name" in schema:
        return f"{kind} {schema['__name']}"
    logical = schema.get("logicalType") if isinstance(schema, dict) else None
    return f"{kind} ({logical})" if logical else kind


def _short(name: str) -> str:
    return name.rpartition(".")[2]


def _join(path: str, part: str) -> str:
    if part.startswith(("[", "{")):
        return f"{path}{part}"
    return f"{path}.{part}" if path else part


class _Checker:
    def __init__(self, reader: Any, writer: Any) -> None:
        self._reader = reader
        self._writer = writer
        # Pairs of named types being compared: a recursive type is compatible with itself
        # when every step of the recursion is, so a pair already in progress counts as fine.
        self._in_progress: set[tuple[int, int]] = set()

    def check(self) -> list[str]:
        return self._compare(self._reader, self._writer, "")

    def _compare(self, reader: Any, writer: Any, path: str) -> list[str]:
        r_type, w_type = _type_of(reader), _type_of(writer)
        if w_type == "union":
            return [reason for branch in writer for reason in self._branch_reasons(reader, branch, path)]
        if r_type == "union":
            return self._branch_reasons(reader, writer, path)
        if r_type != w_type:
            if r_type in _PROMOTIONS.get(w_type, frozenset()):
                return []
            return [f"{path or '(root)'}: writer type {_describe(writer)} cannot be read as {_describe(reader)}"]
        if r_type in PRIMITIVES:
            return self._logical(reader, writer, path)
        if r_type == "array":
            return self._compare(reader["items"], writer["items"], _join(path, "[]"))
        if r_type == "map":
            return self._compare(reader["values"], writer["values"], _join(path, "{}"))
        return self._named(reader, writer, r_type, path)

    def _branch_reasons(self, reader: Any, writer_branch: Any, path: str) -> list[str]:
        """Reasons no branch of ``reader`` (a union or a single type) reads ``writer_branch``."""
        if _type_of(reader) != "union":
            return self._compare(reader, writer_branch, path)
        if any(not self._compare(branch, writer_branch, path) for branch in reader):
            return []
        # The reasons of a branch of the same kind (and name) say more than "no branch matched".
        similar = next((branch for branch in reader if _same_kind(branch, writer_branch)), None)
        if similar is not None:
            return self._compare(similar, writer_branch, path)
        return [f"{path or '(root)'}: no branch of reader's {_describe(reader)} can read {_describe(writer_branch)}"]

    def _logical(self, reader: Any, writer: Any, path: str) -> list[str]:
        if not (isinstance(reader, dict) and isinstance(writer, dict)):
            return []
        if reader.get("logicalType") == writer.get("logicalType") == "decimal":
            r_ps = (reader.get("precision"), reader.get("scale", 0))
            w_ps = (writer.get("precision"), writer.get("scale", 0))
            if r_ps != w_ps:
                return [
                    f"{path or '(root)'}: decimal precision/scale changed from "
                    f"({w_ps[0]}, {w_ps[1]}) to ({r_ps[0]}, {r_ps[1]})"
                ]
        return []

    def _named(self, reader: dict[str, Any], writer: dict[str, Any], kind: str, path: str) -> list[str]:
        where = path or "(root)"
        r_name, w_name = _short(reader["__name"]), _short(writer["__name"])
        aliases = {_short(alias) for alias in reader.get("aliases", [])}
        if r_name != w_name and w_name not in aliases:
            return [f"{where}: {kind} name changed from {writer['__name']} to {reader['__name']}"]
        if kind == "fixed":
            if reader.get("size") != writer.get("size"):
                return [f"{where}: fixed {reader['__name']} size changed from {writer.get('size')} to {reader.get('size')}"]
            return self._logical(reader, writer, path)
        if kind == "enum":
            missing = [s for s in writer.get("symbols", []) if s not in reader.get("symbols", [])]
            if missing and "default" not in reader:
                return [f"{where}: enum {reader['__name']} lacks writer's symbol(s) {', '.join(missing)} and has no default"]
            return []
        pair = (id(reader), id(writer))
        if pair in self._in_progress:
            return []
        self._in_progress.add(pair)
        try:
            return self._record(reader, writer, path)
        finally:
            self._in_progress.discard(pair)

    def _record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> list[str]:
        written = {field["name"]: field for field in writer.get("fields", [])}
        reasons: list[str] = []
        for field in reader.get("fields", []):
            field_path = _join(path, field["name"])
            source = written.get(field["name"]) or next(
                (written[alias] for alias in field.get("aliases", []) if alias in written), None
            )
            if source is not None:
                reasons += self._compare(field["type"], source["type"], field_path)
            elif "default" not in field:
                reasons.append(f"{field_path}: reader's field is missing from the writer's schema and has no default")
        return reasons


def _same_kind(reader: Any, writer: Any) -> bool:
    r_type, w_type = _type_of(reader), _type_of(writer)
    if r_type != w_type:
        return r_type in _PROMOTIONS.get(w_type, frozenset())
    if isinstance(reader, dict) and "__name" in reader and isinstance(writer, dict):
        return _short(reader["__name"]) == _short(writer.get("__name", ""))
    return True
