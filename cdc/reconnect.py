"""Riding out a source database's outages: :func:`run_reconnecting`, shared by the connectors."""

from __future__ import annotations

import logging
from collections.abc import Callable

from simpul.cdc import metrics
from simpul.shutdown import Shutdown

FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 30.0


def run_reconnecting(
    source: str, attempt: Callable[[], None], lost: tuple[type[BaseException], ...], shutdown: Shutdown, log: logging.Logger,
) -> None:
    """Run ``attempt`` until it returns or a stop is asked for; when it raises one of ``lost``
    (the connection to the database went away), mark ``source`` disconnected, say so on ``log``
    (the error's type and code, never its text), wait (0.5 s, doubling up to 30 s) and run it again.

    Each attempt starts from the connector's stored position, as after a crash: events since then
    may be published again with the same source positions, and nothing committed is skipped.
    """
    wait = FIRST_WAIT_S
    while not shutdown.requested:
        try:
            attempt()
            return
        except lost as exc:
            metrics.CONNECTED.labels(source).set(0)
            code = f" {exc.args[0]}" if exc.args and isinstance(exc.args[0], int) else ""
            log.warning("%s: database connection lost (%s%s); reconnecting in %.1fs", source, type(exc).__name__, code, wait)
            shutdown.wait(wait)
            wait = min(wait * 2, LONGEST_WAIT_S)
