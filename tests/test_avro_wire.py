"""The Confluent wire format: framing, the fast encoder, the decoder, the registrar (no servers)."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from typing import Any

import fastavro
import pytest

from simpul.schemas.registrar import SchemaRegistrar
from simpul.schemas.wire import (
    ConfluentAvroDecoder,
    ConfluentAvroEncoder,
    WireFormatError,
    frame,
    subject_name,
    unframe,
)

VALUE = {
    "type": "record",
    "name": "Value",
    "namespace": "dinkes.public.pasien",
    "fields": [
        {"name": "id", "type": "int"},
        {"name": "nama", "type": ["null", "string"], "default": None},
        {"name": "saldo", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}], "default": None},
    ],
}
ENVELOPE = {
    "type": "record",
    "name": "Envelope",
    "namespace": "dinkes.public.pasien",
    "fields": [
        {"name": "before", "type": ["null", VALUE], "default": None},
        {"name": "after", "type": ["null", "Value"], "default": None},
        {"name": "op", "type": "string"},
        {"name": "ts_ms", "type": ["null", "long"], "default": None},
    ],
}
ROW = {"id": 7, "nama": "Siti Aminah", "saldo": Decimal("1234.50")}
INSERT = {"before": None, "after": ROW, "op": "c", "ts_ms": 1_718_000_000_000}
UPDATE = {"before": ROW, "after": {**ROW, "nama": "Siti A."}, "op": "u", "ts_ms": 1_718_000_000_001}
DELETE = {"before": ROW, "after": None, "op": "d", "ts_ms": None}

# A layout the plain writers leave to fastavro (an enum).
ENUM_VALUE = {**VALUE, "fields": [*VALUE["fields"], {"name": "status", "type": ["null", {"type": "enum", "name": "Status", "symbols": ["AKTIF", "MATI"]}], "default": None}]}
ENUM_ROW = {**ROW, "status": "AKTIF"}

PLAIN_VALUE = {
    "type": "record",
    "name": "Value",
    "namespace": "dinkes.public.pasien",
    "fields": [
        {"name": "id", "type": {"type": "int", "connect.type": "int16"}},
        {"name": "nama", "type": ["null", "string"], "default": None},
        {"name": "lahir", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date", "connect.version": 1}], "default": None},
        {"name": "foto", "type": ["null", "bytes"], "default": None},
        {"name": "berat", "type": ["null", "float"], "default": None},
        {"name": "aktif", "type": ["null", "boolean"], "default": None},
    ],
}
PLAIN_ROW = {"id": 7, "nama": "Siti Aminah ÿ ✓", "lahir": -3, "foto": b"\x00\xff", "berat": 61.5, "aktif": True}


def plain_encode(schema: Any, record: Any) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    return buffer.getvalue()


def test_frame_and_unframe() -> None:
    data = frame(258, b"\x02\x04")
    assert data == b"\x00\x00\x00\x01\x02\x02\x04"
    schema_id, body = unframe(data)
    assert schema_id == 258 and bytes(body) == b"\x02\x04"


def test_unframe_rejects_bad_magic_and_short_messages() -> None:
    with pytest.raises(WireFormatError, match="magic byte 1"):
        unframe(b"\x01\x00\x00\x00\x01")
    with pytest.raises(WireFormatError, match="shorter"):
        unframe(b"\x00\x00")


def test_subject_name_is_topic_name_strategy() -> None:
    assert subject_name("dinkes.public.pasien", is_key=False) == "dinkes.public.pasien-value"
    assert subject_name("dinkes.public.pasien", is_key=True) == "dinkes.public.pasien-key"


@pytest.mark.parametrize("event", [INSERT, UPDATE, DELETE], ids=["insert", "update", "delete"])
def test_encoder_bytes_equal_plain_fastavro(event: dict[str, Any]) -> None:
    encoder = ConfluentAvroEncoder(ENVELOPE, schema_id=42)
    encoded = encoder.encode(event)
    assert encoded == frame(42, plain_encode(ENVELOPE, event))
    # The buffer is reused: a second event must not carry bytes of the first.
    assert encoder.encode(DELETE) == frame(42, plain_encode(ENVELOPE, DELETE))


@pytest.mark.parametrize(("value", "row"), [(ENUM_VALUE, ENUM_ROW), (PLAIN_VALUE, PLAIN_ROW), (VALUE, ROW)], ids=["written-by-fastavro", "plain", "plain-decimal"])
def test_a_repeated_source_block_is_reused_and_the_bytes_stay_what_fastavro_writes(value: dict[str, Any], row: dict[str, Any]) -> None:
    from simpul.cdc.envelope import envelope_schema
    from simpul.cdc.postgres.schema import POSTGRES_SOURCE_SCHEMA

    topic = "dinkes.public.pasien"
    envelope = envelope_schema(topic, json.loads(json.dumps(value)), POSTGRES_SOURCE_SCHEMA)
    insert = {"before": None, "after": row, "op": "c", "ts_ms": 1_718_000_000_000}
    update = {"before": row, "after": {**row, "nama": "Siti A."}, "op": "u", "ts_ms": 1_718_000_000_001}
    delete = {"before": row, "after": None, "op": "d", "ts_ms": None}
    names = [f["name"] for f in POSTGRES_SOURCE_SCHEMA["fields"]]

    def source(lsn: int, snapshot: str) -> dict[str, Any]:
        block = dict.fromkeys(names)
        block.update(version="3.0.0", connector="postgresql", name="dinkes", ts_ms=1, snapshot=snapshot, db="dinkes",
                     sequence=f'[null,"{lsn}"]', schema="public", table="pasien", txId=9, lsn=lsn)
        return block

    first, later = source(100, "first"), source(100, "true")
    events = [
        {**insert, "source": first},
        {**insert, "source": later, "transaction": None, "ts_us": None, "ts_ns": None},
        {**update, "source": later, "transaction": None, "ts_us": 5, "ts_ns": None},
        {**delete, "source": later, "transaction": {"id": "9:100", "total_order": 3, "data_collection_order": 1}, "ts_us": None, "ts_ns": 7},
        {**insert, "source": later, "after": {**dict.fromkeys(row), "id": 8}, "transaction": None, "ts_us": None, "ts_ns": None},
        {**insert, "source": source(200, "last"), "transaction": None, "ts_us": None, "ts_ns": None},
    ]
    for event in events:
        event.setdefault("transaction", None)
        event.setdefault("ts_us", None)
        event.setdefault("ts_ns", None)
    encoder = ConfluentAvroEncoder(envelope, 5, repeated_field="source")
    for event in events:
        assert encoder.encode(event) == frame(5, plain_encode(envelope, event))
    # The reused bytes are the last source's: a new block object is encoded anew.
    assert encoder.encode({**events[1], "source": source(300, "true")}) == frame(5, plain_encode(envelope, {**events[1], "source": source(300, "true")}))


def test_a_repeated_field_the_schema_does_not_have_changes_nothing() -> None:
    encoder = ConfluentAvroEncoder(ENVELOPE, 6, repeated_field="source")
    for event in (INSERT, INSERT, UPDATE, DELETE):
        assert encoder.encode(event) == frame(6, plain_encode(ENVELOPE, event))
    op = {"type": "record", "name": "Op", "fields": [{"name": "source", "type": "string"}]}
    assert ConfluentAvroEncoder(op, 6, repeated_field="source").encode({"source": "x"}) == frame(6, plain_encode(op, {"source": "x"}))


def test_encoder_does_not_modify_the_callers_record() -> None:
    event = dict(INSERT)
    ConfluentAvroEncoder(ENVELOPE, 1).encode(event)
    assert event == INSERT and isinstance(event["after"], dict)


def test_encoder_accepts_schema_text_and_plain_records() -> None:
    schema = json.dumps({"type": "record", "name": "K", "fields": [{"name": "id", "type": "long"}]})
    assert ConfluentAvroEncoder(schema, 3).encode({"id": 1}) == b"\x00\x00\x00\x00\x03\x02"


def test_decoder_round_trip_and_caches_writer_schema() -> None:
    fetched: list[int] = []

    def schema_for_id(schema_id: int) -> str:
        fetched.append(schema_id)
        return json.dumps(ENVELOPE)

    decoder = ConfluentAvroDecoder(schema_for_id)
    encoder = ConfluentAvroEncoder(ENVELOPE, 9)
    for event in (INSERT, UPDATE, DELETE):
        assert decoder.decode_with_id(encoder.encode(event)) == (9, event)
    assert fetched == [9]


def test_decoder_resolves_to_a_reader_schema() -> None:
    reader = json.loads(json.dumps(ENVELOPE))
    reader["fields"][0]["type"][1]["fields"].append({"name": "alamat", "type": ["null", "string"], "default": None})
    decoder = ConfluentAvroDecoder(lambda _id: json.dumps(ENVELOPE), reader_schema=reader)
    decoded = decoder.decode(ConfluentAvroEncoder(ENVELOPE, 1).encode(INSERT))
    assert decoded["after"] == {**ROW, "alamat": None}


class FakeClient:
    """Stands in for confluent-kafka's SchemaRegistryClient: counts registrations."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def register_schema(self, subject: str, schema: Any) -> int:
        self.calls.append((subject, schema.schema_str))
        return 100 + len(self.calls)


