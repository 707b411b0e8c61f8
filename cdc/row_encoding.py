"""What every connector's row encoder shares, in whichever process it runs: the encoders of a
table's schemas under ids registered elsewhere (:func:`registered_encoders`) and the
:class:`DeadLetter` it returns for a row it sets aside, and the shape of an encoded event.

Kept apart from :mod:`simpul.cdc.publisher`, so that an encoding worker process imports no Kafka
producer, registry client or metrics: those imports cost some 20 MB in each worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from simpul.schemas.wire import ConfluentAvroEncoder

Position = dict[str, Any]
# One record to produce: (topic, key bytes, value bytes or None for a tombstone, table, op or None,
# commit time in ms to time its acknowledgement lag, or None).
EncodedEvent = tuple[str, Union[bytes, None], Union[bytes, None], str, Union[str, None], Union[int, None]]


def registered_encoders(
    key_schema: dict[str, Any] | None, key_id: int | None, value_schema: dict[str, Any], value_id: int | None,
) -> tuple[ConfluentAvroEncoder | None, ConfluentAvroEncoder | None]:
    """Encoders of a table's schemas under the ids :meth:`EventPublisher.register_table` gave, for
    a process that registers nothing itself (an encoding worker); None where there is no id.
    The value encoder writes a ``source`` block passed again, the same dict, only once."""
    key = ConfluentAvroEncoder(key_schema, key_id) if key_schema is not None and key_id is not None else None
    value = ConfluentAvroEncoder(value_schema, value_id, repeated_field="source") if value_id is not None else None
    return key, value


@dataclass(frozen=True)
class DeadLetter:
    """A row set aside: why (a short ``reason`` code and a message), where it came from, and what it was."""

    reason: str
    message: str
    table: str
    position: Position
    key: dict[str, Any] | None = None
    row: dict[str, Any] | None = None
