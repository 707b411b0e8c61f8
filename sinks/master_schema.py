"""The master citizen index's tables (PostgreSQL schema ``mpi``), created idempotently at start.

- ``citizen``: the current golden record per master id; ``attributes`` holds fields that newer,
  compatible versions of the Citizen schema add, until a column is made for them.
- ``citizen_history``: append-only; one row per change of a citizen (created, updated, removed):
  which fields changed from what to what, the Kafka position of the message that changed it, the
  source commit time of the change behind it, and when it was recorded.
- ``record_link``: the crosswalk, every agency record to its master id, with the deciding rule,
  score and bits per comparison (the explanation).
- ``review_item``: open pairs for a data steward; ``quality_issue``: open data-quality issues.
- ``dead_letter``: messages a sink could not apply, with the reason (never their values).
- ``sink_offset``: the consumed offsets, committed with the rows (see ``simpul.sinks.offsets``).
- ``api_audit``: every read of the lookup API: which agency, what, when, why, with which outcome.
"""

from __future__ import annotations

from typing import Any

from simpul.sinks.offsets import SinkOffsets

SCHEMA = "mpi"
OFFSETS = SinkOffsets(f"{SCHEMA}.sink_offset", "postgres")

# The golden fields, in the Citizen schema's order, with their column types.
GOLDEN_COLUMNS: dict[str, str] = {
    "nik": "text", "name": "text", "titles": "text[]", "birth_date": "date", "birth_place": "text", "sex": "text",
    "street": "text", "rt": "text", "rw": "text", "kelurahan": "text", "kecamatan": "text", "kk": "text",
    "phone": "text", "deceased": "boolean",
}

DDL: list[str] = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.citizen (
        master_id text PRIMARY KEY,
        anchor_record_id text NOT NULL,
        members text[] NOT NULL,
        {", ".join(f"{name} {kind}" for name, kind in GOLDEN_COLUMNS.items())},
        lineage jsonb NOT NULL,
        attributes jsonb NOT NULL DEFAULT '{{}}',
        version integer NOT NULL,
        source_updated_at timestamptz NOT NULL,
        indexed_at timestamptz NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS citizen_nik ON {SCHEMA}.citizen (nik)",
    f"CREATE INDEX IF NOT EXISTS citizen_name_birth ON {SCHEMA}.citizen (lower(name), birth_date)",
    # The API's fuzzy search takes its candidates by birth date.
    f"CREATE INDEX IF NOT EXISTS citizen_birth_date ON {SCHEMA}.citizen (birth_date)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.citizen_history (
        id bigserial PRIMARY KEY,
        master_id text NOT NULL,
        version integer NOT NULL,
        change text NOT NULL CHECK (change IN ('created', 'updated', 'removed')),
        changed jsonb NOT NULL,
        kafka_topic text NOT NULL,
        kafka_partition integer NOT NULL,
        kafka_offset bigint NOT NULL,
        source_changed_at timestamptz,
        recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    f"CREATE INDEX IF NOT EXISTS citizen_history_master ON {SCHEMA}.citizen_history (master_id, id)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.record_link (
        record_id text PRIMARY KEY,
        source text NOT NULL,
        table_name text NOT NULL,
        record_key text NOT NULL,
        master_id text NOT NULL,
        rule text NOT NULL,
        matched_record_id text,
        probability double precision,
        weight double precision,
        contributions jsonb NOT NULL,
        source_updated_at timestamptz NOT NULL,
        indexed_at timestamptz NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS record_link_master ON {SCHEMA}.record_link (master_id)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.review_item (
        pair_key text PRIMARY KEY,
        record_a text NOT NULL,
        record_b text NOT NULL,
        master_a text NOT NULL,
        master_b text NOT NULL,
        probability double precision NOT NULL,
        weight double precision NOT NULL,
        contributions jsonb NOT NULL,
        levels jsonb NOT NULL,
        indexed_at timestamptz NOT NULL)""",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.quality_issue (
        issue_key text PRIMARY KEY,
        issue text NOT NULL,
        master_id text,
        record_ids text[] NOT NULL,
        detected_at timestamptz NOT NULL,
        indexed_at timestamptz NOT NULL)""",
    f"CREATE INDEX IF NOT EXISTS quality_issue_issue ON {SCHEMA}.quality_issue (issue)",
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.dead_letter (
        id bigserial PRIMARY KEY,
        consumer text NOT NULL,
        kafka_topic text NOT NULL,
        kafka_partition integer NOT NULL,
        kafka_offset bigint NOT NULL,
        reason text NOT NULL,
        recorded_at timestamptz NOT NULL DEFAULT clock_timestamp())""",
    OFFSETS.ddl(),
    f"""CREATE TABLE IF NOT EXISTS {SCHEMA}.api_audit (
        id bigserial PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        agency text NOT NULL,
        purpose text,
        method text NOT NULL,
        route text NOT NULL,
        master_ids text[] NOT NULL DEFAULT '{{}}',
        fields text[] NOT NULL DEFAULT '{{}}',
        status integer NOT NULL)""",
]


def ensure_schema(conn: Any) -> None:
    """Create whatever of the master index is missing (safe to call at every start, and concurrently)."""
    with conn.transaction(), conn.cursor() as cursor:
        # Two processes starting together (sink and API) must not race on CREATE ... IF NOT EXISTS.
        cursor.execute("SELECT pg_advisory_xact_lock(hashtext('simpul.mpi.ddl'))")
        for statement in DDL:
            cursor.execute(statement)
