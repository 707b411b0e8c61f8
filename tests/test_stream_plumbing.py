"""The stream processors' plumbing without servers: Debezium events read as row changes, row changes
batched into one message and read back one by one, the write-behind table over a durable table, and
the per-batch output coalescing."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from conftest import free_port
from simpul.schemas.wire import ConfluentAvroEncoder, WireFormatError
from simpul.streams.app import OutputBatch, use_priority
from simpul.streams.changes import ChangeError, RowChange, decode_changes, encode_changes
from simpul.streams.citizens import CITIZEN, LINK, Output
from simpul.streams.router import EnvelopeReader, SchemaUnavailable
from simpul.streams.stores import WriteBehindTable
from simpul.streams.tables import changelog_table
from simpul.streams.topology import SourceTopic


def _change(key: str, position: int, values: dict[str, Any] | None) -> RowChange:
    return RowChange("disdukcapil", "public.penduduk", key, "u" if values else "d", (position, 2), 1_700_000_000_000 + position, values)


def test_a_batch_of_changes_reads_back_change_by_change() -> None:
    changes = [_change("1", 10, {"nama": "SITI", "tgl_lahir": "1990-01-01", "rt": 1}), _change("2", 11, None)]
    items = decode_changes(encode_changes(changes))
    assert [RowChange.from_plain(item) for item in items] == changes


@pytest.mark.parametrize("data", [b"not json", b'{"s": "x"}', None])
def test_a_message_that_is_no_batch_is_one_error(data: bytes | None) -> None:
    with pytest.raises(ChangeError, match="not a batch of row changes"):
        decode_changes(data)


def test_one_bad_change_in_a_batch_fails_alone() -> None:
    good = _change("1", 10, {"nama": "SITI"})
    items = decode_changes(b"[" + orjson.dumps(good.to_plain()) + b',{"s": "x"}]')
    assert RowChange.from_plain(items[0]) == good
    with pytest.raises(ChangeError, match="not a row change"):
        RowChange.from_plain(items[1])


class CountingTable(dict[str, Any]):
    """A durable table stand-in that counts reads and writes."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.reads = 0
        self.writes = 0

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.reads += 1
        return super().get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def test_writes_reach_the_table_once_per_key_at_flush() -> None:
    backing = CountingTable({"a": 1, "gone": 0})
    table = WriteBehindTable(backing, cache_size=10)
    table["a"] = 2
    table["a"] = 3
    table["b"] = 4
    del table["gone"]
    assert (table["a"], table.get("b"), "gone" in table, table.pending) == (3, 4, False, 3)
    assert backing == {"a": 1, "gone": 0} and backing.writes == 0
    assert sorted(table) == ["a", "b"] and len(table) == 2 and dict(table.items()) == {"a": 3, "b": 4}
    assert table.flush() == 3
    assert backing == {"a": 3, "b": 4} and backing.writes == 2 and table.pending == 0
    with pytest.raises(KeyError):
        del table["gone"]


def test_reads_are_cached_up_to_the_cache_size_least_recently_used_out() -> None:
    backing = CountingTable({str(n): n for n in range(5)})
    table = WriteBehindTable(backing, cache_size=2)
    assert [table["0"], table["1"], table["0"]] == [0, 1, 0]
    assert backing.reads == 2  # the second read of "0" was the cache's
    table["2"]  # evicts "1", the least recently used
    table["0"]
    table["1"]
    assert backing.reads == 4
    assert table.get("missing", "default") == "default"
    with pytest.raises(KeyError):
        table["missing"]
    assert "missing" not in table and backing.reads == 5  # an absent key is remembered as absent
    table["missing"] = 7
    table.flush()
    assert table["missing"] == 7 and backing.reads == 5
    del table["missing"]
    table.flush()
    assert "missing" not in table and backing.reads == 5 and "missing" not in backing


def test_an_uncached_table_still_holds_its_pending_writes() -> None:
    table = WriteBehindTable(CountingTable(), cache_size=0)
    table["a"] = 1
    assert table["a"] == 1
    table.flush()
    assert table["a"] == 1 and table.backing.reads == 1
    with pytest.raises(ValueError):
        WriteBehindTable({}, cache_size=-1)


def test_a_batch_sends_each_keys_last_message_in_the_order_of_the_last_versions() -> None:
    batch = OutputBatch()
    batch.add(Output(CITIZEN, "m1", {"v": 1}), 100)
    batch.add(Output(LINK, "r1", {"v": 1}), 100)
    batch.add(Output(CITIZEN, "m1", None), 200)
    batch.add(Output(LINK, "m1", {"v": 2}), 300)  # another kind: another key
    assert [(o.kind, o.key, o.value, ts) for o, ts in batch.outputs()] == [
        (LINK, "r1", {"v": 1}, 100), (CITIZEN, "m1", None, 200), (LINK, "m1", {"v": 2}, 300),
    ]


