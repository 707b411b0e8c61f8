"""PgOutputDecoder on hand-built messages (pure), and on what a real server sends (stack)."""

from __future__ import annotations

import struct

import psycopg
import pytest

from simpul.cdc.postgres.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    LogicalMessage,
    PgOutputDecoder,
    PgOutputError,
    Relation,
    Truncate,
    Update,
    format_lsn,
    parse_lsn,
    pg_timestamp,
)


def _s(text: str) -> bytes:
    return text.encode() + b"\x00"


def _relation(oid: int = 16400, columns=(("id", 23, True), ("nama", 25, False), ("foto", 17, False))) -> bytes:
    body = b"R" + struct.pack("!I", oid) + _s("public") + _s("penduduk") + b"d" + struct.pack("!h", len(columns))
    for name, type_oid, key in columns:
        body += struct.pack("!b", 1 if key else 0) + _s(name) + struct.pack("!Ii", type_oid, -1)
    return body


def _tuple(*values) -> bytes:
    body = struct.pack("!h", len(values))
    for value in values:
        if value is None:
            body += b"n"
        elif value is UNCHANGED_TOAST:
            body += b"u"
        else:
            raw = value.encode()
            body += b"t" + struct.pack("!i", len(raw)) + raw
    return body


def test_lsn_text_round_trip() -> None:
    assert format_lsn(parse_lsn("16/B374D848")) == "16/B374D848"
    assert parse_lsn("0/1") == 1
    assert format_lsn((1 << 32) + 255) == "1/FF"


def test_begin_commit() -> None:
    decoder = PgOutputDecoder()
    begin = decoder.decode(b"B" + struct.pack("!QqI", 0x1_0000_0010, 1_000_000, 742))
    assert begin == Begin(final_lsn=0x1_0000_0010, commit_time_us=1_000_000, xid=742)
    assert pg_timestamp(begin.commit_time_us).isoformat() == "2000-01-01T00:00:01+00:00"
    commit = decoder.decode(b"C" + struct.pack("!bQQq", 0, 10, 20, 5))
    assert commit == Commit(flags=0, commit_lsn=10, end_lsn=20, commit_time_us=5)


def test_rows_decode_with_the_relation_in_force() -> None:
    decoder = PgOutputDecoder()
    relation = decoder.decode(_relation())
    assert isinstance(relation, Relation) and relation.qualified_name == "public.penduduk"
    assert [c.name for c in relation.key_columns] == ["id"]

    insert = decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + _tuple("1", "Siti Aminah", None))
    assert insert == Insert(relation, ("1", "Siti Aminah", None))

    update = decoder.decode(b"U" + struct.pack("!I", 16400) + b"K" + _tuple("1", None, None) + b"N" + _tuple("2", "Siti", UNCHANGED_TOAST))
    assert isinstance(update, Update)
    assert update.old == ("1", None, None) and update.old_kind == "K"
    assert update.new[2] is UNCHANGED_TOAST

    plain_update = decoder.decode(b"U" + struct.pack("!I", 16400) + b"N" + _tuple("2", "Siti A.", None))
    assert plain_update.old is None and plain_update.new[1] == "Siti A."

    delete = decoder.decode(b"D" + struct.pack("!I", 16400) + b"O" + _tuple("2", "Siti A.", None))
    assert delete == Delete(relation, ("2", "Siti A.", None), "O")

    # ALTER TABLE ADD COLUMN: the new Relation message replaces the old one for later rows
    decoder.decode(_relation(columns=(("id", 23, True), ("nama", 25, False), ("foto", 17, False), ("hp", 1043, False))))
    widened = decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + _tuple("3", "Ucup", None, "0812"))
    assert [c.name for c in widened.relation.columns][-1] == "hp"
    assert widened.new[-1] == "0812"


def test_truncate_and_message() -> None:
    decoder = PgOutputDecoder()
    decoder.decode(_relation(oid=1))
    decoder.decode(_relation(oid=2))
    truncate = decoder.decode(b"T" + struct.pack("!ib", 2, 3) + struct.pack("!II", 1, 2))
    assert isinstance(truncate, Truncate)
    assert [r.oid for r in truncate.relations] == [1, 2] and truncate.cascade and truncate.restart_identity
    message = decoder.decode(b"M" + struct.pack("!bQ", 1, 99) + _s("simpul.heartbeat") + struct.pack("!i", 2) + b"hi")
    assert message == LogicalMessage(True, 99, "simpul.heartbeat", b"hi")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"Z", "unknown pgoutput message type 'Z'"),
        (b"B\x00\x01", "message ends early"),
        (b"I" + struct.pack("!I", 777) + b"N", "before its Relation message"),
        (_relation()[:-3], "message ends early"),
    ],
)
def test_malformed_messages_raise_a_clear_error(data: bytes, problem: str) -> None:
    with pytest.raises(PgOutputError, match=problem):
        PgOutputDecoder().decode(data)


def test_column_count_mismatch_is_an_error() -> None:
    decoder = PgOutputDecoder()
    decoder.decode(_relation())
    with pytest.raises(PgOutputError, match="tuple has 2 columns, relation has 3"):
        decoder.decode(b"I" + struct.pack("!I", 16400) + b"N" + _tuple("1", "x"))


@pytest.mark.stack
def test_decodes_what_a_real_server_sends(stack_config, unique_name: str) -> None:
    dsn = stack_config.source("disdukcapil").dsn()
    slot, publication, table = f"{unique_name}_slot", f"{unique_name}_pub", f"{unique_name}_tbl"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, nama text, lahir date)")
        conn.execute(f"CREATE PUBLICATION {publication} FOR TABLE {table}")
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))
        try:
            with conn.transaction():
                conn.execute(f"INSERT INTO {table} VALUES (1, 'Muhammad Yusuf', '1990-02-03'), (2, NULL, NULL)")
            conn.execute(f"UPDATE {table} SET nama = 'Moch. Yusuf' WHERE id = 1")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN hp text")
            conn.execute(f"INSERT INTO {table} VALUES (3, 'Siti', NULL, '0812')")
            conn.execute(f"DELETE FROM {table} WHERE id = 2")
            conn.execute(f"TRUNCATE {table}")
            rows = conn.execute(
                "SELECT data FROM pg_logical_slot_peek_binary_changes(%s, NULL, NULL, 'proto_version', '1', 'publication_names', %s, 'messages', 'true')",
                (slot, publication),
            ).fetchall()
        finally:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            conn.execute(f"DROP PUBLICATION {publication}")
            conn.execute(f"DROP TABLE {table}")
    decoder = PgOutputDecoder()
    changes = [m for m in (decoder.decode(row[0]) for row in rows) if not isinstance(m, (Begin, Commit, Relation))]
    assert [type(m).__name__ for m in changes] == ["Insert", "Insert", "Update", "Insert", "Delete", "Truncate"]
    assert changes[0].new == ("1", "Muhammad Yusuf", "1990-02-03")
    assert changes[1].new == ("2", None, None)
    assert changes[2].new[1] == "Moch. Yusuf"
    assert changes[3].new == ("3", "Siti", None, "0812")
    assert [c.name for c in changes[3].relation.columns] == ["id", "nama", "lahir", "hp"]
    assert changes[4].old_kind == "K" and changes[4].old[0] == "2"