def test_registrar_registers_once_per_subject_and_schema() -> None:
    client = FakeClient()
    registrar = SchemaRegistrar(client)
    first = registrar.register("dinkes.public.pasien", ENVELOPE)
    again = registrar.register("dinkes.public.pasien", ENVELOPE)
    key = registrar.register("dinkes.public.pasien", {"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]}, is_key=True)
    assert first == again
    assert first.subject == "dinkes.public.pasien-value" and key.subject == "dinkes.public.pasien-key"
    assert [subject for subject, _ in client.calls] == ["dinkes.public.pasien-value", "dinkes.public.pasien-key"]
    encoder = registrar.encoder("dinkes.public.pasien", ENVELOPE)
    assert unframe(encoder.encode(INSERT))[0] == first.schema_id
    assert len(client.calls) == 2


def _citizen(members: int, lineage: int, text: str) -> dict[str, Any]:
    return {
        "master_id": "C" + text, "anchor_record_id": "disdukcapil:public.penduduk:1", "members": [f"m{i}{text}" for i in range(members)],
        "nik": None, "name": text, "titles": ["H.", "S.Pd"], "birth_date": "1990-03-12", "birth_place": None, "sex": "P",
        "street": text * 3, "rt": "004", "rw": None, "kelurahan": "Cipocok Jaya", "kecamatan": None, "kk": None, "phone": "+6281",
        "deceased": False, "lineage": {f"f{i}": text for i in range(lineage)}, "updated_ms": 1_796_452_204_501,
    }


def _plain_cases() -> list[tuple[Any, Any]]:
    from simpul.schemas.resolution import CITIZEN_SCHEMA, FEEDBACK_SCHEMA, LINK_SCHEMA, QUALITY_SCHEMA, REVIEW_SCHEMA

    link = {"record_id": "r", "source": "dinsos", "table": "t", "record_key": "k", "master_id": "C1", "rule": "score", "matched_record_id": None,
            "probability": 0.999, "weight": 12, "contributions": {"name": -1.5, "nik": 6.0, "ñ": float("inf")}, "updated_ms": 0}
    return [
        ({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "int"}]}, {"id": -2147483648}),
        ({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "long"}]}, {"id": 9223372036854775807}),
        ({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "long"}]}, {"id": -(2**63)}),
        *(({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "long"}]}, {"id": n})
          for n in (8191, 8192, -8192, 16383, 16384, 2**21 - 1, 2**28, -(2**35) + 1, 1_796_452_204_501_123_456)),
        ({"type": "record", "name": "Key", "fields": [{"name": "nik", "type": "string"}, {"name": "n", "type": {"type": "int", "connect.type": "int16"}}]},
         {"nik": "3673 ÿ ✓", "n": 4095}),
        ({"type": "record", "name": "Long", "fields": [{"name": "text", "type": "string"}]}, {"text": "x" * 5000}),
        (PLAIN_VALUE, PLAIN_ROW),
        (PLAIN_VALUE, dict.fromkeys(PLAIN_ROW) | {"id": 4096}),
        (PLAIN_VALUE, {**PLAIN_ROW, "aktif": False, "berat": 3, "foto": b""}),
        ({"type": "record", "name": "R", "fields": [{"name": "o", "type": ["string", "null"]}, {"name": "d", "type": "double"}]}, {"o": "x", "d": -0.0}),
        ({"type": "record", "name": "R", "fields": [{"name": "o", "type": ["string", "null"]}, {"name": "d", "type": "double"}]}, {"o": None, "d": 7}),
        (CITIZEN_SCHEMA, _citizen(1, 0, "")),
        (CITIZEN_SCHEMA, _citizen(3, 9, "Nur Aini bin Abdul")),
        (CITIZEN_SCHEMA, _citizen(5000, 4100, "ä")),
        (LINK_SCHEMA, link),
        (LINK_SCHEMA, {**link, "contributions": {}, "probability": None, "weight": None, "matched_record_id": "x"}),
        (FEEDBACK_SCHEMA, {**_citizen(1, 0, "x"), "record_id": "r", "table": "t", "record_key": "k", "titles": None, "verified_from": {"name": "disdukcapil"}}),
        (REVIEW_SCHEMA, {"record_a": "a", "record_b": "b", "master_a": "A", "master_b": "B", "probability": 0.5, "weight": 0.0,
                         "contributions": {"x": 1.0}, "levels": {"name": "jaro_winkler>=0.95"}}),
        (QUALITY_SCHEMA, {"issue": "nik_placeholder", "master_id": None, "record_ids": [], "detected_ms": 1}),
        (NESTED, {"items": [], "index": {}, "tags": None}),
        (NESTED, {"items": [{"n": 1, "note": None, "codes": []}, {"n": -(2**40), "note": "ç" * 9000, "codes": [[2, 3], [], [8192]]}],
                  "index": {"a": [1.5, None], "": []}, "tags": {"x": {"n": 0, "note": "", "codes": [[]]}}}),
    ]


