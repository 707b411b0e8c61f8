"""How a failure is told in a log line: its type and where it was raised, never its message,
which may quote a value (a NIK, a name) from the data being processed."""

from __future__ import annotations

import traceback
from pathlib import Path


def failure_site(exc: BaseException) -> str:
    """``ValueError at module.py:12 function < caller.py:34 caller`` (innermost frame first)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f"{type(exc).__name__} at " + " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:]))
