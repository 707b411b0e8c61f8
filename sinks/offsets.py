"""Consumed offsets kept in the sink's own database, committed in the same transaction as the rows.

This is what makes a sink exactly-once in effect: the rows a batch produced and the offsets it
consumed commit together or not at all, so after ``kill -9`` the sink resumes exactly after the
last committed batch. The offsets rows are also locked for the transaction, so a second instance
(a zombie after a rebalance) cannot apply the same messages twice: it finds them already consumed
and skips them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

Partition = tuple[str, int]
Dialect = Literal["postgres", "mysql"]


class Positioned(Protocol):
    """Anything with a Kafka position (a consumed message)."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class SinkOffsets:
    """The offsets table of one database: ``<table>(consumer, topic, partition, next_offset)``."""

    table: str
    dialect: Dialect = "postgres"

    def ddl(self) -> str:
        """CREATE TABLE IF NOT EXISTS for this dialect."""
        text = "TEXT" if self.dialect == "postgres" else "VARCHAR(255)"
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (consumer {text} NOT NULL, topic {text} NOT NULL, "
            f"kafka_partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (consumer, topic, kafka_partition))"
        )

    def load(self, cursor: Any, consumer: str, lock: bool = False) -> dict[Partition, int]:
        """The next offset to consume per partition; ``lock`` holds the rows until the transaction ends."""
        cursor.execute(
            f"SELECT topic, kafka_partition, next_offset FROM {self.table} WHERE consumer = %s" + (" FOR UPDATE" if lock else ""),
            (consumer,),
        )
        return {(topic, int(partition)): int(offset) for topic, partition, offset in cursor.fetchall()}

    def save(self, cursor: Any, consumer: str, offsets: dict[Partition, int]) -> None:
        """Upsert the next offsets (call inside the batch's transaction)."""
        if not offsets:
            return
        if self.dialect == "postgres":
            upsert = "ON CONFLICT (consumer, topic, kafka_partition) DO UPDATE SET next_offset = EXCLUDED.next_offset"
        else:
            upsert = "ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset)"
        cursor.executemany(
            f"INSERT INTO {self.table} (consumer, topic, kafka_partition, next_offset) VALUES (%s, %s, %s, %s) {upsert}",
            [(consumer, topic, partition, offset) for (topic, partition), offset in sorted(offsets.items())],
        )


M = TypeVar("M", bound=Positioned)


def unconsumed(messages: Sequence[M], stored: dict[Partition, int]) -> tuple[list[M], dict[Partition, int]]:
    """The messages at or after the stored offsets, and the next offsets after them."""
    fresh = [m for m in messages if m.offset >= stored.get((m.topic, m.partition), 0)]
    return fresh, next_offsets(fresh)


def next_offsets(messages: Iterable[Positioned]) -> dict[Partition, int]:
    """Per partition, one past the highest offset among ``messages``."""
    offsets: dict[Partition, int] = {}
    for m in messages:
        key = (m.topic, m.partition)
        offsets[key] = max(offsets.get(key, 0), m.offset + 1)
    return offsets