# Arrays of records, maps of arrays, arrays of arrays, and a record named again by reference.
NESTED = {
    "type": "record", "name": "Nested", "fields": [
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
            {"name": "n", "type": "long"}, {"name": "note", "type": ["string", "null"]},
            {"name": "codes", "type": {"type": "array", "items": {"type": "array", "items": "int"}}}]}}},
        {"name": "index", "type": {"type": "map", "values": {"type": "array", "items": ["null", "double"]}}},
        {"name": "tags", "type": ["null", {"type": "map", "values": "Item"}]},
    ],
}


@pytest.mark.parametrize(("schema", "record"), _plain_cases())
def test_plain_writer_writes_what_fastavro_writes(schema, record) -> None:
    from simpul.schemas.plain_writer import PlainWriterBuilder

    parsed = fastavro.parse_schema(schema)
    assert PlainWriterBuilder(parsed).writer(parsed) is not None, "this shape should not need fastavro"
    encoder = ConfluentAvroEncoder(schema, 9)
    assert encoder.encode(record) == b"\x00\x00\x00\x00\x09" + plain_encode(schema, record)


def ENVELOPE_OF(value: dict[str, Any]) -> dict[str, Any]:  # noqa: N802 - reads as the constant it builds
    return {**ENVELOPE, "fields": [{"name": "before", "type": ["null", value], "default": None}, *ENVELOPE["fields"][1:]]}


