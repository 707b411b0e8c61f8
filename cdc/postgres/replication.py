"""The streaming replication protocol for one logical slot, on psycopg 3's libpq layer.

psycopg 3 has no replication API of its own, but since 3.3 it lets ``START_REPLICATION`` enter
COPY BOTH mode; the rest is the protocol itself
(https://www.postgresql.org/docs/current/protocol-replication.html): the server pushes ``w``
(XLogData: a pgoutput message) and ``k`` (keepalive) messages, the client answers with ``r``
(standby status update) carrying the position it has durably handled. The server keeps its
decoding state between messages, so unlike polling ``pg_logical_slot_peek_binary_changes`` no
WAL is decoded twice and a change reaches the client as soon as its transaction commits.
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import Iterator

import psycopg
from psycopg import pq

from simpul.cdc.postgres.events import PG_EPOCH_OFFSET_US
from simpul.cdc.postgres.pgoutput import format_lsn

_XLOG_HEADER = struct.Struct("!QQq")  # data start, WAL end, send time
_KEEPALIVE = struct.Struct("!Qqb")  # WAL end, send time, reply requested
_STATUS = struct.Struct("!cQQQqb")  # 'r', written, flushed, applied, client time, reply requested
STATUS_EVERY_S = 5.0


class ReplicationStream:
    """``START_REPLICATION`` on ``slot`` from where the slot has confirmed, pgoutput protocol 1."""

    def __init__(self, dsn: str, slot: str, publication: str, application_name: str) -> None:
        self.conn = psycopg.connect(dsn, replication="database", autocommit=True, application_name=application_name)
        self.pgconn = self.conn.pgconn
        command = f"START_REPLICATION SLOT \"{slot}\" LOGICAL 0/0 (proto_version '1', publication_names '{publication}')"
        self.pgconn.send_query(command.encode())
        result = self.pgconn.get_result()
        if result is None or result.status != pq.ExecStatus.COPY_BOTH:
            message = (result.error_message if result is not None else self.pgconn.error_message) or b""
            raise psycopg.OperationalError(f"START_REPLICATION on {slot} failed: {message.decode(errors='replace').strip()}")
        self.pgconn.nonblocking = 1
        self.server_wal_end = 0
        self.confirmed_lsn = 0
        self._last_status = time.monotonic()
        self._reply_requested = False

    def read(self, max_messages: int, timeout: float, first_timeout: float | None = None) -> Iterator[tuple[int, bytes]]:
        """Yield up to ``max_messages`` (data start LSN, pgoutput message) as they arrive; return
        when none has come for ``timeout`` seconds (``first_timeout``, when given, for the first
        message). Keepalives are answered here."""
        for n in range(max_messages):
            data = self._next(timeout if n or first_timeout is None else first_timeout)
            if data is None:
                return
            kind = data[0]
            if kind == 0x77:  # 'w'
                start, wal_end, _ = _XLOG_HEADER.unpack_from(data, 1)
                self.server_wal_end = max(self.server_wal_end, wal_end)
                yield start, data[1 + _XLOG_HEADER.size :]
            elif kind == 0x6B:  # 'k'
                wal_end, _, reply = _KEEPALIVE.unpack_from(data, 1)
                self.server_wal_end = max(self.server_wal_end, wal_end)
                self._reply_requested |= bool(reply)
            self.send_status_if_due()

    def _next(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            size, data = self.pgconn.get_copy_data(1)
            if size > 0:
                return bytes(data)
            if size == -1:
                raise psycopg.OperationalError("the server ended the replication stream")
            if size < -1:
                raise psycopg.OperationalError(f"replication stream broken: {self.pgconn.error_message.decode(errors='replace').strip()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([self.pgconn.socket], [], [], remaining)
            if readable:
                self.pgconn.consume_input()

    def confirm(self, lsn: int) -> None:
        """Everything before ``lsn`` is safely in Kafka: the server may recycle that WAL."""
        if lsn > self.confirmed_lsn:
            self.confirmed_lsn = lsn
            self.send_status_if_due(force=True)

    def send_status_if_due(self, force: bool = False) -> None:
        """Send a standby status update when asked, when forced, or every few seconds."""
        now = time.monotonic()
        if not (force or self._reply_requested or now - self._last_status >= STATUS_EVERY_S):
            return
        lsn = self.confirmed_lsn
        message = _STATUS.pack(b"r", lsn, lsn, lsn, time.time_ns() // 1000 - PG_EPOCH_OFFSET_US, 0)
        if self.pgconn.put_copy_data(message) != 1 or self.pgconn.flush() < 0:
            raise psycopg.OperationalError(f"cannot confirm {format_lsn(lsn)}: {self.pgconn.error_message.decode(errors='replace').strip()}")
        self._last_status, self._reply_requested = now, False

    def close(self) -> None:
        """End the stream (the slot keeps what was confirmed)."""
        self.conn.close()
