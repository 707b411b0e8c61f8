"""The PostgreSQL connector's schema builder: a relation's columns to Key, Value and Envelope schemas,
and decoded rows to the Avro values that fill them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from simpul.cdc.envelope import UNAVAILABLE_VALUE, envelope_schema, field, key_schema, source_schema, value_schema
from simpul.cdc.postgres.pgoutput import UNCHANGED_TOAST, RawValue, Relation
from simpul.cdc.postgres.types import NUMERIC_OID, PgType, numeric_type, pg_type
from simpul.cdc.transforms import TableTransform

POSTGRES_SOURCE_SCHEMA = source_schema(
    "postgresql",
    [
        {"name": "schema", "type": "string"},
        {"name": "table", "type": "string"},
        field("txId", "long", nullable=True),
        field("lsn", "long", nullable=True),
        field("xmin", "long", nullable=True),
        field("origin", "string", nullable=True),
        field("origin_lsn", "long", nullable=True),
    ],
)


class TableSchemaError(ValueError):
    """A table Simpul cannot describe in Avro: a column type without a mapping, an excluded key."""


@dataclass(frozen=True)
class TableSchema:
    """Everything needed to encode one table's events at one point of the log."""

    topic: str
    relation: Relation
    column_types: tuple[PgType, ...]
    key_columns: tuple[int, ...]
    key: dict[str, Any] | None
    value: dict[str, Any]
    envelope: dict[str, Any]

    def __post_init__(self) -> None:
        # (name, convert, placeholder) per column, worked out once: row() runs for every event.
        plan = tuple((c.name, pg.convert, _placeholder(pg)) for c, pg in zip(self.relation.columns, self.column_types))
        object.__setattr__(self, "_plan", plan)
        object.__setattr__(self, "_key_plan", tuple(plan[i] for i in self.key_columns))

    def row(self, values: tuple[RawValue, ...]) -> dict[str, Any]:
        """A decoded tuple as the ``Value`` record; unchanged TOAST values get Debezium's placeholder."""
        return _convert(self._plan, values)  # type: ignore[attr-defined]

    def key_of(self, values: tuple[RawValue, ...]) -> dict[str, Any] | None:
        """The ``Key`` record of a tuple, or None for a table without a key."""
        if self.key is None:
            return None
        return _convert(self._key_plan, tuple(values[i] for i in self.key_columns))  # type: ignore[attr-defined]


def _convert(plan: tuple[tuple[str, Any, Any], ...], values: tuple[RawValue, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for (name, convert, placeholder), raw in zip(plan, values):
        if raw is None:
            row[name] = None
        elif raw.__class__ is str:
            row[name] = convert(raw)
        elif raw is UNCHANGED_TOAST:
            row[name] = placeholder
        else:
            row[name] = convert(raw.decode("utf-8"))  # type: ignore[union-attr]
    return row


def _placeholder(pg: PgType) -> Any:
    """Debezium's placeholder for a value it did not receive, in the column's own Avro type."""
    physical = pg.avro if isinstance(pg.avro, str) else pg.avro.get("type") if isinstance(pg.avro, dict) else None
    if physical == "string":
        return UNAVAILABLE_VALUE
    if physical == "bytes":
        return UNAVAILABLE_VALUE.encode()
    if physical == "array":
        return [UNAVAILABLE_VALUE] if "string" in str(pg.avro) else None
    return None


def build_table_schema(
    topic: str,
    relation: Relation,
    enums: dict[int, list[str]] | None = None,
    transform: TableTransform | None = None,
) -> TableSchema:
    """The schemas of ``relation`` as Debezium would register them for ``topic``, shaped by the
    table's column rules (``transform``).

    Columns that are part of the key are required in ``Key``; every ``Value`` field is nullable,
    because under REPLICA IDENTITY DEFAULT a ``before`` image carries only the key columns.
    """
    types: list[PgType] = []
    value_fields, key_fields = [], []
    seen_variable_decimal = False
    for column in relation.columns:
        if column.type_oid == NUMERIC_OID:
            pg = numeric_type(column.type_modifier, first_use=not (column.type_modifier < 0 and seen_variable_decimal))
            seen_variable_decimal |= column.type_modifier < 0
        else:
            found = pg_type(column.type_oid, column.type_modifier, enums)
            if found is None:
                raise TableSchemaError(
                    f"{relation.qualified_name}.{column.name}: PostgreSQL type oid {column.type_oid} has no Avro mapping"
                )
            pg = found
        types.append(pg)
        value_fields.append(field(column.name, pg.avro, nullable=True))
    key_columns = tuple(i for i, column in enumerate(relation.columns) if column.is_key)
    for i in key_columns:
        avro = types[i].avro
        # The key record is its own schema: a named type defined in Value must be defined again here.
        if avro == "io.debezium.data.VariableScaleDecimal":
            avro = numeric_type(-1).avro
        key_fields.append(field(relation.columns[i].name, avro, nullable=False))
    if transform:
        excluded_keys = [f["name"] for f in key_fields if getattr(transform.actions.get(f["name"]), "action", None) == "exclude"]
        if excluded_keys:
            raise TableSchemaError(f"{relation.qualified_name}.{excluded_keys[0]}: a key column cannot be excluded (hash it instead)")
        value_fields, key_fields = transform.fields(value_fields), transform.fields(key_fields)
    value = value_schema(topic, value_fields)
    return TableSchema(
        topic=topic,
        relation=relation,
        column_types=tuple(types),
        key_columns=key_columns,
        key=key_schema(topic, key_fields) if key_fields else None,
        value=value,
        envelope=envelope_schema(topic, value, POSTGRES_SOURCE_SCHEMA),
    )
