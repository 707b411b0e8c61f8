"""Clean stop on SIGTERM and Ctrl-C, the one way every Simpul process handles it."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class Shutdown:
    """A flag set by SIGTERM or SIGINT; long loops poll ``requested`` or ``wait`` on it.

    A second signal while stopping raises ``KeyboardInterrupt`` so a stuck stop can still be broken.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def install(self) -> "Shutdown":
        """Handle SIGTERM and SIGINT in this (main) thread."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt
        self._event.set()

    def request(self) -> None:
        """Ask every loop watching this flag to stop."""
        self._event.set()

    @property
    def requested(self) -> bool:
        """Whether a stop was asked for."""
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop is asked for."""
        return self._event.wait(seconds)
