"""Registering schemas with a Confluent-compatible registry: :class:`SchemaRegistrar`.

The registrar registers a schema once per subject (TopicNameStrategy) through confluent-kafka's
``SchemaRegistryClient`` and hands out :class:`~simpul.schemas.wire.ConfluentAvroEncoder`\\ s under
the ids the registry gave.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka.schema_registry import Schema

from simpul.schemas.wire import ConfluentAvroEncoder, subject_name


@dataclass(frozen=True)
class Registration:
    """A schema as registered: its subject and global id."""

    subject: str
    schema_id: int


class SchemaRegistrar:
    """Registers schemas with a Confluent-compatible registry, once per (subject, schema).

    ``client`` is confluent-kafka's ``SchemaRegistryClient`` (or anything with its
    ``register_schema(subject, Schema) -> int``); subjects follow TopicNameStrategy. A schema the
    registry refuses (HTTP 409, incompatible) raises the client's ``SchemaRegistryError``.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        self._ids: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, topic: str, schema: str | Mapping[str, Any], is_key: bool = False) -> Registration:
        """Register ``schema`` for the key or value of ``topic``; cached after the first call."""
        text = schema if isinstance(schema, str) else json.dumps(schema, separators=(",", ":"))
        subject = subject_name(topic, is_key)
        with self._lock:
            cached = self._ids.get((subject, text))
            if cached is None:
                cached = self._client.register_schema(subject, Schema(text, "AVRO"))
                self._ids[(subject, text)] = cached
        return Registration(subject, cached)

    def encoder(self, topic: str, schema: str | Mapping[str, Any], is_key: bool = False) -> ConfluentAvroEncoder:
        """A new encoder for ``topic``'s key or value, registering the schema if needed."""
        registration = self.register(topic, schema, is_key)
        return ConfluentAvroEncoder(schema, registration.schema_id)
