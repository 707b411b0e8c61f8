"""Debezium's snapshot modes, decided once for both connectors (pure)."""

from __future__ import annotations

import pytest

from simpul.cdc.snapshot_modes import PositionLost, needs_snapshot

DONE = {"file": "bin.000002", "pos": 4, "snapshot_completed": True}


@pytest.mark.parametrize(
    ("mode", "offset", "available", "expected"),
    [
        ("initial", None, False, True),
        ("initial", {**DONE, "snapshot_completed": False}, True, True),
        ("initial", DONE, True, False),
        ("initial_only", DONE, True, False),
        ("always", DONE, True, True),
        ("no_data", None, False, False),
        ("when_needed", DONE, False, True),
        ("when_needed", DONE, True, False),
    ],
)
def test_modes(mode: str, offset, available: bool, expected: bool) -> None:
    assert needs_snapshot(mode, offset, available, "gone") is expected


def test_a_lost_position_without_permission_to_snapshot_is_a_clear_error() -> None:
    with pytest.raises(PositionLost, match="binlog file bin.000002 is no longer on the server; changes since may be lost. Set capture.snapshot_mode to when_needed"):
        needs_snapshot("initial", DONE, False, "binlog file bin.000002 is no longer on the server")