def test_plain_writer_leaves_what_it_does_not_write_to_fastavro() -> None:
    from simpul.schemas.plain_writer import PlainWriterBuilder

    def plain(schema: Any) -> bool:
        parsed = fastavro.parse_schema(schema)
        return PlainWriterBuilder(parsed).writer(parsed) is not None

    assert plain(ENVELOPE_OF(PLAIN_VALUE))  # ``after`` refers by name to the Value ``before`` defines
    assert plain(ENVELOPE) and plain(VALUE)  # a decimal is written as fastavro writes it
    assert not plain(ENUM_VALUE)
    assert not plain({"type": "enum", "name": "E", "symbols": ["A"]})
    assert not plain({"type": "fixed", "name": "F", "size": 2})
    assert not plain(["null", "string", "long"])
    assert not plain({"type": "int", "logicalType": "date"})
    # A recursive type (a list of itself) cannot be written out in straight lines: fastavro's.
    assert not plain({"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"]}]})
    assert not plain({"type": "record", "name": "Tree", "fields": [{"name": "kids", "type": {"type": "array", "items": "Tree"}}]})


@pytest.mark.parametrize(
    "record",
    [
        {"id": 1, "nama": ("string", "tuple notation"), "lahir": None, "foto": None, "berat": None, "aktif": None},  # fastavro's union notation
        {"id": 1, "nama": None, "lahir": None, "foto": None, "berat": None},  # a missing field fastavro fills with its default
        {"id": 1, "nama": None, "lahir": None, "foto": bytearray(b"ab"), "berat": None, "aktif": None},  # a bytes-like value fastavro takes too
    ],
)
def test_values_the_plain_writer_refuses_are_written_by_fastavro(record) -> None:
    assert ConfluentAvroEncoder(PLAIN_VALUE, 2).encode(record) == frame(2, plain_encode(PLAIN_VALUE, record))


