"""A pure decoder of PostgreSQL's pgoutput logical-replication messages (protocol version 1).

The bytes are what ``pg_logical_slot_peek_binary_changes(..., 'proto_version', '1',
'publication_names', ...)`` or a replication stream returns per change. Relation messages arrive
before the first change of a table in each session and whenever its definition changes; the
decoder keeps them so later row messages can be read with the table's columns *at that point of
the log*, which is what makes schema changes mid-stream decode correctly.

Message layout: https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)

_INT8 = struct.Struct("!b")
_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_UINT32 = struct.Struct("!I")
_INT64 = struct.Struct("!q")
_UINT64 = struct.Struct("!Q")


class PgOutputError(ValueError):
    """A message that is not valid pgoutput, or refers to a relation never described."""


def format_lsn(lsn: int) -> str:
    """An LSN as PostgreSQL writes it, e.g. ``16/B374D848``."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN from PostgreSQL's ``XXX/XXX`` text form."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def pg_timestamp(micros: int) -> datetime:
    """A pgoutput timestamp (microseconds since 2000-01-01 UTC) as an aware datetime."""
    return PG_EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class Column:
    """One column of a relation as pgoutput describes it."""

    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Relation:
    """A table's definition at this point of the log."""

    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        """``schema.table``."""
        return f"{self.namespace}.{self.name}"

    @property
    def key_columns(self) -> tuple[Column, ...]:
        """Columns of the replica identity (the primary key under REPLICA IDENTITY DEFAULT)."""
        return tuple(c for c in self.columns if c.is_key)


class Unchanged:
    """An unchanged TOASTed value that the server did not send (REPLICA IDENTITY DEFAULT)."""

    _instance: "Unchanged | None" = None

    def __new__(cls) -> "Unchanged":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = Unchanged()

# A column value as sent: None (SQL NULL), UNCHANGED_TOAST, text (text format) or bytes (binary format).
RawValue = str | bytes | Unchanged | None


@dataclass(frozen=True)
class Begin:
    """The start of a transaction."""

    final_lsn: int
    commit_time_us: int
    xid: int


@dataclass(frozen=True)
class Commit:
    """The end of a transaction."""

    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time_us: int


@dataclass(frozen=True)
class Origin:
    """The origin of a replicated transaction."""

    lsn: int
    name: str


@dataclass(frozen=True)
class TypeInfo:
    """A user-defined type used by a later relation (e.g. an enum)."""

    oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class Insert:
    """A row inserted."""

    relation: Relation
    new: tuple[RawValue, ...]


@dataclass(frozen=True)
class Update:
    """A row updated; ``old`` holds the key ('K') or the whole old row ('O') when the server sent one."""

    relation: Relation
    old: tuple[RawValue, ...] | None
    old_kind: str | None
    new: tuple[RawValue, ...]


@dataclass(frozen=True)
class Delete:
    """A row deleted; ``old`` holds the key ('K') or the whole old row ('O')."""

    relation: Relation
    old: tuple[RawValue, ...]
    old_kind: str


