"""The audit trail and metrics of every API request, as one ASGI middleware.

Each request except the unaudited paths (health, metrics, the OpenAPI description and docs) gets
an :class:`AuditEntry` in its ASGI scope; the authentication dependency fills in the agency and
purpose, the handler what it returned. The response is held back until the entry is written to
``mpi.api_audit``: no record leaves unaudited, and if the audit cannot be written the caller gets
503 instead of the data. The row holds the route's template, never the filled path, and no body:
no NIK, name or phone reaches the audit, the logs or a metric label.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simpul.api import metrics
from simpul.api.access import UNKNOWN_AGENCY

log = logging.getLogger(__name__)

SCOPE_KEY = "simpul.audit"
UNMATCHED_ROUTE = "unmatched"


@dataclass
class AuditEntry:
    """What the audit row of one request says besides method, route and status."""

    agency: str = UNKNOWN_AGENCY
    purpose: str | None = None
    master_ids: list[str] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)

    def returned(self, master_ids: Iterable[str], fields: Iterable[str]) -> None:
        """Note the citizens and the fields (names, never values) a successful response carries."""
        self.master_ids = list(dict.fromkeys(master_ids))
        self.fields = sorted(set(fields))


def audit_entry(scope: Scope) -> AuditEntry:
    """The audit entry of the request whose ASGI scope this is."""
    entry: AuditEntry = scope[SCOPE_KEY]
    return entry


# Writes one audit row: (entry, method, route template, status).
AuditWriter = Callable[[AuditEntry, str, str, int], Awaitable[None]]


class AuditMiddleware:
    """Holds each audited response until its audit row is written; counts and times requests."""

    def __init__(self, app: ASGIApp, write: AuditWriter, unaudited: frozenset[str]) -> None:
        self.app = app
        self.write = write
        self.unaudited = unaudited

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] != "http" or scope["path"] in self.unaudited:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        entry = AuditEntry()
        scope[SCOPE_KEY] = entry
        held: list[Message] = []

        async def hold(message: Message) -> None:
            held.append(message)

        failure: Exception | None = None
        try:
            await self.app(scope, receive, hold)
        except Exception as exc:  # noqa: BLE001 - answered here, so no traceback (with values in it) reaches a log
            failure = exc
            log.error("%s %s failed: %s", scope["method"], _route(scope), type(exc).__name__)
        if failure is not None or not held:
            if isinstance(failure, psycopg.OperationalError):  # the database is down or the pool exhausted
                held = _problem(503, "the master index is unavailable")
            else:
                held = _problem(500, "internal error")
        route = _route(scope)
        status = int(held[0]["status"])
        if status >= 400:
            entry.returned((), ())
        try:
            await self.write(entry, scope["method"], route, status)
        except Exception as exc:  # noqa: BLE001 - the database may be down: refuse rather than answer unaudited
            metrics.AUDIT_FAILURES.inc()
            log.error("%s %s: audit row not written (%s); response withheld", scope["method"], route, type(exc).__name__)
            status = 503
            held = _problem(status, "the audit trail is unavailable, so nothing is answered")
        for message in held:
            await send(message)
        metrics.REQUESTS.labels(route, str(status), entry.agency).inc()
        metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


def _route(scope: Scope) -> str:
    route: Any = scope.get("route")
    return str(getattr(route, "path", None) or UNMATCHED_ROUTE)


def _problem(status: int, detail: str) -> list[Message]:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return [{"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}]