def test_a_bad_value_still_fails_clearly() -> None:
    encoder = ConfluentAvroEncoder({"type": "record", "name": "Key", "fields": [{"name": "id", "type": "long"}]}, 1)
    with pytest.raises((ValueError, TypeError, OverflowError)):
        encoder.encode({"id": 2**64})
    with pytest.raises((ValueError, TypeError)):
        encoder.encode({"id": "satu"})
    with pytest.raises((ValueError, TypeError)):
        ConfluentAvroEncoder(PLAIN_VALUE, 1).encode({**PLAIN_ROW, "aktif": "ya"})
    with pytest.raises((ValueError, TypeError, KeyError)):
        ConfluentAvroEncoder(PLAIN_VALUE, 1).encode({"nama": "tanpa id"})


def test_long_varints_are_what_fastavro_writes_across_the_whole_range() -> None:
    import random

    rng = random.Random(7)
    schema = {"type": "record", "name": "L", "fields": [{"name": "n", "type": "long"}]}
    encoder = ConfluentAvroEncoder(schema, 1)
    edges = [sign * (2**k + d) for k in range(63) for d in (-1, 0, 1) for sign in (1, -1)]
    # More distinct high parts than the encoder remembers, so its memory is emptied along the way.
    values = edges + [rng.randrange(-(2**63), 2**63) for _ in range(6000)] + [1_796_452_204_501_000 + rng.randrange(10**9) for _ in range(2000)]
    for value in values:
        assert encoder.encode({"n": value}) == frame(1, plain_encode(schema, {"n": value})), value


def test_decimals_are_written_as_fastavro_writes_them() -> None:
    from simpul.cdc.envelope import connect_decimal
    from simpul.schemas.plain_writer import PlainWriterBuilder

    def schema_of(precision: int, scale: int) -> dict[str, Any]:
        return {"type": "record", "name": "D", "fields": [{"name": "d", "type": ["null", connect_decimal(precision, scale)]}]}

    parsed = fastavro.parse_schema(schema_of(20, 6))
    assert PlainWriterBuilder(parsed).writer(parsed) is not None
    values = ["0", "-0", "1", "-1", "127", "-128", "128", "-129", "0.5", "-0.000001", "12345.6", "99999999999999.999999",
              "-99999999999999.999999", "5E+3", "1.10", "-32768", "8388607.000000"]
    for precision, scale in ((20, 6), (38, 10), (5, 0), (10, 2)):
        schema = schema_of(precision, scale)
        encoder = ConfluentAvroEncoder(schema, 3)
        for text in values:
            record = {"d": Decimal(text)}
            try:
                expected = frame(3, plain_encode(schema, record))
            except ValueError:
                with pytest.raises(ValueError):
                    encoder.encode(record)
                continue
            assert encoder.encode(record) == expected, (precision, scale, text)
    encoder = ConfluentAvroEncoder(schema_of(20, 6), 3)
    for bad in (Decimal("NaN"), Decimal("Infinity"), Decimal("0.0000001"), Decimal("1" * 21)):
        with pytest.raises((ValueError, TypeError)):
            encoder.encode({"d": bad})
    # Bytes already in the decimal's form pass through, as fastavro passes them.
    assert encoder.encode({"d": b"\x01\x02"}) == frame(3, plain_encode(schema_of(20, 6), {"d": b"\x01\x02"}))
