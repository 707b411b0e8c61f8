"""A durable table seen through a bounded read cache and a write buffer: :class:`WriteBehindTable`.

The resolver reads a record's neighbours for every change and writes the same records and
citizens several times within a batch of changes. Through a Faust table every read decodes JSON
from RocksDB and every write encodes it twice (store and changelog) and sends a changelog message.
The resolver is its tables' only writer, so a cache in front of them is coherent: reads are served
from the pending writes or the cache, and :meth:`WriteBehindTable.flush` writes each key changed
since the last flush once. The stream processor flushes at the end of every batch, before the
batch's input offsets are acknowledged, so a crash loses nothing that was acknowledged.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Protocol, runtime_checkable

_DELETED = object()  # a pending delete, or (in the cache) a key the backing table does not hold
_MISSING = object()  # no value here


@runtime_checkable
class BatchWritable(Protocol):
    """A table that takes many writes at once (value None deletes its key)."""

    def write_many(self, changes: Mapping[str, Any]) -> None:
        """Apply every (key, value) of ``changes``."""


class WriteBehindTable(MutableMapping[str, Any]):
    """``backing`` (a durable table) with writes held until :meth:`flush` and up to ``cache_size``
    clean values (and keys known to be absent) kept in memory, least recently used first out.

    Values are handed out by reference, as a plain dict would: the caller stores a value again
    after changing it (which a durable table needs anyway), so the cache never holds a change the
    backing table will not get. A ``backing`` that is :class:`BatchWritable` gets each flush as one
    ``write_many`` (so its values must not be None, which there means a delete).
    """

    def __init__(self, backing: MutableMapping[str, Any], cache_size: int) -> None:
        if cache_size < 0:
            raise ValueError("cache_size must not be negative")
        self.backing = backing
        self.cache_size = cache_size
        self._pending: dict[str, Any] = {}
        self._cache: OrderedDict[str, Any] = OrderedDict()

    @property
    def pending(self) -> int:
        """Keys written or deleted since the last flush."""
        return len(self._pending)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when there is none (without raising)."""
        value = self._pending.get(key, _MISSING)
        if value is not _MISSING:
            return default if value is _DELETED else value
        value = self._cache.get(key, _MISSING)
        if value is not _MISSING:
            self._cache.move_to_end(key)
            return default if value is _DELETED else value
        value = self.backing.get(key, _MISSING)
        # An absent key is remembered too: a new row, record or citizen is looked up before it is written.
        self._remember(key, _DELETED if value is _MISSING else value)
        return default if value is _MISSING else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __setitem__(self, key: str, value: Any) -> None:
        self._cache.pop(key, None)
        self._pending[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self._cache.pop(key, None)
        self._pending[key] = _DELETED

    def __iter__(self) -> Iterator[str]:
        pending = dict(self._pending)
        for key in self.backing:
            if key not in pending:
                yield key
        for key, value in pending.items():
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        """Every (key, value), read straight from the backing table (the cache is left as it is)."""
        pending = dict(self._pending)
        for key, value in self.backing.items():
            if key not in pending:
                yield key, value
        for key, value in pending.items():
            if value is not _DELETED:
                yield key, value

    def flush(self) -> int:
        """Write every pending change to the backing table, once per key; returns how many."""
        pending, self._pending = self._pending, {}
        if isinstance(self.backing, BatchWritable):
            self.backing.write_many({key: None if value is _DELETED else value for key, value in pending.items()})
        else:
            for key, value in pending.items():
                if value is _DELETED:
                    self.backing.pop(key, None)
                else:
                    self.backing[key] = value
        for key, value in pending.items():
            self._remember(key, value)
        return len(pending)

    def _remember(self, key: str, value: Any) -> None:
        cache = self._cache
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
