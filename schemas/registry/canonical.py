"""Validate a submitted Avro schema and give it one canonical text.

The canonical text decides identity: the same schema submitted with other whitespace, or with a
primitive written as ``{"type": "int"}``, gets the same global id, as in Confluent's registry
(whose canonical string is Avro's ``Schema.toString()``: compact JSON, attributes kept).
"""

from __future__ import annotations

import json
from typing import Any

import fastavro

from simpul.schemas.compatibility import PRIMITIVES, can_read


class InvalidSchema(ValueError):
    """The text is not a valid Avro schema; the message says why."""


def canonical_schema(text: str) -> str:
    """The canonical text of the Avro schema ``text``; :class:`InvalidSchema` if it is not one."""
    try:
        parsed = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise InvalidSchema(f"not valid JSON: {exc}") from None
    try:
        fastavro.parse_schema(parsed)
        # Our own resolver too: the compatibility checks must be able to walk every schema we store.
        can_read(parsed, parsed)
    except Exception as exc:  # fastavro raises several unrelated exception types; SchemaError is ours
        raise InvalidSchema(f"invalid Avro schema: {type(exc).__name__}: {exc}") from None
    return json.dumps(_simplify(parsed), separators=(",", ":"), ensure_ascii=False)


def _simplify(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_simplify(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    if set(schema) == {"type"} and schema["type"] in PRIMITIVES:
        return schema["type"]
    simplified = dict(schema)
    if "type" in simplified and not isinstance(simplified["type"], str):
        simplified["type"] = _simplify(simplified["type"])
    for key in ("items", "values"):
        if key in simplified:
            simplified[key] = _simplify(simplified[key])
    if isinstance(simplified.get("fields"), list):
        simplified["fields"] = [{**field, "type": _simplify(field.get("type"))} for field in simplified["fields"]]
    return simplified
