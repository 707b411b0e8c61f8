"""Per-column rules applied before a row leaves the agency: exclude, mask, keyed hash.

The same rules shape the Avro schema (an excluded column disappears, a hashed or masked column
becomes a string) and every row image, key included, so that a hashed NIK is still a stable join
key across agencies that share the secret, and never travels in clear.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simpul.cdc.envelope import field
from simpul.config import ColumnRule, require_env


@dataclass(frozen=True)
class ColumnAction:
    """What happens to one column: ``exclude``, ``mask`` (``mask_chars`` stars) or ``hash`` (HMAC-SHA256 hex)."""

    action: str
    mask_chars: int = 8
    secret: bytes = b""

    def apply(self, value: Any) -> Any:
        """The value as it may travel (None stays None)."""
        if value is None:
            return None
        if self.action == "mask":
            return "*" * self.mask_chars
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return hmac.new(self.secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class TableTransform:
    """The rules of one table; empty when the table has none (then everything passes as is)."""

    actions: Mapping[str, ColumnAction]

    def __bool__(self) -> bool:
        return bool(self.actions)

    def fields(self, fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Avro record fields after the rules: excluded ones dropped, masked/hashed ones strings."""
        shaped = []
        for avro_field in fields:
            action = self.actions.get(avro_field["name"])
            if action is None:
                shaped.append(avro_field)
            elif action.action != "exclude":
                nullable = isinstance(avro_field["type"], list) and "null" in avro_field["type"]
                shaped.append(field(avro_field["name"], "string", nullable=nullable))
        return shaped

    def row(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        """A row image after the rules."""
        if row is None or not self.actions:
            return row
        shaped = {}
        for name, value in row.items():
            action = self.actions.get(name)
            if action is None:
                shaped[name] = value
            elif action.action != "exclude":
                shaped[name] = action.apply(value)
        return shaped


_NO_RULES = TableTransform({})  # shared: every table without rules gets the same empty, frozen set


class ColumnTransforms:
    """All rules of a source, by table (``schema.table`` or ``database.table``)."""

    def __init__(self, rules: list[ColumnRule], key_prefix: str) -> None:
        by_table: dict[str, dict[str, ColumnAction]] = {}
        for index, rule in enumerate(rules):
            table, column = rule.column.rsplit(".", 1)
            secret = b""
            if rule.action == "hash":
                assert rule.secret_env is not None
                secret = require_env(rule.secret_env, f"{key_prefix}.capture.columns[{index}].secret_env").encode()
            by_table.setdefault(table, {})[column] = ColumnAction(rule.action, rule.mask_chars, secret)
        self._tables = {table: TableTransform(actions) for table, actions in by_table.items()}

    def for_table(self, table: str) -> TableTransform:
        """The rules of ``table`` (possibly none)."""
        return self._tables.get(table, _NO_RULES)
