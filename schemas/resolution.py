"""Avro schemas of the resolver's output topics, registered like the CDC topics' (TopicNameStrategy).

All output topics are compacted and keyed by an Avro string: the master id for citizens, the
record id for links and for feedback, ``<record a>|<record b>`` for review items,
``<master or record id>|<issue>`` for data-quality issues. A null value (tombstone) deletes the
key: a citizen merged away, a record deleted at its source, a review no longer open, an issue
corrected.

Feedback (:data:`FEEDBACK_SCHEMA`) is one topic per agency (``sources[].feedback``): for each
record the agency holds, its master id, its life status, and the verified golden fields the
agency may see; a field outside the agency's scope is always null, whatever the golden record
holds. ``verified_from`` says where each delivered field came from (the registry, the agency
itself, or ``another_agency``), and ``updated_ms`` is the latest source change among the
records that gave the delivered fields, so a consumer can measure the end-to-end delay. A record's
feedback is sent again only when it changes.
"""

from __future__ import annotations

from typing import Any

KEY_SCHEMA = "\"string\""  # the Avro primitive, as schema text
# Every output message carries the source commit time (epoch ms) of the change that caused it in
# this header, so a sink can measure end-to-end latency without a field in every schema.
SOURCE_TS_HEADER = "source_ts_ms"



def _optional(name: str, avro_type: Any = "string", doc: str = "") -> dict[str, Any]:
    field: dict[str, Any] = {"name": name, "type": ["null", avro_type], "default": None}
    if doc:
        field["doc"] = doc
    return field


# The golden identity fields after nik, name and titles, shared by the citizen and feedback records.
_IDENTITY_FIELDS = [
    _optional("birth_date", doc="ISO date"),
    _optional("birth_place"),
    _optional("sex", doc="L or P"),
    *(_optional(name) for name in ("street", "rt", "rw", "kelurahan", "kecamatan", "kk", "phone")),
]

CITIZEN_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Citizen",
    "namespace": "simpul.resolver",
    "doc": "A citizen's golden record: each field from the member record survivorship chose (lineage).",
    "fields": [
        {"name": "master_id", "type": "string"},
        {"name": "anchor_record_id", "type": "string", "doc": "The member first seen in the source; the id derives from it."},
        {"name": "members", "type": {"type": "array", "items": "string"}, "doc": "Record ids (source:table:key)."},
        _optional("nik"),
        _optional("name"),
        {"name": "titles", "type": {"type": "array", "items": "string"}, "default": []},
        *_IDENTITY_FIELDS,
        _optional("deceased", "boolean"),
        {"name": "lineage", "type": {"type": "map", "values": "string"}, "doc": "Field name to the record id that gave it."},
        {"name": "updated_ms", "type": "long", "doc": "Latest source change among the members (epoch ms)."},
    ],
}

LINK_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CitizenLink",
    "namespace": "simpul.resolver",
    "doc": "Which citizen a source record belongs to, and the strongest edge that decided it.",
    "fields": [
        {"name": "record_id", "type": "string"},
        {"name": "source", "type": "string"},
        {"name": "table", "type": "string"},
        {"name": "record_key", "type": "string"},
        {"name": "master_id", "type": "string"},
        {"name": "rule", "type": "string", "doc": "nik, kk_name, score, or new (no link: a citizen of its own)."},
        _optional("matched_record_id"),
        _optional("probability", "double"),
        _optional("weight", "double", "Match weight in bits (log2 Bayes factor) of the deciding pair."),
        {"name": "contributions", "type": {"type": "map", "values": "double"}, "doc": "Bits per comparison."},
        {"name": "updated_ms", "type": "long"},
    ],
}

REVIEW_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ReviewItem",
    "namespace": "simpul.resolver",
    "doc": "Two records of different citizens scored between the review and link thresholds.",
    "fields": [
        {"name": "record_a", "type": "string"},
        {"name": "record_b", "type": "string"},
        {"name": "master_a", "type": "string"},
        {"name": "master_b", "type": "string"},
        {"name": "probability", "type": "double"},
        {"name": "weight", "type": "double"},
        {"name": "contributions", "type": {"type": "map", "values": "double"}},
        {"name": "levels", "type": {"type": "map", "values": "string"}, "doc": "Comparison level reached, e.g. name: jaro_winkler>=0.95."},
    ],
}

QUALITY_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "DataQualityIssue",
    "namespace": "simpul.resolver",
    "doc": "A problem for a data steward: a record's (e.g. nik_placeholder) or a citizen's (e.g. deceased_receiving_aid).",
    "fields": [
        {"name": "issue", "type": "string"},
        _optional("master_id"),
        {"name": "record_ids", "type": {"type": "array", "items": "string"}},
        {"name": "detected_ms", "type": "long"},
    ],
}

FEEDBACK_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "CitizenFeedback",
    "namespace": "simpul.resolver",
    "doc": "What an agency hears back about one of its records: master id, life status, and the golden fields it may see.",
    "fields": [
        {"name": "record_id", "type": "string", "doc": "source:table:key, as in the link topic."},
        {"name": "table", "type": "string"},
        {"name": "record_key", "type": "string"},
        {"name": "master_id", "type": "string"},
        _optional("nik"),
        _optional("name"),
        _optional("titles", {"type": "array", "items": "string"}),
        *_IDENTITY_FIELDS,
        _optional("deceased", "boolean", "Life status, delivered to every agency; null when no trusted source says."),
        {"name": "verified_from", "type": {"type": "map", "values": "string"}, "doc": "Delivered field to the source that gave it."},
        {"name": "updated_ms", "type": "long", "doc": "The latest source change among the records that gave the delivered fields (epoch ms)."},
    ],
}
