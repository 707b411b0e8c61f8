"""Debezium's change-event contract as Avro schemas, shared by every connector.

Names and shapes follow what Debezium 3.x with Confluent's AvroConverter registers, so consumers
written for Debezium topics (Kafka Connect sinks, Flink ``debezium-avro-confluent``, ksqlDB) read
Simpul's topics unchanged: ``<topic>.Key``, ``<topic>.Value``, ``<topic>.Envelope``, the
``source`` block per connector and the ``transaction`` block ``event.block``.
"""

from __future__ import annotations

import re
from typing import Any

AvroType = dict[str, Any] | str | list[Any]

DEBEZIUM_VERSION = "3.0.0.Final-simpul"

# Debezium's placeholder for an unchanged TOASTed value it did not receive.
UNAVAILABLE_VALUE = "__debezium_unavailable_value"

OPS = ("c", "u", "d", "r", "t", "m")


def avro_namespace(topic: str) -> str:
    """The Avro namespace Debezium derives from a topic: characters outside ``[A-Za-z0-9_.]`` become ``_``."""
    name = re.sub(r"[^A-Za-z0-9_.]", "_", topic)
    return re.sub(r"(^|\.)(\d)", r"\1_\2", name)


def optional(avro_type: AvroType) -> list[AvroType]:
    """A nullable type, as Kafka Connect writes optional fields: ``null`` first, default null."""
    return ["null", avro_type]


def connect_type(physical: str, connect_name: str | None = None, version: int | None = None, **parameters: str) -> AvroType:
    """A Kafka Connect logical type the way Confluent's AvroConverter writes it into Avro."""
    if connect_name is None:
        return physical
    avro: dict[str, Any] = {"type": physical}
    if version is not None:
        avro["connect.version"] = version
    if parameters:
        avro["connect.parameters"] = parameters
    avro["connect.name"] = connect_name
    return avro


def connect_int16() -> AvroType:
    """Kafka Connect's INT16 as Confluent writes it into Avro."""
    return {"type": "int", "connect.type": "int16"}


def connect_decimal(precision: int, scale: int) -> AvroType:
    """Kafka Connect's ``Decimal`` as Confluent writes it: Avro decimal bytes with its parameters."""
    return {
        "type": "bytes",
        "scale": scale,
        "precision": precision,
        "connect.version": 1,
        "connect.parameters": {"scale": str(scale), "connect.decimal.precision": str(precision)},
        "connect.name": "org.apache.kafka.connect.data.Decimal",
        "logicalType": "decimal",
    }


def field(name: str, avro_type: AvroType, nullable: bool) -> dict[str, Any]:
    """A record field; nullable fields get ``default: null`` so adding them stays BACKWARD compatible."""
    if nullable:
        return {"name": name, "type": optional(avro_type), "default": None}
    return {"name": name, "type": avro_type}


def key_schema(topic: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    """``<topic>.Key``: one field per primary-key column."""
    return {"type": "record", "name": "Key", "namespace": avro_namespace(topic), "fields": fields, "connect.name": f"{avro_namespace(topic)}.Key"}


def value_schema(topic: str, fields: list[dict[str, Any]]) -> dict[str, Any]:
    """``<topic>.Value``: the row image, one field per column."""
    return {"type": "record", "name": "Value", "namespace": avro_namespace(topic), "fields": fields, "connect.name": f"{avro_namespace(topic)}.Value"}


def _snapshot_enum() -> AvroType:
    return {
        "type": "string",
        "connect.version": 1,
        "connect.parameters": {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
        "connect.default": "false",
        "connect.name": "io.debezium.data.Enum",
    }


def source_schema(connector: str, extra_fields: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``source`` block: Debezium's common fields, then the connector's own (``extra_fields``)."""
    common = [
        {"name": "version", "type": "string"},
        {"name": "connector", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "ts_ms", "type": "long"},
        {"name": "snapshot", "type": [_snapshot_enum(), "null"], "default": "false"},
        {"name": "db", "type": "string"},
        field("sequence", "string", nullable=True),
        field("ts_us", "long", nullable=True),
        field("ts_ns", "long", nullable=True),
    ]
    namespace = f"io.debezium.connector.{connector}"
    return {"type": "record", "name": "Source", "namespace": namespace, "fields": common + extra_fields, "connect.name": f"{namespace}.Source"}


TRANSACTION_BLOCK: dict[str, Any] = {
    "type": "record",
    "name": "block",
    "namespace": "event",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "total_order", "type": "long"},
        {"name": "data_collection_order", "type": "long"},
    ],
    "connect.version": 1,
    "connect.name": "event.block",
}


def envelope_schema(topic: str, value: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``<topic>.Envelope``: ``before, after, source, transaction, op, ts_ms, ts_us, ts_ns``."""
    namespace = avro_namespace(topic)
    return {
        "type": "record",
        "name": "Envelope",
        "namespace": namespace,
        "fields": [
            {"name": "before", "type": ["null", value], "default": None},
            {"name": "after", "type": ["null", f"{namespace}.Value"], "default": None},
            {"name": "source", "type": source},
            {"name": "transaction", "type": ["null", TRANSACTION_BLOCK], "default": None},
            {"name": "op", "type": "string"},
            field("ts_ms", "long", nullable=True),
            field("ts_us", "long", nullable=True),
            field("ts_ns", "long", nullable=True),
        ],
        "connect.version": 2,
        "connect.name": f"{namespace}.Envelope",
    }
