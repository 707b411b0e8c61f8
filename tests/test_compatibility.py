"""Avro schema resolution and Confluent compatibility levels (pure, no servers)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from simpul.schemas.compatibility import CompatibilityLevel, SchemaError, can_read, check_compatibility


def record(name: str, *fields: dict[str, Any], namespace: str | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "record", "name": name, "fields": list(fields), **extra}
    if namespace:
        schema["namespace"] = namespace
    return schema


def field(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def envelope(value_fields: list[dict[str, Any]]) -> dict[str, Any]:
    """A Debezium-shaped envelope for topic ``dinkes.public.pasien``."""
    value = record("Value", *value_fields, namespace="dinkes.public.pasien")
    source = record(
        "Source",
        field("connector", "string"),
        field("ts_ms", "long"),
        field("snapshot", {"type": "enum", "name": "snapshot", "symbols": ["true", "last", "false"]}, default="false"),
        namespace="io.debezium.connector.postgresql",
    )
    return record(
        "Envelope",
        field("before", ["null", value], default=None),
        field("after", ["null", "Value"], default=None),
        field("source", source),
        field("op", "string"),
        field("ts_ms", ["null", "long"], default=None),
        namespace="dinkes.public.pasien",
    )


BASE_COLUMNS = [field("id", "int"), field("nik", "string"), field("umur", ["null", "int"], default=None)]


# --- primitives and promotions -----------------------------------------------------------------

PRIMITIVES = ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
ALLOWED_PROMOTIONS = {
    ("int", "long"), ("int", "float"), ("int", "double"),
    ("long", "float"), ("long", "double"), ("float", "double"),
    ("string", "bytes"), ("bytes", "string"),
}


@pytest.mark.parametrize("writer", PRIMITIVES)
@pytest.mark.parametrize("reader", PRIMITIVES)
def test_primitive_pairs(reader: str, writer: str) -> None:
    reasons = can_read(reader, writer)
    expected_ok = reader == writer or (writer, reader) in ALLOWED_PROMOTIONS
    assert (not reasons) == expected_ok, reasons


def test_narrowing_names_both_types() -> None:
    assert can_read("int", "long") == ["(root): writer type long cannot be read as int"]


def test_schemas_may_be_json_text() -> None:
    assert can_read(json.dumps(record("A", field("x", "long"))), json.dumps(record("A", field("x", "int")))) == []


def test_wrapped_primitive_equals_bare_primitive() -> None:
    assert can_read({"type": "int"}, "int") == []


# --- records -----------------------------------------------------------------------------------


def test_added_field_with_default_is_backward_compatible() -> None:
    old = record("R", field("a", "int"))
    new = record("R", field("a", "int"), field("b", "string", default="x"))
    assert can_read(new, old) == []
    assert can_read(old, new) == []  # the old reader skips the new field


def test_added_field_without_default_cannot_read_old_data() -> None:
    old = record("R", field("a", "int"))
    new = record("R", field("a", "int"), field("b", "string"))
    assert can_read(new, old) == ["b: reader's field is missing from the writer's schema and has no default"]


def test_removed_field_without_default_breaks_old_readers() -> None:
    old = record("R", field("a", "int"), field("b", "string"))
    new = record("R", field("a", "int"))
    assert can_read(new, old) == []
    assert can_read(old, new) == ["b: reader's field is missing from the writer's schema and has no default"]


def test_record_rename_is_incompatible_unless_aliased() -> None:
    assert can_read(record("B", field("a", "int")), record("A", field("a", "int"))) == [
        "(root): record name changed from A to B"
    ]
    assert can_read(record("B", field("a", "int"), aliases=["A"]), record("A", field("a", "int"))) == []


def test_names_match_unqualified() -> None:
    assert can_read(record("R", namespace="x"), record("R", namespace="y")) == []


def test_field_rename_with_alias() -> None:
    old = record("R", field("old_name", "int"))
    assert can_read(record("R", field("new_name", "int", aliases=["old_name"])), old) == []
    assert can_read(record("R", field("new_name", "int")), old) == [
        "new_name: reader's field is missing from the writer's schema and has no default"
    ]


def test_field_order_does_not_matter() -> None:
    assert can_read(record("R", field("b", "string"), field("a", "int")), record("R", field("a", "int"), field("b", "string"))) == []


def test_nested_record_path() -> None:
    old = record("Outer", field("inner", record("Inner", field("x", "int"))))
    new = record("Outer", field("inner", record("Inner", field("x", "boolean"))))
    assert can_read(new, old) == ["inner.x: writer type int cannot be read as boolean"]


def test_error_type_is_a_record() -> None:
    err = {"type": "error", "name": "E", "fields": [field("m", "string")]}
    assert can_read(err, err) == []


def test_recursive_record() -> None:
    linked = record("Node", field("value", "int"), field("next", ["null", "Node"], default=None))
    wider = record("Node", field("value", "long"), field("next", ["null", "Node"], default=None))
    assert can_read(linked, linked) == []
    assert can_read(wider, linked) == []
    assert can_read(linked, wider) == ["value: writer type long cannot be read as int"]


# --- unions ------------------------------------------------------------------------------------


def test_making_a_field_nullable_is_backward_compatible_only() -> None:
    old = record("R", field("a", "int"))
    new = record("R", field("a", ["null", "int"], default=None))
    assert can_read(new, old) == []
    assert can_read(old, new) == ["a: writer type null cannot be read as int"]


def test_union_to_union_every_writer_branch_needs_a_reader_branch() -> None:
    assert can_read(["null", "string", "int"], ["int", "null"]) == []
    assert can_read(["null", "string"], ["null", "int"]) == [
        "(root): no branch of reader's union [null, string] can read int"
    ]


def test_union_branch_promotion() -> None:
    assert can_read(["null", "long"], ["null", "int"]) == []


def test_union_reader_reports_the_similar_branch() -> None:
    old = ["null", record("V", field("a", "int"))]
    new = ["null", record("V", field("a", "int"), field("b", "int"))]
    assert can_read(new, old) == ["b: reader's field is missing from the writer's schema and has no default"]


# --- enums, arrays, maps, fixed -----------------------------------------------------------------


def enum(symbols: list[str], **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Status", "symbols": symbols, **extra}


def test_enum_symbol_added_reads_old_data() -> None:
    assert can_read(enum(["A", "B", "C"]), enum(["A", "B"])) == []


def test_enum_symbol_removed_needs_reader_default() -> None:
    assert can_read(enum(["A"]), enum(["A", "B"])) == ["(root): enum Status lacks writer's symbol(s) B and has no default"]
    assert can_read(enum(["A", "UNKNOWN"], default="UNKNOWN"), enum(["A", "B"])) == []


def test_enum_rename() -> None:
    assert can_read({**enum(["A"]), "name": "Other"}, enum(["A"])) == ["(root): enum name changed from Status to Other"]


def test_arrays_and_maps_compare_items_and_values() -> None:
    assert can_read({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    assert can_read({"type": "map", "values": "double"}, {"type": "map", "values": "float"}) == []
    bad = record("R", field("tags", {"type": "array", "items": "int"}), field("props", {"type": "map", "values": "int"}))
    old = record("R", field("tags", {"type": "array", "items": "string"}), field("props", {"type": "map", "values": "string"}))
    assert can_read(bad, old) == [
        "tags[]: writer type string cannot be read as int",
        "props{}: writer type string cannot be read as int",
    ]


def test_array_is_not_a_map() -> None:
    assert can_read({"type": "map", "values": "int"}, {"type": "array", "items": "int"}) == [
        "(root): writer type array cannot be read as map"
    ]


def test_fixed_size_and_name() -> None:
    md5 = {"type": "fixed", "name": "Hash", "size": 16}
    assert can_read(md5, md5) == []
    assert can_read({**md5, "size": 32}, md5) == ["(root): fixed Hash size changed from 16 to 32"]
    assert can_read({**md5, "name": "Other"}, md5) == ["(root): fixed name changed from Hash to Other"]


# --- named references and logical types ---------------------------------------------------------


def test_named_reference_in_namespace() -> None:
    schema = record(
        "Pair",
        field("left", record("Side", field("v", "int"))),
        field("right", "Side"),
        namespace="a.b",
    )
    assert can_read(schema, schema) == []
    widened = json.loads(json.dumps(schema).replace('"int"', '"long"'))
    assert can_read(widened, schema) == []


def test_fully_qualified_reference() -> None:
    schema = record("Pair", field("left", record("Side", field("v", "int"), namespace="x")), field("right", "x.Side"))
    assert can_read(schema, schema) == []


def test_unknown_reference_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="unknown type 'Missing'"):
        can_read(record("R", field("a", "Missing")), record("R"))


def test_logical_type_change_on_same_physical_type_is_compatible() -> None:
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    micros = {"type": "long", "logicalType": "timestamp-micros"}
    assert can_read(micros, millis) == []
    assert can_read("long", millis) == []
    assert can_read({"type": "string", "logicalType": "uuid"}, "string") == []


def test_decimal_precision_or_scale_change_is_incompatible() -> None:
    def dec(precision: int, scale: int) -> dict[str, Any]:
        return {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}

    assert can_read(dec(10, 2), dec(10, 2)) == []
    assert can_read(dec(12, 2), dec(10, 2)) == ["(root): decimal precision/scale changed from (10, 2) to (12, 2)"]
    assert can_read(dec(10, 3), dec(10, 2)) != []
    assert can_read("bytes", dec(10, 2)) == []  # the physical type is unchanged


def test_logical_int_to_long_promotion() -> None:
    assert can_read("long", {"type": "int", "logicalType": "date"}) == []


# --- Debezium envelopes -------------------------------------------------------------------------


def test_debezium_nullable_column_added_is_backward_compatible() -> None:
    old = envelope(BASE_COLUMNS)
    new = envelope([*BASE_COLUMNS, field("alamat", ["null", "string"], default=None)])
    assert can_read(new, old) == []
    assert check_compatibility("BACKWARD", new, [("version 1", old)]) == []
    assert check_compatibility("FULL", new, [("version 1", old)]) == []


def test_debezium_column_type_change_names_the_field() -> None:
    old = envelope(BASE_COLUMNS)
    changed = [field("id", "int"), field("nik", "string"), field("umur", ["null", "string"], default=None)]
    reasons = check_compatibility("BACKWARD", envelope(changed), [("version 1", old)])
    assert reasons == [
        "new schema cannot read data written with version 1: before.umur: no branch of reader's union [null, string] can read int",
        "new schema cannot read data written with version 1: after.umur: no branch of reader's union [null, string] can read int",
    ]


def test_debezium_non_null_column_added_without_default_is_incompatible() -> None:
    old = envelope(BASE_COLUMNS)
    new = envelope([*BASE_COLUMNS, field("rt", "int")])
    assert "before.rt: reader's field is missing from the writer's schema and has no default" in can_read(new, old)


def test_debezium_snapshot_enum_symbol_added() -> None:
    old = envelope(BASE_COLUMNS)
    new = json.loads(json.dumps(old).replace('["true", "last", "false"]', '["true", "first", "last", "false"]'))
    assert can_read(new, old) == []
    assert can_read(old, new) == ["source.snapshot: enum io.debezium.connector.postgresql.snapshot lacks writer's symbol(s) first and has no default"]


# --- compatibility levels -----------------------------------------------------------------------

V1 = record("R", field("a", "int"))
V2 = record("R", field("a", "int"), field("b", "int", default=0))  # adds b with a default
V3 = record("R", field("a", "int"), field("b", "int"))  # drops b's default


def test_none_accepts_anything() -> None:
    assert check_compatibility(CompatibilityLevel.NONE, "string", [("version 1", V1)]) == []


def test_first_schema_is_always_compatible() -> None:
    for level in CompatibilityLevel:
        assert check_compatibility(level, V1, []) == []


def test_backward_compares_with_latest_only() -> None:
    # V3 reads V2 data (b is there) but not V1 data (b missing, no default).
    assert check_compatibility("BACKWARD", V3, [("version 1", V1), ("version 2", V2)]) == []
    assert check_compatibility("BACKWARD_TRANSITIVE", V3, [("version 1", V1), ("version 2", V2)]) == [
        "new schema cannot read data written with version 1: b: reader's field is missing from the writer's schema and has no default"
    ]


def test_forward_checks_old_reads_new() -> None:
    removed_a = record("R", field("b", "int", default=0))
    assert check_compatibility("FORWARD", removed_a, [("version 1", V1)]) == [
        "version 1 cannot read data written with the new schema: a: reader's field is missing from the writer's schema and has no default"
    ]
    assert check_compatibility("FORWARD", V3, [("version 1", V1)]) == []
    assert check_compatibility("BACKWARD", V3, [("version 1", V1)]) != []


def test_forward_transitive() -> None:
    old_with_c = record("R", field("a", "int"), field("c", "int"))
    latest = record("R", field("a", "int"), field("c", "int", default=0))
    new = record("R", field("a", "int"))
    assert check_compatibility("FORWARD", new, [("version 1", old_with_c), ("version 2", latest)]) == []
    assert check_compatibility("FORWARD_TRANSITIVE", new, [("version 1", old_with_c), ("version 2", latest)]) != []


def test_full_needs_both_directions() -> None:
    assert check_compatibility("FULL", V2, [("version 1", V1)]) == []
    assert len(check_compatibility("FULL", V3, [("version 1", V1)])) == 1


def test_full_transitive() -> None:
    history = [("version 1", V1), ("version 2", V2)]
    new = record("R", field("a", "int"), field("b", "int", default=0), field("c", "string", default=""))
    assert check_compatibility("FULL_TRANSITIVE", new, history) == []
    assert check_compatibility("FULL_TRANSITIVE", V3, history) != []


def test_unknown_level_raises() -> None:
    with pytest.raises(ValueError):
        check_compatibility("SIDEWAYS", V1, [("version 1", V1)])