@dataclass(frozen=True)
class Truncate:
    """Tables truncated together."""

    relations: tuple[Relation, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class LogicalMessage:
    """A message written with ``pg_logical_emit_message`` (used for heartbeats and watermarks)."""

    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | TypeInfo | Insert | Update | Delete | Truncate | LogicalMessage


@dataclass
class _Reader:
    data: bytes
    pos: int = 0

    def take(self, st: struct.Struct) -> int:
        try:
            (value,) = st.unpack_from(self.data, self.pos)
        except struct.error as exc:
            raise PgOutputError(f"message ends early at byte {self.pos}") from exc
        self.pos += st.size
        return value

    def byte(self) -> str:
        if self.pos >= len(self.data):
            raise PgOutputError(f"message ends early at byte {self.pos}")
        value = chr(self.data[self.pos])
        self.pos += 1
        return value

    def string(self) -> str:
        end = self.data.find(b"\x00", self.pos)
        if end < 0:
            raise PgOutputError(f"unterminated string at byte {self.pos}")
        value = self.data[self.pos : end].decode("utf-8")
        self.pos = end + 1
        return value

    def raw(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PgOutputError(f"value of {n} bytes runs past the message end at byte {self.pos}")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value


@dataclass
class PgOutputDecoder:
    """Decodes pgoutput messages one at a time, remembering relations as the log describes them."""

    relations: dict[int, Relation] = field(default_factory=dict)
    types: dict[int, TypeInfo] = field(default_factory=dict)

    def decode(self, data: bytes) -> Message:
        """One message; a Relation or TypeInfo also updates what the decoder knows."""
        reader = _Reader(bytes(data))
        kind = reader.byte()
        handler = self._HANDLERS.get(kind)
        if handler is None:
            raise PgOutputError(f"unknown pgoutput message type {kind!r}")
        return handler(self, reader)

    def _begin(self, r: _Reader) -> Begin:
        return Begin(final_lsn=r.take(_UINT64), commit_time_us=r.take(_INT64), xid=r.take(_UINT32))

    def _commit(self, r: _Reader) -> Commit:
        return Commit(flags=r.take(_INT8), commit_lsn=r.take(_UINT64), end_lsn=r.take(_UINT64), commit_time_us=r.take(_INT64))

    def _origin(self, r: _Reader) -> Origin:
        return Origin(lsn=r.take(_UINT64), name=r.string())

    def _relation(self, r: _Reader) -> Relation:
        oid = r.take(_UINT32)
        namespace = r.string() or "pg_catalog"
        name = r.string()
        identity = r.byte()
        columns = []
        for _ in range(r.take(_INT16)):
            flags = r.take(_INT8)
            columns.append(Column(name=r.string(), type_oid=r.take(_UINT32), type_modifier=r.take(_INT32), is_key=bool(flags & 1)))
        relation = Relation(oid, namespace, name, identity, tuple(columns))
        self.relations[oid] = relation
        return relation

    def _type(self, r: _Reader) -> TypeInfo:
        info = TypeInfo(oid=r.take(_UINT32), namespace=r.string(), name=r.string())
        self.types[info.oid] = info
        return info

    def _relation_of(self, r: _Reader) -> Relation:
        oid = r.take(_UINT32)
        try:
            return self.relations[oid]
        except KeyError:
            raise PgOutputError(f"row for relation {oid} arrived before its Relation message") from None

    def _tuple(self, r: _Reader, relation: Relation) -> tuple[RawValue, ...]:
        # The hot loop of the connector: every column of every row passes here, so it reads the
        # buffer with plain indexing instead of the reader's per-field calls.
        data, pos, end = r.data, r.pos, len(r.data)
        if pos + 2 > end:
            raise PgOutputError(f"message ends early at byte {pos}")
        count = int.from_bytes(data[pos : pos + 2], "big", signed=True)
        pos += 2
        if count != len(relation.columns):
            raise PgOutputError(
                f"{relation.qualified_name}: tuple has {count} columns, relation has {len(relation.columns)}"
            )
        values: list[RawValue] = []
        append = values.append
        for _ in range(count):
            if pos >= end:
                raise PgOutputError(f"message ends early at byte {pos}")
            kind = data[pos]
            pos += 1
            if kind == 0x74 or kind == 0x62:  # 't' text, 'b' binary
                length = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
                if pos + length > end:
                    raise PgOutputError(f"value of {length} bytes runs past the message end at byte {pos}")
                raw = data[pos : pos + length]
                append(raw.decode("utf-8") if kind == 0x74 else raw)
                pos += length
            elif kind == 0x6E:  # 'n' null
                append(None)
            elif kind == 0x75:  # 'u' unchanged TOAST
                append(UNCHANGED_TOAST)
            else:
                raise PgOutputError(f"{relation.qualified_name}: unknown tuple value kind {chr(kind)!r}")
        r.pos = pos
        return tuple(values)

    def _insert(self, r: _Reader) -> Insert:
        relation = self._relation_of(r)
        if (marker := r.byte()) != "N":
            raise PgOutputError(f"insert: expected 'N', got {marker!r}")
        return Insert(relation, self._tuple(r, relation))

    def _update(self, r: _Reader) -> Update:
        relation = self._relation_of(r)
        marker = r.byte()
        old, old_kind = None, None
        if marker in ("K", "O"):
            old, old_kind = self._tuple(r, relation), marker
            marker = r.byte()
        if marker != "N":
            raise PgOutputError(f"update: expected 'N', got {marker!r}")
        return Update(relation, old, old_kind, self._tuple(r, relation))

    def _delete(self, r: _Reader) -> Delete:
        relation = self._relation_of(r)
        marker = r.byte()
        if marker not in ("K", "O"):
            raise PgOutputError(f"delete: expected 'K' or 'O', got {marker!r}")
        return Delete(relation, self._tuple(r, relation), marker)

    def _truncate(self, r: _Reader) -> Truncate:
        count = r.take(_INT32)
        options = r.take(_INT8)
        relations = []
        for _ in range(count):
            oid = r.take(_UINT32)
            if oid not in self.relations:
                raise PgOutputError(f"truncate of relation {oid} arrived before its Relation message")
            relations.append(self.relations[oid])
        return Truncate(tuple(relations), cascade=bool(options & 1), restart_identity=bool(options & 2))

    def _message(self, r: _Reader) -> LogicalMessage:
        flags = r.take(_INT8)
        lsn = r.take(_UINT64)
        prefix = r.string()
        return LogicalMessage(bool(flags & 1), lsn, prefix, r.raw(r.take(_INT32)))

    _HANDLERS = {
        "B": _begin,
        "C": _commit,
        "O": _origin,
        "R": _relation,
        "Y": _type,
        "I": _insert,
        "U": _update,
        "D": _delete,
        "T": _truncate,
        "M": _message,
    }
