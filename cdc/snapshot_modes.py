"""Debezium's ``snapshot.mode``, decided the same way for every connector (pure)."""

from __future__ import annotations

from typing import Any

from simpul.cdc.errors import ConnectorError


class PositionLost(ConnectorError):
    """The stored position is gone from the server and the snapshot mode forbids a new snapshot."""


def needs_snapshot(mode: str, offset: dict[str, Any] | None, position_available: bool, lost: str) -> bool:
    """Whether to snapshot before streaming.

    ``initial``/``initial_only``: when no offset is stored or the stored snapshot did not complete;
    ``always``: every start; ``when_needed``: also when the stored position is no longer on the
    server (``position_available`` false: a purged binlog file, a dropped slot); ``no_data``: never.
    Raises :class:`PositionLost`, saying ``lost``, when streaming would have to resume from a
    position the server no longer has and the mode does not allow a snapshot.
    """
    completed = offset is not None and bool(offset.get("snapshot_completed"))
    if mode == "always":
        return True
    if mode == "no_data":
        return False
    if not completed:
        return True
    if not position_available:
        if mode == "when_needed":
            return True
        raise PositionLost(f"{lost}; changes since may be lost. Set capture.snapshot_mode to when_needed to snapshot again")
    return False
