"""Decoding a binlog rows event's row images from its packet: :class:`BinlogRowsDecoder`.

The binlog reader reads events on one connection, in order, but decoding their rows (every
column of every row in Python, in mysql-replication) took half of its time: the connector could
not go faster than one core decoded. So the reader passes each rows event's packet as it came
(:class:`BinlogRows`, a few hundred bytes) and the table it names (:class:`BinlogTable`, when its
TableMapEvent is new), and the rows are decoded where they are encoded, on the connector's encoding
workers (:mod:`simpul.cdc.encoding_pool`): by :class:`~simpul.cdc.mysql.row_images.RowImageReader`
for tables of the common column types, else by mysql-replication's own decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pymysql.protocol import MysqlPacket
from pymysqlreplication.packet import BinLogPacketWrapper
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from pymysqlreplication.table import Table

from simpul.cdc.mysql.row_images import RowImageReader

if TYPE_CHECKING:
    from simpul.cdc.mysql.row_encoder import SourcePosition

# Debezium's op of each rows event class, and back.
OPS: dict[type, str] = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
_EVENT_CLASSES = {op: cls for cls, op in OPS.items()}


@dataclass(frozen=True)
class BinlogTable:
    """A table as its TableMapEvent described it, and the connection facts decoding depends on."""

    table: Table  # mysql-replication's (plain data: ids, names, Column objects)
    charset: str  # the replication connection's
    dbms: str  # "mysql" or "mariadb": charset ids differ
    post_header_lengths: Any  # from the binlog's format description event

    @classmethod
    def of(cls, event: Any, table: Table) -> BinlogTable:
        """The layout that a rows ``event`` read by mysql-replication names (``table``, its table map's)."""
        return cls(table, event.packet.charset, event.dbms, event._post_header_lengths)


def undecoded(event: Any) -> tuple[bytes, bool]:
    """A rows event read (but not decoded) by mysql-replication: its packet as the server sent it,
    and whether a CRC32 trails it (the header is 19 bytes, 23 with one)."""
    return event.packet.packet.get_all_data(), event.packet.event_size - event.event_size == 23


@dataclass(frozen=True)
class BinlogRows:
    """One rows event, undecoded: its packet, and where it is in the log (``row`` 0)."""

    ref: int  # the connector's name of the table layout its rows encode with
    table_id: int
    op: str  # "c", "u" or "d"
    packet: bytes  # as read from the server, the OK byte first
    checksum: bool  # whether a CRC32 trails the event
    where: SourcePosition


class _Connection:
    """What mysql-replication's decoding asks of the replication connection, and nothing else."""

    def __init__(self, charset: str, dbms: str) -> None:
        self.charset = charset
        self._dbms = dbms

    def _get_dbms(self) -> str:
        return self._dbms


class BinlogRowsDecoder:
    """Decodes :class:`BinlogRows` with the :class:`BinlogTable`\\ s described before them (no I/O)."""

    def __init__(self) -> None:
        self._described: dict[int, BinlogTable] = {}
        self._readers: dict[int, RowImageReader | None] = {}

    def describe(self, table: BinlogTable) -> None:
        """Take a table's layout: later events naming its table id decode with it."""
        self._described[table.table.table_id] = table
        self._readers[table.table.table_id] = RowImageReader.of(table.table.columns)

    def decode(self, rows: BinlogRows) -> list[dict[str, Any]]:
        """The event's rows as mysql-replication gives them (``values``, or ``before_values`` and
        ``after_values``, with their ``none_sources``)."""
        described = self._described[rows.table_id]
        reader = self._readers[rows.table_id]
        if reader is not None:
            read = reader.rows(rows.packet, described.post_header_lengths, rows.checksum)
            if read is not None:
                return read
        return self.decode_with_mysql_replication(rows)

    def decode_with_mysql_replication(self, rows: BinlogRows) -> list[dict[str, Any]]:
        """:meth:`decode` by mysql-replication alone (what the faster reader must equal)."""
        described = self._described[rows.table_id]
        packet = BinLogPacketWrapper(
            MysqlPacket(rows.packet, described.charset),
            {rows.table_id: described.table},
            _Connection(described.charset, described.dbms),
            (0, 0, 0),
            rows.checksum,
            {_EVENT_CLASSES[rows.op]},
            None, None, None, None,  # only/ignored tables and schemas: the reader filtered already
            True,  # freeze_schema: never ask the server about columns
            False,  # ignore_decode_errors: a value that does not decode sets the event aside
            False,  # verify_checksum: off, as in the reader
            False,
            False,
            post_header_lengths=described.post_header_lengths,
        )
        if packet.event is None:
            raise ValueError(f"not a rows event of table id {rows.table_id}")
        return packet.event.rows