_ROW = {"type": "record", "name": "Value", "namespace": "dukcapil.public.penduduk", "fields": [
    {"name": "nik", "type": "string"},
    {"name": "tgl_lahir", "type": ["null", {"type": "int", "connect.name": "io.debezium.time.Date"}], "default": None},
]}
_ENVELOPE = {"type": "record", "name": "Envelope", "namespace": "dukcapil.public.penduduk", "fields": [
    {"name": "before", "type": ["null", _ROW], "default": None},
    {"name": "after", "type": ["null", "Value"], "default": None},
    {"name": "source", "type": {"type": "record", "name": "Source", "fields": [
        {"name": "lsn", "type": ["null", "long"], "default": None}, {"name": "ts_ms", "type": "long"}]}},
    {"name": "op", "type": "string"},
]}
_WHERE = SourceTopic("dukcapil.public.penduduk", "disdukcapil", "public.penduduk", "nik")


class SchemasById:
    """A registry holding one schema under id 7 (a stand-in for the client's ``get_schema``)."""

    def get_schema(self, schema_id: int) -> Any:
        if schema_id != 7:
            raise SchemaRegistryError(404, 40403, "Schema not found")
        return Schema(json.dumps(_ENVELOPE), "AVRO")


def _event(schema_id: int = 7) -> bytes:
    envelope = {"before": None, "after": {"nik": "3673010101900001", "tgl_lahir": 7305},
                "source": {"lsn": 123456, "ts_ms": 1_700_000_000_000}, "op": "c"}
    return ConfluentAvroEncoder(_ENVELOPE, schema_id).encode(envelope)


def test_an_event_becomes_a_row_change_with_its_connect_types_converted() -> None:
    change = EnvelopeReader(SchemasById()).row_change(_WHERE, _event())  # type: ignore[arg-type]
    assert change == RowChange("disdukcapil", "public.penduduk", "3673010101900001", "c", (123456,), 1_700_000_000_000,
                               {"nik": "3673010101900001", "tgl_lahir": "1990-01-01"})


def test_an_event_whose_schema_the_registry_does_not_know_is_a_wire_format_error() -> None:
    with pytest.raises(WireFormatError, match="schema id 8 is not in the registry"):
        EnvelopeReader(SchemasById()).row_change(_WHERE, _event(8))  # type: ignore[arg-type]


def test_an_unreachable_registry_is_a_retry_not_a_dead_letter() -> None:
    unreachable = SchemaRegistryClient({"url": f"http://127.0.0.1:{free_port()}", "max.retries": 0})
    with pytest.raises(SchemaUnavailable, match="unreachable"):
        EnvelopeReader(unreachable).row_change(_WHERE, _event())


class BatchTable(dict):  # type: ignore[type-arg]
    """A table taking each flush as one batch (None deletes), as the durable changelog table does."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.batches: list[dict[str, Any]] = []

    def write_many(self, changes: dict[str, Any]) -> None:
        self.batches.append(dict(changes))
        for key, value in changes.items():
            if value is None:
                self.pop(key, None)
            else:
                self[key] = value


def test_a_batch_writable_table_gets_each_flush_as_one_batch_deletes_as_none() -> None:
    backing = BatchTable({"gone": 0, "kept": 1})
    table = WriteBehindTable(backing, cache_size=10)
    table["a"] = 1
    table["a"] = 2
    del table["gone"]
    assert table.flush() == 2
    assert backing.batches == [{"a": 2, "gone": None}] and backing == {"kept": 1, "a": 2}
    assert table["a"] == 2 and table.flush() == 0 and backing.batches[1:] == [{}]


def test_a_changelog_table_encodes_keys_and_values_as_its_faust_store_does() -> None:
    import faust

    app = faust.App("plumbing-codec", store="memory://")
    table = changelog_table(app, "codec", producer=None)  # type: ignore[arg-type]  # nothing is sent here
    value = {"p": [3, 17], "v": {"nama": "Sugeng Santoso", "é": None}, "f": 1.5, "l": {"r": ["nik", 1.0]}}
    assert table._dumps_key("disdukcapil:public.penduduk:1") == table.data._encode_key("disdukcapil:public.penduduk:1")
    assert table._dumps_value(value) == table.data._encode_value(value)
    assert table._loads_value(table._dumps_value(value)) == table.data._decode_value(table.data._encode_value(value)) == value


def test_the_resolvers_consumer_asks_the_broker_to_hold_a_fetch_at_most_100_ms() -> None:
    import asyncio

    import faust

    from simpul.streams.app import FETCH_MAX_WAIT_MS, PromptFetchConsumer

    async def held_for() -> int:
        app = faust.App("plumbing-fetch", broker="kafka://127.0.0.1:1", store="memory://")  # never connected
        app.transport.Consumer = PromptFetchConsumer
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert FETCH_MAX_WAIT_MS == 100 and asyncio.run(held_for()) == 100


def test_the_resolver_runs_at_its_configured_priority() -> None:
    """A lower priority is always granted (here in a process of its own, which it then keeps)."""
    script = ("import os; from simpul.streams.app import use_priority; "
              "start = os.getpriority(os.PRIO_PROCESS, 0); use_priority(start + 3); print(os.getpriority(os.PRIO_PROCESS, 0) - start)")
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "3"


def test_a_refused_priority_is_reported_and_the_resolver_goes_on(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(*_: Any) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "setpriority", refuse)
    with caplog.at_level(logging.WARNING, logger="simpul.streams"):
        use_priority(os.getpriority(os.PRIO_PROCESS, 0) - 5)
    assert any("processors.resolver_nice" in r.getMessage() and "CAP_SYS_NICE" in r.getMessage() for r in caplog.records)
