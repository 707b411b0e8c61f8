"""Connector offsets: where each source's connector has got to, kept in a compacted Kafka topic
the way Kafka Connect keeps ``connect-offsets``, so a connector restarted on another host resumes
from the same place."""

from __future__ import annotations

import json
from typing import Any

from simpul.config import SimpulConfig
from simpul.kafka_store import KafkaStore, StoreSettings

OFFSETS_TOPIC = "simpul.cdc.offsets"


class OffsetStore:
    """The latest offset (a JSON object) per source, keyed by its topic prefix (Debezium's logical server name)."""

    def __init__(self, config: SimpulConfig, topic: str = OFFSETS_TOPIC) -> None:
        self._store = KafkaStore(
            StoreSettings(
                bootstrap_servers=config.kafka.bootstrap_servers,
                topic=topic,
                replication_factor=config.kafka.replication_factor,
                client=dict(config.kafka.client),
                client_id="simpul-cdc-offsets",
            )
        )
        self._store.ensure_topic()
        self._offsets: dict[str, dict[str, Any]] = {}
        self._store.catch_up(self._apply)

    def _apply(self, key: bytes, value: bytes | None) -> None:
        name = key.decode()
        if value is None:
            self._offsets.pop(name, None)
        else:
            self._offsets[name] = json.loads(value)

    def load(self, source: str) -> dict[str, Any] | None:
        """The last offset saved for ``source``, or None if it never saved one."""
        return self._offsets.get(source)

    def save(self, source: str, offset: dict[str, Any]) -> None:
        """Store ``offset`` for ``source``; returns once every in-sync replica has it."""
        self._store.append(source.encode(), json.dumps(offset, sort_keys=True).encode())
        self._offsets[source] = offset

    def forget(self, source: str) -> None:
        """Drop ``source``'s offset (a tombstone), so its next start snapshots again."""
        self._store.append(source.encode(), None)
        self._offsets.pop(source, None)

    def close(self) -> None:
        """Release the Kafka clients."""
        self._store.close()
