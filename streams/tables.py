"""Durable Faust tables whose changelog goes out through librdkafka: :class:`LibrdkafkaChangelogTable`.

A Faust table sends one changelog message per write through Faust's producer (aiokafka), about
100 µs of Python each; the resolver writes about 3.7 table keys per row change, which made the
changelog the largest cost after matching itself. This table hands the same messages (same topic,
partition, key and value bytes, so Faust's recovery reads them unchanged) to a
:class:`ConfirmedProducer`, and records the changelog offset Kafka acknowledged in its RocksDB
store, as Faust does, when the producer is confirmed (:meth:`persist_acknowledged`). The resolver confirms the producer at the
end of every batch, before the batch's input offset may be committed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import faust
import rocksdict
from faust.stores.rocksdb import Store as RocksDBStore
from faust.utils import json as faust_json
from faust.streams import current_event
from faust.types import TP

from simpul.streams.producer import ConfirmedProducer


class LibrdkafkaChangelogTable(faust.Table):  # type: ignore[misc]
    """A ``faust.Table`` sending its changelog through ``changelog_producer`` (set before use)."""

    changelog_producer: ConfirmedProducer
    # The changelog's topic-partitions by partition, named once rather than per write.
    _changelog_tps: dict[int, TP]
    # The last acknowledged changelog offset per topic-partition, not yet persisted in the store.
    _acknowledged: dict[TP, int]
    # Keys and values to bytes and back, as the store encodes them (see ``changelog_table``).
    _dumps_key: Callable[[Any], bytes]
    _dumps_value: Callable[[Any], bytes]
    _loads_value: Callable[[bytes], Any]

    def get(self, key: Any, default: Any = None) -> Any:
        """The stored value of ``key``, or ``default``: one store read.

        Through Faust's table a read asks the store whether the key is there and then reads it, and
        a missing key (the usual case for a new row) raises a KeyError on the way.
        """
        raw = self.data._get(self._dumps_key(key))
        return default if raw is None else self._loads_value(raw)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Store ``key``'s value and send it to the changelog, encoded once for both (Faust encodes
        it for each)."""
        store = self.data
        key_bytes, value_bytes = self._dumps_key(key), self._dumps_value(value)
        store._set(key_bytes, value_bytes)
        self._produce(key, key_bytes, value_bytes)
        self._sensor_on_set(self, key, value)

    def on_key_set(self, key: Any, value: Any) -> None:
        """Send the key's new value to the changelog (Faust calls this on writes other than ``table[key] = value``)."""
        self._send(key, value)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: Any) -> None:
        """Send the key's tombstone to the changelog (Faust calls this on every delete)."""
        self._send(key, None)
        self._sensor_on_del(self, key)

    def write_many(self, changes: Mapping[Any, Any]) -> None:
        """Store every key's new value (None: delete the key) and send each to the changelog.

        On a RocksDB store the values go in one write batch. Faust's own write puts them one at a
        time and, for each, finds the current event and records the key's partition in a locked
        index (a second lookup path this table does not use: every read here has an event).
        """
        store = self.data
        if not (isinstance(store, RocksDBStore) and store.use_rocksdict):
            for key, value in changes.items():
                if value is None:
                    self.pop(key, None)
                else:
                    self[key] = value
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in changes.items():
            key_bytes = self._dumps_key(key)
            if value is None:
                batch.delete(key_bytes)
                self._produce(key, key_bytes, None)
                self._sensor_on_del(self, key)
            else:
                value_bytes = self._dumps_value(value)
                batch.put(key_bytes, value_bytes)
                self._produce(key, key_bytes, value_bytes)
                self._sensor_on_set(self, key, value)
        store._db_for_partition(current_event().message.partition).write(batch)

    def _send(self, key: Any, value: Any) -> None:
        self._produce(key, self._dumps_key(key), None if value is None else self._dumps_value(value))

    def _produce(self, key: Any, key_bytes: bytes, value_bytes: bytes | None) -> None:
        partition = self.partition_for_key(key)
        if partition is None:
            raise TypeError(f"table {self.name}: a changelog partition is needed (use_partitioner is not supported)")
        tp = self._changelog_tps.get(partition)
        if tp is None:
            tp = self._changelog_tps[partition] = TP(self.changelog_topic.get_topic_name(), partition)
        self.changelog_producer.produce(tp.topic, key_bytes, value_bytes, partition=partition,
                                        on_offset=partial(self._acknowledged.__setitem__, tp))

    def persist_acknowledged(self) -> None:
        """Record in the store the last changelog offset Kafka acknowledged per partition.

        Called after the producer is confirmed, once per commit rather than once per write (a
        RocksDB write each). A store that holds more than its persisted offset says is harmless:
        recovery replays the changelog from there, and the last value of every key wins.
        """
        for tp, offset in self._acknowledged.items():
            self.data.set_persisted_offset(tp, offset)
        self._acknowledged.clear()


def changelog_table(app: faust.App, name: str, producer: ConfirmedProducer, **options: Any) -> LibrdkafkaChangelogTable:
    """Define the table ``name`` on ``app`` (as ``app.Table`` does), its changelog sent by ``producer``."""
    table = LibrdkafkaChangelogTable(app, name=name, beacon=app.tables.beacon, **options)
    table.changelog_producer = producer
    table._changelog_tps = {}
    table._acknowledged = {}
    if table.key_serializer == "json" and table.value_serializer == "json":
        # Faust's defaults: the same JSON functions its serializer registry and codec layers end
        # in, called directly (those layers cost the resolver more than the JSON itself).
        table._dumps_key = table._dumps_value = _json_bytes
        table._loads_value = faust_json.loads
    else:
        table._dumps_key = lambda key: table.data._encode_key(key)
        table._dumps_value = lambda value: table.data._encode_value(value)
        table._loads_value = lambda raw: table.data._decode_value(raw)
    return app.tables.add(table)


def _json_bytes(obj: Any) -> bytes:
    encoded = faust_json.dumps(obj)
    return encoded if isinstance(encoded, bytes) else encoded.encode()
